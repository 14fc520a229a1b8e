"""Localization: does a map put its relevance on the object?

:func:`relevance_mass` is the relevance mass accuracy of Arras, Osman & Samek 2022 ("CLEVR-XAI: a
benchmark dataset for the ground truth evaluation of neural network explanations"): the share of
a map's positive relevance that falls inside the ground-truth mask. A map that ignores the object
scores about the mask's area fraction (:func:`mask_fraction`), a perfect one 1.

For text the mask marks the deciding tokens, (N, T), and a token's relevance is the sum over its
embedding (:func:`onnxattr.token_scores`); the share of the sequence they make up is the
expected mass of a map that ignores them (``within``: the tokens the attention mask keeps).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from ..viz import to_2d


def relevance_mass(attr: np.ndarray, mask: np.ndarray, layout: str | None = None,
                   within: np.ndarray | None = None) -> np.ndarray:
    """Per sample: sum of R+ inside the mask / sum of R+ over the image (or the sequence), R =
    the map with its channels summed (layout told or inferred), or for a (N, T) token mask the
    map summed over each token's trailing axes. NaN where a map has no positive relevance.

    Args:
        attr: (N, C, H, W) or (N, H, W, C) maps, or (N, H, W); or (N, T, ...) token maps.
        mask: (N, H, W) boolean object masks, or (N, T) boolean masks of the deciding tokens.
        within: optional boolean mask of the mask's shape: only these pixels or tokens count
            (a text model's attention mask, so that padding takes no share).
    """
    a = np.asarray(attr, dtype=np.float64)
    if np.ndim(mask) == 2:  # tokens: (N, T)
        r = np.maximum(a.reshape(a.shape[0], a.shape[1] if a.ndim > 1 else 1, -1).sum(axis=2), 0)
    else:
        r = np.maximum(to_2d(a, layout), 0)
    m = _check_mask(mask, r.shape)
    if within is not None:
        r = r * _check_mask(within, r.shape)
    total = r.reshape(len(r), -1).sum(axis=1)
    inside = (r * m).reshape(len(r), -1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / np.where(total > 0, total, 1), np.nan)


def mask_fraction(mask: np.ndarray, within: np.ndarray | None = None) -> np.ndarray:
    """Per sample, the share of pixels (tokens) inside the mask, among those ``within`` where
    given: the expected relevance mass of a map spread uniformly at random."""
    m = np.asarray(mask, dtype=bool)
    keep = np.ones_like(m) if within is None else _check_mask(within, m.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (m & keep).reshape(len(m), -1).sum(axis=1) / keep.reshape(len(m), -1).sum(axis=1)


def _check_mask(mask: Any, shape: tuple[int, ...]) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        what = "tokens are" if len(shape) == 2 else "pixels are"
        raise InputError(f"mask has shape {m.shape}; the maps' {what} {tuple(shape)}")
    return m.astype(bool)
