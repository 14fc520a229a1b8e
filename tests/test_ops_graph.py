"""The new ops inside a whole graph: load, forward against onnxruntime, and the engine's
gradient (the vjps padded by Op.cotangents) against finite differences of the target logit."""
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import onnxattr

B, T, H, V = 2, 5, 8, 3


def attention_block() -> onnx.ModelProto:
    """x (B, T, H) -> SDPA as torch exports it (Softmax at axis -1 inside, IsNaN/Where guard),
    Einsum, Gelu, RMSNormalization, CumSum, GatherElements, Sin -> mean over T -> logits (B, V)."""
    rng = np.random.default_rng(0)
    inits = {
        "wq": rng.standard_normal((H, H)) * 0.3, "wk": rng.standard_normal((H, H)) * 0.3,
        "wo": rng.standard_normal((H, V)) * 0.5, "scale": rng.uniform(0.5, 1.5, H),
        "zero": np.zeros(()), "perm": np.array([[4, 3, 2, 1, 0]] * B)[:, :, None].repeat(H, 2),
        "axis": np.array(1), "axes": np.array([1]),
    }
    inits = {k: (v.astype(np.int64) if k in ("perm", "axis", "axes") else v.astype(np.float32)) for k, v in inits.items()}
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "wq"], ["q"]),
        n("MatMul", ["x", "wk"], ["k"]),
        n("Einsum", ["q", "k"], ["s"], equation="btd,bsd->bts"),
        n("Softmax", ["s"], ["p"], axis=-1),
        n("IsNaN", ["p"], ["nan"]),
        n("Where", ["nan", "zero", "p"], ["p2"]),
        n("MatMul", ["p2", "x"], ["a"]),
        n("Gelu", ["a"], ["g"], approximate="tanh"),
        n("RMSNormalization", ["g", "scale"], ["r"]),
        n("CumSum", ["r", "axis"], ["c"]),
        n("GatherElements", ["c", "perm"], ["ge"], axis=1),
        n("Sin", ["ge"], ["sn"]),
        n("ReduceMean", ["sn", "axes"], ["m"], keepdims=0),
        n("MatMul", ["m", "wo"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, T, H])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, V])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)], ir_version=10)


def test_new_ops_in_a_graph_forward_and_gradient():
    proto = attention_block()
    model = onnxattr.load(proto)
    x = np.random.default_rng(1).standard_normal((B, T, H)).astype(np.float32)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (want,) = sess.run(None, {"x": x})
    got = model(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

    target = [0, 2]
    a = onnxattr.attribute(model, x, target=target, method="gradient")
    assert a.shape == x.shape
    rng = np.random.default_rng(2)
    x64 = x.astype(np.float64)
    for _ in range(3):
        e = rng.standard_normal(x.shape)
        h = 1e-3
        fp = sess.run(None, {"x": (x64 + h * e).astype(np.float32)})[0]
        fm = sess.run(None, {"x": (x64 - h * e).astype(np.float32)})[0]
        fd = sum((fp[i, t] - fm[i, t]) / (2 * h) for i, t in enumerate(target))
        an = float(np.sum(a * e))
        assert abs(fd - an) <= 2e-3 * max(1.0, abs(fd)), (an, fd)
