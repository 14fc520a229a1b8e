"""A forward and a backward pass of one plan, compiled into two onnxruntime sessions.

The forward session is the model's own graph, with the tensors the backward reads as extra
outputs; the backward session takes the seed and those tensors and returns the relevance at the
input (and at the tensors asked for). It is built by walking the graph as the engine does
(:mod:`onnxattr.engine`), with :class:`~onnxattr.compiled.symbolic.Sym` values in place of
arrays: each live node's vjp (``Op.vjp_graph``) or rule (``Rule.backward``, the same code the
interpreter runs) writes its ONNX nodes. So onnxruntime fuses and lays out the whole pass (Conv
with ReLU, the blocked NCHWc layout from layer to layer) where per-layer sessions could not.

A plan with a step that has no static form here (see :class:`NotCompilable`) is left to the
interpreter, which gives the same numbers (tests/test_compiled.py compares the two).
"""
from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Hashable, Iterator, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from .. import threads
from .. import engine
from ..engine import NodeRecord
from ..kernels import onnxruntime as ortk
from ..ops.base import Op
from .symbolic import BACKWARD, FORWARD, NotCompilable, Sym, Tracer, value_info

if TYPE_CHECKING:
    from ..graph import LayerGraph, Node
    from ..rules.base import Rule

#: ops whose output is >= 0 wherever their (float) inputs, weights included, are: what tells an
#: LRP rule, at build time, that its data has no negative part, and its z+ no sign to test
_KEEPS_SIGN = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape",
                         "Squeeze", "Unsqueeze", "Transpose", "Identity", "Concat", "Add", "Mul", "Sum", "Max",
                         "Conv", "ConvTranspose", "Gemm", "MatMul"})
_NON_NEGATIVE = frozenset({"Relu", "Sigmoid", "Softmax", "Exp", "Abs", "Softplus"})


@dataclass
class Traced:
    """What a node's vjp reads while its graph is built: its inputs (Syms, or the model's constant
    arrays) and its outputs (Syms)."""

    inputs: tuple
    outputs: tuple


class TracedOp:
    """A node's op as a rule sees it while being traced: ``forward`` and ``cotangents`` write
    ONNX nodes (the op's own node on the given inputs, and its ``vjp_graph``); everything else is
    the op's."""

    def __init__(self, node: Node, tracer: Tracer) -> None:
        self._node, self._tracer = node, tracer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._node.op, name)

    def forward(self, *inputs: Any) -> tuple[tuple, Traced]:
        outs = write_forward(self._tracer, self._node, inputs)
        return outs, Traced(tuple(inputs), outs)

    def vjp(self, ctx: Traced, grads: Sequence[Any], needs: Sequence[bool]) -> list:
        return self._node.op.vjp_graph(ctx, grads, needs)

    def cotangents(self, ctx: Traced, grads: Sequence[Any], needs: Sequence[bool]) -> list:
        with naming(self._node, "vjp"):
            return Op.cotangents(self, ctx, grads, needs)  # type: ignore[arg-type]


class NamedRule:
    """A node's rule while traced: its failures name the node."""

    def __init__(self, rule: Rule, node: Node) -> None:
        self.rule, self.node = rule, node

    def backward(self, node: Any, record: NodeRecord, grads: Sequence[Any], needs: Sequence[bool]) -> list:
        with naming(self.node, repr(self.rule)):
            return self.rule.backward(node, record, grads, needs)


@contextmanager
def naming(node: Node, what: str) -> Iterator[None]:
    """NotCompilable (or the TypeError of NumPy code meeting a run-time size) naming the node."""
    try:
        yield
    except (NotCompilable, TypeError) as e:
        if str(e).startswith(node.name):
            raise
        raise NotCompilable(f"{node.name} ({node.op_type}, {what}): {e}") from e


class TracedNode:
    """A node as a rule sees it while being traced (its op a :class:`TracedOp`)."""

    def __init__(self, node: Node, op: TracedOp) -> None:
        self.name, self.op_type, self.inputs, self.outputs, self.op = node.name, node.op_type, node.inputs, node.outputs, op

    @property
    def kind(self) -> str:
        return self.op.kind


