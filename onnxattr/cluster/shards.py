"""The per-sample results of a cluster run on disk: Parquet shards under ``<out>/shards/``.

Each finished batch becomes one file ``part-NNNNNN.parquet`` with one row per sample: the columns
``index`` (the sample's index in the data), ``pid`` (the worker process that computed it),
``attempt`` (1, or more where the batch ran again after a worker died), and the fields of the
record the per-batch function returned. Records hold numbers, strings, lists, dicts and NumPy
arrays; an array is stored as the bytes of its ``.npy`` file (read back with
``allow_pickle=False``), so any Parquet reader sees the shards. A None value reads back as a
missing key. A shard is written under a temporary name and renamed when complete, so a driver
killed mid-write leaves no half shard behind.

``run.json`` beside the shards describes the run (model, data, the samples chosen, settings); a
resumed run must describe the same run, or its shards would mix two audits.
"""
from __future__ import annotations

import io
import json
import os
import pathlib
import shutil
from typing import Any, Iterable

import numpy as np

from ..errors import InputError, OptionError
from .sources import NPY_MAGIC

SHARDS = "shards"
MANIFEST = "run.json"
#: the columns every shard has, besides the record's own fields
COLUMNS = ("index", "pid", "attempt")


def shard_dir(out: str | os.PathLike) -> pathlib.Path:
    return pathlib.Path(out) / SHARDS


def start(out: str | os.PathLike, manifest: dict[str, Any], resume: bool) -> None:
    """Make ``<out>/shards`` ready: a fresh run clears the old shards; a resumed run keeps them,
    after checking that they belong to the same run (OptionError naming what differs)."""
    d = shard_dir(out)
    path = d / MANIFEST
    if resume and path.is_file():
        old = json.loads(path.read_text())
        for key in sorted(set(old) | set(manifest)):
            if old.get(key) != manifest.get(key):
                raise OptionError(f"resume: the shards in {d} are of another run ({key} was {old.get(key)!r}, "
                                  f"now {manifest.get(key)!r}); run without resume to start again")
        for half in d.glob(".*.tmp"):  # what a killed driver was writing
            half.unlink()
        return
    if not resume and d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=1))


def next_number(out: str | os.PathLike) -> int:
    """The number of the next shard ``part-NNNNNN``: one past the highest written."""
    numbers = [int(f.stem.split("-")[1]) for f in shard_dir(out).glob("part-*.parquet") if f.stem.split("-")[1].isdigit()]
    return max(numbers, default=-1) + 1


def write(out: str | os.PathLike, name: str, rows: list[dict[str, Any]]) -> pathlib.Path:
    """Write ``rows`` (records with the COLUMNS) as the shard ``name``.parquet, atomically."""
    import pyarrow.parquet as pq

    d = shard_dir(out)
    final = d / f"{name}.parquet"
    tmp = d / f".{name}.parquet.tmp"
    pq.write_table(encode(rows), tmp)
    os.replace(tmp, final)
    return final


def read(out: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record in ``<out>/shards``, shard by shard in name order (empty where there are none)."""
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for f in sorted(shard_dir(out).glob("*.parquet")):
        try:
            table = pq.read_table(f)
        except (OSError, ValueError) as e:
            raise InputError(f"{f}: not a readable result shard ({e}); run without resume to start again") from e
        rows += [decode(r) for r in table.to_pylist()]
    return rows


def encode(rows: list[dict[str, Any]]) -> "Any":
    """The rows as a pyarrow Table: a column per key (over all rows), arrays as .npy bytes."""
    import pyarrow as pa

    plain = [{k: _plain(v, k) for k, v in r.items()} for r in rows]
    keys = list(dict.fromkeys(k for r in plain for k in r))
    try:
        return pa.table({k: pa.array([r.get(k) for r in plain]) for k in keys})
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise OptionError(f"the per-sample records do not form a table: {e}") from e


def decode(row: dict[str, Any]) -> dict[str, Any]:
    """A shard row as the record it was written from (None values dropped, arrays restored)."""
    return {k: _restore(v) for k, v in row.items() if v is not None}


def _plain(v: Any, key: str) -> Any:
    if isinstance(v, np.ndarray):
        buf = io.BytesIO()
        np.save(buf, v, allow_pickle=False)
        return buf.getvalue()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, dict):
        return {k: _plain(x, f"{key}.{k}") for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x, key) for x in v]
    if isinstance(v, (bytes, bytearray)):
        raise OptionError(f"record field {key!r} holds bytes; records hold numbers, strings, lists, dicts and arrays")
    return v


def _restore(v: Any) -> Any:
    if isinstance(v, bytes) and v.startswith(NPY_MAGIC):
        return np.load(io.BytesIO(v), allow_pickle=False)
    if isinstance(v, dict):
        return {k: _restore(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_restore(x) for x in v]
    return v


def unique(rows: Iterable[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """One record per sample index (the first written), by index."""
    out: dict[int, dict[str, Any]] = {}
    for r in rows:
        out.setdefault(int(r["index"]), r)
    return out
