"""Draw docs/text_heatmap.png: the tokens of the bundled text transformer coloured by relevance.

One row per (sequence, method): each real token in a box coloured by its score (the attribution
summed over the hidden axis, ``onnxattr.token_scores``) divided by the row's largest |score|,
through ``onnxattr.viz.colorize`` (blue negative, white 0, red positive), with the score below.
Rows: the README's example sequence under attnlrp, cplrp, integrated_gradients and
attention_rollout, then the first reference sequences of ``torch_text_order_op17.npz`` under
attnlrp. Run from the repository root: ``python tools/token_heatmap.py [OUT.png]``.
"""
from __future__ import annotations

import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFont

import onnxattr
from onnxattr.viz import colorize

MODEL = "models/torch_text_order_op17"
EXAMPLE = [1, 30, 2, 41, 17, 3, 55, 8, 0, 0, 0, 0, 0, 0, 0, 0]  # [CLS] w26 A w37 w13 B w51 w04
METHODS = ("attnlrp", "cplrp", "integrated_gradients", "attention_rollout")
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf"
BOX_W, BOX_H, LABEL_W, PAD = 62, 44, 250, 6


def font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.truetype(FONT, size)
    except OSError:
        return ImageFont.load_default(size)


def rows(model: onnxattr.Model, vocab: list[str]) -> list[tuple[str, list[str], np.ndarray]]:
    """(label, tokens, scores) per row, padding left out."""
    out = []
    ids = np.array([EXAMPLE])
    for method in METHODS:
        out.append((method, *scored(model, vocab, ids, method, target=1)[0]))
    ref = np.load(f"{MODEL}.npz")
    ids, target = ref["input_ids"][:4], ref["target"][:4]
    for i, (tokens, scores) in enumerate(scored(model, vocab, ids, "attnlrp", target=target)):
        out.append((f"attnlrp, sample {i} (class {target[i]})", tokens, scores))
    return out


def scored(model: onnxattr.Model, vocab: list[str], ids: np.ndarray, method: str,
           target: int | np.ndarray) -> list[tuple[list[str], np.ndarray]]:
    """Each sequence's real tokens and their scores."""
    mask = (ids != 0).astype(np.int64)
    r = onnxattr.attribute(model, {"input_ids": ids, "attention_mask": mask}, target=target, method=method)
    scores = onnxattr.token_scores(r)
    return [([vocab[t] for t in ids[b][mask[b] == 1]], scores[b][mask[b] == 1]) for b in range(len(ids))]


def draw(table: list[tuple[str, list[str], np.ndarray]]) -> Image.Image:
    width = LABEL_W + max(len(t) for _, t, _ in table) * (BOX_W + PAD) + PAD
    img = Image.new("RGB", (width, len(table) * (BOX_H + PAD) + PAD), "white")
    d, big, small = ImageDraw.Draw(img), font(15), font(11)
    for row, (label, tokens, scores) in enumerate(table):
        y = PAD + row * (BOX_H + PAD)
        d.text((PAD, y + BOX_H / 2), label, fill="black", font=small, anchor="lm")
        colours = colorize(scores[None, :] / np.abs(scores).max(), percentile=100)[0]
        for k, (tok, s, c) in enumerate(zip(tokens, scores, colours)):
            x = LABEL_W + k * (BOX_W + PAD)
            d.rectangle((x, y, x + BOX_W, y + BOX_H), fill=tuple(int(255 * v) for v in c), outline="#999999")
            ink = "white" if c @ (0.299, 0.587, 0.114) < 0.5 else "black"  # legible on dark boxes
            d.text((x + BOX_W / 2, y + 15), tok, fill=ink, font=big, anchor="mm")
            d.text((x + BOX_W / 2, y + 34), f"{s:+.2f}", fill=ink, font=small, anchor="mm")
    return img


def main(out: str = "docs/text_heatmap.png") -> None:
    model = onnxattr.load(f"{MODEL}.onnx", wrt="embeddings")
    vocab = open(f"{MODEL}.vocab.txt", encoding="utf-8").read().split("\n")
    draw(rows(model, vocab)).save(out)
    print(out)


if __name__ == "__main__":
    main(*sys.argv[1:])
