"""What an audit measures: the analyses, the gateable metrics with their meaning, and the helpers
that turn per-sample values into the means and strict-JSON numbers of the report."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

SCHEMA = "onnxattr.audit/2"
DEFAULT_METHODS = ("gradient", "input_x_gradient", "guided_backprop", "lrp.epsilon_plus_flat")
ANALYSES = ("randomization", "class_sensitivity", "deletion", "insertion", "sensitivity_n", "alignment", "spectrum")
CHECKS = ("randomization", "class_sensitivity")

#: metric -> (analysis that computes it, better direction "lower"/"higher"/None, meaning)
METRICS: dict[str, tuple[str, str | None, str]] = {
    "randomization.spearman": ("randomization", "lower",
                               "mean |Spearman| of the map vs the fully randomized model's map (signed maps)"),
    "randomization.spearman_abs": ("randomization", "lower", "the same on the absolute maps"),
    "randomization.ssim": ("randomization", "lower", "mean SSIM of the absolute maps, original vs fully randomized"),
    "class_sensitivity.spearman": ("class_sensitivity", "lower",
                                   "mean Spearman of the predicted class's map vs the least likely class's map"),
    "deletion.auc": ("deletion", "lower",
                     "mean area under the deletion curve of the target's probability (softmax over the classes; "
                     "sigmoid of a one-output model; other outputs: the target value scaled to 1 at x and 0 at "
                     "the baseline)"),
    "insertion.auc": ("insertion", "higher", "the same for the insertion curve"),
    "sensitivity_n.mean": ("sensitivity_n", "higher", "Sensitivity-n correlation averaged over the subset sizes"),
    "alignment.cosine": ("alignment", None, "mean cosine between map and input"),
    "spectrum.high_fraction": ("spectrum", None, "share of the maps' power above half the Nyquist frequency"),
}


def mean(a: Any) -> float | None:
    """The mean of the finite entries of ``a``; None where there are none."""
    v = np.asarray(a, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else None


def nanmean_rows(a: np.ndarray) -> np.ndarray:
    """Mean of each row over its finite entries (NaN where none)."""
    return np.array([m if m is not None else np.nan for m in (mean(row) for row in np.asarray(a, dtype=np.float64))])


def plain(v: Any) -> Any:
    """``v`` with NumPy values as Python ones and NaN/inf as None (strict JSON)."""
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return plain(v.tolist())
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if v is None or isinstance(v, (str, int, bool)):
        return v
    return repr(v)


def fmt(v: float | None) -> str:
    """A value for people: three decimals, or n/a."""
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.3f}"


def show_shape(shape: Sequence[Any] | None) -> str:
    """A shape as (N, 3, 32, 32), with N for a symbolic dimension."""
    return "?" if shape is None else "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"
