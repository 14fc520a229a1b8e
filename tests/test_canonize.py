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
needs_castlike = pytest.mark.skipif("CastLike" not in REGISTRY, reason="CastLike (flax's RMSNorm epsilon) has no kernel")

# file -> (patterns canonize must report, op types that must be gone, op types that must be there)
EXPORTED = {
    "torch_silu_op13": ({"Swish"}, {"Sigmoid", "Mul"}, {"Swish"}),
    "torch_gelu_erf_op13": ({"Gelu(none)"}, {"Erf", "Div", "Mul", "Add"}, {"Gelu"}),
    "torch_gelu_tanh_op17": ({"Gelu(tanh)"}, {"Tanh", "Mul", "Add"}, {"Gelu"}),
    "torch_hardswish_op13": ({"HardSwish"}, {"Mul"}, {"HardSwish", "HardSigmoid"}),
    "torch_layernorm_op11": ({"LayerNormalization"}, {"ReduceMean", "Pow", "Sqrt", "Div"}, {"LayerNormalization"}),
    "torch_layernorm2_op16": ({"LayerNormalization"}, {"ReduceMean", "Pow", "Sqrt", "Div"}, {"LayerNormalization"}),
    "torch_se_op13": ({"squeeze-excitation gate"}, {"Mul"}, {"Gate", "Sigmoid"}),
    "torch_se_hard_op13": ({"HardSwish", "squeeze-excitation gate"}, {"Mul"}, {"HardSwish", "Gate", "HardSigmoid"}),
    "torch_bn_after_relu_op13": ({"BatchNormalization -> Affine", "Mul by a constant -> Gemm", "Add by a constant -> Gemm"},
                                 {"BatchNormalization", "Mul", "Add"}, {"Affine"}),
    "jax_blocks_op23": ({"LayerNormalization", "Swish", "HardSwish"}, {"ReduceMean", "Sigmoid", "Max", "Min", "Sqrt"},
                        {"LayerNormalization", "Swish", "HardSwish", "Gelu"}),
    "keras_blocks_op18": ({"Swish", "LayerNormalization", "Gelu(tanh)", "HardSwish", "HardSigmoid", "Mul by a constant -> Dense",
                           "Mul/Add by per-channel constants -> Affine"},
                          {"Sigmoid", "ReduceMean", "Tanh", "Clip", "Mul", "Add", "Sqrt", "Reciprocal"},
                          {"Swish", "LayerNormalization", "Gelu", "HardSwish", "HardSigmoid", "Affine"}),
}
EXPORTED_RMS = {
    "torch_rmsnorm_op17": ({"RMSNormalization"}, {"ReduceMean", "Pow", "Sqrt", "Div"}, {"RMSNormalization"}),
    "torch_rmsnorm_div_op13": ({"RMSNormalization"}, {"ReduceMean", "Sqrt", "Div"}, {"RMSNormalization"}),
    "jax_rmsnorm_op23": ({"RMSNormalization"}, {"ReduceMean", "Sqrt", "Div"}, {"RMSNormalization"}),
}
CASES = [pytest.param(k, *v, id=k) for k, v in EXPORTED.items()] + [
    pytest.param(k, *v, id=k, marks=[needs_rms] + ([needs_castlike] if k.startswith("jax") else []))
    for k, v in EXPORTED_RMS.items()]


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
    flat = np.argmax(want.reshape(x.shape[0], -1), axis=1)
    # a rank-3 output is (batch, position, class): its targets are (position, index) pairs
    target = np.stack(np.unravel_index(flat, want.shape[1:]), axis=1) if want.ndim == 3 else flat
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
    assert ln.op.attrs["axis"] == -2 and ln.op.attrs["epsilon"] == pytest.approx(1e-3)
    np.testing.assert_allclose(canon.constants[ln.inputs[1]], inits["1.weight"], rtol=1e-6)
    np.testing.assert_allclose(canon.constants[ln.inputs[2]], inits["1.bias"], rtol=1e-6, atol=1e-7)


