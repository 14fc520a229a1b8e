"""Synthetic "shapes" images with ground-truth object masks (NumPy only, deterministic).

Each 32x32 RGB image holds one coloured shape on a textured, noisy background:

    class 0: circle (filled disc)
    class 1: square (filled, rotated by a random angle in [-30, 30] degrees)
    class 2: triangle (filled, equilateral, random rotation)
    class 3: cross (plus sign, arm thickness ~ 2/5 of its size, random rotation in [-30, 30])

The background is a random base colour plus a smooth texture (two random plane waves per
channel) plus per-pixel Gaussian noise; the shape has its own random colour, chosen far enough
from the local background colour to be visible, with a little noise of its own. Position and size
(radius 5-10 px) are random, the shape always lies inside the image. Values are float32 in [0, 1].

``mask`` is True exactly on the pixels painted with the shape's colour, so attributions can be
scored against it (pointing game, relevance mass inside the mask, ...).

    >>> x, y, mask = make_shapes(8, seed=0)            # NCHW
    >>> x.shape, y.shape, mask.shape
    ((8, 3, 32, 32), (8,), (8, 32, 32))

Same ``(n, seed)`` gives the same data on every machine (only ``numpy.random.default_rng``).
"""
from __future__ import annotations

import numpy as np

SIZE = 32
CLASSES = ("circle", "square", "triangle", "cross")
N_CLASSES = len(CLASSES)


def _rotate(dx: np.ndarray, dy: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(angle), np.sin(angle)
    return c * dx + s * dy, -s * dx + c * dy


def _shape_mask(cls: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Boolean (32, 32) mask of a shape centred at (cx, cy) with 'radius' r (pixel centres)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) + 0.5
    dx, dy = _rotate(xx - cx, yy - cy, angle)
    if cls == 0:  # circle
        return dx * dx + dy * dy <= r * r
    if cls == 1:  # square with half side ~ r / sqrt(2) * 1.2 (similar area to the circle)
        h = 0.85 * r
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    if cls == 2:  # equilateral triangle inscribed in a circle of radius 1.15 r
        R = 1.15 * r
        inside = np.ones_like(dx, dtype=bool)
        for k in range(3):
            t = np.pi / 2 + 2 * np.pi * k / 3 + np.pi / 3  # outward normal of edge k
            inside &= dx * np.cos(t) + dy * np.sin(t) <= R / 2  # inradius = R / 2
        return inside
    if cls == 3:  # cross / plus sign
        w = max(1.5, 0.4 * r)
        return ((np.abs(dx) <= r) & (np.abs(dy) <= w / 2 + 0.5)) | (
            (np.abs(dy) <= r) & (np.abs(dx) <= w / 2 + 0.5))
    raise ValueError(f"unknown class {cls}")


def _background(rng: np.random.Generator) -> np.ndarray:
    """(32, 32, 3) textured background in roughly [0, 1]."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    base = rng.uniform(0.15, 0.85, size=3)
    img = np.empty((SIZE, SIZE, 3))
    for c in range(3):
        tex = np.zeros((SIZE, SIZE))
        for _ in range(2):
            freq = rng.uniform(0.1, 0.6)
            theta = rng.uniform(0, np.pi)
            phase = rng.uniform(0, 2 * np.pi)
            tex += rng.uniform(0.03, 0.12) * np.sin(
                freq * (np.cos(theta) * xx + np.sin(theta) * yy) + phase)
        img[..., c] = base[c] + tex
    img += rng.normal(0.0, rng.uniform(0.02, 0.08), size=img.shape)
    return img


def make_shapes(n: int, seed: int = 0, layout: str = "NCHW"
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` shape images: ``(x, y, mask)``.

    x: float32 (n, 3, 32, 32) for ``layout="NCHW"`` or (n, 32, 32, 3) for ``"NHWC"``, in [0, 1];
    y: int64 (n,) class index (see ``CLASSES``), balanced (cyclic) then shuffled;
    mask: bool (n, 32, 32), True on the object's pixels.
    """
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be 'NCHW' or 'NHWC', not {layout!r}")
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % N_CLASSES).astype(np.int64)
    x = np.empty((n, SIZE, SIZE, 3), np.float32)
    mask = np.empty((n, SIZE, SIZE), bool)
    for i in range(n):
        img = _background(rng)
        r = rng.uniform(5.0, 10.0)
        margin = 1.2 * r + 1.0
        cx, cy = rng.uniform(margin, SIZE - margin, size=2)
        angle = rng.uniform(-np.pi / 6, np.pi / 6) if y[i] in (1, 3) else rng.uniform(0, 2 * np.pi)
        m = _shape_mask(int(y[i]), cx, cy, r, angle)
        bg_mean = img[m].mean(axis=0)
        for _ in range(100):  # shape colour well away from the background under it
            colour = rng.uniform(0.0, 1.0, size=3)
            if np.abs(colour - bg_mean).max() > 0.35:
                break
        img[m] = colour + rng.normal(0.0, 0.03, size=(int(m.sum()), 3))
        x[i] = np.clip(img, 0.0, 1.0)
        mask[i] = m
    if layout == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x, y, mask


def save_samples(directory: str, seed: int = 1234) -> None:
    """One PNG per class (32x32 RGB) plus ``shapes_batch.npy`` (4, 3, 32, 32) float32 NCHW,
    ``shapes_labels.npy`` and ``shapes_masks.npy``, in class order."""
    import os

    from PIL import Image

    os.makedirs(directory, exist_ok=True)
    x, y, mask = make_shapes(64, seed=seed, layout="NHWC")
    idx = [int(np.flatnonzero(y == c)[0]) for c in range(N_CLASSES)]
    for c, i in enumerate(idx):
        # The PNG is the quantised image; the .npy holds the same quantised values so both agree.
        Image.fromarray(np.round(x[i] * 255).astype(np.uint8), "RGB").save(
            os.path.join(directory, f"{c}_{CLASSES[c]}.png"))
    batch = np.round(x[idx] * 255).astype(np.float32) / 255
    np.save(os.path.join(directory, "shapes_batch.npy"),
            np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))
    np.save(os.path.join(directory, "shapes_labels.npy"), y[idx])
    np.save(os.path.join(directory, "shapes_masks.npy"), mask[idx])


if __name__ == "__main__":
    import sys

    out = sys.argv[1] if len(sys.argv) > 1 else "models/samples"
    save_samples(out)
    print(f"wrote samples to {out}")
