"""Per-sample similarity of two batches of maps: cosine, Pearson, Spearman and SSIM.

Every function takes two arrays of the same shape whose first axis is the batch and returns one
value per sample (float64). A value that is undefined (a zero vector for the cosine, a constant
map for a correlation) is NaN, never a warning.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError


def _pair(a: np.ndarray, b: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise InputError(f"{what}: the two maps have different shapes {a.shape} and {b.shape}")
    if a.ndim < 1 or a.shape[0] == 0:
        raise InputError(f"{what}: expected a non-empty batch, got shape {a.shape}")
    return a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    ok = den > 0
    out[ok] = num[ok] / den[ok]
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """cos(a_n, b_n) = <a_n, b_n> / (|a_n| |b_n|) of the flattened samples; NaN where a norm is 0."""
    a, b = _pair(a, b, "cosine")
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.clip(_ratio((a * b).sum(axis=1), den), -1.0, 1.0)


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of the flattened samples: the cosine of the centred vectors."""
    a, b = _pair(a, b, "pearson")
    return cosine(a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True))


def rank(a: np.ndarray) -> np.ndarray:
    """Ranks (1..F) of each flattened sample, ties given their average rank."""
    a = np.asarray(a, dtype=np.float64)
    flat = a.reshape(a.shape[0], -1)
    out = np.empty_like(flat)
    for i, row in enumerate(flat):
        _, inverse, counts = np.unique(row, return_inverse=True, return_counts=True)
        average = np.cumsum(counts) - (counts - 1) / 2.0  # mean of the ranks each tie group spans
        out[i] = average[inverse.reshape(-1)]
    return out.reshape(a.shape)


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation: Pearson correlation of the average ranks (ties share a rank)."""
    a, b = _pair(a, b, "spearman")
    return pearson(rank(a), rank(b))


def minmax(a: np.ndarray) -> np.ndarray:
    """Each sample scaled to [0, 1] by its own min and max (a constant sample becomes 0)."""
    a = np.asarray(a, dtype=np.float64)
    flat = a.reshape(a.shape[0], -1)
    lo = flat.min(axis=1, keepdims=True)
    span = flat.max(axis=1, keepdims=True) - lo
    return ((flat - lo) / np.where(span > 0, span, 1.0)).reshape(a.shape)


def gaussian_window(size: int, sigma: float = 1.5) -> np.ndarray:
    """A normalised 1-D Gaussian of ``size`` taps (odd) and standard deviation ``sigma``."""
    r = np.arange(size) - (size - 1) / 2.0
    w = np.exp(-0.5 * (r / sigma) ** 2)
    return w / w.sum()


def _filter_valid(a: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Separable correlation of every non-batch axis with ``window``, 'valid' part only."""
    for axis in range(1, a.ndim):
        a = np.lib.stride_tricks.sliding_window_view(a, len(window), axis=axis) @ window
    return a


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0, win_size: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> np.ndarray:
    """Mean structural similarity of each pair of 1-D or 2-D maps (batch first).

    Wang, Bovik, Sheikh & Simoncelli 2004, "Image quality assessment: from error visibility to
    structural similarity": with local means mu, variances s^2 and covariance s_ab under a
    Gaussian window (11 taps, sigma 1.5, weights summing to 1),

        SSIM = (2 mu_a mu_b + C1)(2 s_ab + C2) / ((mu_a^2 + mu_b^2 + C1)(s_a^2 + s_b^2 + C2)),

    C1 = (k1 L)^2, C2 = (k2 L)^2, L = ``data_range``, averaged over the positions where the
    window fits inside the map. This equals ``skimage.metrics.structural_similarity(a, b,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=L)`` (skimage
    filters with reflection and then crops the same border). Maps smaller than the window use
    the largest odd window that fits (same sigma).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise InputError(f"ssim: the two maps have different shapes {a.shape} and {b.shape}")
    if a.ndim not in (2, 3):
        raise InputError(f"ssim takes a batch of 1-D or 2-D maps, got shape {a.shape}")
    size = min(win_size, *a.shape[1:])
    size -= 1 - size % 2  # largest odd size that fits
    w = gaussian_window(size, sigma)
    mu_a, mu_b = _filter_valid(a, w), _filter_valid(b, w)
    var_a = _filter_valid(a * a, w) - mu_a**2
    var_b = _filter_valid(b * b, w) - mu_b**2
    cov = _filter_valid(a * b, w) - mu_a * mu_b
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.reshape(s.shape[0], -1).mean(axis=1)
