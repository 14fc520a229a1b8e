"""Normalisation ops: BatchNormalization (inference form), InstanceNormalization,
LayerNormalization, RMSNormalization, LRN, Softmax and LogSoftmax.

The parameters (scale, bias, running statistics) are constants: the vjps are with respect to the
data input (and LayerNormalization's scale and bias, which are cheap). InstanceNormalization and
LayerNormalization share one standardisation and its vjp over a set of axes. Ops whose extra
outputs (running statistics, Mean, InvStdDev) are not produced have ``max_outputs = 1``.
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np

from ..backend import array_module
from .base import Array, Grads, Op, Shape, norm_axis, unbroadcast


def _compute_dtype(dtype: Any) -> Any:
    """Half precision is computed in float32 (ONNX's stash_type); other floats in themselves."""
    return np.float32 if np.dtype(dtype).itemsize < 4 else dtype


def _standardize(xp: Any, x: Array, axes: tuple[int, ...], eps: float) -> tuple[Array, Array]:
    """xhat = (x - mean) * r with r = 1 / sqrt(var + eps), both over ``axes`` (biased variance)."""
    xc = x - x.mean(axis=axes, keepdims=True)
    r = 1 / xp.sqrt(xp.square(xc).mean(axis=axes, keepdims=True) + eps)
    xc *= r
    return xc, r


def _standardize_vjp(g: Array, xhat: Array, r: Array, axes: tuple[int, ...]) -> Array:
    """The vjp of ``_standardize``: r * (g - mean(g) - xhat * mean(g * xhat))."""
    return r * (g - g.mean(axis=axes, keepdims=True) - xhat * (g * xhat).mean(axis=axes, keepdims=True))


class BatchNormalization(Op):
    """y = (x - mean[c]) / sqrt(var[c] + epsilon) * scale[c] + B[c] over axis 1 (inference).

    Opsets before 9 with spatial=0 give per-activation parameters of shape (C, *spatial).
    training_mode=1 is unsupported, and so are the running-statistics outputs.
    """

    kind = "other"
    max_outputs: ClassVar[int] = 1

    def check(self, shapes: Sequence[Shape | None], values: Sequence[Array | None] = ()) -> None:
        x = shapes[0]
        if x is None or len(x) < 2 or x[1] is None or self.opset < 9:
            return
        bad = [list(s) for s in shapes[1:5] if s is not None and tuple(s) != (x[1],)]
        if bad:
            raise self.unsupported(f"parameters of shapes {bad} do not match the {x[1]} channels of input {list(x)}")

    def setup(self) -> None:
        if self.attrs.get("training_mode"):
            raise self.unsupported("training_mode=1 (batch statistics); only inference is implemented")

    def forward(self, x: Array, scale: Array, bias: Array, mean: Array, var: Array) -> tuple:
        xp = array_module(x)
        if x.ndim < 2 or scale.shape[0] != x.shape[1]:
            raise self.unsupported(f"input of shape {tuple(x.shape)} does not match {scale.shape[0]} channels")
        shape = (1,) + tuple(scale.shape) + (1,) * (x.ndim - 1 - scale.ndim)
        dt = x.dtype
        a = (scale.astype(dt) / xp.sqrt(var.astype(dt) + self.epsilon)).reshape(shape)
        b = bias.astype(dt).reshape(shape) - mean.astype(dt).reshape(shape) * a
        y = x * a
        y += b
        return (y,), a

    def vjp(self, ctx: Array, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        if any(needs[1:]):
            raise self.unsupported("gradients with respect to the parameters are not computed")
        return [grads[0] * ctx]


class InstanceNormalization(Op):
    """y[n, c] = (x[n, c] - mean) / sqrt(var + epsilon) * scale[c] + B[c], with the mean and the
    biased variance over the spatial axes of each (n, c)."""

    kind = "other"

    def forward(self, x: Array, scale: Array, bias: Array) -> tuple:
        xp = array_module(x)
        if x.ndim < 3:
            raise self.unsupported(f"input of shape {tuple(x.shape)} has no spatial axes after (N, C)")
        dt = _compute_dtype(x.dtype)
        axes = tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        xhat, r = _standardize(xp, x.astype(dt, copy=False), axes, self.epsilon)
        s = scale.astype(dt).reshape(shape)
        y = xhat * s
        y += bias.astype(dt).reshape(shape)
        return (y.astype(x.dtype, copy=False),), (xhat, r, s)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        if any(needs[1:]):
            raise self.unsupported("gradients with respect to scale or bias are not computed")
        xhat, r, s = ctx
        g = grads[0]
        dx = _standardize_vjp(g.astype(xhat.dtype, copy=False) * s, xhat, r, tuple(range(2, g.ndim)))
        return [dx.astype(g.dtype, copy=False)]


class LayerNormalization(Op):
    """y = (x - mean) / sqrt(var + epsilon) * Scale + B, with the mean and the biased variance
    over the axes from ``axis`` to the last (opset 17). The Mean and InvStdDev outputs are not
    produced."""

    kind = "other"
    max_outputs: ClassVar[int] = 1

    def forward(self, x: Array, scale: Array, bias: Array | None = None) -> tuple:
        xp = array_module(x)
        axes = tuple(range(norm_axis(self.axis, x.ndim), x.ndim))
        dt = _compute_dtype(x.dtype)
        xhat, r = _standardize(xp, x.astype(dt, copy=False), axes, self.epsilon)
        y = xhat * scale.astype(dt)
        if bias is not None:
            y += bias.astype(dt)
        return (y.astype(x.dtype, copy=False),), (xhat, r, scale, None if bias is None else bias.shape, axes)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        xhat, r, scale, bias_shape, axes = ctx
        g = grads[0]
        gc = g.astype(xhat.dtype, copy=False)
        out: list[Array | None] = [None] * len(needs)
        if needs[0]:
            out[0] = _standardize_vjp(gc * scale.astype(xhat.dtype), xhat, r, axes).astype(g.dtype, copy=False)
        if len(needs) > 1 and needs[1]:
            out[1] = unbroadcast(gc * xhat, scale.shape).astype(scale.dtype, copy=False)
        if len(needs) > 2 and needs[2]:
            out[2] = unbroadcast(g, bias_shape)
        return out


class RMSNormalization(Op):
    """y = x / sqrt(mean(x^2) + epsilon) * scale, the mean over the axes from ``axis`` to the
    last (opset 23); half precision is computed in float32. The vjp with respect to x is
    r (g s - xhat mean(g s xhat)), with r = 1 / sqrt(mean(x^2) + epsilon) and xhat = x r."""

    kind = "other"

    def forward(self, x: Array, scale: Array) -> tuple:
        xp = array_module(x)
        axes = tuple(range(norm_axis(self.axis, x.ndim), x.ndim))
        dt = _compute_dtype(x.dtype)
        xc = x.astype(dt, copy=False)
        r = 1 / xp.sqrt(xp.square(xc).mean(axis=axes, keepdims=True) + xc.dtype.type(self.epsilon))
        xhat = xc * r
        y = xhat * scale.astype(dt, copy=False)
        return (y.astype(x.dtype, copy=False),), (xhat, r, scale, axes)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        xhat, r, scale, axes = ctx
        g = grads[0]
        gc = g.astype(xhat.dtype, copy=False)
        dx = ds = None
        if needs[0]:
            gs = gc * scale.astype(xhat.dtype, copy=False)
            dx = (r * (gs - xhat * (gs * xhat).mean(axis=axes, keepdims=True))).astype(g.dtype, copy=False)
        if needs[1]:
            ds = unbroadcast(gc * xhat, scale.shape).astype(scale.dtype, copy=False)
        return [dx, ds]


def _channel_window_sum(xp: Any, a: Array, before: int, after: int) -> Array:
    """s[:, c] = sum of a[:, i] for c - before <= i <= c + after (zero outside the channels)."""
    n = a.shape[1]
    widths = [(0, 0), (before, after)] + [(0, 0)] * (a.ndim - 2)
    ap = xp.pad(a, widths)
    s = ap[:, 0:n].copy()
    for i in range(1, before + after + 1):
        s += ap[:, i : i + n]
    return s


class LRN(Op):
    """y[n, c] = x[n, c] / (bias + alpha / size * sum_{i in window(c)} x[n, i]^2)^beta, with
    window(c) = [c - floor((size - 1) / 2), c + ceil((size - 1) / 2)] over the channels."""

    kind = "other"

    positive = ("size",)

    def setup(self) -> None:
        self.before = (self.size - 1) // 2
        self.after = self.size - 1 - self.before

    def forward(self, x: Array) -> tuple:
        xp = array_module(x)
        d = self.bias + (self.alpha / self.size) * _channel_window_sum(xp, x * x, self.before, self.after)
        return (x * d ** -self.beta,), (x, d)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        x, d = ctx
        xp = array_module(x)
        g = grads[0]
        db = d ** -self.beta
        # channel c's denominator reads channel j when j - after <= c <= j + before
        t = _channel_window_sum(xp, g * x * db / d, self.after, self.before)
        return [g * db - (2 * self.alpha * self.beta / self.size) * x * t]


class _SoftmaxFamily(Op):
    """Softmax and LogSoftmax over ``axis``. Before opset 13 the input is coerced to 2-D at
    ``axis`` (default 1), so the op runs over all axes from ``axis`` on; from 13 over the one
    axis (default -1)."""

    kind = "other"

    def check(self, shapes: Sequence[Shape | None], values: Sequence[Array | None] = ()) -> None:
        if shapes and shapes[0] is not None:
            self.check_axis(self.axis, len(shapes[0]), end=max(len(shapes[0]), 1))

    def axes(self, x: Array) -> tuple[int, ...]:
        axis = norm_axis(self.axis, x.ndim)
        if not 0 <= axis < max(x.ndim, 1):
            raise self.unsupported(f"axis={self.axis} for an input of rank {x.ndim}")
        return tuple(range(axis, x.ndim)) if self.opset < 13 else (axis,)

    def shifted(self, x: Array) -> tuple[Array, tuple[int, ...]]:
        axes = self.axes(x)
        return x - x.max(axis=axes, keepdims=True), axes

    def vjp_graph(self, ctx: Any, grads: Sequence[Any], needs: Sequence[bool]) -> Grads:
        """The vjp above on the node's own output (Softmax: y; LogSoftmax: log y)."""
        return self.vjp((ctx.outputs[0], self.axes(ctx.outputs[0])), grads, needs)


class Softmax(_SoftmaxFamily):
    """y = exp(x - max) / sum exp(x - max) over the axes; the vjp is y * (g - sum(g * y))."""

    def forward(self, x: Array) -> tuple:
        xp = array_module(x)
        z, axes = self.shifted(x)
        e = xp.exp(z)
        e /= e.sum(axis=axes, keepdims=True)
        return (e,), (e, axes)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        y, axes = ctx
        g = grads[0]
        return [y * (g - (g * y).sum(axis=axes, keepdims=True))]


class LogSoftmax(_SoftmaxFamily):
    """y = x - max - log sum exp(x - max) over the axes; the vjp is g - exp(y) * sum(g)."""

    def forward(self, x: Array) -> tuple:
        xp = array_module(x)
        z, axes = self.shifted(x)
        z -= xp.log(xp.exp(z).sum(axis=axes, keepdims=True))
        return (z,), (z, axes)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        y, axes = ctx
        xp = array_module(y)
        g = grads[0]
        return [g - xp.exp(y) * g.sum(axis=axes, keepdims=True)]
