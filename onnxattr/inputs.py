"""Reading input batches from files: .npy/.npz arrays and PNG/JPEG images with preprocessing."""
from __future__ import annotations

import os
import pathlib
from typing import Sequence

import numpy as np

from .errors import InputError
from .layout import check_layout

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def load_array(path: str | os.PathLike) -> np.ndarray:
    """A batch from .npy, or from .npz (the array named 'input' or 'x', else the only array)."""
    p = pathlib.Path(path)
    try:
        data = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"{p}: cannot read as a NumPy array: {e}") from e
    if isinstance(data, np.ndarray):
        return data
    names = list(data.files)
    for key in ("input", "x"):
        if key in names:
            return data[key]
    if len(names) == 1:
        return data[names[0]]
    raise InputError(f"{p} holds arrays {names}; name the batch 'input' or 'x'")


def load_image(path: str | os.PathLike, size: tuple[int, int] | None, mean: Sequence[float],
               std: Sequence[float], layout: str, channels: int = 3) -> np.ndarray:
    """One image as a float32 (C, H, W) or (H, W, C) sample: RGB (or grey) in [0, 1], resized
    to ``size`` (H, W) if given, then (x - mean) / std per channel."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path)
        img = img.convert("L" if channels == 1 else "RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise InputError(f"{path}: not a readable image: {e}") from e
    if size is not None:
        img = img.resize((size[1], size[0]), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32) / 255.0
    if x.ndim == 2:
        x = x[..., None]
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.moveaxis(x, -1, 0) if layout == "NCHW" else x


def load_batch(paths: Sequence[str | os.PathLike], input_shape: Sequence[int | None] | None,
               layout: str | None = None, size: tuple[int, int] | None = None,
               mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,)) -> np.ndarray:
    """A float32 batch from image files (one sample each) and/or array files (a batch each).

    Images are resized to ``size``, or to the model's spatial input size where it is fixed.
    """
    parts = []
    for p in paths:
        suffix = pathlib.Path(p).suffix.lower()
        if suffix in (".npy", ".npz"):
            parts.append(np.asarray(load_array(p), dtype=np.float32))
        elif suffix in IMAGE_SUFFIXES:
            shape = tuple(input_shape) if input_shape is not None else (None, 3, None, None)
            lay = check_layout(layout, shape)
            spatial = shape[2:4] if lay == "NCHW" else shape[1:3]
            channels = shape[1] if lay == "NCHW" else shape[3]
            want = size or (tuple(spatial) if all(isinstance(d, int) for d in spatial) else None)
            parts.append(load_image(p, want, mean, std, lay, channels if channels in (1, 3) else 3)[None])
        else:
            raise InputError(f"{p}: unknown input type {suffix!r}; give .npy, .npz or an image ({', '.join(IMAGE_SUFFIXES)})")
    if not parts:
        raise InputError("no input files given")
    try:
        return np.concatenate(parts, axis=0)
    except ValueError as e:
        raise InputError(f"the inputs do not stack into one batch: {e}") from e
