"""Where the samples of a cluster run come from, and reading them by their index.

The data is cut into :class:`Part` s: an in-memory array, ``.npy``/``.npz`` batches, image files
(one sample each) and Parquet files (one sample per row, from an array or an image column).
Samples are numbered across the parts in the order the files are listed (folders expanded and
sorted), the order in which the local audit concatenates them, so a sample's index means the same
in both engines. :class:`SampleReader` reads samples by index with the library's own readers
(:mod:`onnxattr.inputs`), so both engines preprocess images alike; a sample that cannot be read
comes back as the reason, and becomes that sample's ``failed`` record.
"""
from __future__ import annotations

import io
import json
import os
import pathlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import InputError, OptionError
from .. import inputs
from ..inputs import IMAGE_SUFFIXES, image_geometry, load_array, load_image

ARRAY_SUFFIXES = (".npy", ".npz")
PARQUET_SUFFIXES = (".parquet", ".pq")
DATA_SUFFIXES = ARRAY_SUFFIXES + IMAGE_SUFFIXES + PARQUET_SUFFIXES
#: array or image columns a Parquet file's samples are taken from when ``column`` is not given
COLUMN_NAMES = ("input", "x", "image")
NPY_MAGIC = b"\x93NUMPY"


@dataclass(frozen=True)
class Part:
    """A run of consecutive samples from one source: ``kind`` is "array" (the in-memory batch),
    "npy", "npz", "image" or "parquet"; its samples have the indices start .. start + count - 1;
    ``shape``: the shape of a batch (array kinds; None for the others)."""

    source: str
    kind: str
    start: int
    count: int
    shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class ImageOptions:
    """How images become samples, as :func:`onnxattr.inputs.load_image` takes them: resized to
    ``size`` (H, W) when given, scaled by ``mean``/``std``, in ``layout`` with ``channels``."""

    size: tuple[int, int] | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str = "NCHW"
    channels: int = 3

    @classmethod
    def for_input(cls, input_shape: Sequence[int | None] | None, layout: str | None = None,
                  resize: tuple[int, int] | None = None, mean: Sequence[float] = (0.0,),
                  std: Sequence[float] = (1.0,)) -> "ImageOptions":
        """The options :func:`onnxattr.inputs.load_batch` uses for a model input of
        ``input_shape``: resized to ``resize``, or to the input's spatial size where it is fixed."""
        lay, size, channels = image_geometry(input_shape, layout, resize)
        return cls(size, tuple(mean), tuple(std), lay, channels)


def data_files(paths: Sequence[str | os.PathLike]) -> list[pathlib.Path]:
    """:func:`onnxattr.inputs.data_files` with Parquet files too; InputError for a given file of
    an unknown type."""
    files = inputs.data_files(paths, DATA_SUFFIXES)
    for f in files:
        if f.suffix.lower() not in DATA_SUFFIXES:
            raise InputError(f"{f}: unknown input type {f.suffix!r}; give {', '.join(DATA_SUFFIXES)}")
    return files


def scan(data: np.ndarray | str | os.PathLike | Sequence[str | os.PathLike],
         column: str | None = None) -> list[Part]:
    """The parts of ``data`` (an array, or files and folders), with the samples each holds."""
    if isinstance(data, np.ndarray):
        if data.ndim == 0 or data.shape[0] == 0:
            raise InputError(f"the data holds no inputs (shape {data.shape})")
        return [Part("array", "array", 0, int(data.shape[0]), tuple(data.shape))]
    paths = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    parts, start = [], 0
    for f in data_files(paths):
        kind, count, shape = _count(f, column)
        if count:
            parts.append(Part(os.path.abspath(f), kind, start, count, shape))
            start += count
    if not start:
        raise InputError(f"the data holds no inputs: {', '.join(map(str, paths))}")
    batches = [p for p in parts if p.shape is not None]
    for p in batches:  # a whole file of other samples is the data's mistake, not a sample's
        if p.shape[1:] != batches[0].shape[1:]:
            raise InputError(f"{p.source}: holds shape {p.shape}, which does not stack with {batches[0].source} "
                             f"(shape {batches[0].shape}) into one batch; give only the input files")
    return parts


def _count(f: pathlib.Path, column: str | None) -> tuple[str, int, tuple[int, ...] | None]:
    suffix = f.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image", 1, None
    if suffix in PARQUET_SUFFIXES:
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(f)
        except (OSError, ValueError) as e:
            raise InputError(f"{f}: cannot read as Parquet: {e}") from e
        parquet_column(f, pf.schema_arrow.names, column)
        return "parquet", pf.metadata.num_rows, None
    if suffix == ".npy":
        a = _open_npy(f)
    else:
        a = load_array(f)
    if a.ndim == 0:
        raise InputError(f"{f}: holds a scalar, not a batch of samples")
    return suffix[1:], int(a.shape[0]), tuple(a.shape)


