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
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .errors import OptionError
from .rules import AlphaBeta, Epsilon, Flat, Gamma, Norm, Pass, Rule, ZBox, ZPlus  # noqa: F401
from .rules import AttentionOp, Constant, GradientForm, Identity, LayerNormIdentity, RMSNormIdentity, Uniform

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


def producers(graph: LayerGraph) -> dict[str, Node]:
    """{tensor: the node that computes it}."""
    return {t: n for n in graph.nodes for t in n.outputs if t}


def origin(graph: LayerGraph, producer: Mapping[str, Node], tensor: str) -> Node | None:
    """The node that computes ``tensor``, looking through the nodes that only move, cast or mask
    it: routes (casts, reshapes, transposes, dropout) and Where (the NaN guard torch's SDPA export
    puts after the softmax), each with one operand on the relevance path. ``producer``: from
    :func:`producers`."""
    node = producer.get(tensor)
    while node is not None and (node.kind == "route" or node.op_type == "Where"):
        live = [t for t in node.inputs if t in graph.live]
        if len(live) != 1:
            break
        node = producer.get(live[0])
    return node


class Product(Selector):
    """MatMul, Einsum, Mul and Gate nodes with two or more operands that depend on the attributed
    tensor (``graph.live``): Q K^T, A V, gate * up. A mask or RoPE's cos/sin, computed from
    shapes, integers and constants, does not count.

    With ``constant=(i, selector)``: only the products of exactly two such operands whose
    operand ``i`` comes from a node ``selector`` picks (through casts, reshapes and
    transposes, :func:`origin`) and whose other operand does not: attention weights (``OpType("Softmax")``)
    times V, a gate (``ACTIVATIONS``) times up.
    """

    op_types = ("MatMul", "Einsum", "Mul", "Gate")

    def __init__(self, constant: tuple[int, Selector] | None = None) -> None:
        self.constant = constant

    def bind(self, graph: LayerGraph) -> Any:
        source = self.constant[1].bind(graph) if self.constant is not None else None
        producer = producers(graph)

        def pred(node: Node) -> bool:
            if node.op_type not in self.op_types:
                return False
            live = [i for i, t in enumerate(node.inputs) if t and t in graph.live]
            if len(live) < 2:
                return False
            if self.constant is None:
                return True
            index = self.constant[0]
            if len(live) != 2 or index not in live:
                return False
            picked = [(o := origin(graph, producer, node.inputs[i])) is not None and bool(source(o)) for i in live]
            return picked[live.index(index)] and not picked[1 - live.index(index)]

        return pred

    def __repr__(self) -> str:
        return "Product()" if self.constant is None else f"Product(constant=({self.constant[0]}, {self.constant[1]!r}))"


@dataclass
class Composite:
    """An ordered list of (selector, rule); the first match wins.

    With ``lrp=True`` the LRP base map follows the given pairs: activations and BatchNorms that
    could not be fused (``Affine``) and local response normalisations (``LRN``, as the LRP
    toolbox and iNNvestigate) pass relevance (:class:`~onnxattr.rules.Pass`, as Zennit),
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
        self._base = ((Kind("activation"), Pass()), (OpType("Affine", "LRN"), Pass()), (Kind("sum"), Norm())) if self.lrp else ()

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
                    if isinstance(rule, ZBox):
                        _check_box(rule, node, graph)
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


def _broadcasts(bound: tuple[int, ...], data: tuple[int | None, ...]) -> bool:
    """Whether an array of shape ``bound`` broadcasts to ``data`` (numpy's rule; a dimension
    unknown until run time takes any size)."""
    return len(bound) <= len(data) and all(b == 1 or d is None or b == d for b, d in zip(bound[::-1], data[::-1]))


def _check_box(rule: ZBox, node: Node, graph: LayerGraph) -> None:
    """OptionError, naming the option and the shapes, where ZBox's ``low``/``high`` does not
    broadcast to the input of the node it bounds (numpy would raise a bare ValueError in the
    backward pass)."""
    data = graph.shapes.get(node.inputs[0])
    if data is None:
        return
    for option, value in (("low", rule.low), ("high", rule.high)):
        if not _broadcasts(tuple(np.shape(value)), tuple(data)):
            raise OptionError(f"option {option}= of shape {np.shape(value)} does not broadcast to {node.inputs[0]!r} "
                              f"of shape {tuple(data)}, the input of node {node.name!r} that z^B bounds; give a "
                              "number or an array broadcastable to it")


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


#: the elementwise nonlinearities that AttnLRP's identity rule passes relevance through. ReLU,
#: LeakyReLU and PReLU are left their gradient, which for a positively homogeneous f is the same
#: (f(x) / x = f'(x)) and needs neither x nor y kept
ACTIVATIONS = OpType("Gelu", "Swish", "Tanh", "Sigmoid", "Elu", "Selu", "Softplus", "Softsign", "HardSwish",
                     "HardSigmoid", "Erf", "Clip")
#: what a gate of a gated MLP is computed by (CP-LRP holds it constant)
GATES = OpType(*ACTIVATIONS.op_types, "Relu", "LeakyRelu", "PRelu")
NORMS = ((OpType("LayerNormalization"), LayerNormIdentity()), (OpType("RMSNormalization"), RMSNormIdentity()))


def _linear(linear: Rule | None) -> list[tuple[Selector, Rule]]:
    return [] if linear is None else [(Kind("linear"), GradientForm(linear))]


def attnlrp(linear: Rule | None = None) -> Composite:
    """AttnLRP as LXT 2.1's efficient mode applies it (Achtibat et al. 2024), a gradient plan:
    the uniform rule at every product of two activations (Q K^T, A V, gate * up) and inside the
    opset-23 Attention op, the identity rule at LayerNorm and RMSNorm (1/std constant) and at
    elementwise nonlinearities; Softmax, linear layers, residual Adds and embeddings keep their
    gradient (LRP-0). ``linear``: an LRP rule for the linear layers (``Gamma(0.25)`` as LXT's ViT
    example), run in gradient form (:class:`~onnxattr.rules.GradientForm`)."""
    rules = _linear(linear) + [(OpType("Attention"), AttentionOp()), (Product(), Uniform()), *NORMS,
                               (ACTIVATIONS, Identity())]
    return Composite(rules, name="attnlrp")


def cplrp(linear: Rule | None = None) -> Composite:
    """CP-LRP (Ali et al. 2022) as LXT 2.1 applies it: the attention weights are constants (A V
    sends nothing to A, so nothing reaches Q and K through the softmax; V keeps its gradient),
    and so is the gate of a gated MLP (gate * up: up keeps its gradient); norms and
    nonlinearities as in :func:`attnlrp`."""
    softmax, gate = OpType("Softmax"), GATES
    rules = _linear(linear) + [
        (OpType("Attention"), AttentionOp(qk=0.0, v=1.0)),
        (Product(constant=(0, softmax)), Constant(0)), (Product(constant=(1, softmax)), Constant(1)),
        (Product(constant=(0, gate)), Constant(0)), (Product(constant=(1, gate)), Constant(1)),
        *NORMS, (ACTIVATIONS, Identity()),
    ]
    return Composite(rules, name="cplrp")
