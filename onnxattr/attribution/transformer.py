"""Transformer methods: AttnLRP and CP-LRP (one forward and one backward pass of a gradient plan,
as LXT 2.1's efficient mode), and attention rollout (a forward pass that reads the attention
weights)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from .. import composites as C
from ..backend import to_host
from ..errors import ModelError
from ..plan import Plan, one_hot
from ..rules import Rule
from .gradients import Feeds, target_at
from .options import Instance, Option
from .registry import register

if TYPE_CHECKING:
    from ..graph import LayerGraph
    from ..model import Model
    from ..ops.base import Array

LINEAR = Option(None, "an LRP rule for the linear layers, run in gradient form (e.g. "
                      "onnxattr.rules.Gamma(0.25), as LXT's ViT example); None: their gradient (LRP-0)",
                Instance(Rule, none=True))


def _method(name: str, make: Callable[..., C.Composite], doc: str) -> None:
    """Register an Input x Gradient method of the composite ``make(linear)``: gradient one at the
    target logit, relevance = the attributed tensor times the modified gradient, so that it starts
    at the logit's value (LXT's ``logits[target].backward()`` then ``x * x.grad``)."""

    def plan(model: Model, linear: Rule | None = None) -> Plan:
        return Plan(make(linear).assign(model.graph), seed=one_hot, times_input=True, name=name)

    def method(model: Model, x: Feeds, target: np.ndarray | None, linear: Rule | None) -> Array:
        return model.propagate(x, target, plan(model, linear))[model.input_name]

    method.__doc__ = doc
    method.__name__ = name
    register(name, plan=plan, linear=LINEAR)(method)


_method("attnlrp", C.attnlrp, """AttnLRP: LRP for transformers, in Input x Gradient form.

    Achtibat et al. 2024, "AttnLRP: attention-aware layer-wise relevance propagation for
    transformers" (ICML), as its library LXT 2.1 computes it (efficient mode): the uniform rule at
    products of activations (Q K^T, A V, gate * up), the identity rule at norms (1/std constant)
    and elementwise nonlinearities, the gradient at Softmax, linear layers and residuals.""")
_method("cplrp", C.cplrp, """CP-LRP: conservative propagation through attention, in Input x Gradient form.

    Ali et al. 2022, "XAI for transformers: better explanations through conservative
    propagation" (ICML), as LXT 2.1 computes it: attention weights and MLP gates are constants,
    norms and nonlinearities as in AttnLRP, the gradient elsewhere.""")


def attention_softmaxes(graph: LayerGraph) -> list[str]:
    """The outputs of the Softmax nodes that give attention weights: on the relevance path, and
    read (through casts, reshapes and NaN guards) by a product with another operand on it (A V),
    in the order of the graph."""
    softmax = C.OpType("Softmax")
    products = [C.Product(constant=(i, softmax)).bind(graph) for i in (0, 1)]
    producer = C.producers(graph)
    found: list[str] = []
    for node in graph.nodes:
        if any(p(node) for p in products):
            for t in node.inputs:
                src = C.origin(graph, producer, t) if t in graph.live else None
                if src is not None and src.op_type == "Softmax" and src.outputs[0] not in found:
                    found.append(src.outputs[0])
    return found


def rollout(weights: list[np.ndarray], rows: np.ndarray) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema 2020): per layer the heads' mean plus the identity,
    rows renormalised to sum to 1, multiplied from the last layer down; the row of each sample's
    ``rows`` position. ``weights``: (B, heads, T, T) per layer, in order."""
    b, t = weights[0].shape[0], weights[0].shape[-1]
    out = np.broadcast_to(np.eye(t), (b, t, t))
    for a in weights:
        a = a.reshape(b, -1, t, t).mean(axis=1) + np.eye(t)
        out = (a / a.sum(axis=-1, keepdims=True)) @ out
    return out[np.arange(b), rows]


def _spread(scores: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Token scores (B, T) as a map of the attributed tensor's shape whose token sums are the
    scores: (B, T, H) tokens, or (B, C, h, w) patches with a class token first (T = h w + 1)."""
    b, t = scores.shape
    if len(shape) == 3 and shape[1] == t:
        return np.repeat(scores[:, :, None] / shape[2], shape[2], axis=2)
    if len(shape) == 4 and shape[2] * shape[3] in (t, t - 1):
        patches = scores[:, t - shape[2] * shape[3]:].reshape(b, 1, shape[2], shape[3])
        return np.repeat(patches / shape[1], shape[1], axis=1)
    raise ModelError(f"attention_rollout scores {t} tokens, which the attributed tensor {name!r} of shape "
                     f"{shape} does not hold as (B, T, H) or (B, C, h, w) patches")


@register("attention_rollout")
def attention_rollout(model: Model, x: Feeds, target: np.ndarray | None) -> Array:
    """Attention rollout: how much each token flows into the explained position through the
    attention layers, residuals included.

    Abnar & Zuidema 2020, "Quantifying attention flow in transformers" (ACL): per layer the
    mean of the heads' attention weights plus the identity, renormalised, multiplied through the
    layers; the row of the target position for a (B, T, V) output, else of the first token (CLS).
    The scores (B, T) are spread evenly over the hidden axis of the attributed tensor, so
    :func:`onnxattr.token_scores` gives them back (for a ViT's patch embeddings, over the channels
    of each patch; the class token's own score is dropped). The target class does not matter.
    """
    names = attention_softmaxes(model.graph)
    if not names:
        raise ModelError("attention_rollout found no attention weights: no Softmax on the relevance path feeds "
                         "a product with the values (an opset-23 Attention node keeps its weights inside)")
    feeds = model.feeds(x)
    t = np.asarray(target_at(model, feeds, target))
    values = model.forward(feeds, fetch=names)
    weights = [to_host(values[n]).astype(np.float64) for n in names]
    rows = t[:, 0] if t.ndim == 2 else np.zeros(len(t), dtype=np.int64)
    scores = rollout(weights, rows)
    xw = feeds[model.input_name]
    return model.xp.asarray(_spread(scores, tuple(xw.shape), model.input_name).astype(np.float32))
