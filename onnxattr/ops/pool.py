"""Pooling ops: MaxPool, AveragePool, GlobalMaxPool, GlobalAveragePool, over any number of
spatial axes of an (N, C, *spatial) input.

The windows come from :mod:`.window` (the geometry Conv uses). Pooling loops over the kernel
offsets only: each offset is one strided slice of the padded input, so a pass costs
prod(kernel) vectorised operations on (N, C, *out) arrays. MaxPool keeps the index of the winning
offset of every window (the first maximum in raster order, as PyTorch and onnxruntime pick it) and
routes the whole cotangent there; AveragePool divides by the number of cells each window counts.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Sequence

import numpy as np

from ..backend import array_module
from .base import Array, Grads, Op
from .window import Window, resolve

_ALL = (slice(None), slice(None))


def _flag(attrs: dict[str, Any], name: str) -> bool:
    return bool(int(attrs.get(name, 0)))


def _lowest(dtype: Any) -> Any:
    """The padding value of max pooling: -inf, or the smallest integer of an integer type."""
    dtype = np.dtype(dtype)
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def _index_dtype(n: int) -> Any:
    return np.uint8 if n <= 256 else np.int32


class _Pool(Op):
    """Shared attribute parsing: kernel_shape, ceil_mode, and (through ``resolve``) strides,
    pads, auto_pad and dilations. ``max_outputs`` is how many outputs the op can produce."""

    max_outputs: ClassVar[int] = 1

    def __init__(self, attrs: dict[str, Any], opset: int, name: str = "") -> None:
        super().__init__(attrs, opset, name)
        kernel = attrs.get("kernel_shape")
        if not kernel:
            raise self.unsupported("the kernel_shape attribute is required")
        self.kernel = tuple(int(k) for k in kernel)
        self.ceil_mode = _flag(attrs, "ceil_mode")

    def window(self, x: Array) -> Window:
        if x.ndim != len(self.kernel) + 2:
            raise self.unsupported(
                f"input of shape {tuple(x.shape)} does not have {len(self.kernel)} spatial axes "
                f"after (N, C) to match kernel_shape {list(self.kernel)}"
            )
        return resolve(self, x.shape[2:], self.kernel, self.ceil_mode)


def _padded_shape(shape: tuple[int, ...], win: Window) -> tuple[int, ...]:
    return tuple(shape[:2]) + tuple(n + b + e for n, b, e in zip(shape[2:], win.pads_begin, win.pads_end))


def _window_sum(win: Window, xpad: Array) -> Array:
    """sum over each window of a padded (N, C, *padded) array: (N, C, *out)."""
    total = None
    for sl, _ in win.offsets():
        if total is None:
            total = xpad[_ALL + sl].copy()
        else:
            total += xpad[_ALL + sl]
    return total


class MaxPool(_Pool):
    """y[n, c, p] = max_k x_pad[n, c, s * p + d * k], with x padded by -inf.

    The vjp sends g[n, c, p] to the first maximum of window p (raster order over k). The
    'Indices' output is not produced (``max_outputs = 1``), so storage_order plays no part.
    """

    kind = "maxpool"

    def forward(self, x: Array) -> tuple[tuple[Array], tuple]:
        xp = array_module(x)
        win = self.window(x)
        xpad = win.pad(x, _lowest(x.dtype))
        best = idx = None
        for i, (sl, _) in enumerate(win.offsets()):
            part = xpad[_ALL + sl]
            if best is None:
                best = part.copy()
                idx = xp.zeros(best.shape, dtype=_index_dtype(math.prod(self.kernel)))
                continue
            # offsets come in increasing order, so a strictly greater value's index is the max
            xp.maximum(idx, (part > best) * idx.dtype.type(i), out=idx)
            xp.maximum(best, part, out=best)
        return (best,), (x.shape, win, idx)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        shape, win, idx = ctx
        xp = array_module(idx)
        g = grads[0]
        dxpad = xp.zeros(_padded_shape(shape, win), dtype=g.dtype)
        zero = g.dtype.type(0)
        for i, (sl, _) in enumerate(win.offsets()):
            dxpad[_ALL + sl] += xp.where(idx == i, g, zero)
        return [win.crop(dxpad)]


class AveragePool(_Pool):
    """y[n, c, p] = sum_k x_pad[n, c, s * p + d * k] / count[p], with x padded by zeros.

    count[p] is the number of window cells inside the input (count_include_pad=0), or inside the
    input and its declared pads (count_include_pad=1); cells that only ceil_mode's extra end
    padding adds are never counted, as in onnxruntime and PyTorch.
    """

    kind = "sum"

    def __init__(self, attrs: dict[str, Any], opset: int, name: str = "") -> None:
        super().__init__(attrs, opset, name)
        self.count_include_pad = _flag(attrs, "count_include_pad")

    def divisor(self, xp: Any, shape: tuple[int, ...], win: Window, dtype: Any) -> Array | float:
        """The per-window cell count: a scalar, or an (1, 1, *out) array where it varies."""
        extra = any(e != d for e, d in zip(win.pads_end, win.declared_end))
        if not (win.padded and (extra or not self.count_include_pad)):
            return float(math.prod(self.kernel))
        counted = tuple(
            slice(0 if self.count_include_pad else b, n + b + (d if self.count_include_pad else 0))
            for n, b, d in zip(shape[2:], win.pads_begin, win.declared_end)
        )
        mask = xp.zeros((1, 1) + _padded_shape(shape, win)[2:], dtype=dtype)
        mask[_ALL + counted] = 1
        return _window_sum(win, mask)

    def forward(self, x: Array) -> tuple[tuple[Array], tuple]:
        xp = array_module(x)
        win = self.window(x)
        div = self.divisor(xp, x.shape, win, x.dtype)
        total = _window_sum(win, win.pad(x, 0))
        y = total / (x.dtype.type(div) if isinstance(div, float) else div)
        return (y,), (x.shape, win, div)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        shape, win, div = ctx
        xp = array_module(grads[0])
        g = grads[0] / (grads[0].dtype.type(div) if isinstance(div, float) else div.astype(grads[0].dtype))
        dxpad = xp.zeros(_padded_shape(shape, win), dtype=g.dtype)
        for sl, _ in win.offsets():
            dxpad[_ALL + sl] += g
        return [win.crop(dxpad)]


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
