"""Rewrites of the linear parts, so that rules see one linear layer where the author wrote one.

- Dropout and Identity are dropped.
- A MatMul by a constant matrix becomes a ``Dense`` layer (x W + b over the last axis, whatever
  the input's rank).
- BatchNormalization after a Conv, ConvTranspose or Gemm whose output feeds only it is fused
  into that layer's weights: W' = W s, b' = (b - mean) s + beta, s = scale / sqrt(var + eps)
  (as Zennit's ``SequentialMergeBatchNorm``). Any other BatchNormalization becomes an ``Affine``
  layer y = s x + (beta - mean s).
- Add, Sub, Mul and Div by a constant that is one value per output channel (or one value), after
  a Conv, ConvTranspose, Gemm, Dense or Affine whose output feeds only it, are folded into the
  layer's weight and bias: a bias Add, a scale, a BatchNorm that an exporter wrote as Mul/Add.
- A chain of such ops by per-channel constants elsewhere (a BatchNorm written as Sub/Mul/Add or
  Mul/Add after a nonlinearity, keras' input Rescaling and Normalization on NHWC) becomes one
  ``Affine`` layer.
"""
from __future__ import annotations

import numpy as np

from ..graph import Node
from .edit import Edit, split_const

LAYERS = ("Conv", "ConvTranspose", "Gemm", "Dense", "Affine")
AFFINE_OPS = ("Add", "Sub", "Mul", "Div")


def drop_identities(edit: Edit) -> None:
    for n in [n for n in edit.nodes if n.op_type in ("Identity", "Dropout")]:
        if len([t for t in n.outputs if t]) > 1 and any(edit.consumers(t) for t in n.outputs[1:] if t):
            continue  # a Dropout whose mask is read stays
        if n.inputs[0] == edit.graph.input.name and n.outputs[0] == edit.graph.output:
            continue
        edit.bypass(n, n.inputs[0])


def matmul_to_dense(edit: Edit) -> None:
    out = []
    for n in edit.nodes:
        w = edit.consts.get(n.inputs[1]) if n.op_type == "MatMul" else None
        if w is not None and w.ndim == 2 and n.inputs[0] not in edit.consts:
            n = Node(n.name, "Dense", _op(edit, "Dense", n.name), n.inputs[:2], n.outputs)
        out.append(n)
    edit.nodes = out


def _op(edit: Edit, op_type: str, name: str):
    from ..ops import make_op

    return make_op(op_type, {}, edit.graph.opset, name)


def fuse_batchnorm(edit: Edit) -> None:
    for bn in [n for n in edit.nodes if n.op_type == "BatchNormalization"]:
        params = [edit.consts.get(t) for t in bn.inputs[1:5]]
        if any(p is None for p in params):
            continue
        scale, beta, mean, var = (np.asarray(p, dtype=np.float64) for p in params)
        s = scale / np.sqrt(var + float(bn.op.attrs.get("epsilon", 1e-5)))
        shift = beta - mean * s
        data = bn.inputs[0]
        layer = edit.producer(data)
        if layer is not None and _foldable(edit, layer, bn) and _bias_size(layer, edit.consts) in (None, len(s)) \
                and layer.op_type != "Dense":
            _fold_into(edit, layer, s, shift)
            edit.bypass(bn, data)
            edit.found.append((f"BatchNormalization -> {layer.op_type}", [bn.name]))
        else:
            sname = edit.constant(f"{bn.name}::scale", s)
            bname = edit.constant(f"{bn.name}::bias", shift)
            affine = Node(bn.name, "Affine", _op(edit, "Affine", bn.name), [data, sname, bname], bn.outputs[:1])
            edit.nodes = [affine if n is bn else n for n in edit.nodes]
            edit.found.append(("BatchNormalization -> Affine", [bn.name]))


