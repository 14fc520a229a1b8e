"""ONNX model -> LayerGraph: checking, shape inference, constant folding, output selection.

``read_model`` turns a path or ModelProto into a checked, shape-inferred ModelProto. ``build``
instantiates one op per node (so an unsupported op is reported, with its node name and op type,
before anything runs), folds every node whose inputs are all constant (Shape/Gather/Concat chains
that build Reshape targets, ConstantOfShape, Constant), and keeps only the nodes between the
chosen input and output. The result is a :class:`LayerGraph`: the nodes in topological order, the
constants, and a networkx DiGraph of the layers for inspection and analysis.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import ModelError, UnsupportedOpError
from .ops import Op, make_op

ONNX_DOMAINS = ("", "ai.onnx")
#: Ops whose output is a normalisation of the logits; attributions target their input.
SOFTMAX_OPS = ("Softmax", "LogSoftmax")


@dataclass
class Node:
    """One node of the graph: its op (attributes parsed) and the tensors it reads and writes."""

    name: str
    op_type: str
    op: Op
    inputs: list[str]  # '' where an optional input is omitted
    outputs: list[str]

    @property
    def kind(self) -> str:
        return self.op.kind


@dataclass
class TensorInfo:
    """A graph input or output: its name, shape (None for a symbolic dimension) and dtype."""

    name: str
    shape: tuple[int | None, ...] | None
    dtype: np.dtype


@dataclass
class LayerGraph:
    """The nodes between one input and one output, in topological order, with their constants."""

    nodes: list[Node]
    constants: dict[str, np.ndarray]
    input: TensorInfo
    output: str
    shapes: dict[str, tuple[int | None, ...]] = field(default_factory=dict)
    opset: int = 0
    #: the op type of a Softmax/LogSoftmax that ended the graph and was dropped, if any
    dropped_softmax: str | None = None
    #: what canonization recognised: (pattern, names of the nodes it replaced), in order
    canonized: list[tuple[str, list[str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.producer = {t: n for n in self.nodes for t in n.outputs if t}
        self.live = self._live_tensors()

    @property
    def nx(self) -> nx.DiGraph:
        """The layers as a networkx DiGraph: a node per layer, an edge per tensor between two."""
        g = nx.DiGraph()
        for n in self.nodes:
            g.add_node(n.name, node=n, op_type=n.op_type)
        for n in self.nodes:
            for t in n.inputs:
                if t in self.producer:
                    g.add_edge(self.producer[t].name, n.name, tensor=t)
        return g

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def _live_tensors(self) -> set[str]:
        """Tensors that depend differentiably on the input."""
        live = {self.input.name}
        for n in self.nodes:
            if n.op.differentiable and any(t in live for t in n.inputs):
                live.update(t for t in n.outputs if t)
        return live

    def last_uses(self) -> dict[str, int]:
        """For each tensor, the index of the last node that reads it."""
        last: dict[str, int] = {}
        for i, n in enumerate(self.nodes):
            for t in n.inputs:
                if t:
                    last[t] = i
        return last


def read_model(model: str | os.PathLike | onnx.ModelProto) -> onnx.ModelProto:
    """Load (a path, with any external data beside it) or take a ModelProto, check it, and infer
    shapes. Raises ModelError for anything that is not a valid ONNX model."""
    if isinstance(model, onnx.ModelProto):
        proto = model
        where = "the given ModelProto"
    elif isinstance(model, (str, os.PathLike)):
        where = os.fspath(model)
        if not os.path.isfile(where):
            raise ModelError(f"{where!r}: no such file")
        try:
            proto = onnx.load(where)
        except Exception as e:  # protobuf's DecodeError and onnx's own errors have no common base
            raise ModelError(f"{where!r} is not an ONNX model: {e}") from e
    else:
        raise ModelError(f"expected a path or an onnx.ModelProto, got {type(model).__name__}")
    if not proto.graph.node:
        raise ModelError(f"{where} is not an ONNX model with a graph (no nodes found)")
    proto = _sorted(proto)
    try:
        onnx.checker.check_model(proto)
    except Exception as e:
        raise ModelError(f"{where} fails the ONNX checker: {e}") from e
    try:
        return onnx.shape_inference.infer_shapes(proto)
    except Exception as e:
        raise ModelError(f"{where}: ONNX shape inference failed: {e}") from e


def build(
    proto: onnx.ModelProto,
    input_name: str | None = None,
    output_name: str | None = None,
) -> LayerGraph:
    """The LayerGraph from ``input_name`` to ``output_name`` of a checked, shape-inferred model.

    With no ``output_name``, the single graph output is used, and a final Softmax/LogSoftmax is
    dropped so that attributions target the logits. Any tensor of the graph may be named.
    """
    graph = proto.graph
    opset = next((o.version for o in proto.opset_import if o.domain in ONNX_DOMAINS), 0)
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    shapes = _inferred_shapes(proto)
    nodes = [_make_node(n, i, opset) for i, n in enumerate(graph.node)]
    _unique_names(nodes)
    inputs = [_info(v) for v in graph.input if v.name not in constants]
    chosen_input = _choose(inputs, input_name, "input")
    _check_outputs(nodes, [v.name for v in graph.output])
    nodes = _fold_constants(nodes, constants, shapes)

    dropped = None
    if output_name is None:
        outputs = [v.name for v in graph.output]
        output_name = _choose_name(outputs, None, "output")
        producer = {t: n for n in nodes for t in n.outputs}
        last = producer.get(output_name)
        if last is not None and last.op_type in SOFTMAX_OPS:
            dropped, output_name = last.op_type, last.inputs[0]
    elif not any(output_name in n.outputs for n in nodes) and output_name not in constants:
        known = [v.name for v in graph.output]
        raise ModelError(f"no tensor named {output_name!r} in the graph; its outputs are {known}")
    nodes = _prune(nodes, chosen_input.name, output_name)
    return LayerGraph(
        nodes=nodes,
        constants=constants,
        input=chosen_input,
        output=output_name,
        shapes=shapes,
        opset=opset,
        dropped_softmax=dropped,
    )


@dataclass
class Support:
    """Whether onnxattr can run one node of a model, and why not."""

    node: str
    op_type: str
    supported: bool
    reason: str = ""


def op_support(proto: onnx.ModelProto) -> list[Support]:
    """Every node of ``proto`` with whether it is supported: all of them, not just the first
    failure (for ``onnxattr inspect``)."""
    opset = next((o.version for o in proto.opset_import if o.domain in ONNX_DOMAINS), 0)
    out = []
    for i, n in enumerate(proto.graph.node):
        try:
            node = _make_node(n, i, opset)
            out.append(Support(node.name, n.op_type, True))
        except UnsupportedOpError as e:
            out.append(Support(e.node_name, e.op_type, False, str(e)))
    return out


def _make_node(proto: onnx.NodeProto, index: int, opset: int) -> Node:
    name = proto.name or f"{proto.op_type}_{index}"
    if proto.domain not in ONNX_DOMAINS:
        raise UnsupportedOpError(name, f"{proto.domain}.{proto.op_type}", "only the default ONNX domain is implemented")
    for a in proto.attribute:
        if a.type == onnx.AttributeProto.GRAPH or a.type == onnx.AttributeProto.GRAPHS:
            raise UnsupportedOpError(name, proto.op_type, f"subgraph attribute {a.name!r} (control flow)")
    attrs = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
    op = make_op(proto.op_type, attrs, opset, name)
    op.n_outputs = len(proto.output)
    return Node(name, proto.op_type, op, list(proto.input), list(proto.output))


def _check_outputs(nodes: list[Node], graph_outputs: list[str]) -> None:
    """Raise for a node whose op cannot produce an output that the graph reads."""
    read = {t for n in nodes for t in n.inputs} | set(graph_outputs)
    for n in nodes:
        limit = getattr(n.op, "max_outputs", None)
        if limit is None:
            continue
        extra = [t for t in n.outputs[limit:] if t and t in read]
        if extra:
            raise UnsupportedOpError(n.name, n.op_type, f"output(s) {extra} beyond the first {limit} are not computed")


def _unique_names(nodes: list[Node]) -> None:
    """Give nodes that share a name (ONNX allows it) a numbered suffix."""
    seen: set[str] = set()
    for i, n in enumerate(nodes):
        if n.name in seen:
            n.name = n.op.name = f"{n.name}_{i}"
        seen.add(n.name)


def _info(v: onnx.ValueInfoProto) -> TensorInfo:
    t = v.type.tensor_type
    shape = None
    if t.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim)
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)) if t.elem_type else np.dtype("float32")
    return TensorInfo(v.name, shape, dtype)


def _inferred_shapes(proto: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    g = proto.graph
    infos = [_info(v) for v in list(g.input) + list(g.value_info) + list(g.output)]
    return {i.name: i.shape for i in infos if i.shape is not None}


def _choose(infos: list[TensorInfo], name: str | None, what: str) -> TensorInfo:
    chosen = _choose_name([i.name for i in infos], name, what)
    return next(i for i in infos if i.name == chosen)


def _choose_name(names: list[str], name: str | None, what: str) -> str:
    if name is not None:
        if name not in names:
            raise ModelError(f"the model has no {what} named {name!r}; its {what}s are {names}")
        return name
    if len(names) != 1:
        raise ModelError(f"the model has {len(names)} {what}s {names}; choose one with {what}_name=")
    return names[0]


def _fold_constants(
    nodes: list[Node], constants: dict[str, np.ndarray], shapes: dict[str, tuple]
) -> list[Node]:
    """Evaluate every node whose inputs are all known, adding its outputs to ``constants``.

    A Shape node folds when shape inference knows every dimension of its input.
    """
    kept = []
    for n in nodes:
        if n.op_type == "Shape" and _static(shapes.get(n.inputs[0])):
            full = np.asarray(shapes[n.inputs[0]], dtype=np.int64)
            value = n.op.forward(np.broadcast_to(np.uint8(0), tuple(full)))[0][0]
            constants[n.outputs[0]] = value
            continue
        if all(t == "" or t in constants for t in n.inputs):
            args = [constants[t] if t else None for t in n.inputs]
            outs, _ = n.op.forward(*args)
            for t, v in zip(n.outputs, outs):
                if t:
                    constants[t] = np.asarray(v)
            continue
        kept.append(n)
    return kept


def _static(shape: tuple | None) -> bool:
    return shape is not None and all(isinstance(d, int) and d > 0 for d in shape)


def _prune(nodes: list[Node], input_name: str, output_name: str) -> list[Node]:
    """The nodes needed to compute ``output_name``, in their (topological) order."""
    producer = {t: n for n in nodes for t in n.outputs if t}
    needed: set[str] = set()
    stack = [output_name]
    while stack:
        t = stack.pop()
        n = producer.get(t)
        if n is None or n.name in needed:
            continue
        needed.add(n.name)
        stack.extend(i for i in n.inputs if i)
    return [n for n in nodes if n.name in needed]


def _sorted(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` with its nodes in topological order (the checker requires it; some exporters
    write them out of order). Returns ``proto`` itself when already sorted."""
    nodes = list(proto.graph.node)
    producer = {t: i for i, n in enumerate(nodes) for t in n.output if t}
    g = nx.DiGraph()
    g.add_nodes_from(range(len(nodes)))
    g.add_edges_from((producer[t], i) for i, n in enumerate(nodes) for t in n.input if t in producer)
    try:
        order = list(nx.lexicographical_topological_sort(g))
    except nx.NetworkXUnfeasible as e:
        raise ModelError("the graph has a cycle") from e
    if order == list(range(len(nodes))):
        return proto
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    del proto.graph.node[:]
    proto.graph.node.extend(nodes[i] for i in order)
    return proto
