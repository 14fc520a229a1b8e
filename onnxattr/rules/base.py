"""What every backward rule shares: the Rule base class and the stabilized division."""
from __future__ import annotations

from typing import Any, Sequence

from ..backend import array_module
from ..engine import NodeRecord
from ..graph import Node
from ..ops.base import Array


class Rule:
    """A backward rule: replaces the vjp of the nodes a composite assigns it to.

    ``backward(node, record, grads, needs)`` gets the cotangents (relevance) of the node's
    outputs and returns one per input (None where ``needs`` is false). ``needs_inputs`` and
    ``needs_outputs`` tell the forward pass to keep the node's input and output values.
    """

    needs_inputs: bool = False
    needs_outputs: bool = False

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
    """r / stabilize(z, epsilon); 0 where the stabilized denominator is exactly 0."""
    xp = array_module(z)
    d = stabilize(z, epsilon)
    if epsilon > 0:
        return r / d
    zero = d == 0
    return xp.where(zero, 0, r / xp.where(zero, 1, d)).astype(r.dtype)


def first_output(grads: Sequence[Array | None]) -> Array:
    if len(grads) != 1 or grads[0] is None:
        raise ValueError("rules apply to single-output nodes")
    return grads[0]


def zeros_like_needs(needs: Sequence[bool], like: Any) -> list[Array | None]:
    xp = array_module(like)
    return [xp.zeros_like(like) if n else None for n in needs]
