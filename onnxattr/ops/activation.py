"""Elementwise activations and functions of one input (Relu ... HardSwish, Erf, Gelu, Sin, Cos,
the piecewise-constant Floor/Ceil/Round/Sign), and Clip and PRelu.

Derivatives follow the usual conventions of autograd and PyTorch: d relu(x)/dx = 1[x > 0],
d|x|/dx = sign(x), the clip derivative is 1 strictly inside the interval and also at the bound
when x equals it (as torch.clamp), and Floor/Ceil/Round/Sign have derivative 0. Clip's bounds get
no cotangent (PRelu's slope does). Every op is vectorized: erf comes from scipy.special
(cupyx.scipy.special on the GPU).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..backend import array_module
from ..compiled.symbolic import numpy_like
from .base import Array, Grads, Op, Unary, unbroadcast

class Relu(Unary):
    saves = "y"

    def f(self, xp: Any, x: Array) -> Array:
        return xp.maximum(x, 0)

    def df(self, xp: Any, x: Array, y: Array) -> Array:
        return y > 0


class LeakyRelu(Unary):
    saves = "x"

    def f(self, xp: Any, x: Array) -> Array:
        return xp.where(x > 0, x, x * x.dtype.type(self.alpha))

    def df(self, xp: Any, x: Array, y: Array) -> Array:
        return xp.where(x > 0, x.dtype.type(1), x.dtype.type(self.alpha))


class Elu(Unary):
    saves = "xy"

    def f(self, xp: Any, x: Array) -> Array:
        return xp.where(x > 0, x, self.alpha * xp.expm1(xp.minimum(x, 0))).astype(x.dtype)

    def df(self, xp: Any, x: Array, y: Array) -> Array:
        return xp.where(x > 0, 1, y + self.alpha).astype(x.dtype)


class Sigmoid(Unary):
    saves = "y"

    def f(self, xp: Any, x: Array) -> Array:
        return (0.5 * (1 + xp.tanh(0.5 * x))).astype(x.dtype)

    def df(self, xp: Any, x: Array, y: Array) -> Array:
        return y * (1 - y)


class HardSigmoid(Unary):
    saves = "x"

    def f(self, xp: Any, x: Array) -> Array:
        return xp.clip(self.alpha * x + self.beta, 0, 1).astype(x.dtype)

    def df(self, xp: Any, x: Array, y: Array) -> Array:
        z = self.alpha * x + self.beta
        return (((z > 0) & (z < 1)) * self.alpha).astype(x.dtype)


class Tanh(Unary):
    saves = "y"

    def f(self, xp: Any, x: Array) -> Array:
        return xp.tanh(x)

    def df(self, xp: Any, x: Array, y: Array) -> Array:
        return 1 - y * y


class Softplus(Unary):
    saves = "x"

    def f(self, xp: Any, x: Array) -> Array:
        return xp.logaddexp(x, 0).astype(x.dtype)

    def df(self, xp: Any, x: Array, y: Array) -> Array:
        return (0.5 * (1 + xp.tanh(0.5 * x))).astype(x.dtype)


class Exp(Unary):
    saves = "y"

    def f(self, xp: Any, x: Array) -> Array:
        return xp.exp(x)

    def df(self, xp: Any, x: Array, y: Array) -> Array:
        return y


class Log(Unary):
    saves = "x"

    def f(self, xp: Any, x: Array) -> Array:
        return xp.log(x)

    def df(self, xp: Any, x: Array, y: Array) -> Array:
        return 1 / x


class Sqrt(Unary):
    saves = "y"

    def f(self, xp: Any, x: Array) -> Array:
        return xp.sqrt(x)

    def df(self, xp: Any, x: Array, y: Array) -> Array:
        return 0.5 / y


class Reciprocal(Unary):
    saves = "y"

    def f(self, xp: Any, x: Array) -> Array:
        return 1 / x

    def df(self, xp: Any, x: Array, y: Array) -> Array:
        return -y * y


class Neg(Unary):
    kind = "other"
    saves = ""

    def f(self, xp: Any, x: Array) -> Array:
        return -x

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        return [-grads[0]]


class Abs(Unary):
    saves = "x"

    def f(self, xp: Any, x: Array) -> Array:
        return xp.abs(x)

    def df(self, xp: Any, x: Array, y: Array) -> Array:
        return xp.sign(x)


class Selu(Unary):
    """y = gamma * (x if x > 0 else alpha * (exp(x) - 1))."""

    saves = "x"

    def f(self, xp: Any, x: Array) -> Array:
        return (self.gamma * xp.where(x > 0, x, self.alpha * xp.expm1(xp.minimum(x, 0)))).astype(x.dtype)

    def df(self, xp: Any, x: Array, y: Array) -> Array:
        return (self.gamma * xp.where(x > 0, 1, self.alpha * xp.exp(xp.minimum(x, 0)))).astype(x.dtype)


class Softsign(Unary):
    """y = x / (1 + |x|); dy/dx = 1 / (1 + |x|)^2."""

    saves = "x"

    def f(self, xp: Any, x: Array) -> Array:
        return x / (1 + xp.abs(x))

    def df(self, xp: Any, x: Array, y: Array) -> Array:
        d = 1 + xp.abs(x)
        return 1 / (d * d)


class HardSwish(Unary):
    """y = x * clip(x / 6 + 1 / 2, 0, 1) (opset 14; MobileNetV3)."""

    saves = "x"

    def f(self, xp: Any, x: Array) -> Array:
        return (x * xp.clip(x / 6 + 0.5, 0, 1)).astype(x.dtype)

    def df(self, xp: Any, x: Array, y: Array) -> Array:
        return xp.where(x < -3, 0, xp.where(x > 3, 1, x / 3 + 0.5)).astype(x.dtype)


class _Step(Unary):
    """Piecewise-constant ops (Floor, Ceil, Round, Sign): zero derivative almost everywhere."""

    kind = "other"
    saves = ""

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        return [array_module(grads[0]).zeros_like(grads[0])]


class Floor(_Step):
    def f(self, xp: Any, x: Array) -> Array:
        return xp.floor(x)


class Ceil(_Step):
    def f(self, xp: Any, x: Array) -> Array:
        return xp.ceil(x)


class Round(_Step):
    """Round half to even, as ONNX and NumPy do."""

    def f(self, xp: Any, x: Array) -> Array:
        return xp.round(x)


class Sign(_Step):
    def f(self, xp: Any, x: Array) -> Array:
        return xp.sign(x)


class Erf(Unary):
    saves = "x"

    def f(self, xp: Any, x: Array) -> Array:
        return _erf(xp, x)

    def df(self, xp: Any, x: Array, y: Array) -> Array:
        return (2 / math.sqrt(math.pi) * xp.exp(-x * x)).astype(x.dtype)


class Gelu(Unary):
    """GELU (opset 20): x * Phi(x), or its tanh approximation when approximate='tanh'."""

    saves = "x"

    choices = {"approximate": ("none", "tanh")}

    def setup(self) -> None:
        self.tanh = self.approximate == "tanh"

    def f(self, xp: Any, x: Array) -> Array:
        if self.tanh:
            k = math.sqrt(2 / math.pi)
            return (0.5 * x * (1 + xp.tanh(k * (x + 0.044715 * x**3)))).astype(x.dtype)
        return (0.5 * x * (1 + _erf(xp, x / math.sqrt(2)))).astype(x.dtype)

    def df(self, xp: Any, x: Array, y: Array) -> Array:
        if self.tanh:
            k = math.sqrt(2 / math.pi)
            t = xp.tanh(k * (x + 0.044715 * x**3))
            return (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x)).astype(x.dtype)
        cdf = 0.5 * (1 + _erf(xp, x / math.sqrt(2)))
        pdf = xp.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
        return (cdf + x * pdf).astype(x.dtype)


def _erf(xp: Any, x: Array) -> Array:
    """erf elementwise, vectorized: scipy.special on the host, cupyx.scipy.special on the GPU,
    ONNX's Erf for a symbolic tensor (:mod:`onnxattr.compiled`)."""
    if xp is numpy_like:
        return xp.erf(x)
    if xp is np and x.size >= 1 << 14 and x.dtype == np.float32:
        from ..kernels import onnxruntime as ortk  # MLAS's vectorized erf: SciPy's is 10-50x slower

        return ortk.erf(x)
    if xp is np:
        from scipy.special import erf
    else:
        from cupyx.scipy.special import erf
    return erf(x).astype(x.dtype, copy=False)


