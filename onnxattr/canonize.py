"""Graph rewrites that make a network's layers explicit before rules apply; the forward pass
is unchanged (up to float rounding).

- BatchNormalization after a Conv, ConvTranspose or Gemm whose output feeds only it is fused
  into that layer's weights: W' = W s, b' = (b - mean) s + beta, s = scale / sqrt(var + eps)
  (as Zennit's ``SequentialMergeBatchNorm``). Any other BatchNormalization becomes an ``Affine``
  layer y = s x + (beta - mean s).
- A MatMul by a constant matrix becomes a ``Dense`` layer (x W + b over the last axis, whatever
  the input's rank), and a bias Add of a constant after a Dense, Gemm or Conv is merged into the
  layer's bias, so that rules see one linear layer.
- Dropout and Identity are dropped.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from .graph import LayerGraph, Node
from .ops import make_op


def canonize(graph: LayerGraph) -> LayerGraph:
    """The canonical form of ``graph``: a new LayerGraph (``graph`` is left as it was; constant
    arrays are shared, new ones added)."""
    nodes = [dataclasses.replace(n, inputs=list(n.inputs), outputs=list(n.outputs)) for n in graph.nodes]
    consts = dict(graph.constants)
    for rewrite in (_drop_identities, _matmul_to_dense, _merge_bias_add, _fuse_batchnorm):
        nodes = rewrite(nodes, consts, graph)
    return LayerGraph(nodes=nodes, constants=consts, input=graph.input, output=graph.output,
                      shapes=graph.shapes, opset=graph.opset, dropped_softmax=graph.dropped_softmax)


Rewrite = Callable[[list[Node], dict[str, np.ndarray], LayerGraph], list[Node]]


def _consumers(nodes: list[Node], tensor: str) -> list[Node]:
    return [n for n in nodes if tensor in n.inputs]


def _rename_input(nodes: list[Node], old: str, new: str) -> None:
    for n in nodes:
        n.inputs = [new if t == old else t for t in n.inputs]


def _replace_output(nodes: list[Node], graph: LayerGraph, removed: Node, by: str) -> list[Node]:
    """Drop ``removed`` and make its readers read ``by``; where ``removed`` made the graph output,
    the producer of ``by`` takes the output's name instead."""
    out = removed.outputs[0]
    rest = [n for n in nodes if n is not removed]
    if out == graph.output:
        for n in rest:
            n.outputs = [out if t == by else t for t in n.outputs]
        _rename_input(rest, by, out)
    else:
        _rename_input(rest, out, by)
    return rest


def _drop_identities(nodes: list[Node], consts: dict, graph: LayerGraph) -> list[Node]:
    for n in [n for n in nodes if n.op_type in ("Identity", "Dropout")]:
        if len([t for t in n.outputs if t]) > 1 and any(_consumers(nodes, t) for t in n.outputs[1:] if t):
            continue  # a Dropout whose mask is read stays
        if n.inputs[0] == graph.input.name and n.outputs[0] == graph.output:
            continue
        nodes = _replace_output(nodes, graph, n, n.inputs[0])
    return nodes


def _matmul_to_dense(nodes: list[Node], consts: dict, graph: LayerGraph) -> list[Node]:
    out = []
    for n in nodes:
        w = consts.get(n.inputs[1]) if n.op_type == "MatMul" else None
        if w is not None and w.ndim == 2 and n.inputs[0] not in consts:
            n = Node(n.name, "Dense", make_op("Dense", {}, graph.opset, n.name), n.inputs[:2], n.outputs)
        out.append(n)
    return out


def _merge_bias_add(nodes: list[Node], consts: dict, graph: LayerGraph) -> list[Node]:
    for add in [n for n in nodes if n.op_type == "Add"]:
        if add not in nodes:
            continue
        data, bias = _split_const(add, consts)
        if data is None:
            continue
        layer = next((n for n in nodes if data in n.outputs), None)
        if layer is None or layer.op_type not in ("Gemm", "Dense", "Conv") or len(_consumers(nodes, data)) != 1:
            continue
        channels = _out_channels(layer, consts)
        if channels is None:
            continue
        b = np.asarray(consts[bias])
        vec = _channel_vector(b, channels, axis_from_end=(layer.op_type == "Conv"), ndim=_rank(graph, data))
        if vec is None or (layer.op_type == "Gemm" and _gemm_scaled(layer)):
            continue
        old = consts[layer.inputs[2]] if len(layer.inputs) > 2 and layer.inputs[2] else 0
        name = f"{layer.name}::bias"
        consts[name] = (np.asarray(old, dtype=np.float32) + vec).astype(np.float32)
        layer.inputs = layer.inputs[:2] + [name]
        nodes = _replace_output(nodes, graph, add, data)
    return nodes


def _split_const(node: Node, consts: dict) -> tuple[str | None, str | None]:
    a, b = node.inputs[:2]
    if b in consts and a not in consts:
        return a, b
    if a in consts and b not in consts:
        return b, a
    return None, None


