"""Zero padding written as its own node before a window op becomes that op's ``pads``.

TorchScript exports of TF-style "same" padding (HF MobileNetV2, EfficientNet), keras
``ZeroPadding2D`` and tf2onnx's asymmetric strided convolutions put a constant-0 ``Pad`` in front
of a Conv or MaxPool. Under LRP that splits one layer in two: a rule that spreads relevance over
the whole window (Flat, WSquare) gives some to the padded zeros, and the Pad's vjp then drops it,
so the layer no longer conserves. Folded, the window op pads by itself and no relevance lands on
padding.

- Conv: ``Conv(Pad(x, 0))`` = ``Conv(x)`` with the pads added, exactly (Conv pads with zeros).
- MaxPool: only where its input is known non-negative (a Relu, or a Clip with a lower bound
  >= 0) and every window keeps a cell of the input (pads < kernel, dilation 1, no ceil_mode):
  then padding with 0 and MaxPool's own padding (ignored cells) give the same maxima. Gradients
  differ only at ties with 0, where the Relu before passes none.
"""
from __future__ import annotations

import numpy as np

from ..graph import Node
from ..ops import make_op
from .edit import Edit

FOLDS_INTO = ("Conv", "MaxPool")


def fold_pads(edit: Edit) -> None:
    for pad in [n for n in edit.nodes if n.op_type == "Pad"]:
        readers = edit.consumers(pad.outputs[0])
        if len(readers) != 1 or not edit.only_reader(pad.outputs[0], readers[0]):
            continue
        layer = readers[0]
        spatial = _zero_spatial_pads(edit, pad)
        if layer.op_type not in FOLDS_INTO or layer.inputs[0] != pad.outputs[0] or spatial is None:
            continue
        if (layer.op.attrs.get("auto_pad") or "NOTSET") not in ("NOTSET", "VALID"):  # VALID: no pads
            continue
        if layer.op_type == "MaxPool" and not _pool_keeps_maxima(edit, pad, layer, spatial):
            continue
        begin, end = spatial
        own = list(layer.op.attrs.get("pads") or [0] * 2 * len(begin))
        pads = [int(p + b) for p, b in zip(own[: len(begin)], begin)] + [int(p + e) for p, e in zip(own[len(begin):], end)]
        attrs = {k: v for k, v in layer.op.attrs.items() if v is not None}
        attrs.update(pads=pads, auto_pad="NOTSET")
        op = make_op(layer.op_type, attrs, edit.graph.opset, layer.name)
        folded = Node(layer.name, layer.op_type, op, [pad.inputs[0]] + layer.inputs[1:], layer.outputs)
        edit.nodes = [folded if n is layer else n for n in edit.nodes if n is not pad]
        edit.found.append((f"Pad -> {layer.op_type}", [pad.name]))


def _zero_spatial_pads(edit: Edit, pad: Node) -> tuple[list[int], list[int]] | None:
    """(begin, end) pads of the spatial axes (2 and on) of a constant-0 Pad that pads nothing
    else and crops nothing; None for any other Pad, or one whose pads are not constant."""
    rank = edit.rank(pad.inputs[0])
    if rank is None or rank < 3 or pad.op.mode != "constant":
        return None
    given = [edit.consts.get(t) if t else None for t in pad.inputs[1:4]]
    if any(t and t not in edit.consts for t in pad.inputs[1:4]):
        return None
    pads, value, axes = (given + [None, None, None])[:3]
    fill = pad.op.attrs.get("value") or 0.0
    if value is not None and np.asarray(value).size:
        fill = float(np.asarray(value).reshape(-1)[0])
    if fill != 0:
        return None
    begin, end = pad.op.pads_of(rank, pads, axes)
    if any(begin[:2]) or any(end[:2]) or min(begin + end) < 0:
        return None
    return begin[2:], end[2:]


def _pool_keeps_maxima(edit: Edit, pad: Node, pool: Node, spatial: tuple[list[int], list[int]]) -> bool:
    """Whether MaxPool's own padding gives the same maxima as the Pad's zeros (module docstring)."""
    source = edit.producer(pad.inputs[0])
    if source is None:
        return False
    if source.op_type == "Clip":
        low = edit.consts.get(source.inputs[1]) if len(source.inputs) > 1 and source.inputs[1] else source.op.attrs.get("min")
        non_negative = low is not None and float(np.asarray(low).reshape(-1)[0]) >= 0
    else:
        non_negative = source.op_type == "Relu"
    a = pool.op.attrs
    kernel = list(a.get("kernel_shape") or [])
    own = list(a.get("pads") or [0] * 2 * len(kernel))
    n = len(kernel)
    sides = [own[i] + spatial[0][i] for i in range(n)] + [own[n + i] + spatial[1][i] for i in range(n)]
    return (non_negative and not a.get("ceil_mode") and all(d == 1 for d in a.get("dilations") or [1])
            and len(spatial[0]) == n and all(p < k for p, k in zip(sides, kernel + kernel)))
