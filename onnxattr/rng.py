"""Random draws that belong to one sample, whatever batch it is in.

``sample_rng(seed, index)`` is the generator of the sample at ``index`` of a data set: seeded by
the pair (seed, index) through NumPy's SeedSequence (spawn key ``(index,)``, as
``SeedSequence(seed).spawn`` would give the index-th child). A method that draws noise or random
subsets per sample from it gives the same numbers whether the sample is attributed alone, in a
batch, in chunks of any size, or on another worker (the Ray engine passes each sample's index in
the whole data set). SmoothGrad draws its noise from it; Sensitivity-n and mu-fidelity subsets
can do the same.
"""
from __future__ import annotations

import numpy as np

from .errors import OptionError


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of sample ``index`` under ``seed`` (both non-negative ints)."""
    if seed < 0 or index < 0:
        raise OptionError(f"seed and index must be non-negative ints, got seed={seed}, index={index}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(index,))))
