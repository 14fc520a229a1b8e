"""Composites: which rule applies to which layer.

A :class:`Composite` is an ordered list of (selector, rule) pairs; the first selector that
matches a node decides its rule, and nodes no selector matches keep their exact vjp. Selectors
pick nodes by op type (:class:`OpType`), by role (:class:`Kind`), by node-name pattern
(:class:`Name`) or by position among the linear layers (:class:`First`, :class:`Last`).
The named LRP composites follow Zennit 0.5.1 (``composites.py``).

>>> from onnxattr.composites import Composite, OpType, First, Name
>>> from onnxattr.rules import Epsilon, ZPlus, Flat
>>> custom = Composite([(First(), Flat()), (Name(r"layer4\\..*"), Epsilon(0.25)),
...                     (OpType("Conv"), ZPlus()), (OpType("Gemm"), Epsilon())], lrp=True)
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from .errors import OptionError
from .rules import AlphaBeta, Epsilon, Flat, Gamma, Norm, Pass, Rule, ZBox, ZPlus  # noqa: F401

if TYPE_CHECKING:
    from .graph import LayerGraph, Node


class Selector:
    """Picks nodes of a graph. ``bind(graph)`` gives the predicate for one graph."""

    def bind(self, graph: LayerGraph) -> Any:
        return lambda node: self.matches(node)

    def matches(self, node: Node) -> bool:
        raise NotImplementedError


class OpType(Selector):
    """Nodes of the given ONNX op types (after canonization: BatchNormalization fused, a lone
    one is ``Affine``)."""

    def __init__(self, *op_types: str) -> None:
        self.op_types = op_types

    def matches(self, node: Node) -> bool:
        return node.op_type in self.op_types

    def __repr__(self) -> str:
        return f"OpType({', '.join(map(repr, self.op_types))})"


class Kind(Selector):
    """Nodes whose op plays one of these roles: linear, activation, sum, maxpool, route, other."""

    def __init__(self, *kinds: str) -> None:
        self.kinds = kinds

    def matches(self, node: Node) -> bool:
        return node.kind in self.kinds

    def __repr__(self) -> str:
        return f"Kind({', '.join(map(repr, self.kinds))})"


class Name(Selector):
    """Nodes whose name matches a regular expression (``re.fullmatch``)."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._re = re.compile(pattern)

    def matches(self, node: Node) -> bool:
        return self._re.fullmatch(node.name) is not None

    def __repr__(self) -> str:
        return f"Name({self.pattern!r})"


class _Position(Selector):
    index = 0

    def __init__(self, among: Selector | None = None) -> None:
        self.among = among

    def bind(self, graph: LayerGraph) -> Any:
        among = self.among.bind(graph) if self.among is not None else (lambda n: n.kind == "linear")
        picked = [n.name for n in graph.nodes if among(n) and any(t in graph.live for t in n.inputs)]
        chosen = picked[self.index] if picked else None
        return lambda node: node.name == chosen

    def __repr__(self) -> str:
        return f"{type(self).__name__}({'' if self.among is None else repr(self.among)})"


class First(_Position):
    """The first node (in topological order, on the path of relevance from the attributed tensor:
    the input, or the ``wrt`` tensor) that ``among`` selects: by default the first linear layer
    (Conv, ConvTranspose, Gemm, Dense, Affine) after it."""

    index = 0


class Last(_Position):
    """The last node that ``among`` selects: by default the last linear layer."""

    index = -1


