"""Canonization leaves the forward pass unchanged and makes the layers explicit."""
import pathlib

import numpy as np
import pytest

import onnxattr
from onnxattr.canonize import canonize, summary
from onnxattr.ops import REGISTRY
from onnxattr.graph import build, read_model
from oracles import MODELS, oracle
from zoo import light_model, randomized


@pytest.mark.parametrize("name", MODELS)
def test_forward_unchanged_and_bn_fused(name):
    path, ref = oracle(name)
    raw = build(read_model(path))
    canon = canonize(raw)
    assert "BatchNormalization" not in {n.op_type for n in canon.nodes}
    model = onnxattr.load(path)
    want = onnxattr.Model(raw, model.proto)(ref["input"])
    np.testing.assert_allclose(model(ref["input"]), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.slow
def test_densenet_and_dropout():
    proto = randomized(light_model("densenet121"), seed=0)
    raw = build(read_model(proto))
    canon = canonize(raw)
    assert {"BatchNormalization", "Dropout", "Identity"}.isdisjoint(n.op_type for n in canon.nodes)
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, 224, 224)).astype(np.float32)
    want = onnxattr.Model(raw, proto)(x)
    got = onnxattr.Model(canon, proto)(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_lone_batchnorm_becomes_affine():
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in
             {"s": rng.uniform(0.5, 2, 3), "b": rng.standard_normal(3), "m": rng.standard_normal(3),
              "v": rng.uniform(0.5, 2, 3)}.items()]
    g = helper.make_graph([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3, 4, 4])], inits)
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 15)])
    model = onnxattr.load(proto)
    assert [n.op_type for n in model.graph.nodes] == ["Affine"]
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    from zoo import ort_run

    np.testing.assert_allclose(model(x), ort_run(proto, x, ["y"])[0], rtol=1e-5, atol=1e-6)


# ---- what exporters split (issue 12, item 5): files from tools/make_canon_models.py ----------

CANON = pathlib.Path(__file__).parent / "data" / "canon"
HAS_RMS = "RMSNormalization" in REGISTRY
needs_rms = pytest.mark.skipif(not HAS_RMS, reason="RMSNormalization has no kernel in this build (ops branch)")

# file -> (patterns canonize must report, op types that must be gone, op types that must be there)
EXPORTED = {
    "torch_silu_op13": ({"Swish"}, {"Sigmoid", "Mul"}, {"Swish"}),
    "torch_gelu_erf_op13": ({"Gelu(none)"}, {"Erf", "Div", "Mul", "Add"}, {"Gelu"}),
    "torch_gelu_tanh_op17": ({"Gelu(tanh)"}, {"Tanh", "Mul", "Add"}, {"Gelu"}),
    "torch_hardswish_op13": ({"HardSwish"}, {"Mul"}, {"HardSwish", "HardSigmoid"}),
    "torch_layernorm_op11": ({"LayerNormalization"}, {"ReduceMean", "Pow", "Sqrt", "Div"}, {"LayerNormalization"}),
    "torch_layernorm2_op16": ({"LayerNormalization"}, {"ReduceMean", "Pow", "Sqrt", "Div"}, {"LayerNormalization"}),
    "torch_se_op13": ({"squeeze-excitation gate"}, {"Mul"}, {"Gate", "Sigmoid"}),
    "torch_bn_after_relu_op13": ({"BatchNormalization -> Affine", "Mul by a constant -> Gemm", "Add by a constant -> Gemm"},
                                 {"BatchNormalization", "Mul", "Add"}, {"Affine"}),
    "keras_blocks_op18": ({"Swish", "LayerNormalization", "Gelu(tanh)", "HardSwish", "Mul by a constant -> Dense",
                           "Mul/Add by per-channel constants -> Affine"},
                          {"Sigmoid", "ReduceMean", "Tanh", "Clip", "Mul", "Add", "Sqrt", "Reciprocal"},
                          {"Swish", "LayerNormalization", "Gelu", "HardSwish", "Affine"}),
}
EXPORTED_RMS = {
    "torch_rmsnorm_op17": ({"RMSNormalization"}, {"ReduceMean", "Pow", "Sqrt", "Div"}, {"RMSNormalization"}),
    "torch_rmsnorm_div_op13": ({"RMSNormalization"}, {"ReduceMean", "Sqrt", "Div"}, {"RMSNormalization"}),
}
CASES = [pytest.param(k, *v, id=k) for k, v in EXPORTED.items()] + [
    pytest.param(k, *v, id=k, marks=needs_rms) for k, v in EXPORTED_RMS.items()]


def _sample(graph, seed: int, batch: int = 3) -> np.ndarray:
    shape = tuple(d if isinstance(d, int) else batch for d in graph.input.shape)
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("name,patterns,gone,present", CASES)
def test_exported_pieces_become_one_node(name, patterns, gone, present):
    """The pieces are recognised, and the canonical graph gives onnxruntime's forward on the
    exported file and the gradient of the graph as exported (our exact vjps of every piece)."""
    from zoo import ort_run

    proto = read_model(CANON / f"{name}.onnx")
    raw = build(proto)
    canon = canonize(raw)
    found = {p for p, _ in canon.canonized}
    assert patterns <= found, found
    ops = {n.op_type for n in canon.nodes}
    assert not (gone & ops) and present <= ops, ops
    x = _sample(raw, 0)
    want = ort_run(proto, x, [raw.output])[0]
    got = onnxattr.Model(canon, proto)(x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    target = np.argmax(want.reshape(x.shape[0], -1), axis=1)
    g_raw = onnxattr.attribute(onnxattr.Model(raw, proto), x, target=target, method="gradient")
    g_canon = onnxattr.attribute(onnxattr.Model(canon, proto), x, target=target, method="gradient")
    np.testing.assert_allclose(g_canon, g_raw, rtol=1e-4, atol=1e-5 * np.abs(g_raw).max())


def test_canonized_lists_replaced_nodes():
    canon = onnxattr.load(CANON / "torch_gelu_erf_op13.onnx").graph
    (pattern, names), = canon.canonized
    assert pattern == "Gelu(none)" and len(names) == 5 and all(n.startswith("/1/") for n in names)
    assert summary(canon) == "canonized: Gelu(none)"
    node = next(n for n in canon.nodes if n.op_type == "Gelu")
    assert node.name == "/1/Gelu"


def test_layernorm_parameters_read_from_constants():
    proto = read_model(CANON / "torch_layernorm2_op16.onnx")
    canon = canonize(build(proto))
    ln = next(n for n in canon.nodes if n.op_type == "LayerNormalization")
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    assert ln.op.axis == -2 and ln.op.eps == pytest.approx(1e-3)
    np.testing.assert_allclose(canon.constants[ln.inputs[1]], inits["1.weight"], rtol=1e-6)
    np.testing.assert_allclose(canon.constants[ln.inputs[2]], inits["1.bias"], rtol=1e-6, atol=1e-7)


def test_gate_takes_no_relevance_under_lrp():
    """The squeeze-excitation gate is a constant multiplier for LRP: relevance passes to the data."""
    model = onnxattr.load(CANON / "torch_se_op13.onnx")
    gate = next(n for n in model.graph.nodes if n.op_type == "Gate")
    tr = onnxattr.trace(model, _sample(model.graph, 1), target=0, method="lrp.epsilon")
    layer = next(t for t in tr.layers if t.node == gate.name)
    np.testing.assert_allclose(layer.relevance_in, layer.relevance_out, rtol=1e-6)
