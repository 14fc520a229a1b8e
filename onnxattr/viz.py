"""Heatmaps of attribution maps: a diverging colormap centred on 0, optionally over the input.

Blue is negative relevance, white zero, red positive (ColorBrewer's RdBu, reversed). The colour
scale is symmetric: +-the ``percentile`` of |R|, so one outlier does not wash out the map.
"""
from __future__ import annotations

import os

import numpy as np

from .layout import channel_axis, check_layout

# ColorBrewer RdBu (11 classes), reversed: negative -> blue, 0 -> near white, positive -> red.
_RDBU_R = np.array(
    [
        (5, 48, 97), (33, 102, 172), (67, 147, 195), (146, 197, 222), (209, 229, 240),
        (247, 247, 247), (253, 219, 199), (244, 165, 130), (214, 96, 77), (178, 24, 43), (103, 0, 31),
    ],
    dtype=np.float64,
) / 255.0


def to_2d(attr: np.ndarray, layout: str | None = None) -> np.ndarray:
    """One (H, W) relevance map per sample: channels summed. ``attr`` is (N, C, H, W) or
    (N, H, W, C) (layout told or inferred), or already (N, H, W)."""
    attr = np.asarray(attr)
    if attr.ndim == 3:
        return attr
    layout = check_layout(layout, attr.shape)
    return attr.sum(axis=channel_axis(layout))


def colorize(m: np.ndarray, percentile: float = 99.5) -> np.ndarray:
    """An (H, W) map as (H, W, 3) RGB in [0, 1], 0 at white, +-scale at the colormap's ends."""
    scale = np.percentile(np.abs(m), percentile) if m.size else 0.0
    scale = scale if scale > 0 else max(float(np.abs(m).max()), 1e-12)
    v = np.clip(m / scale, -1, 1)
    pos = (v + 1) / 2 * (len(_RDBU_R) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_RDBU_R) - 2)
    frac = (pos - lo)[..., None]
    return _RDBU_R[lo] * (1 - frac) + _RDBU_R[lo + 1] * frac


def to_image(x: np.ndarray, layout: str | None = None) -> np.ndarray:
    """One input sample (C, H, W) or (H, W, C) as (H, W, 3) RGB in [0, 1], min-max scaled."""
    x = np.asarray(x, dtype=np.float64)
    layout = check_layout(layout, (1,) + x.shape)
    img = np.moveaxis(x, 0, -1) if layout == "NCHW" else x
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    img = img[..., :3]
    lo, hi = img.min(), img.max()
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def heatmap(attr2d: np.ndarray, image: np.ndarray | None = None, alpha: float = 0.6,
            percentile: float = 99.5) -> np.ndarray:
    """RGB uint8 heatmap of an (H, W) map, blended over a grey version of ``image`` if given."""
    rgb = colorize(attr2d, percentile)
    if image is not None:
        grey = image.mean(axis=-1, keepdims=True)
        weight = alpha * np.abs(np.clip(attr2d / max(np.percentile(np.abs(attr2d), percentile), 1e-12), -1, 1))[..., None]
        rgb = (1 - weight) * grey + weight * rgb
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def save_png(path: str | os.PathLike, rgb: np.ndarray, scale: int = 1) -> None:
    """Write an RGB uint8 image, enlarged ``scale`` times with nearest-neighbour pixels."""
    from PIL import Image

    img = Image.fromarray(rgb)
    if scale > 1:
        img = img.resize((rgb.shape[1] * scale, rgb.shape[0] * scale), Image.NEAREST)
    img.save(path)
