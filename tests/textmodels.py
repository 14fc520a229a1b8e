"""Tiny token-id models built by hand: a word-embedding Gather, a position table, one
single-head softmax attention with an additive mask from attention_mask, a residual, and either
a mean-pooled Gemm classifier (B, C) or a per-position LM head (B, T, V)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

V, T, H, C = 11, 6, 8, 3


def weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "E": rng.standard_normal((V, H)), "P": 0.1 * rng.standard_normal((T, H)),
        "Wq": rng.standard_normal((H, H)) / np.sqrt(H), "Wk": rng.standard_normal((H, H)) / np.sqrt(H),
        "Wv": rng.standard_normal((H, H)) / np.sqrt(H), "Wc": rng.standard_normal((H, C)),
        "bc": 0.1 * rng.standard_normal(C), "Wo": rng.standard_normal((H, V)) / np.sqrt(H),
        "scale": np.array(1 / np.sqrt(H)), "big": np.array(1e4), "one": np.array(1.0),
    }


def body(emb: str, lm: bool) -> list[onnx.NodeProto]:
    """The nodes from the embedding output ``emb`` to the output 'logits'."""
    n = helper.make_node
    nodes = [
        n("Add", [emb, "P"], ["h0"]),
        n("MatMul", ["h0", "Wq"], ["q"]), n("MatMul", ["h0", "Wk"], ["k"]), n("MatMul", ["h0", "Wv"], ["v"]),
        n("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        n("MatMul", ["q", "kt"], ["s0"]), n("Mul", ["s0", "scale"], ["s1"]),
        n("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT),
        n("Sub", ["mf", "one"], ["m1"]), n("Mul", ["m1", "big"], ["m2"]),
        n("Unsqueeze", ["m2", "ax1"], ["m3"]),
        n("Add", ["s1", "m3"], ["s2"]), n("Softmax", ["s2"], ["att"], axis=-1),
        n("MatMul", ["att", "v"], ["ctx"]), n("Add", ["h0", "ctx"], ["h1"]),
    ]
    if lm:
        nodes.append(n("MatMul", ["h1", "Wo"], ["logits"]))
    else:
        nodes += [n("ReduceMean", ["h1"], ["pooled"], axes=[1], keepdims=0),
                  n("Gemm", ["pooled", "Wc", "bc"], ["logits"])]
    return nodes


def _graph(nodes, inputs, lm: bool, seed: int, extra: dict | None = None) -> onnx.ModelProto:
    inits = {k: np.asarray(v, dtype=np.float32) for k, v in {**weights(seed), **(extra or {})}.items()}
    tensors = [numpy_helper.from_array(v, k) for k, v in inits.items()]
    tensors.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "ax1"))
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, T, V] if lm else [None, C])
    g = helper.make_graph(nodes, "text", inputs, [out], tensors)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def ids_input(name: str = "input_ids", elem: int = TensorProto.INT64) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, [None, T])


def text_model(lm: bool = False, seed: int = 0, ids_elem: int = TensorProto.INT64) -> onnx.ModelProto:
    """input_ids, attention_mask (int64, (B, T)) -> logits; the embedding through Cast where the
    ids are not int64."""
    nodes = []
    ids = "input_ids"
    if ids_elem != TensorProto.INT64:
        nodes.append(helper.make_node("Cast", ["input_ids"], ["ids64"], to=TensorProto.INT64))
        ids = "ids64"
    nodes.append(helper.make_node("Gather", ["E", ids], ["emb"]))
    return _graph(nodes + body("emb", lm), [ids_input(elem=ids_elem), ids_input("attention_mask")], lm, seed)


def cut_model(lm: bool = False, seed: int = 0) -> onnx.ModelProto:
    """The same model from its embedding output 'emb' (a float input) and attention_mask: the
    reference for gradients at wrt='embeddings'."""
    emb = helper.make_tensor_value_info("emb", TensorProto.FLOAT, [None, T, H])
    return _graph(body("emb", lm), [emb, ids_input("attention_mask")], lm, seed)


def two_tables(same_size: bool) -> onnx.ModelProto:
    """Word and token-type embeddings, both from integer inputs; tables of equal size if asked."""
    n = helper.make_node
    nodes = [n("Gather", ["E", "input_ids"], ["we"]), n("Gather", ["TT", "token_type_ids"], ["te"]),
             n("Add", ["we", "te"], ["emb"])]
    tt = np.random.default_rng(3).standard_normal((V if same_size else 2, H))
    inputs = [ids_input(), ids_input("attention_mask"), ids_input("token_type_ids")]
    return _graph(nodes + body("emb", False), inputs, False, 0, {"TT": tt})


def batch(b: int = 3, seed: int = 1) -> dict[str, np.ndarray]:
    """Token ids and an attention mask whose last positions are 0 in some rows."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, V, (b, T)).astype(np.int64)
    mask = np.ones((b, T), dtype=np.int64)
    for i in range(b):
        mask[i, T - i:] = 0 if i else 1
    return {"input_ids": ids, "attention_mask": mask}
