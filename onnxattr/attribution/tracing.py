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
    seen: list[LayerTrace] = []

    def total(gs: Sequence[Array | None], m: int) -> np.ndarray:
        sums = [backend.to_host(g.reshape(m, -1).sum(axis=1)) for g in gs if g is not None and g.shape[:1] == (m,)]
        return sum(sums, np.zeros(m))

    def observe(node: Node, grads_out: Sequence[Array | None], grads_in: Sequence[Array | None]) -> None:
        m = next(g.shape[0] for g in grads_out if g is not None)
        live = [g for g, i in zip(grads_in, node.inputs) if i in model.graph.live]
        seen.append(LayerTrace(node.name, node.op_type, total(grads_out, m), total(live, m)))

    out = model.propagate(feeds, t, plan, observe)
    return Trace(backend.to_host(out[model.input_name]).astype(np.float32), per_layer(seen, n))


def per_layer(seen: list[LayerTrace], n: int) -> list[LayerTrace]:
    """The observations of a batch that ran in chunks (a fixed batch size; on the GPU, halves
    retried after running out of memory), one LayerTrace per node over all n samples.

    Every chunk's backward pass observes the same nodes in the same order, so a new chunk starts
    where the first node comes again. An attempt that failed part-way is shorter and dropped; the
    last complete chunks that add up to n samples are the ones that produced the map."""
    if not seen:
        return []
    starts = [i for i, t in enumerate(seen) if t.node == seen[0].node] + [len(seen)]
    chunks = [seen[a:b] for a, b in zip(starts[:-1], starts[1:])]
    full = max(len(c) for c in chunks)
    kept, rows = [], 0
    for c in reversed([c for c in chunks if len(c) == full]):
        if rows >= n:
            break
        kept.insert(0, c)
        rows += len(c[0].relevance_out)
    return [LayerTrace(c0.node, c0.op_type, np.concatenate([c[i].relevance_out for c in kept]),
                       np.concatenate([c[i].relevance_in for c in kept])) for i, c0 in enumerate(kept[0])]
