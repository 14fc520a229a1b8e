"""Which tensor an attribution is taken with respect to (``load(..., wrt=...)``).

By default it is the model's one float graph input. ``wrt=NAME`` names any float tensor of the
graph (a layer's activation, say); ``wrt="embeddings"`` finds the word-embedding lookup: a Gather
(axis 0) from a float initializer whose indices come from an integer graph input, directly or
through Cast, Unsqueeze or Reshape, the one with the largest table among such Gathers. The graph
inputs that are not the ``wrt`` tensor (token ids, attention masks, other float inputs) are held
fixed at the values given, as in Captum's layer attributions.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper

from .errors import ModelError

if TYPE_CHECKING:
    from .graph import Node, TensorInfo

#: the keyword of ``wrt=`` that finds the word-embedding lookup
EMBEDDINGS = "embeddings"
#: ops an embedding's indices may pass through on their way from the integer graph input
INDEX_PATH = ("Cast", "Unsqueeze", "Reshape", "Identity")


def tensor_dtypes(proto: onnx.ModelProto) -> dict[str, np.dtype]:
    """The element type of every tensor that shape inference typed (inputs, value_info, outputs)."""
    g = proto.graph
    out = {}
    for v in list(g.input) + list(g.value_info) + list(g.output):
        elem = v.type.tensor_type.elem_type
        if elem:
            out[v.name] = np.dtype(helper.tensor_dtype_to_np_dtype(elem))
    return out


def choose_wrt(
    nodes: Sequence[Node],
    constants: Mapping[str, np.ndarray],
    inputs: Sequence[TensorInfo],
    dtypes: Mapping[str, np.dtype],
    input_name: str | None,
    wrt: str | None,
) -> str:
    """The name of the tensor to attribute to; ModelError, naming the choices, where the request
    is ambiguous, unknown, not float, or disagrees with ``input_name``."""
    names = [i.name for i in inputs]
    if wrt is None:
        return _default_input(inputs, input_name)
    if not isinstance(wrt, str) or not wrt:
        raise ModelError(f"wrt must be a tensor name or {EMBEDDINGS!r}, got {wrt!r}")
    name = embedding_lookup(nodes, constants, inputs).outputs[0] if wrt == EMBEDDINGS else wrt
    if input_name is not None and input_name != name:
        raise ModelError(f"wrt={wrt!r} (tensor {name!r}) and input_name={input_name!r} disagree; give one of them")
    produced = {t for n in nodes for t in n.outputs if t}
    if name in constants and name not in names:
        raise ModelError(f"wrt tensor {name!r} is a constant (it does not depend on any graph input)")
    if name not in produced and name not in names:
        raise ModelError(f"wrt: no tensor named {name!r} in the graph; its inputs are {names}")
    kind = dtypes[name].kind if name in dtypes else "f"
    if kind != "f":
        raise ModelError(f"wrt tensor {name!r} is {dtypes[name]}; attributions are taken to a float tensor"
                         + (f" (for token ids: wrt={EMBEDDINGS!r})" if kind in "iu" else ""))
    return name


def _default_input(inputs: Sequence[TensorInfo], input_name: str | None) -> str:
    names = [i.name for i in inputs]
    if input_name is not None:
        chosen = next((i for i in inputs if i.name == input_name), None)
        if chosen is None:
            raise ModelError(f"the model has no input named {input_name!r}; its inputs are {names}")
        if chosen.dtype.kind != "f":
            raise ModelError(f"input {input_name!r} is {chosen.dtype}, not float; attribute to the token "
                             f"embeddings with wrt={EMBEDDINGS!r}, or to a float tensor with wrt=NAME")
        return input_name
    floats = [i.name for i in inputs if i.dtype.kind == "f"]
    if len(floats) == 1:
        return floats[0]
    if not floats:
        raise ModelError(f"the model's inputs {names} are all integer or boolean (token ids?), so there is "
                         f"nothing float to attribute to; load it with wrt={EMBEDDINGS!r} (the word-embedding "
                         f"output) or wrt=NAME (a float tensor inside the graph)")
    raise ModelError(f"the model has {len(floats)} float inputs {floats}; choose one with input_name= "
                     "(the others are held fixed at the values given)")


def embedding_lookup(nodes: Sequence[Node], constants: Mapping[str, np.ndarray],
                     inputs: Sequence[TensorInfo]) -> Node:
    """The word-embedding Gather (see the module docstring); ModelError where there is none, or
    where several tables of the largest size tie (listed)."""
    found = embedding_candidates(nodes, constants, inputs)
    if not found:
        raise ModelError(f"wrt={EMBEDDINGS!r}: no Gather reads a float initializer at indices from an integer "
                         "graph input; name the tensor to attribute to with wrt=NAME")
    size = max(constants[n.inputs[0]].size for n, _ in found)
    best = [n for n, _ in found if constants[n.inputs[0]].size == size]
    if len(best) > 1:
        listed = ", ".join(f"{n.name!r} (table {n.inputs[0]!r} {constants[n.inputs[0]].shape}, output {n.outputs[0]!r})"
                           for n in best)
        raise ModelError(f"wrt={EMBEDDINGS!r}: {len(best)} embedding lookups have tables of the same size: "
                         f"{listed}; choose one with wrt=<its output name>")
    return best[0]


def embedding_candidates(nodes: Sequence[Node], constants: Mapping[str, np.ndarray],
                         inputs: Sequence[TensorInfo]) -> list[tuple[Node, str]]:
    """(Gather, the integer graph input its indices come from) for every embedding lookup."""
    ints = {i.name for i in inputs if i.dtype.kind in "iu"}
    producer = {t: n for n in nodes for t in n.outputs if t}
    out = []
    for n in nodes:
        table = constants.get(n.inputs[0]) if n.op_type == "Gather" else None
        if table is None or table.dtype.kind != "f" or getattr(n.op, "axis", 0) != 0:
            continue
        source = index_source(n.inputs[1], producer)
        if source in ints:
            out.append((n, source))
    return out


def index_source(tensor: str, producer: Mapping[str, Node]) -> str:
    """The tensor that ``tensor`` is computed from through Cast/Unsqueeze/Reshape (itself if none)."""
    while tensor in producer and producer[tensor].op_type in INDEX_PATH:
        tensor = producer[tensor].inputs[0]
    return tensor
