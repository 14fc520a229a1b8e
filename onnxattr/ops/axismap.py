"""Linear maps along one axis, shared by the ops that copy or interpolate cells: the adjoint of a
gather (:func:`scatter_add_axis`, Gather's vjp), and maps given as K (index, weight) rows
(:func:`gather_axis`) with their transposes in the same form (:func:`transpose_map`), which Pad's
reflect/edge/wrap modes and Resize apply forward and backward.
"""
from __future__ import annotations

import numpy as np

from ..backend import array_module
from .base import Array


def scatter_add_axis(g: Array, index: Array, size: int, axis: int) -> Array:
    """The adjoint of ``take(x, index, axis)`` for an x with ``size`` cells along ``axis``:
    out[..., i, ...] = sum of g[..., j..., ...] over the j with index[j] == i (index of any
    shape, occupying ``index.ndim`` axes of g from ``axis`` on)."""
    xp = array_module(g)
    index = xp.asarray(index)
    out = xp.zeros(g.shape[:axis] + (size,) + g.shape[axis + index.ndim:], dtype=g.dtype)
    xp.add.at(out, (slice(None),) * axis + (index,), g)
    return out


def gather_axis(x: Array, index: np.ndarray, weight: np.ndarray | None, axis: int) -> Array:
    """y[..., j, ...] = sum_k weight[k, j] x[..., index[k, j], ...]: a linear map along one axis
    given by K (index, weight) rows on the host (weight None: all ones). Pad and Resize apply
    their maps with it, and their vjps apply the transposed map (:func:`transpose_map`)."""
    xp = array_module(x)
    shape = (-1,) + (1,) * (x.ndim - axis - 1)
    y = None
    for k, row in enumerate(index):
        term = xp.take(x, xp.asarray(row), axis=axis)
        if weight is not None and not np.all(weight[k] == 1):
            term *= xp.asarray(weight[k], dtype=x.dtype).reshape(shape)
        if y is None:
            y = term
        else:
            y += term
    return y


def transpose_map(index: np.ndarray, weight: np.ndarray | None, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The transpose of the map of :func:`gather_axis` (``index``, ``weight`` of shape (K, m),
    onto an axis of ``size`` cells) in the same form: row k holds, for every input cell i, its
    k-th output cell j and weight (0 where i has fewer than k + 1). The vjp is then a gather
    too: no scatter, no atomics, the same on NumPy and CuPy."""
    rows, m = index.shape
    i = index.reshape(-1)
    j = np.tile(np.arange(m, dtype=np.int64), rows)
    w = np.ones(i.size, np.float32) if weight is None else weight.reshape(-1).astype(np.float32)
    keep = w != 0
    i, j, w = i[keep], j[keep], w[keep]
    order = np.argsort(i, kind="stable")
    i, j, w = i[order], j[order], w[order]
    first = np.r_[True, i[1:] != i[:-1]] if i.size else np.zeros(0, bool)
    rank = np.arange(i.size) - np.flatnonzero(first)[np.cumsum(first) - 1] if i.size else i
    depth = int(rank.max()) + 1 if i.size else 1
    jt = np.zeros((depth, size), np.int64)
    wt = np.zeros((depth, size), np.float32)
    jt[rank, i] = j
    wt[rank, i] = w
    return jt, wt
