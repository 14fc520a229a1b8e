"""Token / patch deletion and insertion curves of AttnLRP and the baselines on the bundled
transformers (models/torch_text_order_op17, models/torch_vit_op17): the AttnLRP paper's
faithfulness comparison (Achtibat et al. 2024, Sec. 4), made at the attributed (``wrt``) tensor.

    python tools/attnlrp_faithfulness.py [MODELS_DIR] [N_TEXT] [N_VIT]

For each sample the tokens (text: every real token but [CLS]; ViT: the 16 patch embeddings) are
ranked by their score (the attribution summed over the hidden axis, ``onnxattr.token_scores``;
for ``gradient`` its L2 norm over the hidden axis, the saliency convention). Deletion replaces
the most relevant first by the baseline (text: the [PAD] token's embedding; ViT: a zero patch
embedding); insertion starts from the baseline everywhere and puts the most relevant back first.
The curve is the target class's softmax probability after each step; the score is its mean over
the steps (area under the curve): lower is better for deletion, higher for insertion, printed
with standard errors and as per-sample differences to AttnLRP. The target is the true label. Samples are fresh draws of the models' data generators (held-out
seeds).
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import onnxattr  # noqa: E402
from shapes_data import make_shapes  # noqa: E402

METHODS = ["attnlrp", "cplrp", "gradient", "input_x_gradient", "integrated_gradients", "attention_rollout", "random"]
PAD, CLS, TOK_A, TOK_B, FIRST_FILLER, VOCAB, SEQ = 0, 1, 2, 3, 4, 64, 16


def make_text(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The 'A before B' task of tools/export_text.py: (input_ids, attention_mask, label)."""
    rng = np.random.default_rng(seed)
    ids = np.full((n, SEQ), PAD, np.int64)
    mask = np.zeros((n, SEQ), np.int64)
    label = rng.permutation(np.arange(n) % 2).astype(np.int64)
    for i in range(n):
        words = int(rng.integers(6, 16))
        ids[i, 0] = CLS
        ids[i, 1:1 + words] = rng.integers(FIRST_FILLER, VOCAB, words)
        p, q = np.sort(rng.choice(words, 2, replace=False)) + 1
        ids[i, p], ids[i, q] = (TOK_A, TOK_B) if label[i] == 1 else (TOK_B, TOK_A)
        mask[i, :1 + words] = 1
    return ids, mask, label


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def scores(model, feeds, target, method, options, rng) -> np.ndarray:
    """(B, T) token scores at the wrt tensor (tokens on axis 1 for (B, T, H), the h*w patches of a
    (B, C, h, w) tensor flattened)."""
    x = model.at_wrt(model.check_feeds(feeds))[model.input_name]
    shape = x.shape
    if method == "random":
        a = rng.normal(size=shape).astype(np.float32)
    else:
        a = onnxattr.attribute(model, feeds, target, method, **options.get(method, {}))
    tokens = a if a.ndim == 3 else a.reshape(shape[0], shape[1], -1).transpose(0, 2, 1)
    if method == "gradient":
        return np.linalg.norm(tokens, axis=2)
    return tokens.sum(axis=2)