@dataclass
class Composite:
    """An ordered list of (selector, rule); the first match wins.

    With ``lrp=True`` the LRP base map follows the given pairs: activations and BatchNorms that
    could not be fused (``Affine``) pass relevance (:class:`~onnxattr.rules.Pass`, as Zennit),
    and Add, Sum and average pooling split it in proportion to their inputs
    (:class:`~onnxattr.rules.Norm`); MaxPool and reshapes keep the gradient.
    """

    rules: Sequence[tuple[Selector, Rule]]
    lrp: bool = False
    name: str = "custom"
    _base: Sequence[tuple[Selector, Rule]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for pair in self.rules:
            if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], Selector) and isinstance(pair[1], Rule)):
                raise TypeError(f"a composite maps a Selector to a Rule; got {pair!r}")
        self._base = ((Kind("activation"), Pass()), (OpType("Affine"), Pass()), (Kind("sum"), Norm())) if self.lrp else ()

    def assign(self, graph: LayerGraph) -> dict[str, Rule]:
        """{node name -> rule} for every node of ``graph`` that a selector picks; the first match
        wins. OptionError, naming the node, where the rule cannot stand for that node's kind of op
        (a rule for linear layers on an Add, say)."""
        bound = [(s.bind(graph), s, r) for s, r in list(self.rules) + list(self._base)]
        out = {}
        for node in graph.nodes:
            for pred, selector, rule in bound:
                if pred(node):
                    if rule.kinds is not None and node.kind not in rule.kinds:
                        raise OptionError(
                            f"composite {self.name!r} puts {rule!r} on node {node.name!r} ({node.op_type}, "
                            f"kind {node.kind!r}) through {selector!r}; that rule applies to "
                            f"{' or '.join(rule.kinds)} layers only")
                    out[node.name] = rule
                    break
        return out

    def describe(self, graph: LayerGraph) -> list[tuple[str, str, str]]:
        """(node name, op type, rule) for every node, 'gradient' where no rule applies."""
        table = self.assign(graph)
        return [(n.name, n.op_type, repr(table[n.name]) if n.name in table else "gradient") for n in graph.nodes]

    def __repr__(self) -> str:
        lines = [f"Composite {self.name!r}:"] + [f"  {s!r:<28} -> {r!r}" for s, r in self.rules]
        if self.lrp:
            lines += [f"  {s!r:<28} -> {r!r}" for s, r in self._base]
        lines.append("  (any other node)            -> gradient")
        return "\n".join(lines)


CONV = OpType("Conv", "ConvTranspose")
DENSE = OpType("Gemm", "Dense")
LINEAR = OpType("Conv", "ConvTranspose", "Gemm", "Dense")


def everywhere(rule: Rule, name: str) -> Composite:
    """One rule on every Conv and dense layer (LRP base map elsewhere)."""
    return Composite([(CONV, rule), (DENSE, rule)], lrp=True, name=name)


def epsilon_plus_flat(epsilon: float = 1e-6) -> Composite:
    """Flat on the first linear layer, z+ on the other convolutions, epsilon on dense layers."""
    return Composite([(First(LINEAR), Flat()), (CONV, ZPlus()), (DENSE, Epsilon(epsilon))], lrp=True,
                     name="epsilon_plus_flat")


def epsilon_gamma_box(low: Any, high: Any, gamma: float = 0.25, epsilon: float = 1e-6) -> Composite:
    """z^B(low, high) on the first convolution, gamma on the other convolutions, epsilon on dense
    layers."""
    return Composite([(First(CONV), ZBox(low, high)), (CONV, Gamma(gamma)), (DENSE, Epsilon(epsilon))], lrp=True,
                     name="epsilon_gamma_box")


def epsilon_alpha2_beta1(epsilon: float = 1e-6) -> Composite:
    """alpha2-beta1 on convolutions, epsilon on dense layers."""
    return Composite([(CONV, AlphaBeta(2.0, 1.0)), (DENSE, Epsilon(epsilon))], lrp=True,
                     name="epsilon_alpha2_beta1")


def epsilon_alpha2_beta1_flat(epsilon: float = 1e-6) -> Composite:
    """Flat on the first layer, alpha2-beta1 on the other convolutions, epsilon on dense layers."""
    return Composite([(First(LINEAR), Flat()), (CONV, AlphaBeta(2.0, 1.0)), (DENSE, Epsilon(epsilon))],
                     lrp=True, name="epsilon_alpha2_beta1_flat")
