"""ONNX model -> LayerGraph: reading, checking, shape inference, constant folding, output selection.

``read_model`` turns a path or ModelProto into a checked, shape-inferred ModelProto: external
data is read only from inside the model's folder (``onnxattr.external``), and what onnxruntime
would refuse is refused here, naming the node (``onnxattr.validate``). ``build`` instantiates one
op per node (so an unsupported op is reported, with its node name and op type, before anything
runs), folds every node whose inputs are all constant within a memory bound
(``onnxattr.folding``), checks the weights of the layers that inference does not, and keeps only
the nodes between the chosen input and output. The result is a :class:`LayerGraph`: the nodes in
topological order, the constants, and a networkx DiGraph of the layers for inspection and
analysis.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import onnx
from onnx import helper, numpy_helper

from . import validate
from .errors import ModelError, OptionError, UnsupportedOpError
from .external import external_tensors, inline_external_data
from .folding import MAX_FOLD_BYTES, fold_constants
from .ops import Op, make_op
from .text import escape_text
from .wrt import choose_wrt, embedding_candidates, tensor_dtypes

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
    #: the node as the model declares it (None for a node that canonization made)
    proto: onnx.NodeProto | None = field(default=None, repr=False, compare=False)

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
    #: the graph inputs a caller may feed (``input`` among them unless it is a tensor inside the
    #: graph); :meth:`needed` are those the nodes read
    inputs: list[TensorInfo] = field(default_factory=list)
    #: where ``input`` is a tensor inside the graph (``wrt=``): the nodes that compute it from
    #: ``inputs`` (a graph of their own, forward only); None where it is a graph input
    head: LayerGraph | None = None
    #: the integer graph input read by the word-embedding lookup upstream of ``input``, if any
    token_input: str | None = None
    #: what canonization recognised: (pattern, names of the nodes it replaced), in order
    canonized: list[tuple[str, list[str]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.inputs = self.inputs or [self.input]
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
        """Tensors that depend differentiably on the input (the ``wrt`` tensor); integer inputs
        and the other inputs are held fixed, so nodes that read only them are not live."""
        live = {self.input.name}
        for n in self.nodes:
            if n.op.differentiable and any(t in live for t in n.inputs):
                live.update(t for t in n.outputs if t)
        return live

    def needed(self) -> list[str]:
        """The names of the graph inputs that this graph (and its head) read, the input included."""
        reads = {t for n in self.nodes + (self.head.nodes if self.head else []) for t in n.inputs} | {self.input.name}
        return [i.name for i in self.inputs if i.name in reads]

    def last_uses(self) -> dict[str, int]:
        """For each tensor, the index of the last node that reads it."""
        last: dict[str, int] = {}
        for i, n in enumerate(self.nodes):
            for t in n.inputs:
                if t:
                    last[t] = i
        return last


def read_model(
    model: str | os.PathLike | onnx.ModelProto, base_dir: str | os.PathLike | None = None
) -> onnx.ModelProto:
    """Read a path or take a ModelProto; check it and infer shapes. Raises ModelError for
    anything that is not a valid ONNX model, or that onnxruntime would refuse.

    External data is read from inside one folder only: a model file's own folder, or for a
    ModelProto the ``base_dir`` given (without one, a ModelProto with external data is refused).
    The given ModelProto is not changed.
    """
    if isinstance(model, onnx.ModelProto):
        where = "the given ModelProto"
        proto = model
        external = external_tensors(proto)
        if external:
            if base_dir is None:
                others = f" and {len(external) - 1} more" if len(external) > 1 else ""
                raise ModelError(
                    f"{where} keeps tensor {external[0]!r}{others} in external files; pass base_dir= (the "
                    f"folder that holds them) to read them, or load the model from its path"
                )
            proto = onnx.ModelProto()
            proto.CopyFrom(model)
            inline_external_data(proto, os.fspath(base_dir))
    elif isinstance(model, (str, os.PathLike)):
        where = escape_text(os.fspath(model))
        if base_dir is not None:
            raise OptionError(
                "base_dir= is only for a ModelProto; a model file's external data is read from its own folder"
            )
        proto = _read_file(os.fspath(model))
        inline_external_data(proto, os.path.dirname(os.path.abspath(model)))
    else:
        raise ModelError(f"expected a path or an onnx.ModelProto, got {type(model).__name__}")
    if not proto.graph.node:
        raise ModelError(f"{where} is not an ONNX model with a graph (no nodes found)")
    validate.check_opsets(proto, where)
    proto = _sorted(proto)
    try:
        onnx.checker.check_model(validate.checkable(proto))
    except Exception as e:
        raise ModelError(f"{where} fails the ONNX checker: {escape_text(str(e))}") from None
    return validate.infer_shapes(proto, where)


def _read_file(path: str) -> onnx.ModelProto:
    """The ModelProto in the file at ``path``, its external data not yet read."""
    if not os.path.isfile(path):
        raise ModelError(f"{escape_text(path)!r}: no such file")
    try:
        return onnx.load(path, load_external_data=False)
    except Exception as e:  # protobuf's DecodeError and onnx's own errors have no common base
        raise ModelError(f"{escape_text(path)!r} is not an ONNX model: {escape_text(str(e))}") from None


def build(
    proto: onnx.ModelProto,
    input_name: str | None = None,
    output_name: str | None = None,
    wrt: str | None = None,
    max_fold_bytes: int = MAX_FOLD_BYTES,
) -> LayerGraph:
    """The LayerGraph from ``input_name`` (or the ``wrt`` tensor, see :mod:`onnxattr.wrt`) to
    ``output_name`` of a checked, shape-inferred model.

    With no ``output_name``, the single graph output is used, and a final Softmax/LogSoftmax is
    dropped so that attributions target the logits. Any tensor of the graph may be named.
    Constant folding refuses a result over ``max_fold_bytes`` (see :mod:`onnxattr.folding`).
    """
    graph = proto.graph
    opset = next((o.version for o in proto.opset_import if o.domain in ONNX_DOMAINS), 0)
    constants = {t.name: _to_array(t) for t in graph.initializer}
    infos = _inferred_infos(proto)
    shapes = {k: i.shape for k, i in infos.items() if i.shape is not None}
    nodes = [_make_node(n, i, opset) for i, n in enumerate(graph.node)]
    _unique_names(nodes)
    inputs = [_info(v) for v in graph.input if v.name not in constants]
    _check_outputs(nodes, [v.name for v in graph.output])
    _check_operands(nodes, constants, shapes)
    nodes = fold_constants(nodes, constants, shapes, {k: i.dtype for k, i in infos.items()}, proto, max_fold_bytes)
    for n in nodes:  # what a kernel cannot run is refused now, never at forward time
        n.op.check([constants[t].shape if t in constants else shapes.get(t) if t else None for t in n.inputs],
                   [constants.get(t) if t else None for t in n.inputs])

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
    name = choose_wrt(nodes, constants, inputs, tensor_dtypes(proto), input_name, wrt)
    body = _prune(nodes, output_name, stop=name)
    head = _prune(nodes, name) if name not in {i.name for i in inputs} else None
    if output_name != name and not any(output_name in n.outputs for n in body):
        raise UnsupportedOpError(output_name, "output", f"it does not depend on {name!r} (a constant)")
    if head is not None and not any(name in n.inputs for n in body):
        raise ModelError(f"output {output_name!r} does not depend on the wrt tensor {name!r}")
    if any(name in n.outputs for n in body):
        raise ModelError(f"wrt tensor {name!r} comes from a node whose other outputs the rest of the graph "
                         "reads; choose a tensor after it")
    wrt_info = next((i for i in inputs if i.name == name), None) or TensorInfo(name, shapes.get(name), np.dtype("float32"))
    if head is None:
        _check_input(wrt_info)
    _check_computable(body + (head or []), constants, {i.name for i in inputs} | {name}, graph)
    tokens = [s for n, s in embedding_candidates(head or [], constants, inputs)]
    return LayerGraph(
        nodes=body,
        constants=constants,
        input=wrt_info,
        output=output_name,
        shapes=shapes,
        opset=opset,
        dropped_softmax=dropped,
        inputs=inputs,
        head=None if head is None else LayerGraph(head, constants, wrt_info, name, shapes, opset),
        token_input=tokens[0] if len(set(tokens)) == 1 else None,
    )


def _to_array(t: onnx.TensorProto) -> np.ndarray:
    try:
        return numpy_helper.to_array(t)
    except Exception as e:  # a data field that does not match the dims or the data type
        raise ModelError(f"initializer {t.name!r} cannot be read: {escape_text(str(e))}") from None


def _check_input(info: TensorInfo) -> None:
    """UnsupportedOpError for an explained input that no float32 batch could fill: another dtype,
    or a dimension declared 0 (onnxruntime would run only empty tensors)."""
    if info.dtype != np.float32:
        raise UnsupportedOpError(info.name, "graph input", f"its dtype is {info.dtype}; onnxattr explains float32 inputs")
    if info.shape is not None and 0 in info.shape:
        raise UnsupportedOpError(
            info.name, "graph input",
            f"dimension {info.shape.index(0)} is declared 0 (an empty tensor) in shape {info.shape}",
        )


def _check_operands(nodes: list[Node], constants: dict[str, np.ndarray], shapes: dict[str, tuple]) -> None:
    """validate.check_parameters on every node, with each input's shape from its constant value
    or from shape inference; before folding evaluates any node."""
    for n in nodes:
        inputs = [constants[t].shape if t in constants else shapes.get(t) if t else None for t in n.inputs]
        out_shape = shapes.get(n.outputs[0]) if n.outputs else None
        validate.check_parameters(n.name, n.op_type, n.op.attrs, n.op.opset, inputs, out_shape)


def _check_computable(nodes: list[Node], constants: dict[str, np.ndarray], given: set[str],
                      graph: onnx.GraphProto) -> None:
    """UnsupportedOpError for a node that reads a tensor that nothing gives: not a graph input
    (``given``), a constant or another node's output (a sparse initializer, say)."""
    made = {t for n in nodes for t in n.outputs} | set(constants) | given
    sparse = {t.values.name for t in graph.sparse_initializer}
    for n in nodes:
        for t in n.inputs:
            if t and t not in made:
                why = "a sparse initializer" if t in sparse else "a tensor that no node, input or initializer gives"
                raise UnsupportedOpError(n.name, escape_text(n.op_type), f"it reads {t!r}, {why}")


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
    # the op type and domain are the model's text: escaped before any message shows them
    op_type = escape_text(proto.op_type)
    name = proto.name or f"{op_type}_{index}"
    if proto.domain not in ONNX_DOMAINS:
        raise UnsupportedOpError(name, f"{escape_text(proto.domain)}.{op_type}", "only the default ONNX domain is implemented")
    for a in proto.attribute:
        if a.type == onnx.AttributeProto.GRAPH or a.type == onnx.AttributeProto.GRAPHS:
            raise UnsupportedOpError(name, op_type, f"subgraph attribute {a.name!r} (control flow)")
    validate.check_op_version(proto, name, opset)
    attrs = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
    op = make_op(op_type, attrs, opset, name)
    op.n_outputs = len(proto.output)
    return Node(name, proto.op_type, op, list(proto.input), list(proto.output), proto)


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
    """A value's declared shape (None for a symbolic or negative dimension: onnxruntime takes any
    size there) and dtype."""
    t = v.type.tensor_type
    shape = None
    if t.HasField("shape"):
        shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else None for d in t.shape.dim)
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)) if t.elem_type else np.dtype("float32")
    except (KeyError, TypeError, ValueError):
        raise ModelError(f"tensor {v.name!r} has an unknown element type {t.elem_type}") from None
    return TensorInfo(v.name, shape, dtype)


