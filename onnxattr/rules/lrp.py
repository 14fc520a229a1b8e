"""The LRP/DTD rules as data over one mechanism (after Zennit's ``BasicHook``).

A rule is described by what it changes. For a layer z = f(x; W, b) with relevance R at its
output, it evaluates the layer on K modified copies (x_k, W_k, b_k) of its inputs, maps R to one
cotangent c_k per copy (the stabilized division), and reduces

    R_in = sum_k  w_k * x_k * (d f(x_k; W_k, b_k) / d x_k)^T c_k .

So Epsilon, ZPlus, Gamma, AlphaBeta, ZBox, Flat and WSquare are each a few lines. Stabilizer:
z + eps * sign(z) with sign(0) = +1, eps = 1e-6 unless set (Zennit 0.5.1).

Nothing is computed twice or for nothing: the unmodified term is the forward pass's own output
and vjp context (kept for the rules that have one), and where the data input is non-negative
(after a ReLU) its positive part is the input itself and a term of its negative part with no
bias vanishes (z_k = 0, no relevance), so z+ costs one modified forward and one vjp.

References: Bach et al. 2015 (LRP); Montavon et al. 2017, "Explaining nonlinear classification
decisions with deep Taylor decomposition" (z+, z^B, w^2); Montavon et al. 2019, "Layer-wise
relevance propagation: an overview" (epsilon, gamma); Lapuschkin et al. 2019 (flat); Anders et
al. 2021, Zennit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ..backend import array_module
from ..kernels.onnxruntime import derived
from .base import Rule, divide, divide_sum, first_output, non_negative

if TYPE_CHECKING:
    from ..engine import NodeRecord
    from ..graph import Node
    from ..ops.base import Array

# A modifier maps the node's inputs (data and parameters) to the copy a term evaluates; it is told
# whether the data input is non-negative, and returns None for a term that vanishes.
Inputs = tuple
Modifier = Callable[["Node", Inputs, bool], "Inputs | None"]


class BasicRule(Rule):
    """R_in = sum_k w_k x_k * vjp_k(c_k), c = mapper(R, z_1..z_K), z_k = f(modifier_k(inputs)).

    Subclasses give ``modifiers`` (one per term), ``weights`` (w_k) and ``mapper``. The mapper
    gets None for a term that vanished (a negative part of non-negative data, without bias: the
    second of a pair), and the term adds no relevance.
    """

    needs_inputs = True

    @property
    def needs_outputs(self) -> bool:  # type: ignore[override]
        """The unmodified term reuses the forward pass's output (and vjp context)."""
        return any(m is unchanged for m in self.modifiers())

    @property
    def kinds(self) -> tuple[str, ...] | None:  # type: ignore[override]
        """Linear layers, where a term changes a layer's data, weight or bias; any op otherwise."""
        return ("linear",) if any(isinstance(m, LinearModifier) for m in self.modifiers()) else None

    def modifiers(self) -> Sequence[Modifier]:
        raise NotImplementedError

    def weights(self) -> Sequence[float]:
        return (1.0,) * len(self.modifiers())

    def mapper(self, r: Array, zs: Sequence[Array | None]) -> Sequence[Array]:
        raise NotImplementedError

    def backward(self, node: Node, record: NodeRecord, grads: Sequence[Array | None],
                 needs: Sequence[bool]) -> list[Array | None]:
        r = first_output(grads)
        modifiers = self.modifiers()
        nonneg = False
        if any(getattr(m, "splits_sign", False) for m in modifiers):
            data = record.inputs[node.op.data_input]
            nonneg = non_negative(data)
        copies, zs, ctxs = [], [], []
        for m in modifiers:
            if m is unchanged and record.outputs is not None and record.ctx is not None:
                copy, z, ctx = record.inputs, record.outputs[0], record.ctx  # from the forward pass
            else:
                copy = m(node, record.inputs, nonneg)
                (z,), ctx = node.op.forward(*copy) if copy is not None else ((None,), None)
            copies.append(copy)
            zs.append(z)
            ctxs.append(ctx)
        cotangents = self.mapper(r, zs)
        result: list[Array | None] = [None] * len(needs)
        for c, ctx, cot, w in zip(copies, ctxs, cotangents, self.weights()):
            if w == 0 or c is None:
                continue
            gs = node.op.cotangents(ctx, [cot], needs)
            for i, (need, g) in enumerate(zip(needs, gs)):
                if need and g is not None:
                    term = c[i] * g if w == 1 else c[i] * g * g.dtype.type(w)
                    result[i] = term if result[i] is None else result[i] + term
        return result


