"""``trace``: a method's map together with the relevance that flowed through every node, for
debugging rules (conservation per layer) and for layer-wise analyses."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .. import backend
from .registry import plan_of

if TYPE_CHECKING:
    from ..graph import Node
    from ..model import Model
    from ..ops.base import Array


@dataclass
class LayerTrace:
    """Relevance through one node: per-sample sums of what reached its outputs and what it
    passed to its inputs; ``conserved`` = sum_in / sum_out (1 for a conservative rule)."""

    node: str
    op_type: str
    relevance_out: np.ndarray
    relevance_in: np.ndarray

    @property
    def conserved(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.relevance_in / self.relevance_out


@dataclass
class Trace:
    """An attribution map with the relevance that flowed through every node, in backward order."""

    attribution: np.ndarray
    layers: list[LayerTrace]

    def conservation(self) -> dict[str, np.ndarray]:
        """Node name -> per-sample fraction of relevance it conserved."""
        return {t.node: t.conserved for t in self.layers}


def trace(model: Model, x: Any, target: Any = None, method: str = "lrp.epsilon_plus_flat",
          **options: Any) -> Trace:
    """Run a method that is one backward pass (see ``attribute``: ``x``, ``target`` and the
    ``wrt`` tensor alike) and record, per node, the relevance that reached it and the relevance
    it passed on."""
    plan = plan_of(model, method, options, "trace")
    feeds = model.at_wrt(model.check_feeds(x))
    t = model.check_target(target, feeds[model.input_name].shape[0])
    n = feeds[model.input_name].shape[0]
    layers: list[LayerTrace] = []

    def total(gs: Sequence[Array | None]) -> np.ndarray:
        sums = [backend.to_host(g.reshape(n, -1).sum(axis=1)) for g in gs if g is not None and g.shape[:1] == (n,)]
        return sum(sums, np.zeros(n))

    def observe(node: Node, grads_out: Sequence[Array | None], grads_in: Sequence[Array | None]) -> None:
        live = [g for g, i in zip(grads_in, node.inputs) if i in model.graph.live]
        layers.append(LayerTrace(node.name, node.op_type, total(grads_out), total(live)))

    out = model.propagate(feeds, t, plan, observe)
    return Trace(backend.to_host(out[model.input_name]).astype(np.float32), layers)
