"""Pooling ops: MaxPool, AveragePool, GlobalMaxPool, GlobalAveragePool, over any number of
spatial axes of an (N, C, *spatial) input.

The windows come from :mod:`.window` (the geometry Conv uses). Pooling loops over the kernel
offsets only: each offset is one strided slice of the padded input, so a pass costs
prod(kernel) vectorised operations on (N, C, *out) arrays. MaxPool's forward is one in-place
maximum per offset; its vjp finds the winning offset of every window again (the first maximum in
raster order, as PyTorch and onnxruntime pick it) and routes the whole cotangent there; on the
GPU a CUDA kernel (:mod:`onnxattr.kernels.pool`) keeps each window's argmax instead, and its vjp
scatters through it. AveragePool divides by the number of cells each window counts.
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, ClassVar, Sequence

import numpy as np

from ..backend import array_module, use_kernels
from ..compiled.symbolic import NotCompilable
from ..kernels import onnxruntime as ortk
from ..kernels import pool as cuda_pool
from .base import Array, Grads, Op, Shape
from .window import PLANE_CHUNK_BYTES, Window, _Windowed, batches, resolve

_ALL = (slice(None), slice(None))


def _lowest(dtype: Any) -> Any:
    """The padding value of max pooling: -inf, or the smallest integer of an integer type."""
    dtype = np.dtype(dtype)
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


class _Pool(_Windowed):
    """The window of kernel_shape, ceil_mode, and (through ``resolve``) strides, pads, auto_pad
    and dilations. ``max_outputs`` is how many outputs the op can produce. A window may be
    larger than its input where ceil_mode lets onnxruntime run it (it then reduces over the
    cells inside); a window that leaves no output is refused at load."""

    max_outputs: ClassVar[int] = 1

    def setup(self) -> None:
        if not self.kernel_shape:
            raise self.unsupported("the kernel_shape attribute is required")
        self.kernel = tuple(self.kernel_shape)
        self.ceil_mode = bool(self.attrs.get("ceil_mode"))

    def check(self, shapes: Sequence[Shape | None], values: Sequence[Array | None] = ()) -> None:
        shape = shapes[0] if shapes else None
        if shape is None:
            return
        if len(shape) != len(self.kernel) + 2:
            raise self.unsupported(
                f"input of rank {len(shape)} does not have {len(self.kernel)} spatial axes after "
                f"(N, C) to match kernel_shape {list(self.kernel)}"
            )
        self.check_window(shape[2:], self.kernel)

    def window(self, x: Array) -> Window:
        if x.ndim != len(self.kernel) + 2:
            raise self.unsupported(
                f"input of shape {tuple(x.shape)} does not have {len(self.kernel)} spatial axes "
                f"after (N, C) to match kernel_shape {list(self.kernel)}"
            )
        return resolve(self, x.shape[2:], self.kernel, self.ceil_mode)


def _plane_chunks(*arrays: Array) -> Any:
    """The (N, C, *spatial) arrays as (N*C, 1, *spatial) planes, a chunk of planes at a time (the
    same planes of each), so that the passes over the kernel offsets stay in cache."""
    xp = array_module(*arrays)
    planes = [a.reshape((-1, 1) + tuple(a.shape[2:])) for a in arrays]
    bytes_each = math.prod(arrays[0].shape[2:]) * arrays[0].itemsize
    for start, stop in batches(xp, planes[0].shape[0], bytes_each, PLANE_CHUNK_BYTES):
        yield [p[start:stop] for p in planes]


def _window_sum(win: Window, x: Array) -> Array:
    """The sum over each window of an (N, C, *spatial) array padded by zeros: (N, C, *out)."""
    xp = array_module(x)
    total = xp.zeros(tuple(x.shape[:2]) + win.out, dtype=x.dtype)
    offsets = list(win.clipped_offsets(x.shape[2:]))
    for xs, ts in _plane_chunks(x, total):
        for out, cells in offsets:
            ts[_ALL + out] += xs[_ALL + cells]
    return total


class MaxPool(_Pool):
    """y[n, c, p] = max_k x_pad[n, c, s * p + d * k], with x padded by -inf.

    The vjp sends g[n, c, p] to the first maximum of window p (raster order over k). The forward
    keeps no index: it keeps x and y, which the graph holds anyway in most networks (the
    activation before the pool keeps its output), and the vjp finds the first cell equal to y.
    Padding cells never win, so neither pass makes a padded copy.
    The 'Indices' output is not produced (``max_outputs = 1``), so storage_order plays no part.
    """

    kind = "maxpool"

    def forward(self, x: Array) -> tuple[tuple[Array], tuple]:
        xp = array_module(x)
        win = self.window(x)
        index = np.uint8 if math.prod(self.kernel) <= 256 else np.int32
        if use_kernels(x) and cuda_pool.supported(x, win, index):
            y, argmax = cuda_pool.maxpool2d(x, win, index)
            return (y,), (x.shape, argmax, win)
        y = xp.full(tuple(x.shape[:2]) + win.out, _lowest(x.dtype), dtype=x.dtype)
        offsets = list(win.clipped_offsets(x.shape[2:]))
        for xs, ys in _plane_chunks(x, y):
            for out, cells in offsets:
                xp.maximum(ys[_ALL + out], xs[_ALL + cells], out=ys[_ALL + out])
        return (y,), (x, y, win)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        if isinstance(ctx[0], tuple):  # the kernel's forward: (input shape, argmax, window)
            shape, argmax, win = ctx
            return [cuda_pool.maxpool2d_vjp(grads[0], argmax, shape, win)]
        x, y, win = ctx
        xp = array_module(x)
        dx = xp.zeros(x.shape, dtype=grads[0].dtype)
        left = grads[0].copy()  # the cotangent of the windows whose maximum is not yet found
        offsets = list(win.clipped_offsets(x.shape[2:]))
        for xs, ys, ls, ds in _plane_chunks(x, y, left, dx):
            for out, cells in offsets:  # raster order: the first maximum wins
                sent = ls[_ALL + out] * (xs[_ALL + cells] == ys[_ALL + out])
                ds[_ALL + cells] += sent
                ls[_ALL + out] -= sent
        return [dx]

    def vjp_graph(self, ctx: Any, grads: Sequence[Any], needs: Sequence[bool]) -> Grads:
        """g scattered (added) to the cells onnxruntime's MaxPool names in its Indices output (the
        first maximum of each window, raster order, as the vjp above), which the forward
        session's MaxPool gives too."""
        x, y = ctx.inputs[0], ctx.outputs[0]
        g = grads[0]
        t = g.tracer
        if self.attrs.get("storage_order"):
            raise NotCompilable(f"{self.name}: MaxPool with storage_order=1")
        index = t.second_output(y, np.int64)  # the node's own Indices: one pooling, not two
        if index is None:
            raise NotCompilable(f"{self.name}: its output is not a MaxPool node's")
        row = np.asarray([1, -1], dtype=np.int64)
        flat = [t.emit("Reshape", [v, row], v.dtype, (1, None))[0] for v in (t.filled(x, 0.0), index, g)]
        dx = t.emit("ScatterElements", flat, g.dtype, (1, None), axis=1, reduction="add")[0]
        return [t.reshape(dx, x.shape, like=x)]


