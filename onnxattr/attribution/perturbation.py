"""Perturbation methods: Occlusion. Their many forward passes run in batches."""
from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import OptionError
from ..feeds import stack
from ..layout import infer_layout
from ..targets import values_at
from .gradients import Feeds, baseline_of, pass_batch, target_at, tile_target
from .options import BATCH_SIZE, Int, Numeric, Option, Window
from .registry import register

if TYPE_CHECKING:
    from ..model import Model
    from ..ops.base import Array


def windows(value: Any, name: str, feat: tuple[int, ...]) -> tuple[int, ...]:
    """``value`` (an int, or one int per non-batch axis) as one int per non-batch axis of a batch
    with feature shape ``feat``. A single int is a window over the axes a user means: the two
    spatial axes of an image (NCHW or NHWC, as :func:`onnxattr.layout.infer_layout` reads the
    shape; the channels whole), the features of (B, F), the tokens of (B, T, H) (the hidden
    axis whole), every axis otherwise."""
    if not isinstance(value, (int, np.integer)):
        t = tuple(int(v) for v in value)
        if len(t) != len(feat):
            raise OptionError(f"{name} {value!r} has {len(t)} entries; give an int or {len(feat)} ints, one per "
                              f"non-batch axis of the attributed tensor's shape {feat}")
        return t
    v = int(value)
    if len(feat) == 3:
        layout = infer_layout((None,) + feat)
        return (feat[0], v, v) if layout == "NCHW" else (v, v, feat[2])
    if len(feat) == 2:
        return (v, feat[1])
    return (v,) * len(feat)


@register(
    "occlusion",
    window=Option(1, "patch size: an int (the spatial axes of an image, the features of (B, F), the tokens "
                  "of (B, T, H); the other axes whole), or one int per non-batch axis", Window()),
    strides=Option(None, "step between patches, as window (default: the window)", Window(none=True)),
    baseline=Option(0.0, "value the patch is replaced with: a number or an array broadcastable to the "
                    "attributed tensor", Numeric()),
    baseline_token=Option(None, "as integrated_gradients' baseline_token: patches take that token's embedding",
                          Int(0, None, none=True)),
    batch_size=BATCH_SIZE,
)
def occlusion(model: Model, x: Feeds, target: np.ndarray | None, window: Any, strides: Any,
              baseline: Any, baseline_token: int | None, batch_size: int | None) -> Array:
    """Occlusion: R_i = mean over the patches P containing i of f_t(x) - f_t(x with P := baseline).

    Zeiler & Fergus 2014, "Visualizing and understanding convolutional networks". A window of 1
    gives Occlusion-1 (Ancona et al. 2018). Features that no patch covers get 0; as in Captum,
    patches are placed where they fit inside the input.
    """
    feeds, xp = x, model.xp
    x = feeds[model.input_name]
    feat = tuple(x.shape[1:])
    win = windows(window, "window", feat)
    step = win if strides is None else windows(strides, "strides", feat)
    if any(w > f for w, f in zip(win, feat)):
        raise OptionError(f"window {win} is larger than the attributed tensor's feature shape {feat}")
    batch_size = pass_batch(model, x, batch_size)
    b = xp.broadcast_to(baseline_of(model, feeds, baseline, baseline_token), x.shape)
    t = target_at(model, feeds, target)
    n = x.shape[0]
    base = values_at(model.forward(feeds), t)
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
        out = model.forward(stack(feeds, model.input_name, batch.reshape((-1,) + feat)))
        drop = base[None, :] - values_at(out, tile_target(t, len(chunk))).reshape(len(chunk), n)
        for j, s in enumerate(chunk):
            sl = tuple(slice(a, a + w) for a, w in zip(s, win))
            total[(slice(None),) + sl] += drop[j].reshape((n,) + (1,) * len(feat))
            count[sl] += 1
    return total / xp.maximum(count, 1)
