"""Gradient-based methods: gradient, Gradient*Input, Integrated Gradients, SmoothGrad.

All run our exact backward pass (the ops' vjps). Integrated Gradients and SmoothGrad put their
many inputs through the engine in batches of ``batch_size``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError, OptionError
from ..plan import Plan
from .registry import Option, register

if TYPE_CHECKING:
    from ..model import Model
    from ..ops.base import Array

BATCH_SIZE = Option(None, "largest number of inputs per forward/backward pass; None: up to 64, as "
                         "many as keep each activation within 32 MiB on the CPU (Model.pass_size)")


def pass_batch(model: Model, x: Array, batch_size: int | None) -> int:
    """The ``batch_size`` option checked, or the model's choice where it is None."""
    if batch_size is None:
        return model.pass_size(x)
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise OptionError(f"batch_size must be a positive int or None, got {batch_size!r}")
    return int(batch_size)


EXACT = Plan()
EXACT_TIMES_INPUT = Plan(times_input=True, name="input_x_gradient")


def gradient_of(model: Model, x: Array, target: np.ndarray | None) -> Array:
    """d f_target / dx for a device batch."""
    return model.propagate(x, target, EXACT)[model.input_name]


def target_at(model: Model, x: Array, target: np.ndarray | None) -> np.ndarray:
    """The per-sample target, taking the argmax at ``x`` where none is given."""
    if target is not None:
        return target
    return model.resolve_target(None, model.forward(x))


@register("gradient", plan=lambda model: EXACT)
def gradient(model: Model, x: Array, target: np.ndarray | None) -> Array:
    """Gradient (saliency): R = d f_t(x) / dx.

    Simonyan, Vedaldi & Zisserman 2014, "Deep inside convolutional networks". Signed; take the
    absolute value for the classic saliency map.
    """
    return gradient_of(model, x, target)


@register("input_x_gradient", plan=lambda model: EXACT_TIMES_INPUT)
def input_x_gradient(model: Model, x: Array, target: np.ndarray | None) -> Array:
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
    if not isinstance(steps, (int, np.integer)) or steps < 2:
        raise OptionError(f"steps must be an int >= 2, got {steps!r}")
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
    """The baseline as a device array broadcastable to ``x``: a number or an array."""
    xp = model.xp
    if isinstance(baseline, (int, float, np.integer, np.floating)):
        return xp.asarray(np.float32(baseline))
    b = np.asarray(baseline.get() if hasattr(baseline, "get") and not isinstance(baseline, np.ndarray) else baseline)
    if b.dtype.kind not in "fiu":
        raise InputError(f"baseline must be a number or a numeric array, got dtype {b.dtype}")
    try:
        np.broadcast_shapes(b.shape, x.shape)
    except ValueError:
        raise InputError(f"baseline of shape {b.shape} does not broadcast to the input's {x.shape}") from None
    if not np.isfinite(b).all():
        raise InputError("baseline contains NaN or infinite values")
    return xp.asarray(b.astype(np.float32))


def batched_gradients(model: Model, inputs: Array, target: np.ndarray, batch_size: int) -> Array:
    """Gradients of a long stack of inputs (targets given per row), ``batch_size`` at a time."""
    parts = [
        gradient_of(model, inputs[i : i + batch_size], target[i : i + batch_size])
        for i in range(0, inputs.shape[0], batch_size)
    ]
    return parts[0] if len(parts) == 1 else model.xp.concatenate(parts)


@register(
    "integrated_gradients",
    baseline=Option(0.0, "reference input: a number or an array broadcastable to x"),
    steps=Option(32, "number of points on the path from baseline to input"),
    integration=Option("riemann_trapezoid", "quadrature: riemann_trapezoid (Captum's; weights sum "
                       "to (steps-1)/steps), trapezoid, riemann_left, riemann_right, riemann_middle "
                       "or gausslegendre"),
    batch_size=BATCH_SIZE,
)
def integrated_gradients(model: Model, x: Array, target: np.ndarray | None, baseline: Any,
                         steps: int, integration: str, batch_size: int | None) -> Array:
    """Integrated Gradients: R = (x - b) * sum_k w_k d f_t(b + alpha_k (x - b)) / dx.

    Sundararajan, Taly & Yan 2017, "Axiomatic attribution for deep networks". Points and weights
    follow Captum's quadrature rules, so results match ``captum.attr.IntegratedGradients``.
    """
    xp = model.xp
    batch_size = pass_batch(model, x, batch_size)
    b = baseline_array(model, x, baseline)
    t = target_at(model, x, target)
    alphas, weights = path_points(steps, integration)
    n = x.shape[0]
    diff = x - b
    total = xp.zeros_like(x)
    per_pass = max(1, batch_size // n)  # whole steps per pass, so targets stay aligned
    for k0 in range(0, len(alphas), per_pass):
        a = xp.asarray(alphas[k0 : k0 + per_pass].astype(np.float32))
        w = xp.asarray(weights[k0 : k0 + per_pass].astype(np.float32))
        pts = (b + a.reshape((-1,) + (1,) * x.ndim) * diff).reshape((-1,) + x.shape[1:])
        g = batched_gradients(model, pts, np.tile(t, len(a)), batch_size)
        total += (g.reshape((len(a),) + x.shape) * w.reshape((-1,) + (1,) * x.ndim)).sum(axis=0)
    return diff * total


@register(
    "smoothgrad",
    samples=Option(32, "number of noisy copies of each input"),
    noise_level=Option(0.15, "noise standard deviation as a fraction of each input's value range"),
    seed=Option(0, "seed of the noise"),
    base_method=Option("gradient", "what is averaged: 'gradient' or 'input_x_gradient'"),
    batch_size=BATCH_SIZE,
)
def smoothgrad(model: Model, x: Array, target: np.ndarray | None, samples: int, noise_level: float,
               seed: int, base_method: str, batch_size: int | None) -> Array:
    """SmoothGrad: R = 1/n sum_k g(x + e_k), e_k ~ N(0, (noise_level * (max x - min x))^2).

    Smilkov et al. 2017, "SmoothGrad: removing noise by adding noise". With
    base_method='input_x_gradient' it averages (x + e_k) * g(x + e_k).
    """
    if base_method not in ("gradient", "input_x_gradient"):
        raise OptionError(f"base_method must be 'gradient' or 'input_x_gradient', got {base_method!r}")
    if not isinstance(samples, (int, np.integer)) or samples < 1:
        raise OptionError(f"samples must be a positive int, got {samples!r}")
    if not noise_level >= 0:
        raise OptionError(f"noise_level must be >= 0, got {noise_level!r}")
    xp = model.xp
    batch_size = pass_batch(model, x, batch_size)
    t = target_at(model, x, target)
    n = x.shape[0]
    flat = x.reshape(n, -1)
    sigma = (noise_level * (flat.max(axis=1) - flat.min(axis=1))).reshape((1, n) + (1,) * (x.ndim - 1))
    rng = np.random.default_rng(seed)
    total = xp.zeros_like(x)
    per_pass = max(1, batch_size // n)  # whole copies of the batch per pass; noise drawn per pass
    for k0 in range(0, samples, per_pass):
        k = min(per_pass, samples - k0)
        noise = xp.asarray(rng.standard_normal((k,) + tuple(x.shape)).astype(np.float32))
        noisy = (x + noise * sigma).reshape((-1,) + x.shape[1:])
        g = batched_gradients(model, noisy, np.tile(t, k), batch_size)
        if base_method == "input_x_gradient":
            g = g * noisy
        total += g.reshape((k,) + x.shape).sum(axis=0)
    return total / samples
