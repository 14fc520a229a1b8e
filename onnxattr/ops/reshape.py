"""Ops that rearrange the cells of one tensor without arithmetic: Flatten, Reshape, Squeeze,
Unsqueeze, Transpose, DepthToSpace, SpaceToDepth, Expand and Tile.

Shape-like operands (shape, axes, repeats) were attributes in older opsets and are inputs in
newer ones; every op reads either, with ``host_ints``, so they stay on the host. The vjp of a
rearrangement is the inverse rearrangement of the cotangent; of a copy (Expand, Tile), the sum
over the copies.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..backend import array_module
from .base import Array, Grads, Op, Shape, host_ints, norm_axis, unbroadcast


class _Reshape(Op):
    """A reshape of the data input (ctx: its shape); the vjp reshapes the cotangent back."""

    kind = "route"

    def vjp(self, ctx: tuple[int, ...], grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        return [grads[0].reshape(ctx)]


class Flatten(_Reshape):
    """y = x reshaped to (prod(shape[:axis]), prod(shape[axis:])); axis in [-rank, rank]."""

    def check(self, shapes: Sequence[Shape | None]) -> None:
        if shapes and shapes[0] is not None and not -len(shapes[0]) <= self.axis <= len(shapes[0]):
            raise self.unsupported(f"axis={self.axis} is out of range for an input of rank {len(shapes[0])}")

    def forward(self, x: Array) -> tuple:
        if not -x.ndim <= self.axis <= x.ndim:
            raise self.unsupported(f"axis={self.axis} is out of range for an input of rank {x.ndim}")
        axis = norm_axis(self.axis, x.ndim)
        shape = (math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))
        return (x.reshape(shape),), x.shape


class Reshape(_Reshape):
    """y = x reshaped to ``shape`` (an attribute before opset 5, an input since): a 0 copies the
    input's dimension (unless allowzero=1, opset 14, where 0 means an empty axis), -1 is inferred."""

    def forward(self, x: Array, shape: Array | None = None) -> tuple:
        spec = host_ints(shape) if shape is not None else self.attrs.get("shape")
        if spec is None:
            raise self.unsupported("no target shape (neither a 'shape' input nor attribute)")
        if not self.attrs.get("allowzero"):
            spec = [x.shape[i] if d == 0 else d for i, d in enumerate(spec)]
        return (x.reshape(spec),), x.shape


class Squeeze(_Reshape):
    """y = x without the size-1 axes in ``axes`` (attribute before opset 13, input since), or
    without every size-1 axis where none are given."""

    def forward(self, x: Array, axes: Array | None = None) -> tuple:
        spec = host_ints(axes) if axes is not None else self.attrs.get("axes")
        if spec is None:
            spec = [i for i, n in enumerate(x.shape) if n == 1]
        drop = {norm_axis(a, x.ndim) for a in spec}
        bad = [a for a in drop if not 0 <= a < x.ndim or x.shape[a] != 1]
        if bad:
            raise self.unsupported(f"cannot squeeze axes {sorted(bad)} of shape {tuple(x.shape)}: not of size 1")
        shape = tuple(n for i, n in enumerate(x.shape) if i not in drop)
        return (x.reshape(shape),), x.shape


class Unsqueeze(_Reshape):
    """y = x with size-1 axes inserted at ``axes`` (positions in the output; attribute before
    opset 13, input since)."""

    def forward(self, x: Array, axes: Array | None = None) -> tuple:
        spec = host_ints(axes) if axes is not None else self.attrs.get("axes")
        if spec is None:
            raise self.unsupported("no 'axes' (neither an input nor an attribute)")
        rank = x.ndim + len(spec)
        new = {norm_axis(a, rank) for a in spec}
        dims = iter(x.shape)
        shape = tuple(1 if i in new else next(dims) for i in range(rank))
        return (x.reshape(shape),), x.shape


class _Permute(Op):
    """y = x reshaped to ``split``, its axes permuted by ``perm``, reshaped to ``out``; the vjp
    is the inverse: the cotangent reshaped to the permuted split, permuted back, reshaped to x."""

    kind = "route"

    def plan(self, shape: tuple[int, ...]) -> tuple[tuple[int, ...], list[int], tuple[int, ...]]:
        """(split, perm, out) for an input of ``shape``."""
        raise NotImplementedError

    def forward(self, x: Array) -> tuple:
        split, perm, out = self.plan(tuple(x.shape))
        y = x.reshape(split).transpose(perm)
        return (y.reshape(out) if out else y,), (tuple(x.shape), tuple(y.shape), perm)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        shape, permuted, perm = ctx
        return [grads[0].reshape(permuted).transpose(np.argsort(perm).tolist()).reshape(shape)]