# ---- modifiers of a linear layer's inputs (data, weight, bias) -----------------------------

@dataclass(frozen=True)
class LinearModifier:
    """Changes a linear layer's data input, weight and bias (None: unchanged).

    ``data_like`` replaces the data input by a function of it (ones, a bound); ``data`` maps it.
    For non-negative data, ``pos`` is the data itself and ``neg`` is zero: with a zero bias too
    the term vanishes (None).
    """

    data: Callable[[Array], Array] | None = None
    weight: Callable[[Array], Array] | None = None
    bias: Callable[[Array], Array] | None = None
    data_like: Callable[[Array], Array] | None = None

    @property
    def splits_sign(self) -> bool:
        """Whether the term keeps one sign of the data (and so depends on knowing it)."""
        return self.data is pos or self.data is neg

    def __call__(self, node: Node, inputs: Inputs, nonneg: bool = False) -> Inputs | None:
        op = node.op
        out = list(inputs)
        d, wi, bi = op.data_input, op.weight_input, op.bias_input
        has_bias = len(inputs) > bi and inputs[bi] is not None
        if nonneg and self.data is neg and (not has_bias or self.bias is zeros):
            return None
        fn = self.data_like or self.data
        if fn is not None and not (nonneg and fn is pos):
            out[d] = fn(inputs[d])
        # modified parameters: made once per parameter and map (the maps compare by value)
        if self.weight is not None:
            out[wi] = derived(inputs[wi], ("weight", self.weight), self.weight)
        if self.bias is not None and has_bias:
            out[bi] = derived(inputs[bi], ("bias", self.bias), self.bias)
        return tuple(out)


def linear_modifier(data: Callable[[Array], Array] | None = None,
                    weight: Callable[[Array], Array] | None = None,
                    bias: Callable[[Array], Array] | None = None,
                    data_like: Callable[[Array], Array] | None = None) -> Modifier:
    """A :class:`LinearModifier` (see there)."""
    return LinearModifier(data, weight, bias, data_like)


def unchanged(node: Node, inputs: Inputs, nonneg: bool = False) -> Inputs:
    """The node's own inputs: the term the forward pass already computed."""
    return tuple(inputs)


def pos(a: Array) -> Array:
    return array_module(a).maximum(a, 0)


def neg(a: Array) -> Array:
    return array_module(a).minimum(a, 0)


def zeros(a: Array) -> Array:
    return array_module(a).zeros_like(a)


def ones(a: Array) -> Array:
    return array_module(a).ones_like(a)


@dataclass(frozen=True)
class Shift:
    """a + gamma * part(a): LRP-gamma's W + gamma W+ (part = pos) or W + gamma W- (neg); a
    value, so that the weights it makes are cached per (parameter, gamma, part)."""

    gamma: float
    part: Callable[[Array], Array]

    def __call__(self, a: Array) -> Array:
        return a + self.gamma * self.part(a)


@dataclass(frozen=True)
class Square:
    """a * a: the w^2 rule's weights."""

    def __call__(self, a: Array) -> Array:
        return a * a


# ---- the rules --------------------------------------------------------------------------------

class Epsilon(BasicRule):
    """R_i = x_i sum_j w_ji R_j / (z_j + eps sign(z_j)), z_j = sum_i x_i w_ji + b_j.

    LRP-epsilon (Bach et al. 2015). eps -> 0 gives LRP-0 and, on ReLU networks, Gradient*Input.
    """

    def __init__(self, epsilon: float = 1e-6) -> None:
        self.epsilon = float(epsilon)

    def modifiers(self) -> Sequence[Modifier]:
        return (unchanged,)

    def mapper(self, r: Array, zs: Sequence[Array]) -> Sequence[Array]:
        return (divide(r, zs[0], self.epsilon),)


