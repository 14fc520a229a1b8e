"""The table of attribution methods, their documented options, ``attribute``, and the one lookup
of a method's propagation plan.

A method is a function ``fn(model, feeds, target, **options) -> relevance`` over device arrays,
registered with :func:`register` together with its options (:class:`Option`: default, meaning,
allowed values, checked in :func:`resolve_options`). ``feeds`` holds the batch at the attributed
tensor under ``model.input_name`` and every input held fixed (:meth:`Model.at_wrt`); the
relevance has the shape of ``feeds[model.input_name]``.
A method that is one forward and one backward pass also registers ``plan``: given the model and
the options it returns the :class:`~onnxattr.plan.Plan` (rules, seed, times_input), so that
analyses can follow its relevance through every layer (:func:`plan_of`, then
``Model.propagate(..., fetch=...)``).
``attribute`` checks the method name, the options, the input and the target before anything
runs, calls the method, and returns the map on the host with the input's shape. A map with a
NaN or an infinity is refused (:func:`check_finite`): option values that each pass their check
(a baseline or a ZBox bound near float32's max, a huge gamma) can still put the forward or the
rule's sums past float32's range, and a NaN map must not pass for an explanation.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from .. import backend
from ..errors import InputError, OptionError
from .options import Option

if TYPE_CHECKING:
    from ..model import Model
    from ..plan import Plan


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


#: what every method's ``target`` may be (shown by :func:`methods`)
TARGETS = ("an int, one int per sample, or None (each sample's argmax); for an output of shape "
           "(B, T, V), read as (batch, position, class): None (the argmax at the last position whose "
           "attention_mask is 1, else T-1), B (position, index) pairs, or an int array (B, 2); a bare "
           "pair is refused")


def methods() -> dict[str, dict[str, Any]]:
    """Every method's name, summary, options (name -> {"default", "doc", "allowed"}) and what its
    ``target`` may be."""
    return {
        name: {
            "doc": m.doc,
            "options": {k: {"default": o.default, "doc": o.doc, "allowed": o.check.describe()}
                        for k, o in m.options.items()},
            "target": TARGETS,
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
    """The method's options with defaults filled in, each checked (type, range, finite) by its
    :class:`~onnxattr.attribution.options.Option`; OptionError for an unknown or bad one."""
    unknown = sorted(set(options) - set(method.options))
    if unknown:
        known = sorted(method.options) or "none"
        raise OptionError(f"method {method.name!r} has no option {', '.join(map(repr, unknown))}; its options: {known}")
    return {k: o.validate(method.name, k, options.get(k, o.default)) for k, o in method.options.items()}


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


def attribute(model: Model, x: Any, target: Any = None, method: str = "gradient", **options: Any) -> np.ndarray:
    """Attribute the model's output at ``target`` to its input, or to its ``wrt`` tensor.

    Args:
        model: a model from :func:`onnxattr.load`.
        x: a dict {graph input name: array}, or one array where the model has one input: float32
            batches in the model's own layout, batch first. Integer and boolean inputs (token ids,
            attention masks, token types, positions) and every input that is not the one
            attributed to are held fixed at the values given (Captum's layer attribution).
        target: an int, one int per sample, or None for each sample's argmax. For an output of
            shape (B, T, V), read as (batch, position, class): None (per sample the argmax at
            the last position whose attention_mask is 1, else T-1), a sequence of B
            (position, index) pairs, or an int array (B, 2); a bare pair is refused.
        method: a name from :func:`onnxattr.methods`.
        **options: the method's options (see ``onnxattr.methods()[method]["options"]``).

    Returns:
        The attribution map, a NumPy float32 array with the attributed tensor's shape: the
        input's, or the ``wrt`` tensor's ((B, T, H) for token embeddings; see
        :func:`onnxattr.token_scores`).

    Example:
        >>> model = onnxattr.load("models/torch_vgg_op11.onnx")
        >>> a = onnxattr.attribute(model, x, target=0, method="integrated_gradients", steps=64)
    """
    m = lookup(method)
    opts = resolve_options(m, options)
    feeds = model.at_wrt(model.check_feeds(x))
    x0 = feeds[model.input_name]
    t = model.check_target(target, x0.shape[0])
    a = m.fn(model, feeds, t, **opts)
    out = backend.to_host(a).astype(np.float32, copy=False)
    assert out.shape == x0.shape, f"{method} returned shape {out.shape} for {model.input_name!r} {x0.shape}"
    check_finite(model, feeds, m, opts, out)
    return out


def _shown(v: Any) -> str:
    """An option value in an error message: a number as is, an array by its shape and largest |value|."""
    if np.ndim(v) == 0 and not isinstance(v, (str, bytes)):
        return repr(v.item() if hasattr(v, "item") else v)
    try:
        a = np.abs(np.asarray(backend.to_host(v), dtype=np.float64))
        return f"array of shape {a.shape}" + (f" (largest |value| {a.max():g})" if a.size else "")
    except (TypeError, ValueError):
        return type(v).__name__


def _is_default(value: Any, default: Any) -> bool:
    try:
        return bool(np.ndim(value) == 0 and value == default)
    except (TypeError, ValueError):
        return False


def check_finite(model: Model, feeds: Mapping[str, Any], method: Method, opts: Mapping[str, Any], out: np.ndarray) -> None:
    """Refuse a map holding NaN or infinite values, naming the cause: the input where the
    model's own output at it is not finite, or where every option has its default (InputError),
    else the method and its options that differ from their defaults (OptionError: values that
    each pass their check but together put the computation past float32's range)."""
    if np.isfinite(out).all():
        return
    bad = int(np.size(out) - np.isfinite(out).sum())
    what = f"{method.name} gave a map with {bad} NaN or infinite value(s) of {out.size}"
    if not np.isfinite(backend.to_host(model.forward(feeds))).all():
        raise InputError(f"{what}: the model's output at {model.input_name!r} is itself not finite "
                         "(the input overflows the model's forward in float32)")
    changed = [f"{k}={_shown(v)}" for k, v in opts.items() if not _is_default(v, method.options[k].default)]
    if not changed:
        raise InputError(f"{what} at {model.input_name!r} with its default options: the input's values put the "
                         "backward pass past float32's range")
    raise OptionError(f"{what} with option {', '.join(changed)}: these values put the model's forward or the "
                      "rule's sums past float32's range (about 3.4e38); choose smaller magnitudes")


def token_scores(a: np.ndarray) -> np.ndarray:
    """One score per token: a (B, T, H) attribution at the token embeddings (``wrt="embeddings"``)
    summed over the hidden axis, (B, T). The sum keeps conservation: the token scores add up to
    what the map adds up to (f_t(x) - f_t(baseline) for IG, f_t(x) for a conservative LRP rule)."""
    a = backend.to_host(a)
    if a.ndim != 3:
        raise InputError(f"token_scores takes a (B, T, H) attribution at the token embeddings; got shape {a.shape}")
    return a.sum(axis=2)
