"""Canonization: graph rewrites that make the layers a model's author wrote explicit before
rules apply. The forward pass is unchanged (up to float rounding); the gradient is the same.

Exporters split layers into pieces, and each piece would get its own rule. In order:
- Dropout and Identity are dropped (``linear``).
- A constant-0 Pad before a Conv (or a MaxPool of non-negative values) becomes the window op's
  own padding (``pad``).
- Activations and norms written as elementwise nodes become one node (``regions``): SiLU/Swish
  (x * Sigmoid(x)) -> ``Swish``; GELU in Erf or Tanh form -> ``Gelu``; HardSwish and
  HardSigmoid pieces; LayerNorm (ReduceMean, Sub, Pow, ..., and the keras/tf2onnx forms) ->
  ``LayerNormalization``; RMSNorm pieces -> ``RMSNormalization``.
- The squeeze-excitation product x * sigmoid(g(x)), whose gate is computed from x, becomes a
  ``Gate`` node (``gate``): LRP treats the gate as a constant multiplier (signal-take-all, as
  LXT's CP-LRP does with a gated MLP's gate).
- A MatMul by a constant becomes ``Dense``; BatchNormalization, and Mul/Add/Sub/Div by
  per-channel constants, are folded into the linear layer before them, or else become ``Affine``
  (``linear``).

``canonize(graph).canonized`` lists (pattern, names of the nodes replaced), for ``inspect``.
"""
from __future__ import annotations

import dataclasses
from collections import Counter

from ..graph import LayerGraph
from ..ops import canonical  # noqa: F401  (registers Swish and Gate)
from . import gate, linear, pad, regions
from .edit import Edit

__all__ = ["canonize", "summary"]

PASSES = (
    linear.drop_identities,
    pad.fold_pads,
    regions.fuse_regions,
    gate.gate_products,
    linear.matmul_to_dense,
    linear.fuse_batchnorm,
    linear.fold_constants_into_layers,
    linear.affine_chains,
    linear.fold_constants_into_layers,
)


def canonize(graph: LayerGraph) -> LayerGraph:
    """The canonical form of ``graph``: a new LayerGraph (``graph`` is left as it was; constant
    arrays are shared, new ones added), with ``canonized`` listing what was recognised."""
    nodes = [dataclasses.replace(n, inputs=list(n.inputs), outputs=list(n.outputs)) for n in graph.nodes]
    edit = Edit(nodes, dict(graph.constants), graph)
    for rewrite in PASSES:
        rewrite(edit)
    return dataclasses.replace(graph, nodes=edit.nodes, constants=edit.consts, canonized=edit.found)


def summary(graph: LayerGraph) -> str:
    """One line for ``inspect``: each pattern recognised with its count, in order of first sight."""
    counts = Counter(pattern for pattern, _ in graph.canonized)
    if not counts:
        return "canonized: nothing"
    return "canonized: " + ", ".join(f"{k} x{v}" if v > 1 else k for k, v in counts.items())