def test_gate_takes_no_relevance_under_lrp():
    """The squeeze-excitation gate is a constant multiplier for LRP: relevance passes to the data."""
    model = onnxattr.load(CANON / "torch_se_op13.onnx")
    gate = next(n for n in model.graph.nodes if n.op_type == "Gate")
    tr = onnxattr.trace(model, _sample(model.graph, 1), target=0, method="lrp.epsilon")
    layer = next(t for t in tr.layers if t.node == gate.name)
    np.testing.assert_allclose(layer.relevance_in, layer.relevance_out, rtol=1e-6)


# ---- only exact matches are rewritten: small graphs with one thing changed -------------------

def _graph(nodes, consts, in_shape, out_shape, opset=17):
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(v if isinstance(v, np.ndarray) and v.dtype == np.int64 else np.asarray(v, dtype=np.float32), k)
             for k, v in consts.items()]  # int64 arrays (pads, axes) stay int64
    g = helper.make_graph([helper.make_node(*n[:3], **(n[3] if len(n) > 3 else {})) for n in nodes], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    return read_model(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)]))


def _same_function(proto, shape):
    """Canonized forward = onnxruntime's, canonized gradient = the gradient of the graph as written."""
    from zoo import ort_run

    raw = build(proto)
    canon = canonize(raw)
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    want = ort_run(proto, x, ["y"])[0]
    np.testing.assert_allclose(onnxattr.Model(canon, proto)(x), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    seed = np.random.default_rng(4).standard_normal(want.shape).astype(np.float32)
    grads = []
    for graph in (raw, canon):
        from onnxattr.plan import Plan

        m = onnxattr.Model(graph, proto)
        grads.append(np.asarray(m.propagate(m.xp.asarray(x), None, Plan(seed=seed))[m.input_name]))
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-4, atol=1e-5 * np.abs(grads[0]).max())
    return canon


@pytest.mark.parametrize("k", [1.702, [[1.702]]], ids=["scalar", "shape (1, 1)"])
def test_quick_gelu_is_swish_with_its_alpha_not_gelu(k):
    proto = _graph([("Mul", ["x", "k"], ["kx"]), ("Sigmoid", ["kx"], ["s"]), ("Mul", ["s", "x"], ["y"])],
                   {"k": k}, ["N", 6], ["N", 6])
    canon = _same_function(proto, (4, 6))
    (node,) = canon.nodes
    assert node.op_type == "Swish" and node.op.alpha == pytest.approx(1.702, rel=1e-6)


@pytest.mark.parametrize("case", ["wrong constant", "piece read elsewhere", "scale along the batch axis",
                                  "mean over a leading axis", "gate from another branch"])
