"""Text attributions as HTML: the tokens in order, each on a background of the image heatmaps'
diverging colormap (red positive, blue negative, white 0; :func:`onnxattr.viz.token_colors`),
with its score on hover; the page ``onnxattr explain`` writes for a text model, and the audit
report's text heatmaps.

A token's relevance is the sum over its embedding (:func:`onnxattr.token_scores`); padding (the
positions the attention mask drops) is not shown.
"""
from __future__ import annotations

import pathlib
from typing import Any, Sequence

import numpy as np

from ..analysis.localization import mask_fraction, relevance_mass
from ..attribution import token_scores
from ..inputs import token_strings
from ..model import Model
from ..text import escape_text
from ..viz import save_png, token_colors, token_picture
from .svg import esc

CSS = """
.tokens { line-height: 2.1; max-width: 900px; font: 14px/2.1 "DejaVu Sans Mono", Menlo, monospace; }
.tok { padding: 2px 4px; margin: 0 1px; border-radius: 3px; border: 1px solid #d0d7de; white-space: pre; }
.tokcap { font-size: 12px; color: #59636e; }
.scale { display: inline-block; width: 160px; height: 12px; vertical-align: middle; border: 1px solid #d0d7de;
  background: linear-gradient(to right, #053061, #4393c3, #f7f7f7, #d6604d, #67001f); }
"""


def token_spans(tokens: list[str], scores: np.ndarray) -> str:
    """The tokens as coloured HTML spans in one block; the colour scale is the largest |score|."""
    colors, scale = token_colors(scores)
    spans = []
    for tok, s, c in zip(tokens, np.asarray(scores, dtype=np.float64), colors):
        rgb = "#" + "".join(f"{int(round(v * 255)):02x}" for v in c)
        ink = "#fff" if 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] < 0.5 else "#1f2328"
        spans.append(f'<span class="tok" style="background:{rgb};color:{ink}" title="{s:.4g}">'
                     f"{esc(escape_text(tok))}</span>")
    return (f'<div class="tokens">{" ".join(spans)}</div>'
            f'<div class="tokcap">colour scale &plusmn;{scale:.3g} <span class="scale"></span></div>')


def text_page(title: str, rows: list[tuple[str, list[str], np.ndarray]]) -> str:
    """A standalone HTML page: per row a caption and its tokens (:func:`token_spans`)."""
    body = "".join(f"<h3>{esc(cap)}</h3>{token_spans(toks, sc)}" for cap, toks, sc in rows)
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{esc(title)}</title><style>body {{ font: 15px/1.45 sans-serif; margin: 24px; }} "
            f".cap {{ font-size: 12px; color: #59636e; }}{CSS}</style></head><body><h1>{esc(title)}</h1>"
            '<p class="cap">Tokens coloured by relevance for the explained target: red positive, blue negative, '
            "white 0; hover for the value (the sum over the token's embedding). Padding is not shown.</p>"
            f"{body}</body></html>\n")


def text_summary(model: Model, feeds: dict[str, np.ndarray], relevant: np.ndarray | None,
                 maps: dict[str, np.ndarray], shown: int, vocab: Sequence[str | None] | None) -> dict[str, Any]:
    """The report's ``data.text`` section: the token strings and kept positions of the first
    ``shown`` inputs (padding dropped), and where ``relevant`` marks the deciding tokens, their
    share of each sequence (mean and per input) and each method's relevance mass on them
    (Arras et al. 2022, mean and per input; :func:`onnxattr.analysis.localization.relevance_mass`),
    both among the tokens the attention mask keeps."""
    ids = feeds[model.graph.token_input] if model.graph.token_input in feeds else None
    mask_name = model.mask_name
    keep = feeds[mask_name] != 0 if mask_name in feeds else None
    out: dict[str, Any] = {"token_input": model.graph.token_input, "mask_input": mask_name,
                           "tokens": [], "positions": []}
    for i in range(shown if ids is not None else 0):
        on = np.ones(ids.shape[1], dtype=bool) if keep is None else keep[i]
        out["positions"].append(np.flatnonzero(on).tolist())
        out["tokens"].append(token_strings(ids[i][on], vocab))
    if relevant is not None:
        share = mask_fraction(relevant, keep)
        mass = {n: relevance_mass(a, relevant, within=keep) for n, a in maps.items()}
        out["relevant_share"] = float(np.nanmean(share))
        out["relevant_share_per_input"] = [None if np.isnan(u) else float(u) for u in share]
        out["relevance_mass"] = {n: {"mean": float(np.nanmean(v)) if np.isfinite(v).any() else None,
                                     "per_input": [None if np.isnan(u) else float(u) for u in v]}
                                 for n, v in mass.items()}
    return out


