"""The table of attribution methods, their documented options, ``attribute``, and the one lookup
of a method's propagation plan.

A method is a function ``fn(model, x, target, **options) -> relevance`` over device arrays,
registered with :func:`register` together with its options (name -> default and meaning).
A method that is one forward and one backward pass also registers ``plan``: given the model and
the options it returns the :class:`~onnxattr.plan.Plan` (rules, seed, times_input), so that
analyses can follow its relevance through every layer (:func:`plan_of`, then
``Model.propagate(..., fetch=...)``).
``attribute`` checks the method name, the options, the input and the target before anything
runs, calls the method, and returns the map on the host with the input's shape.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from .. import backend
from ..errors import OptionError

if TYPE_CHECKING:
    from ..model import Model
    from ..plan import Plan


@dataclass(frozen=True)
class Option:
    """One keyword option of a method: its default and what it means."""

    default: Any
    doc: str


@dataclass(frozen=True)
class Method:
    name: str
    fn: Callable[..., Any]
    options: dict[str, Option] = field(default_factory=dict)
    #: for methods that are one backward pass: (model, **options) -> Plan
    plan: Callable[..., Plan] | None = None

    @property
    def doc(self) -> str:
        """The first paragraph of the method's docstring."""
        text = (self.fn.__doc__ or "").strip()
        return " ".join(text.split("\n\n")[0].split())


METHODS: dict[str, Method] = {}


def register(name: str, plan: Callable[..., Plan] | None = None,
             **options: Option) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn`` as the method ``name`` with its options (and, for a method that is one
    backward pass, the function that gives its plan)."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        METHODS[name] = Method(name, fn, dict(options), plan)
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


def plan_of(model: Model, method: str, options: Mapping[str, Any], what: str) -> Plan:
    """The propagation plan of ``method`` with ``options`` on ``model``'s graph.

    ``what`` names the caller in the OptionError raised for a method that is not one backward
    pass (Integrated Gradients, SmoothGrad, Occlusion, DeepLIFT), which lists the ones that are."""
    m = lookup(method)
    if m.plan is None:
        usable = sorted(k for k, v in METHODS.items() if v.plan is not None)
        raise OptionError(f"{what} follows relevance through the layers, which needs a method that is "
                          f"a single backward pass; {method!r} is not a single backward pass. Use one of {usable}")
    return m.plan(model, **resolve_options(m, dict(options)))


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
        >>> model = onnxattr.load("models/torch_vgg_op11.onnx")
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
