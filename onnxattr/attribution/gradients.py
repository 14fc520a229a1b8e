"""Gradient-based methods: gradient, Gradient*Input, Integrated Gradients, SmoothGrad.

All run our exact backward pass (the ops' vjps). Integrated Gradients and SmoothGrad put their
many inputs through the engine in batches of ``batch_size``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .. import backend
from ..errors import InputError, OptionError
from ..feeds import n_rows, rows, stack
from ..plan import Plan
from ..rng import sample_rng
from .options import BATCH_SIZE, MAX_STEPS, Anything, Choice, Int, Numeric, Option, Real
from .registry import register

if TYPE_CHECKING:
    from ..model import Model
    from ..ops.base import Array

#: device feeds of an attribution: {model.input_name: the batch at the attributed tensor, and
#: every input held fixed} (:meth:`onnxattr.model.Model.at_wrt`), or that batch alone
Feeds = Any

INTEGRATIONS = ("riemann_trapezoid", "trapezoid", "riemann_left", "riemann_right", "riemann_middle", "gausslegendre")

def pass_batch(model: Model, x: Array, batch_size: int | None) -> int:
    """The ``batch_size`` option (checked by its Option), or the model's choice where it is None."""
    return model.pass_size(x) if batch_size is None else int(batch_size)


EXACT = Plan()
EXACT_TIMES_INPUT = Plan(times_input=True, name="input_x_gradient")


def gradient_of(model: Model, feeds: Feeds, target: np.ndarray | None) -> Array:
    """d f_target / dx at the attributed tensor x for device feeds."""
    return model.propagate(feeds, target, EXACT)[model.input_name]


def target_at(model: Model, feeds: Feeds, target: np.ndarray | None) -> np.ndarray:
    """The per-sample target, taking the argmax at ``feeds`` where none is given."""
    if target is not None:
        return target
    feeds = model.feeds(feeds)
    return model.resolve_target(None, model.forward(feeds), feeds)


def tile_target(t: np.ndarray, k: int) -> np.ndarray:
    """The targets of k copies of a batch stacked copy-major ((n,) or (n, 2) targets)."""
    return np.tile(t, (k,) + (1,) * (t.ndim - 1))


@register("gradient", plan=lambda model: EXACT)
def gradient(model: Model, x: Feeds, target: np.ndarray | None) -> Array:
    """Gradient (saliency): R = d f_t(x) / dx.

    Simonyan, Vedaldi & Zisserman 2014, "Deep inside convolutional networks". Signed; take the
    absolute value for the classic saliency map.
    """
    return gradient_of(model, x, target)


@register("input_x_gradient", plan=lambda model: EXACT_TIMES_INPUT)
def input_x_gradient(model: Model, x: Feeds, target: np.ndarray | None) -> Array:
    """Gradient*Input: R = x * d f_t(x) / dx.

    Shrikumar et al. 2016; equal to eps-LRP on ReLU networks as eps -> 0 (Ancona et al. 2018).
    """
    return model.propagate(x, target, EXACT_TIMES_INPUT)[model.input_name]


def path_points(steps: int, integration: str) -> tuple[np.ndarray, np.ndarray]:
    """Points alpha_k on [0, 1] and weights w_k of the quadrature.

    riemann_trapezoid (Captum's): alpha = linspace(0, 1, steps), w = 1/steps with the two ends
    halved. Its weights sum to (steps - 1)/steps, so the attributions sum to that fraction of
    f(x) - f(b) even on a linear model; kept as the default so results equal Captum's.
    trapezoid: the same points with w = 1/(steps - 1), ends halved (weights sum to 1).
    riemann_left/right/middle: the left, right or middle points with w = 1/steps (Captum's).
    gausslegendre: Gauss-Legendre nodes and weights mapped to [0, 1] (Captum's).
    """
    if not isinstance(steps, (int, np.integer)) or not 2 <= steps <= MAX_STEPS:
        raise OptionError(f"steps must be an int in [2, {MAX_STEPS}], got {steps!r}")
    n = int(steps)
    w = np.full(n, 1.0 / n)
    if integration == "riemann_trapezoid":
        alphas = np.linspace(0.0, 1.0, n)
        w[0] /= 2
        w[-1] /= 2
    elif integration == "trapezoid":
        alphas = np.linspace(0.0, 1.0, n)
        w = np.full(n, 1.0 / (n - 1))
        w[0] /= 2
        w[-1] /= 2
    elif integration == "riemann_left":
        alphas = np.linspace(0.0, 1.0 - 1.0 / n, n)
    elif integration == "riemann_right":
        alphas = np.linspace(1.0 / n, 1.0, n)
    elif integration == "riemann_middle":
        alphas = np.linspace(0.5 / n, 1.0 - 0.5 / n, n)
    elif integration == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        alphas, w = (nodes + 1) / 2, weights / 2
    else:
        raise OptionError(
            f"unknown integration {integration!r}; choose riemann_trapezoid, trapezoid, "
            "riemann_left, riemann_right, riemann_middle or gausslegendre"
        )
    return alphas, w