class AveragePool(_Pool):
    """y[n, c, p] = sum_k x_pad[n, c, s * p + d * k] / count[p], with x padded by zeros.

    count[p] is the number of window cells inside the input (count_include_pad=0), or inside the
    input and its declared pads (count_include_pad=1); cells that only ceil_mode's extra end
    padding adds are never counted, as in onnxruntime and PyTorch.
    """

    kind = "sum"

    def divisor(self, xp: Any, shape: tuple[int, ...], win: Window, dtype: Any) -> Array | float:
        """The per-window cell count: a scalar, or an (1, 1, *out) array where it varies."""
        extra = any(e != d for e, d in zip(win.pads_end, win.declared_end))
        if not (win.padded and (extra or not self.count_include_pad)):
            return float(math.prod(self.kernel))
        if not self.count_include_pad:
            return _window_sum(win, xp.ones((1, 1) + tuple(shape[2:]), dtype=dtype))
        # the counted cells: the input with its declared pads, where the windows start at 0
        counted = tuple(n + b + d for n, b, d in zip(shape[2:], win.pads_begin, win.declared_end))
        return _window_sum(replace(win, pads_begin=(0,) * len(counted)), xp.ones((1, 1) + counted, dtype=dtype))

    def vjp_graph(self, ctx: Any, grads: Sequence[Any], needs: Sequence[bool]) -> Grads:
        """(g / count) through the adjoint of a depthwise convolution with a kernel of ones: one
        Conv (stride 1) or ConvTranspose, as Conv's data vjp (``ortk.data_vjp_form``)."""
        x, g = ctx.inputs[0], grads[0]
        if None in x.shape[1:] or None in g.shape[2:]:
            raise NotCompilable(f"{self.name}: a pooling over run-time sizes")
        win = self.window(x)
        div = self.divisor(np, x.shape, win, g.dtype)
        channels = x.shape[1]
        geo = ortk.ConvGeometry(win.strides, win.dilations, win.pads_begin + win.pads_end, channels)
        op, attrs, transform = ortk.data_vjp_form(geo, self.kernel, x.shape[2:], g.shape[2:])
        ones = ortk.transformed(np.ones((channels, 1) + self.kernel, dtype=g.dtype), transform, attrs)
        scaled = g / (g.dtype.type(div) if isinstance(div, float) else div.astype(g.dtype))
        return [g.tracer.emit(op, [scaled, ones], g.dtype, x.shape, **attrs)[0]]

    def forward(self, x: Array) -> tuple[tuple[Array], tuple]:
        xp = array_module(x)
        win = self.window(x)
        div = self.divisor(xp, x.shape, win, x.dtype)
        y = _window_sum(win, x)
        y /= x.dtype.type(div) if isinstance(div, float) else div
        return (y,), (x.shape, win, div)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        shape, win, div = ctx
        xp = array_module(grads[0])
        g = grads[0] / (grads[0].dtype.type(div) if isinstance(div, float) else div.astype(grads[0].dtype))
        dx = xp.zeros(shape, dtype=g.dtype)
        offsets = list(win.clipped_offsets(shape[2:]))
        for gs, ds in _plane_chunks(g, dx):
            for out, cells in offsets:
                ds[_ALL + cells] += gs[_ALL + out]
        return [dx]


