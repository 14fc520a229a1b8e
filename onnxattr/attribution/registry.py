"""The table of attribution methods, their documented options, and ``attribute``.

A method is a function ``fn(model, x, target, **options) -> relevance`` over device arrays,
registered with :func:`register` together with its options (name -> default and meaning).
A backprop method (one forward and one backward pass) also registers ``backprop``: given the
model and the options it returns the rule assignment and the seed, so that analyses can follow
its relevance through every layer (``Model.propagate(..., fetch=...)``).
``attribute`` checks the method name, the options, the input and the target before anything
runs, calls the method, and returns the map on the host with the input's shape.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .. import backend
from ..engine import Observer, RuleFor
from ..errors import OptionError
from ..model import Model


@dataclass(frozen=True)
class Option:
    """One keyword option of a method: its default and what it means."""

    default: Any
    doc: str


@dataclass(frozen=True)
class Backprop:
    """How a backprop method propagates: the rule for each node (None: the exact vjp), the seed
    at the output ("one": one-hot; "logit": the target logit's value, the LRP convention), and
    whether the relevance reaching the input is multiplied by the input (Gradient*Input)."""

    rule_for: RuleFor | None
    seed: str = "one"
    times_input: bool = False

    def run(self, model: Model, x: Any, target: np.ndarray | None, observer: Observer | None = None,
            fetch: Sequence[str] = ()) -> dict[str, Any]:
        """One forward and backward pass; the map under the input's name, plus fetched tensors."""
        out = model.propagate(x, target, self.rule_for, self.seed, observer, fetch)
        if self.times_input:
            out[model.input_name] = x * out[model.input_name]
        return out


@dataclass(frozen=True)
class Method:
    name: str
    fn: Callable[..., Any]
    options: dict[str, Option] = field(default_factory=dict)
    #: for backprop methods: (model, **options) -> Backprop
    backprop: Callable[..., Backprop] | None = None

    @property
    def doc(self) -> str:
        """The first paragraph of the method's docstring."""
        text = (self.fn.__doc__ or "").strip()
        return " ".join(text.split("\n\n")[0].split())


METHODS: dict[str, Method] = {}


def register(name: str, backprop: Callable[..., Backprop] | None = None,
             **options: Option) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn`` as the method ``name`` with its options (and, for a backprop method, the
    function that gives its rules)."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        METHODS[name] = Method(name, fn, dict(options), backprop)
        return fn

    return deco


def methods() -> dict[str, dict[str, Any]]:
    """Every method's name, summary and options (name -> {"default", "doc"})."""
    return {
        name: {
            "doc": m.doc,
            "options": {k: {"default": o.default, "doc": o.doc} for k, o in m.options.items()},
        }
        for name, m in sorted(METHODS.items())
    }


def lookup(name: str) -> Method:
    """The method called ``name``; OptionError with the closest names otherwise."""
    if not isinstance(name, str) or name not in METHODS:
        close = difflib.get_close_matches(str(name), list(METHODS), n=3)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise OptionError(f"unknown method {name!r}{hint} Known methods: {sorted(METHODS)}")
    return METHODS[name]


def resolve_options(method: Method, options: dict[str, Any]) -> dict[str, Any]:
    """The method's options with defaults filled in; OptionError for an unknown one."""
    unknown = sorted(set(options) - set(method.options))
    if unknown:
        known = sorted(method.options) or "none"
        raise OptionError(f"method {method.name!r} has no option {', '.join(map(repr, unknown))}; its options: {known}")
    return {k: options.get(k, o.default) for k, o in method.options.items()}


def attribute(model: Model, x: np.ndarray, target: Any = None, method: str = "gradient", **options: Any) -> np.ndarray:
    """Attribute the model's output at ``target`` to the input ``x``.

    Args:
        model: a model from :func:`onnxattr.load`.
        x: float32 batch in the model's own layout, batch first.
        target: an int, one int per sample, or None for each sample's argmax.
        method: a name from :func:`onnxattr.methods`.
        **options: the method's options (see ``onnxattr.methods()[method]["options"]``).

    Returns:
        The attribution map, a NumPy float32 array with ``x``'s shape.

    Example:
        >>> model = onnxattr.load("models/shapes_vgg_torch.onnx")
        >>> a = onnxattr.attribute(model, x, target=0, method="integrated_gradients", steps=64)
    """
    m = lookup(method)
    opts = resolve_options(m, options)
    x = model.check_input(x)
    t = model.check_target(target, x.shape[0])
    a = m.fn(model, model.xp.asarray(x), t, **opts)
    out = backend.to_host(a).astype(np.float32, copy=False)
    assert out.shape == x.shape, f"{method} returned shape {out.shape} for input {x.shape}"
    return out


@dataclass
class LayerTrace:
    """Relevance through one node: per-sample sums of what reached its outputs and what it
    passed to its inputs; ``conserved`` = sum_in / sum_out (1 for a conservative rule)."""

    node: str
    op_type: str
    relevance_out: np.ndarray
    relevance_in: np.ndarray

    @property
    def conserved(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.relevance_in / self.relevance_out


@dataclass
class Trace:
    """An attribution map with the relevance that flowed through every node, in backward order."""

    attribution: np.ndarray
    layers: list[LayerTrace]

    def conservation(self) -> dict[str, np.ndarray]:
        """Node name -> per-sample fraction of relevance it conserved."""
        return {t.node: t.conserved for t in self.layers}


def trace(model: Model, x: np.ndarray, target: Any = None, method: str = "lrp.epsilon_plus_flat",
          **options: Any) -> Trace:
    """Run a backprop method (see ``attribute``) and record, per node, the relevance that reached
    it and the relevance it passed on. For debugging rules and for layer-wise analyses."""
    m = lookup(method)
    if m.backprop is None:
        raise OptionError(f"method {method!r} is not a single backward pass; trace needs one of "
                          f"{sorted(k for k, v in METHODS.items() if v.backprop is not None)}")
    opts = resolve_options(m, options)
    x = model.check_input(x)
    t = model.check_target(target, x.shape[0])
    layers: list[LayerTrace] = []

    def observe(node: Any, grads_out: Sequence[Any], grads_in: Sequence[Any]) -> None:
        n = x.shape[0]
        total = lambda gs: sum(  # noqa: E731
            (backend.to_host(g.reshape(g.shape[0], -1).sum(axis=1)) for g in gs if g is not None and g.shape[:1] == (n,)),
            np.zeros(n),
        )
        live = [g for g, i in zip(grads_in, node.inputs) if i in model.graph.live]
        layers.append(LayerTrace(node.name, node.op_type, total(grads_out), total(live)))

    out = m.backprop(model, **opts).run(model, model.xp.asarray(x), t, observe)
    return Trace(backend.to_host(out[model.input_name]).astype(np.float32), layers)
