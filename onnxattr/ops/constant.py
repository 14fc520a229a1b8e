"""Ops whose outputs carry no gradient: the integer ops of shape computations (Shape, Size,
ConstantOfShape, Constant, Range, NonZero), comparisons and logic, and IsNaN/IsInf.
Their vjp is empty: the engine gives every input None.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Sequence

import numpy as np

from ..backend import array_module, to_host
from .base import Array, Grads, Op, host_ints


class _NoGradient(Op):
    """Ops whose outputs carry no gradient (integers, booleans, constants)."""

    kind = "shape"
    differentiable = False

    def vjp(self, ctx: Any, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        return []


class Shape(_NoGradient):
    """y = the input's shape as int64, optionally only dims start:end (opset 15)."""

    def forward(self, x: Array) -> tuple:
        start = self.attrs.get("start") or 0
        return (np.asarray(x.shape[start:self.attrs.get("end")], dtype=np.int64),), None


class Size(_NoGradient):
    """y = the input's number of elements as an int64 scalar."""

    def forward(self, x: Array) -> tuple:
        return (np.asarray(math.prod(x.shape), dtype=np.int64),), None


class ConstantOfShape(_NoGradient):
    """y = a tensor of the given shape filled with ``value`` (a one-element tensor; default 0.0
    float32)."""

    def setup(self) -> None:
        self.value = np.zeros(1, np.float32) if self.value is None else self.value.reshape(-1)

    def forward(self, shape: Array) -> tuple:
        return (np.full(tuple(host_ints(shape)), self.value[0], dtype=self.value.dtype),), None


class Constant(_NoGradient):
    """y = the constant in ``value`` (a tensor), ``value_float(s)`` or ``value_int(s)``."""

    FORMS: ClassVar[dict[str, Any]] = {"value_float": np.float32, "value_floats": np.float32,
                                       "value_int": np.int64, "value_ints": np.int64}

    def setup(self) -> None:
        given = sorted(k for k, v in self.attrs.items() if v is not None)
        if self.attrs.get("value") is not None:
            return
        form = next((k for k in self.FORMS if self.attrs.get(k) is not None), None)
        if form is None:
            raise self.unsupported(f"constant given as {', '.join(given) or 'none'} (only tensors, floats and ints)")
        self.value = np.asarray(self.attrs[form], dtype=self.FORMS[form])

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


class _Elementwise(_NoGradient):
    """Elementwise comparisons, logic and tests with broadcasting: y = xp.<fn>(*xs)."""

    fn: ClassVar[str] = ""

    def forward(self, *xs: Array) -> tuple:
        xp = array_module(*xs)
        return (getattr(xp, self.fn)(*xs),), None


class Equal(_Elementwise):
    fn = "equal"


class Less(_Elementwise):
    fn = "less"


class LessOrEqual(_Elementwise):
    fn = "less_equal"


class Greater(_Elementwise):
    fn = "greater"


class GreaterOrEqual(_Elementwise):
    fn = "greater_equal"


class Not(_Elementwise):
    fn = "logical_not"


class And(_Elementwise):
    fn = "logical_and"


class Or(_Elementwise):
    fn = "logical_or"


class Xor(_Elementwise):
    fn = "logical_xor"


class IsNaN(_Elementwise):
    """y = x != x (every torch export of scaled_dot_product_attention has one)."""

    fn = "isnan"


class IsInf(_NoGradient):
    """y = x is +inf (detect_positive=1) or -inf (detect_negative=1)."""

    def forward(self, x: Array) -> tuple:
        xp = array_module(x)
        y = xp.zeros(x.shape, dtype=bool)
        if self.detect_positive:
            y |= xp.isposinf(x)
        if self.detect_negative:
            y |= xp.isneginf(x)
        return (y,), None
