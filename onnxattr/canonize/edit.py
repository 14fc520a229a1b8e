"""The state one canonization works on: the node list being rewritten, the constants, and the
record of what was recognised; with the lookups and the edits that every rewrite shares."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..graph import LayerGraph, Node
from ..ops import make_op


@dataclass
class Edit:
    """A graph under rewrite. ``found`` lists (pattern, names of the nodes it replaced)."""

    nodes: list[Node]
    consts: dict[str, np.ndarray]
    graph: LayerGraph
    found: list[tuple[str, list[str]]] = field(default_factory=list)

    def producer(self, tensor: str) -> Node | None:
        return next((n for n in self.nodes if tensor in n.outputs), None)

    def consumers(self, tensor: str) -> list[Node]:
        return [n for n in self.nodes if tensor in n.inputs]

    def only_reader(self, tensor: str, node: Node) -> bool:
        """Whether ``node`` is the one node that reads ``tensor``, and it is no graph output."""
        readers = self.consumers(tensor)
        return tensor != self.graph.output and len(readers) == 1 and readers[0] is node

    def rank(self, tensor: str) -> int | None:
        shape = self.graph.shapes.get(tensor)
        return None if shape is None else len(shape)

    def shape(self, tensor: str) -> tuple[int | None, ...] | None:
        return self.graph.shapes.get(tensor)

    def make(self, op_type: str, attrs: dict[str, Any], name: str, inputs: list[str], outputs: list[str]) -> Node:
        """A node of ``op_type`` under a name no other node has."""
        taken = {n.name for n in self.nodes}
        unique, i = name, 1
        while unique in taken:
            unique, i = f"{name}_{i}", i + 1
        return Node(unique, op_type, make_op(op_type, attrs, self.graph.opset, unique), inputs, outputs)

    def constant(self, name: str, value: np.ndarray) -> str:
        """Add a float32 constant under a fresh name; return the name."""
        unique, i = name, 1
        while unique in self.consts:
            unique, i = f"{name}_{i}", i + 1
        self.consts[unique] = np.asarray(value, dtype=np.float32)
        return unique

    def replace(self, removed: list[Node], by: Node) -> None:
        """Put ``by`` where the last of ``removed`` was (it writes that node's output) and drop the rest."""
        gone = {id(n) for n in removed}
        last = max(self.nodes.index(n) for n in removed)
        self.nodes = [by if i == last else n for i, n in enumerate(self.nodes) if i == last or id(n) not in gone]

    def bypass(self, removed: Node, by: str) -> None:
        """Drop ``removed`` and make its readers read ``by``; where ``removed`` made the graph
        output, the producer of ``by`` takes the output's name instead."""
        out = removed.outputs[0]
        self.nodes = [n for n in self.nodes if n is not removed]
        if out == self.graph.output:
            for n in self.nodes:
                n.outputs = [out if t == by else t for t in n.outputs]
            self._rename_input(by, out)
        else:
            self._rename_input(out, by)

    def _rename_input(self, old: str, new: str) -> None:
        for n in self.nodes:
            n.inputs = [new if t == old else t for t in n.inputs]


def split_const(node: Node, consts: dict) -> tuple[str | None, str | None]:
    """(data, constant) operands of a binary node with exactly one constant operand."""
    a, b = node.inputs[:2]
    if b in consts and a not in consts:
        return a, b
    if a in consts and b not in consts:
        return b, a
    return None, None


def common_name(nodes: list[Node], op_type: str) -> str:
    """A name for the node that replaces ``nodes``: their common path prefix (torch's module
    path, "/1/") plus the op type, else the last node's name with the op type."""
    names = [n.name for n in nodes]
    prefix = names[0]
    for name in names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    cut = max(prefix.rfind("/"), prefix.rfind("."))
    return prefix[: cut + 1] + op_type if cut >= 0 else f"{names[-1]}::{op_type}"
