"""What ``target`` may be, checked before anything runs and resolved against the output.

- An output of rank 2 or 1 per sample (B, C): an int, one int per sample (B,), or None for each
  sample's argmax. Other ranks but 3 index each sample's flattened output.
- An output of rank 3 is read as (batch, position, class), a causal LM's logits say: the target
  is None (per sample, the argmax at the last position whose attention mask is 1, else at T-1),
  a sequence of B (position, index) pairs, or an int array of shape (B, 2). A bare pair is
  refused: it cannot be told from two per-sample ints.
Floats (``target=1.0``) and booleans are refused.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .backend import array_module, to_host
from .errors import InputError
from .feeds import show

if TYPE_CHECKING:
    from .ops.base import Array

PAIRS = "None, a sequence of B (position, index) pairs, or an int array of shape (B, 2)"


def check_target(target: Any, n: int, out_shape: tuple | None, output: str) -> np.ndarray | None:
    """``target`` as (n,) or (n, 2) int64; None stays None. ``out_shape``: the output's inferred
    shape (None where unknown), which decides the form and the range where its sizes are known."""
    if target is None:
        return None
    if isinstance(target, (float, np.floating, bool, np.bool_)):
        raise InputError(f"target must be an int, ints or (position, index) pairs, got {target!r} "
                         f"({type(target).__name__})")
    try:
        t = np.asarray(target)
    except ValueError as e:
        raise InputError(f"target {target!r} is not a rectangular array of ints: {e}") from None
    if t.dtype.kind not in "iu":
        raise InputError(f"target must hold ints, got {target!r} (dtype {t.dtype})")
    t = t.astype(np.int64)
    rank3 = out_shape is not None and len(out_shape) == 3
    if rank3 and t.ndim < 2:
        bare = " (a bare pair is refused: write [(position, index)] per sample)" if t.shape == (2,) else ""
        raise InputError(f"output {output!r} has shape (batch, position, class) {show(out_shape)}: "
                         f"target must be {PAIRS}; got {target!r}{bare}")
    if t.ndim == 2:
        if t.shape != (n, 2):
            raise InputError(f"target has shape {t.shape}; (position, index) pairs for a batch of {n} "
                             f"have shape ({n}, 2)")
        if out_shape is not None and not rank3:
            raise InputError(f"(position, index) targets need an output of shape (B, T, V); output "
                             f"{output!r} has shape {show(out_shape)}")
        if out_shape is not None:
            check_pairs(t, out_shape[1:], output)
        return t
    t = np.broadcast_to(t, (n,)).copy() if t.ndim == 0 else t
    if t.shape != (n,):
        raise InputError(f"target has {t.size} entries for a batch of {n}")
    classes = _size(out_shape)
    if classes is not None:
        check_range(t, classes, output)
    return t


def resolve_target(target: np.ndarray | None, out: Array, output: str,
                   mask: Array | None = None) -> np.ndarray:
    """The per-sample target for an output batch: the given one (range-checked against ``out``)
    or the argmax (for a rank-3 output, at the last position where ``mask`` is 1)."""
    n = out.shape[0]
    if out.ndim == 3:
        if target is None:
            pos = last_positions(mask, n, out.shape[1])
            xp = array_module(out)
            logits = to_host(out[xp.arange(n), xp.asarray(pos)])
            return np.stack([pos, logits.argmax(axis=1)], axis=1).astype(np.int64)
        if target.ndim != 2:
            raise InputError(f"output {output!r} has shape (batch, position, class) {tuple(out.shape)}: "
                             f"target must be {PAIRS}")
        check_pairs(target, out.shape[1:], output)
        return target
    if target is not None and target.ndim == 2:
        raise InputError(f"(position, index) targets need an output of shape (B, T, V); output {output!r} "
                         f"has shape {tuple(out.shape)}")
    flat = out.reshape(n, -1)
    if target is None:
        return to_host(flat.argmax(axis=1)).astype(np.int64)
    check_range(target, flat.shape[1], output)
    return target


def last_positions(mask: Array | None, n: int, length: int) -> np.ndarray:
    """Per sample, the last position whose mask is 1 (T-1 without a mask, or where none is)."""
    if mask is None or mask.ndim != 2 or mask.shape[1] != length:
        return np.full(n, length - 1, dtype=np.int64)
    on = to_host(mask) != 0
    last = length - 1 - on[:, ::-1].argmax(axis=1)
    return np.where(on.any(axis=1), last, length - 1).astype(np.int64)


def check_pairs(t: np.ndarray, sizes: tuple, output: str) -> None:
    for axis, what in ((0, "position"), (1, "class")):
        size = sizes[axis]
        if isinstance(size, int) and size > 0:
            bad = (t[:, axis] < 0) | (t[:, axis] >= size)
            if bad.any():
                raise InputError(f"target {what} {t[bad, axis].tolist()} out of range: output {output!r} "
                                 f"has {size} {what}s")


def check_range(t: np.ndarray, classes: int, output: str) -> None:
    bad = (t < 0) | (t >= classes)
    if bad.any():
        raise InputError(f"target {t[bad].tolist()} out of range: output {output!r} has {classes} classes")


def values_at(out: Array, target: np.ndarray) -> Array:
    """Each sample's output entry at its resolved target: (B,) from (B,) or (B, 2) targets."""
    xp = array_module(out)
    n = out.shape[0]
    if target.ndim == 2:
        return out[(xp.arange(n),) + tuple(xp.asarray(i) for i in target.T)]
    return out.reshape(n, -1)[xp.arange(n), xp.asarray(target)]


def _size(shape: tuple | None) -> int | None:
    if shape is None or not all(isinstance(d, int) and d > 0 for d in shape[1:]):
        return None
    return int(np.prod(shape[1:]))