def _inferred_infos(proto: onnx.ModelProto) -> dict[str, TensorInfo]:
    g = proto.graph
    return {v.name: _info(v) for v in list(g.input) + list(g.value_info) + list(g.output)}


def _choose_name(names: list[str], name: str | None, what: str) -> str:
    if name is not None:
        if name not in names:
            raise ModelError(f"the model has no {what} named {name!r}; its {what}s are {names}")
        return name
    if len(names) != 1:
        raise ModelError(f"the model has {len(names)} {what}s {names}; choose one with {what}_name=")
    return names[0]


def _prune(nodes: list[Node], output_name: str, stop: str | None = None) -> list[Node]:
    """The nodes needed to compute ``output_name`` (given ``stop``, which is then not computed),
    in their (topological) order."""
    producer = {t: n for n in nodes for t in n.outputs if t}
    needed: set[str] = set()
    stack = [output_name]
    while stack:
        t = stack.pop()
        n = producer.get(t) if t != stop else None
        if n is None or n.name in needed:
            continue
        needed.add(n.name)
        stack.extend(i for i in n.inputs if i)
    return [n for n in nodes if n.name in needed]


def _sorted(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` with its nodes in topological order (the checker requires it; some exporters
    write them out of order). Returns ``proto`` itself when already sorted. ModelError, naming
    the nodes, for a tensor that two nodes write or for a cycle."""
    nodes = list(proto.graph.node)
    names = [n.name or f"{escape_text(n.op_type)}_{i}" for i, n in enumerate(nodes)]
    producer: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for t in n.output:
            if t in producer:
                raise ModelError(f"tensor {t!r} is written by two nodes, {names[producer[t]]!r} and {names[i]!r}")
            if t:
                producer[t] = i
    g = nx.DiGraph()
    g.add_nodes_from(range(len(nodes)))
    g.add_edges_from((producer[t], i) for i, n in enumerate(nodes) for t in n.input if t in producer)
    try:
        order = list(nx.lexicographical_topological_sort(g))
    except nx.NetworkXUnfeasible:
        cycle = [names[i] for i, _ in nx.find_cycle(g)]
        raise ModelError(f"the graph has a cycle through nodes {cycle}") from None
    if order == list(range(len(nodes))):
        return proto
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    del proto.graph.node[:]
    proto.graph.node.extend(nodes[i] for i in order)
    return proto
