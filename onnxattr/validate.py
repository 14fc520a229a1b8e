"""What onnxruntime refuses, refused at load; what it runs, accepted.

The rule (issue 13, section 3): a model that onnxruntime refuses as invalid is refused by
``load`` too, with the node named; a model that onnxruntime runs is run identically, or refused
at load with UnsupportedOpError, never failing later. Kept here:

- the ONNX checker, without the demands that onnxruntime does not make (``checkable``);
- opsets: newer than the installed onnx knows is invalid; an op whose definition changed after
  the newest opset onnxattr's kernels follow is unsupported (``check_op_version``);
- strict shape and type inference, which catches mismatched weight shapes (MatMul, Gemm,
  BatchNormalization, broadcasting) naming the node (``infer_shapes``);
- what inference does not check: layers' constant weights and biases against their inputs
  (``check_parameters``: Conv channels and groups, Gemm/MatMul sizes, Gemm's C, PRelu's slope,
  norms' scales), before constant folding evaluates any of them.
"""
from __future__ import annotations

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
    - every graph input with a tensor type needs a shape; every graph output a type and a shape.
    """
    listed = {v.name for v in proto.graph.input}
    unlisted = [t for t in proto.graph.initializer if t.name not in listed] if proto.ir_version < 4 else []
    if not unlisted and all(_complete(v, False) for v in proto.graph.input) and all(
            _complete(v, True) for v in proto.graph.output):
        return proto
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    copy.graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in unlisted)
    for v, is_output in [(v, False) for v in copy.graph.input] + [(v, True) for v in copy.graph.output]:
        if not _complete(v, is_output):
            t = v.type.tensor_type
            t.elem_type = t.elem_type or onnx.TensorProto.FLOAT
            t.shape.SetInParent()
    return copy


def _complete(v: onnx.ValueInfoProto, is_output: bool) -> bool:
    """Whether ``v`` has what the checker demands and onnxruntime does not: a shape (and, for an
    output, a type). An input without any type stays incomplete for the checker to refuse."""
    typ = v.type
    if typ.HasField("sequence_type") or typ.HasField("map_type") or typ.HasField("optional_type"):
        return True
    if not typ.HasField("tensor_type") or not typ.tensor_type.elem_type:
        return not is_output
    return typ.tensor_type.HasField("shape")


def infer_shapes(proto: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """``proto`` with every tensor's type and shape inferred, strictly: an op whose inputs do not
    fit (a weight of the wrong shape, operands that do not broadcast, a type mismatch) raises
    ModelError naming the node.

    Declared shapes of intermediate tensors and outputs are dropped first: onnxruntime ignores
    one that disagrees with inference (after a warning), while declared element types must agree,
    as onnxruntime demands. Declarations of initializers are dropped: their dims are their shape.
    A negative input dimension is made unknown (onnxruntime takes any size there). Without ONNX's
    data propagation: it computes the values of shape ops in full, so a ``Range`` to 1e12 would
    exhaust memory here."""
    bare = onnx.ModelProto()
    bare.CopyFrom(proto)
    g = bare.graph
    weights = {t.name for t in g.initializer}
    kept = [v for v in g.value_info if v.name not in weights]  # an initializer's own dims are its shape
    del g.value_info[:]
    g.value_info.extend(kept)
    for v in list(g.value_info) + list(g.output):
        if v.type.HasField("tensor_type"):
            v.type.tensor_type.ClearField("shape")
    for v in g.input:  # a negative size is free in onnxruntime, not a size to check against
        for d in v.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value < 0:
                d.ClearField("dim_value")
    try:
        return onnx.shape_inference.infer_shapes(bare, check_type=True, strict_mode=True)
    except Exception as e:  # InferenceError, and ValueError/RuntimeError from onnx's C++ side
        first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
        raise ModelError(f"{where} fails ONNX shape inference: {escape_text(first.strip())}") from None


def check_parameters(node_name: str, op_type: str, attrs: dict, opset: int, inputs: list[tuple | None],
                     out_shape: tuple | None) -> None:
    """ModelError naming the node where a layer's operands do not fit each other (ONNX's shape
    inference misses these; onnxruntime fails on the first run, and folding would fail at load).

    ``inputs``: the shape of each input of the node (None where unknown; None entries inside a
    shape are sizes unknown at load); ``out_shape``: its inferred output shape. Checked:
    Conv/ConvTranspose channels, groups, kernel_shape and bias; the contracted sizes of Gemm and
    MatMul; a Gemm's C (to its output), a PRelu's slope and a LayerNormalization's scale and
    bias (to the input), which must broadcast one way; an InstanceNormalization's scale and
    bias, one value per channel. (Before opset 7 a PRelu slope of one value per channel
    broadcast over the channel axis; not checked there.)
    """
    def shape(i: int) -> tuple | None:
        return inputs[i] if len(inputs) > i else None

    x_shape = shape(0)
    if op_type in ("Conv", "ConvTranspose") and shape(1) is not None:
        _check_conv(node_name, op_type, attrs, x_shape, shape(1), shape(2))
    if op_type in ("Gemm", "MatMul") and x_shape is not None and shape(1) is not None:
        _check_contraction(node_name, op_type, attrs, x_shape, shape(1))
    targets = {"Gemm": [(2, "C", out_shape)], "PRelu": [(1, "slope", x_shape)] if opset >= 7 else [],
               "LayerNormalization": [(1, "scale", x_shape), (2, "bias", x_shape)]}
    for i, what, target in targets.get(op_type, []):
        p = shape(i)
        if p is not None and target is not None and not _broadcasts(p, target):
            _bad(node_name, op_type, f"{what} of shape {_show(p)} does not broadcast to {_show(target)}")
    if op_type == "InstanceNormalization" and x_shape is not None and len(x_shape) > 1 and isinstance(x_shape[1], int):
        for i, what in ((1, "scale"), (2, "bias")):
            p = shape(i)
            if p is not None and p != (x_shape[1],):
                _bad(node_name, op_type, f"{what} of shape {_show(p)}; the input has {x_shape[1]} channels")


def _check_contraction(node_name: str, op_type: str, attrs: dict, a: tuple, b: tuple) -> None:
    """The size that a Gemm or MatMul sums over must be the same in both operands."""
    if not a or not b:
        return
    if op_type == "Gemm":
        if len(a) != 2 or len(b) != 2:
            return  # inference names the rank
        ka = a[0] if attrs.get("transA", 0) else a[1]
        kb = b[1] if attrs.get("transB", 0) else b[0]
    else:
        ka, kb = a[-1], (b[-2] if len(b) > 1 else b[0])
    if isinstance(ka, int) and isinstance(kb, int) and ka != kb:
        _bad(node_name, op_type, f"operands of shapes {_show(a)} and {_show(b)} do not fit: {ka} vs {kb} summed over")


def _broadcasts(shape: tuple, target: tuple) -> bool:
    """Whether an array of ``shape`` broadcasts to ``target`` without growing it (None in
    ``target``: a size unknown at load, which only 1 or the same size could fit)."""
    if len(shape) > len(target):
        return False
    return all(d == 1 or t is None or d == t for d, t in zip(reversed(shape), reversed(target)))


def _show(shape: tuple) -> str:
    """A shape as a tuple prints, with N for a size unknown at load."""
    dims = ["N" if d is None else str(d) for d in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _check_conv(node_name: str, op_type: str, attrs: dict, x_shape: tuple | None, w: tuple,
                b: tuple | None) -> None:
    if any(not isinstance(d, int) for d in w):
        return
    group = int(attrs.get("group", 1))
    rank = None if x_shape is None else len(x_shape)
    channels = x_shape[1] if x_shape is not None and len(x_shape) > 1 else None
    if len(w) < 3 or (rank is not None and len(w) != rank):
        _bad(node_name, op_type, f"weight of shape {w} for an input of rank {rank}")
    if 0 in w:
        _bad(node_name, op_type, f"weight of shape {w} is empty")
    kernel = attrs.get("kernel_shape")
    if kernel is not None and tuple(kernel) != w[2:]:
        _bad(node_name, op_type, f"kernel_shape {list(kernel)} differs from the weight's spatial shape {w[2:]}")
    if group < 1 or w[0] % group:
        _bad(node_name, op_type, f"weight of shape {w} cannot be split into group={group} groups")
    if op_type == "Conv":
        wants, outputs = w[1] * group, w[0]
    else:
        wants, outputs = w[0], w[1] * group
    if isinstance(channels, int) and channels != wants:
        _bad(node_name, op_type, f"input has {channels} channels; the weight of shape {w} "
                                 f"with group={group} takes {wants}")
    if b is not None and b != (outputs,) and b != (None,):
        _bad(node_name, op_type, f"bias of shape {_show(b)}; the weight of shape {w} makes {outputs} channels")


def _bad(node_name: str, op_type: str, detail: str) -> None:
    raise ModelError(f"node {node_name!r} ({op_type}): {detail}")
