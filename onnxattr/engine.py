"""Executes a LayerGraph: one forward pass that keeps what the backward needs, and one backward
pass in reverse topological order that sums cotangents where a tensor fans out.

The engine knows nothing about any particular op. The forward pass looks up each node's rule in
a plan's ``rules`` (node name -> rule, :class:`onnxattr.plan.Plan`) once and keeps it in the
node's record; at that node the backward pass runs the rule's ``backward`` in place of the op's
vjp, or the op's exact vjp where there is none. ``observer`` sees every node's incoming and
outgoing relevance (for conservation checks and layer-wise analyses).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from .backend import on_one_device

if TYPE_CHECKING:
    from .graph import LayerGraph, Node
    from .ops.base import Array
    from .rules.base import Rule


@dataclass
class NodeRecord:
    """What the forward pass kept of one node: its rule (None: the exact vjp), the op's vjp
    context and, where the rule asks for them, its input and output values."""

    ctx: Any = None
    inputs: tuple | None = None
    outputs: tuple | None = None
    rule: Rule | None = None


@dataclass
class Tape:
    """The records of the live nodes of one forward pass, and the tensors asked for."""

    records: dict[str, NodeRecord] = field(default_factory=dict)
    values: dict[str, Array] = field(default_factory=dict)


Observer = Callable[["Node", Sequence["Array | None"], Sequence["Array | None"]], None]


def forward(
    graph: LayerGraph,
    params: Mapping[str, Array],
    feeds: Mapping[str, Array],
    fetch: Sequence[str] = (),
    record: bool = False,
    rules: Mapping[str, Rule] | None = None,
) -> Tape:
    """Run the graph on ``feeds`` (graph input name -> batch); return the tensors named in
    ``fetch`` (and the graph output) and, with ``record``, what the backward pass needs of every
    live node under ``rules``."""
    env: dict[str, Array] = {**params, **feeds}  # one lookup per input; feeds over params
    wanted = set(fetch) | {graph.output}
    rules = rules or {}
    tape = Tape()
    # on the host nothing needs moving; on the GPU, shape tensors computed on the host meet GPU data
    host = all(type(v) is np.ndarray for v in feeds.values()) and all(
        type(v) is np.ndarray for v in params.values())
    for node, (free, live, _) in zip(graph.nodes, _schedule(graph)):
        args = [env[t] if t else None for t in node.inputs]
        if not host:
            args = on_one_device(args)
        outs, ctx = node.op.forward(*args)
        for t, v in zip(node.outputs, outs):
            if t:
                env[t] = v
        if record and live:
            rule = rules.get(node.name)
            tape.records[node.name] = NodeRecord(
                ctx=ctx,
                inputs=tuple(args) if rule is not None and rule.needs_inputs else None,
                outputs=tuple(outs) if rule is not None and rule.needs_outputs else None,
                rule=rule,
            )
        for t in free:  # activations read for the last time (never a parameter or a feed)
            if t not in wanted:
                env.pop(t, None)
    for t in wanted:
        tape.values[t] = env[t]
    return tape


def _schedule(graph: LayerGraph) -> list[tuple[tuple[str, ...], bool, tuple[bool, ...]]]:
    """Per node: the tensors computed by the graph that it reads for the last time, whether it
    reads a live tensor, and which of its inputs are live (the cotangents the backward needs);
    worked out once per graph, not on every pass."""
    key = tuple(map(id, graph.nodes))
    cached = graph.__dict__.get("_engine_schedule")
    if cached is not None and cached[0] == key:
        return cached[1]
    last = graph.last_uses()
    made = {t for n in graph.nodes for t in n.outputs if t}
    schedule = [
        (tuple(dict.fromkeys(t for t in node.inputs if t in made and last.get(t) == i)),
         any(t in graph.live for t in node.inputs),
         tuple(bool(t) and t in graph.live for t in node.inputs))
        for i, node in enumerate(graph.nodes)
    ]
    graph.__dict__["_engine_schedule"] = (key, schedule)
    return schedule


def backward(
    graph: LayerGraph,
    tape: Tape,
    seed: Array,
    observer: Observer | None = None,
    fetch: Sequence[str] = (),
    nodes: Sequence[Node] | None = None,
) -> dict[str, Array]:
    """Propagate ``seed`` (the cotangent of the graph output) back to the input, with the rules
    the forward pass recorded.

    Returns the cotangent of the input under its own name (None where nothing reached it), plus
    those of the tensors in ``fetch`` that relevance reached (the relevance at intermediate
    layers). Each node's record is freed as soon as it has been used. ``nodes``: the graph's
    nodes as the backward sees them (:mod:`onnxattr.compiled` passes nodes whose ops write ONNX).
    """
    grads: dict[str, Array] = {graph.output: seed}
    kept: dict[str, Array] = {}
    wanted = set(fetch)
    for node, (_, _, needs) in zip(reversed(nodes or graph.nodes), reversed(_schedule(graph))):
        record = tape.records.pop(node.name, None)  # free what the forward kept as soon as it is used
        if record is None:
            continue
        gs = [grads.pop(t, None) if t else None for t in node.outputs]
        for t, g in zip(node.outputs, gs):
            if t in wanted and g is not None:
                kept[t] = g
        if all(g is None for g in gs):
            continue
        if record.rule is None:
            gin = node.op.cotangents(record.ctx, gs, needs)
        else:
            gin = record.rule.backward(node, record, gs, needs)
        if observer is not None:
            observer(node, gs, gin)
        for t, g, need in zip(node.inputs, gin, needs):
            if need and g is not None:
                grads[t] = grads[t] + g if t in grads else g
    kept[graph.input.name] = grads.get(graph.input.name)
    return kept
