"""The squeeze-excitation product y = x * sigmoid(g(x)) as one ``Gate`` node.

Under LRP the gate is a constant multiplier: y = s x with s fixed is a diagonal linear layer,
and any of its rules gives R_x = R_y, with nothing for the gate branch. This is LRP's rule for
multiplicative gates, "signal-take-all" (Arras et al. 2017, "Explaining Recurrent Neural Network
Predictions in Sentiment Analysis"; Arras et al. 2019 found it the most faithful choice), and
LXT 2.1's CP-LRP treatment of a gated MLP, whose gate it detaches
(``act(gate(x).detach()) * up(x)``). Zennit 0.5.1 has no rule or canonizer for the product:
its hooks sit on modules (``core.BasicHook`` returns the relevance as the module's input
gradient), so at torchvision's ``scale * input`` the relevance meets plain autograd and x gets
s * R while the gate branch gets x * R: not conservative. AttnLRP gives a product of two
activations the uniform rule instead, which is why only a *sigmoid* gate computed from x itself
is made a Gate here: a product of two branches (SwiGLU's Swish(gate) * up) stays a Mul.

The Gate's vjp is the exact one, so gradient methods are unchanged.
"""
from __future__ import annotations

from ..graph import Node
from .edit import Edit

GATES = ("Sigmoid", "HardSigmoid")
REACH = 64  # how many producers back the gate's computation is searched for x


def gate_products(edit: Edit) -> None:
    """Make each Mul of a tensor and a sigmoid gate computed from it a Gate node."""
    for mul in [n for n in edit.nodes if n.op_type == "Mul"]:
        found = _gate_operands(edit, mul)
        if found is None:
            continue
        x, g = found
        node = edit.make("Gate", {}, f"{mul.name}::Gate", [x, g], mul.outputs[:1])
        edit.replace([mul], node)
        edit.found.append(("squeeze-excitation gate", [mul.name]))


def _gate_operands(edit: Edit, mul: Node) -> tuple[str, str] | None:
    """(data, gate) where one operand of ``mul`` is a sigmoid gate computed from the other and
    broadcast to its shape; None otherwise."""
    a, b = mul.inputs[:2]
    if a in edit.consts or b in edit.consts or a == b:
        return None
    for x, g in ((a, b), (b, a)):
        p = edit.producer(g)
        if p is None or p.op_type not in GATES:
            continue
        xs, gs, ys = edit.shape(x), edit.shape(g), edit.shape(mul.outputs[0])
        if xs is None or gs is None or xs != ys or len(gs) != len(xs):
            continue
        if any(d != 1 and d != e for d, e in zip(gs, xs)):
            continue
        if _depends_on(edit, g, x):
            return x, g
    return None


def _depends_on(edit: Edit, tensor: str, source: str) -> bool:
    """Whether ``tensor`` is computed from ``source`` (searched REACH tensors back)."""
    seen, stack = set(), [tensor]
    while stack and len(seen) < REACH:
        t = stack.pop()
        if t == source:
            return True
        if t in seen:
            continue
        seen.add(t)
        p = edit.producer(t)
        if p is not None:
            stack += [i for i in p.inputs if i and i not in edit.consts]
    return False