def write_forward(tracer: Tracer, node: Node, args: Sequence[Any], names: Sequence[str] | None = None) -> tuple:
    """Write ``node``'s forward on ``args`` (Syms and constant arrays) and return its outputs:
    the node itself where its op is an ONNX op of the model's opset (types and shapes from ONNX's
    inference), else the op's own forward traced (the ops canonization makes: Dense, Affine...).
    ``names``: the outputs' names (the model's tensors); fresh ones otherwise."""
    if _is_onnx(node.op_type, tracer.opset):
        attrs = onnx_attributes(node)
        names = list(names) if names else [tracer.fresh(node.op_type) if t else "" for t in node.outputs]
        types = _infer(node.op_type, attrs, args, tracer.opset, [bool(n) for n in names])
        made = [t for t in types if t is not None]
        phase = tracer.place(args, [d for d, _ in made], [s for _, s in made])
        op_type = node.op_type
        if phase == BACKWARD and tracer.opset != tracer.backward_opset:
            op_type, args, attrs = _converted(op_type, args, attrs, tracer.opset, tracer.backward_opset)
        nonneg = _non_negative(node, args)
        tracer.node(op_type, args, names, phase, **attrs)
        return tuple(None if t is None else Sym(tracer, n, t[0], t[1], phase, nonneg=nonneg) for n, t in zip(names, types))
    traced = tuple(node.op.forward_graph(*args))
    if not names:
        return traced
    for o, n in zip(traced, names):
        tracer.node("Identity", [o], [n], o.phase)
    return tuple(Sym(tracer, n, o.dtype, o.shape, o.phase, o.nonneg) for o, n in zip(traced, names))


def _converted(op_type: str, args: Sequence[Any], attrs: Mapping[str, Any], opset: int,
               to: int) -> tuple[str, tuple, dict[str, Any]]:
    """A model's node (of ``opset``) written for the backward graph's opset ``to`` by ONNX's
    version converter: its op type, inputs (any it adds are constants) and attributes."""
    import onnx.version_converter

    names = [f"i{i}" if a is not None else "" for i, a in enumerate(args)]
    inputs = [helper.make_value_info(n, _type(a, n)) for n, a in zip(names, args) if n]
    node = helper.make_node(op_type, names, ["o0"], **attrs)
    model = helper.make_model(helper.make_graph([node], "node", inputs, [helper.make_tensor_value_info("o0", 0, None)]),
                              opset_imports=[helper.make_opsetid("", opset)])
    try:
        converted = onnx.version_converter.convert_version(model, to).graph
    except Exception as e:  # noqa: BLE001  (no adapter for this op and opset)
        raise NotCompilable(f"{op_type} from opset {opset} to {to}: {e}") from e
    if len(converted.node) != 1:
        raise NotCompilable(f"{op_type} from opset {opset} to {to} became {len(converted.node)} nodes")
    new = converted.node[0]
    given = dict(zip(names, args))
    consts = {t.name: numpy_helper.to_array(t) for t in converted.initializer}
    return new.op_type, tuple(given[t] if t in given else consts[t] if t else None for t in new.input), {
        a.name: helper.get_attribute_value(a) for a in new.attribute}


def _is_onnx(op_type: str, opset: int) -> bool:
    try:
        onnx.defs.get_schema(op_type, opset, "")
        return True
    except onnx.defs.SchemaError:
        return False


def _infer(op_type: str, attrs: Mapping[str, Any], args: Sequence[Any], opset: int,
           outputs: Sequence[bool]) -> list[tuple[np.dtype, tuple] | None]:
    """The dtypes and shapes (None: known at run time) of a node's outputs (None for one it
    does not produce), by ONNX's inference for that op; constant integer inputs (shapes, axes)
    are given as data."""
    names = [f"i{i}" if a is not None else "" for i, a in enumerate(args)]
    node = helper.make_node(op_type, names, [f"o{i}" if made else "" for i, made in enumerate(outputs)], **attrs)
    types, data = {}, {}
    for n, a in zip(names, args):
        if a is None:
            continue
        types[n] = _type(a, n)
        if not isinstance(a, Sym) and np.asarray(a).dtype.kind in "iub" and np.size(a) <= 4096:
            data[n] = numpy_helper.from_array(np.asarray(a), n)
    try:
        out = onnx.shape_inference.infer_node_outputs(onnx.defs.get_schema(op_type, opset, ""), node, types, data,
                                                      opset_imports=[helper.make_opsetid("", opset)])
    except Exception as e:  # noqa: BLE001  (ONNX's inference refuses the form)
        raise NotCompilable(f"{op_type}: no inferred type ({e})") from e
    result: list[tuple[np.dtype, tuple] | None] = []
    for o in node.output:
        if not o:
            result.append(None)
            continue
        t = out.get(o)
        if t is None or not t.tensor_type.elem_type or not t.tensor_type.HasField("shape"):
            raise NotCompilable(f"{op_type}: the type or shape of its output is not known")
        dims = tuple(d.dim_value if d.HasField("dim_value") else None for d in t.tensor_type.shape.dim)
        result.append((np.dtype(helper.tensor_dtype_to_np_dtype(t.tensor_type.elem_type)), dims))
    return result


