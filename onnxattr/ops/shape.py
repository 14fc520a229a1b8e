"""Ops that move, copy or describe data without arithmetic: reshapes, Transpose, Concat/Split,
Slice, Pad, Gather, Expand, Tile, and the integer ops of shape computations (Shape, Size,
ConstantOfShape, Constant, Range, comparisons, Where).

Shape-like operands (axes, pads, starts, shape, repeats...) were attributes in older opsets and
are inputs in newer ones; every op reads either, with ``host_ints``, so they stay on the host. The
vjp of a copy is the matching sum: a slice or reshape of the cotangent, a scatter-add for
Gather (:func:`scatter_add_axis`), and for the per-axis maps of Pad's reflect/edge/wrap modes
(and of Resize in :mod:`.resize`) the transposed map, applied as a gather (:func:`gather_axis`,
:func:`transpose_map`).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..backend import array_module, to_host
from .base import Array, Grads, Op, host_ints, norm_axis, unbroadcast


def text(value: Any, default: str) -> str:
    """A string attribute (bytes after parsing) as str."""
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


def ints_attr(attrs: dict[str, Any], name: str) -> list[int] | None:
    """An integer-list attribute as a list of ints (None where absent)."""
    value = attrs.get(name)
    return None if value is None else [int(v) for v in value]


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


def _reshape_vjp(ctx: tuple[int, ...], grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
    """Cotangent of a reshape-like op (ctx: the input's shape), None for the other inputs."""
    return [grads[0].reshape(ctx) if needs[0] else None] + [None] * (len(needs) - 1)


class Flatten(Op):
    """y = x reshaped to (prod(shape[:axis]), prod(shape[axis:])); axis may be negative."""

    kind = "route"

    def __init__(self, attrs: dict[str, Any], opset: int, name: str = "") -> None:
        super().__init__(attrs, opset, name)
        self.axis = int(attrs.get("axis", 1))

    def forward(self, x: Array) -> tuple:
        axis = norm_axis(self.axis, x.ndim)
        shape = (math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))
        return (x.reshape(shape),), x.shape

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        return _reshape_vjp(ctx, grads, needs)


class Reshape(Op):
    """y = x reshaped to ``shape`` (an attribute before opset 5, an input since): a 0 copies the
    input's dimension (unless allowzero=1, opset 14, where 0 means an empty axis), -1 is inferred."""

    kind = "route"

    def __init__(self, attrs: dict[str, Any], opset: int, name: str = "") -> None:
        super().__init__(attrs, opset, name)
        self.shape = ints_attr(attrs, "shape")
        self.allowzero = bool(int(attrs.get("allowzero", 0)))

    def forward(self, x: Array, shape: Array | None = None) -> tuple:
        spec = host_ints(shape) if shape is not None else self.shape
        if spec is None:
            raise self.unsupported("no target shape (neither a 'shape' input nor attribute)")
        if not self.allowzero:
            spec = [x.shape[i] if d == 0 else d for i, d in enumerate(spec)]
        return (x.reshape(spec),), x.shape

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        return _reshape_vjp(ctx, grads, needs)


class Squeeze(Op):
    """y = x without the size-1 axes in ``axes`` (attribute before opset 13, input since), or
    without every size-1 axis where none are given."""

    kind = "route"

    def __init__(self, attrs: dict[str, Any], opset: int, name: str = "") -> None:
        super().__init__(attrs, opset, name)
        self.axes = ints_attr(attrs, "axes")

    def forward(self, x: Array, axes: Array | None = None) -> tuple:
        spec = host_ints(axes) if axes is not None else self.axes
        if spec is None:
            spec = [i for i, n in enumerate(x.shape) if n == 1]
        drop = {norm_axis(a, x.ndim) for a in spec}
        bad = [a for a in drop if x.shape[a] != 1]
        if bad:
            raise self.unsupported(f"cannot squeeze axes {sorted(bad)} of shape {tuple(x.shape)}: not of size 1")
        shape = tuple(n for i, n in enumerate(x.shape) if i not in drop)
        return (x.reshape(shape),), x.shape

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        return _reshape_vjp(ctx, grads, needs)


