"""External data of an untrusted model: tensor bytes kept in files beside the ``.onnx``.

A tensor's ``location`` is read only from inside one folder: the model file's own folder, or the
``base_dir=`` a caller gives with a ModelProto. An absolute location, a ``..`` component, or a
path that resolves (through symlinks) outside the folder is refused, as is a byte range beyond
the file's end. Messages show names and locations with ``repr`` (control characters escaped).
A ModelProto with external data and no ``base_dir`` is refused rather than read
relative to the process's working directory.
"""
from __future__ import annotations

import ntpath
import os
from typing import Iterator

import onnx

from .errors import ModelError

__all__ = ["external_tensors", "inline_external_data"]


def external_tensors(proto: onnx.ModelProto) -> list[str]:
    """The names of the tensors of ``proto`` (initializers, Constant values, subgraphs,
    functions) that keep their bytes outside the proto."""
    return [t.name for t in _tensors(proto) if _is_external(t)]


def inline_external_data(proto: onnx.ModelProto, folder: str) -> None:
    """Read every external tensor's bytes of ``proto`` from ``folder`` into the tensor itself, in
    place. Raises ModelError, naming the tensor, for a location outside ``folder`` or a byte
    range that the file does not hold."""
    root = os.path.realpath(folder)
    if not os.path.isdir(root):
        raise ModelError(f"the external data folder {folder!r} is not a folder")
    for t in _tensors(proto):
        if _is_external(t):
            data = _read(t, root)
            del t.external_data[:]
            t.data_location = onnx.TensorProto.DEFAULT
            t.raw_data = data


def _read(t: onnx.TensorProto, root: str) -> bytes:
    info = {e.key: e.value for e in t.external_data}
    name = t.name
    location = info.get("location", "")
    path = _confined(location, root, name)
    try:
        offset = int(info.get("offset") or 0)
        size = os.path.getsize(path)
        length = int(info["length"]) if info.get("length") else size - offset
    except ValueError as e:
        raise ModelError(f"tensor {name!r}: external data offset/length is not a number ({e})") from None
    if offset < 0 or length < 0 or offset + length > size:
        raise ModelError(
            f"tensor {name!r}: external data bytes {offset}..{offset + length} lie outside "
            f"{location!r} ({size} bytes)"
        )
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def _confined(location: str, root: str, name: str) -> str:
    """The real path of ``location`` inside ``root``; ModelError where it would leave it."""
    if not location or "\x00" in location:
        raise ModelError(f"tensor {name!r}: external data without a valid location ({location!r})")
    parts = location.replace("\\", "/").split("/")
    if os.path.isabs(location) or ntpath.isabs(location) or ntpath.splitdrive(location)[0] or ".." in parts:
        raise ModelError(
            f"tensor {name!r}: external data location {location!r} must be a path inside the model's "
            f"folder (no absolute path, no '..')"
        )
    path = os.path.realpath(os.path.join(root, *parts))
    if os.path.commonpath([path, root]) != root:
        raise ModelError(f"tensor {name!r}: external data location {location!r} leads outside the model's folder")
    if not os.path.isfile(path):
        raise ModelError(f"tensor {name!r}: external data file {location!r} not found in the model's folder")
    return path


def _is_external(t: onnx.TensorProto) -> bool:
    return t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data) > 0


def _tensors(proto: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    yield from _graph_tensors(proto.graph)
    for f in proto.functions:
        for n in f.node:
            yield from _node_tensors(n)


def _graph_tensors(g: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from g.initializer
    for s in g.sparse_initializer:
        yield s.values
        yield s.indices
    for n in g.node:
        yield from _node_tensors(n)


def _node_tensors(n: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for a in n.attribute:
        if a.HasField("t"):
            yield a.t
        yield from a.tensors
        if a.HasField("sparse_tensor"):
            yield a.sparse_tensor.values
            yield a.sparse_tensor.indices
        for s in a.sparse_tensors:
            yield s.values
            yield s.indices
        if a.HasField("g"):
            yield from _graph_tensors(a.g)
        for g in a.graphs:
            yield from _graph_tensors(g)