def curves(model, feeds, target, order_scores, valid, baseline) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion AUC per sample (mean target probability over steps 0..n)."""
    wrt = model.input_name
    full = model.at_wrt(model.check_feeds(feeds))
    x = np.asarray(full[wrt])
    tokens = x if x.ndim == 3 else x.reshape(x.shape[0], x.shape[1], -1).transpose(0, 2, 1)
    base = baseline if baseline.ndim == 3 else baseline.reshape(x.shape[0], x.shape[1], -1).transpose(0, 2, 1)
    b, t = order_scores.shape
    s = np.where(valid, order_scores, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")
    n_valid = valid.sum(axis=1)
    steps = int(n_valid.max())
    dele, ins = [], []
    for k in range(steps + 1):
        keep_del = np.ones((b, t), bool)
        keep_ins = ~valid.copy()
        for i in range(b):
            kk = min(k, n_valid[i])
            keep_del[i, order[i, :kk]] = False
            keep_ins[i, order[i, :kk]] = True
            keep_ins[i, order[i, n_valid[i]:]] = True  # positions that are not ranked stay as they are
        for keep, out in ((keep_del, dele), (keep_ins, ins)):
            mixed = np.where(keep[:, :, None], tokens, base)
            value = mixed if x.ndim == 3 else mixed.transpose(0, 2, 1).reshape(x.shape)
            logits = np.asarray(model.forward({**full, wrt: model.xp.asarray(value)}))
            out.append(softmax(logits)[np.arange(b), target])
    dele, ins = np.stack(dele, 1), np.stack(ins, 1)  # (B, steps + 1)
    # each sample's curve over its own n_valid steps
    auc_d = np.array([dele[i, :n_valid[i] + 1].mean() for i in range(b)])
    auc_i = np.array([ins[i, :n_valid[i] + 1].mean() for i in range(b)])
    return auc_d, auc_i


def run(name: str, model, feeds, target, valid, baseline, options) -> None:
    rng = np.random.default_rng(0)
    probs = softmax(np.asarray(model(feeds)))
    print(f"\n{name}: {len(target)} samples, accuracy {np.mean(probs.argmax(1) == target):.3f}, "
          f"mean target probability {probs[np.arange(len(target)), target].mean():.3f}")
    print("| method | deletion AUC (lower better) | insertion AUC (higher better) | insertion - deletion | s |")
    print("|---|---|---|---|---|")
    results = {}
    for method in METHODS:
        t0 = time.time()
        s = scores(model, feeds, target, method, options, rng)
        d, i = results[method] = curves(model, feeds, target, s, valid, baseline)
        print(f"| {method} | {d.mean():.3f} ± {se(d):.3f} | {i.mean():.3f} ± {se(i):.3f} | "
              f"{(i - d).mean():.3f} ± {se(i - d):.3f} | {time.time() - t0:.0f} |", flush=True)
    print("\nPaired, per sample, attnlrp minus the other (deletion: negative = attnlrp better; "
          "insertion: positive = attnlrp better); mean ± standard error:")
    print("| method | deletion | insertion |\n|---|---|---|")
    d0, i0 = results["attnlrp"]
    for method, (d, i) in results.items():
        if method != "attnlrp":
            print(f"| {method} | {(d0 - d).mean():+.3f} ± {se(d0 - d):.3f} | {(i0 - i).mean():+.3f} ± {se(i0 - i):.3f} |")


def se(v: np.ndarray) -> float:
    """The standard error of the mean."""
    return float(v.std(ddof=1) / np.sqrt(len(v)))


def main() -> None:
    models = sys.argv[1] if len(sys.argv) > 1 else "models"
    n_text = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    n_vit = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    np.seterr(over="ignore")

    ids, mask, label = make_text(n_text, seed=777)
    text = onnxattr.load(os.path.join(models, "torch_text_order_op17.onnx"), wrt="embeddings")
    feeds = {"input_ids": ids, "attention_mask": mask}
    valid = (mask == 1) & (np.arange(SEQ) > 0)
    baseline = np.asarray(text.token_baseline(text.at_wrt(text.check_feeds(feeds)), PAD))
    run("torch_text_order_op17 (tokens at the word embeddings)", text, feeds, label, valid, baseline,
        {"integrated_gradients": {"baseline_token": PAD, "steps": 32}})

    x, y, _ = make_shapes(n_vit, seed=777)
    vit_path = os.path.join(models, "torch_vit_op17.onnx")
    probe = onnxattr.load(vit_path)
    patch = [n for n in probe.graph.nodes if n.op_type == "Conv" and list(n.op.attrs.get("strides") or [1]) == [4, 4]]
    vit = onnxattr.load(vit_path, wrt=patch[0].outputs[0])
    xw = np.asarray(vit.at_wrt(vit.check_feeds(x))[vit.input_name])
    valid = np.ones((n_vit, xw.shape[2] * xw.shape[3]), bool)
    run(f"torch_vit_op17 (patches at the patch embedding {patch[0].outputs[0]})", vit, x, y, valid,
        np.zeros_like(xw), {"integrated_gradients": {"steps": 32}})


if __name__ == "__main__":
    main()
