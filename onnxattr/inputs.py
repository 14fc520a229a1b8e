"""Reading input batches from files and folders: .npy/.npz arrays and PNG/JPEG images with
preprocessing, text data (.npz files with one array per graph input), vocabularies, and the
seeded sample an audit runs on."""
from __future__ import annotations

import json
import os
import pathlib
import warnings
import zipfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .errors import InputError
from .feeds import check_array, show
from .layout import check_layout

if TYPE_CHECKING:
    from .graph import TensorInfo
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
               mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,),
               fed: TensorInfo | None = None) -> np.ndarray:
    """A float32 batch from image files (one sample each) and/or array files (a batch each).

    Images are resized to ``size``, or to the model's spatial input size where it is fixed.
    Given the graph input ``fed`` (a float input), each file's array is checked against it
    (rank, feature shape, finite values) before the files are joined, so that an InputError
    names the file, not the joined batch.
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
        if fed is not None and fed.dtype.kind == "f":
            check_array(parts[-1], fed, str(p))
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
    the graph input ``model`` reads (also where it is attributed at a layer inside, ``wrt=``);
    InputError where images are given to a model whose input is not an image batch."""
    files = data_files(paths)
    fed = fed_input(model)
    refuse_images(files, fed)
    return load_batch([str(f) for f in files], fed.shape, layout, resize, mean, std, fed)


def fed_input(model: Model) -> TensorInfo:
    """The graph input that ``model`` reads its batch from (also where it is attributed at a
    tensor inside the graph, ``wrt=``)."""
    return next(i for i in model.inputs if i.name == model.graph.needed()[0])


def refuse_images(files: Sequence[str | os.PathLike], fed: TensorInfo) -> None:
    """InputError naming the first image among ``files`` where ``fed`` is not an image batch."""
    image = next((f for f in files if pathlib.Path(f).suffix.lower() in IMAGE_SUFFIXES), None)
    if image is not None and fed.shape is not None and len(fed.shape) != 4:
        raise InputError(f"{image}: an image, but input {fed.name!r} has shape {show(fed.shape)}, not an image "
                         "batch; give .npy/.npz arrays instead of images")


def check_file_shape(name: str, shape: Sequence[int], fed: TensorInfo) -> None:
    """InputError naming the file ``name`` where a batch of ``shape`` does not fit the graph
    input ``fed``: its rank, or a fixed dimension after the batch's (its values are checked as
    each sample is read)."""
    want = fed.shape
    if want is None:
        return
    if len(shape) != len(want):
        raise InputError(f"{name}: holds shape {tuple(shape)} ({len(shape)} dims); input {fed.name!r} "
                         f"expects {len(want)} dims {show(want)}")
    for i, (got, need) in enumerate(zip(shape[1:], want[1:]), start=1):
        if isinstance(need, int) and need > 0 and got != need:
            raise InputError(f"{name}: holds shape {tuple(shape)}; input {fed.name!r} expects {show(want)} "
                             f"(dimension {i} is {got}, not {need})")


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


# ---- text data ---------------------------------------------------------------------------------
#: keys of a text data file besides the graph inputs
TEXT_KEYS = ("target", "relevant")


def takes_feeds(model: Model) -> bool:
    """Whether ``model`` is fed a dict {input name: array}: it reads several inputs, or is
    attributed at a tensor inside the graph (``wrt=``)."""
    return model.graph.head is not None or model.graph.needed() != [model.input_name]


@dataclass
class TextData:
    """A batch of feeds {graph input: array}, and per sample the optional ``target`` (B,) or
    (B, 2) and ``relevant`` (B, T) boolean mask of the deciding tokens."""

    feeds: dict[str, np.ndarray]
    target: np.ndarray | None = None
    relevant: np.ndarray | None = None

    def __len__(self) -> int:
        return int(next(iter(self.feeds.values())).shape[0])

    def rows(self, picked: np.ndarray) -> TextData:
        pick = lambda a: None if a is None else a[picked]  # noqa: E731
        return TextData({k: v[picked] for k, v in self.feeds.items()}, pick(self.target), pick(self.relevant))