class Transpose(_Permute):
    """y = x with its axes permuted by ``perm`` (default: reversed)."""

    def plan(self, shape: tuple[int, ...]) -> tuple[tuple[int, ...], list[int], tuple[int, ...]]:
        perm = self.perm if self.perm is not None else list(range(len(shape)))[::-1]
        if sorted(perm) != list(range(len(shape))):
            raise self.unsupported(f"perm={perm} is not a permutation of the {len(shape)} axes")
        return shape, perm, ()


class _Blocks(_Permute):
    """DepthToSpace/SpaceToDepth on an (N, C, H, W) input with ``blocksize`` b."""

    positive = ("blocksize",)

    def check(self, shapes: Sequence[Shape | None]) -> None:
        shape = shapes[0] if shapes else None
        if shape is not None and len(shape) != 4:
            raise self.unsupported(f"input of rank {len(shape)}; the op needs (N, C, H, W)")


class DepthToSpace(_Blocks):
    """y[n, c, h b + i, w b + j] = x[n, (i b + j) C' + c, h, w] (mode DCR, the default) or
    x[n, c b^2 + i b + j, h, w] (mode CRD), with C' = C / b^2."""

    choices = {"mode": ("DCR", "CRD")}
    defaults = {"mode": "DCR"}

    def plan(self, shape: tuple[int, ...]) -> tuple[tuple[int, ...], list[int], tuple[int, ...]]:
        n, c, h, w = shape
        b = self.blocksize
        if c % (b * b):
            raise self.unsupported(f"{c} channels are not a multiple of blocksize^2 = {b * b}")
        if self.mode == "DCR":
            return (n, b, b, c // (b * b), h, w), [0, 3, 4, 1, 5, 2], (n, c // (b * b), h * b, w * b)
        return (n, c // (b * b), b, b, h, w), [0, 1, 4, 2, 5, 3], (n, c // (b * b), h * b, w * b)


class SpaceToDepth(_Blocks):
    """y[n, (i b + j) C + c, h, w] = x[n, c, h b + i, w b + j]: the inverse of DepthToSpace (DCR)."""

    def plan(self, shape: tuple[int, ...]) -> tuple[tuple[int, ...], list[int], tuple[int, ...]]:
        n, c, h, w = shape
        b = self.blocksize
        if h % b or w % b:
            raise self.unsupported(f"spatial shape {(h, w)} is not a multiple of blocksize {b}")
        return (n, c, h // b, b, w // b, b), [0, 3, 5, 1, 2, 4], (n, c * b * b, h // b, w // b)


class Expand(Op):
    """y = x broadcast with ``shape`` (both ways: the output has the larger of the two
    dimensions); the vjp sums over the broadcast axes."""

    kind = "route"

    def forward(self, x: Array, shape: Array) -> tuple:
        xp = array_module(x)
        out = np.broadcast_shapes(tuple(x.shape), tuple(host_ints(shape)))
        return (xp.ascontiguousarray(xp.broadcast_to(x, out)),), tuple(x.shape)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        return [unbroadcast(grads[0], ctx)]


class Tile(Op):
    """y = x repeated ``repeats[i]`` times along each axis i (opset 6 and later)."""

    kind = "route"

    def setup(self) -> None:
        if self.opset < 6:
            raise self.unsupported("Tile before opset 6 (tiles and axis inputs)")

    def forward(self, x: Array, repeats: Array) -> tuple:
        reps = host_ints(repeats)
        if len(reps) != x.ndim or min(reps, default=0) < 0:
            raise self.unsupported(f"repeats {reps} for an input of rank {x.ndim}")
        return (array_module(x).tile(x, reps),), (tuple(x.shape), reps)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        shape, reps = ctx
        split = [d for r, n in zip(reps, shape) for d in (r, n)]
        return [grads[0].reshape(split).sum(axis=tuple(range(0, 2 * len(shape), 2)))]


