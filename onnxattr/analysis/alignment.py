"""How much a map, and the relevance at every layer, aligns with the input or the activations.

Modified-backprop maps (Guided Backprop, LRP, ...) look sharp because they align with the input:
they combine the weights of the active neurons (Zheng, Sang & Xu 2025; Nie et al. 2018), and
their relevance stops depending on the layers above (Sixt, Granz & Landgraf 2020, "When
explanations lie: why many modified BP attributions fail").

- :func:`input_alignment`: per-sample cosine between a map and the input.
- :func:`layer_alignment`: per layer, cosine between the relevance reaching its output and the
  output's activation.
- :func:`cosine_similarity_convergence` (CSC, Sixt et al. 2020): random relevance injected at a
  layer; how similar it has become at each layer below.

Layers are the nodes on the live path (their output depends on the input) whose op is not of
kind ``route`` (reshapes, Concat, Slice, Transpose: they only move values) or ``shape``; each is
represented by its first output tensor. Relevance means the cotangent a backprop method sends
back (the gradient for ``gradient``); methods that are not one backward pass (Integrated
Gradients, SmoothGrad, Occlusion, DeepLIFT's two-batch pass) raise OptionError.
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import backend
from ..attribution.registry import plan_of
from ..errors import InputError, OptionError
from ..layout import infer_layout
from .similarity import cosine

if TYPE_CHECKING:
    from ..graph import LayerGraph, Node
    from ..model import Model

SKIPPED_KINDS = ("route", "shape")


def input_alignment(attr: np.ndarray, x: np.ndarray) -> np.ndarray:
    """cos(R_n, x_n) = <R_n, x_n> / (|R_n| |x_n|) of each flattened sample; (N,) float64, NaN
    where either is zero. ``attr`` and ``x`` must have the same shape."""
    attr, x = np.asarray(backend.to_host(attr)), np.asarray(backend.to_host(x))
    if attr.shape != x.shape:
        raise InputError(f"attr has shape {attr.shape}, x has shape {x.shape}; they must match")
    return cosine(attr, x)


def layers_of(graph: LayerGraph) -> tuple[list[Node], list[str]]:
    """The nodes analysed (live, not route/shape), in topological order, and the names skipped."""
    live = [n for n in graph.nodes if n.outputs and n.outputs[0] in graph.live]
    return [n for n in live if n.kind not in SKIPPED_KINDS], [n.name for n in live if n.kind in SKIPPED_KINDS]


@dataclass
class LayerAlignment:
    """Per layer (input first, then the nodes in topological order): ``layers`` (node names; the
    input's name first), ``tensors``, ``op_types`` ("Input" first) and ``cosine`` (L, N).
    ``skipped``: live nodes left out (route/shape ops, or a non-float output)."""

    layers: list[str]
    tensors: list[str]
    op_types: list[str]
    cosine: np.ndarray
    skipped: list[str]


def layer_alignment(model: Model, x: np.ndarray, target: Any = None, method: str = "gradient",
                    **options: Any) -> LayerAlignment:
    """Per layer and sample, cos(R_l, a_l): the cosine between the relevance R_l that ``method``
    sends back to a layer's output and that output's activation a_l (both flattened).

    The first row is the input: cos(map, x) with the method's map (Gradient*Input's x * grad
    included), i.e. :func:`input_alignment`. Layers are defined in the module docstring. A layer
    that no relevance reaches, or whose relevance or activation is zero, gets NaN.

    Args:
        model, x, target: as in :func:`onnxattr.attribute` (target None: the argmax).
        method: a backprop method (``gradient``, ``input_x_gradient``, ``guided_backprop``,
            ``lrp.*``...); other methods raise OptionError. ``options`` are its options.
    Returns:
        :class:`LayerAlignment`.
    """
    plan = plan_of(model, method, options, "layer_alignment")
    x = model.check_input(x)
    t = model.check_target(target, x.shape[0])
    xd = model.xp.asarray(x)
    nodes, skipped = layers_of(model.graph)
    tensors = [n.outputs[0] for n in nodes]
    acts = model.forward(xd, fetch=tensors) if tensors else {}
    rel = model.propagate(xd, t, plan, fetch=tensors)
    rows = [cosine(backend.to_host(rel[model.input_name]), x)]
    layers, names, ops = [model.input_name], [model.input_name], ["Input"]
    for n, tname in zip(nodes, tensors):
        a = backend.to_host(acts[tname])
        if a.dtype.kind != "f":
            skipped.append(n.name)
            continue
        r = rel.get(tname)
        rows.append(np.full(x.shape[0], np.nan) if r is None else cosine(backend.to_host(r), a))
        layers.append(n.name)
        names.append(tname)
        ops.append(n.op_type)
    return LayerAlignment(layers, names, ops, np.stack(rows), skipped)


# ---- cosine similarity convergence ------------------------------------------------------------
def find_layer(graph: LayerGraph, layer: str) -> tuple[str, str]:
    """(node name, tensor) of ``layer``, given as a node name or a tensor name on the live path."""
    node = next((n for n in graph.nodes if n.name == layer), None)
    if node is None:
        node = graph.producer.get(layer)
        tensor = layer
    else:
        tensor = node.outputs[0]
    if node is None or tensor not in graph.live:
        known = [n.name for n in layers_of(graph)[0]]
        raise OptionError(f"unknown layer {layer!r}: not a node or tensor on the path from the input to the "
                          f"output; layers: {known}")
    return node.name, tensor


def truncated(model: Model, tensor: str) -> Model:
    """A view of ``model`` whose output is ``tensor``: the same canonized nodes and parameters,
    cut after the nodes that ``tensor`` needs (so fused BatchNorms and randomized copies stay
    as they are)."""
    g = model.graph
    needed: set[str] = set()
    stack = [tensor]
    while stack:
        node = g.producer.get(stack.pop())
        if node is None or node.name in needed:
            continue
        needed.add(node.name)
        stack.extend(t for t in node.inputs if t)
    sub = copy.copy(model)
    sub.graph = dataclasses.replace(g, nodes=[n for n in g.nodes if n.name in needed], output=tensor,
                                    dropped_softmax=None)
    return sub


def channel_cosines(a: np.ndarray, b: np.ndarray, axis: int = 1) -> np.ndarray:
    """|cos| between ``a`` and ``b`` across ``axis`` at every other position: (N, positions);
    NaN where either vector is zero."""
    a = np.moveaxis(a, axis, -1).reshape(a.shape[0], -1, a.shape[axis])
    b = np.moveaxis(b, axis, -1).reshape(b.shape[0], -1, b.shape[axis])
    num = np.abs((a * b).sum(-1))
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def random_cosine_median(d: int, draws: int = 100_000, seed: int = 0) -> float:
    """Median of |cos(u, v)| for independent isotropic random u, v in R^d.

    cos^2 ~ Beta(1/2, (d - 1)/2), sampled ``draws`` times (seeded); about 0.674 / sqrt(d) for large
    d (the mean is Gamma(d/2) / (sqrt(pi) Gamma((d+1)/2)) ~ sqrt(2 / (pi d)))."""
    if d <= 1:
        return 1.0
    t = np.random.default_rng(seed).beta(0.5, (d - 1) / 2.0, size=draws)
    return float(np.median(np.sqrt(t)))


def _nanmedian(a: np.ndarray) -> float:
    v = a[~np.isnan(a)]
    return float(np.median(v)) if v.size else float("nan")


@dataclass
class Convergence:
    """CSC per layer, from the input up to the layer where relevance was injected: ``layers``
    (the input's name first), ``tensors``, ``dims`` (L,) the channels compared at each position,
    ``values`` (L, P, N) the median over positions of |cos| per pair of injected vectors and
    sample, ``median`` (L,) over pairs, samples and positions (NaNs skipped), and ``baseline``
    (L,) the median |cos| of two independent random vectors of ``dims`` entries
    (:func:`random_cosine_median`)."""

    layers: list[str]
    tensors: list[str]
    dims: np.ndarray
    values: np.ndarray
    median: np.ndarray
    baseline: np.ndarray


def cosine_similarity_convergence(model: Model, x: np.ndarray, method: str = "gradient", layer: str | None = None,
                                  n: int = 5, seed: int = 0, **options: Any) -> Convergence:
    """Cosine similarity convergence (Sixt, Granz & Landgraf 2020, "When explanations lie").

    ``n`` random relevance vectors r_1..r_n ~ N(0, I), drawn independently for every sample, are
    injected at the output of ``layer`` and propagated down with ``method``'s rules (the model is
    cut at that tensor; the rules are assigned on the cut model). At every layer below (and at the
    input, and the injected layer itself as a check), with R_k the relevance r_k has become, and
    as Sixt et al.'s code: the cosine at each spatial position across the channels,

        CSC_l = median over pairs k < k', samples and positions p of |cos(R_k[:, p], R_k'[:, p])|

    (channels on axis 1, or last for an NHWC model's input; a dense layer has one position).
    A method whose backward chain has collapsed to rank one converges to 1 (Sixt et al. find this
    for most modified-BP rules, e.g. z+ and Guided Backprop on deep nets); the gradient stays near
    the baseline, the median |cos| of two independent random vectors with as many entries as
    channels (about 0.674 / sqrt(C)).

    Args:
        model, x: the model and a float32 batch.
        method: a backprop method; options are its options.
        layer: a node name or tensor name on the live path (default: the model's output node).
        n: vectors injected (>= 2; n(n-1)/2 pairs).
        seed: seed of the vectors.
    Returns:
        :class:`Convergence`.
    """
    if not isinstance(n, (int, np.integer)) or n < 2:
        raise OptionError(f"n must be an int >= 2 (pairs of injected vectors are compared), got {n!r}")
    x = model.check_input(x)
    _, tensor = find_layer(model.graph, model.graph.output if layer is None else layer)
    sub = truncated(model, tensor)
    plan = plan_of(sub, method, options, "cosine_similarity_convergence")
    nodes, _ = layers_of(sub.graph)
    tensors = [sub.input_name] + [nd.outputs[0] for nd in nodes]
    layers = [sub.input_name] + [nd.name for nd in nodes]
    xd = sub.xp.asarray(x)
    out = sub.forward(xd)
    rng = np.random.default_rng(seed)
    rel: list[dict[str, np.ndarray | None]] = []
    for _ in range(n):
        r = sub.xp.asarray(rng.standard_normal(out.shape).astype(out.dtype))
        grads = sub.propagate(xd, None, dataclasses.replace(plan, seed=r), fetch=tensors[1:])
        grads[tensor] = r
        rel.append({t: None if grads.get(t) is None else backend.to_host(grads[t]).astype(np.float64) for t in tensors})
    pairs = list(itertools.combinations(range(n), 2))
    values = np.full((len(tensors), len(pairs), x.shape[0]), np.nan)
    dims = np.zeros(len(tensors), dtype=np.int64)
    median = np.full(len(tensors), np.nan)
    input_nhwc = x.ndim == 4 and infer_layout(x.shape) == "NHWC"
    for li, t in enumerate(tensors):
        shape = next((r[t].shape for r in rel if r[t] is not None), None)
        if shape is None:
            continue
        axis = 3 if (t == sub.input_name and input_nhwc) else 1
        dims[li] = shape[axis] if len(shape) > 1 else 1
        every = []
        for pi, (a, b) in enumerate(pairs):
            if rel[a][t] is not None and rel[b][t] is not None:
                cos = channel_cosines(rel[a][t], rel[b][t], axis)
                values[li, pi] = np.nanmedian(np.where(np.isnan(cos), np.nan, cos), axis=1) if cos.size else np.nan
                every.append(cos)
        if every:
            median[li] = _nanmedian(np.concatenate([c.reshape(-1) for c in every]))
    baseline = np.array([random_cosine_median(int(d)) if d else np.nan for d in dims])
    return Convergence(layers, tensors, dims, values, median, baseline)