def test_inexact_pieces_stay_as_written(case):
    if case == "wrong constant":  # 0.5 x (1 + erf(x / 1.3)) is no GELU
        nodes = [("Div", ["x", "c"], ["d"]), ("Erf", ["d"], ["e"]), ("Add", ["e", "one"], ["a"]),
                 ("Mul", ["x", "a"], ["m"]), ("Mul", ["m", "half"], ["y"])]
        consts, shape, keep = {"c": 1.3, "one": 1.0, "half": 0.5}, (4, 6), "Erf"
    elif case == "piece read elsewhere":  # x * sigmoid(x) + sigmoid(x): no Swish (the product is a Gate)
        nodes = [("Sigmoid", ["x"], ["s"]), ("Mul", ["x", "s"], ["m"]), ("Add", ["m", "s"], ["y"])]
        consts, shape, keep = {}, (4, 6), "Sigmoid"
    elif case == "scale along the batch axis":  # the scale varies with T too: it stays a Mul after the norm
        nodes = [("ReduceMean", ["x"], ["mu"]), ("Sub", ["x", "mu"], ["d"]), ("Mul", ["d", "d"], ["d2"]),
                 ("ReduceMean", ["d2"], ["v"]), ("Add", ["v", "eps"], ["ve"]), ("Sqrt", ["ve"], ["sd"]),
                 ("Div", ["d", "sd"], ["n"]), ("Mul", ["n", "g"], ["y"])]
        consts, shape, keep = {"eps": 1e-5, "g": np.random.default_rng(0).uniform(0.5, 1.5, (5, 6))}, (2, 5, 6), "Mul"
    elif case == "mean over a leading axis":  # normalised over T of (N, T, H): no LayerNormalization
        nodes = [("ReduceMean", ["x"], ["mu"]), ("Sub", ["x", "mu"], ["d"]), ("Mul", ["d", "d"], ["d2"]),
                 ("ReduceMean", ["d2"], ["v"]), ("Add", ["v", "eps"], ["ve"]), ("Sqrt", ["ve"], ["sd"]),
                 ("Div", ["d", "sd"], ["y"])]
        consts, shape, keep = {"eps": 1e-5}, (2, 5, 6), "ReduceMean"
    else:  # relu(x) * sigmoid(-x): the gate does not read the data operand
        nodes = [("Relu", ["x"], ["r"]), ("Neg", ["x"], ["nx"]), ("Sigmoid", ["nx"], ["s"]), ("Mul", ["r", "s"], ["y"])]
        consts, shape, keep = {}, (2, 3, 4, 4), "Mul"
    axes = {"axes": [1 if case == "mean over a leading axis" else -1]}
    nodes = [n + (axes,) if n[0] == "ReduceMean" else n for n in nodes]
    canon = _same_function(_graph(nodes, consts, list(shape), list(shape), opset=13), shape)
    found = {p for p, _ in canon.canonized}
    assert keep in {n.op_type for n in canon.nodes}
    expected = {"piece read elsewhere": {"squeeze-excitation gate"}, "scale along the batch axis": {"LayerNormalization"}}
    assert found == expected.get(case, set())
    for n in canon.nodes:
        if n.op_type == "LayerNormalization":
            np.testing.assert_allclose(canon.constants[n.inputs[1]], 1, rtol=1e-6)


def test_constants_after_a_conv_fold_into_it_and_elsewhere_make_one_affine():
    """(c - conv(x)) / s + b folds into the Conv; relu(.) - m, * s, + b (a BatchNorm written out)
    becomes one Affine; a scale along H (not per channel) stays a Mul."""
    rng = np.random.default_rng(5)
    consts = {"w": rng.standard_normal((4, 3, 3, 3)), "wb": rng.standard_normal(4),
              "c": rng.standard_normal((4, 1, 1)), "s": rng.uniform(0.5, 2, (1, 4, 1, 1)), "b": rng.standard_normal((4, 1, 1)),
              "m": rng.standard_normal((4, 1, 1)), "t": rng.uniform(0.5, 2, (4, 1, 1)), "h": rng.uniform(0.5, 2, (1, 6, 1))}
    nodes = [("Conv", ["x", "w", "wb"], ["z"]), ("Sub", ["c", "z"], ["z1"]), ("Div", ["z1", "s"], ["z2"]),
             ("Add", ["z2", "b"], ["z3"]), ("Relu", ["z3"], ["r"]), ("Sub", ["r", "m"], ["a1"]),
             ("Mul", ["a1", "t"], ["a2"]), ("Add", ["a2", "b"], ["a3"]), ("Mul", ["a3", "h"], ["y"])]
    canon = _same_function(_graph(nodes, consts, ["N", 3, 8, 8], ["N", 4, 6, 6]), (2, 3, 8, 8))
    assert [n.op_type for n in canon.nodes] == ["Conv", "Relu", "Affine", "Mul"]
    assert {p for p, _ in canon.canonized} == {"Sub by a constant -> Conv", "Div by a constant -> Conv",
                                               "Add by a constant -> Conv", "Mul/Add by per-channel constants -> Affine"}