class Unsqueeze(Op):
    """y = x with size-1 axes inserted at ``axes`` (positions in the output; attribute before
    opset 13, input since)."""

    kind = "route"

    def __init__(self, attrs: dict[str, Any], opset: int, name: str = "") -> None:
        super().__init__(attrs, opset, name)
        self.axes = ints_attr(attrs, "axes")

    def forward(self, x: Array, axes: Array | None = None) -> tuple:
        spec = host_ints(axes) if axes is not None else self.axes
        if spec is None:
            raise self.unsupported("no 'axes' (neither an input nor an attribute)")
        rank = x.ndim + len(spec)
        new = {norm_axis(a, rank) for a in spec}
        dims = iter(x.shape)
        shape = tuple(1 if i in new else next(dims) for i in range(rank))
        return (x.reshape(shape),), x.shape

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        return _reshape_vjp(ctx, grads, needs)


class Transpose(Op):
    """y = x with its axes permuted by ``perm`` (default: reversed)."""

    kind = "route"

    def __init__(self, attrs: dict[str, Any], opset: int, name: str = "") -> None:
        super().__init__(attrs, opset, name)
        self.perm = ints_attr(attrs, "perm")

    def forward(self, x: Array) -> tuple:
        perm = self.perm if self.perm is not None else list(range(x.ndim))[::-1]
        return (x.transpose(perm),), perm

    def vjp(self, ctx: list[int], grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        return [grads[0].transpose(np.argsort(ctx).tolist())]


class Concat(Op):
    """y = the inputs joined along ``axis``; the vjp slices the cotangent back into pieces."""

    kind = "route"

    def __init__(self, attrs: dict[str, Any], opset: int, name: str = "") -> None:
        super().__init__(attrs, opset, name)
        if "axis" not in attrs:
            raise self.unsupported("the 'axis' attribute is required")
        self.axis = int(attrs["axis"])

    def forward(self, *xs: Array) -> tuple:
        xp = array_module(*xs)
        axis = norm_axis(self.axis, xs[0].ndim)
        return (xp.concatenate(xs, axis=axis),), (axis, [x.shape[axis] for x in xs])

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        axis, sizes = ctx
        g = grads[0]
        ends = np.cumsum(sizes).tolist()
        lead = (slice(None),) * axis
        return [g[lead + (slice(e - s, e),)] if n else None for s, e, n in zip(sizes, ends, needs)]


class Split(Op):
    """ys = x cut along ``axis`` into pieces of the sizes in ``split`` (attribute before opset
    13, input since), or into ``num_outputs`` pieces (opset 18; the last may be smaller), or into
    as many equal pieces as the node has outputs.

    That last count is not an attribute: the loader sets ``n_outputs`` (the node's number of
    outputs) on the op. The vjp concatenates the cotangents, zeros for outputs with none.
    """

    kind = "route"

    def __init__(self, attrs: dict[str, Any], opset: int, name: str = "") -> None:
        super().__init__(attrs, opset, name)
        self.axis = int(attrs.get("axis", 0))
        self.split = ints_attr(attrs, "split")
        num = attrs.get("num_outputs")
        self.num_outputs = None if num is None else int(num)
        #: the node's number of outputs, for an equal split without 'split' or 'num_outputs'
        self.n_outputs: int | None = self.num_outputs

    def sizes(self, n: int, split: Array | None) -> list[int]:
        sizes = host_ints(split) if split is not None else self.split
        if sizes:
            if sum(sizes) != n:
                raise self.unsupported(f"split sizes {sizes} do not add up to the axis' length {n}")
            return sizes
        if self.num_outputs is not None:
            k = self.num_outputs
            chunk = -(-n // k)
            sizes = [chunk] * (k - 1) + [n - chunk * (k - 1)]
            if sizes[-1] < 0:
                raise self.unsupported(f"an axis of length {n} cannot be split into {k} chunks of {chunk}")
            return sizes
        if self.n_outputs is None:
            raise self.unsupported(
                "an equal split without 'split' or 'num_outputs' needs the node's number of "
                "outputs (op.n_outputs), which the loader did not set"
            )
        k = self.n_outputs
        if n % k:
            raise self.unsupported(f"an axis of length {n} does not split into {k} equal parts")
        return [n // k] * k

    def forward(self, x: Array, split: Array | None = None) -> tuple:
        axis = norm_axis(self.axis, x.ndim)
        sizes = self.sizes(x.shape[axis], split)
        ends = np.cumsum(sizes).tolist()
        lead = (slice(None),) * axis
        ys = tuple(x[lead + (slice(e - s, e),)] for s, e in zip(sizes, ends))
        return ys, (axis, tuple(x.shape), sizes)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        axis, shape, sizes = ctx
        rest = [None] * (len(needs) - 1)
        if not needs[0]:
            return [None] + rest
        given = [g for g in grads if g is not None]
        xp = array_module(*given)
        parts = []
        for i, s in enumerate(sizes):
            g = grads[i] if i < len(grads) else None
            if g is None:
                g = xp.zeros(shape[:axis] + (s,) + shape[axis + 1:], dtype=given[0].dtype)
            parts.append(g)
        return [xp.concatenate(parts, axis=axis)] + rest


class Slice(Op):
    """y = x[starts:ends:steps] along ``axes`` (attributes before opset 10, inputs since; steps
    from opset 10). Negative starts/ends count from the end; out-of-range ones are clamped as
    ONNX says (to [0, n] for positive steps, to [-1, n - 1] for negative ones)."""

    kind = "route"

    def __init__(self, attrs: dict[str, Any], opset: int, name: str = "") -> None:
        super().__init__(attrs, opset, name)
        self.starts = ints_attr(attrs, "starts")
        self.ends = ints_attr(attrs, "ends")
        self.axes = ints_attr(attrs, "axes")

    def index(self, shape: tuple[int, ...], starts: Array | None, ends: Array | None,
              axes: Array | None, steps: Array | None) -> tuple[slice, ...]:
        b = host_ints(starts) if starts is not None else self.starts
        e = host_ints(ends) if ends is not None else self.ends
        if b is None or e is None:
            raise self.unsupported("'starts' and 'ends' are required")
        ax = host_ints(axes) if axes is not None else self.axes
        ax = list(range(len(b))) if ax is None else [norm_axis(a, len(shape)) for a in ax]
        st = host_ints(steps) if steps is not None else [1] * len(b)
        if not len(b) == len(e) == len(ax) == len(st):
            raise self.unsupported(f"starts/ends/axes/steps of lengths {len(b)}/{len(e)}/{len(ax)}/{len(st)} differ")
        index = [slice(None)] * len(shape)
        for a, s0, e0, step in zip(ax, b, e, st):
            n = shape[a]
            if step == 0:
                raise self.unsupported(f"step 0 on axis {a}")
            s0 = s0 + n if s0 < 0 else s0
            e0 = e0 + n if e0 < 0 else e0
            if step > 0:
                index[a] = slice(min(max(s0, 0), n), min(max(e0, 0), n), step)
            else:
                s0 = min(max(s0, 0), n - 1)
                e0 = min(max(e0, -1), n - 1)
                index[a] = slice(s0, None if e0 < 0 else e0, step)
        return tuple(index)

    def forward(self, x: Array, starts: Array | None = None, ends: Array | None = None,
                axes: Array | None = None, steps: Array | None = None) -> tuple:
        index = self.index(tuple(x.shape), starts, ends, axes, steps)
        return (x[index],), (tuple(x.shape), index)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        shape, index = ctx
        rest = [None] * (len(needs) - 1)
        if not needs[0]:
            return [None] + rest
        g = grads[0]
        dx = array_module(g).zeros(shape, dtype=g.dtype)
        dx[index] = g
        return [dx] + rest


class Pad(Op):
    """y = x padded by ``pads`` (begin values of every axis, then end values; negative pads
    crop), in mode constant (filled with ``value``), reflect (mirrored without the edge), edge
    (the edge repeated) or wrap (opset 19, periodic).

    pads and value are attributes before opset 11 (``paddings`` in opset 1) and inputs since;
    opset 18 adds an ``axes`` input that says which axes the pads are for. The non-constant modes
    gather every axis with an index map; their vjp applies the transposed maps.
    """

    kind = "route"
    MODES = ("constant", "reflect", "edge", "wrap")

    def __init__(self, attrs: dict[str, Any], opset: int, name: str = "") -> None:
        super().__init__(attrs, opset, name)
        self.mode = text(attrs.get("mode"), "constant")
        if self.mode not in self.MODES:
            raise self.unsupported(f"mode={self.mode!r}; implemented: {', '.join(self.MODES)}")
        self.pads = ints_attr(attrs, "pads") or ints_attr(attrs, "paddings")
        self.value = float(attrs.get("value", 0.0))

    def pads_of(self, ndim: int, pads: Array | None, axes: Array | None) -> tuple[list[int], list[int]]:
        spec = host_ints(pads) if pads is not None else self.pads
        if spec is None:
            raise self.unsupported("no 'pads' (neither an input nor an attribute)")
        ax = list(range(ndim)) if axes is None else [norm_axis(a, ndim) for a in host_ints(axes)]
        if len(spec) != 2 * len(ax):
            raise self.unsupported(f"{len(spec)} pads for {len(ax)} axes (expected {2 * len(ax)})")
        begin, end = [0] * ndim, [0] * ndim
        for i, a in enumerate(ax):
            begin[a], end[a] = spec[i], spec[i + len(ax)]
        return begin, end

    def source(self, n: int, b: int, e: int) -> np.ndarray:
        """The input cell of each output cell along an axis of length n (non-constant modes)."""
        i = np.arange(-b, n + e, dtype=np.int64)
        if self.mode == "edge":
            return np.clip(i, 0, n - 1)
        if self.mode == "wrap":
            return np.mod(i, n)
        if n == 1:  # reflect
            return np.zeros_like(i)
        i = np.mod(i, 2 * (n - 1))
        return np.where(i > n - 1, 2 * (n - 1) - i, i)

    def forward(self, x: Array, pads: Array | None = None, value: Array | None = None,
                axes: Array | None = None) -> tuple:
        xp = array_module(x)
        begin, end = self.pads_of(x.ndim, pads, axes)
        if self.mode == "constant":
            v = self.value
            if value is not None:
                host = np.asarray(to_host(value)).reshape(-1)
                v = host[0] if host.size else 0
            out_shape = tuple(n + b + e for n, b, e in zip(x.shape, begin, end))
            src = tuple(slice(max(-b, 0), n - max(-e, 0)) for n, b, e in zip(x.shape, begin, end))
            dst = tuple(slice(max(b, 0), max(b, 0) + max(s.stop - s.start, 0)) for s, b in zip(src, begin))
            y = xp.full(out_shape, v, dtype=x.dtype)
            y[dst] = x[src]
            return (y,), (tuple(x.shape), src, dst)
        maps = []
        y = x
        for a, (n, b, e) in enumerate(zip(x.shape, begin, end)):
            if b or e:
                idx = self.source(n, b, e)[None]
                y = gather_axis(y, idx, None, a)
                maps.append((a, n, idx))
        return (y,), maps

    def vjp(self, ctx: Any, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        rest = [None] * (len(needs) - 1)
        if not needs[0]:
            return [None] + rest
        g = grads[0]
        if self.mode == "constant":
            shape, src, dst = ctx
            if all(s.start == 0 and s.stop == n for s, n in zip(src, shape)):
                return [g[dst]] + rest
            dx = array_module(g).zeros(shape, dtype=g.dtype)
            dx[src] = g[dst]
            return [dx] + rest
        for a, n, idx in reversed(ctx):
            g = gather_axis(g, *transpose_map(idx, None, n), a)
        return [g] + rest


class Gather(Op):
    """y = take(data, indices, axis): y[..., j..., ...] = data[..., indices[j...], ...], with
    negative indices counted from the end. The vjp scatter-adds into the gathered cells."""

    kind = "route"

    def __init__(self, attrs: dict[str, Any], opset: int, name: str = "") -> None:
        super().__init__(attrs, opset, name)
        self.axis = int(attrs.get("axis", 0))

    def forward(self, data: Array, indices: Array) -> tuple:
        xp = array_module(data)
        axis = norm_axis(self.axis, data.ndim)
        n = data.shape[axis]
        idx = xp.asarray(indices).astype(np.int64, copy=False)
        idx = xp.where(idx < 0, idx + n, idx)
        return (xp.take(data, idx, axis=axis),), (axis, n, idx)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        axis, n, idx = ctx
        return [scatter_add_axis(grads[0], idx, n, axis) if needs[0] else None, None]


class Expand(Op):
    """y = x broadcast with ``shape`` (both ways: the output has the larger of the two
    dimensions); the vjp sums over the broadcast axes."""

    kind = "route"

    def forward(self, x: Array, shape: Array) -> tuple:
        xp = array_module(x)
        out = np.broadcast_shapes(tuple(x.shape), tuple(host_ints(shape)))
        return (xp.ascontiguousarray(xp.broadcast_to(x, out)),), tuple(x.shape)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        return [unbroadcast(grads[0], ctx) if needs[0] else None, None]


class Tile(Op):
    """y = x repeated ``repeats[i]`` times along each axis i (opset 6 and later)."""

    kind = "route"

    def __init__(self, attrs: dict[str, Any], opset: int, name: str = "") -> None:
        super().__init__(attrs, opset, name)
        if opset < 6:
            raise self.unsupported("Tile before opset 6 (tiles and axis inputs)")

    def forward(self, x: Array, repeats: Array) -> tuple:
        reps = host_ints(repeats)
        if len(reps) != x.ndim:
            raise self.unsupported(f"{len(reps)} repeats for an input of rank {x.ndim}")
        return (array_module(x).tile(x, reps),), (tuple(x.shape), reps)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        shape, reps = ctx
        if not needs[0]:
            return [None, None]
        split = [d for r, n in zip(reps, shape) for d in (r, n)]
        g = grads[0].reshape(split).sum(axis=tuple(range(0, 2 * len(shape), 2)))
        return [g, None]


class _NoGradient(Op):
    """Ops whose outputs carry no gradient (integers, booleans, constants)."""

    kind = "shape"
    differentiable = False

    def vjp(self, ctx: Any, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        return [None] * len(needs)


class Shape(_NoGradient):
    """y = the input's shape as int64, optionally only dims start:end (opset 15)."""

    def __init__(self, attrs: dict[str, Any], opset: int, name: str = "") -> None:
        super().__init__(attrs, opset, name)
        self.start = int(attrs.get("start", 0))
        end = attrs.get("end")
        self.end = None if end is None else int(end)

    def forward(self, x: Array) -> tuple:
        return (np.asarray(x.shape[self.start:self.end], dtype=np.int64),), None


class Size(_NoGradient):
    """y = the input's number of elements as an int64 scalar."""

    def forward(self, x: Array) -> tuple:
        return (np.asarray(math.prod(x.shape), dtype=np.int64),), None


def _tensor(value: Any) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(value)


class ConstantOfShape(_NoGradient):
    """y = a tensor of the given shape filled with ``value`` (a one-element tensor; default 0.0
    float32)."""

    def __init__(self, attrs: dict[str, Any], opset: int, name: str = "") -> None:
        super().__init__(attrs, opset, name)
        value = attrs.get("value")
        self.value = np.zeros(1, np.float32) if value is None else _tensor(value).reshape(-1)

    def forward(self, shape: Array) -> tuple:
        return (np.full(tuple(host_ints(shape)), self.value[0], dtype=self.value.dtype),), None


class Constant(_NoGradient):
    """y = the constant in ``value`` (a tensor), ``value_float(s)`` or ``value_int(s)``."""

    FORMS = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64,
             "value_ints": np.int64}

    def __init__(self, attrs: dict[str, Any], opset: int, name: str = "") -> None:
        super().__init__(attrs, opset, name)
        if "value" in attrs:
            self.value = _tensor(attrs["value"])
        else:
            form = next((k for k in self.FORMS if k in attrs), None)
            if form is None:
                forms = sorted(set(attrs) - {"value"}) or ["none"]
                raise self.unsupported(f"constant given as {', '.join(forms)} (only tensors, floats and ints)")
            self.value = np.asarray(attrs[form], dtype=self.FORMS[form])

    def forward(self) -> tuple:
        return (self.value,), None


class Range(_NoGradient):
    """y = start, start + delta, ... up to (excluding) limit: max(ceil((limit - start) / delta), 0)
    elements of start's type."""

    def forward(self, start: Array, limit: Array, delta: Array) -> tuple:
        s, lim, d = (np.asarray(to_host(v)).reshape(()) for v in (start, limit, delta))
        n = max(int(math.ceil((float(lim) - float(s)) / float(d))), 0)
        return ((s + np.arange(n, dtype=s.dtype) * d).astype(s.dtype),), None


class NonZero(_NoGradient):
    """y = the indices of the non-zero elements, as an int64 array of shape (rank, count)."""

    def forward(self, x: Array) -> tuple:
        xp = array_module(x)
        x = x.reshape(-1) if x.ndim == 0 else x  # a scalar counts as one element, as in onnxruntime
        return (xp.stack(xp.nonzero(x)).astype(np.int64),), None


class _Compare(_NoGradient):
    """Elementwise comparisons and logic with broadcasting; boolean outputs."""

    fn: str = ""

    def forward(self, *xs: Array) -> tuple:
        xp = array_module(*xs)
        return (getattr(xp, self.fn)(*xs),), None


class Equal(_Compare):
    fn = "equal"


class Less(_Compare):
    fn = "less"


class LessOrEqual(_Compare):
    fn = "less_equal"


class Greater(_Compare):
    fn = "greater"


class GreaterOrEqual(_Compare):
    fn = "greater_equal"


class Not(_Compare):
    fn = "logical_not"


class And(_Compare):
    fn = "logical_and"


class Or(_Compare):
    fn = "logical_or"


class Where(Op):
    """y = x where condition else z (all three broadcast); the cotangent goes to x where the
    condition holds and to z elsewhere."""

    kind = "other"

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
