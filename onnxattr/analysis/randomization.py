"""Sanity checks for saliency maps (Adebayo, Gilmer, Muelly, Goodfellow, Hardt & Kim 2018): does
the map change when the model's weights or the explained class change?

- :func:`randomization_test`: the model-parameter randomization test, cascading or independent.
- :func:`class_sensitivity`: similarity between the maps of the predicted class and of others.

The loaded model is never changed: randomization works on a shallow copy of the Model whose
``params`` is a new dict, in which the randomized tensors are new arrays. ``x`` is what
:func:`onnxattr.attribute` takes: one array, or a dict {input name: array} (a text model, a
model attributed at a ``wrt`` tensor, whose maps have that tensor's shape).

How maps are compared (per sample): a 4-D image batch (layout told or inferred) is reduced to
2-D maps, the signed one sum_c R and the absolute one sum_c |R| (Adebayo et al.'s "no abs" and
"abs" grayscale maps); a 3-D batch is taken as 2-D maps, and any other rank is flattened to 1-D
vectors. ``spearman`` is the Spearman rank correlation of the signed maps, ``spearman_abs`` of
the absolute ones, and ``ssim`` the SSIM (Wang et al. 2004; Gaussian 11x11 window) of the
absolute maps, each min-max normalised to [0, 1] (on 1-D vectors a 1-D window is used).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from .. import backend
from ..errors import InputError, OptionError
from ..feeds import n_rows
from ..layout import channel_axis, check_layout
from ..attribution.registry import attribute
from .faithfulness import flat
from .similarity import cosine, minmax, spearman, ssim

if TYPE_CHECKING:
    from ..model import Model

MODES = ("cascading", "independent")
#: op types whose constant inputs are weights, besides the ops of kind "linear" (Conv, Gemm,
#: ConvTranspose, Affine)
WEIGHT_OPS = ("MatMul", "BatchNormalization")


def weight_layers(model: Model) -> list[tuple[str, list[str]]]:
    """(node name, names of its float parameters), for each layer with weights on the live path,
    from the top (output side) to the bottom: nodes of kind ``linear`` and MatMul /
    BatchNormalization nodes, with their constant float inputs (weights and biases)."""
    g = model.graph
    layers = []
    for n in g.nodes:
        if (n.kind != "linear" and n.op_type not in WEIGHT_OPS) or not any(t in g.live for t in n.inputs):
            continue
        params = [t for t in n.inputs
                  if t and t not in g.live and t in model.params and model.params[t].dtype.kind == "f"]
        if params:
            layers.append((n.name, params))
    return layers[::-1]


def randomized(model: Model, tensors: list[str], rng: np.random.Generator, base: Model | None = None) -> Model:
    """A copy of ``base`` (default ``model``) in which each tensor of ``tensors`` is redrawn from
    N(0, std^2), std the standard deviation of ``model``'s original tensor (|w| for a scalar;
    a tensor with std 0, e.g. a zero bias, becomes 0). ``model`` is not changed."""
    base = model if base is None else base
    out = copy.copy(base)
    out.params = dict(base.params)
    for t in tensors:
        w = backend.to_host(model.params[t])
        std = float(np.abs(w).max()) if w.size == 1 else float(w.std())
        new = (rng.standard_normal(w.shape) * std).astype(w.dtype)
        out.params[t] = backend.to_device(new, model.device)
    return out


def _views(a: np.ndarray, layout: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The signed and absolute maps that are compared (see the module docstring)."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 4:
        ax = channel_axis(check_layout(layout, a.shape))
        return a.sum(axis=ax), np.abs(a).sum(axis=ax)
    if a.ndim != 3:
        a = a.reshape(a.shape[0], -1)
    return a, np.abs(a)


@dataclass
class Randomization:
    """The randomization test. ``layers``: node names from the top (output side) down; row k is
    the map after randomizing layers[:k+1] (cascading) or layers[k] alone (independent).
    ``spearman``, ``spearman_abs``, ``ssim``: (L, N) against ``original`` (the loaded model's map).
    ``target``: the classes explained (fixed by the loaded model). ``maps``: (L, *x.shape) with
    ``keep_maps``, else None."""

    mode: str
    layers: list[str]
    spearman: np.ndarray
    spearman_abs: np.ndarray
    ssim: np.ndarray
    original: np.ndarray
    target: np.ndarray
    maps: np.ndarray | None = None


def compare(reference: np.ndarray, other: np.ndarray,
            layout: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Spearman of the signed maps, Spearman of the absolute maps, SSIM of the absolute maps
    min-max normalised), per sample."""
    s0, a0 = _views(reference, layout)
    s1, a1 = _views(other, layout)
    return spearman(s0, s1), spearman(a0, a1), ssim(minmax(a0), minmax(a1))


def randomization_test(model: Model, x: np.ndarray | Mapping[str, np.ndarray], target: Any = None, method: str = "gradient",
                       mode: str = "cascading", seed: int = 0, layout: str | None = None,
                       keep_maps: bool = False, **options: Any) -> Randomization:
    """Model-parameter randomization test (Adebayo et al. 2018, "Sanity checks for saliency maps").

    The weight layers (see :func:`weight_layers`; a BatchNorm fused into its Conv/Gemm is part of
    that layer's weights) are re-initialised one at a time from the top (the logits) to the
    bottom, each tensor with N(0, std^2) of the original's std (:func:`randomized`). In
    ``"cascading"`` mode the earlier randomizations are kept, so the last row is a fully random
    network; in ``"independent"`` mode only one layer is random at a time. After each step the
    map (same method, options, and target as the original: the given one, or the loaded model's
    argmax) is compared with the original map (module docstring: Spearman signed and absolute,
    SSIM). A map that does not change when the weights do cannot explain what the model learned.

    Args:
        model, x, target: as in :func:`onnxattr.attribute`.
        method: any method name; ``options`` are its options.
        mode: "cascading" (default) or "independent".
        seed: seed of the new weights.
        layout: of 4-D maps (inferred by default).
        keep_maps: also return every randomized map.
    Returns:
        :class:`Randomization`.
    """
    if mode not in MODES:
        raise OptionError(f"unknown mode {mode!r}; choose one of {MODES}")
    x = model.check_feeds(x)
    t = model.check_target(target, n_rows(x))
    if t is None:
        t = model.resolve_target(None, model(x))
    original = attribute(model, x, target=t, method=method, **options)
    layers = weight_layers(model)
    if not layers:
        raise InputError("the model has no layer with weights to randomize")
    rng = np.random.default_rng(seed)
    current = model
    rows, maps = [], []
    for _, params in layers:
        current = randomized(model, params, rng, base=current if mode == "cascading" else model)
        a = attribute(current, x, target=t, method=method, **options)
        rows.append(compare(original, a, layout))
        if keep_maps:
            maps.append(a)
    sp, sp_abs, ss = (np.stack(r) for r in zip(*rows))
    return Randomization(mode, [name for name, _ in layers], sp, sp_abs, ss, original, t,
                         np.stack(maps) if keep_maps else None)


@dataclass
class ClassSensitivity:
    """Maps of other classes against the predicted class's map, per sample: ``predicted`` (N,)
    and ``least`` (N,) (the least likely class), ``spearman_least``/``cosine_least`` (N,);
    ``others`` (N, K) random other classes, ``spearman_others``/``cosine_others`` (N, K);
    ``undefined`` (N,): why ``spearman_least`` is NaN for a sample ("" where it is defined)."""

    predicted: np.ndarray
    least: np.ndarray
    spearman_least: np.ndarray
    cosine_least: np.ndarray
    others: np.ndarray
    spearman_others: np.ndarray
    cosine_others: np.ndarray
    undefined: list[str] = field(default_factory=list)


def _constant(a: np.ndarray) -> np.ndarray:
    """Per sample, whether the map is constant for a correlation (:func:`.faithfulness.flat`:
    its range is 0 or below 1e-6 of its largest |value|)."""
    a = np.asarray(a, dtype=np.float64)
    return flat(a.reshape(a.shape[0], -1))


def _rank_correlation(ref: np.ndarray, ref_flat: np.ndarray, other: np.ndarray,
                      what: str = "the other class's map") -> tuple[np.ndarray, list[str]]:
    """Spearman of ``ref`` and ``other`` per sample, NaN where either map is constant, and why
    ("" where it is defined)."""
    other_flat = _constant(other)
    out = spearman(ref, other)
    out[ref_flat | other_flat] = np.nan
    side = np.where(ref_flat, "the predicted class's map", what)
    reasons = [f"{side[i]} is constant (its range is below 1e-6 of its largest |value|), so it ranks nothing"
               if ref_flat[i] or other_flat[i] else "" for i in range(len(out))]
    return out, reasons


def class_sensitivity(model: Model, x: np.ndarray | Mapping[str, np.ndarray], method: str = "gradient", n_classes: int | None = None,
                      seed: int = 0, **options: Any) -> ClassSensitivity:
    """Class sensitivity (Adebayo et al. 2018; Nie et al. 2018): is the map of the predicted class
    different from the maps of other classes? A method that reconstructs the input (Guided
    Backprop, DeconvNet on deep nets) gives nearly the same map for every class.

    For each sample, the map of the predicted class (argmax) is compared with the map of the least
    likely class (argmin) and with the maps of ``n_classes`` other classes drawn at random
    (without replacement, seeded) from those other than the predicted one (default None: all of
    them, one attribution per class; set it on models with many classes). Similarities: Spearman
    rank correlation and cosine of the flattened signed maps. A rank correlation with a constant
    map (range below 1e-6 of its largest |value|, so that its ranks order rounding noise) is
    undefined: NaN, with the reason (for ``spearman_least``) in ``undefined``; a cosine with an
    all-zero map is NaN.

    Returns:
        :class:`ClassSensitivity`.
    """
    x = model.check_feeds(x)
    out = model(x)
    if out.ndim == 3:
        raise InputError(f"class_sensitivity compares the maps of one output's classes; {model.output_name!r} has "
                         f"shape (batch, position, class) {out.shape}, whose classes differ per position")
    logits = out.reshape(n_rows(x), -1)
    classes = logits.shape[1]
    if classes < 2:
        raise InputError(f"class_sensitivity needs an output with at least 2 classes; "
                         f"{model.output_name!r} has {classes}")
    k = classes - 1 if n_classes is None else n_classes
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= classes - 1:
        raise OptionError(f"n_classes must be an int in [1, {classes - 1}] or None (all other classes), "
                          f"got {n_classes!r}")
    predicted, least = logits.argmax(axis=1), logits.argmin(axis=1)
    rng = np.random.default_rng(seed)
    others = np.stack([rng.choice(np.delete(np.arange(classes), p), size=k, replace=False) for p in predicted])
    ref = attribute(model, x, target=predicted, method=method, **options)
    ref_flat = _constant(ref)
    low = attribute(model, x, target=least, method=method, **options)
    sp_low, reasons = _rank_correlation(ref, ref_flat, low, "the least likely class's map")
    sp_o, cos_o = [], []
    for j in range(k):
        a = attribute(model, x, target=others[:, j], method=method, **options)
        sp_o.append(_rank_correlation(ref, ref_flat, a)[0])
        cos_o.append(cosine(ref, a))
    return ClassSensitivity(predicted, least, sp_low, cosine(ref, low), others,
                            np.stack(sp_o, axis=1), np.stack(cos_o, axis=1), reasons)
