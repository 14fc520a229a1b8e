"""Elementwise ops: arithmetic with broadcasting, activations, casts and identities.

Derivatives follow the usual conventions of autograd and PyTorch: d relu(x)/dx = 1[x > 0],
d|x|/dx = sign(x), the clip derivative is 1 strictly inside the interval and also at the bound
when x equals it (as torch.clamp), Max/Min route to every tied input, d(a^b)/da = 0 where b = 0
and d(a^b)/db = 0 where a = 0 and b >= 0, and Floor/Ceil/Round/Sign have derivative 0. Integer
Div truncates toward zero, as onnxruntime does. Clip's bounds get no cotangent (PRelu's slope
does).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..backend import array_module
from .base import Array, Grads, Op, Unary, unbroadcast


class _Binary(Op):
    """y = a (op) b with NumPy broadcasting; subclasses give ``f`` and the two partials."""

    kind = "other"

    def f(self, a: Array, b: Array) -> Array:
        raise NotImplementedError

    def forward(self, a: Array, b: Array) -> tuple[tuple[Array], tuple]:
        y = self.f(a, b)
        return (y,), (a, b)

    def grad_a(self, g: Array, a: Array, b: Array) -> Array:
        raise NotImplementedError

    def grad_b(self, g: Array, a: Array, b: Array) -> Array:
        raise NotImplementedError

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        a, b = ctx
        g = grads[0]
        return [
            unbroadcast(self.grad_a(g, a, b), a.shape) if needs[0] else None,
            unbroadcast(self.grad_b(g, a, b), b.shape) if needs[1] else None,
        ]


class Add(_Binary):
    kind = "sum"

    def f(self, a: Array, b: Array) -> Array:
        return a + b

    def forward(self, a: Array, b: Array) -> tuple[tuple[Array], tuple]:
        return (a + b,), (a.shape, b.shape)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        g = grads[0]
        return [unbroadcast(g, s) if n else None for s, n in zip(ctx, needs)]


class Sub(_Binary):
    def forward(self, a: Array, b: Array) -> tuple[tuple[Array], tuple]:
        return (a - b,), (a.shape, b.shape)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        g = grads[0]
        return [
            unbroadcast(g, ctx[0]) if needs[0] else None,
            unbroadcast(-g, ctx[1]) if needs[1] else None,
        ]


class Mul(_Binary):
    def f(self, a: Array, b: Array) -> Array:
        return a * b

    def grad_a(self, g: Array, a: Array, b: Array) -> Array:
        return g * b

    def grad_b(self, g: Array, a: Array, b: Array) -> Array:
        return g * a


class Div(_Binary):
    def f(self, a: Array, b: Array) -> Array:
        if np.issubdtype(a.dtype, np.integer):  # C semantics: the quotient truncated toward zero
            xp = array_module(a, b)
            q = xp.floor_divide(a, b)
            return (q + ((q < 0) & (q * b != a))).astype(a.dtype)
        return a / b

    def grad_a(self, g: Array, a: Array, b: Array) -> Array:
        return g / b

    def grad_b(self, g: Array, a: Array, b: Array) -> Array:
        return -g * a / (b * b)


class Pow(_Binary):
    def f(self, a: Array, b: Array) -> Array:
        return (a**b).astype(a.dtype, copy=False)

    def grad_a(self, g: Array, a: Array, b: Array) -> Array:
        xp = array_module(a)
        with np.errstate(divide="ignore", invalid="ignore"):  # 0 ** -1 where b == 0 is masked
            d = b * a ** (b - 1)
        return g * xp.where(b == 0, 0, d).astype(g.dtype)

    def grad_b(self, g: Array, a: Array, b: Array) -> Array:
        xp = array_module(a)
        with np.errstate(divide="ignore", invalid="ignore"):  # log 0 where a == 0 is masked
            d = a**b * xp.log(a)
        return g * xp.where((a == 0) & (b >= 0), 0, d).astype(g.dtype)


class _Extremum(Op):
    """Max/Min of any number of broadcast inputs; the gradient goes to every input at the extremum."""

    pick: Any = None

    def forward(self, *xs: Array) -> tuple[tuple[Array], tuple]:
        y = xs[0]
        for x in xs[1:]:
            y = self.pick(array_module(y), y, x)
        return (y,), (xs, y)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        xs, y = ctx
        g = grads[0]
        return [unbroadcast(g * (x == y), x.shape) if n else None for x, n in zip(xs, needs)]


class Max(_Extremum):
    @staticmethod
    def pick(xp: Any, a: Array, b: Array) -> Array:
        return xp.maximum(a, b)


class Min(_Extremum):
    @staticmethod
    def pick(xp: Any, a: Array, b: Array) -> Array:
        return xp.minimum(a, b)


class Sum(Op):
    """y = x_1 + ... + x_n with broadcasting."""

    kind = "sum"

    def forward(self, *xs: Array) -> tuple[tuple[Array], tuple]:
        y = xs[0]
        for x in xs[1:]:
            y = y + x
        return (y,), tuple(x.shape for x in xs)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        return [unbroadcast(grads[0], s) if n else None for s, n in zip(ctx, needs)]


class Mean(Op):
    """y = (x_1 + ... + x_n) / n with broadcasting."""

    kind = "sum"

    def forward(self, *xs: Array) -> tuple[tuple[Array], tuple]:
        y = xs[0]
        for x in xs[1:]:
            y = y + x
        return (y / len(xs),), tuple(x.shape for x in xs)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        g = grads[0] / len(ctx)
        return [unbroadcast(g, s) if n else None for s, n in zip(ctx, needs)]


class Relu(Unary):
    saves = "y"

    def f(self, xp: Any, x: Array) -> Array:
        return xp.maximum(x, 0)

    def df(self, xp: Any, x: Array, y: Array) -> Array:
        return y > 0


class LeakyRelu(Unary):
    saves = "x"

    def __init__(self, attrs: dict[str, Any], opset: int, name: str = "") -> None:
        super().__init__(attrs, opset, name)
        self.alpha = float(attrs.get("alpha", 0.01))

    def f(self, xp: Any, x: Array) -> Array:
        return xp.where(x > 0, x, x * x.dtype.type(self.alpha))

    def df(self, xp: Any, x: Array, y: Array) -> Array:
        return xp.where(x > 0, x.dtype.type(1), x.dtype.type(self.alpha))


class Elu(Unary):
    saves = "xy"

    def __init__(self, attrs: dict[str, Any], opset: int, name: str = "") -> None:
        super().__init__(attrs, opset, name)
        self.alpha = float(attrs.get("alpha", 1.0))

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

    def __init__(self, attrs: dict[str, Any], opset: int, name: str = "") -> None:
        super().__init__(attrs, opset, name)
        self.alpha = float(attrs.get("alpha", 0.2))
        self.beta = float(attrs.get("beta", 0.5))

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

    def __init__(self, attrs: dict[str, Any], opset: int, name: str = "") -> None:
        super().__init__(attrs, opset, name)
        self.alpha = float(attrs.get("alpha", 1.67326319217681884765625))
        self.gamma = float(attrs.get("gamma", 1.05070102214813232421875))

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

    def __init__(self, attrs: dict[str, Any], opset: int, name: str = "") -> None:
        super().__init__(attrs, opset, name)
        approximate = attrs.get("approximate", b"none")
        self.tanh = (approximate.decode() if isinstance(approximate, bytes) else approximate) == "tanh"

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
    """erf elementwise: scipy.special / cupyx.scipy.special when present, else math.erf."""
    if xp is np:
        try:
            from scipy.special import erf
        except ImportError:
            return np.vectorize(math.erf, otypes=[x.dtype])(x)
        return erf(x).astype(x.dtype)
    from cupyx.scipy.special import erf

    return erf(x).astype(x.dtype)


class Clip(Op):
    """y = min(max(x, lo), hi); bounds are attributes before opset 11 and inputs after."""

    kind = "activation"

    def __init__(self, attrs: dict[str, Any], opset: int, name: str = "") -> None:
        super().__init__(attrs, opset, name)
        self.lo = attrs.get("min")
        self.hi = attrs.get("max")

    def forward(self, x: Array, lo: Array | None = None, hi: Array | None = None) -> tuple:
        xp = array_module(x)
        lo = self.lo if lo is None else lo
        hi = self.hi if hi is None else hi
        y = x
        if lo is not None:
            y = xp.maximum(y, xp.asarray(lo, dtype=x.dtype))
        if hi is not None:
            y = xp.minimum(y, xp.asarray(hi, dtype=x.dtype))
        return (y,), (x, y)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        x, y = ctx
        return [grads[0] * (x == y) if needs[0] else None] + [None] * (len(needs) - 1)


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


class _Pass(Op):
    """y = x: the identity and its gradient."""

    kind = "route"

    def forward(self, x: Array, *rest: Array) -> tuple:
        return (x,), None

    def vjp(self, ctx: Any, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        return [grads[0]] + [None] * (len(needs) - 1)


class Identity(_Pass):
    pass


class Dropout(_Pass):
    """Inference-mode dropout: the identity. A requested mask output is all ones (of x's type
    before opset 10, boolean since). The ratio is an attribute before opset 12 and an input
    since; a training_mode input that is true is refused (the output would be random)."""

    def forward(self, x: Array, ratio: Array | None = None, training_mode: Array | None = None) -> tuple:
        from ..backend import to_host

        if training_mode is not None and bool(np.asarray(to_host(training_mode)).reshape(-1)[0]):
            raise self.unsupported("training_mode=True (random dropout); only inference is supported")
        xp = array_module(x)
        mask_type = x.dtype if self.opset < 10 else bool
        return (x, xp.ones(x.shape, dtype=mask_type)), None


class Cast(Op):
    """y = x converted to the ``to`` element type; gradients flow between float types only."""

    kind = "route"

    def __init__(self, attrs: dict[str, Any], opset: int, name: str = "") -> None:
        super().__init__(attrs, opset, name)
        from onnx import TensorProto, helper

        to = attrs.get("to")
        if to is None:
            raise self.unsupported("Cast without a 'to' attribute")
        if isinstance(to, bytes):  # opset 1 names the type: b"FLOAT"
            try:
                to = TensorProto.DataType.Value(to.decode().upper())
            except ValueError:
                raise self.unsupported(f"unknown element type to={to!r}") from None
        self.dtype = np.dtype(helper.tensor_dtype_to_np_dtype(int(to)))

    def forward(self, x: Array) -> tuple:
        return (x.astype(self.dtype),), x.dtype

    def vjp(self, ctx: Any, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        floats = np.issubdtype(ctx, np.floating) and np.issubdtype(self.dtype, np.floating)
        if not floats or grads[0] is None:
            return [None]
        return [grads[0].astype(ctx)]
