"""Executes a LayerGraph: one forward pass that keeps what the backward needs, and one backward
pass in reverse topological order that sums cotangents where a tensor fans out.

The engine knows nothing about any particular op. At each node the backward asks ``rule_for``
which rule applies; a rule's ``backward`` replaces the op's vjp, and with no rule the op's exact
vjp runs. ``observer`` sees every node's incoming and outgoing relevance (for conservation checks
and layer-wise analyses).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

from .backend import on_one_device
from .graph import LayerGraph, Node
from .ops.base import Array


class Rule(Protocol):
    """A backward rule: replaces the vjp of the nodes it is assigned to."""

    #: whether the rule reads the node's input values (kept by the forward pass)
    needs_inputs: bool
    #: whether the rule reads the node's output values
    needs_outputs: bool

    def backward(self, node: Node, record: "NodeRecord", grads: Sequence[Array | None],
                 needs: Sequence[bool]) -> list[Array | None]: ...


@dataclass
class NodeRecord:
    """What the forward pass kept of one node: the op's vjp context and, where a rule asks for
    them, its input and output values."""

    ctx: Any = None
    inputs: tuple | None = None
    outputs: tuple | None = None


@dataclass
class Tape:
    """The records of the live nodes of one forward pass, and the tensors asked for."""

    records: dict[str, NodeRecord] = field(default_factory=dict)
    values: dict[str, Array] = field(default_factory=dict)


RuleFor = Callable[[Node], "Rule | None"]
Observer = Callable[[Node, Sequence["Array | None"], Sequence["Array | None"]], None]


def forward(
    graph: LayerGraph,
    params: Mapping[str, Array],
    x: Array,
    fetch: Sequence[str] = (),
    record: bool = False,
    rule_for: RuleFor | None = None,
) -> Tape:
    """Run the graph on input ``x``; return the tensors named in ``fetch`` (and the graph
    output) and, with ``record``, what the backward pass needs of every live node."""
    env: dict[str, Array] = {graph.input.name: x}
    wanted = set(fetch) | {graph.output}
    last = graph.last_uses()
    tape = Tape()
    for i, node in enumerate(graph.nodes):
        args = [(env[t] if t in env else params[t]) if t else None for t in node.inputs]
        args = on_one_device(args)  # shape tensors computed on the host meet GPU data
        outs, ctx = node.op.forward(*args)
        for t, v in zip(node.outputs, outs):
            if t:
                env[t] = v
        if record and any(t in graph.live for t in node.inputs):
            rule = rule_for(node) if rule_for else None
            tape.records[node.name] = NodeRecord(
                ctx=ctx,
                inputs=tuple(args) if rule is not None and rule.needs_inputs else None,
                outputs=tuple(outs) if rule is not None and rule.needs_outputs else None,
            )
        for t in node.inputs:
            if t and last.get(t) == i and t not in wanted and t in env and t != graph.input.name:
                del env[t]
    for t in wanted:
        tape.values[t] = env[t] if t in env else params[t]
    return tape


def backward(
    graph: LayerGraph,
    tape: Tape,
    seed: Array,
    rule_for: RuleFor | None = None,
    observer: Observer | None = None,
    fetch: Sequence[str] = (),
) -> dict[str, Array]:
    """Propagate ``seed`` (the cotangent of the graph output) back to the input.

    Returns the cotangent of the input under its own name, plus those of the tensors in
    ``fetch`` (the relevance reaching intermediate layers).
    """
    grads: dict[str, Array] = {graph.output: seed}
    kept: dict[str, Array] = {}
    wanted = set(fetch)
    for node in reversed(graph.nodes):
        record = tape.records.get(node.name)
        if record is None:
            continue
        gs = [grads.pop(t, None) if t else None for t in node.outputs]
        for t, g in zip(node.outputs, gs):
            if t in wanted and g is not None:
                kept[t] = g
        if all(g is None for g in gs):
            continue
        needs = [bool(t) and t in graph.live for t in node.inputs]
        rule = rule_for(node) if rule_for else None
        if rule is None:
            gin = node.op.cotangents(record.ctx, gs, needs)
        else:
            gin = rule.backward(node, record, gs, needs)
        if observer is not None:
            observer(node, gs, gin)
        for t, g, need in zip(node.inputs, gin, needs):
            if need and g is not None:
                grads[t] = grads[t] + g if t in grads else g
        tape.records.pop(node.name)  # free what the forward kept as soon as it is used
    result = {t: g for t, g in kept.items()}
    result[graph.input.name] = grads.get(graph.input.name)
    return result
