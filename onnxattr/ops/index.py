"""Ops that read or write cells at computed positions: Gather, GatherElements, GatherND,
ScatterElements, ScatterND, Where and Trilu.

Indices may be negative (counted from the end) and are normalised once in the forward. The
vjp of a gather is the scatter-add of the cotangent into the gathered cells; of a scatter, the
cotangent of the overwritten cells goes to the updates and the rest to the data (with
reduction='add' the data keeps all of it). The other reductions (mul, max, min) are refused at
load.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..backend import array_module
from ..compiled.symbolic import NotCompilable, Sym
from .axismap import scatter_add_axis
from .base import Array, Grads, Op, Shape, check_broadcast, host_ints, norm_axis, unbroadcast


def _positive(xp: Any, index: Array, n: Any) -> Array:
    """Indices with negative ones counted from the end (n: the axis length, or lengths)."""
    index = xp.asarray(index).astype(np.int64, copy=False)
    return xp.where(index < 0, index + n, index)


def grids(xp: Any, shape: tuple[int, ...]) -> list[Array]:
    """One broadcastable arange per axis of ``shape`` (numpy.indices(sparse=True), on NumPy or CuPy)."""
    return [xp.arange(n).reshape((1,) * i + (n,) + (1,) * (len(shape) - i - 1)) for i, n in enumerate(shape)]


def along_axis(xp: Any, index: Array, axis: int) -> tuple[Array, ...]:
    """The advanced index that picks, at every position of ``index``, the cell ``index`` names
    along ``axis`` and the same position along the other axes (take_along_axis's index)."""
    return tuple(index if i == axis else grid for i, grid in enumerate(grids(xp, index.shape)))


def nd_index(xp: Any, index: Array, shape: tuple[int, ...], batch_dims: int) -> tuple[Array, ...]:
    """The advanced index of GatherND/ScatterND: ``index`` (..., k) names the cells of the first
    k axes after ``batch_dims`` leading batch axes, which it shares with the data."""
    k = index.shape[-1]
    lead = index.shape[:-1]
    dims = xp.asarray(shape[batch_dims:batch_dims + k], dtype=np.int64)
    index = _positive(xp, index, dims)
    extra = (1,) * (len(lead) - batch_dims)
    batch = tuple(grid.reshape(grid.shape + extra) for grid in grids(xp, lead[:batch_dims]))
    return batch + tuple(index[..., j] for j in range(k))


class Gather(Op):
    """y = take(data, indices, axis): y[..., j..., ...] = data[..., indices[j...], ...], with
    negative indices counted from the end. The vjp scatter-adds into the gathered cells."""

    kind = "route"

    def check(self, shapes: Sequence[Shape | None], values: Sequence[Array | None] = ()) -> None:
        data = shapes[0]
        if data is None:
            return
        n = data[self.check_axis(self.axis, len(data), what="data")]
        index = values[1] if len(values) > 1 else None
        if n is not None and index is not None and index.size and not -n <= int(index.min()) <= int(index.max()) < n:
            raise self.unsupported(f"indices in [{int(index.min())}, {int(index.max())}] are out of range for {n} cells")

    def forward(self, data: Array, indices: Array) -> tuple:
        xp = array_module(data)
        axis = norm_axis(self.axis, data.ndim)
        n = data.shape[axis]
        idx = _positive(xp, indices, n)
        return (xp.take(data, idx, axis=axis),), (axis, n, idx)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        axis, n, idx = ctx
        return [scatter_add_axis(grads[0], idx, n, axis) if needs[0] else None]

    def vjp_graph(self, ctx: Any, grads: Sequence[Any], needs: Sequence[bool]) -> Grads:
        """ScatterElements (adding) of g, its index axis flattened, into zeros of the data's
        shape, for constant indices (the token a classifier head reads)."""
        data, indices = ctx.inputs
        g = grads[0]
        axis = norm_axis(self.axis, len(data.shape))
        n = data.shape[axis]
        if not isinstance(indices, np.ndarray) or n is None or None in data.shape[1:]:
            raise NotCompilable(f"{self.name}: a Gather by run-time indices or of run-time sizes")
        t = g.tracer
        idx = (indices.reshape(-1).astype(np.int64) % n)
        flat = data.shape[:axis] + (idx.size,) + data.shape[axis + 1:]
        gf = t.reshape(g, flat)
        where = np.broadcast_to(idx.reshape((1,) * axis + (-1,) + (1,) * (len(flat) - axis - 1)),
                                tuple(1 if d is None else d for d in flat))
        where = t.emit("Expand", [np.ascontiguousarray(where), t.shape_of(gf)], np.int64, flat)[0]
        zeros = t.filled(data, 0.0) if isinstance(data, Sym) else np.zeros_like(data)
        return [t.emit("ScatterElements", [zeros, where, gf], g.dtype, data.shape, axis=axis, reduction="add")[0]]


class _GatherAt(Op):
    """y = data[index]: an advanced index of data built from the indices input by ``index``;
    the vjp scatter-adds g into the named cells (repeats add up)."""

    kind = "route"

    def index(self, xp: Any, indices: Array, shape: tuple[int, ...]) -> tuple[Array, ...]:
        raise NotImplementedError

    def forward(self, data: Array, indices: Array) -> tuple:
        xp = array_module(data)
        index = self.index(xp, xp.asarray(indices), tuple(data.shape))
        return (data[index],), (tuple(data.shape), index)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        shape, index = ctx
        g = grads[0]
        xp = array_module(g)
        dx = xp.zeros(shape, dtype=g.dtype)
        xp.add.at(dx, index, g)
        return [dx]


class GatherElements(_GatherAt):
    """y[i, j, k] = data[i, indices[i, j, k], k] for axis 1 (any axis and rank alike): torch's
    gather."""

    def index(self, xp: Any, indices: Array, shape: tuple[int, ...]) -> tuple[Array, ...]:
        axis = norm_axis(self.axis, len(shape))
        return along_axis(xp, _positive(xp, indices, shape[axis]), axis)


class GatherND(_GatherAt):
    """y[b..., m...] = data[b..., indices[b..., m..., 0], ..., indices[b..., m..., k-1], ...]
    with ``batch_dims`` leading axes b shared by data and indices."""

    non_negative = ("batch_dims",)
    defaults = {"batch_dims": 0}

    def index(self, xp: Any, indices: Array, shape: tuple[int, ...]) -> tuple[Array, ...]:
        return nd_index(xp, indices, shape, self.batch_dims)


class _Scatter(Op):
    """y = data with ``updates`` written into (reduction 'none') or added to (reduction 'add')
    the cells an index names. Subclasses give ``index(xp, indices, shape)``."""

    kind = "other"
    choices = {"reduction": ("none", "add")}
    defaults = {"reduction": "none"}

    def index(self, xp: Any, indices: Array, shape: tuple[int, ...]) -> tuple[Array, ...]:
        raise NotImplementedError

    def forward(self, data: Array, indices: Array, updates: Array) -> tuple:
        xp = array_module(data)
        index = self.index(xp, xp.asarray(indices), tuple(data.shape))
        y = data.copy()
        if self.reduction == "add":
            xp.add.at(y, index, updates)
        else:
            y[index] = updates
        return (y,), (index, tuple(updates.shape))

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        index, updates_shape = ctx
        g = grads[0]
        dx = g
        if needs[0] and self.reduction != "add":
            dx = g.copy()
            dx[index] = 0
        du = unbroadcast(g[index], updates_shape) if needs[2] else None
        return [dx, None, du]


class ScatterElements(_Scatter):
    """y = data, then y[i, indices[i, j, k], k] (op)= updates[i, j, k] for axis 1 (any axis and
    rank alike): torch's scatter (opset 11; Scatter before it)."""

    index = GatherElements.index


class ScatterND(_Scatter):
    """y = data, then y[indices[m..., :]] (op)= updates[m...]: each index row names a cell or a
    slice of the first k axes."""

    batch_dims = 0
    index = GatherND.index


class Where(Op):
    """y = x where condition else z (all three broadcast); the cotangent goes to x where the
    condition holds and to z elsewhere."""

    kind = "other"

    def check(self, shapes: Sequence[Shape | None], values: Sequence[Array | None] = ()) -> None:
        check_broadcast(self, shapes)

    def forward(self, condition: Array, x: Array, z: Array) -> tuple:
        xp = array_module(condition, x, z)
        condition = xp.asarray(condition)
        return (xp.where(condition, x, z),), (condition, tuple(x.shape), tuple(z.shape))

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        condition, xs, zs = ctx
        g = grads[0]
        xp = array_module(g)
        zero = g.dtype.type(0)
        return [
            None,
            unbroadcast(xp.where(condition, g, zero), xs) if needs[1] else None,
            unbroadcast(xp.where(condition, zero, g), zs) if needs[2] else None,
        ]


class Trilu(Op):
    """y = the upper (upper=1: j - i >= k) or lower (upper=0: j - i <= k) triangle of the last
    two axes of x, zeros elsewhere (opset 14); the vjp keeps the same triangle of g."""

    kind = "route"

    def triangle(self, x: Array, k: int) -> Array:
        xp = array_module(x)
        return xp.triu(x, k) if self.upper else xp.tril(x, k)

    def forward(self, x: Array, k: Array | None = None) -> tuple:
        shift = host_ints(k)[0] if k is not None else 0
        if x.ndim < 2:
            raise self.unsupported(f"input of rank {x.ndim}; Trilu needs at least 2 axes")
        return (self.triangle(x, shift),), shift

    def vjp(self, ctx: int, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        return [self.triangle(grads[0], ctx)]
