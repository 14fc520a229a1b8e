"""Faithfulness metrics: does removing what a map calls important change the output that much?

- :func:`sensitivity_n` (Ancona et al. 2018) and :func:`mu_fidelity` (Bhatt et al. 2020): the
  Pearson correlation, over random subsets S of features, between sum_{i in S} R_i and the drop
  of the target output when S is set to the baseline.
- :func:`deletion` and :func:`insertion` (Petsiuk et al. 2018, RISE): the target score while the
  features are removed from x (inserted into the baseline) in decreasing order of relevance.

Features are the scalars of the input (``features="scalar"``, the default) or, for image batches,
the pixels with all their channels together (``features="pixel"``: a pixel's relevance is the sum
over its channels; the layout is told or inferred by :mod:`onnxattr.layout`). Removing a feature
sets it to ``baseline`` (a number, or an array broadcastable to x).

The many forward passes run in batches of ``batch_size`` rows, through our engine
(``runtime="onnxattr"``, ``model.forward`` on the model's device) or through onnxruntime
(``runtime="onnxruntime"``, a session of ``model.proto`` that returns ``model.output_name``).
Perturbed inputs are built on the host.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import onnx
from onnx import helper

from .. import backend
from ..errors import InputError, OptionError
from ..layout import channel_axis, check_layout
from ..model import Model
from .similarity import pearson

RUNTIMES = ("onnxattr", "onnxruntime")
OUTPUTS = ("probability", "logit")
FEATURES = ("scalar", "pixel")


# ---- the batched evaluator -------------------------------------------------------------------
class Scorer:
    """The target score f_t of many inputs: the logit, or the softmax probability over the
    flattened output of each row; evaluated ``batch_size`` rows at a time."""

    def __init__(self, model: Model, runtime: str = "onnxattr", output: str = "logit",
                 batch_size: int = 256) -> None:
        if runtime not in RUNTIMES:
            raise OptionError(f"unknown runtime {runtime!r}; choose one of {RUNTIMES}")
        if output not in OUTPUTS:
            raise OptionError(f"unknown output {output!r}; choose one of {OUTPUTS}")
        _positive_int(batch_size, "batch_size")
        self.model = model
        self.output = output
        fixed = model.fixed_batch
        self.fixed = fixed or 1
        self.batch_size = max(self.fixed, batch_size - batch_size % self.fixed)
        self.run: Callable[[np.ndarray], np.ndarray]
        if runtime == "onnxruntime":
            session = ort_session(model)
            name, step = model.input_name, fixed or batch_size  # a fixed batch size is fed exactly
            self.run = lambda b: np.concatenate([
                np.asarray(session.run([model.output_name], {name: b[i : i + step]})[0]) for i in range(0, len(b), step)
            ])
        else:
            self.run = lambda b: backend.to_host(model.forward(model.xp.asarray(b)))

    def logits(self, inputs: np.ndarray) -> np.ndarray:
        """The model's output for each row of ``inputs``, flattened per row: float64 (B, K)."""
        parts = []
        for i in range(0, len(inputs), self.batch_size):
            chunk = np.ascontiguousarray(inputs[i : i + self.batch_size], dtype=np.float32)
            m = len(chunk)
            pad = -m % self.fixed  # a graph with a fixed batch size gets whole batches
            if pad:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
            parts.append(self.run(chunk)[:m].reshape(m, -1).astype(np.float64))
        return np.concatenate(parts)

    def __call__(self, inputs: np.ndarray, target: np.ndarray) -> np.ndarray:
        """f_t of each row of ``inputs`` (float32, batch first) at its ``target``; float64 (B,)."""
        return self.pick(self.logits(inputs), target)

    def pick(self, logits: np.ndarray, target: np.ndarray) -> np.ndarray:
        rows = np.arange(len(logits))
        if self.output == "probability" and logits.shape[1] < 2:
            raise OptionError(f"output='probability' needs an output with 2 or more classes; "
                              f"{self.model.output_name!r} has 1: use output='logit'")
        if self.output == "logit":
            return logits[rows, target]
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e[rows, target] / e.sum(axis=1)