def fold_constants_into_layers(edit: Edit) -> None:
    """Fold each Add/Sub/Mul/Div by a per-channel constant into the linear layer before it."""
    changed = True
    while changed:
        changed = False
        for layer in [n for n in edit.nodes if n.op_type in LAYERS]:
            while True:
                nxt = edit.consumers(layer.outputs[0])
                if len(nxt) != 1 or not _foldable(edit, layer, nxt[0]):
                    break
                step = _affine_step(edit, nxt[0], _channels(edit, layer), _channel_axis(edit, layer))
                if step is None:
                    break
                _fold_into(edit, layer, *step)
                edit.bypass(nxt[0], layer.outputs[0])
                edit.found.append((f"{nxt[0].op_type} by a constant -> {layer.op_type}", [nxt[0].name]))
                changed = True


def affine_chains(edit: Edit) -> None:
    """A chain of Add/Sub/Mul/Div by per-channel constants (axis 1, or the last axis of an NHWC
    tensor: keras' Rescaling and Normalization at the input) with a Mul or Div in it becomes one
    Affine layer y = s x + b, where a constant has one value per channel or the chain has two
    nodes or more."""
    for first in list(edit.nodes):
        if first not in edit.nodes or first.op_type not in AFFINE_OPS:
            continue
        data, _ = split_const(first, edit.consts)
        shape = edit.shape(data) if data is not None else None
        if shape is None or len(shape) < 2:
            continue
        for axis in (1, len(shape) - 1) if len(shape) > 2 else (1,):
            found = _affine_chain(edit, first, shape, axis)
            if found is not None:
                chain, s, b = found
                name = chain[0].name
                inputs = [data, edit.constant(f"{name}::scale", s), edit.constant(f"{name}::bias", b)]
                attrs = {} if axis == 1 else {"axis": axis}
                edit.replace(chain, edit.make("Affine", attrs, f"{name}::Affine", inputs, chain[-1].outputs[:1]))
                edit.found.append(("Mul/Add by per-channel constants -> Affine", [n.name for n in chain]))
                break


def _affine_chain(edit: Edit, first: Node, shape: tuple, axis: int) -> tuple[list[Node], np.ndarray, np.ndarray] | None:
    """(nodes, s, b) of the chain from ``first`` with channels along ``axis``, or None where it
    is no Affine (no Mul or Div; a lone scaling by one number, as attention's 1 / sqrt(d),
    stays as written)."""
    channels = shape[axis]
    if not isinstance(channels, int):
        return None
    chain, s, b = [], np.ones(channels), np.zeros(channels)
    node: Node | None = first
    while node is not None and (not chain or edit.only_reader(chain[-1].outputs[0], node)):
        step = _affine_step(edit, node, channels, axis)
        if step is None or edit.shape(node.outputs[0]) != shape:
            break
        chain.append(node)
        s, b = s * step[0], b * step[0] + step[1]
        nxt = edit.consumers(node.outputs[0])
        node = nxt[0] if len(nxt) == 1 else None
    per_channel = any(np.asarray(edit.consts[split_const(n, edit.consts)[1]]).size > 1 for n in chain)
    if not any(n.op_type in ("Mul", "Div") for n in chain) or not (per_channel or len(chain) > 1):
        return None
    return chain, s, b