def load_feeds(path: str | os.PathLike, model: Model) -> TextData:
    """One .npz file of text data: an array per graph input of ``model`` (``input_ids``,
    ``attention_mask``, ...), optionally ``target`` and ``relevant``; other arrays (a reference
    file's logits, say) are not read. InputError, naming the file, where an input the model
    needs is missing or the arrays do not share a batch size."""
    p = pathlib.Path(path)
    names = [i.name for i in model.inputs]
    if p.suffix.lower() != ".npz":
        raise InputError(f"{p}: model inputs {names} are read from an .npz file with one array per input")
    try:
        data = np.load(p, allow_pickle=False)
        with data:
            files = list(data.files)
            arrays = {k: numeric(data[k], f"{p} (array {k!r})") for k in files if k in names or k in TEXT_KEYS}
    except InputError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise InputError(f"{p}: not a readable .npz file ({type(e).__name__}: {e})") from None
    missing = [k for k in model.graph.needed() if k not in arrays]
    if missing:
        raise InputError(f"{p}: holds arrays {files}; the model needs {missing} too (one array per graph input)")
    feeds = {k: v for k, v in arrays.items() if k in names}
    sizes = {k: v.shape[0] if v.ndim else None for k, v in arrays.items()}
    n = sizes[next(iter(feeds))]
    bad = {k: s for k, s in sizes.items() if s != n}
    if bad:
        raise InputError(f"{p}: arrays {bad} do not have the batch size {n} of the others")
    relevant = arrays.get("relevant")
    if relevant is not None and (relevant.dtype.kind not in "bui" or relevant.ndim != 2):
        raise InputError(f"{p}: 'relevant' must be a boolean (B, T) mask, got {relevant.dtype} {relevant.shape}")
    return TextData(feeds, arrays.get("target"), None if relevant is None else relevant.astype(bool))


def read_feeds(paths: Sequence[str | os.PathLike], model: Model) -> TextData:
    """Text data from .npz files (see :func:`load_feeds`; folders expanded), joined along the
    batch axis."""
    parts = [load_feeds(f, model) for f in data_files(paths)]
    if len(parts) == 1:
        return parts[0]
    keys = set(parts[0].feeds)
    for f, part in zip(paths[1:], parts[1:]):
        if set(part.feeds) != keys:
            raise InputError(f"{f}: holds inputs {sorted(part.feeds)}, the first file {sorted(keys)}")
    join = lambda xs: None if any(x is None for x in xs) else np.concatenate(xs)  # noqa: E731
    try:
        return TextData({k: np.concatenate([p.feeds[k] for p in parts]) for k in keys},
                        join([p.target for p in parts]), join([p.relevant for p in parts]))
    except ValueError as e:
        raise InputError(f"the text data files do not stack into one batch: {e}") from None


def read_feed_data(data: Any, model: Model, sample: int | None, seed: int) -> tuple[TextData, list[str], int, np.ndarray]:
    """The seeded sample of text data (a dict {input name: array} or .npz paths): (sampled data,
    sources, number of inputs, indices picked)."""
    if isinstance(data, Mapping):
        arrays = {k: np.asarray(v) for k, v in data.items()}
        text = TextData({k: v for k, v in arrays.items() if k not in TEXT_KEYS}, arrays.get("target"),
                        None if arrays.get("relevant") is None else arrays["relevant"].astype(bool))
        sources = ["arrays"]
    else:
        paths = [data] if isinstance(data, (str, os.PathLike)) else list(data)
        text = read_feeds(paths, model)
        sources = [str(f) for f in data_files(paths)]
    if len(text) == 0:
        raise InputError("the data holds no inputs")
    picked = sample_indices(len(text), sample, seed)
    return text.rows(picked), sources, len(text), picked


# ---- vocabularies --------------------------------------------------------------------------------
def load_vocab(path: str | os.PathLike) -> list[str | None]:
    """Token strings by id: from a HuggingFace ``tokenizer.json`` (its model's vocabulary and
    its added tokens), or a text file with one token per line (line i = id i). Ids that a
    tokenizer.json leaves out are None."""
    p = pathlib.Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{p}: not a UTF-8 text file ({e})") from None
    if p.suffix.lower() != ".json":
        return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")
    try:
        doc = json.loads(text)
        vocab = doc["model"]["vocab"]
        pairs = ([(tok, int(i)) for tok, i in vocab.items()] if isinstance(vocab, dict)
                 else [(entry[0], i) for i, entry in enumerate(vocab)])  # Unigram: [[token, score], ...]
        pairs += [(t["content"], int(t["id"])) for t in doc.get("added_tokens") or []]
    except (ValueError, KeyError, TypeError, IndexError) as e:
        raise InputError(f"{p}: not a tokenizer.json with a model vocabulary ({type(e).__name__}: {e})") from None
    if not pairs:
        return []
    if min(i for _, i in pairs) < 0 or max(i for _, i in pairs) > 10_000_000:
        raise InputError(f"{p}: token ids must lie in [0, 10000000]")
    out: list[str | None] = [None] * (max(i for _, i in pairs) + 1)
    for tok, i in pairs:
        out[i] = str(tok)
    return out


def token_strings(ids: np.ndarray, vocab: Sequence[str | None] | None) -> list[str]:
    """The strings of token ``ids`` (T,): the vocabulary's, or the id where there is none."""
    return [vocab[i] if vocab is not None and 0 <= i < len(vocab) and vocab[i] is not None else str(i)
            for i in np.asarray(ids).reshape(-1).tolist()]
