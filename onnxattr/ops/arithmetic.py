"""Elementwise arithmetic with broadcasting (Add, Sub, Mul, Div, Pow, Mod, Max, Min, Sum, Mean),
and the ops that pass values through (Identity, Dropout, Cast).

Derivatives follow the usual conventions of autograd and PyTorch: Max/Min route to every tied
input, d(a^b)/da = 0 where b = 0 and d(a^b)/db = 0 where a = 0 and b >= 0. Integer Div truncates
toward zero, as onnxruntime does; Mod takes the divisor's sign (fmod=0) or the dividend's
(fmod=1, C's fmod, the only form ONNX allows for floats).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..backend import array_module, to_host
from .base import Array, Grads, Op, Shape, check_broadcast, unbroadcast

class _Binary(Op):
    """y = a (op) b with NumPy broadcasting; subclasses give ``f`` and the two partials."""

    kind = "other"

    def check(self, shapes: Sequence[Shape | None], values: Sequence[Array | None] = ()) -> None:
        check_broadcast(self, shapes)

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
        # attention masks add the dtype's minimum to itself (GPT-2: causal mask + padding mask):
        # -inf, as in onnxruntime and torch, which the Softmax after it turns into 0
        with np.errstate(over="ignore"):
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


class Mod(_Binary):
    """y = a - b * floor(a / b) (fmod=0: the sign of b) or a - b * trunc(a / b) (fmod=1: the
    sign of a); dy/da = 1, dy/db = -floor(a / b) or -trunc(a / b)."""

    def quotient(self, a: Array, b: Array) -> Array:
        xp = array_module(a, b)
        return xp.trunc(a / b) if self.fmod else xp.floor(a / b)

    def f(self, a: Array, b: Array) -> Array:
        xp = array_module(a, b)
        if np.issubdtype(a.dtype, np.floating) and not self.fmod:
            raise self.unsupported("fmod=0 with floating-point inputs (ONNX requires fmod=1)")
        return xp.fmod(a, b) if self.fmod else xp.mod(a, b)

    def grad_a(self, g: Array, a: Array, b: Array) -> Array:
        return g

    def grad_b(self, g: Array, a: Array, b: Array) -> Array:
        return -g * self.quotient(a, b)


class _Extremum(Op):
    """Max/Min of any number of broadcast inputs; the gradient goes to every input at the extremum."""

    pick: Any = None

    def check(self, shapes: Sequence[Shape | None], values: Sequence[Array | None] = ()) -> None:
        check_broadcast(self, shapes)

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

    def check(self, shapes: Sequence[Shape | None], values: Sequence[Array | None] = ()) -> None:
        check_broadcast(self, shapes)

    def forward(self, *xs: Array) -> tuple[tuple[Array], tuple]:
        y = xs[0]
        for x in xs[1:]:
            y = y + x
        return (y,), tuple(x.shape for x in xs)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        return [unbroadcast(grads[0], s) if n else None for s, n in zip(ctx, needs)]


class Mean(Sum):
    """y = (x_1 + ... + x_n) / n with broadcasting: Sum, scaled."""

    def forward(self, *xs: Array) -> tuple[tuple[Array], tuple]:
        (y,), shapes = super().forward(*xs)
        return (y / len(xs),), shapes

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        return super().vjp(ctx, [grads[0] / len(ctx)], needs)


class _Pass(Op):
    """y = x: the identity and its gradient."""

    kind = "route"

    def forward(self, x: Array, *rest: Array) -> tuple:
        return (x,), None

    def vjp(self, ctx: Any, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        return [grads[0]]


class Identity(_Pass):
    pass


class Dropout(_Pass):
    """Inference-mode dropout: the identity. A requested mask output is all ones (of x's type
    before opset 10, boolean since). The ratio is an attribute before opset 12 and an input
    since; a training_mode input that is true is refused (the output would be random)."""

    def forward(self, x: Array, ratio: Array | None = None, training_mode: Array | None = None) -> tuple:
        if training_mode is not None and bool(np.asarray(to_host(training_mode)).reshape(-1)[0]):
            raise self.unsupported("training_mode=True (random dropout); only inference is supported")
        xp = array_module(x)
        mask_type = x.dtype if self.opset < 10 else bool
        return (x, xp.ones(x.shape, dtype=mask_type)), None


class Cast(Op):
    """y = x converted to the ``to`` element type; gradients flow between float types only."""

    kind = "route"

    def setup(self) -> None:
        from onnx import TensorProto, helper

        to = self.to
        if isinstance(to, str):  # opset 1 names the type: "FLOAT"
            try:
                to = TensorProto.DataType.Value(to.upper())
            except ValueError:
                raise self.unsupported(f"unknown element type to={to!r}") from None
        try:
            self.dtype = np.dtype(helper.tensor_dtype_to_np_dtype(int(to)))
        except (KeyError, TypeError, ValueError):
            raise self.unsupported(f"element type to={to!r} has no NumPy type") from None

    def forward(self, x: Array) -> tuple:
        return (x.astype(self.dtype),), x.dtype

    def vjp(self, ctx: Any, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        floats = np.issubdtype(ctx, np.floating) and np.issubdtype(self.dtype, np.floating)
        if not floats or grads[0] is None:
            return [None]
        return [grads[0].astype(ctx)]
