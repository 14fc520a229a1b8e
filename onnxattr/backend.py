"""The array module (NumPy on the CPU, CuPy on an NVIDIA GPU) and moving arrays between them.

Op and rule code is written once over an array module ``xp``; :func:`array_module` picks it from
the arrays themselves, so the CPU path never imports cupy.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from .errors import OptionError

DEVICES = ("cpu", "cuda")


def check_device(device: str) -> str:
    """Return ``device`` if it is known; raise :class:`OptionError` otherwise."""
    if device not in DEVICES:
        raise OptionError(f"unknown device {device!r}; choose one of {DEVICES}")
    if device == "cuda":
        cupy()
    return device


def cupy() -> ModuleType:
    """Import cupy, with a clear error where it or a GPU is missing."""
    try:
        import cupy as cp
    except ImportError as e:
        raise OptionError(
            "device='cuda' needs CuPy: pip install 'onnxattr[gpu]' (CUDA 12) "
            "or 'onnxattr[gpu-cuda13]'"
        ) from e
    try:
        cp.cuda.runtime.getDeviceCount()
    except Exception as e:  # cupy raises its own CUDARuntimeError when no driver/GPU is found
        raise OptionError(f"device='cuda' asked for, but no usable GPU was found: {e}") from e
    return cp


def module_for(device: str) -> ModuleType:
    """The array module of ``device``: numpy for 'cpu', cupy for 'cuda'."""
    return cupy() if device == "cuda" else np


def array_module(*arrays: Any) -> ModuleType:
    """The array module of ``arrays``: cupy if any of them is a cupy array, else numpy."""
    for a in arrays:
        if type(a).__module__.startswith("cupy"):
            import cupy as cp

            return cp
    return np


def to_device(a: np.ndarray, device: str) -> Any:
    """Copy a host array to ``device`` (no copy for 'cpu')."""
    return module_for(device).asarray(a) if device == "cuda" else a


def to_host(a: Any) -> np.ndarray:
    """Copy an array to the host as a NumPy array (no copy if it is there already)."""
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)
