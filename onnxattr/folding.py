"""Constant folding within a memory bound.

Every node whose inputs are all known at load time (Shape/Gather/Concat chains that build
Reshape targets, ConstantOfShape, Constant, casts and transposes of weights) is evaluated once,
and its outputs become constants. A model is untrusted input: a 179-byte ``Expand`` can ask for
37 GiB. So the size of each result is found from its shape before it is computed (the shape ONNX
inference gives for the node, with the actual constant inputs), and the node is refused, by name,
where one result would exceed ``max_bytes``, or where all results together would exceed
``max_bytes`` plus four times the model's own tensors (a float32 copy of each int8 weight).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import ModelError
from .text import escape_text

if TYPE_CHECKING:
    from .graph import Node

#: The default limit on one folded constant (``load(..., max_fold_bytes=)``).
MAX_FOLD_BYTES = 256 << 20
#: Inputs of at most this many elements are handed to ONNX inference with their values (shape
#: tensors, scales, pads, Range bounds); larger ones with their type and shape only.
_VALUE_LIMIT = 4096
#: Folding may produce this many times the bytes of the model's own tensors, plus max_bytes.
_OWN_FACTOR = 4


def fold_constants(
    nodes: list[Node],
    constants: dict[str, np.ndarray],
    shapes: dict[str, tuple],
    dtypes: dict[str, np.dtype],
    proto: onnx.ModelProto,
    max_bytes: int = MAX_FOLD_BYTES,
) -> list[Node]:
    """Evaluate every node whose inputs are all known, adding its outputs to ``constants``;
    return the nodes that are left.

    A Shape node folds when shape inference knows every dimension of its input (nothing is
    allocated for it). Raises ModelError, naming the node, for a result over the limits.
    """
    budget = max_bytes + _OWN_FACTOR * sum(a.nbytes for a in constants.values())
    used = 0
    kept = []
    for n in nodes:
        if n.op_type == "Shape" and _static(shapes.get(n.inputs[0])):
            full = np.asarray(shapes[n.inputs[0]], dtype=np.int64)
            constants[n.outputs[0]] = n.op.forward(np.broadcast_to(np.uint8(0), tuple(full)))[0][0]
            continue
        if not all(t == "" or t in constants for t in n.inputs):
            kept.append(n)
            continue
        args = [constants[t] if t else None for t in n.inputs]
        size = result_bytes(n, args, shapes, dtypes, proto)
        used += size
        if size > max_bytes or used > budget:
            why = (f"would allocate {_human(size)}, over max_fold_bytes ({_human(max_bytes)})" if size > max_bytes
                   else f"would bring the folded constants to {_human(used)}, over {_human(budget)} "
                        f"(max_fold_bytes plus {_OWN_FACTOR}x the model's own tensors)")
            raise ModelError(
                f"node {n.name!r} ({escape_text(n.op_type)}): folding it at load {why}; "
                f"load(..., max_fold_bytes=) raises the limit for a model you trust"
            )
        outs, _ = n.op.forward(*args)
        for t, v in zip(n.outputs, outs):
            if t:
                constants[t] = np.asarray(v)
    return kept


def result_bytes(
    node: Node, args: list[np.ndarray | None], shapes: dict[str, tuple], dtypes: dict[str, np.dtype],
    proto: onnx.ModelProto,
) -> int:
    """The bytes of ``node``'s outputs, from their shapes: as the whole-model shape inference
    gave them, else by ONNX inference of this node with its constant inputs' values. ModelError
    where a shape stays unknown (a folded result must be bounded before it is computed)."""
    outputs = [t for t in node.outputs if t]
    if all(_static(shapes.get(t), allow_zero=True) and t in dtypes for t in outputs):
        known = {t: (shapes[t], dtypes[t].itemsize) for t in outputs}
    else:
        types = _infer_node(node, args, proto)
        known = {t: (_dims(types.get(t)), _itemsize(types.get(t))) for t in outputs}
    total = 0
    for t in outputs:
        dims, itemsize = known[t]
        dims = dims if dims is not None else _data_dependent_bound(node, args)
        if dims is None:
            raise ModelError(
                f"node {node.name!r} ({escape_text(node.op_type)}): the shape of its output "
                f"{t!r} is unknown at load, so folding it cannot be bounded"
            )
        total += math.prod(dims) * itemsize
    return total


def _infer_node(node: Node, args: list[np.ndarray | None], proto: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    if node.proto is None:
        return {}
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.proto.domain)
        types, data = {}, {}
        for t, a in zip(node.inputs, args):
            if t and a is not None:
                types[t] = helper.make_tensor_type_proto(helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                if a.size <= _VALUE_LIMIT:
                    data[t] = numpy_helper.from_array(a, t)
        return onnx.shape_inference.infer_node_outputs(
            schema, node.proto, types, data, opset_imports=list(proto.opset_import), ir_version=proto.ir_version
        )
    except onnx.defs.SchemaError:
        return {}
    except Exception as e:  # InferenceError and onnx's C++ errors: the constant inputs do not fit
        raise ModelError(f"node {node.name!r} ({escape_text(node.op_type)}): {escape_text(str(e))}") from None


def _data_dependent_bound(node: Node, args: list[np.ndarray | None]) -> tuple[int, ...] | None:
    """An upper bound on the shape of an output whose size depends on values: NonZero's (rank,
    number of non-zeros) is at most (rank, size)."""
    if node.op_type == "NonZero" and args and args[0] is not None:
        return (max(args[0].ndim, 1), args[0].size)
    return None


def _dims(t: onnx.TypeProto | None) -> tuple[int, ...] | None:
    if t is None or not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.tensor_type.shape.dim)
    return dims if all(d >= 0 for d in dims) else None


def _itemsize(t: onnx.TypeProto | None) -> int:
    if t is None or not t.HasField("tensor_type") or not t.tensor_type.elem_type:
        return 8
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(t.tensor_type.elem_type)).itemsize
    except (KeyError, TypeError, ValueError):
        return 8


def _static(shape: tuple | None, allow_zero: bool = False) -> bool:
    low = 0 if allow_zero else 1
    return shape is not None and all(isinstance(d, int) and d >= low for d in shape)


def _human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"