class Sin(Unary):
    saves = "x"

    def f(self, xp: Any, x: Array) -> Array:
        return xp.sin(x)

    def df(self, xp: Any, x: Array, y: Array) -> Array:
        return xp.cos(x)


class Cos(Unary):
    saves = "x"

    def f(self, xp: Any, x: Array) -> Array:
        return xp.cos(x)

    def df(self, xp: Any, x: Array, y: Array) -> Array:
        return -xp.sin(x)


class Clip(Op):
    """y = min(max(x, lo), hi); bounds are attributes before opset 11 and inputs after."""

    kind = "activation"

    def forward(self, x: Array, lo: Array | None = None, hi: Array | None = None) -> tuple:
        xp = array_module(x)
        lo = self.attrs.get("min") if lo is None else lo
        hi = self.attrs.get("max") if hi is None else hi
        y = x
        if lo is not None:
            y = xp.maximum(y, xp.asarray(lo, dtype=x.dtype))
        if hi is not None:
            y = xp.minimum(y, xp.asarray(hi, dtype=x.dtype))
        return (y,), (x, y)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        x, y = ctx
        return [grads[0] * (x == y)]


class PRelu(Op):
    """y = x if x > 0 else slope * x, with slope broadcast to x (from opset 7; before it, a
    slope of C values is per channel, along axis 1)."""

    kind = "activation"

    def forward(self, x: Array, slope: Array) -> tuple:
        xp = array_module(x)
        shape = slope.shape
        if self.opset < 7 and slope.ndim == 1 and x.ndim > 2 and slope.shape[0] == x.shape[1] > 1:
            slope = slope.reshape((-1,) + (1,) * (x.ndim - 2))
        return (xp.where(x > 0, x, x * slope),), (x, slope, shape)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        x, slope, shape = ctx
        xp = array_module(x)
        g = grads[0]
        zero = g.dtype.type(0)
        return [
            xp.where(x > 0, g, g * slope) if needs[0] else None,
            unbroadcast(xp.where(x > 0, zero, g * x), slope.shape).reshape(shape) if needs[1] else None,
        ]