@pytest.mark.parametrize("name", ["torch_rmsnorm_op17", "torch_rmsnorm_div_op13"])
def test_rmsnorm_pieces_identified(name):
    """Without an RMSNormalization kernel too: the region found computes x / sqrt(mean x^2 + eps) * w
    with the module's weight and epsilon (checked against onnxruntime's values at its ends)."""
    from onnx import numpy_helper

    from onnxattr.canonize.edit import Edit
    from onnxattr.canonize.regions import find
    from zoo import ort_run

    proto = read_model(CANON / f"{name}.onnx")
    raw = build(proto)
    edit = Edit(list(raw.nodes), dict(raw.constants), raw)
    core = next(n for n in raw.nodes if n.op_type == "ReduceMean")
    sub, x, y, (op_type, attrs, params, _) = find(edit, core)
    assert op_type == "RMSNormalization" and attrs["axis"] == -1
    assert attrs["epsilon"] == pytest.approx(1e-6, rel=1e-6)  # the modules' eps
    weight = next(numpy_helper.to_array(t) for t in proto.graph.initializer if t.name == "1.weight")
    np.testing.assert_allclose(params[0], weight, rtol=1e-6)
    xs, ys = ort_run(proto, _sample(raw, 2), [x, y])
    want = xs / np.sqrt((xs * xs).mean(-1, keepdims=True) + attrs["epsilon"]) * params[0]
    np.testing.assert_allclose(ys, want, rtol=1e-5, atol=1e-6)
    llama = name == "torch_rmsnorm_op17"  # with transformers' float32 casts
    assert {n.op_type for n in sub} >= ({"Cast", "Pow"} if llama else {"Mul"}) | {"ReduceMean", "Sqrt", "Div"}


@pytest.mark.parametrize("name", ["torch_silu_op13", "torch_gelu_erf_op13", "torch_gelu_tanh_op17", "torch_hardswish_op13",
                                  "torch_se_op13"])
def test_canonical_activation_passes_relevance_where_its_pieces_did_not(name):
    """Under LRP the one activation node passes relevance unchanged; the pieces as exported,
    each with its own rule or gradient, create or destroy relevance."""
    proto = read_model(CANON / f"{name}.onnx")
    raw = build(proto)
    x = _sample(raw, 5)
    created = []
    for graph in (canonize(raw), raw):
        tr = onnxattr.trace(onnxattr.Model(graph, proto), x, target=0, method="lrp.epsilon")
        logit = tr.layers[0].relevance_out
        between = [t for t in tr.layers if t.op_type not in ("Gemm", "Conv")]
        created.append(sum(t.relevance_in - t.relevance_out for t in between) / np.abs(logit))
    np.testing.assert_allclose(created[0], 0, atol=1e-6)
    assert np.abs(created[1]).max() > 1e-2


# ---- zero padding written as a Pad node; keras' input scalings on NHWC ----------------------

def _flat_relevance_sum(graph, proto, x):
    """sum of R at the input / f_0 under lrp.epsilon_plus_flat (Flat on the first Conv)."""
    m = onnxattr.Model(graph, proto)
    a = onnxattr.attribute(m, x, target=0, method="lrp.epsilon_plus_flat")
    return a.reshape(len(x), -1).sum(axis=1) / m(x)[:, 0]


