"""What onnxruntime refuses, refused at load; what it runs, accepted.

The rule (issue 13, section 3): a model that onnxruntime refuses as invalid is refused by
``load`` too, with the node named; a model that onnxruntime runs is run identically, or refused
at load with UnsupportedOpError, never failing later. Kept here:

- the ONNX checker, without the demands that onnxruntime does not make (``checkable``);
- opsets: newer than the installed onnx knows is invalid; an op whose definition changed after
  the newest opset onnxattr's kernels follow is unsupported (``check_op_version``);
- strict shape and type inference, which catches mismatched weight shapes (MatMul, Gemm,
  BatchNormalization, broadcasting) naming the node (``infer_shapes``);
- what inference does not check: Conv/ConvTranspose channels against their weights and biases
  (``check_weights``), and the explained input's declared shape and dtype (``check_input``).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from .errors import ModelError, UnsupportedOpError
from .text import escape_text

#: The newest opset whose op definitions the kernels in ``onnxattr.ops`` follow. In a model of a
#: newer opset, a node whose op changed after this opset is refused (by name) rather than run by
#: a kernel written for the older definition.
IMPLEMENTED_OPSET = 23


def check_opsets(proto: onnx.ModelProto, where: str) -> None:
    """ModelError for an opset of the default domain that the installed onnx does not know
    (onnxruntime refuses those too)."""
    newest = onnx.defs.onnx_opset_version()
    for o in proto.opset_import:
        if o.domain in ("", "ai.onnx") and not 1 <= o.version <= newest:
            raise ModelError(
                f"{where} imports opset {o.version} of the default ONNX domain; the installed onnx "
                f"knows opsets 1 to {newest}"
            )


def check_op_version(node: onnx.NodeProto, name: str, opset: int) -> None:
    """UnsupportedOpError where ``node``'s op at ``opset`` is a newer definition than the one at
    IMPLEMENTED_OPSET (the kernels follow that one)."""
    if opset <= IMPLEMENTED_OPSET:
        return
    try:
        used = onnx.defs.get_schema(node.op_type, opset).since_version
        known = onnx.defs.get_schema(node.op_type, IMPLEMENTED_OPSET).since_version
    except onnx.defs.SchemaError:
        return  # not an op of this opset: the op registry names it
    if used != known:
        raise UnsupportedOpError(
            name, node.op_type,
            f"the model's opset {opset} uses {node.op_type}-{used}; onnxattr implements the "
            f"definitions up to opset {IMPLEMENTED_OPSET} ({node.op_type}-{known})",
        )


def checkable(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` as the ONNX checker should see it: a copy without the checker's demands that
    onnxruntime does not make (``proto`` itself where there are none):

    - before IR version 4, every initializer must also be a graph input;
    - every graph input needs a shape, every graph output a type and a shape.
    """
    listed = {v.name for v in proto.graph.input}
    unlisted = [t for t in proto.graph.initializer if t.name not in listed] if proto.ir_version < 4 else []
    bare = [v for v in list(proto.graph.input) + list(proto.graph.output) if not _typed(v)]
    if not unlisted and not bare:
        return proto
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    copy.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in unlisted)
    for v in list(copy.graph.input) + list(copy.graph.output):
        if not _typed(v):
            t = v.type.tensor_type
            t.elem_type = t.elem_type or onnx.TensorProto.FLOAT
            t.shape.SetInParent()
    return copy


def _typed(v: onnx.ValueInfoProto) -> bool:
    if not v.type.HasField("tensor_type"):
        return v.type.HasField("sequence_type") or v.type.HasField("map_type") or v.type.HasField("optional_type")
    return v.type.tensor_type.HasField("shape") and v.type.tensor_type.elem_type != 0


def infer_shapes(proto: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """``proto`` with every tensor's type and shape inferred, strictly: an op whose inputs do not
    fit (a weight of the wrong shape, operands that do not broadcast, a type mismatch) raises
    ModelError naming the node.

    Declared shapes of intermediate tensors and outputs are dropped first: onnxruntime ignores
    one that disagrees with inference (after a warning), while declared element types must agree,
    as onnxruntime demands."""
    bare = onnx.ModelProto()
    bare.CopyFrom(proto)
    for v in list(bare.graph.value_info) + list(bare.graph.output):
        if v.type.HasField("tensor_type"):
            v.type.tensor_type.ClearField("shape")
    try:
        return onnx.shape_inference.infer_shapes(bare, check_type=True, strict_mode=True, data_prop=True)
    except Exception as e:  # InferenceError, and ValueError/RuntimeError from onnx's C++ side
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise ModelError(f"{where} fails ONNX shape inference: {escape_text(first.strip())}") from None


def check_weights(node_name: str, op_type: str, attrs: dict, x_shape: tuple | None, w: np.ndarray | None,
                  b: np.ndarray | None) -> None:
    """ModelError naming the node where a Conv's or ConvTranspose's weight or bias does not fit
    its input (ONNX's shape inference does not check channels; onnxruntime fails on the first
    run)."""
    if w is None or op_type not in ("Conv", "ConvTranspose"):
        return
    group = int(attrs.get("group", 1))
    rank = None if x_shape is None else len(x_shape)
    channels = x_shape[1] if x_shape is not None and len(x_shape) > 1 else None
    if w.ndim < 3 or (rank is not None and w.ndim != rank):
        _bad(node_name, op_type, f"weight of shape {w.shape} for an input of rank {rank}")
    if group < 1 or w.shape[0] % group:
        _bad(node_name, op_type, f"weight of shape {w.shape} cannot be split into group={group} groups")
    if op_type == "Conv":
        wants, outputs = w.shape[1] * group, w.shape[0]
    else:
        wants, outputs = w.shape[0], w.shape[1] * group
    if isinstance(channels, int) and channels != wants:
        _bad(node_name, op_type, f"input has {channels} channels; the weight of shape {w.shape} "
                                 f"with group={group} takes {wants}")
    if b is not None and b.shape != (outputs,):
        _bad(node_name, op_type, f"bias of shape {b.shape}; the weight of shape {w.shape} makes {outputs} channels")


def _bad(node_name: str, op_type: str, detail: str) -> None:
    raise ModelError(f"node {node_name!r} ({op_type}): {detail}")