class Z(Epsilon):
    """LRP-0: R_i = x_i sum_j w_ji R_j / z_j (Bach et al. 2015); 0 where z_j = 0."""

    def __init__(self) -> None:
        super().__init__(0.0)

    def __repr__(self) -> str:
        return "Z()"


class ZPlus(BasicRule):
    """z+: R_i = sum_j (x_i+ w_ji+ + x_i- w_ji-) R_j / (z_j+ + eps), with
    z_j+ = sum_i x_i+ w_ji+ + b_j+ + sum_i x_i- w_ji- (Montavon et al. 2017; Zennit's ZPlus:
    positive contributions only, the bias's positive part in the first term)."""

    def __init__(self, epsilon: float = 1e-6) -> None:
        self.epsilon = float(epsilon)

    def modifiers(self) -> Sequence[Modifier]:
        return (linear_modifier(data=pos, weight=pos, bias=pos), linear_modifier(data=neg, weight=neg, bias=zeros))

    def mapper(self, r: Array, zs: Sequence[Array | None]) -> Sequence[Array]:
        c = divide_sum(r, zs[0], zs[1], self.epsilon)
        return (c, c)


class AlphaBeta(BasicRule):
    """R_i = sum_j (alpha (x_i w_ji)+ / z_j+  -  beta (x_i w_ji)- / z_j-) R_j, alpha - beta = 1.

    Bach et al. 2015. Positive part (x w)+ = x+ w+ + x- w- (with b+), negative part
    x+ w- + x- w+ (with b-), as Zennit's AlphaBeta.
    """

    def __init__(self, alpha: float = 2.0, beta: float = 1.0, epsilon: float = 1e-6) -> None:
        if not np.isclose(alpha - beta, 1.0):
            raise ValueError(f"AlphaBeta needs alpha - beta = 1, got alpha={alpha}, beta={beta}")
        self.alpha, self.beta, self.epsilon = float(alpha), float(beta), float(epsilon)

    def modifiers(self) -> Sequence[Modifier]:
        return (
            linear_modifier(data=pos, weight=pos, bias=pos),
            linear_modifier(data=neg, weight=neg, bias=zeros),
            linear_modifier(data=pos, weight=neg, bias=neg),
            linear_modifier(data=neg, weight=pos, bias=zeros),
        )

    def weights(self) -> Sequence[float]:
        return (self.alpha, self.alpha, -self.beta, -self.beta)

    def mapper(self, r: Array, zs: Sequence[Array | None]) -> Sequence[Array]:
        cp = divide_sum(r, zs[0], zs[1], self.epsilon)
        cn = divide_sum(r, zs[2], zs[3], self.epsilon)
        return (cp, cp, cn, cn)


class Gamma(BasicRule):
    """LRP-gamma: favour positive contributions, W -> W + gamma W+ (Montavon et al. 2019).

    As Zennit 0.5.1: where z_j > 0, R_j is spread by x+ (W + gamma W+) + x- (W + gamma W-);
    where z_j < 0, by x+ (W + gamma W-) + x- (W + gamma W+); biases follow the sign.
    """

    def __init__(self, gamma: float = 0.25, epsilon: float = 1e-6) -> None:
        self.gamma, self.epsilon = float(gamma), float(epsilon)

    def modifiers(self) -> Sequence[Modifier]:
        up, down = Shift(self.gamma, pos), Shift(self.gamma, neg)
        return (
            linear_modifier(data=pos, weight=up, bias=up),
            linear_modifier(data=neg, weight=down, bias=zeros),
            linear_modifier(data=pos, weight=down, bias=down),
            linear_modifier(data=neg, weight=up, bias=zeros),
            unchanged,
        )

    def weights(self) -> Sequence[float]:
        return (1.0, 1.0, 1.0, 1.0, 0.0)

    def mapper(self, r: Array, zs: Sequence[Array | None]) -> Sequence[Array]:
        z = zs[4]
        cp = divide_sum(r, zs[0], zs[1], self.epsilon, gate=z, gate_sign=1)
        cn = divide_sum(r, zs[2], zs[3], self.epsilon, gate=z, gate_sign=-1)
        return (cp, cp, cn, cn, r)