def text_heatmap_section(r: Any) -> list[str]:
    """The audit report's heatmaps of a text model: per shown input a row per method with its
    tokens coloured, and the relevance mass on the deciding tokens where the data marks them."""
    text = r.data["text"]
    out = ["<h2>Heatmaps</h2>",
           '<p class="note">Tokens coloured by relevance for the explained target: red positive, blue negative, '
           "white 0 (scaled to the largest |R| per text; hover for the value, the sum over the token's "
           "embedding). Padding is not shown.</p>"]
    for i, (tokens, positions) in enumerate(zip(text["tokens"], text["positions"])):
        idx = r.data["sample"][i]
        out.append(f"<h3>#{esc(idx)}: target {esc(r.data['targets'][i])}, predicted {esc(r.data['predicted'][i])}</h3>")
        out.append("<table>")
        for name, m in r.methods.items():
            a = np.asarray(m.attribution[i], dtype=np.float64)
            scores = a.reshape(a.shape[0], -1).sum(axis=1)[positions]
            out.append(f'<tr><td class="name"><code>{esc(name)}</code></td><td>{token_spans(tokens, scores)}</td></tr>')
        out.append("</table>")
    if "relevance_mass" in text:
        out.append('<p class="note">Relevance mass on the deciding tokens (the data\'s <code>relevant</code> mask): '
                   "the share of the positive relevance that falls on them (Arras et al. 2022), mean over the "
                   f"sample. A map that ignores them scores their share of the sequence, {text['relevant_share']:.3f}."
                   '</p><table><tr><th>method</th><th>relevance mass</th></tr>'
                   + "".join(f'<tr><td class="name"><code>{esc(n)}</code></td><td class="num">'
                             f"{'&ndash;' if v['mean'] is None else format(v['mean'], '.3f')}</td></tr>"
                             for n, v in text["relevance_mass"].items()) + "</table>")
    return out


def write_text_explanation(out: pathlib.Path, stem: str, model: Model, feeds: dict[str, np.ndarray],
                           attr: np.ndarray, targets: np.ndarray, relevant: np.ndarray | None,
                           vocab: Sequence[str | None] | None, shown: int) -> dict[str, Any]:
    """What ``onnxattr explain`` writes for a text model into ``out``: the maps ``STEM.npy``
    (B, T, H), the token scores ``STEM_tokens.npy`` (B, T), the page ``STEM.html`` with the
    first ``shown`` inputs' tokens coloured by relevance, and one PNG each
    (:func:`onnxattr.viz.token_picture`); for a model fed several inputs that is not attributed
    at token embeddings, the maps alone. Returns the files written and, where ``relevant``
    marks the deciding tokens, each input's relevance mass on them and their share of it."""
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / f"{stem}.npy", attr)
    files = [str(out / f"{stem}.npy")]
    if model.graph.token_input is None or attr.ndim != 3:  # several inputs, not text: the maps alone
        return {"files": files}
    scores = token_scores(attr)
    np.save(out / f"{stem}_tokens.npy", scores)
    files.append(str(out / f"{stem}_tokens.npy"))
    summary = text_summary(model, feeds, relevant, {stem: attr}, shown, vocab)
    rows = []
    for i, (tokens, positions) in enumerate(zip(summary["tokens"], summary["positions"])):
        t = np.asarray(targets[i]).reshape(-1)
        label = "target" + "_".join(str(int(v)) for v in t)
        path = out / f"{stem}_{i}_{label}.png"
        save_png(path, token_picture(tokens, scores[i][positions]))
        files.append(str(path))
        rows.append((f"input {i}: target {'(position, index) ' if len(t) == 2 else ''}{', '.join(map(str, t.tolist()))}",
                     tokens, scores[i][positions]))
    if rows:
        page = out / f"{stem}.html"
        page.write_text(text_page(f"{stem}: token relevance", rows), encoding="utf-8")
        files.append(str(page))
    result: dict[str, Any] = {"files": files}
    if "relevance_mass" in summary:
        result["relevance_mass"] = summary["relevance_mass"][stem]["per_input"]
        result["relevant_share"] = summary["relevant_share_per_input"]
    return result
