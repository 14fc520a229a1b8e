"""Ops that rearrange the cells of one tensor without arithmetic: Flatten, Reshape, Squeeze,
Unsqueeze, Transpose, DepthToSpace, SpaceToDepth, Expand and Tile.

Shape-like operands (shape, axes, repeats) were attributes in older opsets and are inputs in
newer ones; every op reads either, with ``host_ints``, so they stay on the host. The vjp of a
rearrangement is the inverse rearrangement of the cotangent; of a copy (Expand, Tile), the sum
over the copies.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..backend import array_module
from .base import Array, Grads, Op, Shape, host_ints, norm_axis, unbroadcast


class _Reshape(Op):
    """A reshape of the data input (ctx: its shape); the vjp reshapes the cotangent back."""

    kind = "route"

    def vjp(self, ctx: tuple[int, ...], grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        return [grads[0].reshape(ctx)]

    def vjp_graph(self, ctx: Any, grads: Sequence[Any], needs: Sequence[bool]) -> Grads:
        x, g = ctx.inputs[0], grads[0]
        return [g.tracer.reshape(g, x.shape, like=x)]


class Flatten(_Reshape):
    """y = x reshaped to (prod(shape[:axis]), prod(shape[axis:])); axis in [-rank, rank]."""

    def check(self, shapes: Sequence[Shape | None], values: Sequence[Array | None] = ()) -> None:
        if shapes and shapes[0] is not None:
            self.check_axis(self.axis, len(shapes[0]), end=len(shapes[0]) + 1)

    def forward(self, x: Array) -> tuple:
        axis = self.check_axis(self.axis, x.ndim, end=x.ndim + 1)
        shape = (math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))
        return (x.reshape(shape),), x.shape


def _static(shape: Shape | None) -> bool:
    return shape is not None and all(isinstance(d, int) for d in shape)


def _given(values: Sequence[Array | None], i: int) -> list[int] | None:
    """Constant input i as ints (None where it is not constant or omitted)."""
    return host_ints(values[i]) if len(values) > i and values[i] is not None else None


class Reshape(_Reshape):
    """y = x reshaped to ``shape`` (an attribute before opset 5, an input since): a 0 copies the
    input's dimension (unless allowzero=1, opset 14, where 0 means an empty axis), -1 is inferred."""

    def target(self, shape: tuple[int, ...], spec: list[int] | None) -> tuple[int, ...]:
        """The output shape for an input of ``shape``; refuses a spec that does not fit it."""
        if spec is None:
            raise self.unsupported("no target shape (neither a 'shape' input nor attribute)")
        if not self.attrs.get("allowzero"):
            spec = [shape[i] if d == 0 and i < len(shape) else d for i, d in enumerate(spec)]
        known = math.prod(d for d in spec if d != -1)
        total = math.prod(shape)
        if spec.count(-1) > 1 or min(spec, default=0) < -1 or (
            total != known if -1 not in spec else known == 0 or total % known
        ):
            raise self.unsupported(f"cannot reshape an input of shape {list(shape)} to {spec}")
        return tuple(total // known if d == -1 else d for d in spec)

    def check(self, shapes: Sequence[Shape | None], values: Sequence[Array | None] = ()) -> None:
        spec = _given(values, 1) if len(shapes) > 1 else self.attrs.get("shape")
        if _static(shapes[0]) and spec is not None:
            self.target(tuple(shapes[0]), spec)

    def forward(self, x: Array, shape: Array | None = None) -> tuple:
        spec = host_ints(shape) if shape is not None else self.attrs.get("shape")
        return (x.reshape(self.target(tuple(x.shape), spec)),), x.shape


class Squeeze(_Reshape):
    """y = x without the size-1 axes in ``axes`` (attribute before opset 13, input since), or
    without every size-1 axis where none are given."""

    def target(self, shape: tuple[int, ...], spec: list[int] | None) -> tuple[int, ...]:
        if spec is None:
            spec = [i for i, n in enumerate(shape) if n == 1]
        drop = {norm_axis(a, len(shape)) for a in spec}
        bad = [a for a in drop if not 0 <= a < len(shape) or shape[a] != 1]
        if bad:
            raise self.unsupported(f"cannot squeeze axes {spec} of shape {list(shape)}: not of size 1")
        return tuple(n for i, n in enumerate(shape) if i not in drop)

    def check(self, shapes: Sequence[Shape | None], values: Sequence[Array | None] = ()) -> None:
        spec = _given(values, 1) if len(shapes) > 1 else self.attrs.get("axes")
        if _static(shapes[0]) and (spec is not None or len(shapes) == 1):
            self.target(tuple(shapes[0]), spec)

    def forward(self, x: Array, axes: Array | None = None) -> tuple:
        spec = host_ints(axes) if axes is not None else self.attrs.get("axes")
        return (x.reshape(self.target(tuple(x.shape), spec)),), x.shape


class Unsqueeze(_Reshape):
    """y = x with size-1 axes inserted at ``axes`` (positions in the output; attribute before
    opset 13, input since)."""

    def target(self, shape: tuple[int, ...], spec: list[int] | None) -> tuple[int, ...]:
        if spec is None:
            raise self.unsupported("no 'axes' (neither an input nor an attribute)")
        rank = len(shape) + len(spec)
        new = {norm_axis(a, rank) for a in spec}
        if len(new) != len(spec) or not all(0 <= a < rank for a in new):
            raise self.unsupported(f"axes {spec} do not name distinct axes of the rank-{rank} output")
        dims = iter(shape)
        return tuple(1 if i in new else next(dims) for i in range(rank))

    def check(self, shapes: Sequence[Shape | None], values: Sequence[Array | None] = ()) -> None:
        spec = _given(values, 1) if len(shapes) > 1 else self.attrs.get("axes")
        if shapes[0] is not None and spec is not None:
            self.target(tuple(shapes[0]), spec)

    def forward(self, x: Array, axes: Array | None = None) -> tuple:
        spec = host_ints(axes) if axes is not None else self.attrs.get("axes")
        return (x.reshape(self.target(tuple(x.shape), spec)),), x.shape


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

    def check(self, shapes: Sequence[Shape | None], values: Sequence[Array | None] = ()) -> None:
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