class ZBox(BasicRule):
    """z^B for bounded inputs l <= x <= h (Montavon et al. 2017):
    R_i = sum_j (x_i w_ji - l_i w_ji+ - h_i w_ji-) R_j / (z_j - sum_i l_i w_ji+ - sum_i h_i w_ji-).
    """

    def __init__(self, low: Any, high: Any, epsilon: float = 1e-6) -> None:
        self.low, self.high, self.epsilon = low, high, float(epsilon)

    def _bound(self, value: Any) -> Callable[[Array], Array]:
        def like(x: Array) -> Array:
            xp = array_module(x)
            v = xp.asarray(value.get() if hasattr(value, "get") and not isinstance(value, np.ndarray) else value, dtype=x.dtype)
            return xp.broadcast_to(v, x.shape)

        return like

    def modifiers(self) -> Sequence[Modifier]:
        return (
            unchanged,
            linear_modifier(data_like=self._bound(self.low), weight=pos, bias=pos),
            linear_modifier(data_like=self._bound(self.high), weight=neg, bias=neg),
        )

    def weights(self) -> Sequence[float]:
        return (1.0, -1.0, -1.0)

    def mapper(self, r: Array, zs: Sequence[Array]) -> Sequence[Array]:
        c = divide(r, zs[0] - zs[1] - zs[2], self.epsilon)
        return (c, c, c)

    def __repr__(self) -> str:
        show = lambda v: f"array{np.shape(v)}" if np.ndim(v) else repr(v)  # noqa: E731
        return f"ZBox(low={show(self.low)}, high={show(self.high)}, epsilon={self.epsilon})"


class Flat(BasicRule):
    """R_i = sum_j R_j / (number of inputs of j): every input of the receptive field alike
    (Lapuschkin et al. 2019): x -> 1, W -> 1, b -> 0."""

    def __init__(self, epsilon: float = 1e-6) -> None:
        self.epsilon = float(epsilon)

    def modifiers(self) -> Sequence[Modifier]:
        return (linear_modifier(data_like=ones, weight=ones, bias=zeros),)

    def mapper(self, r: Array, zs: Sequence[Array]) -> Sequence[Array]:
        return (divide(r, zs[0], self.epsilon),)


class WSquare(BasicRule):
    """w^2: R_i = sum_j w_ji^2 R_j / sum_i' w_ji'^2 (Montavon et al. 2017): x -> 1, W -> W^2, b -> 0."""

    def __init__(self, epsilon: float = 1e-6) -> None:
        self.epsilon = float(epsilon)

    def modifiers(self) -> Sequence[Modifier]:
        return (linear_modifier(data_like=ones, weight=Square(), bias=zeros),)

    def mapper(self, r: Array, zs: Sequence[Array]) -> Sequence[Array]:
        return (divide(r, zs[0], self.epsilon),)


class Norm(Epsilon):
    """R_i = x_i (d z / d x_i)^T R / (z + eps sign z): the proportional split at Add, Sum and
    average pooling (Zennit's Norm rule): the epsilon formula on an op without parameters.
    Conservative for any op that is linear in its inputs."""

    #: an Add or a pooling is cheaper to evaluate again than its output is to keep
    needs_outputs = False


class Pass(Rule):
    """R_in = R_out: activations pass relevance unchanged under LRP."""

    def backward(self, node: Node, record: NodeRecord, grads: Sequence[Array | None],
                 needs: Sequence[bool]) -> list[Array | None]:
        r = first_output(grads)
        return [r if i == 0 else None for i in range(len(needs))]

    def __repr__(self) -> str:
        return "Pass()"
