"""Reading input batches from files and folders: .npy/.npz arrays and PNG/JPEG images with
preprocessing, and the seeded sample an audit runs on."""
from __future__ import annotations

import os
import pathlib
import warnings
import zipfile
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .errors import InputError
from .layout import check_layout

if TYPE_CHECKING:
    from .model import Model

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def load_array(path: str | os.PathLike) -> np.ndarray:
    """A batch from .npy, or from .npz (the array named 'input' or 'x', else the only array).

    InputError, naming the file, for anything that is not a plain numeric array: an empty,
    truncated or corrupt file, pickled objects (never unpickled: that can run code), strings,
    complex numbers."""
    p = pathlib.Path(path)
    try:
        data = np.load(p, allow_pickle=False)
        if isinstance(data, np.ndarray):
            return numeric(data, str(p))
        with data:
            names = list(data.files)
            key = next((k for k in ("input", "x") if k in names), names[0] if len(names) == 1 else None)
            if key is None:
                raise InputError(f"{p} holds arrays {names}; name the batch 'input' or 'x'")
            return numeric(data[key], f"{p} (array {key!r})")
    except InputError:
        raise
    except ValueError as e:
        if "Object arrays" in str(e):
            raise InputError(f"{p}: holds pickled Python objects, which are not read (unpickling can run "
                             f"code); save a numeric array") from None
        if "pickle" in str(e):
            raise InputError(f"{p}: not a .npy/.npz file; it could only be read as a pickle, which is refused "
                             f"(unpickling can run code)") from None
        raise InputError(f"{p}: cannot read as a NumPy array: {e}") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        what = "empty" if p.is_file() and p.stat().st_size == 0 else "not a readable .npy/.npz file"
        raise InputError(f"{p}: {what} ({type(e).__name__}: {e})") from None


def numeric(a: np.ndarray, what: str) -> np.ndarray:
    """``a`` if it holds real numbers (float, int, bool); InputError naming ``what`` otherwise."""
    if a.dtype.kind not in "fiub":
        kind = {"c": "complex numbers", "U": "strings", "S": "bytes", "O": "Python objects",
                "M": "dates", "m": "time spans", "V": "structured records"}.get(a.dtype.kind, "non-numeric values")
        raise InputError(f"{what}: holds {kind} (dtype {a.dtype}); the model takes real numbers")
    return a


