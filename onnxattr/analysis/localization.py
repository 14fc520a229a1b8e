"""Localization: does a map put its relevance on the object?

:func:`relevance_mass` is the relevance mass accuracy of Arras, Osman & Samek 2022 ("CLEVR-XAI: a
benchmark dataset for the ground truth evaluation of neural network explanations"): the share of
a map's positive relevance that falls inside the ground-truth mask. A map that ignores the object
scores about the mask's area fraction (:func:`mask_fraction`), a perfect one 1.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ..viz import to_2d


def relevance_mass(attr: np.ndarray, mask: np.ndarray, layout: str | None = None) -> np.ndarray:
    """Per sample: sum of R+ inside the mask / sum of R+ over the image, R = the map with its
    channels summed (layout told or inferred). NaN where a map has no positive relevance.

    Args:
        attr: (N, C, H, W) or (N, H, W, C) maps, or (N, H, W).
        mask: (N, H, W) boolean object masks.
    """
    r = np.maximum(to_2d(np.asarray(attr, dtype=np.float64), layout), 0)
    m = _check_mask(mask, r.shape)
    total = r.reshape(len(r), -1).sum(axis=1)
    inside = (r * m).reshape(len(r), -1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / np.where(total > 0, total, 1), np.nan)


def mask_fraction(mask: np.ndarray) -> np.ndarray:
    """Per sample, the share of pixels inside the mask: the expected relevance mass of a map
    spread uniformly at random."""
    m = np.asarray(mask, dtype=bool)
    return m.reshape(len(m), -1).mean(axis=1)


def _check_mask(mask: Any, shape: tuple[int, ...]) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise InputError(f"mask has shape {m.shape}; the maps' pixels are {tuple(shape)} (N, H, W)")
    return m.astype(bool)
