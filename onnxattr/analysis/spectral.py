"""The frequency view of attribution maps (Muzellec, Fel, Boutin, Andeol, VanRullen & Serre,
ICML 2024, "Saliency strikes back: How filtering out high frequencies improves white-box
explanations").

Gradient maps carry high-frequency noise that strided downsampling aliases into them. This module
measures it (:func:`power_spectrum`, :func:`high_frequency_share`), removes it (:func:`lowpass`, FORGrad's ideal low-pass
filter) and picks the cutoff per model from a faithfulness metric (:func:`select_cutoff`).

Frequencies are in cycles per pixel: the FFT bins of an axis of n pixels are
``numpy.fft.fftfreq(n)``, and the Nyquist frequency is 0.5.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import InputError, OptionError
from ..layout import check_layout
from ..model import Model
from ..viz import to_2d
from . import faithfulness

METRICS = ("deletion", "insertion", "mu_fidelity")
DEFAULT_CUTOFFS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)


def _spatial_axes(a: np.ndarray, layout: str | None) -> tuple[int, int]:
    if a.ndim == 3:
        return (1, 2)
    if a.ndim == 4:
        return (2, 3) if check_layout(layout, a.shape) == "NCHW" else (1, 2)
    raise InputError(f"expected a batch of 2-D maps: (N, H, W), (N, C, H, W) or (N, H, W, C); got shape {a.shape}")


def power_spectrum(attr: np.ndarray, layout: str | None = None, average: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of 2-D maps.

    Each map is summed over its channels (``attr`` is (N, C, H, W) or (N, H, W, C), the layout told
    or inferred, or (N, H, W)). Its power P(k) = |FFT2(map)(k)|^2 / (H W) (so white noise of
    variance s^2 has P = s^2 at every frequency, the DC term included; the mean is not removed) is
    averaged over the rings |f| in [(j - 1/2)/L, (j + 1/2)/L), L = max(H, W), for j = 0 .. L // 2:
    up to the Nyquist frequency 0.5; the corners beyond it are left out.

    Returns:
        (frequencies, power): frequencies (L//2 + 1,) = j / L in cycles per pixel, and power, the
        mean over samples (``average=True``, default) of shape (L//2 + 1,), or per sample (N, L//2 + 1).
    """
    a = np.asarray(attr, dtype=np.float64)
    _spatial_axes(a, layout)
    maps = to_2d(a, layout) if a.ndim == 4 else a
    n, h, w = maps.shape
    power = np.abs(np.fft.fft2(maps, axes=(1, 2))) ** 2 / (h * w)
    size = max(h, w)
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij"))
    ring = np.rint(radius * size).astype(np.int64).reshape(-1)
    keep = ring <= size // 2
    counts = np.bincount(ring[keep], minlength=size // 2 + 1)
    flat = power.reshape(n, -1)[:, keep]
    sums = np.stack([np.bincount(ring[keep], weights=row, minlength=size // 2 + 1) for row in flat])
    per_sample = sums / counts[None, :]
    freqs = np.arange(size // 2 + 1) / size
    return freqs, (per_sample.mean(axis=0) if average else per_sample)


def lowpass(attr: np.ndarray, cutoff: float, layout: str | None = None) -> np.ndarray:
    """FORGrad's ideal low-pass filter, applied to each channel of signed maps.

    phi_c = F^-1( F(phi) * 1[rho <= c] ),  rho = sqrt((f_y / 0.5)^2 + (f_x / 0.5)^2),

    an ideal circular mask in the FFT domain (as FORGrad, Muzellec et al. 2024; the paper's sigma in
    frequency-index units of a W x W image is c = 2 sigma / W), with the radius a fraction ``c`` of
    the Nyquist frequency. The DC term (rho = 0) is always kept, so each channel's sum is preserved.
    ``cutoff = 1`` means the full band, corners (rho up to sqrt 2) included: the identity, exactly.

    Args:
        attr: (N, C, H, W) or (N, H, W, C) (``layout`` told or inferred) or (N, H, W).
        cutoff: in (0, 1].
    Returns:
        The filtered maps, same shape and dtype (float64 computation).
    """
    a = np.asarray(attr)
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float, np.integer, np.floating)) or not 0 < cutoff <= 1:
        raise OptionError(f"cutoff must be a number in (0, 1] (a fraction of the Nyquist frequency), got {cutoff!r}")
    axes = _spatial_axes(a, layout)
    if cutoff == 1:
        return a.copy()
    h, w = a.shape[axes[0]], a.shape[axes[1]]
    fy = np.fft.fftfreq(h)[:, None] / 0.5
    fx = np.fft.rfftfreq(w)[None, :] / 0.5
    mask = np.hypot(fy, fx) <= cutoff
    shape = [1] * a.ndim
    shape[axes[0]], shape[axes[1]] = mask.shape
    spectrum = np.fft.rfft2(a.astype(np.float64), axes=axes) * mask.reshape(shape)
    out = np.fft.irfft2(spectrum, s=(h, w), axes=axes)
    return out.astype(a.dtype if a.dtype.kind == "f" else np.float64)


@dataclass
class CutoffSelection:
    """FORGrad's cutoff search: ``best_cutoff``; ``cutoffs`` (K,) and ``scores`` (K,) on the
    selection samples; ``metric`` and ``higher_is_better``; with a holdout, the chosen cutoff's
    score on the held-out samples (``holdout_score``) and the unfiltered maps' score there
    (``holdout_unfiltered``), else NaN."""

    best_cutoff: float
    cutoffs: np.ndarray
    scores: np.ndarray
    metric: str
    higher_is_better: bool
    holdout_score: float = float("nan")
    holdout_unfiltered: float = float("nan")


def _score(model: Model, x: np.ndarray, attr: np.ndarray, target: Any, metric: str, options: dict) -> float:
    if metric == "mu_fidelity":
        return float(faithfulness.nanmean(faithfulness.mu_fidelity(model, x, attr, target, **options)))
    fn = faithfulness.deletion if metric == "deletion" else faithfulness.insertion
    return float(faithfulness.nanmean(fn(model, x, attr, target, **options).raw_auc))


def select_cutoff(model: Model, x: np.ndarray, attr: np.ndarray, target: Any = None,
                  cutoffs: Sequence[float] = DEFAULT_CUTOFFS, metric: str = "deletion",
                  layout: str | None = None, holdout: float = 0.0, seed: int = 0,
                  **metric_options: Any) -> CutoffSelection:
    """FORGrad (Muzellec et al. 2024): the low-pass cutoff that makes the maps most faithful.

    For each cutoff c, the maps are filtered with :func:`lowpass` and scored with ``metric``:
    "deletion" (mean raw AUC of the score curve, ``Curve.raw_auc``, lower is better; the raw
    area as RISE and FORGrad use it, since the normalised one divides by f(x) - f(baseline),
    which is near 0 where the baseline input already scores like x), "insertion" (the same,
    higher is better) or
    "mu_fidelity" (mean over inputs, higher is better); ``metric_options`` go to that function
    (``steps``, ``baseline``, ``output``, ``runtime``, ``batch_size``, ``subset_size``, ...).
    ``x``/``attr`` are data held out from the model's training. With ``holdout`` in (0, 1), that
    fraction of the samples (a seeded random split) is kept out of the choice and used to report
    the chosen cutoff's score and the unfiltered maps' score.

    Args:
        cutoffs: candidate cutoffs in (0, 1] (default 0.05 .. 1; 1 is the unfiltered map).
        target: as in the metrics (None: argmax at x).
    Returns:
        :class:`CutoffSelection`.
    """
    if metric not in METRICS:
        raise OptionError(f"unknown metric {metric!r}; choose one of {METRICS}")
    x, attr = faithfulness.check_pair(model, x, attr)
    cut = np.asarray(list(cutoffs), dtype=np.float64)
    if cut.ndim != 1 or cut.size == 0 or not np.all((cut > 0) & (cut <= 1)):
        raise OptionError(f"cutoffs must be a non-empty list of numbers in (0, 1], got {cutoffs!r}")
    if not 0 <= holdout < 1:
        raise OptionError(f"holdout must be a fraction in [0, 1), got {holdout!r}")
    n = x.shape[0]
    t = model.check_target(target, n)
    if t is None:
        t = model.resolve_target(None, model(x))
    order = np.random.default_rng(seed).permutation(n)
    n_out = int(round(holdout * n))
    if holdout > 0 and not 1 <= n_out < n:
        raise OptionError(f"holdout={holdout} of {n} samples leaves no sample on one side of the split")
    pick, held = np.sort(order[n_out:]), np.sort(order[:n_out])
    higher = metric != "deletion"
    scores = np.array([
        _score(model, x[pick], lowpass(attr[pick], float(c), layout), t[pick], metric, metric_options) for c in cut
    ])
    ranked = scores if higher else -scores
    best = float(cut[int(np.nanargmax(ranked))]) if np.isfinite(ranked).any() else float("nan")
    result = CutoffSelection(best, cut, scores, metric, higher)
    if n_out and np.isfinite(best):
        filtered = lowpass(attr[held], best, layout)
        result.holdout_score = _score(model, x[held], filtered, t[held], metric, metric_options)
        result.holdout_unfiltered = _score(model, x[held], attr[held], t[held], metric, metric_options)
    return result


def high_frequency_share(attr: np.ndarray, layout: str | None = None, above: float = 0.25) -> np.ndarray:
    """Per sample, the share of a map's spectral power |FFT2|^2 at radial frequencies >= ``above``
    cycles per pixel (default half the Nyquist frequency); maps summed over their channels
    (``attr`` as in :func:`power_spectrum`). NaN for an all-zero map. Returns (N,) float64."""
    a = np.asarray(attr, dtype=np.float64)
    _spatial_axes(a, layout)
    maps = to_2d(a, layout) if a.ndim == 4 else a
    h, w = maps.shape[1:]
    power = np.abs(np.fft.fft2(maps, axes=(1, 2))) ** 2
    r = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
    total = power.sum(axis=(1, 2))
    high = power[:, r >= above].sum(axis=1)
    return np.where(total > 0, high / np.where(total > 0, total, 1.0), np.nan)
