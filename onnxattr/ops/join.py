"""Ops that cut tensors apart or put them together: Concat, Split, Slice and Pad.

Sizes, starts, pads and axes were attributes in older opsets and are inputs in newer ones;
every op reads either, with ``host_ints``. The vjps are the matching cuts and joins of the
cotangent; Pad's reflect/edge/wrap modes are per-axis index maps (:mod:`.axismap`), and their
vjp applies the transposed maps.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..backend import array_module, to_host
from ..compiled.symbolic import NotCompilable, Sym
from .axismap import gather_axis, transpose_map
from .base import Array, Grads, Op, Shape, host_ints, norm_axis


class Concat(Op):
    """y = the inputs joined along ``axis``; the vjp slices the cotangent back into pieces."""

    kind = "route"

    def check(self, shapes: Sequence[Shape | None], values: Sequence[Array | None] = ()) -> None:
        known = [s for s in shapes if s is not None]
        if not known:
            return
        rank = len(known[0])
        if any(len(s) != rank for s in known) or not -rank <= self.axis < rank:
            raise self.unsupported(f"inputs of shapes {[list(s) for s in known]} cannot be joined on axis {self.axis}")
        axis = norm_axis(self.axis, rank)
        for i in set(range(rank)) - {axis}:
            if len({s[i] for s in known if s[i] is not None}) > 1:
                raise self.unsupported(f"inputs of shapes {[list(s) for s in known]} differ off axis {self.axis}")

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

    def vjp_graph(self, ctx: Any, grads: Sequence[Any], needs: Sequence[bool]) -> Grads:
        """One Slice of the cotangent per input (static sizes along the axis)."""
        g = grads[0]
        axis = norm_axis(self.axis, g.ndim)
        sizes = [np.shape(x)[axis] if not isinstance(x, Sym) else x.shape[axis] for x in ctx.inputs]
        if sizes.count(None) == 1 and g.shape[axis] is not None:  # the one left: the output's rest
            sizes[sizes.index(None)] = g.shape[axis] - sum(s for s in sizes if s is not None)
        if None in sizes:
            raise NotCompilable(f"{self.name}: a Concat of run-time sizes")
        ends = np.cumsum(sizes).tolist()
        out = []
        for size, end, need in zip(sizes, ends, needs):
            if not need:
                out.append(None)
                continue
            shape = tuple(size if i == axis else d for i, d in enumerate(g.shape))
            bounds = [np.asarray([v], dtype=np.int64) for v in (end - size, end, axis)]
            out.append(g.tracer.emit("Slice", [g, *bounds], g.dtype, shape, nonneg=g.nonneg)[0])
        return out


class Split(Op):
    """ys = x cut along ``axis`` into pieces of the sizes in ``split`` (attribute before opset
    13, input since), or into ``num_outputs`` pieces (opset 18; the last may be smaller), or into
    as many equal pieces as the node has outputs.

    That last count is not an attribute: the loader sets ``n_outputs`` (the node's number of
    outputs) on the op. The vjp concatenates the cotangents, zeros for outputs with none.
    """

    kind = "route"
    positive = ("num_outputs",)

    def setup(self) -> None:
        self.num_outputs = self.attrs.get("num_outputs")
        #: the node's number of outputs, for an equal split without 'split' or 'num_outputs'
        self.n_outputs: int | None = self.num_outputs

    def check(self, shapes: Sequence[Shape | None], values: Sequence[Array | None] = ()) -> None:
        x = shapes[0]
        if x is None:
            return
        self.check_axis(self.axis, len(x))
        split = values[1] if len(values) > 1 else None
        n = x[norm_axis(self.axis, len(x))]
        if n is not None and (split is not None or len(shapes) < 2 or shapes[1] is None):
            self.sizes(n, split)

    def sizes(self, n: int, split: Array | None) -> list[int]:
        sizes = host_ints(split) if split is not None else self.attrs.get("split")
        if sizes:
            if sum(sizes) != n or min(sizes) < 0:
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
        if not needs[0]:
            return []
        given = [g for g in grads if g is not None]
        xp = array_module(*given)
        parts = []
        for i, s in enumerate(sizes):
            g = grads[i] if i < len(grads) else None
            if g is None:
                g = xp.zeros(shape[:axis] + (s,) + shape[axis + 1:], dtype=given[0].dtype)
            parts.append(g)
        return [xp.concatenate(parts, axis=axis)]

    def vjp_graph(self, ctx: Any, grads: Sequence[Any], needs: Sequence[bool]) -> Grads:
        """One Concat of the cotangents, zeros (of its output's shape) for an output with none."""
        if not needs[0]:
            return []
        x = ctx.inputs[0]
        axis = norm_axis(self.axis, len(x.shape))
        t = next(g for g in grads if g is not None).tracer
        parts = [g if g is not None else t.filled(y, 0.0) for g, y in zip(grads, ctx.outputs)]
        return [t.emit("Concat", parts, parts[0].dtype, x.shape, axis=axis)[0]]


class Slice(Op):
    """y = x[starts:ends:steps] along ``axes`` (attributes before opset 10, inputs since; steps
    from opset 10). Negative starts/ends count from the end; out-of-range ones are clamped as
    ONNX says (to [0, n] for positive steps, to [-1, n - 1] for negative ones)."""

    kind = "route"

    def index(self, shape: tuple[int, ...], starts: Array | None, ends: Array | None,
              axes: Array | None, steps: Array | None) -> tuple[slice, ...]:
        b = host_ints(starts) if starts is not None else self.attrs.get("starts")
        e = host_ints(ends) if ends is not None else self.attrs.get("ends")
        if b is None or e is None:
            raise self.unsupported("'starts' and 'ends' are required")
        ax = host_ints(axes) if axes is not None else self.attrs.get("axes")
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
        if not needs[0]:
            return []
        g = grads[0]
        dx = array_module(g).zeros(shape, dtype=g.dtype)
        dx[index] = g
        return [dx]


class Pad(Op):
    """y = x padded by ``pads`` (begin values of every axis, then end values; negative pads
    crop), in mode constant (filled with ``value``), reflect (mirrored without the edge), edge
    (the edge repeated) or wrap (opset 19, periodic).

    pads and value are attributes before opset 11 (``paddings`` in opset 1) and inputs since;
    opset 18 adds an ``axes`` input that says which axes the pads are for. The non-constant modes
    gather every axis with an index map; their vjp applies the transposed maps.
    """

    kind = "route"
    choices = {"mode": ("constant", "reflect", "edge", "wrap")}

    def pads_of(self, ndim: int, pads: Array | None, axes: Array | None) -> tuple[list[int], list[int]]:
        spec = host_ints(pads) if pads is not None else self.attrs.get("pads") or self.attrs.get("paddings")
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
            v = self.attrs.get("value") or 0.0
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
        if not needs[0]:
            return []
        g = grads[0]
        if self.mode == "constant":
            shape, src, dst = ctx
            if all(s.start == 0 and s.stop == n for s, n in zip(src, shape)):
                return [g[dst]]
            dx = array_module(g).zeros(shape, dtype=g.dtype)
            dx[src] = g[dst]
            return [dx]
        for a, n, idx in reversed(ctx):
            g = gather_axis(g, *transpose_map(idx, None, n), a)
        return [g]