def ort_session(model: Model) -> Any:
    """An onnxruntime session of ``model.proto`` that returns ``model.output_name`` (added as a
    graph output of a copy where it is an intermediate tensor, e.g. the logits before a final
    Softmax). CUDA where the model is on the GPU and onnxruntime-gpu is installed."""
    import onnxruntime as ort

    proto = onnx.ModelProto()
    proto.CopyFrom(model.proto)
    g = proto.graph
    name = model.output_name
    if name not in [o.name for o in g.output]:
        info = next((v for v in g.value_info if v.name == name), None)
        g.output.append(info if info is not None else helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    consts = {t.name for t in g.initializer}
    others = [i.name for i in g.input if i.name not in consts and i.name != model.input_name]
    if others:
        raise OptionError(f"runtime='onnxruntime' feeds only {model.input_name!r}; the model has other inputs {others}")
    providers = ["CPUExecutionProvider"]
    if model.device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(proto.SerializeToString(), providers=providers)


# ---- features, baselines, targets ---------------------------------------------------------
@dataclass
class Features:
    """The features of a batch: their relevance (N, F) and how a (B, F) mask covers the input."""

    relevance: np.ndarray
    shape: tuple[int, ...]
    expand: Callable[[np.ndarray], np.ndarray]

    @property
    def count(self) -> int:
        return self.relevance.shape[1]


def features_of(x: np.ndarray, attr: np.ndarray, features: str = "scalar", layout: str | None = None) -> Features:
    """Per-feature relevance and the mask expander for ``features`` ("scalar" or "pixel")."""
    if features not in FEATURES:
        raise OptionError(f"unknown features {features!r}; choose one of {FEATURES}")
    n, shape = x.shape[0], tuple(x.shape[1:])
    a = np.asarray(attr, dtype=np.float64)
    if features == "scalar":
        return Features(a.reshape(n, -1), shape, lambda m: m.reshape((len(m),) + shape))
    lay = check_layout(layout, x.shape)
    ax = channel_axis(lay)
    spatial = tuple(d for i, d in enumerate(shape, start=1) if i != ax)

    def expand(m: np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.expand_dims(m.reshape((len(m),) + spatial), ax), (len(m),) + shape)

    return Features(a.sum(axis=ax).reshape(n, -1), shape, expand)


def check_pair(model: Model, x: np.ndarray, attr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x`` checked against the model, and ``attr`` of the same shape."""
    x = model.check_input(x)
    attr = backend.to_host(attr)
    if attr.shape != x.shape:
        raise InputError(f"attr has shape {attr.shape}, x has shape {x.shape}; they must match")
    if attr.dtype.kind not in "fiu" or not np.isfinite(attr).all():
        raise InputError("attr must be a finite numeric array")
    return x, attr


def baseline_for(x: np.ndarray, baseline: Any) -> np.ndarray:
    """The baseline as a float32 array of x's shape (a number, or an array that broadcasts)."""
    b = backend.to_host(baseline)
    if b.dtype.kind not in "fiu":
        raise InputError(f"baseline must be a number or a numeric array, got dtype {b.dtype}")
    b = b.astype(np.float32)
    try:
        b = np.broadcast_to(b, x.shape)
    except ValueError:
        raise InputError(f"baseline of shape {b.shape} does not broadcast to the input's {x.shape}") from None
    if not np.isfinite(b).all():
        raise InputError("baseline contains NaN or infinite values")
    return b


def targets_for(model: Model, x: np.ndarray, target: Any, scorer: Scorer) -> np.ndarray:
    """One int per sample: the given target (checked) or the argmax of the model at x."""
    return model.resolve_target(model.check_target(target, x.shape[0]), scorer.logits(x))


def _positive_int(v: Any, name: str) -> int:
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
        raise OptionError(f"{name} must be a positive int, got {v!r}")
    return int(v)


def nanmean(a: np.ndarray, axis: int | None = None) -> Any:
    """Mean over the non-NaN entries; NaN (no warning) where there are none."""
    a = np.asarray(a, dtype=np.float64)
    ok = ~np.isnan(a)
    count = ok.sum(axis=axis)
    total = np.where(ok, a, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / np.where(count > 0, count, np.nan)


# ---- random subsets: Sensitivity-n and mu-Fidelity --------------------------------------------
def subset_correlations(scorer: Scorer, x: np.ndarray, feats: Features, target: np.ndarray,
                        baseline: np.ndarray, sizes: list[int], n_subsets: int, seed: int) -> np.ndarray:
    """(len(sizes), N): per size n and sample, Pearson over ``n_subsets`` random subsets S (|S| = n,
    drawn uniformly without replacement) of sum_{i in S} R_i and f_t(x) - f_t(x with S := baseline)."""
    rng = np.random.default_rng(seed)
    n, f = x.shape[0], feats.count
    full = scorer(x, target)
    out = np.full((len(sizes), n), np.nan)
    group = max(1, scorer.batch_size // n_subsets)  # samples whose subsets share a pass
    for si, size in enumerate(sizes):
        for g0 in range(0, n, group):
            rows = range(g0, min(n, g0 + group))
            masks, inputs = [], []
            for i in rows:
                idx = np.argpartition(rng.random((n_subsets, f)), size - 1, axis=1)[:, :size]
                mask = np.zeros((n_subsets, f), dtype=bool)
                np.put_along_axis(mask, idx, True, axis=1)
                masks.append(mask)
                inputs.append(np.where(feats.expand(mask), baseline[i], x[i]))
            scores = scorer(np.concatenate(inputs), np.repeat(target[list(rows)], n_subsets))
            for j, i in enumerate(rows):
                drop = full[i] - scores[j * n_subsets : (j + 1) * n_subsets]
                total = (masks[j] * feats.relevance[i]).sum(axis=1)
                out[si, i] = pearson(total[None], drop[None])[0]
    return out


@dataclass
class SensitivityN:
    """Sensitivity-n: ``ns`` (K,), ``correlation`` (K,) the mean over inputs (NaNs skipped) and
    ``per_input`` (K, N)."""

    ns: np.ndarray
    correlation: np.ndarray
    per_input: np.ndarray


def default_ns(count: int, k: int = 16) -> np.ndarray:
    """About ``k`` log-spaced subset sizes from 1 to 80% of ``count`` features (distinct ints)."""
    top = max(1, int(0.8 * count))
    return np.unique(np.round(np.geomspace(1, top, k)).astype(np.int64))


def sensitivity_n(model: Model, x: np.ndarray, attr: np.ndarray, target: Any = None, ns: Any = None,
                  n_subsets: int = 100, baseline: Any = 0.0, seed: int = 0, batch_size: int = 256,
                  runtime: str = "onnxattr", output: str = "logit", features: str = "scalar",
                  layout: str | None = None) -> SensitivityN:
    """Sensitivity-n (Ancona, Ceolini, Oztireli & Gross 2018, "Towards better understanding of
    gradient-based attribution methods for deep neural networks").

    For each n and each input, ``n_subsets`` subsets S of n features are drawn at random, and

        corr_n = Pearson_S( sum_{i in S} R_i ,  f_t(x) - f_t(x_[S = baseline]) ),

    computed per input and then averaged over inputs. A map has Sensitivity-n = 1 when the
    relevance of every n features sums to the output change their removal causes (e.g.
    Gradient*Input on a linear model with baseline 0 for all n; Occlusion-1 for n = 1).

    Args:
        model, x, attr: the model, a float32 batch, and a map of x's shape.
        target: the explained class (int or one per sample); None: the argmax at x.
        ns: subset sizes (ints in [1, F]); default :func:`default_ns`: 16 log-spaced sizes from
            1 to 80% of the F features.
        n_subsets: random subsets per n and input (default 100, as in the paper).
        baseline: value of a removed feature (default 0).
        seed: seed of the subsets.
        batch_size: rows per forward pass. runtime: "onnxattr" or "onnxruntime".
        output: "logit" (default: f_t is the explained output itself) or "probability".
        features: "scalar" (every scalar of x) or "pixel" (channels grouped; with ``layout``).

    Returns:
        :class:`SensitivityN` with ``ns``, ``correlation`` (mean over inputs) and ``per_input``.
    """
    x, attr = check_pair(model, x, attr)
    scorer = Scorer(model, runtime, output, batch_size)
    feats = features_of(x, attr, features, layout)
    _positive_int(n_subsets, "n_subsets")
    sizes = default_ns(feats.count) if ns is None else np.asarray(ns)
    valid = sizes.ndim == 1 and sizes.size > 0 and sizes.dtype.kind in "iu"
    if not valid or sizes.min() < 1 or sizes.max() > feats.count:
        raise OptionError(f"ns must be a list of ints in [1, {feats.count}] (the number of features), got {ns!r}")
    t = targets_for(model, x, target, scorer)
    per = subset_correlations(scorer, x, feats, t, baseline_for(x, baseline), [int(s) for s in sizes], n_subsets, seed)
    return SensitivityN(sizes.astype(np.int64), nanmean(per, axis=1), per)


def mu_fidelity(model: Model, x: np.ndarray, attr: np.ndarray, target: Any = None, subset_size: int | None = None,
                n_subsets: int = 128, baseline: Any = 0.0, seed: int = 0, batch_size: int = 256,
                runtime: str = "onnxattr", output: str = "logit", features: str = "scalar",
                layout: str | None = None) -> np.ndarray:
    """mu-Fidelity (Bhatt, Weller & Moura 2020, "Evaluating and aggregating feature-based model
    explanations"), per input:

        muF = Pearson_S( sum_{i in S} R_i ,  f_t(x) - f_t(x_[S = baseline]) ),  |S| = subset_size,

    over ``n_subsets`` random subsets. It is Sensitivity-n at the single n = ``subset_size``
    (default: 20% of the features, as Xplique's ``subset_percent=0.2``; 128 subsets). Other
    arguments as :func:`sensitivity_n`. Returns (N,) float64, in [-1, 1] (NaN where a side is
    constant over the subsets).
    """
    x, attr = check_pair(model, x, attr)
    scorer = Scorer(model, runtime, output, batch_size)
    feats = features_of(x, attr, features, layout)
    _positive_int(n_subsets, "n_subsets")
    size = max(1, round(0.2 * feats.count)) if subset_size is None else subset_size
    if not isinstance(size, (int, np.integer)) or not 1 <= size <= feats.count:
        raise OptionError(f"subset_size must be an int in [1, {feats.count}] (the number of features), "
                          f"got {subset_size!r}")
    t = targets_for(model, x, target, scorer)
    return subset_correlations(scorer, x, feats, t, baseline_for(x, baseline), [int(size)], n_subsets, seed)[0]


# ---- deletion and insertion -------------------------------------------------------------------
@dataclass
class Curve:
    """A deletion or insertion curve.

    ``fractions`` (K+1,): fraction of the features removed (deletion) or inserted (insertion),
    from 0 to 1. ``scores`` (N, K+1): the target score along the way. ``normalized`` (N, K+1):
    (s - s_baseline) / (s_x - s_baseline), which is 1 at x and 0 at the all-baseline input
    (NaN where s_x = s_baseline). ``auc`` (N,): sum_{k>=1} normalized_k (fr_k - fr_{k-1}).
    ``raw_auc`` (N,): the trapezoid area under the raw scores, as RISE and Xplique report it.
    ``higher_is_better``: False for deletion, True for insertion.
    """

    fractions: np.ndarray
    scores: np.ndarray
    normalized: np.ndarray
    auc: np.ndarray
    raw_auc: np.ndarray
    higher_is_better: bool

    @property
    def mean(self) -> float:
        """The AUC averaged over inputs (NaNs skipped)."""
        return float(nanmean(self.auc))


def perturbation_curve(model: Model, x: np.ndarray, attr: np.ndarray, target: Any, insert: bool, steps: int,
                       baseline: Any, output: str, features: str, layout: str | None, batch_size: int,
                       runtime: str) -> Curve:
    """The deletion (``insert=False``) or insertion curve; see :func:`deletion`."""
    x, attr = check_pair(model, x, attr)
    scorer = Scorer(model, runtime, output, batch_size)
    feats = features_of(x, attr, features, layout)
    _positive_int(steps, "steps")
    b = baseline_for(x, baseline)
    t = targets_for(model, x, target, scorer)
    n, f = x.shape[0], feats.count
    counts = np.unique(np.round(np.linspace(0, f, steps + 1)).astype(np.int64))
    scores = np.empty((n, len(counts)))
    per_pass = max(1, scorer.batch_size // len(counts))
    for g0 in range(0, n, per_pass):
        rows = list(range(g0, min(n, g0 + per_pass)))
        inputs = []
        for i in rows:
            order = np.argsort(-feats.relevance[i], kind="stable")  # most relevant first; ties by index
            position = np.empty(f, dtype=np.int64)
            position[order] = np.arange(f)
            changed = feats.expand(position[None, :] < counts[:, None])
            inputs.append(np.where(changed, x[i], b[i]) if insert else np.where(changed, b[i], x[i]))
        s = scorer(np.concatenate(inputs), np.repeat(t[rows], len(counts)))
        scores[rows] = s.reshape(len(rows), len(counts))
    at_x, at_base = (scores[:, -1], scores[:, 0]) if insert else (scores[:, 0], scores[:, -1])
    span = (at_x - at_base)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        normalized = np.where(span != 0, (scores - at_base[:, None]) / np.where(span != 0, span, 1.0), np.nan)
    fractions = counts / f
    width = np.diff(fractions)[None, :]
    auc = (normalized[:, 1:] * width).sum(axis=1)
    raw = ((scores[:, 1:] + scores[:, :-1]) / 2 * width).sum(axis=1)
    return Curve(fractions, scores, normalized, auc, raw, higher_is_better=insert)


def deletion(model: Model, x: np.ndarray, attr: np.ndarray, target: Any = None, steps: int = 100,
             baseline: Any = 0.0, output: str = "probability", features: str = "scalar",
             layout: str | None = None, batch_size: int = 256, runtime: str = "onnxattr") -> Curve:
    """Deletion (Petsiuk, Das & Saenko 2018, "RISE"): set the features to ``baseline`` in
    decreasing order of relevance (signed; ties by index) and follow the target score.

    The curve has a point after each of ``steps`` (default 100) equal slices of the F features
    (round(k F / steps) removed, duplicates dropped), plus the start. Its score s is the softmax
    probability of the target over the model's (flattened) output (``output="probability"``,
    default) or the target logit (``output="logit"``). Both are normalised by the two ends,

        v(fr) = (s(fr) - s(baseline)) / (s(x) - s(baseline)),

    so v = 1 at x and 0 when everything is removed, and the score is the area under v as a step
    curve: AUC = sum_{k>=1} v(fr_k) (fr_k - fr_{k-1}) (a right Riemann sum: each point's value
    holds over the slice just removed). Lower is better: in [0, 1] for a monotone curve, and
    exactly 0 when the first slice removes all the evidence (a model that reads one pixel,
    explained by that pixel). A trapezoid would give the perfect map fr_1 / 2 instead, which is
    why the step rule is used. The raw scores, and their trapezoid area (``raw_auc``, the
    unnormalised score of RISE and Xplique), are returned too. With the softmax probability the
    normalised curve can leave [0, 1] where a partly removed input scores below the baseline.

    Returns:
        :class:`Curve` (``auc`` per input, ``mean``, ``fractions``, ``scores``, ``normalized``).
    """
    return perturbation_curve(model, x, attr, target, False, steps, baseline, output, features, layout,
                              batch_size, runtime)


def insertion(model: Model, x: np.ndarray, attr: np.ndarray, target: Any = None, steps: int = 100,
              baseline: Any = 0.0, output: str = "probability", features: str = "scalar",
              layout: str | None = None, batch_size: int = 256, runtime: str = "onnxattr") -> Curve:
    """Insertion (Petsiuk et al. 2018): start from the baseline and put back the features of x in
    decreasing order of relevance. Points, scores, the normalisation v = (s - s(baseline)) /
    (s(x) - s(baseline)) and the step-curve AUC are as in :func:`deletion`; here v goes from 0 to 1
    and higher is better (exactly 1 when the first slice inserts all the evidence)."""
    return perturbation_curve(model, x, attr, target, True, steps, baseline, output, features, layout,
                              batch_size, runtime)


__all__ = [
    "Curve", "Scorer", "SensitivityN", "default_ns", "deletion", "insertion", "mu_fidelity",
    "ort_session", "sensitivity_n",
]
