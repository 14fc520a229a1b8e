"""The array module (NumPy on the CPU, CuPy on an NVIDIA GPU) and moving arrays between them.

Op and rule code is written once over an array module ``xp``; :func:`array_module` picks it from
the arrays themselves, so the CPU path never imports cupy. Everything that knows about CuPy lives
here (and in :mod:`onnxattr.kernels`, imported only once cupy arrays exist): the import and its
errors, the device check, out-of-memory detection, synchronisation.

``ONNXATTR_CUDA_KERNELS=0`` in the environment turns the custom kernels off, so that the plain
CuPy composition of every op and rule runs instead (for bisecting a kernel bug).
"""
from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType
from typing import Any, Sequence

import numpy as np

from .errors import OptionError

DEVICES = ("cpu", "cuda")
_CUPY: ModuleType | None = None


def check_device(device: str) -> str:
    """Return ``device`` if it is known and usable; raise :class:`OptionError` otherwise."""
    if device not in DEVICES:
        raise OptionError(f"unknown device {device!r}; choose one of {DEVICES}")
    if device == "cuda":
        cupy()
    return device


def cupy() -> ModuleType:
    """Import cupy, with a clear error where it or a GPU is missing (checked once)."""
    global _CUPY
    if _CUPY is not None:
        return _CUPY
    try:
        import cupy as cp
    except ImportError as e:
        raise OptionError(
            "device='cuda' needs CuPy: pip install 'onnxattr[gpu]' (CUDA 12) "
            "or 'onnxattr[gpu-cuda13]' (CUDA 13)"
        ) from e
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as e:  # cupy raises its own CUDARuntimeError when no driver/GPU is found
        raise OptionError(f"device='cuda' asked for, but no usable GPU was found: {e}") from e
    if count < 1:
        raise OptionError("device='cuda' asked for, but CUDA reports no GPU")
    _CUPY = cp
    return cp


def gpu_available() -> bool:
    """Whether device='cuda' would work: cupy imports and a GPU answers. Never raises, and does
    not import cupy where it is not installed."""
    if "cupy" not in sys.modules and importlib.util.find_spec("cupy") is None:
        return False
    try:
        cp = cupy()
        cp.zeros(1).sum().item()  # a driver that loads but cannot run a kernel counts as no GPU
    except Exception:
        return False
    return True


def module_for(device: str) -> ModuleType:
    """The array module of ``device``: numpy for 'cpu', cupy for 'cuda'."""
    return cupy() if device == "cuda" else np


def is_device_array(a: Any) -> bool:
    """Whether ``a`` is a cupy array (checked without importing cupy)."""
    return type(a).__module__.startswith("cupy")


def array_module(*arrays: Any) -> ModuleType:
    """The array module of ``arrays``: cupy if any of them is a cupy array, the ONNX writer of
    :mod:`onnxattr.compiled.symbolic` if any is a symbolic tensor, else numpy."""
    for a in arrays:
        if is_device_array(a):
            import cupy as cp

            return cp
        module = getattr(type(a), "array_module", None)
        if module is not None:
            return module
    return np


def to_device(a: np.ndarray, device: str) -> Any:
    """Copy a host array to ``device`` (no copy for 'cpu')."""
    return module_for(device).asarray(a) if device == "cuda" else a


def to_host(a: Any) -> np.ndarray:
    """Copy an array to the host as a NumPy array (no copy if it is there already)."""
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def on_one_device(arrays: Sequence[Any]) -> list[Any]:
    """A node's inputs with the host arrays that must meet device arrays moved to the GPU.

    CuPy's elementwise functions refuse NumPy arrays, and a graph computes some tensors on the
    host: shapes and what is made from them (Shape -> Cast -> Div, ConstantOfShape, Range). Where
    any input is on the GPU, host float and bool arrays go there too; host integer arrays stay
    (shapes, axes and indices, read with ``ops.base.host_ints`` or taken by CuPy's indexing as
    they are) unless an integer input is on the GPU as well (ArgMax -> Add).
    """
    device = [a for a in arrays if is_device_array(a)]
    if not device:
        return list(arrays)
    cp = cupy()
    ints = any(a.dtype.kind in "iu" for a in device)
    return [
        cp.asarray(a) if isinstance(a, np.ndarray) and (a.dtype.kind in "fcb" or ints) else a
        for a in arrays
    ]


def use_kernels(a: Any) -> bool:
    """Whether the custom CUDA kernels of :mod:`onnxattr.kernels` should run on array ``a``."""
    return is_device_array(a) and os.environ.get("ONNXATTR_CUDA_KERNELS", "1") != "0"


def is_out_of_memory(e: BaseException) -> bool:
    """Whether ``e`` says the GPU ran out of memory (CuPy's pool, cuBLAS or the runtime)."""
    from .errors import DeviceMemoryError

    if isinstance(e, DeviceMemoryError):
        return False  # already the final answer: one sample does not fit
    if isinstance(e, MemoryError):  # cupy.cuda.memory.OutOfMemoryError is a MemoryError
        return True
    text = str(e)
    return type(e).__module__.startswith(("cupy", "cupy_backends")) and any(
        s in text for s in ("ALLOC_FAILED", "cudaErrorMemoryAllocation", "out of memory")
    )


def release_memory() -> None:
    """Hand CuPy's cached blocks back to the driver (after an out-of-memory error)."""
    if _CUPY is not None:
        _CUPY.get_default_memory_pool().free_all_blocks()
        _CUPY.get_default_pinned_memory_pool().free_all_blocks()


def memory_report() -> str:
    """The GPU's free/total memory and CuPy's pool, for error messages ('' without a GPU)."""
    if _CUPY is None:
        return ""
    try:
        free, total = _CUPY.cuda.runtime.memGetInfo()
        pool = _CUPY.get_default_memory_pool()
        limit = pool.get_limit()
    except Exception:
        return ""
    gib = 2.0**30
    lim = f", pool limit {limit / gib:.2f} GiB" if limit else ""
    return (f"{free / gib:.2f} GiB free of {total / gib:.2f} GiB, CuPy's pool holds "
            f"{pool.total_bytes() / gib:.2f} GiB{lim}")


def synchronize(a: Any = None) -> None:
    """Wait for the GPU's queued work (no-op on the CPU); for timing."""
    if _CUPY is not None and (a is None or is_device_array(a)):
        _CUPY.cuda.get_current_stream().synchronize()