def _rank(graph: LayerGraph, tensor: str) -> int | None:
    shape = graph.shapes.get(tensor)
    return None if shape is None else len(shape)


def _channel_vector(b: np.ndarray, channels: int, axis_from_end: bool, ndim: int | None) -> np.ndarray | None:
    """A bias that adds one value per output channel, as a (channels,) vector, else None."""
    if axis_from_end:  # Conv output (N, C, *spatial): bias of shape (C, 1, ..) or (1, C, 1, ..)
        if ndim is None or b.ndim > ndim:
            return None
        full = b.reshape((1,) * (ndim - b.ndim) + b.shape)
        if full.shape[0] != 1 or full.shape[1] not in (1, channels) or any(d != 1 for d in full.shape[2:]):
            return None
        return np.broadcast_to(full.reshape(-1), (channels,)).astype(np.float32)
    if b.ndim > 2 or (b.ndim == 2 and b.shape[0] != 1) or b.shape[-1:] not in ((channels,), (1,), ()):
        return None
    return np.broadcast_to(b.reshape(-1), (channels,)).astype(np.float32)


def _out_channels(layer: Node, consts: dict) -> int | None:
    w = consts.get(layer.inputs[1])
    if w is None:
        return None
    if layer.op_type == "Gemm":
        return w.shape[0] if layer.op.trans_b else w.shape[1]
    if layer.op_type == "Dense":
        return w.shape[1]
    if layer.op_type == "ConvTranspose":
        return w.shape[1] * int(layer.op.attrs.get("group", 1))
    return w.shape[0]


def _bias_size(layer: Node, consts: dict) -> int | None:
    """The number of entries of the layer's constant bias; None if it has none; -1 if not constant."""
    if len(layer.inputs) < 3 or not layer.inputs[2]:
        return None
    b = consts.get(layer.inputs[2])
    return -1 if b is None else int(np.asarray(b).size)


def _gemm_scaled(layer: Node) -> bool:
    return layer.op.alpha != 1.0 or layer.op.beta != 1.0 or layer.op.trans_a


def _fuse_batchnorm(nodes: list[Node], consts: dict, graph: LayerGraph) -> list[Node]:
    for bn in [n for n in nodes if n.op_type == "BatchNormalization"]:
        params = [consts.get(t) for t in bn.inputs[1:5]]
        if any(p is None for p in params):
            continue
        scale, beta, mean, var = (np.asarray(p, dtype=np.float64) for p in params)
        s = scale / np.sqrt(var + float(bn.op.attrs.get("epsilon", 1e-5)))
        shift = beta - mean * s
        data = bn.inputs[0]
        layer = next((n for n in nodes if data in n.outputs), None)
        fusable = (
            layer is not None
            and layer.op_type in ("Conv", "ConvTranspose", "Gemm")
            and len(_consumers(nodes, data)) == 1
            and layer.inputs[1] in consts
            and not (layer.op_type == "Gemm" and _gemm_scaled(layer))
            and _bias_size(layer, consts) in (None, len(s))
        )
        if fusable:
            _fold_into(layer, s, shift, consts)
            nodes = _replace_output(nodes, graph, bn, data)
        else:
            sname, bname = f"{bn.name}::scale", f"{bn.name}::bias"
            consts[sname], consts[bname] = s.astype(np.float32), shift.astype(np.float32)
            affine = Node(bn.name, "Affine", make_op("Affine", {}, graph.opset, bn.name), [data, sname, bname], bn.outputs[:1])
            nodes = [affine if n is bn else n for n in nodes]
    return nodes


def _fold_into(layer: Node, s: np.ndarray, shift: np.ndarray, consts: dict) -> None:
    """W' = W s (per output channel), b' = b s + shift, for Conv, ConvTranspose and Gemm."""
    w = np.asarray(consts[layer.inputs[1]], dtype=np.float64)
    if layer.op_type == "Conv":
        w = w * s.reshape((-1,) + (1,) * (w.ndim - 1))
    elif layer.op_type == "ConvTranspose":
        g = int(layer.op.attrs.get("group", 1))
        w = (w.reshape((g, -1, w.shape[1]) + w.shape[2:]) * s.reshape((g, 1, -1) + (1,) * (w.ndim - 2))).reshape(w.shape)
    else:  # Gemm: output features are B's columns, or its rows when transB
        w = w * (s[:, None] if layer.op.trans_b else s[None, :])
    b = consts.get(layer.inputs[2]) if len(layer.inputs) > 2 and layer.inputs[2] else None
    b = np.zeros_like(s) if b is None else np.asarray(b, dtype=np.float64).reshape(-1)
    wname, bname = f"{layer.name}::weight", f"{layer.name}::bias"
    consts[wname] = w.astype(np.float32)
    consts[bname] = (b * s + shift).astype(np.float32)
    layer.inputs = [layer.inputs[0], wname, bname]
