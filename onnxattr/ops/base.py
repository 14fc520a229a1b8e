"""The op interface: an ONNX op's forward and its vector-Jacobian product, side by side.

Every op is a small class named after its ONNX op type. Subclassing :class:`Op` registers it
(outside this module, and unless its name starts with ``_``), so adding an op is adding a class.

Attributes are declarative, as in onnx's reference evaluator (``onnx/reference/op_run.py``):
``Op.__init__`` fills every attribute the ONNX schema of the model's opset declares, with the
schema's default where the node gives none (None where the schema has no default), decodes
strings to ``str`` and tensors to NumPy arrays, and sets each as an attribute of the op under
its ONNX name (``self.axis``, ``self.kernel_shape``). It then checks the values the spec forbids,
as the class declares them (``positive``, ``non_negative``, ``choices``), and calls ``setup()``
for anything derived. ``defaults`` gives the values of attributes that an older opset's schema
lacks, so that every opset form reads the same names. Inputs that older opsets gave as attributes are read from either place.

``forward(*inputs)`` returns ``(outputs, ctx)``: a tuple of output arrays and whatever the vjp
needs (keep it minimal: the engine holds every ``ctx`` until the backward pass).
``vjp(ctx, grads, needs)`` takes one cotangent per output (``None`` where nothing flows back)
and returns the cotangents of the leading inputs it computes (``None`` for one it skips, where
``needs[i]`` is false); :meth:`Op.cotangents` pads that to one per input, as autograd's
``defvjp`` does, and is what the engine and the rules call.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from ..errors import UnsupportedOpError

Array = Any  # numpy.ndarray or cupy.ndarray
Grads = list  # list[Array | None], one per input of the op (or fewer: the rest are None)
Shape = tuple  # tuple[int | None, ...]: a shape from shape inference, None for an unknown dim

REGISTRY: dict[str, type["Op"]] = {}


@lru_cache(maxsize=None)
def schema_attributes(op_type: str, opset: int) -> tuple[dict[str, Any], frozenset[str]]:
    """The defaults of ``op_type``'s attributes in ``opset`` (None where the schema gives no
    default) and the names of the required ones; empty for ops outside the ONNX domain."""
    import onnx.defs
    from onnx import helper

    try:
        schema = onnx.defs.get_schema(op_type, max(opset, 1), "")
    except onnx.defs.SchemaError:
        return {}, frozenset()
    defaults = {
        name: decode(helper.get_attribute_value(a.default_value)) if a.default_value.type else None
        for name, a in schema.attributes.items()
    }
    return defaults, frozenset(name for name, a in schema.attributes.items() if a.required)


def decode(value: Any) -> Any:
    """An attribute value as a plain Python value: bytes as str, a TensorProto as an array."""
    from onnx import TensorProto, numpy_helper

    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, (list, tuple)):
        return [decode(v) for v in value]
    return value


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
    #: integer (list) attributes whose values must be > 0, and >= 0, where given
    positive: ClassVar[tuple[str, ...]] = ()
    non_negative: ClassVar[tuple[str, ...]] = ()
    #: string attributes and the values implemented
    choices: ClassVar[Mapping[str, tuple[str, ...]]] = {}
    #: defaults of attributes that the schemas of older opsets lack (the later opsets' meaning)
    defaults: ClassVar[Mapping[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_") and cls.__module__ != __name__:
            REGISTRY[cls.__name__] = cls

    def __init__(self, attrs: Mapping[str, Any], opset: int, name: str = "") -> None:
        self.opset = opset
        self.name = name
        defaults, required = schema_attributes(type(self).__name__, opset)
        missing = sorted(required - set(attrs))
        if missing:
            raise self.unsupported(f"the required attribute(s) {missing} are missing")
        #: every attribute of the schema, decoded, the node's values over the defaults
        self.attrs: dict[str, Any] = {**self.defaults, **defaults, **{k: decode(v) for k, v in attrs.items()}}
        for key, value in self.attrs.items():
            if callable(getattr(type(self), key, None)):
                raise TypeError(f"{type(self).__name__}: attribute {key!r} would hide a method")
            setattr(self, key, value)
        self.validate()
        self.setup()

    def validate(self) -> None:
        """Refuse attribute values the spec forbids, as the class declares them."""
        for key in self.positive + self.non_negative:
            value = self.attrs.get(key)
            values = value if isinstance(value, list) else [] if value is None else [value]
            low = 1 if key in self.positive else 0
            if any(int(v) < low for v in values):
                raise self.unsupported(f"{key}={value} is invalid: every value must be {'> 0' if low else '>= 0'}")
        for key, allowed in self.choices.items():
            value = self.attrs.get(key)
            if value is not None and value not in allowed:
                raise self.unsupported(f"{key}={value!r}; implemented: {', '.join(allowed)}")

    def setup(self) -> None:
        """Derive what the op needs from its attributes (after they are set and checked)."""

    def check(self, shapes: Sequence[Shape | None], values: Sequence[Array | None] = ()) -> None:
        """Refuse, at load, inputs of these shapes (from shape inference; None where unknown
        or omitted) and constant values (None where not constant) that the op cannot run. The
        default accepts anything."""

    def unsupported(self, detail: str) -> UnsupportedOpError:
        """An error naming this node, for an attribute or input form that is not implemented."""
        return UnsupportedOpError(self.name, type(self).__name__, detail)

    def check_axis(self, axis: int, rank: int, end: int | None = None, what: str = "an input") -> int:
        """``axis`` as a non-negative axis of a tensor of ``rank``; UnsupportedOpError naming this
        node where it lies outside [-rank, end) (``end`` defaults to ``rank``)."""
        if not -rank <= axis < (rank if end is None else end):
            raise self.unsupported(f"axis={axis} is out of range for {what} of rank {rank}")
        return norm_axis(axis, rank)

    def forward(self, *inputs: Array) -> tuple[tuple[Array, ...], Any]:
        raise NotImplementedError

    def vjp(self, ctx: Any, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        raise NotImplementedError

    def onnx_attributes(self) -> dict[str, Any]:
        """The attributes of this op's ONNX node: those of its opset's schema that are set
        (tensors as TensorProtos)."""
        from onnx import numpy_helper

        declared, _ = schema_attributes(type(self).__name__, self.opset)
        return {k: numpy_helper.from_array(v) if isinstance(v, np.ndarray) else v
                for k in declared if (v := self.attrs.get(k)) is not None}

    def forward_graph(self, *inputs: Any) -> tuple:
        """The forward written as ONNX nodes on symbolic inputs (:mod:`onnxattr.compiled`), for
        an op that is not an ONNX op of the model's opset (those canonization makes): by default
        its own ``forward``, which writes its ONNX form wherever it uses only NumPy's arithmetic."""
        outs, _ = self.forward(*inputs)
        return outs

    def vjp_graph(self, ctx: Any, grads: Sequence[Any], needs: Sequence[bool]) -> Grads:
        """The vjp written as ONNX nodes (:mod:`onnxattr.compiled`): ``ctx`` holds the node's
        inputs and outputs as symbolic tensors (``ctx.inputs``, ``ctx.outputs``), ``grads`` are
        symbolic. By default the op's own ``forward`` and ``vjp`` run on them, which writes
        their ONNX form wherever they use only NumPy's arithmetic; an op whose code does more
        defines its own (or leaves the plan to the interpreter: NotCompilable)."""
        _, own = self.forward(*ctx.inputs)
        return self.vjp(own, grads, needs)

    def cotangents(self, ctx: Any, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        """The vjp with one cotangent per input: None past what it returns and where not needed."""
        gs = list(self.vjp(ctx, grads, needs))[: len(needs)]
        gs += [None] * (len(needs) - len(gs))
        return [g if need else None for g, need in zip(gs, needs)]


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

    def vjp_graph(self, ctx: Any, grads: Sequence[Any], needs: Sequence[bool]) -> Grads:
        """The vjp above on the node's own input and output (their derivative, e.g. a ReLU's
        mask, is then a forward value)."""
        return self.vjp((ctx.inputs[0], ctx.outputs[0]), grads, needs)


class Linear(Op):
    """A layer with weights: y = f(x; W, b), linear in x, with the data, weight and bias at the
    inputs ``data_input``, ``weight_input`` and ``bias_input`` (the LRP rules modify them)."""

    kind: ClassVar[str] = "linear"
    data_input: ClassVar[int] = 0
    weight_input: ClassVar[int] = 1
    bias_input: ClassVar[int] = 2


def check_broadcast(op: Op, shapes: Sequence[Shape | None]) -> None:
    """Refuse operands whose known dimensions do not broadcast (NumPy's rule, ONNX's from
    opset 7; older opsets' ``broadcast``/``axis`` attributes are left to the forward)."""
    if op.opset < 7:
        return
    known = [s for s in shapes if s is not None]
    rank = max((len(s) for s in known), default=0)
    for i in range(1, rank + 1):
        dims = {s[-i] for s in known if len(s) >= i and s[-i] is not None and s[-i] != 1}
        if len(dims) > 1:
            raise op.unsupported(f"operands of shapes {[list(s) for s in known]} do not broadcast")


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
