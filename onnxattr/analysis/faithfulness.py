"""Faithfulness metrics: does removing what a map calls important change the output that much?

- :func:`sensitivity_n` (Ancona et al. 2018) and :func:`mu_fidelity` (Bhatt et al. 2020): the
  Pearson correlation, over random subsets S of features, between sum_{i in S} R_i and the drop
  of the target output when S is set to the baseline.
- :func:`deletion` and :func:`insertion` (Petsiuk et al. 2018, RISE): the target's probability
  (or, for other outputs, its normalised value) while the features are removed from x (inserted
  into the baseline) in decreasing order of relevance.

A score that divides by a difference or a spread is undefined (NaN, with the reason) where that
difference is below 1e-6 of its scale (:func:`undefined_span`, :func:`flat`), so that rounding
noise is never reported as a number.

The perturbed tensor is the one attributions are taken at (``model.input_name``): the input, or
the ``wrt`` tensor inside the graph (a text model's token embeddings), with every other input
held fixed (``x`` is then a dict {input name: array}). Its features are its scalars
(``features="scalar"``, the default), an image's pixels with all their channels together
(``features="pixel"``: a pixel's relevance is the sum over its channels; the layout is told or
inferred by :mod:`onnxattr.layout`), or a (B, T, H) tensor's tokens (``features="token"``: a
token's relevance is the sum over its embedding). Removing a feature sets it to ``baseline`` (a
number, or an array broadcastable to the tensor), or with ``baseline_token`` to that token's
embedding.

The many forward passes run in batches of ``batch_size`` rows, through our engine
(``runtime="onnxattr"``, ``model.forward`` on the model's device) or through onnxruntime
(``runtime="onnxruntime"``; :func:`~onnxattr.analysis.scoring.ort_session`). Perturbed inputs
are built on the host. Targets are one class per sample, or for a (B, T, V) output (position,
index) pairs, whose raw value is followed (``output="auto"``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError, OptionError
from ..model import Model
from .scoring import (
    FEATURES, OUTPUTS, RUNTIMES, Batch, Features, Scorer, baseline_for, batch_of, check_batch, features_of, ort_session,
    positive_int, quantity_for, targets_for, wrt_as_input,
)
from .similarity import pearson

#: a normalised score is undefined where its two ends differ by less than this, relative
UNDEFINED_TOL = 1e-6


def undefined_span(at_x: np.ndarray, at_base: np.ndarray) -> np.ndarray:
    """Where a score normalised by its two ends, (s - s_b) / (s_x - s_b), is undefined:
    |s_x - s_b| < 1e-6 max(1, |s_x|)."""
    at_x = np.asarray(at_x, dtype=np.float64)
    return ~(np.abs(at_x - at_base) >= UNDEFINED_TOL * np.maximum(1.0, np.abs(at_x)))


def flat(values: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """Per row, whether ``values`` (N, M) is constant for a correlation: its range is 0 or below
    1e-6 ``scale`` (default: scale-free, the row's largest |value|). A Pearson correlation with
    such a side divides rounding noise by rounding noise, and is undefined."""
    v = np.asarray(values, dtype=np.float64)
    spread = v.max(axis=1) - v.min(axis=1)
    ref = np.abs(v).max(axis=1) if scale is None else np.asarray(scale, dtype=np.float64)
    return ~(spread > 0) | (spread < UNDEFINED_TOL * ref)


def check_pair(model: Model, x: Any, attr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A single-input model's batch ``x`` checked, and ``attr`` of its shape (for analyses that
    perturb the input itself; :func:`check_batch` takes feeds and ``wrt`` tensors too)."""
    b, attr = check_batch(model, x, attr)
    if b.fixed or model.graph.head is not None:
        raise InputError(f"the model is attributed at {model.input_name!r} from inputs {model.graph.needed()}; "
                         f"this analysis takes a single-input model")
    return b.x, attr


def nanmean(a: np.ndarray, axis: int | None = None) -> Any:
    """Mean over the non-NaN entries; NaN (no warning) where there are none."""
    a = np.asarray(a, dtype=np.float64)
    ok = ~np.isnan(a)
    count = ok.sum(axis=axis)
    total = np.where(ok, a, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / np.where(count > 0, count, np.nan)


# ---- random subsets: Sensitivity-n and mu-Fidelity --------------------------------------------
def subset_correlations(scorer: Scorer, batch: Batch, feats: Features, target: np.ndarray,
                        baseline: np.ndarray, sizes: list[int], n_subsets: int,
                        seed: int) -> tuple[np.ndarray, list[str]]:
    """(len(sizes), N): per size n and sample, Pearson over ``n_subsets`` random subsets S (|S| = n,
    drawn uniformly without replacement) of sum_{i in S} R_i and f_t(x) - f_t(x with S := baseline);
    and per sample why some of its correlations are undefined (NaN), "" where none is. A
    correlation is undefined where a side is constant (:func:`flat`): the output drops within
    1e-6 max(1, |f_t(x)|) of each other, or the relevance sums within 1e-6 of their largest."""
    rng = np.random.default_rng(seed)
    x = batch.x
    n, f = x.shape[0], feats.count
    full = scorer(x, target, batch.fixed)
    out = np.full((len(sizes), n), np.nan)
    reasons = [""] * n
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
            scores = scorer(np.concatenate(inputs), np.repeat(target[list(rows)], n_subsets, axis=0),
                            batch.repeat(list(rows), n_subsets))
            for j, i in enumerate(rows):
                drop = full[i] - scores[j * n_subsets : (j + 1) * n_subsets]
                total = (masks[j] * feats.relevance[i]).sum(axis=1)
                if flat(total[None])[0]:
                    reasons[i] = reasons[i] or "the map's sums are the same over every subset (a constant map)"
                elif flat(drop[None], max(1.0, abs(full[i])))[0]:
                    reasons[i] = reasons[i] or "the output does not change when the subsets are removed"
                else:
                    out[si, i] = pearson(total[None], drop[None])[0]
    return out, reasons


@dataclass
class SensitivityN:
    """Sensitivity-n: ``ns`` (K,), ``correlation`` (K,) the mean over inputs (NaNs skipped),
    ``per_input`` (K, N), and ``undefined`` (N,): why an input's correlations are NaN ("" where
    none is; see :func:`subset_correlations`)."""

    ns: np.ndarray
    correlation: np.ndarray
    per_input: np.ndarray
    undefined: list[str] = field(default_factory=list)


def default_ns(count: int, k: int = 16) -> np.ndarray:
    """About ``k`` log-spaced subset sizes from 1 to 80% of ``count`` features (distinct ints)."""
    top = max(1, int(0.8 * count))
    return np.unique(np.round(np.geomspace(1, top, k)).astype(np.int64))


def sensitivity_n(model: Model, x: np.ndarray, attr: np.ndarray, target: Any = None, ns: Any = None,
                  n_subsets: int = 100, baseline: Any = 0.0, seed: int = 0, batch_size: int = 256,
                  runtime: str = "onnxattr", output: str = "logit", features: str = "scalar",
                  layout: str | None = None, baseline_token: int | None = None) -> SensitivityN:
    """Sensitivity-n (Ancona, Ceolini, Oztireli & Gross 2018, "Towards better understanding of
    gradient-based attribution methods for deep neural networks").

    For each n and each input, ``n_subsets`` subsets S of n features are drawn at random, and

        corr_n = Pearson_S( sum_{i in S} R_i ,  f_t(x) - f_t(x_[S = baseline]) ),

    computed per input and then averaged over inputs. A map has Sensitivity-n = 1 when the
    relevance of every n features sums to the output change their removal causes (e.g.
    Gradient*Input on a linear model with baseline 0 for all n; Occlusion-1 for n = 1).

    Args:
        model, x, attr: the model, a float32 batch (a dict {input name: array} where the model
            has several inputs or a ``wrt`` tensor), and a map of the attributed tensor's shape.
        target: the explained class (int or one per sample; (position, index) pairs for a
            (B, T, V) output); None: the argmax at x.
        ns: subset sizes (ints in [1, F]); default :func:`default_ns`: 16 log-spaced sizes from
            1 to 80% of the F features.
        n_subsets: random subsets per n and input (default 100, as in the paper).
        baseline: value of a removed feature (default 0); or ``baseline_token``: a token id whose
            embedding replaces a removed token (``wrt="embeddings"`` models).
        seed: seed of the subsets.
        batch_size: rows per forward pass. runtime: "onnxattr" or "onnxruntime".
        output: "logit" (default: f_t is the explained output itself), "probability",
            "sigmoid" or "auto" (see :func:`quantity_for`).
        features: "scalar" (every scalar of x), "pixel" (channels grouped; with ``layout``) or
            "token" (a (B, T, H) tensor's positions).

    Returns:
        :class:`SensitivityN` with ``ns``, ``correlation`` (mean over inputs) and ``per_input``.
    """
    b, attr = check_batch(model, x, attr)
    scorer = Scorer(model, runtime, output, batch_size)
    feats = features_of(b.x, attr, features, layout)
    positive_int(n_subsets, "n_subsets")
    sizes = default_ns(feats.count) if ns is None else np.asarray(ns)
    valid = sizes.ndim == 1 and sizes.size > 0 and sizes.dtype.kind in "iu"
    if not valid or sizes.min() < 1 or sizes.max() > feats.count:
        raise OptionError(f"ns must be a list of ints in [1, {feats.count}] (the number of features), got {ns!r}")
    t = targets_for(model, b, target, scorer)
    per, undefined = subset_correlations(scorer, b, feats, t, baseline_for(model, b, baseline, baseline_token),
                                         [int(s) for s in sizes],
                                         n_subsets, seed)
    return SensitivityN(sizes.astype(np.int64), nanmean(per, axis=1), per, undefined)


def mu_fidelity(model: Model, x: np.ndarray, attr: np.ndarray, target: Any = None, subset_size: int | None = None,
                n_subsets: int = 128, baseline: Any = 0.0, seed: int = 0, batch_size: int = 256,
                runtime: str = "onnxattr", output: str = "logit", features: str = "scalar",
                layout: str | None = None, baseline_token: int | None = None) -> np.ndarray:
    """mu-Fidelity (Bhatt, Weller & Moura 2020, "Evaluating and aggregating feature-based model
    explanations"), per input:

        muF = Pearson_S( sum_{i in S} R_i ,  f_t(x) - f_t(x_[S = baseline]) ),  |S| = subset_size,

    over ``n_subsets`` random subsets. It is Sensitivity-n at the single n = ``subset_size``
    (default: 20% of the features, as Xplique's ``subset_percent=0.2``; 128 subsets). Other
    arguments as :func:`sensitivity_n`. Returns (N,) float64, in [-1, 1]; NaN where a side is
    constant over the subsets (:func:`flat`: a constant map, or an output that does not move).
    """
    b, attr = check_batch(model, x, attr)
    scorer = Scorer(model, runtime, output, batch_size)
    feats = features_of(b.x, attr, features, layout)
    positive_int(n_subsets, "n_subsets")
    size = max(1, round(0.2 * feats.count)) if subset_size is None else subset_size
    if not isinstance(size, (int, np.integer)) or not 1 <= size <= feats.count:
        raise OptionError(f"subset_size must be an int in [1, {feats.count}] (the number of features), "
                          f"got {subset_size!r}")
    t = targets_for(model, b, target, scorer)
    return subset_correlations(scorer, b, feats, t, baseline_for(model, b, baseline, baseline_token), [int(size)],
                               n_subsets, seed)[0][0]


# ---- deletion and insertion -------------------------------------------------------------------
@dataclass
class Curve:
    """A deletion or insertion curve.

    ``fractions`` (K+1,): fraction of the features removed (deletion) or inserted (insertion),
    from 0 to 1. ``quantity``: what ``scores`` (N, K+1) holds, the target's "probability"
    (softmax over the classes), "sigmoid" (of a one-output model's value) or "logit" (the raw
    value). ``normalized`` (N, K+1): (s - s_baseline) / (s_x - s_baseline), 1 at x and 0 at the
    all-baseline input, NaN where undefined (:func:`undefined_span`). ``plotted``: the curve
    whose area is the score, ``scores`` for a bounded quantity, ``normalized`` for "logit".
    ``auc`` (N,): sum_{k>=1} plotted_k (fr_k - fr_{k-1}). ``undefined`` (N,): why an input's
    ``auc`` is NaN ("" where it is defined). ``raw_auc`` (N,): the trapezoid area under the raw
    scores, as RISE and Xplique report it. ``higher_is_better``: False for deletion.
    """

    fractions: np.ndarray
    scores: np.ndarray
    normalized: np.ndarray
    auc: np.ndarray
    raw_auc: np.ndarray
    higher_is_better: bool
    quantity: str = "probability"
    undefined: list[str] = field(default_factory=list)

    @property
    def plotted(self) -> np.ndarray:
        return self.normalized if self.quantity == "logit" else self.scores

    @property
    def mean(self) -> float:
        """The AUC averaged over inputs (NaNs skipped)."""
        return float(nanmean(self.auc))


def perturbation_curve(model: Model, x: np.ndarray, attr: np.ndarray, target: Any, insert: bool, steps: int,
                       baseline: Any, output: str, features: str, layout: str | None, batch_size: int,
                       runtime: str, baseline_token: int | None = None) -> Curve:
    """The deletion (``insert=False``) or insertion curve; see :func:`deletion`."""
    batch, attr = check_batch(model, x, attr)
    x = batch.x
    scorer = Scorer(model, runtime, output, batch_size)
    feats = features_of(x, attr, features, layout)
    positive_int(steps, "steps")
    b = baseline_for(model, batch, baseline, baseline_token)
    t = targets_for(model, batch, target, scorer)
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
        s = scorer(np.concatenate(inputs), np.repeat(t[rows], len(counts), axis=0), batch.repeat(rows, len(counts)))
        scores[rows] = s.reshape(len(rows), len(counts))
    at_x, at_base = (scores[:, -1], scores[:, 0]) if insert else (scores[:, 0], scores[:, -1])
    span_bad = undefined_span(at_x, at_base)
    with np.errstate(invalid="ignore", divide="ignore"):
        normalized = (scores - at_base[:, None]) / np.where(span_bad, 1.0, at_x - at_base)[:, None]
    normalized[span_bad] = np.nan
    quantity = scorer.output
    plotted = normalized if quantity == "logit" else scores
    fractions = counts / f
    width = np.diff(fractions)[None, :]
    auc = (plotted[:, 1:] * width).sum(axis=1)
    flat_map = flat(feats.relevance)  # a constant map ranks no feature above another
    auc[flat_map] = np.nan
    undefined = ["the map is constant: it ranks no feature above another" if flat_map[i] else
                 (f"the target's {quantity} at the baseline equals that at the input within 1e-6 max(1, |value|), "
                  "so the curve cannot be normalised" if quantity == "logit" and span_bad[i] else "")
                 for i in range(n)]
    raw = ((scores[:, 1:] + scores[:, :-1]) / 2 * width).sum(axis=1)
    return Curve(fractions, scores, normalized, auc, raw, insert, quantity, undefined)


def deletion(model: Model, x: np.ndarray, attr: np.ndarray, target: Any = None, steps: int = 100,
             baseline: Any = 0.0, output: str = "auto", features: str = "scalar",
             layout: str | None = None, batch_size: int = 256, runtime: str = "onnxattr",
             baseline_token: int | None = None) -> Curve:
    """Deletion (Petsiuk, Das & Saenko 2018, "RISE"): set the features to ``baseline`` in
    decreasing order of relevance (signed; ties by index) and follow the target score.

    The curve has a point after each of ``steps`` (default 100) equal slices of the F features
    (round(k F / steps) removed, duplicates dropped), plus the start. Its score s is a bounded
    quantity, as RISE defines it (``output="auto"``, :func:`quantity_for`): the softmax
    probability of the target over the model's classes, or the sigmoid of a one-output model's
    value. Other outputs (an intermediate tensor, a causal LM's (B, T, V) logits at (position,
    index) targets, ``output="logit"``) give the raw target value, normalised by the curve's two
    ends,

        v(fr) = (s(fr) - s(baseline)) / (s(x) - s(baseline)),

    which is undefined (NaN, with the reason in ``Curve.undefined``) where
    |s(x) - s(baseline)| < 1e-6 max(1, |s(x)|): a baseline the model scores like x.

    The score is the area under that curve as a step curve: AUC = sum_{k>=1} v(fr_k)
    (fr_k - fr_{k-1}) (a right Riemann sum: each point's value holds over the slice just
    removed), in [0, 1] for a probability. Lower is better: the area is the baseline's score
    when the first slice removes all the evidence (0 for a normalised curve). A trapezoid would
    give the perfect map fr_1 / 2 more, which is why the step rule is used. A constant map
    orders the features by index only, so its AUC is undefined too. The raw scores and their
    trapezoid area (``raw_auc``, RISE's and Xplique's score) are returned as well.

    On a text model attributed at its embeddings (``wrt="embeddings"``, ``x`` the feeds dict,
    ``features="token"``) the removed tokens' embeddings are replaced by ``baseline`` (zeros by
    default) or by the embedding of ``baseline_token``, most relevant token first; the token ids
    and the attention mask are fed unchanged.

    Returns:
        :class:`Curve` (``auc`` per input, ``mean``, ``fractions``, ``scores``, ``normalized``).
    """
    return perturbation_curve(model, x, attr, target, False, steps, baseline, output, features, layout,
                              batch_size, runtime, baseline_token)


def insertion(model: Model, x: np.ndarray, attr: np.ndarray, target: Any = None, steps: int = 100,
              baseline: Any = 0.0, output: str = "auto", features: str = "scalar",
              layout: str | None = None, batch_size: int = 256, runtime: str = "onnxattr",
              baseline_token: int | None = None) -> Curve:
    """Insertion (Petsiuk et al. 2018): start from the baseline and put back the features of x in
    decreasing order of relevance. Points, the score (a probability by default, or the
    normalised raw value), the undefined cases and the step-curve AUC are as in
    :func:`deletion`; here higher is better (the input's score when the first slice inserts all
    the evidence; 1 for a normalised curve)."""
    return perturbation_curve(model, x, attr, target, True, steps, baseline, output, features, layout,
                              batch_size, runtime, baseline_token)


__all__ = [
    "FEATURES", "OUTPUTS", "RUNTIMES", "Batch", "Curve", "batch_of", "Features", "Scorer", "SensitivityN", "baseline_for",
    "check_batch", "check_pair", "default_ns", "deletion", "features_of", "insertion", "mu_fidelity", "ort_session",
    "quantity_for", "sensitivity_n", "targets_for", "wrt_as_input",
]