def baseline_array(model: Model, x: Array, baseline: Any) -> Array:
    """The baseline as a device array broadcastable to ``x``: a number or an array (finite and
    not masked: checked by its Option)."""
    xp = model.xp
    if isinstance(baseline, (int, float, np.integer, np.floating)):
        return xp.asarray(np.float32(baseline))
    b = backend.to_host(baseline)
    try:
        np.broadcast_shapes(b.shape, x.shape)
    except ValueError:
        raise InputError(f"baseline of shape {b.shape} does not broadcast to {model.input_name!r}'s "
                         f"{tuple(x.shape)}") from None
    return xp.asarray(b.astype(np.float32))


def baseline_of(model: Model, feeds: Feeds, baseline: Any, baseline_token: int | None) -> Array:
    """The baseline given as ``baseline``, or as ``baseline_token``: the attributed tensor with
    every token id replaced by that token (its embedding at every position, for
    wrt='embeddings'). Both at once is an OptionError."""
    x = feeds[model.input_name]
    if baseline_token is None:
        return baseline_array(model, x, baseline)
    if not (isinstance(baseline, (int, float)) and baseline == 0):
        raise OptionError("give baseline= or baseline_token=, not both")
    return model.token_baseline(feeds, int(baseline_token))


def batched_gradients(model: Model, feeds: Feeds, target: np.ndarray, batch_size: int) -> Array:
    """Gradients of a long stack of feeds (targets given per row), ``batch_size`` at a time."""
    n = n_rows(feeds)
    parts = [gradient_of(model, rows(feeds, i, i + batch_size), target[i : i + batch_size])
             for i in range(0, n, batch_size)]
    return parts[0] if len(parts) == 1 else model.xp.concatenate(parts)


