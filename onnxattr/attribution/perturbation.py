"""Perturbation methods: Occlusion. Their many forward passes run in batches."""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import OptionError
from .gradients import BATCH_SIZE, baseline_array, pass_batch, target_at
from .registry import Option, register

if TYPE_CHECKING:
    from ..model import Model
    from ..ops.base import Array


def _per_axis(value: Any, name: str, n: int) -> tuple[int, ...]:
    t = (value,) * n if isinstance(value, (int, np.integer)) else tuple(value)
    if len(t) != n or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in t):
        raise OptionError(f"{name} must be a positive int or {n} positive ints (one per non-batch axis), got {value!r}")
    return tuple(int(v) for v in t)


@register(
    "occlusion",
    window=Option(1, "patch size: an int for every non-batch axis, or one int per axis"),
    strides=Option(None, "step between patches, as window (default: the window)"),
    baseline=Option(0.0, "value the patch is replaced with: a number or an array broadcastable to x"),
    batch_size=BATCH_SIZE,
)
def occlusion(model: Model, x: Array, target: np.ndarray | None, window: Any, strides: Any,
              baseline: Any, batch_size: int | None) -> Array:
    """Occlusion: R_i = mean over the patches P containing i of f_t(x) - f_t(x with P := baseline).

    Zeiler & Fergus 2014, "Visualizing and understanding convolutional networks". A window of 1
    gives Occlusion-1 (Ancona et al. 2018). Features that no patch covers get 0; as in Captum,
    patches are placed where they fit inside the input.
    """
    xp = model.xp
    feat = x.shape[1:]
    win = _per_axis(window, "window", len(feat))
    step = win if strides is None else _per_axis(strides, "strides", len(feat))
    if any(w > f for w, f in zip(win, feat)):
        raise OptionError(f"window {win} is larger than the input's feature shape {tuple(feat)}")
    batch_size = pass_batch(model, x, batch_size)
    b = xp.broadcast_to(baseline_array(model, x, baseline), x.shape)
    t = target_at(model, x, target)
    n = x.shape[0]
    rows = xp.arange(n)
    base = model.forward(x).reshape(n, -1)[rows, xp.asarray(t)]
    starts = list(itertools.product(*(range(0, f - w + 1, s) for f, w, s in zip(feat, win, step))))
    total = xp.zeros_like(x)
    count = xp.zeros(feat, dtype=x.dtype)
    per_pass = max(1, batch_size // n)
    for p0 in range(0, len(starts), per_pass):
        chunk = starts[p0 : p0 + per_pass]
        batch = xp.broadcast_to(x, (len(chunk),) + x.shape).copy()
        for j, s in enumerate(chunk):
            sl = tuple(slice(a, a + w) for a, w in zip(s, win))
            batch[(j, slice(None)) + sl] = b[(slice(None),) + sl]
        out = model.forward(batch.reshape((-1,) + feat)).reshape(len(chunk), n, -1)
        drop = base[None, :] - out[:, rows, xp.asarray(t)]  # (patches, n)
        for j, s in enumerate(chunk):
            sl = tuple(slice(a, a + w) for a, w in zip(s, win))
            total[(slice(None),) + sl] += drop[j].reshape((n,) + (1,) * len(feat))
            count[sl] += 1
    return total / xp.maximum(count, 1)
