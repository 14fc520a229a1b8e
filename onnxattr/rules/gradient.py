"""Modified-gradient rules at activations: DeconvNet, Guided Backprop, RectGrad, and DeepLIFT
(Rescale), each replacing an activation's vjp. Everything else keeps its exact vjp; in
particular max pooling keeps its gradient under DeepLIFT (Shrikumar et al. 2017, and what
Captum computes for the usual ReLU -> MaxPool order, where its own MaxPool rule is overridden)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from ..backend import array_module, use_kernels
from .base import Rule, first_output

if TYPE_CHECKING:
    from ..engine import NodeRecord
    from ..graph import Node
    from ..ops.base import Array


class DeconvNet(Rule):
    """R_in = max(R_out, 0): the ReLU's mask is replaced by one on the backward signal
    (Zeiler & Fergus 2014; as Captum's Deconvolution)."""

    def backward(self, node: Node, record: NodeRecord, grads: Sequence[Array | None],
                 needs: Sequence[bool]) -> list[Array | None]:
        g = first_output(grads)
        return [array_module(g).maximum(g, 0)] + [None] * (len(needs) - 1)


class GuidedBackprop(Rule):
    """R_in = max(f'(x) R_out, 0): the exact vjp, then only positive signals pass
    (Springenberg et al. 2015; as Captum's GuidedBackprop)."""

    def backward(self, node: Node, record: NodeRecord, grads: Sequence[Array | None],
                 needs: Sequence[bool]) -> list[Array | None]:
        g = node.op.cotangents(record.ctx, grads, needs)
        return [array_module(x).maximum(x, 0) if x is not None else None for x in g]


class RectGrad(Rule):
    """R_in = R_out * 1[a * R_out > tau], tau the q-th percentile of a * R_out over each sample's
    units of the layer, a the activation's output (Kim et al. 2019, "Why are saliency maps noisy?").

    As the authors' code: a strict inequality, and the percentile of the 'nearest' method.
    """

    needs_outputs = True
    #: NumPy's percentile method (the authors' code uses 'nearest')
    method = "nearest"

    def __init__(self, q: float = 98.0) -> None:
        if not 0 <= q <= 100:
            raise ValueError(f"RectGrad percentile q must be in [0, 100], got {q}")
        self.q = float(q)

    def backward(self, node: Node, record: NodeRecord, grads: Sequence[Array | None],
                 needs: Sequence[bool]) -> list[Array | None]:
        g = first_output(grads)
        xp = array_module(g)
        a = record.outputs[0]
        if use_kernels(g) and a.shape == g.shape and a.dtype == g.dtype:
            from ..kernels import percentile

            if percentile.supported(g.reshape(g.shape[0], -1)):  # radix select, no sort
                return [percentile.rectgrad(g, a, self.q, self.method)] + [None] * (len(needs) - 1)
        score = a * g
        n = score.shape[0]
        tau = xp.percentile(score.reshape(n, -1), self.q, axis=1, method=self.method).astype(g.dtype)
        keep = score > tau.reshape((n,) + (1,) * (score.ndim - 1))
        return [g * keep] + [None] * (len(needs) - 1)


class Rescale(Rule):
    """DeepLIFT Rescale at a nonlinearity y = f(x), on a batch that stacks inputs and references
    [x; x0]: R_in = R_out (y - y0) / (x - x0), or the exact vjp where |x - x0| < eps
    (Shrikumar et al. 2017; as Captum's DeepLift, eps = 1e-10)."""

    needs_inputs = True
    needs_outputs = True
    stacked = True

    def __init__(self, eps: float = 1e-10) -> None:
        self.eps = float(eps)

    def backward(self, node: Node, record: NodeRecord, grads: Sequence[Array | None],
                 needs: Sequence[bool]) -> list[Array | None]:
        g = first_output(grads)
        xp = array_module(g)
        dx = _halves_delta(record.inputs[0])
        dy = _halves_delta(record.outputs[0])
        exact = node.op.cotangents(record.ctx, grads, needs)[0]
        safe = xp.where(xp.abs(dx) < self.eps, 1, dx)
        return [xp.where(xp.abs(dx) < self.eps, exact, g * dy / safe)] + [None] * (len(needs) - 1)


def _halves_delta(v: Array) -> Array:
    """(v[:n] - v[n:]) repeated for both halves of a stacked [x; x0] batch."""
    xp = array_module(v)
    n = v.shape[0] // 2
    d = v[:n] - v[n:]
    return xp.concatenate([d, d])