def _open_npy(f: pathlib.Path) -> np.ndarray:
    """A .npy batch, memory-mapped so that reading a few samples does not read the file."""
    try:
        a = np.load(f, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        what = "empty" if f.is_file() and f.stat().st_size == 0 else "cannot read as a NumPy array"
        raise InputError(f"{f}: {what} ({type(e).__name__}: {e})") from None
    if a.dtype.kind not in "biuf":
        raise InputError(f"{f}: holds {a.dtype} values, not numbers")
    return a


def parquet_column(f: str | os.PathLike, names: Sequence[str], column: str | None) -> str:
    """The column samples are read from: ``column``, else the one of COLUMN_NAMES present, else
    the only column."""
    names = [n for n in names if n != "__index_level_0__"]
    if column is not None:
        if column not in names:
            raise OptionError(f"column={column!r}: {f} has columns {names}")
        return column
    present = [n for n in COLUMN_NAMES if n in names]
    if present:
        return present[0]
    if len(names) == 1:
        return names[0]
    raise OptionError(f"{f} has columns {names}; name the one that holds the samples with column=")


def sample_shape(reader: "SampleReader", parts: Sequence[Part]) -> tuple[int, ...]:
    """The shape every sample must have: that of the first sample of the data."""
    first = reader.read([parts[0].start])[0]
    if isinstance(first, str):
        raise InputError(f"the first sample of the data cannot be read: {first}")
    return tuple(first.shape)


class SampleReader:
    """Reads samples by global index from the parts; the in-memory batch is given as ``array``
    (a NumPy array, or a Ray object reference to one, fetched on first use)."""

    def __init__(self, parts: Sequence[Part], images: ImageOptions | None = None,
                 column: str | None = None, array: Any = None) -> None:
        self.parts = list(parts)
        self.starts = np.array([p.start for p in self.parts])
        self.images = images or ImageOptions()
        self.column = column
        self.array = array

    def read(self, indices: Sequence[int]) -> list[np.ndarray | str]:
        """One float32 sample per index, or the reason it could not be read."""
        out: list[np.ndarray | str] = [""] * len(indices)
        where = np.searchsorted(self.starts, np.asarray(indices), side="right") - 1
        for k in np.unique(where):
            rows = np.flatnonzero(where == k)
            part = self.parts[k]
            local = [int(indices[r]) - part.start for r in rows]
            for r, value in zip(rows, self._read_part(part, local)):
                out[r] = value
        return out

    def _read_part(self, part: Part, rows: list[int]) -> list[np.ndarray | str]:
        try:
            if part.kind == "image":
                return [self._image(part.source)]
            if part.kind == "parquet":
                return self._parquet(part, rows)
            batch = self._array(part)
        except InputError as e:
            return [str(e)] * len(rows)
        return [np.asarray(batch[r], dtype=np.float32) for r in rows]

    def _array(self, part: Part) -> np.ndarray:
        if part.kind == "array":
            if not isinstance(self.array, np.ndarray):
                import ray

                self.array = ray.get(self.array)
            return self.array
        if part.kind == "npy":
            return _open_npy(pathlib.Path(part.source))
        return load_array(part.source)

    def _image(self, source: str | io.BytesIO) -> np.ndarray:
        o = self.images
        return load_image(source, o.size, o.mean, o.std, o.layout, o.channels)

    def _parquet(self, part: Part, rows: list[int]) -> list[np.ndarray | str]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(part.source)
        name = parquet_column(part.source, pf.schema_arrow.names, self.column)
        sizes = np.array([pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)])
        starts = np.cumsum(sizes) - sizes
        group_of = np.searchsorted(starts, rows, side="right") - 1
        groups = sorted({int(g) for g in group_of})
        table = pf.read_row_groups(groups, columns=[name])
        # where each row group read begins in ``table``
        begins = dict(zip(groups, np.cumsum([0] + [int(sizes[g]) for g in groups])))
        take = [int(begins[g] + r - starts[g]) for r, g in zip(rows, group_of)]
        values = table.column(name).combine_chunks().take(pa.array(take, type=pa.int64()))
        if hasattr(values, "to_numpy_ndarray"):  # a tensor column (Arrow's or Ray Data's)
            return [np.asarray(v, dtype=np.float32) for v in values.to_numpy_ndarray()]
        shape = _tensor_shape(pf.schema_arrow.field(name))
        return [self._cell(part.source, name, int(r), v.as_py(), shape) for r, v in zip(rows, values)]

    def _cell(self, source: str, column: str, row: int, value: Any,
              shape: tuple[int, ...] | None) -> np.ndarray | str:
        """A sample from a Parquet cell: .npy or image bytes, or a (nested) list of numbers
        (reshaped to ``shape`` where the column is a tensor column read as its flat storage)."""
        what = f"{source} row {row} column {column!r}"
        try:
            if isinstance(value, bytes):
                if value.startswith(NPY_MAGIC):
                    return np.asarray(np.load(io.BytesIO(value), allow_pickle=False), dtype=np.float32)
                return self._image(io.BytesIO(value))
            if isinstance(value, list):
                a = np.asarray(value, dtype=np.float32)
                return a.reshape(shape) if shape is not None else a
        except InputError as e:
            return f"{what}: {e}"
        except (ValueError, EOFError) as e:
            return f"{what}: not an array of numbers: {e}"
        return f"{what} holds {type(value).__name__}, not an array (a list or tensor) or an image (bytes)"


def _tensor_shape(field: Any) -> tuple[int, ...] | None:
    """The sample shape of a Ray Data fixed-shape tensor column read without Ray's extension
    types registered (it then reads as flat lists, the shape kept in the field's metadata)."""
    meta = field.metadata or {}
    if not meta.get(b"ARROW:extension:name", b"").startswith(b"ray.data.arrow_tensor"):
        return None
    try:
        shape = json.loads(meta.get(b"ARROW:extension:metadata", b""))
    except ValueError:
        return None
    return tuple(shape) if isinstance(shape, list) and all(isinstance(d, int) for d in shape) else None
