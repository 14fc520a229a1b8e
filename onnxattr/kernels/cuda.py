"""Compiling this package's CUDA sources into CuPy RawKernels, and launching them.

A source refers to its element types by typedef names (``T``, ``I``, ...); :func:`kernel` puts
the typedefs for the dtypes at hand in front and compiles once per combination. Every source
registers itself in :data:`SOURCES`, so that a test can compile them all with nvcc, no GPU needed.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np

#: kernel name -> (CUDA source, the typedef sets (name -> C type) it is compiled for)
SOURCES: dict[str, tuple[str, tuple[dict[str, str], ...]]] = {}

CTYPES = {
    np.dtype(np.float32): "float",
    np.dtype(np.float64): "double",
    np.dtype(np.uint8): "unsigned char",
    np.dtype(np.int32): "int",
    np.dtype(np.uint32): "unsigned int",
    np.dtype(np.uint64): "unsigned long long",
    np.dtype(np.int64): "long long",
}

THREADS = 256
MAX_BLOCKS = 1 << 16


def register(name: str, source: str, *variants: dict[str, str]) -> str:
    """Record ``source`` (defining ``extern "C" __global__ void name(...)``) with the typedef
    sets it is meant for (C type names), and return it."""
    SOURCES[name] = (source, variants)
    return source


def preamble(**types: Any) -> str:
    """``typedef <ctype> <name>;`` for each type, as the compiled source starts."""
    return "".join(f"typedef {CTYPES[np.dtype(t)]} {k};\n" for k, t in sorted(types.items()))


def kernel(name: str, **types: Any) -> Any:
    """The RawKernel ``name`` compiled for the given typedefs (dtypes), cached."""
    return _compiled(name, tuple(sorted((k, np.dtype(t).str) for k, t in types.items())))


@functools.lru_cache(maxsize=None)
def _compiled(name: str, types: tuple[tuple[str, str], ...]) -> Any:
    import cupy as cp

    source = preamble(**dict(types)) + SOURCES[name][0]
    return cp.RawKernel(source, name)


def blocks(n: int) -> int:
    """Blocks of :data:`THREADS` for ``n`` grid-stride work items."""
    return max(1, min(-(-n // THREADS), MAX_BLOCKS))


def launch(name: str, n: int, args: tuple, **types: Any) -> None:
    """Run kernel ``name`` over ``n`` work items (a 1-D grid-stride loop in the kernel)."""
    kernel(name, **types)((blocks(n),), (THREADS,), args)