class _GlobalPool(Op):
    def spatial_axes(self, x: Array) -> tuple[int, ...]:
        if x.ndim < 3:
            raise self.unsupported(f"input of shape {tuple(x.shape)} has no spatial axes after (N, C)")
        return tuple(range(2, x.ndim))


class GlobalAveragePool(_GlobalPool):
    """y[n, c] = mean over the spatial positions p of x[n, c, p] (spatial axes kept as size 1)."""

    kind = "sum"

    def forward(self, x: Array) -> tuple[tuple[Array], tuple]:
        return (x.mean(axis=self.spatial_axes(x), keepdims=True),), x.shape

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        xp = array_module(grads[0])
        g = grads[0]
        return [xp.broadcast_to(g / g.dtype.type(math.prod(ctx[2:])), ctx).copy()]

    def vjp_graph(self, ctx: Any, grads: Sequence[Any], needs: Sequence[bool]) -> Grads:
        x, g = ctx.inputs[0], grads[0]
        if None in x.shape[2:]:
            raise NotCompilable(f"{self.name}: a pooling over run-time sizes")
        t = g.tracer
        scaled = g / g.dtype.type(math.prod(x.shape[2:]))
        return [t.emit("Expand", [scaled, t.shape_of(x)], g.dtype, x.shape)[0]]


class GlobalMaxPool(_GlobalPool):
    """y[n, c] = max over the spatial positions p of x[n, c, p]; the vjp routes g[n, c] to the
    first maximum (in raster order)."""

    kind = "maxpool"

    def forward(self, x: Array) -> tuple[tuple[Array], tuple]:
        xp = array_module(x)
        flat = x.reshape(x.shape[:2] + (-1,))
        idx = flat.argmax(axis=2)[:, :, None]
        y = xp.take_along_axis(flat, idx, axis=2)
        return (y.reshape(x.shape[:2] + (1,) * len(self.spatial_axes(x))),), (x.shape, idx)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        shape, idx = ctx
        xp = array_module(idx)
        g = grads[0].reshape(shape[:2] + (1,))
        hit = xp.arange(math.prod(shape[2:]))[None, None, :] == idx
        return [xp.where(hit, g, g.dtype.type(0)).reshape(shape)]
