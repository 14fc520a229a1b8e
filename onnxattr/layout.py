"""Image layouts: where the channel axis of a batch is (NCHW or NHWC), told or inferred."""
from __future__ import annotations

from typing import Sequence

from .errors import OptionError

LAYOUTS = ("NCHW", "NHWC")


def infer_layout(shape: Sequence[int | None]) -> str:
    """The layout of a 4-D image batch shape: NHWC when the last axis looks like channels
    (1, 3 or 4) and the second does not, NCHW otherwise."""
    if len(shape) != 4:
        raise OptionError(f"an image batch has 4 dimensions; got shape {tuple(shape)}")
    channels = (1, 3, 4)
    if shape[-1] in channels and shape[1] not in channels:
        return "NHWC"
    return "NCHW"


def check_layout(layout: str | None, shape: Sequence[int | None]) -> str:
    """``layout`` if given and valid, else the inferred one."""
    if layout is None:
        return infer_layout(shape)
    if layout not in LAYOUTS:
        raise OptionError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
    if len(shape) != 4:
        raise OptionError(f"layout {layout} needs a 4-D batch; got shape {tuple(shape)}")
    return layout


def channel_axis(layout: str) -> int:
    return 1 if layout == "NCHW" else 3
