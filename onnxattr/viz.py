"""Pictures of attribution maps and inputs: a diverging colormap centred on 0, optionally over
the input, and text as its tokens in boxes coloured by their relevance; the one drawing path of
``onnxattr explain`` and of the audit report.

Blue is negative relevance, white zero, red positive (ColorBrewer's RdBu, reversed). The colour
scale is symmetric: +-the ``percentile`` of |R|, so one outlier does not wash out the map.
"""
from __future__ import annotations

import os

import numpy as np

from .layout import channel_axis, check_layout
from .text import escape_text

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


def color_scale(m: np.ndarray, percentile: float = 99.5) -> float:
    """The |R| at the colormap's ends: the ``percentile`` of |R| (its maximum where that is 0)."""
    scale = float(np.percentile(np.abs(m), percentile)) if m.size else 0.0
    return scale if scale > 0 else max(float(np.abs(m).max()) if m.size else 0.0, 1e-12)


def colorize(m: np.ndarray, percentile: float = 99.5) -> np.ndarray:
    """An (H, W) map as (H, W, 3) RGB in [0, 1], 0 at white, +-scale at the colormap's ends."""
    v = np.clip(m / color_scale(m, percentile), -1, 1)
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
        weight = alpha * np.abs(np.clip(attr2d / color_scale(attr2d, percentile), -1, 1))[..., None]
        rgb = (1 - weight) * grey + weight * rgb
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def save_png(path: str | os.PathLike, rgb: np.ndarray, scale: int = 1) -> None:
    """Write an RGB uint8 image, enlarged ``scale`` times with nearest-neighbour pixels."""
    from PIL import Image

    img = Image.fromarray(rgb)
    if scale > 1:
        img = img.resize((rgb.shape[1] * scale, rgb.shape[0] * scale), Image.NEAREST)
    img.save(path)


PICTURE_SIZE = 128


def _enlarge(rgb: np.ndarray, size: int = PICTURE_SIZE) -> np.ndarray:
    h, w = rgb.shape[:2]
    k = max(1, size // max(h, w))
    return np.repeat(np.repeat(rgb, k, axis=0), k, axis=1)


def _strip(rgb: np.ndarray) -> np.ndarray:
    """A (1, F, 3) picture of a vector, made about twice PICTURE_SIZE wide and 24 pixels high."""
    k = max(1, PICTURE_SIZE * 2 // max(1, rgb.shape[1]))
    return np.repeat(np.repeat(rgb, 24, axis=0), k, axis=1)


def heatmap_picture(a: np.ndarray, x: np.ndarray, layout: str | None, size: int = PICTURE_SIZE) -> np.ndarray:
    """One sample's map as an RGB uint8 picture with its colour scale below: over the grey input
    for images (``layout`` set; enlarged to about ``size`` pixels), the map alone for 2-D maps, a
    colour strip for vectors and other ranks."""
    if layout is not None:
        m = to_2d(a[None], layout)[0]
        picture = _enlarge(heatmap(m, to_image(x, layout)), size)
    elif a.ndim == 2:
        m = a
        picture = _enlarge(heatmap(a), size)
    else:
        m = np.ravel(a)[None, :]
        picture = _strip(heatmap(m))
    return with_colorbar(picture, color_scale(np.asarray(m, dtype=np.float64)))


def with_colorbar(picture: np.ndarray, scale: float) -> np.ndarray:
    """``picture`` with the colour scale under it: the colormap from -scale to +scale and the
    values at its ends and middle, on white."""
    from PIL import Image, ImageDraw

    w = max(picture.shape[1], 96)
    ramp = colorize(np.linspace(-1.0, 1.0, w)[None, :], 100.0)
    bar = np.repeat((ramp * 255).round().astype(np.uint8), 8, axis=0)
    canvas = Image.new("RGB", (w, picture.shape[0] + 4 + 8 + 12), "white")
    canvas.paste(Image.fromarray(picture), ((w - picture.shape[1]) // 2, 0))
    canvas.paste(Image.fromarray(bar), (0, picture.shape[0] + 4))
    draw = ImageDraw.Draw(canvas)
    y = picture.shape[0] + 12
    for text, anchor_x in ((f"-{scale:.2g}", 0), ("0", w // 2 - 3), (f"+{scale:.2g}", None)):
        tw = draw.textlength(text)
        draw.text((w - tw - 1 if anchor_x is None else anchor_x, y), text, fill=(60, 60, 60))
    return np.asarray(canvas)


def input_picture(x: np.ndarray, layout: str | None) -> np.ndarray:
    """One input sample as an RGB uint8 picture: the image for images (``layout`` set), grey
    (min-max scaled) for 2-D samples, a grey strip for vectors and other ranks."""
    if layout is not None:
        return _enlarge((np.clip(to_image(x, layout), 0, 1) * 255).round().astype(np.uint8))
    v = np.asarray(x, dtype=np.float64)
    v = v if v.ndim == 2 else v.reshape(1, -1)
    lo, hi = v.min(), v.max()
    grey = ((v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)) * 255
    rgb = np.repeat(grey.round().astype(np.uint8)[..., None], 3, axis=-1)
    return _enlarge(rgb) if np.ndim(x) == 2 else _strip(rgb)


def token_colors(scores: np.ndarray, percentile: float = 100.0) -> tuple[np.ndarray, float]:
    """Per token an RGB colour in [0, 1] of the image colormap (0 white, +-scale at its ends) and
    the scale: the ``percentile`` of |score| (default the largest: a sequence is short, and the
    strongest token should be the strongest colour)."""
    m = np.asarray(scores, dtype=np.float64).reshape(1, -1)
    return colorize(m, percentile)[0], color_scale(m, percentile)


def _font(size: int):  # noqa: ANN202 - a PIL font
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def token_picture(tokens: list[str], scores: np.ndarray, width: int = 640, percentile: float = 100.0) -> np.ndarray:
    """A text's tokens in reading order, each in a box coloured by its relevance (the image
    heatmaps' diverging colormap, red positive, blue negative, white 0), wrapped to ``width``
    pixels (narrower where the text is short), with the colour scale below; RGB uint8. Token strings are escaped
    (:func:`~onnxattr.text.escape_text`) so that control characters show as escapes."""
    from PIL import Image, ImageDraw

    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(tokens) != len(scores):
        raise ValueError(f"{len(tokens)} tokens but {len(scores)} scores")
    colors, scale = token_colors(scores, percentile)
    font, pad, gap, line = _font(14), 4, 4, 24
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes, x, y = [], gap, gap
    for tok in tokens:
        text = escape_text(tok) or " "
        w = int(np.ceil(draw.textlength(text, font=font))) + 2 * pad
        if x + w > width - gap and x > gap:
            x, y = gap, y + line + gap
        boxes.append((x, y, w, text))
        x += w + gap
    used = max((bx + w for bx, _, w, _ in boxes), default=0) + gap
    canvas = Image.new("RGB", (max(min(width, used), 160), y + line + gap), "white")
    draw = ImageDraw.Draw(canvas)
    for (bx, by, w, text), c in zip(boxes, colors):
        fill = tuple(int(round(v * 255)) for v in c)
        draw.rectangle([bx, by, bx + w - 1, by + line - 1], fill=fill, outline=(208, 215, 222))
        ink = (255, 255, 255) if 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2] < 0.5 else (31, 35, 40)
        draw.text((bx + pad, by + 4), text, fill=ink, font=font)
    return with_colorbar(np.asarray(canvas), scale)
