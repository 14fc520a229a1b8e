"""Reductions over axes: ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceL1, ReduceL2,
ReduceSumSquare, ReduceLogSumExp, and ArgMax/ArgMin.

``axes`` is an attribute before opset 18 (before opset 13 for ReduceSum) and an optional input
since; both are read. No axes means every axis, or none when noop_with_empty_axes=1 (then only the elementwise part
applies, as in onnxruntime: ReduceL1 gives |x|, ReduceSumSquare x^2).
``keepdims`` (default 1) keeps the reduced axes with size 1. The vjps broadcast the cotangent
back over the reduced axes. ReduceMax/ReduceMin split it evenly among tied extrema (as
``torch.amax``), so the total is conserved.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..backend import array_module
from .base import Array, Grads, Op, host_ints, norm_axis


class _Reduce(Op):
    """Shared axes/keepdims handling. Subclasses give ``reduce(xp, x, axes)`` (with keepdims)
    and ``grad(xp, g, x, y, count)`` (g and y with keepdims), and ``saves`` ("x", "y")."""

    saves: str = ""

    def setup(self) -> None:
        self.noop = bool(self.attrs.get("noop_with_empty_axes"))

    def reduce(self, xp: Any, x: Array, axes: tuple[int, ...]) -> Array:
        raise NotImplementedError

    def grad(self, xp: Any, g: Array, x: Array, y: Array, count: int) -> Array:
        raise NotImplementedError

    def forward(self, x: Array, axes: Array | None = None) -> tuple:
        spec = host_ints(axes) if axes is not None else self.attrs.get("axes")
        if not spec and not self.noop:
            spec = list(range(x.ndim))
        red = tuple(sorted({norm_axis(a, x.ndim) for a in spec or ()}))
        xp = array_module(x)
        y = self.reduce(xp, x, red)
        count = int(np.prod([x.shape[a] for a in red]))
        ctx = (
            tuple(x.shape), y.shape, count,
            x if "x" in self.saves else None, y if "y" in self.saves else None,
        )
        return (y if self.keepdims else y.reshape([n for i, n in enumerate(x.shape) if i not in red]),), ctx

    def vjp(self, ctx: Any, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        if not needs[0]:
            return []
        shape, kept, count, x, y = ctx
        xp = array_module(grads[0])
        g = grads[0].reshape(kept)
        return [xp.broadcast_to(self.grad(xp, g, x, y, count), shape).copy()]


class ReduceSum(_Reduce):
    """y = sum of x over the axes."""

    kind = "sum"

    def reduce(self, xp: Any, x: Array, axes: tuple[int, ...]) -> Array:
        return x.sum(axis=axes, keepdims=True)

    def grad(self, xp: Any, g: Array, x: Array, y: Array, count: int) -> Array:
        return g


class ReduceMean(_Reduce):
    """y = mean of x over the axes."""

    kind = "sum"

    def reduce(self, xp: Any, x: Array, axes: tuple[int, ...]) -> Array:
        return x.mean(axis=axes, keepdims=True)

    def grad(self, xp: Any, g: Array, x: Array, y: Array, count: int) -> Array:
        return g / g.dtype.type(count)


class _Extreme(_Reduce):
    """ReduceMax/ReduceMin: the cotangent is split evenly among the cells equal to the extremum."""

    saves = "xy"

    def grad(self, xp: Any, g: Array, x: Array, y: Array, count: int) -> Array:
        hit = x == y
        ties = hit.sum(axis=tuple(i for i, n in enumerate(y.shape) if n == 1 and x.shape[i] != 1), keepdims=True)
        return hit * (g / ties.astype(g.dtype))


class ReduceMax(_Extreme):
    """y = max of x over the axes."""

    kind = "maxpool"

    def reduce(self, xp: Any, x: Array, axes: tuple[int, ...]) -> Array:
        return x.max(axis=axes, keepdims=True)


class ReduceMin(_Extreme):
    """y = min of x over the axes."""

    kind = "other"

    def reduce(self, xp: Any, x: Array, axes: tuple[int, ...]) -> Array:
        return x.min(axis=axes, keepdims=True)


class ReduceL1(_Reduce):
    """y = sum of |x| over the axes; d/dx = sign(x)."""

    saves = "x"

    def reduce(self, xp: Any, x: Array, axes: tuple[int, ...]) -> Array:
        return xp.abs(x).sum(axis=axes, keepdims=True)

    def grad(self, xp: Any, g: Array, x: Array, y: Array, count: int) -> Array:
        return g * xp.sign(x)


class ReduceL2(_Reduce):
    """y = sqrt(sum of x^2) over the axes; d/dx = x / y (0 where y = 0)."""

    saves = "xy"

    def reduce(self, xp: Any, x: Array, axes: tuple[int, ...]) -> Array:
        return xp.sqrt((x * x).sum(axis=axes, keepdims=True))

    def grad(self, xp: Any, g: Array, x: Array, y: Array, count: int) -> Array:
        return x * xp.where(y > 0, g / xp.where(y > 0, y, 1), 0).astype(g.dtype)


class ReduceSumSquare(_Reduce):
    """y = sum of x^2 over the axes; d/dx = 2x."""

    saves = "x"

    def reduce(self, xp: Any, x: Array, axes: tuple[int, ...]) -> Array:
        return (x * x).sum(axis=axes, keepdims=True)

    def grad(self, xp: Any, g: Array, x: Array, y: Array, count: int) -> Array:
        return 2 * g * x


class ReduceLogSumExp(_Reduce):
    """y = log(sum of exp(x)) over the axes (computed stably); d/dx = exp(x - y)."""

    saves = "xy"

    def reduce(self, xp: Any, x: Array, axes: tuple[int, ...]) -> Array:
        m = x.max(axis=axes, keepdims=True)
        m = xp.where(xp.isfinite(m), m, 0)
        return (xp.log(xp.exp(x - m).sum(axis=axes, keepdims=True)) + m).astype(x.dtype)

    def grad(self, xp: Any, g: Array, x: Array, y: Array, count: int) -> Array:
        return g * xp.exp(x - y)


class _Arg(Op):
    """ArgMax/ArgMin along ``axis`` (int64 indices); ties go to the first index, or the last
    with select_last_index=1 (opset 12). Not differentiable."""

    kind = "shape"
    differentiable = False
    fn: str = ""

    def forward(self, x: Array) -> tuple:
        xp = array_module(x)
        axis = norm_axis(self.axis, x.ndim)
        pick = getattr(xp, self.fn)
        if self.attrs.get("select_last_index"):
            n = x.shape[axis]
            i = n - 1 - pick(xp.flip(x, axis=axis), axis=axis, keepdims=bool(self.keepdims))
        else:
            i = pick(x, axis=axis, keepdims=bool(self.keepdims))
        return (i.astype(np.int64),), None

    def vjp(self, ctx: Any, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        return []


class ArgMax(_Arg):
    fn = "argmax"


class ArgMin(_Arg):
    fn = "argmin"


class CumSum(Op):
    """y[..., i, ...] = sum of x[..., j, ...] over j <= i along ``axis`` (an input), j < i with
    exclusive=1, and from the end with reverse=1. The vjp is the cumulative sum of g the other
    way: the transposed triangle, with the same exclusivity."""

    kind = "sum"

    @staticmethod
    def scan(x: Array, axis: int, exclusive: bool, reverse: bool) -> Array:
        xp = array_module(x)
        if reverse:
            x = xp.flip(x, axis=axis)
        y = xp.cumsum(x, axis=axis, dtype=x.dtype)
        if exclusive:
            y = xp.roll(y, 1, axis=axis)
            y[(slice(None),) * axis + (0,)] = 0
        return xp.flip(y, axis=axis) if reverse else y

    def forward(self, x: Array, axis: Array) -> tuple:
        a = self.check_axis(host_ints(axis)[0], x.ndim)
        return (self.scan(x, a, bool(self.exclusive), bool(self.reverse)),), a

    def vjp(self, ctx: int, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        return [self.scan(grads[0], ctx, bool(self.exclusive), not self.reverse)]