def _affine_step(edit: Edit, node: Node, channels: int | None,
                 axis: int | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(s, b) with node(x) = s x + b per channel, for an Add/Sub/Mul/Div of x by a constant that
    has one value per channel along ``axis`` (-1: the last) or one value; None otherwise."""
    if node.op_type not in AFFINE_OPS or channels is None or axis is None:
        return None
    data, const = split_const(node, edit.consts)
    if data is None or edit.shape(node.outputs[0]) != edit.shape(data):
        return None
    c = np.asarray(edit.consts[const])
    rank = edit.rank(data)
    if rank is None and axis == -1:  # a dense layer's output of unknown rank: a vector at most
        rank = max(c.ndim, 1)
    if rank is None or c.dtype.kind != "f" or c.ndim > rank:
        return None
    axis = axis % rank
    full = c.reshape((1,) * (rank - c.ndim) + c.shape).astype(np.float64)
    if any(d != 1 for i, d in enumerate(full.shape) if i != axis) or full.shape[axis] not in (1, channels):
        return None
    v = np.broadcast_to(full.reshape(-1), (channels,))
    ones, zeros = np.ones(channels), np.zeros(channels)
    first = node.inputs[0] == data
    if node.op_type == "Add":
        return ones, v
    if node.op_type == "Sub":
        return (ones, -v) if first else (-ones, v)
    if node.op_type == "Mul":
        return v, zeros
    if first and np.all(v != 0):  # Div(x, c)
        return 1 / v, zeros
    return None


def _foldable(edit: Edit, layer: Node, after: Node) -> bool:
    return (layer.op_type in LAYERS and edit.only_reader(layer.outputs[0], after)
            and layer.inputs[1] in edit.consts and not (layer.op_type == "Gemm" and _gemm_scaled(layer))
            and _bias_size(layer, edit.consts) in (None, 1, _channels(edit, layer)))


def _channel_axis(edit: Edit, layer: Node) -> int:
    """The output channels' axis: the last for dense layers (-1), an Affine's own, else 1."""
    if layer.op_type == "Affine":
        return layer.op.axis
    return -1 if layer.op_type in ("Dense", "Gemm") else 1


def _channels(edit: Edit, layer: Node) -> int | None:
    w = edit.consts.get(layer.inputs[1])
    if w is None:
        return None
    if layer.op_type == "Gemm":
        return w.shape[0] if layer.op.trans_b else w.shape[1]
    if layer.op_type == "Dense":
        return w.shape[1]
    if layer.op_type == "ConvTranspose":
        return w.shape[1] * int(layer.op.attrs.get("group", 1))
    if layer.op_type == "Affine":
        return w.size
    return w.shape[0]


def _bias_size(layer: Node, consts: dict) -> int | None:
    """The number of entries of the layer's constant bias; None if it has none; -1 if not constant."""
    if len(layer.inputs) < 3 or not layer.inputs[2]:
        return None
    b = consts.get(layer.inputs[2])
    return -1 if b is None else int(np.asarray(b).size)


def _gemm_scaled(layer: Node) -> bool:
    return layer.op.alpha != 1.0 or layer.op.beta != 1.0 or layer.op.trans_a


def _fold_into(edit: Edit, layer: Node, s: np.ndarray, shift: np.ndarray) -> None:
    """W' = W s (per output channel), b' = b s + shift, for the layers in LAYERS."""
    w = np.asarray(edit.consts[layer.inputs[1]], dtype=np.float64)
    if layer.op_type == "Conv":
        w = w * s.reshape((-1,) + (1,) * (w.ndim - 1))
    elif layer.op_type == "ConvTranspose":
        g = int(layer.op.attrs.get("group", 1))
        w = (w.reshape((g, -1, w.shape[1]) + w.shape[2:]) * s.reshape((g, 1, -1) + (1,) * (w.ndim - 2))).reshape(w.shape)
    elif layer.op_type == "Affine":
        w = w.reshape(-1) * s
    elif layer.op_type == "Dense":
        w = w * s[None, :]
    else:  # Gemm: output features are B's columns, or its rows when transB
        w = w * (s[:, None] if layer.op.trans_b else s[None, :])
    b = edit.consts.get(layer.inputs[2]) if len(layer.inputs) > 2 and layer.inputs[2] else None
    b = np.zeros_like(s) if b is None else np.broadcast_to(np.asarray(b, dtype=np.float64).reshape(-1), s.shape)
    wname = edit.constant(f"{layer.name}::weight", w)
    bname = edit.constant(f"{layer.name}::bias", b * s + shift)
    layer.inputs = [layer.inputs[0], wname, bname]
