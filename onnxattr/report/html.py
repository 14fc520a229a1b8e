"""The report as one HTML page: summary, gates, heatmaps, sanity checks, faithfulness curves,
spectra and the model, with the plots inline as SVG and every value from the model escaped (for
HTML, and control and bidi-override characters as their Python escapes, so what a reader sees is
what the model holds)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..text import escape_text
from ..version import __version__
from .metrics import SCHEMA, fmt, mean, nanmean_rows, show_shape
from .svg import esc as html_escape
from .svg import svg_plot
from .text import CSS as TEXT_CSS
from .text import text_heatmap_section

if TYPE_CHECKING:
    from .gates import GateOutcome
    from .results import AuditReport

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")

CSS = """
body { font: 15px/1.45 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1f2328;
       margin: 0; background: #f6f8fa; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px; } h2 { font-size: 20px; margin: 32px 0 8px; border-bottom: 1px solid #d0d7de;
  padding-bottom: 4px; } h3 { font-size: 16px; margin: 16px 0 6px; }
.meta { color: #59636e; font-size: 13px; } .note { color: #59636e; font-size: 13px; max-width: 900px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 14px; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; text-align: left; vertical-align: middle; }
th { background: #f6f8fa; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums;
  white-space: nowrap; } td.name { white-space: nowrap; }
.badge { display: inline-block; padding: 1px 9px; border-radius: 10px; font-weight: 600; font-size: 13px; color: #fff; }
.pass { background: #1a7f37; } .fail { background: #cf222e; } .na { background: #8c959f; }
.verdict { font-size: 18px; padding: 4px 14px; border-radius: 14px; margin-left: 10px; vertical-align: middle; }
.grid td { text-align: center; padding: 6px; } .grid img { display: block; margin: 0 auto; image-rendering: pixelated; }
.grid .cap { font-size: 12px; color: #59636e; }
.plots { display: flex; flex-wrap: wrap; gap: 18px; } .plots figure { margin: 0; }
figcaption { font-size: 13px; color: #59636e; max-width: 460px; }
code { background: #f6f8fa; padding: 0 4px; border-radius: 4px; font-size: 13px; }
details summary { cursor: pointer; color: #0969da; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 5px; vertical-align: -1px; }
.colorbar { display: inline-block; width: 160px; height: 12px; vertical-align: middle; border: 1px solid #d0d7de;
  background: linear-gradient(to right, #053061, #4393c3, #f7f7f7, #d6604d, #67001f); }
"""


def esc(v: Any) -> str:
    """``v`` as page text: control, format (bidi override, zero-width) and separator characters
    written as their escapes (:func:`onnxattr.text.escape_text`), then HTML-escaped."""
    return html_escape(escape_text(str(v)))


def _badge(passed: bool | None, text: str | None = None) -> str:
    cls, word = ("na", "n/a") if passed is None else (("pass", "pass") if passed else ("fail", "fail"))
    return f'<span class="badge {cls}">{esc(text or word)}</span>'


def render_html(r: AuditReport) -> str:
    """The report page (see :meth:`AuditReport.to_html`)."""
    names = list(r.methods)
    colors = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    verdict = _badge(r.passed, "PASSED" if r.passed else "FAILED").replace('class="badge', 'class="badge verdict')
    gate_note = "" if r.gates else " (no gates were set)"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>onnxattr audit: {esc(r.model['name'])}</title>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<style>{CSS}{TEXT_CSS if 'text' in r.data else ''}</style></head><body><main>",
        f"<h1>Attribution audit: {esc(r.model['name'])}{verdict}</h1>",
        f'<p class="meta">{len(r.data["sample"])} of {r.data["n_inputs"]} inputs &middot; {len(names)} method(s) '
        f"&middot; {r.seconds:.1f} s &middot; {esc(r.created)} &middot; onnxattr {esc(__version__)} &middot; "
        f"schema <code>{SCHEMA}</code>{gate_note}</p>",
        *_engine_lines(r),
    ]
    parts += _summary_section(r, colors)
    parts += _gates_section(r, colors)
    parts += _heatmap_section(r)
    parts += _sanity_section(r, colors)
    parts += _faithfulness_section(r, colors)
    parts += _spectrum_section(r, colors)
    parts += _model_section(r)
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def _engine_lines(r: AuditReport) -> list[str]:
    """Where the samples were computed, and the samples that failed on their own account."""
    retried = f" &middot; {r.retried_batches} batch(es) retried" if r.retried_batches else ""
    out = [f'<p class="meta">engine {esc(r.engine)} &middot; {r.workers} worker(s){retried}</p>']
    if r.failed:
        out.append(f'<p class="note">{len(r.failed)} sample(s) failed and were left out:</p><ul class="note">'
                   + "".join(f"<li>#{esc(f['index'])}: {esc(f['reason'])}</li>" for f in r.failed) + "</ul>")
    return out


def _method_cell(name: str, colors: dict[str, str]) -> str:
    return f'<span class="swatch" style="background:{colors[name]}"></span><code>{esc(name)}</code>'


def _summary_section(r: AuditReport, colors: dict[str, str]) -> list[str]:
    out = ["<h2>Summary</h2>",
           '<p class="note">One row per method. Sanity checks (Adebayo et al. 2018) pass when the map changes: '
           "when the model's weights are randomized, and when another class is explained. Deletion and insertion "
           "AUC: the mean area under the curve of the target's score (see Faithfulness) while the most relevant "
           "features are removed or inserted first; lower is better for deletion, higher for insertion, as for "
           "Sensitivity-n (Petsiuk et al. 2018; Ancona et al. 2018). A value that is undefined for some inputs "
           "is the mean over the others, and the reason is listed below the table.</p>",
           "<table><tr><th>method</th><th>randomization</th><th>class sensitivity</th><th>deletion AUC &darr;</th>"
           "<th>insertion AUC &uarr;</th><th>Sensitivity-n &uarr;</th><th>input alignment</th>"
           "<th>high-freq. power</th><th>time</th></tr>"]
    for name, m in r.methods.items():
        v = m.metrics
        cells = [_method_cell(name, colors)]
        for check, key in (("randomization", "randomization.spearman"), ("class_sensitivity", "class_sensitivity.spearman")):
            c = m.checks.get(check)
            cells.append("&ndash;" if c is None else f"{_badge(c.passed)} {fmt(v[key])}")
        for key in ("deletion.auc", "insertion.auc", "sensitivity_n.mean", "alignment.cosine", "spectrum.high_fraction"):
            cells.append(fmt(v[key]) if v[key] is not None else "&ndash;")
        cells.append(f"{m.seconds:.1f} s")
        out.append("<tr>" + "".join(f'<td class="num">{c}</td>' if i > 0 else f'<td class="name">{c}</td>'
                                    for i, c in enumerate(cells)) + "</tr>")
    out.append("</table>")
    notes = [f"<li><code>{esc(name)}</code> {esc(key)}: {esc(why)}</li>"
             for name, m in r.methods.items() for key, why in m.undefined.items()]
    if notes:
        out.append('<p class="note">Undefined values:</p><ul class="note">' + "".join(notes) + "</ul>")
    return out


def _gates_section(r: AuditReport, colors: dict[str, str]) -> list[str]:
    """The gates as a table: a row per gate (a 'sanity' gate gives a row per check), a column per
    method; each cell the value read and pass/fail (hover: the detail)."""
    if not r.gates:
        return []
    names = list(r.methods)
    rows: dict[tuple[str, str], dict[str, GateOutcome]] = {}
    for g in r.gates:
        rows.setdefault((g.gate, g.metric), {})[g.method] = g
    out = ["<h2>Gates</h2>",
           "<table><tr><th>gate</th>" + "".join(f'<th class="name">{_method_cell(n, colors)}</th>' for n in names)
           + "</tr>"]
    for (gate, metric), cells in rows.items():
        label = f"<code>{esc(gate)}</code>" + (f' <span class="meta">({esc(metric)})</span>' if metric not in gate else "")
        tds = []
        for n in names:
            g = cells.get(n)
            tds.append('<td class="num">&ndash;</td>' if g is None else
                       f'<td class="num" title="{esc(g.detail)}">{fmt(g.value)} {_badge(g.passed)}</td>')
        out.append(f"<tr><td>{label}</td>{''.join(tds)}</tr>")
    failed = sum(not g.passed for g in r.gates)
    out.append(f'</table><p class="note">{failed} of {len(r.gates)} gate checks failed. A gate without a method '
               "applies to every method; a value that could not be computed fails.</p>" if failed else
               f'</table><p class="note">All {len(r.gates)} gate checks passed.</p>')
    return out


def _heatmap_section(r: AuditReport) -> list[str]:
    if "text" in r.data:
        return text_heatmap_section(r)
    if not r.input_images:
        return []
    names = list(r.methods)
    out = ["<h2>Heatmaps</h2>",
           '<p class="note">Red: positive relevance for the explained class, blue: negative '
           '(<span class="colorbar"></span>, centred on 0, scaled to the 99.5th percentile of |R| per map), '
           "over the input in grey.</p>",
           '<table class="grid"><tr><th>input</th>' + "".join(f"<th><code>{esc(n)}</code></th>" for n in names) + "</tr>"]
    for i, rel in enumerate(r.input_images):
        idx = r.data["sample"][i]
        cap = f"#{idx}: target {r.data['targets'][i]}, predicted {r.data['predicted'][i]}"
        cells = [f'<td><img src="{esc(rel)}" alt="input {idx}"><div class="cap">{esc(cap)}</div></td>']
        cells += [f'<td><img src="{esc(r.methods[n].heatmaps[i])}" alt="{esc(n)} heatmap of input {idx}"></td>' for n in names]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return out


def _sanity_section(r: AuditReport, colors: dict[str, str]) -> list[str]:
    rand = {n: m.randomization for n, m in r.methods.items() if m.randomization is not None}
    cls = {n: m for n, m in r.methods.items() if "class_sensitivity" in m.checks}
    if not rand and not cls:
        return []
    out = ["<h2>Sanity checks</h2>"]
    if rand:
        t = r.settings["randomization_threshold"]
        series = [(n, [0] + list(range(1, len(v.layers) + 1)), [1.0] + list(nanmean_rows(np.abs(v.spearman))), colors[n])
                  for n, v in rand.items()]
        any_layers = next(iter(rand.values())).layers
        plot = svg_plot(series, "Cascading randomization", "weight layers randomized (from the output)",
                        "mean |Spearman| vs original", ylim=(0, 1), hline=(t, f"threshold {t:g}"), integer_x=True)
        out += ["<h3>Model-parameter randomization (cascading)</h3>",
                '<div class="plots"><figure>' + plot +
                f"<figcaption>Layers are re-initialised from the top ({esc(', '.join(any_layers[:3]))}"
                f"{', ...' if len(any_layers) > 3 else ''}). The check passes when, with every layer random, the "
                f"map's rank correlation with the original is below {t:g}: a map that survives randomization "
                "does not explain what the model learned.</figcaption></figure></div>"]
    if cls:
        out += ["<h3>Class sensitivity</h3>",
                "<table><tr><th>method</th><th>Spearman, least likely class</th><th>Spearman, a random other class</th>"
                "<th>cosine, least likely class</th><th>result</th></tr>"]
        for n, m in cls.items():
            c = m.class_sensitivity
            vals = ([mean(c.spearman_least), mean(c.spearman_others), mean(c.cosine_least)]
                    if c is not None else [None] * 3)
            out.append(f'<tr><td class="name">{_method_cell(n, colors)}</td>' + "".join(f'<td class="num">{fmt(v)}</td>' for v in vals)
                       + f"<td>{_badge(m.checks['class_sensitivity'].passed)}</td></tr>")
        out.append(f'</table><p class="note">Passes when the predicted class\'s map and the least likely class\'s map '
                   f"have mean Spearman below {r.settings['class_threshold']:g}: maps that are the same for every "
                   "class reconstruct the input rather than explain the decision (Nie et al. 2018).</p>")
    return out


#: what a deletion/insertion curve plots, per ``Curve.quantity``: (y-axis label, caption words)
QUANTITY_WORDS = {
    "probability": ("target probability", "the softmax probability of the target class over the model's classes"),
    "sigmoid": ("sigmoid of the output", "the sigmoid of the model's one output (the target's probability)"),
    "logit": ("normalised target value", "the raw value of the explained output at the target, scaled so that "
              "it is 1 at the input and 0 at the all-baseline input (undefined, and left out, where the two "
              "ends differ by less than 1e-6 max(1, |value at the input|))"),
}


def _faithfulness_section(r: AuditReport, colors: dict[str, str]) -> list[str]:
    figs = []
    for key, title, xl in (("deletion", "Deletion", "fraction of features set to the baseline"),
                           ("insertion", "Insertion", "fraction of features put back into the baseline")):
        curves = {n: getattr(m, key) for n, m in r.methods.items() if getattr(m, key) is not None}
        if not curves:
            continue
        quantity = next(iter(curves.values())).quantity
        ylabel, words = QUANTITY_WORDS[quantity]
        series = [(n, c.fractions, nanmean_rows(c.plotted.T), colors[n]) for n, c in curves.items()]
        better = "lower" if key == "deletion" else "higher"
        order = ("set to 0 (the baseline) in the input" if key == "deletion"
                 else "put back into an all-zeros input (the baseline)")
        features = "pixels" if r.data["layout"] else ("tokens, at the attributed embeddings" if "text" in r.data
                                                      else "input values")
        figs.append(svg_plot(series, f"{title} curves", xl, ylabel, ylim=(0, 1) if quantity != "logit" else None)
                    + f"<figcaption>{title}: the mean over the inputs of {esc(words)}, while the features "
                    f"({features}) are {order}, most relevant first. The score is the area under each input's "
                    f"curve (a step curve), averaged: {better} is better.</figcaption>")
    series = [(n, m.sensitivity_n.ns, m.sensitivity_n.correlation, colors[n])
              for n, m in r.methods.items() if m.sensitivity_n is not None]
    if series:
        figs.append(svg_plot(series, "Sensitivity-n", "subset size n (features)", "correlation", xlog=True,
                             ylim=(-1, 1), hline=(0.0, "")) +
                    "<figcaption>Pearson correlation, over random subsets of n features, between their summed "
                    "relevance and the output drop when they are removed (Ancona et al. 2018).</figcaption>")
    if not figs:
        return []
    return ["<h2>Faithfulness</h2>", '<div class="plots">' + "".join(f"<figure>{f}</figure>" for f in figs) + "</div>"]


def _spectrum_section(r: AuditReport, colors: dict[str, str]) -> list[str]:
    series = []
    for n, m in r.methods.items():
        if m.spectrum is None:
            continue
        f, p = m.spectrum[0], m.spectrum[1].mean(axis=0)
        total = p.sum()
        series.append((n, f, p / total if total > 0 else p, colors[n]))
    if not series:
        return []
    plot = svg_plot(series, "Power spectrum of the maps", "frequency (cycles per pixel)", "relative power",
                    ylog=True, xlim=(0, 0.5))
    return ["<h2>Spectra</h2>", '<div class="plots"><figure>' + plot +
            "<figcaption>Radially averaged power spectrum of the maps, each normalised to sum 1. Gradient maps "
            "carry high-frequency noise from strided downsampling; a low-pass filter chosen per model (FORGrad, "
            "Muzellec et al. 2024) removes it.</figcaption></figure></div>"]


def _model_section(r: AuditReport) -> list[str]:
    m = r.model
    rows = [
        ("file", m["path"] or m["name"]), ("producer", m["producer"] or "?"), ("opset", m["opset"]),
        ("input", f"{m['input']['name']} {show_shape(m['input']['shape'])} {m['input']['dtype']}"),
        ("explained output", m["output"] + (f" (final {m['dropped_softmax']} dropped)" if m["dropped_softmax"] else "")),
        ("classes", m["classes"] if m["classes"] is not None else "?"),
        ("nodes", m["nodes"]), ("parameters", f"{m['parameters']:,}"),
        ("op types", ", ".join(f"{k} {v}" for k, v in m["op_types"].items())),
        ("op support", "every node supported"),
        ("data", f"{', '.join(r.data['sources'][:3])}{' ...' if len(r.data['sources']) > 3 else ''} "
                 f"({r.data['n_inputs']} inputs, sample of {len(r.data['sample'])}, layout {r.data['layout'] or 'n/a'})"),
        ("targets", "each input's predicted class" if r.data["target"] == "argmax" else "given"),
    ]
    out = ["<h2>Model</h2>", "<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows) + "</table>",
           f"<details><summary>{len(m['layers'])} layers after folding and canonization</summary><table>"
           "<tr><th>node</th><th>op</th><th>output shape</th></tr>"]
    out += [f"<tr><td><code>{esc(layer['node'])}</code></td><td>{esc(layer['op_type'])}</td>"
            f"<td>{esc(show_shape(layer['shape']) if layer['shape'] is not None else '?')}</td></tr>" for layer in m["layers"]]
    out.append("</table></details>")
    s = r.settings
    out.append(f'<p class="note">Settings: methods {esc(", ".join(s["methods"]))}; sample {esc(s["sample"])}; '
               f"curve steps {s['curve_steps']}; Sensitivity-n {s['n_sizes']} sizes x {s['n_subsets']} subsets; "
               f"runtime {esc(s['runtime'])}; seed {s['seed']}.</p>")
    return out
