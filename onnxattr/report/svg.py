"""Line plots as inline SVG, for the report page: axes, ticks, labels, a dashed reference line
and a legend, with no plotting library."""
from __future__ import annotations

import html
import math
from typing import Any, Sequence

import numpy as np


def esc(v: Any) -> str:
    """``v`` as text safe inside HTML/SVG elements and attribute values."""
    return html.escape(str(v), quote=True)


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + k * step, 10) for k in range(int((hi - first) / step + 1e-9) + 1)]


def _tick_text(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        return f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e")
    return f"{v:g}"


def svg_plot(series: Sequence[tuple[str, Sequence[float], Sequence[float], str]], title: str, xlabel: str,
             ylabel: str, xlog: bool = False, ylog: bool = False, xlim: tuple[float, float] | None = None,
             ylim: tuple[float, float] | None = None, hline: tuple[float, str] | None = None,
             integer_x: bool = False, width: int = 460, height: int = 300) -> str:
    """A line plot as an inline SVG: one (label, xs, ys, colour) per series, with axes, ticks,
    axis labels, an optional dashed horizontal line and a legend below. Non-finite points (and,
    on a log axis, points <= 0) are left out."""
    ml, mr, mt, mb = 62, 14, 30, 46
    longest = max((len(str(label)) for label, *_ in series), default=1)
    cols = max(1, min(3, int((width - ml - mr) // (longest * 6.6 + 34))))
    legend_rows = (len(series) + cols - 1) // cols
    total_h = height + 18 * legend_rows
    pw, ph = width - ml - mr, height - mt - mb

    def clean(xs: Sequence[float], ys: Sequence[float]) -> list[tuple[float, float]]:
        pts = []
        for a, b in zip(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)):
            if math.isfinite(a) and math.isfinite(b) and (not xlog or a > 0) and (not ylog or b > 0):
                pts.append((math.log10(a) if xlog else a, math.log10(b) if ylog else b))
        return pts

    data = [(label, clean(xs, ys), color) for label, xs, ys, color in series]
    allx = [p[0] for _, pts, _ in data for p in pts]
    ally = [p[1] for _, pts, _ in data for p in pts]
    if xlim is not None:
        x0, x1 = (math.log10(v) for v in xlim) if xlog else xlim
    else:
        x0, x1 = (min(allx), max(allx)) if allx else (0.0, 1.0)
    if ylim is not None:
        y0, y1 = (math.log10(v) for v in ylim) if ylog else ylim
    else:
        y0, y1 = (min(ally), max(ally)) if ally else (0.0, 1.0)
        if hline is not None and not ylog:
            y0, y1 = min(y0, hline[0]), max(y1, hline[0])
        pad = 0.05 * (y1 - y0) if y1 > y0 else 0.5
        y0, y1 = y0 - pad, y1 + pad
    if x1 <= x0:
        x0, x1 = x0 - 0.5, x1 + 0.5

    def px(v: float) -> float:
        return ml + (v - x0) / (x1 - x0) * pw

    def py(v: float) -> float:
        return mt + ph - (v - y0) / (y1 - y0) * ph

    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total_h}" viewBox="0 0 {width} {total_h}" '
         f'font-family="sans-serif" font-size="11" role="img" aria-label="{esc(title)}">',
         f'<rect x="0" y="0" width="{width}" height="{total_h}" fill="#fff"/>',
         f'<text x="{ml + pw / 2:.1f}" y="18" text-anchor="middle" font-size="13" font-weight="600">{esc(title)}</text>']
    if xlog:
        xt = [float(k) for k in range(math.ceil(x0 - 1e-9), math.floor(x1 + 1e-9) + 1)]
        xlabels = [_tick_text(10 ** k) for k in xt]
    else:
        xt = [v for v in _nice_ticks(x0, x1) if not integer_x or float(v).is_integer()]
        xlabels = [_tick_text(v) for v in xt]
    if ylog:
        yt = [float(k) for k in range(math.ceil(y0 - 1e-9), math.floor(y1 + 1e-9) + 1)]
        if len(yt) > 6:
            yt = yt[:: math.ceil(len(yt) / 6)]
        ylabels = [_tick_text(10 ** k) for k in yt]
    else:
        yt = _nice_ticks(y0, y1)
        ylabels = [_tick_text(v) for v in yt]
    for v, text in zip(xt, xlabels):
        s.append(f'<line x1="{px(v):.1f}" y1="{mt}" x2="{px(v):.1f}" y2="{mt + ph}" stroke="#eaeef2"/>'
                 f'<text x="{px(v):.1f}" y="{mt + ph + 15}" text-anchor="middle" fill="#59636e">{text}</text>')
    for v, text in zip(yt, ylabels):
        s.append(f'<line x1="{ml}" y1="{py(v):.1f}" x2="{ml + pw}" y2="{py(v):.1f}" stroke="#eaeef2"/>'
                 f'<text x="{ml - 6}" y="{py(v) + 4:.1f}" text-anchor="end" fill="#59636e">{text}</text>')
    s.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#8c959f"/>')
    s.append(f'<text x="{ml + pw / 2:.1f}" y="{mt + ph + 34}" text-anchor="middle">{esc(xlabel)}</text>')
    s.append(f'<text transform="translate(14 {mt + ph / 2:.1f}) rotate(-90)" text-anchor="middle">{esc(ylabel)}</text>')
    s.append(f'<clipPath id="c{id(data)}"><rect x="{ml}" y="{mt}" width="{pw}" height="{ph}"/></clipPath>')
    if hline is not None and (not ylog or hline[0] > 0):
        hv = math.log10(hline[0]) if ylog else hline[0]
        if y0 <= hv <= y1:
            s.append(f'<line x1="{ml}" y1="{py(hv):.1f}" x2="{ml + pw}" y2="{py(hv):.1f}" stroke="#57606a" '
                     f'stroke-dasharray="5 4"/>')
            if hline[1]:
                s.append(f'<text x="{ml + pw - 4}" y="{py(hv) - 4:.1f}" text-anchor="end" fill="#57606a">{esc(hline[1])}</text>')
    for label, pts, color in data:
        if not pts:
            continue
        path = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in pts)
        s.append(f'<polyline clip-path="url(#c{id(data)})" points="{path}" fill="none" stroke="{color}" '
                 f'stroke-width="2" stroke-linejoin="round"/>')
        if len(pts) <= 25:
            s += [f'<circle cx="{px(a):.1f}" cy="{py(b):.1f}" r="2.5" fill="{color}"/>' for a, b in pts]
    for k, (label, _, color) in enumerate(data):
        lx, ly = ml + (k % cols) * (pw / cols), height + 4 + 18 * (k // cols)
        s.append(f'<line x1="{lx:.1f}" y1="{ly:.1f}" x2="{lx + 18:.1f}" y2="{ly:.1f}" stroke="{color}" stroke-width="3"/>'
                 f'<text x="{lx + 23:.1f}" y="{ly + 4:.1f}">{esc(label)}</text>')
    s.append("</svg>")
    return "".join(s)
