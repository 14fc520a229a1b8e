"""One thread count for the whole library: onnxruntime's sessions and NumPy's BLAS.

The count defaults to the CPUs this process may run on (its affinity, so a Ray actor limited to
one CPU uses one), or ``ONNXATTR_NUM_THREADS`` from the environment; :func:`set_num_threads`
changes it. Sessions made afterwards use it (cached ones are keyed by it), and it is applied to
the BLAS that NumPy links when it is first read and whenever it is set.

The two pools must not fight over the cores. onnxruntime's sessions run with spinning off
(:func:`onnxattr.kernels.onnxruntime.session_options`). OpenBLAS's workers instead keep spinning
for a while after every call (measured here: 0.08 s of CPU in the 0.2 s after one 512x512
product with 2 threads, none with 1), taking a core from the onnxruntime kernel that runs next.
So while onnxruntime's kernels carry the heavy ops, :func:`blas_limit` holds NumPy's BLAS to one
thread; it runs little then.

BLAS is controlled through threadpoolctl where it is installed (any BLAS, OpenMP too), else
through the OpenBLAS that NumPy's wheels bundle (ctypes); with neither, BLAS is left alone and
:func:`blas_threads` answers None.
"""
from __future__ import annotations

import ctypes
import glob
import os
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from .errors import OptionError

ENV = "ONNXATTR_NUM_THREADS"

_lock = threading.Lock()
_count: int | None = None
_blas: "_Blas | None | bool" = False  # False: not looked for yet; None: no control


def available_cpus() -> int:
    """How many CPUs this process may run on (its affinity where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def num_threads() -> int:
    """The library's thread count: set_num_threads's, else ONNXATTR_NUM_THREADS, else the CPUs
    this process may use."""
    global _count
    if _count is None:
        with _lock:
            if _count is None:
                value = os.environ.get(ENV, "").strip()
                count = _checked(value, ENV) if value else available_cpus()
                _apply_to_blas(count)
                _count = count
    return _count


def set_num_threads(n: int | None) -> None:
    """Use ``n`` threads in onnxruntime's sessions and NumPy's BLAS (None: the default again,
    from ONNXATTR_NUM_THREADS or the process's affinity)."""
    global _count
    with _lock:
        if n is None:
            _count = None
        else:
            _count = _checked(n, "set_num_threads(n)")
            _apply_to_blas(_count)
    num_threads()


def _apply_to_blas(n: int) -> None:
    blas = _blas_control()
    if blas is not None:
        blas.set(n)


def blas_threads() -> int | None:
    """The size of NumPy's BLAS thread pool now (None where it cannot be read)."""
    blas = _blas_control()
    return None if blas is None else blas.get()


@contextmanager
def blas_limit(n: int) -> Iterator[None]:
    """Hold NumPy's BLAS to at most ``n`` threads inside the block (restored after)."""
    blas = _blas_control()
    if blas is None:
        yield
        return
    before = blas.get()
    if before <= n:
        yield
        return
    blas.set(n)
    try:
        yield
    finally:
        blas.set(before)


def _checked(value: Any, where: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise OptionError(f"{where}: the thread count must be a positive integer, got {value!r}") from None
    if n < 1 or (isinstance(value, float) and value != n):
        raise OptionError(f"{where}: the thread count must be a positive integer, got {value!r}")
    return n


class _Blas:
    """Get and set the BLAS pool's size."""

    def __init__(self, get: Callable[[], int], set: Callable[[int], None]) -> None:
        self.get, self.set = get, set


def _blas_control() -> _Blas | None:
    global _blas
    if _blas is False:
        _blas = _threadpoolctl() or _bundled_openblas()
    return _blas  # type: ignore[return-value]


def _threadpoolctl() -> _Blas | None:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    import numpy  # noqa: F401  (load its BLAS, so that the controller finds it)

    controller = ThreadpoolController().select(user_api="blas")
    if not controller.lib_controllers:
        return None
    return _Blas(lambda: max(c.num_threads for c in controller.lib_controllers),
                 lambda n: controller.limit(limits=n))


#: (setter, getter) symbol names of OpenBLAS builds: scipy-openblas (NumPy >= 2 wheels) and
#: the 64-bit-integer OpenBLAS of older wheels, then a plain OpenBLAS
_OPENBLAS_SYMBOLS = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)


def _bundled_openblas() -> _Blas | None:
    import numpy

    root = os.path.dirname(os.path.dirname(numpy.__file__))
    here = os.path.dirname(numpy.__file__)
    paths = sorted(glob.glob(os.path.join(root, "numpy.libs", "*openblas*"))
                   + glob.glob(os.path.join(here, ".dylibs", "*openblas*")))
    for path in paths:
        try:
            lib = ctypes.CDLL(path)  # already loaded by numpy: the same handle
        except OSError:
            continue
        for setter, getter in _OPENBLAS_SYMBOLS:
            if hasattr(lib, setter) and hasattr(lib, getter):
                set_fn, get_fn = getattr(lib, setter), getattr(lib, getter)
                set_fn.argtypes, set_fn.restype, get_fn.restype = [ctypes.c_int], None, ctypes.c_int
                return _Blas(lambda: int(get_fn()), lambda n: set_fn(int(n)))
    return None