@register(
    "integrated_gradients",
    baseline=Option(0.0, "reference input: a number or an array broadcastable to the attributed tensor",
                    Numeric()),
    baseline_token=Option(None, "at wrt='embeddings' (or a tensor computed from token ids): the baseline "
                          "is that token's embedding at every position; None: use baseline", Int(0, None, none=True)),
    steps=Option(32, "number of points on the path from baseline to input", Int(2, MAX_STEPS)),
    integration=Option("riemann_trapezoid", "quadrature: riemann_trapezoid (Captum's; weights sum "
                       "to (steps-1)/steps), trapezoid, riemann_left, riemann_right, riemann_middle "
                       "or gausslegendre", Choice(INTEGRATIONS)),
    batch_size=BATCH_SIZE,
)
def integrated_gradients(model: Model, x: Feeds, target: np.ndarray | None, baseline: Any,
                         baseline_token: int | None, steps: int, integration: str,
                         batch_size: int | None) -> Array:
    """Integrated Gradients: R = (x - b) * sum_k w_k d f_t(b + alpha_k (x - b)) / dx.

    Sundararajan, Taly & Yan 2017, "Axiomatic attribution for deep networks". Points and weights
    follow Captum's quadrature rules, so results match ``captum.attr.IntegratedGradients``. At a
    ``wrt`` tensor the path runs there, the inputs held fixed (Captum's LayerIntegratedGradients).
    Memory: one pass of at most ``batch_size`` path points at a time.
    """
    feeds, xp = x, model.xp
    x = feeds[model.input_name]
    batch_size = pass_batch(model, x, batch_size)
    b = baseline_of(model, feeds, baseline, baseline_token)
    t = target_at(model, feeds, target)
    alphas, weights = path_points(steps, integration)
    n = x.shape[0]
    diff = x - b
    total = xp.zeros_like(x)
    per_pass = max(1, batch_size // n)  # whole steps per pass, so targets stay aligned
    for k0 in range(0, len(alphas), per_pass):
        a = xp.asarray(alphas[k0 : k0 + per_pass].astype(np.float32))
        w = xp.asarray(weights[k0 : k0 + per_pass].astype(np.float32))
        pts = (b + a.reshape((-1,) + (1,) * x.ndim) * diff).reshape((-1,) + x.shape[1:])
        g = batched_gradients(model, stack(feeds, model.input_name, pts), tile_target(t, len(a)), batch_size)
        total += (g.reshape((len(a),) + x.shape) * w.reshape((-1,) + (1,) * x.ndim)).sum(axis=0)
    return diff * total


@register(
    "smoothgrad",
    samples=Option(32, "number of noisy copies of each input", Int(1, MAX_STEPS)),
    noise_level=Option(0.15, "noise standard deviation as a fraction of each sample's value range at the "
                       "attributed tensor", Real(0.0, 100.0)),
    seed=Option(0, "seed of the noise: sample i's noise comes from sample_rng(seed, indices[i])",
                Int(0, 2**63 - 1)),
    indices=Option(None, "each sample's index in the whole data set (None: 0..B-1), so that the noise of a "
                   "sample does not depend on the batch it is in", Anything()),
    base_method=Option("gradient", "what is averaged: 'gradient' or 'input_x_gradient'",
                       Choice(("gradient", "input_x_gradient"))),
    batch_size=BATCH_SIZE,
)
def smoothgrad(model: Model, x: Feeds, target: np.ndarray | None, samples: int, noise_level: float,
               seed: int, indices: Any, base_method: str, batch_size: int | None) -> Array:
    """SmoothGrad: R = 1/n sum_k g(x + e_k), e_k ~ N(0, (noise_level * (max x - min x))^2).

    Smilkov et al. 2017, "SmoothGrad: removing noise by adding noise". With
    base_method='input_x_gradient' it averages (x + e_k) * g(x + e_k). The noise of sample i is
    the first ``samples`` standard-normal draws of shape x[i] (float32) from
    ``sample_rng(seed, indices[i])``, copy after copy, so that neither the batch a sample is in
    nor ``batch_size`` changes its map. At a ``wrt`` tensor the range is that tensor's.
    """
    feeds, xp = x, model.xp
    x = feeds[model.input_name]
    n = x.shape[0]
    index = sample_indices(indices, n)
    batch_size = pass_batch(model, x, batch_size)
    t = target_at(model, feeds, target)
    flat = x.reshape(n, -1)
    sigma = (noise_level * (flat.max(axis=1) - flat.min(axis=1))).reshape((1, n) + (1,) * (x.ndim - 1))
    rngs = [sample_rng(seed, int(i)) for i in index]
    total = xp.zeros_like(x)
    per_pass = max(1, batch_size // n)  # whole copies of the batch per pass
    for k0 in range(0, samples, per_pass):
        k = min(per_pass, samples - k0)
        draws = np.stack([r.standard_normal((k,) + tuple(x.shape[1:]), dtype=np.float32) for r in rngs], axis=1)
        noisy = (x + xp.asarray(draws) * sigma).reshape((-1,) + x.shape[1:])
        g = batched_gradients(model, stack(feeds, model.input_name, noisy), tile_target(t, k), batch_size)
        if base_method == "input_x_gradient":
            g = g * noisy
        total += g.reshape((k,) + x.shape).sum(axis=0)
    return total / samples


def sample_indices(indices: Any, n: int) -> np.ndarray:
    """``indices`` as n distinct non-negative ints (None: 0..n-1); OptionError otherwise."""
    if indices is None:
        return np.arange(n)
    idx = np.asarray(indices)
    if idx.shape != (n,) or idx.dtype.kind not in "iu" or (idx < 0).any() or len(np.unique(idx)) != n:
        raise OptionError(f"option indices must be {n} distinct non-negative ints (one per sample), got {indices!r}")
    return idx