def _type(a: Any, name: str) -> onnx.TypeProto:
    """The ONNX type of an argument (a Sym or a constant), run-time dimensions named apart."""
    dtype, shape = (a.dtype, a.shape) if isinstance(a, Sym) else (np.asarray(a).dtype, np.shape(a))
    return helper.make_tensor_type_proto(helper.np_dtype_to_tensor_dtype(np.dtype(dtype)),
                                         [f"{name}:{i}" if d is None else d for i, d in enumerate(shape)])


def onnx_attributes(node: Node) -> dict[str, Any]:
    """The node's attributes as ONNX attributes: as the model declares them, or (for a node that
    canonization made) those its op has set."""
    if node.proto is not None:
        return {a.name: helper.get_attribute_value(a) for a in node.proto.attribute}
    return node.op.onnx_attributes()


class Program:
    """The two sessions of one plan on one graph: ``forward(feeds)`` returns the output and the
    saved tensors, ``backward(seed, saved)`` the relevance at the input and at ``fetch``. Without
    ``backward``, only the forward session (the model as onnxruntime runs it), whose
    ``outputs(feeds)`` are the output and the forward tensors in ``fetch``."""

    def __init__(self, graph: LayerGraph, params: Mapping[str, Any], rules: Mapping[str, Rule],
                 feeds: Mapping[str, np.ndarray], fetch: Sequence[str] = (), backward: bool = True,
                 fixed_batch: bool = False) -> None:
        if graph.input.name not in feeds:
            raise NotCompilable("the attributed tensor is not fed")
        self.output = graph.output
        tracer = Tracer(graph.opset)
        shapes = {k: tuple(v.shape) if fixed_batch else (None,) + v.shape[1:] for k, v in feeds.items()}
        if fixed_batch:  # every size, as one forward pass on these feeds finds them
            made = [t for n in graph.nodes for t in n.outputs if t]
            shapes.update((t, tuple(v.shape)) for t, v in engine.forward(graph, params, feeds, fetch=made).values.items())
        env, records = _trace_forward(tracer, graph, params, feeds, shapes, rules if backward else None)
        tracer.backward_started = True
        out = env[graph.output]
        seed = Sym(tracer, "seed", out.dtype, out.shape, BACKWARD)
        grads = {}
        if backward:
            tape = engine.Tape({name: record for name, (_, record) in records.items()})
            nodes = [records[n.name][0] if n.name in records else n for n in graph.nodes]
            grads = engine.backward(graph, tape, seed, fetch=fetch, nodes=nodes)
        #: the tensors whose relevance ``backward`` returns, and those of them it reaches
        self.results = [graph.input.name] + [t for t in fetch if t in grads]
        self._present = [t for t in self.results if grads.get(t) is not None]
        self.backward_session, read = None, set()
        if self._present:
            if any(grads[t].phase != BACKWARD for t in self._present):
                raise NotCompilable("a relevance that does not depend on the seed")
            for t in self._present:
                tracer.node("Identity", [grads[t]], [f"relevance:{t}"], BACKWARD)
            nodes = _live(tracer.nodes[BACKWARD], [f"relevance:{t}" for t in self._present])
            read = {t for n in nodes for t in n.input}
            inputs = [value_info("seed", seed.dtype, seed.shape)] + [
                value_info(k, v.dtype, v.shape) for k, v in tracer.saved.items() if k in read]
            outputs = [value_info(f"relevance:{t}", grads[t].dtype, grads[t].shape) for t in self._present]
            self.backward_session = _session(tracer, BACKWARD, nodes, inputs, outputs)
        saved = [k for k in tracer.saved if k in read]
        #: what the forward session hands to the backward one, and the feeds it reads itself
        self.saved = [k for k in saved if k not in feeds]
        self._passed = [k for k in saved if k in feeds]
        #: the forward tensors a forward-only program returns besides the output
        self.values = [] if backward else [t for t in dict.fromkeys(fetch) if t != graph.output]
        if any(not isinstance(env.get(t), Sym) or t in feeds for t in self.values):
            raise NotCompilable("a fetched tensor is an input or a constant")
        outputs = [value_info(t, env[t].dtype, env[t].shape) for t in [graph.output] + self.values] + [
            value_info(k, tracer.saved[k].dtype, tracer.saved[k].shape) for k in self.saved]
        inputs = [value_info(k, v.dtype, shapes[k]) for k, v in feeds.items()]
        self.forward_session = _session(tracer, FORWARD, _live(tracer.nodes[FORWARD], [o.name for o in outputs]),
                                        inputs, outputs)

    def forward(self, feeds: Mapping[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The output and the tensors the backward reads."""
        values = _run(self.forward_session, dict(feeds))
        saved = dict(zip(self.saved, values[1 + len(self.values):]))
        saved.update((k, feeds[k]) for k in self._passed)
        return values[0], saved

    def outputs(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The output and the fetched forward tensors (a program built without ``backward``)."""
        values = _run(self.forward_session, dict(feeds))
        return dict(zip([self.output] + self.values, values))

    def backward(self, seed: np.ndarray, saved: Mapping[str, np.ndarray]) -> dict[str, np.ndarray | None]:
        """The relevance at the input and at the fetched tensors (None where none reached it)."""
        result: dict[str, np.ndarray | None] = {t: None for t in self.results}
        if self.backward_session is not None:
            result.update(zip(self._present, _run(self.backward_session, {"seed": seed, **saved})))
        return result


class RunTimeSizes(NotCompilable):
    """The graph's sizes depend on the batch size in ways inference does not follow: compile
    for the batch size at hand."""


def _run(session: ort.InferenceSession, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """A session's run; onnxruntime's refusal at run time (a size it checks only then) is
    NotCompilable: the caller runs the interpreter instead."""
    try:
        return session.run(None, dict(feeds))
    except (ort.capi.onnxruntime_pybind11_state.Fail, ort.capi.onnxruntime_pybind11_state.InvalidArgument,
            ort.capi.onnxruntime_pybind11_state.RuntimeException) as e:
        raise NotCompilable(f"onnxruntime refused a run: {e}") from e


def _trace_forward(tracer: Tracer, graph: LayerGraph, params: Mapping[str, Any], feeds: Mapping[str, np.ndarray],
                   shapes: Mapping[str, tuple], rules: Mapping[str, Rule] | None,
                   ) -> tuple[dict[str, Any], dict[str, tuple[TracedNode, NodeRecord]]]:
    """Write the model's forward on feeds of ``shapes``; return every tensor (Syms, and the
    constants) and, with ``rules`` (None: no backward), what the backward needs of each live
    node, as the engine's forward keeps it."""
    env: dict[str, Any] = dict(params)
    for k, v in feeds.items():
        env[k] = Sym(tracer, k, v.dtype, shapes[k], FORWARD)
    records: dict[str, tuple[TracedNode, NodeRecord]] = {}
    for node in graph.nodes:
        args = tuple(env[t] if t else None for t in node.inputs)
        outs = tuple(o if o is None or t not in shapes else Sym(tracer, o.name, o.dtype, shapes[t], o.phase, o.nonneg)
                     for t, o in zip(node.outputs, write_forward(tracer, node, args, node.outputs)))
        if any(o is not None and None in o.shape[1:] for o in outs):  # sizes only the run knows
            raise RunTimeSizes(f"{node.name}: an output of run-time size beyond the batch axis")
        env.update(zip(node.outputs, outs))
        if rules is not None and any(t in graph.live for t in node.inputs):
            rule = rules.get(node.name)
            kept = outs if rule is not None and rule.needs_outputs else None
            named = None if rule is None else NamedRule(rule, node)
            records[node.name] = (TracedNode(node, TracedOp(node, tracer)), NodeRecord(Traced(args, outs), args, kept, named))
    return env, records


def _non_negative(node: Node, args: Sequence[Any]) -> bool:
    if node.op_type in _NON_NEGATIVE:
        return True
    floats = [a for a in args if isinstance(a, Sym) and a.dtype.kind == "f"]
    if node.op_type == "Gemm" and min(node.op.alpha, node.op.beta) < 0:
        return False
    return node.op_type in _KEEPS_SIGN and bool(floats) and all(a.nonneg for a in floats) and all(
        not isinstance(a, np.ndarray) or a.dtype.kind != "f" or bool(np.all(a >= 0)) for a in args)


def _live(nodes: Sequence[onnx.NodeProto], outputs: Sequence[str]) -> list[onnx.NodeProto]:
    """The nodes that the outputs depend on (a vjp traced through an op's forward leaves that
    forward's copy unread)."""
    wanted, kept = set(outputs), []
    for node in reversed(nodes):
        if wanted.intersection(node.output):
            kept.append(node)
            wanted.update(node.input)
    return kept[::-1]


def _session(tracer: Tracer, phase: int, nodes: list, inputs: list, outputs: list) -> ort.InferenceSession:
    used = {t for n in nodes for t in n.input}
    graph = helper.make_graph(nodes, "backward" if phase else "forward", inputs, outputs,
                              [t for t in tracer.initializers[phase] if t.name in used])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", tracer.opset_of(phase))])
    model.ir_version = 8
    try:
        return ort.InferenceSession(model.SerializeToString(), ortk.session_options(), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime refuses a form (an op, a dtype): the interpreter runs it
        raise NotCompilable(f"onnxruntime refused the {'backward' if phase else 'forward'} graph: {e}") from e


#: the environment variable that turns compilation off ("0"): every pass then runs in the
#: interpreter, with per-layer sessions for the heavy ops
ENV = "ONNXATTR_COMPILE"


def enabled() -> bool:
    """Whether plans are compiled: ``ONNXATTR_COMPILE`` "1" (or unset) or "0"; OptionError
    naming the variable for anything else."""
    import os

    from ..errors import OptionError

    value = os.environ.get(ENV, "1").strip() or "1"
    if value not in ("0", "1"):
        raise OptionError(f"{ENV}={value!r}: set it to 1 (compile the passes, the default) or 0 (the interpreter)")
    return value == "1"


class Programs:
    """The compiled programs of one model: one per plan (its rules, compared by value), fetched
    tensors, feeds' dtypes and sizes, and thread count; None for one the interpreter runs."""

    #: how many are kept (least recently used dropped first): each holds its sessions'
    #: prepacked weights
    SIZE = 8
    #: the most weight bytes for which a graph of run-time sizes is compiled per batch size
    PER_BATCH_BYTES = 64 << 20

    def __init__(self, graph: LayerGraph, params: Mapping[str, Any]) -> None:
        self.graph, self.params = graph, params
        self.cache: OrderedDict[Hashable, Program | None] = OrderedDict()
        #: why the last plan left to the interpreter was (None while every one compiled)
        self.refused: str | None = None
        #: the keys (batch size left out) of the plans compiled per batch size
        self.per_batch_keys: set[Hashable] = set()

    def per_batch(self, feeds: Mapping[str, Any]) -> bool:
        """Whether a graph whose sizes ONNX's inference cannot follow is worth a program per
        batch size: each holds its own prepacked weights, so only where they are small
        (``PER_BATCH_BYTES``; the tiny transformers, not BERT-base's 440 MB)."""
        weights = sum(v.nbytes for v in self.params.values() if isinstance(v, np.ndarray))
        return weights <= self.PER_BATCH_BYTES

    def refuse(self, program: Program, why: str) -> None:
        """Leave ``program``'s plan to the interpreter from now on (onnxruntime refused a run)."""
        for key, cached in self.cache.items():
            if cached is program:
                self.cache[key] = None
        self.refused = why

    def get(self, rules: Mapping[str, Rule], feeds: Mapping[str, Any], fetch: Sequence[str] = (),
            backward: bool = True, fixed_batch: bool = False) -> Program | None:
        """The program of these rules on feeds of these dtypes and sizes (the batch size too
        where the graph fixes it: its folded constants may depend on it)."""
        if not all(type(v) is np.ndarray for v in feeds.values()):
            return None
        head = (rules_key(rules), tuple(fetch), backward, threads.num_threads())
        key = head + (tuple((k, v.dtype.str, v.shape[1:]) for k, v in sorted(feeds.items())),)
        if key in self.per_batch_keys:
            fixed_batch = True
        if fixed_batch:
            key = head + (tuple((k, v.dtype.str, v.shape) for k, v in sorted(feeds.items())),)
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        try:
            program: Program | None = Program(self.graph, self.params, rules, feeds, fetch, backward, fixed_batch)
        except RunTimeSizes as e:
            if not fixed_batch and self.per_batch(feeds):
                self.per_batch_keys.add(key)
                return self.get(rules, feeds, fetch, backward, True)
            program, self.refused = None, str(e)
        except NotCompilable as e:
            program, self.refused = None, str(e)
        except Exception as e:  # noqa: BLE001  (an op's NumPy code met a symbolic tensor: the interpreter runs it)
            program, self.refused = None, f"{type(e).__name__}: {e}"
        self.cache[key] = program
        while len(self.cache) > self.SIZE:
            self.cache.popitem(last=False)
        return program


def rules_key(rules: Mapping[str, Rule]) -> Hashable:
    """The rules as a value: each node's rule type and parameters (arrays by content)."""
    return tuple(sorted((name, type(r).__qualname__, tuple(sorted((k, _frozen(v)) for k, v in vars(r).items())))
                        for name, r in rules.items()))


def _frozen(v: Any) -> Hashable:
    if isinstance(v, np.ndarray):
        return ("array", v.dtype.str, v.shape, hash(v.tobytes()))
    try:
        hash(v)
        return v
    except TypeError:
        return ("object", id(v))
