"""What a caller feeds a model: checked per graph input, and batches of feeds cut and stacked by
rows.

A model is fed a dict {graph input name: array}, or one array where it has a single input. Each
array is checked against its input's declaration: a NumPy array (not a masked one), of the
declared dtype kind (float inputs exactly the declared float type; integer inputs any integer
type, cast to the declared one; boolean inputs bool), of the declared rank and fixed dimensions,
non-empty, finite (floats), and every input with the same batch size. Checked arrays are
C-contiguous (views are copied), so that a view gives the numbers of its contiguous copy.

Methods that put many copies of a batch through the model (Integrated Gradients, SmoothGrad,
Occlusion, DeepLIFT) stack the copies copy-major: row ``r`` of a stack of ``k`` copies of an
``n``-sample batch is sample ``r % n``. :func:`stack` builds such a feed dict, repeating the
inputs held fixed alongside the attributed tensor; :func:`rows` cuts any feed dict by rows.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .backend import array_module, is_device_array, to_host
from .errors import InputError

if TYPE_CHECKING:
    from .graph import TensorInfo
    from .ops.base import Array


def check_feeds(feeds: Any, inputs: Sequence[TensorInfo], what: str = "x",
                required: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """``feeds`` as {input name: checked host array}; InputError naming the input otherwise.
    ``required``: the inputs the graph reads (default: all); the others may be given (checked,
    then unused) or left out."""
    names = [i.name for i in inputs]
    need = names if required is None else [k for k in names if k in set(required)]
    if not isinstance(feeds, Mapping):
        if len(need) != 1:
            raise InputError(f"the model has inputs {need}; pass {what} as a dict {{input name: array}}")
        feeds = {need[0]: feeds}
    missing = [k for k in need if k not in feeds]
    unknown = [k for k in feeds if k not in names]
    if missing or unknown:
        parts = ([f"missing {missing}"] if missing else []) + ([f"unknown {unknown}"] if unknown else [])
        raise InputError(f"{what}: {'; '.join(parts)}; the model's inputs are {names}")
    label = (lambda i: what) if len(inputs) == 1 else (lambda i: f"{what}[{i.name!r}]")
    out = {i.name: check_array(feeds[i.name], i, label(i)) for i in inputs if i.name in feeds}
    sizes = {k: v.shape[0] for k, v in out.items()}
    if len(set(sizes.values())) > 1:
        raise InputError(f"{what}: the inputs' batch sizes differ: {sizes}")
    return out


def check_array(a: Any, info: TensorInfo, what: str) -> np.ndarray:
    """``a`` checked against the graph input ``info`` (see the module docstring)."""
    if isinstance(a, np.ma.MaskedArray):
        raise InputError(f"{what} is a masked array; pass a plain array (e.g. {what}.filled(value))")
    if is_device_array(a):
        a = to_host(a)
    if not isinstance(a, np.ndarray):
        raise InputError(f"{what} must be a numpy array, got {type(a).__name__}")
    want = info.dtype
    if want.kind == "f":
        if a.dtype != want:
            raise InputError(f"{what} must be {want}, got {a.dtype}; convert with {what}.astype(np.{want})")
    elif want.kind in "iu":
        if a.dtype.kind not in "iu":
            raise InputError(f"{what} must hold integers ({want}: input {info.name!r}), got {a.dtype}")
        a = a.astype(want, copy=False)
    elif want.kind == "b" and a.dtype.kind != "b":
        raise InputError(f"{what} must be bool (input {info.name!r}), got {a.dtype}")
    shape = info.shape
    if a.ndim == 0:
        raise InputError(f"{what} is a scalar; input {info.name!r} takes a batch, batch first")
    if shape is not None:
        if a.ndim != len(shape):
            raise InputError(f"{what} has shape {a.shape} ({a.ndim} dims); input {info.name!r} "
                             f"expects {len(shape)} dims {show(shape)}")
        for i, (got, want_dim) in enumerate(zip(a.shape[1:], shape[1:]), start=1):
            if isinstance(want_dim, int) and want_dim > 0 and got != want_dim:
                raise InputError(f"{what} has shape {a.shape}; input {info.name!r} expects {show(shape)} "
                                 f"(dimension {i} is {got}, not {want_dim})")
    if a.shape[0] == 0:
        raise InputError(f"{what} is an empty batch")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise InputError(f"{what} contains NaN or infinite values")
    # C order: a Fortran-ordered or strided view must give the contiguous array's numbers, and
    # kernels (onnxruntime's, BLAS) sum in an order that follows the memory layout
    return np.ascontiguousarray(a)


def show(shape: tuple) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


def n_rows(feeds: Mapping[str, Array]) -> int:
    return next(iter(feeds.values())).shape[0]


def rows(feeds: Mapping[str, Array], start: int, stop: int) -> dict[str, Array]:
    """Rows [start, stop) of every feed."""
    return {k: v[start:stop] for k, v in feeds.items()}


def stack(feeds: Mapping[str, Array], name: str, x: Array) -> dict[str, Array]:
    """``feeds`` with ``x`` (k copies of the batch, copy-major) under ``name`` and every other
    feed repeated k times to match."""
    n = n_rows(feeds)
    k, rest = divmod(x.shape[0], n)
    if rest:
        raise ValueError(f"a stack of {x.shape[0]} rows is not whole copies of a batch of {n}")
    out = {key: v if k == 1 else array_module(v).tile(v, (k,) + (1,) * (v.ndim - 1))
           for key, v in feeds.items() if key != name}
    out[name] = x
    return out