def load_image(path: str | os.PathLike, size: tuple[int, int] | None, mean: Sequence[float],
               std: Sequence[float], layout: str, channels: int = 3) -> np.ndarray:
    """One image as a float32 (C, H, W) or (H, W, C) sample: RGB (or grey) in [0, 1], resized
    to ``size`` (H, W) if given, then (x - mean) / std per channel."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
            img = img.convert("L" if channels == 1 else "RGB")
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise InputError(f"{path}: the image is too large to read safely ({e})") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
        raise InputError(f"{path}: not a readable image: {e}") from e
    if size is not None:
        img = img.resize((size[1], size[0]), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32) / 255.0
    if x.ndim == 2:
        x = x[..., None]
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.moveaxis(x, -1, 0) if layout == "NCHW" else x


def image_geometry(input_shape: Sequence[int | None] | None, layout: str | None = None,
                   size: tuple[int, int] | None = None) -> tuple[str, tuple[int, int] | None, int]:
    """How an image becomes a sample of a model input of ``input_shape``: (layout, size (H, W)
    to resize to: ``size``, or the input's spatial size where it is fixed, else None; channels,
    1 or 3)."""
    shape = tuple(input_shape) if input_shape is not None else (None, 3, None, None)
    lay = check_layout(layout, shape)
    spatial = shape[2:4] if lay == "NCHW" else shape[1:3]
    channels = shape[1] if lay == "NCHW" else shape[3]
    want = size or (tuple(spatial) if all(isinstance(d, int) for d in spatial) else None)
    return lay, want, channels if channels in (1, 3) else 3


def load_batch(paths: Sequence[str | os.PathLike], input_shape: Sequence[int | None] | None,
               layout: str | None = None, size: tuple[int, int] | None = None,
               mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,)) -> np.ndarray:
    """A float32 batch from image files (one sample each) and/or array files (a batch each).

    Images are resized to ``size``, or to the model's spatial input size where it is fixed.
    """
    parts, names = [], []
    for p in paths:
        suffix = pathlib.Path(p).suffix.lower()
        names.append(str(p))
        if suffix in (".npy", ".npz"):
            parts.append(np.asarray(load_array(p), dtype=np.float32))
        elif suffix in IMAGE_SUFFIXES:
            lay, want, channels = image_geometry(input_shape, layout, size)
            parts.append(load_image(p, want, mean, std, lay, channels)[None])
        else:
            raise InputError(f"{p}: unknown input type {suffix!r}; give .npy, .npz or an image ({', '.join(IMAGE_SUFFIXES)})")
    if not parts:
        raise InputError("no input files given")
    for name, part in zip(names, parts):
        if part.ndim == 0 or part.shape[1:] != parts[0].shape[1:]:
            raise InputError(f"{name}: holds shape {part.shape}, which does not stack with {names[0]} "
                             f"(shape {parts[0].shape}) into one batch; give only the input files")
    return np.concatenate(parts, axis=0)


DATA_SUFFIXES = (".npy", ".npz") + IMAGE_SUFFIXES


def data_files(paths: Sequence[str | os.PathLike], suffixes: Sequence[str] = DATA_SUFFIXES) -> list[pathlib.Path]:
    """The files named by ``paths``: files as given, folders expanded to their files of
    ``suffixes`` (default: images and .npy/.npz files; sorted). InputError for a path that does
    not exist or a folder without such files."""
    files: list[pathlib.Path] = []
    for p in map(pathlib.Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in suffixes)
            if not found:
                raise InputError(f"{p}: folder holds no images or data files ({', '.join(suffixes)})")
            files += found
        elif p.is_file():
            files.append(p)
        elif p.exists():
            raise InputError(f"{p}: not a file or folder")
        else:
            raise InputError(f"{p}: no such file or folder")
    if not files:
        raise InputError("no input files given")
    return files


def read_inputs(paths: Sequence[str | os.PathLike], model: Model, layout: str | None = None,
                resize: tuple[int, int] | None = None, mean: Sequence[float] = (0.0,),
                std: Sequence[float] = (1.0,)) -> np.ndarray:
    """A float32 batch from files and folders (see :func:`data_files`), images preprocessed for
    ``model``; InputError where images are given to a model whose input is not an image batch."""
    files = data_files(paths)
    shape = model.input_shape
    if any(f.suffix.lower() in IMAGE_SUFFIXES for f in files) and shape is not None and len(shape) != 4:
        raise InputError(f"input {model.input_name!r} has shape {tuple(shape)}, not an image batch; "
                         f"give .npy/.npz arrays instead of images")
    return load_batch([str(f) for f in files], shape, layout, resize, mean, std)


def read_data(data: Any, model: Model, sample: int | None, seed: int, layout: str | None,
              resize: tuple[int, int] | None, mean: Sequence[float],
              std: Sequence[float]) -> tuple[np.ndarray, list[str], int, np.ndarray]:
    """The seeded sample of ``data`` (an array, or paths as :func:`read_inputs` takes them):
    (sampled batch, sources, number of inputs, indices picked). Image files are sampled before
    they are read."""
    if isinstance(data, np.ndarray):
        x, sources = data, ["array"]
    else:
        paths = [data] if isinstance(data, (str, os.PathLike)) else list(data)
        files = data_files(paths)
        sources = [str(f) for f in files]
        if all(f.suffix.lower() in IMAGE_SUFFIXES for f in files):  # one sample per file: sample paths first
            picked = sample_indices(len(files), sample, seed)
            return read_inputs([files[i] for i in picked], model, layout, resize, mean, std), sources, len(files), picked
        x = read_inputs(files, model, layout, resize, mean, std)
    if x.ndim == 0 or x.shape[0] == 0:
        raise InputError(f"the data holds no inputs (shape {x.shape})")
    picked = sample_indices(x.shape[0], sample, seed)
    return x[picked], sources, int(x.shape[0]), picked


def sample_indices(n: int, sample: int | None, seed: int) -> np.ndarray:
    """``sample`` of ``n`` indices drawn without replacement with ``seed``, sorted (all of them
    where ``sample`` is 0, None or at least n)."""
    if not sample or sample >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))