def test_zero_pad_before_a_conv_becomes_its_pads():
    """TorchScript's TF-style "same" padding: Pad(0) then Conv. Folded, Flat spreads no relevance
    onto the padded zeros, so a Conv without bias conserves it."""
    rng = np.random.default_rng(6)
    consts = {"pads": np.array([0, 0, 0, 1, 0, 0, 1, 1], dtype=np.int64), "zero": 0.0, "w": rng.standard_normal((2, 3, 3, 3))}
    nodes = [("Pad", ["x", "pads", "zero"], ["p"]), ("Conv", ["p", "w"], ["c"], {"strides": [2, 2], "pads": [1, 0, 0, 0]}),
             ("Flatten", ["c"], ["y"])]
    proto = _graph(nodes, consts, ["N", 3, 6, 6], ["N", 18])
    canon = _same_function(proto, (2, 3, 6, 6))
    assert [n.op_type for n in canon.nodes] == ["Conv", "Flatten"] and canon.nodes[0].op.pads == [1, 1, 1, 1]
    assert {p for p, _ in canon.canonized} == {"Pad -> Conv"}
    x = rng.uniform(0, 1, (2, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(_flat_relevance_sum(canon, proto, x), 1, rtol=1e-5)
    assert np.all(_flat_relevance_sum(build(proto), proto, x) < 0.99)  # as written: lost on the padding


@pytest.mark.parametrize("case", ["value 1", "reflect", "channel axis", "MaxPool of signed values"])
def test_other_pads_stay_as_written(case):
    rng = np.random.default_rng(7)
    pads = [0, 1, 1, 1, 0, 0, 1, 1] if case == "channel axis" else [0, 0, 1, 1, 0, 0, 1, 1]
    consts = {"pads": np.array(pads, dtype=np.int64), "v": 1.0 if case == "value 1" else 0.0,
              "w": rng.standard_normal((2, 4 if case == "channel axis" else 3, 3, 3))}
    mode = {"mode": "reflect"} if case == "reflect" else {}
    layer = (("MaxPool", ["p"], ["c"], {"kernel_shape": [2, 2]}) if case.startswith("MaxPool")
             else ("Conv", ["p", "w"], ["c"]))
    nodes = [("Pad", ["x", "pads", "v"], ["p"], mode), layer, ("Flatten", ["c"], ["y"])]
    out = 3 * 7 * 7 if case.startswith("MaxPool") else 2 * 6 * 6
    canon = _same_function(_graph(nodes, consts, ["N", 3, 6, 6], ["N", out]), (2, 3, 6, 6))
    assert "Pad" in {n.op_type for n in canon.nodes} and not canon.canonized


def test_zero_pad_before_a_maxpool_of_relu_becomes_its_pads():
    """keras ZeroPadding2D before MaxPool, after a ReLU: max(0, ...) = max(...) where x >= 0."""
    consts = {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64)}
    nodes = [("Relu", ["x"], ["r"]), ("Pad", ["r", "pads"], ["p"]),
             ("MaxPool", ["p"], ["c"], {"kernel_shape": [3, 3], "strides": [2, 2]}), ("Flatten", ["c"], ["y"])]
    canon = _same_function(_graph(nodes, consts, ["N", 3, 6, 6], ["N", 27]), (2, 3, 6, 6))
    assert [n.op_type for n in canon.nodes] == ["Relu", "MaxPool", "Flatten"] and canon.nodes[1].op.pads == [1, 1, 1, 1]


def test_keras_input_scalings_on_nhwc_become_one_affine_that_passes_relevance():
    """Rescaling(1/255) then Normalization (per-channel mean and 1/std along the last axis): one
    Affine along axis 3 instead of Muls that keep their gradient and scale relevance by 1/255."""
    rng = np.random.default_rng(8)
    consts = {"k": 1 / 255, "m": -rng.uniform(0, 1, (1, 1, 1, 3)), "s": rng.uniform(2, 4, (1, 1, 1, 3)),
              "w": rng.uniform(0, 1, (2, 3, 3, 3))}
    nodes = [("Mul", ["x", "k"], ["a"]), ("Add", ["a", "m"], ["b"]), ("Mul", ["b", "s"], ["n"]),
             ("Transpose", ["n"], ["t"], {"perm": [0, 3, 1, 2]}), ("Conv", ["t", "w"], ["c"]), ("Flatten", ["c"], ["y"])]
    proto = _graph(nodes, consts, ["N", 6, 6, 3], ["N", 32])
    canon = _same_function(proto, (2, 6, 6, 3))
    assert [n.op_type for n in canon.nodes] == ["Affine", "Transpose", "Conv", "Flatten"] and canon.nodes[0].op.axis == 3
    x = rng.uniform(200, 255, (2, 6, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(_flat_relevance_sum(canon, proto, x), 1, rtol=1e-5)
    assert np.all(_flat_relevance_sum(build(proto), proto, x) < 0.1)  # as written: times s / 255
