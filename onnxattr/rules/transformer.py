"""Rules of AttnLRP and CP-LRP, in Input x Gradient form (LXT 2.1's efficient mode).

Each rule replaces one node's vjp by a modified gradient; the relevance at the attributed tensor
is the tensor times the modified gradient, the gradient being one at the target logit (so it
starts at the logit's value). Nodes without a rule keep their gradient: linear layers, residual
Adds and embeddings are LRP-0 (epsilon 0) that way, and Softmax's gradient is AttnLRP's softmax
rule, R_x = x (R_out - s sum R_out).

References: Achtibat et al. 2024, "AttnLRP: attention-aware layer-wise relevance propagation for
transformers" (ICML), and its library LXT 2.1 (``lxt/efficient/rules.py``, ``patches.py``);
Ali et al. 2022, "XAI for transformers: better explanations through conservative propagation"
(ICML) for CP-LRP.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from .base import Rule, divide, first_output

if TYPE_CHECKING:
    from ..engine import NodeRecord
    from ..graph import Node
    from ..ops.base import Array

#: LXT's ``identity_rule_implicit`` adds this to the input (not sign-aware)
IDENTITY_EPSILON = 1e-10


class Identity(Rule):
    """The identity rule at an elementwise nonlinearity y = f(x): g_x = g_y f(x) / (x + 1e-10),
    so that x g_x = y g_y, the relevance passes unchanged (LXT's ``identity_rule_implicit``).
    Other inputs of the node (a Clip's bounds) get nothing."""

    kinds = ("activation",)
    needs_inputs = True
    needs_outputs = True

    def backward(self, node: Node, record: NodeRecord, grads: Sequence[Array | None],
                 needs: Sequence[bool]) -> list[Array | None]:
        g = first_output(grads)
        x, y = record.inputs[0], record.outputs[0]
        return [g * y / (x + x.dtype.type(IDENTITY_EPSILON))] + [None] * (len(needs) - 1)


class Uniform(Rule):
    """The uniform rule at a product of n operands that all depend on the attributed tensor
    (Q K^T, A V, gate * up): each gets its gradient divided by n (AttnLRP, Prop. 3.3; applied at
    both attention products it gives LXT's q/4, k/4, v/2). An operand that does not depend on it
    (a mask, RoPE's cos/sin) is a constant and does not count."""

    def backward(self, node: Node, record: NodeRecord, grads: Sequence[Array | None],
                 needs: Sequence[bool]) -> list[Array | None]:
        gs = node.op.cotangents(record.ctx, grads, needs)
        n = sum(bool(k) for k in needs)
        return [g / g.dtype.type(n) if g is not None and n > 1 else g for g in gs]


class Constant(Rule):
    """The operands at ``indices`` are constants: they get no gradient, the others their exact one
    (CP-LRP: the attention weights of A V, the gate of gate * up)."""

    def __init__(self, *indices: int) -> None:
        self.indices = indices

    def backward(self, node: Node, record: NodeRecord, grads: Sequence[Array | None],
                 needs: Sequence[bool]) -> list[Array | None]:
        keep = [need and i not in self.indices for i, need in enumerate(needs)]
        return node.op.cotangents(record.ctx, grads, keep)

    def __repr__(self) -> str:
        return f"Constant({', '.join(map(str, self.indices))})"


class LayerNormIdentity(Rule):
    """LayerNorm y = (x - mean) / std * w + b with 1/std a constant: g_x = (g w - mean(g w)) / std.
    The mean-centering keeps its gradient, the affine part is linear (LXT's patched
    ``nn.LayerNorm.forward``)."""

    def backward(self, node: Node, record: NodeRecord, grads: Sequence[Array | None],
                 needs: Sequence[bool]) -> list[Array | None]:
        g = first_output(grads)
        _, r, scale, _, axes = record.ctx
        gs = g.astype(r.dtype, copy=False) * scale.astype(r.dtype, copy=False)
        gx = r * (gs - gs.mean(axis=axes, keepdims=True))
        return [gx.astype(g.dtype, copy=False)] + [None] * (len(needs) - 1)


class RMSNormIdentity(Rule):
    """RMSNorm y = x r w with r = 1 / sqrt(mean(x^2) + eps) a constant: g_x = g w r (LXT's
    patched ``LlamaRMSNorm``)."""

    def backward(self, node: Node, record: NodeRecord, grads: Sequence[Array | None],
                 needs: Sequence[bool]) -> list[Array | None]:
        g = first_output(grads)
        _, r, scale, _ = record.ctx
        gx = g.astype(r.dtype, copy=False) * scale.astype(r.dtype, copy=False) * r
        return [gx.astype(g.dtype, copy=False)] + [None] * (len(needs) - 1)


class AttentionOp(Rule):
    """The opset-23 Attention node softmax(Q K^T s + bias) V as its two products: Q and K get
    their gradient times ``qk``, V times ``v``.

    ``qk=None, v=None`` is AttnLRP (the uniform rule at both products: 1/4 and 1/2 where Q, K, V
    all depend on the attributed tensor, fewer halvings where some do not); ``qk=0, v=1`` is
    CP-LRP (the attention weights constant)."""

    def __init__(self, qk: float | None = None, v: float | None = None) -> None:
        self.qk = qk
        self.v = v

    def backward(self, node: Node, record: NodeRecord, grads: Sequence[Array | None],
                 needs: Sequence[bool]) -> list[Array | None]:
        qk, v = self.factors(needs)
        keep = [need and not (i < 2 and qk == 0) for i, need in enumerate(needs)]
        gs = node.op.cotangents(record.ctx, grads, keep)
        scale = [qk, qk, v] + [1.0] * (len(needs) - 3)
        return [g * g.dtype.type(s) if g is not None and s != 1 else g for g, s in zip(gs, scale)]

    def factors(self, needs: Sequence[bool]) -> tuple[float, float]:
        if self.qk is not None and self.v is not None:
            return self.qk, self.v
        scores_live = needs[0] or needs[1]
        av = 0.5 if scores_live and needs[2] else 1.0
        return av * (0.5 if needs[0] and needs[1] else 1.0), av


class GradientForm(Rule):
    """An LRP rule of relevance form (Gamma, Epsilon, ... on a linear layer) inside a gradient
    plan: R_out = g y, R_in = rule(R_out), g_in = R_in / x (stabilized by 1e-10, sign-aware), as
    LXT's ``monkey_patch_zennit`` runs zennit's rules. Use it to put gamma on a ViT's linear
    layers in an AttnLRP composite."""

    needs_inputs = True
    needs_outputs = True

    def __init__(self, rule: Rule) -> None:
        self.rule = rule

    @property
    def kinds(self) -> tuple[str, ...] | None:  # type: ignore[override]
        return self.rule.kinds

    def backward(self, node: Node, record: NodeRecord, grads: Sequence[Array | None],
                 needs: Sequence[bool]) -> list[Array | None]:
        g = first_output(grads)
        rs = self.rule.backward(node, record, [g * record.outputs[0]], needs)
        return [divide(r, x, IDENTITY_EPSILON) if r is not None else None for r, x in zip(rs, record.inputs)]

    def __repr__(self) -> str:
        return f"GradientForm({self.rule!r})"
