"""What every backward rule shares: the Rule base class and the stabilized division."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from ..backend import array_module, use_kernels

if TYPE_CHECKING:
    from ..engine import NodeRecord
    from ..graph import Node
    from ..ops.base import Array


class Rule:
    """A backward rule: replaces the vjp of the nodes a composite assigns it to.

    ``backward(node, record, grads, needs)`` gets the cotangents (relevance) of the node's
    outputs and returns one per input (None where ``needs`` is false). ``needs_inputs`` and
    ``needs_outputs`` tell the forward pass to keep the node's input and output values.
    ``kinds``: the op kinds (``Op.kind``) of the nodes it can stand for; a composite that assigns
    it to another kind fails at assignment (:meth:`onnxattr.composites.Composite.assign`).
    """

    kinds: tuple[str, ...] | None = None

    needs_inputs: bool = False
    needs_outputs: bool = False
    #: whether the rule reads a batch stacking inputs and references [x; x0] (DeepLIFT), so
    #: that the batch must not be split into chunks
    stacked: bool = False

    def backward(self, node: Node, record: NodeRecord, grads: Sequence[Array | None],
                 needs: Sequence[bool]) -> list[Array | None]:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def stabilize(z: Array, epsilon: float) -> Array:
    """z + epsilon * sign(z), with sign(0) = +1 (Zennit's convention)."""
    xp = array_module(z)
    return z + xp.where(z >= 0, z.dtype.type(epsilon), z.dtype.type(-epsilon))


def divide(r: Array, z: Array, epsilon: float) -> Array:
    """r / stabilize(z, epsilon); 0 where the stabilized denominator is exactly 0.

    On the GPU one kernel (:mod:`onnxattr.kernels.divide`) does it in a single pass."""
    return divide_sum(r, z, None, epsilon)


def divide_sum(r: Array, z: Array, z2: Array | None, epsilon: float, gate: Array | None = None,
               gate_sign: int = 1) -> Array:
    """gate(r) / stabilize(z + z2, epsilon), gate(r) = r * 1[gate > 0] (or < 0 for a negative
    ``gate_sign``): the mappers of z+, alpha-beta and gamma, fused into one kernel on the GPU."""
    if use_kernels(r):
        from ..kernels import divide as kernel

        arrays = [a for a in (r, z, z2, gate) if a is not None]
        if kernel.supported(*arrays):
            return kernel.lrp_divide(r, z, epsilon, z2, gate, gate_sign)
    xp = array_module(z)
    if z2 is not None:
        z = z + z2
    if gate is not None:
        r = r * (gate > 0 if gate_sign > 0 else gate < 0)
    d = stabilize(z, epsilon)
    if epsilon > 0:
        return r / d
    zero = d == 0
    return xp.where(zero, 0, r / xp.where(zero, 1, d)).astype(r.dtype)


def non_negative(a: Array) -> bool:
    """Whether ``a`` is >= 0 everywhere: its values say for an array; for a symbolic tensor
    (:mod:`onnxattr.compiled`), what its graph proves (a ReLU's output), else False. A rule that
    splits its data by sign evaluates both parts where this is False, which is exact either way."""
    proven = getattr(a, "nonneg", None)
    return bool(proven) if proven is not None else bool(a.min() >= 0)


def first_output(grads: Sequence[Array | None]) -> Array:
    if len(grads) != 1 or grads[0] is None:
        raise ValueError("rules apply to single-output nodes")
    return grads[0]


def zeros_like_needs(needs: Sequence[bool], like: Any) -> list[Array | None]:
    xp = array_module(like)
    return [xp.zeros_like(like) if n else None for n in needs]
