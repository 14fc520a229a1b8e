"""A propagation plan: what one backward pass does, resolved once for one graph.

A :class:`Plan` holds the rule of every node that does not keep its exact vjp ({node name ->
rule}, from :meth:`onnxattr.composites.Composite.assign`), the seed put at the explained output,
and whether the relevance reaching the input is multiplied by the input (Gradient*Input).
:meth:`onnxattr.model.Model.propagate` runs a plan; the engine only reads ``plan.rules``.

A seed is the cotangent of the output: an array of the output's shape (batch first), or a
callable ``seed(out, target) -> cotangent`` evaluated on each chunk of the batch. ``target`` is
the per-sample target resolved against that output: shape (B,) indexes each sample's flattened
output; shape (B, k) holds k indices into each sample's trailing k axes, e.g. (position, index)
pairs on a (B, T, V) output.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping, Union

import numpy as np

from .backend import array_module
from .errors import InputError

if TYPE_CHECKING:
    from .ops.base import Array
    from .rules.base import Rule

#: seed(out, target) -> the cotangent of ``out``
SeedFn = Callable[["Array", np.ndarray], "Array"]
Seed = Union["Array", SeedFn]


def one_hot(out: Array, target: np.ndarray) -> Array:
    """1 at each sample's target entry of ``out``, 0 elsewhere: the gradient of f_t."""
    return _at_target(out, target, scale_by_value=False)


def logit(out: Array, target: np.ndarray) -> Array:
    """The target entry's own value there, 0 elsewhere: LRP starts from f_t(x), so a conservative
    rule's relevance sums to about f_t(x)."""
    return _at_target(out, target, scale_by_value=True)


def _at_target(out: Array, target: np.ndarray, scale_by_value: bool) -> Array:
    xp = array_module(out)
    n = out.shape[0]
    t = np.asarray(target, dtype=np.int64)
    if t.ndim == 2 and t.shape[1] != out.ndim - 1:
        raise InputError(f"target has {t.shape[1]} indices per sample for an output of shape {out.shape}")
    values = out.reshape(n, -1) if t.ndim == 1 else out
    index = tuple(xp.asarray(i) for i in (np.arange(n),) + tuple(t.reshape(n, -1).T))
    seed = xp.zeros(values.shape, dtype=out.dtype)
    seed[index] = values[index] if scale_by_value else 1
    return seed.reshape(out.shape)


@dataclass(frozen=True)
class Plan:
    """What one backward pass does.

    Attributes:
        rules: node name -> rule; a node not named keeps its exact vjp.
        seed: the output's cotangent: an array (batch first) or ``seed(out, target)``.
        times_input: multiply the relevance reaching the input by the input (Gradient*Input).
        name: shown by ``inspect`` and in error messages.
    """

    rules: Mapping[str, Rule] = field(default_factory=dict)
    seed: Seed = one_hot
    times_input: bool = False
    name: str = "gradient"

    @property
    def stacked(self) -> bool:
        """Whether a rule reads a batch that stacks inputs and references [x; x0] (DeepLIFT), so
        that the batch must run as one."""
        return any(r.stacked for r in self.rules.values())

    def rule_name(self, node_name: str) -> str:
        """The rule of a node as text; 'gradient' for the exact vjp."""
        rule = self.rules.get(node_name)
        return "gradient" if rule is None else repr(rule)
