"""Analyses of attribution maps and of the methods that make them.

- alignment: :func:`input_alignment`, :func:`layer_alignment`, :func:`cosine_similarity_convergence`
  (Sixt et al. 2020).
- randomization: :func:`randomization_test`, :func:`class_sensitivity` (Adebayo et al. 2018).
- faithfulness: :func:`sensitivity_n` (Ancona et al. 2018), :func:`mu_fidelity` (Bhatt et al.
  2020), :func:`deletion`, :func:`insertion` (Petsiuk et al. 2018).
- spectral: :func:`power_spectrum`, :func:`lowpass`, :func:`select_cutoff` (FORGrad, Muzellec et
  al. 2024).
- similarity: per-sample :func:`cosine`, :func:`pearson`, :func:`spearman`, :func:`ssim`.
- localization: :func:`relevance_mass` inside ground-truth masks (Arras et al. 2022).
"""
from .alignment import (
    Convergence,
    LayerAlignment,
    cosine_similarity_convergence,
    input_alignment,
    layer_alignment,
)
from .localization import mask_fraction, relevance_mass
from .faithfulness import Curve, SensitivityN, deletion, insertion, mu_fidelity, sensitivity_n
from .randomization import ClassSensitivity, Randomization, class_sensitivity, randomization_test
from .similarity import cosine, pearson, spearman, ssim
from .spectral import CutoffSelection, lowpass, power_spectrum, select_cutoff

__all__ = [
    "ClassSensitivity",
    "Convergence",
    "Curve",
    "CutoffSelection",
    "LayerAlignment",
    "Randomization",
    "SensitivityN",
    "class_sensitivity",
    "cosine",
    "cosine_similarity_convergence",
    "deletion",
    "input_alignment",
    "insertion",
    "layer_alignment",
    "lowpass",
    "mask_fraction",
    "mu_fidelity",
    "pearson",
    "power_spectrum",
    "relevance_mass",
    "randomization_test",
    "select_cutoff",
    "sensitivity_n",
    "spearman",
    "ssim",
]
