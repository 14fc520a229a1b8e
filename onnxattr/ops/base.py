"""The op interface: an ONNX op's forward and its vector-Jacobian product, side by side.

Every op is a small class named after its ONNX op type. Subclassing :class:`Op` registers it
(outside this module, and unless its name starts with ``_``), so adding an op is adding a class. Attributes are parsed once, in ``__init__``, into plain Python
values; inputs that older opsets gave as attributes are read from either place.

``forward(*inputs)`` returns ``(outputs, ctx)``: a tuple of output arrays and whatever the vjp
needs (keep it minimal: the engine holds every ``ctx`` until the backward pass).
``vjp(ctx, grads, needs)`` takes one cotangent per output (``None`` where nothing flows back) and
returns one per input, computing only those with ``needs[i]`` true and ``None`` elsewhere.
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np

from ..errors import UnsupportedOpError

Array = Any  # numpy.ndarray or cupy.ndarray
Grads = list  # list[Array | None], one per input of the op

REGISTRY: dict[str, type["Op"]] = {}


class Op:
    """Base class of all ops. Subclasses set ``kind`` and implement forward and vjp.

    ``kind`` tells the composites what role the op plays:
    ``linear`` (weights: Conv, Gemm, MatMul with a constant operand, Affine),
    ``activation`` (elementwise nonlinearity), ``sum`` (a linear combination of its inputs
    without weights: Add, Sum, average pooling, ReduceMean), ``maxpool``, ``route`` (moves or
    copies values: reshapes, Concat, Split, Slice, Transpose), ``shape`` (no gradient: Shape,
    ConstantOfShape), or ``other``.
    """

    kind: ClassVar[str] = "other"
    #: False for ops whose outputs do not depend differentiably on their inputs (Shape, ...).
    differentiable: ClassVar[bool] = True
    #: how many of the node's outputs the op computes (None: all it declares); the loader
    #: refuses a model that reads one beyond these.
    max_outputs: ClassVar[int | None] = None
    #: how many outputs the node declares (set by the loader; None for a free-standing op)
    n_outputs: int | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_") and cls.__module__ != __name__:
            REGISTRY[cls.__name__] = cls

    def __init__(self, attrs: dict[str, Any], opset: int, name: str = "") -> None:
        self.attrs = attrs
        self.opset = opset
        self.name = name

    def unsupported(self, detail: str) -> UnsupportedOpError:
        """An error naming this node, for an attribute or input form that is not implemented."""
        return UnsupportedOpError(self.name, type(self).__name__, detail)

    def forward(self, *inputs: Array) -> tuple[tuple[Array, ...], Any]:
        raise NotImplementedError

    def vjp(self, ctx: Any, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        raise NotImplementedError


class Unary(Op):
    """An elementwise op of one input: ``forward`` is y = f(x), ``vjp`` is g * f'(x).

    Subclasses define ``f(xp, x)`` and ``df(xp, x, y)`` (the derivative, given input and output),
    and ``saves``: which of x and y the derivative reads, so that only those are kept.
    """

    kind: ClassVar[str] = "activation"
    saves: ClassVar[str] = "xy"

    def f(self, xp: Any, x: Array) -> Array:
        raise NotImplementedError

    def df(self, xp: Any, x: Array, y: Array) -> Array:
        raise NotImplementedError

    def forward(self, x: Array) -> tuple[tuple[Array], tuple[Array, Array]]:
        from ..backend import array_module

        y = self.f(array_module(x), x)
        return (y,), (x if "x" in self.saves else None, y if "y" in self.saves else None)

    def vjp(self, ctx: tuple[Array, Array], grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        from ..backend import array_module

        x, y = ctx
        return [grads[0] * self.df(array_module(grads[0]), x, y)]


def host_ints(a: Array | None) -> list[int] | None:
    """A shape-like input (axes, pads, shape, starts...) as a list of Python ints."""
    if a is None:
        return None
    from ..backend import to_host

    return [int(v) for v in np.asarray(to_host(a)).reshape(-1)]


def unbroadcast(g: Array, shape: tuple[int, ...]) -> Array:
    """Sum a cotangent of a broadcast result back to an operand of ``shape``."""
    if g.shape == tuple(shape):
        return g
    extra = g.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        i + extra for i, n in enumerate(shape) if n == 1 and g.shape[i + extra] != 1
    )
    g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def norm_axis(axis: int, ndim: int) -> int:
    """A possibly negative axis as a non-negative one."""
    return axis + ndim if axis < 0 else axis
