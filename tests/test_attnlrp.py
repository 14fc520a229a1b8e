"""AttnLRP, CP-LRP and attention rollout (issue 18).

LXT 2.1's own relevance on random-weight HF BERT, GPT-2, Llama and torchvision's ViT
(tests/data/lxt, made by tools/lxt_refs.py) is the oracle: ours must be within 1e-3 relative L2 per
sample, while plain Input x Gradient is not. Attention written as Einsum, as the opset-23
Attention op, behind torch's SDPA NaN guard, or by jax2onnx has no LXT reference: the same weights written as MatMul attention
must give the same relevance.
"""
from __future__ import annotations

import json
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxattr
from onnxattr.attribution.registry import plan_of
from onnxattr.attribution.transformer import rollout
from onnxattr.errors import ModelError

LXT = pathlib.Path(__file__).parent / "data" / "lxt"
DATA = pathlib.Path(__file__).parent / "data" / "attnlrp"
CASES = [("bert", "attnlrp"), ("gpt2", "attnlrp"), ("gpt2", "cplrp"), ("llama", "attnlrp"), ("llama", "cplrp"),
         ("llama_nobias", "attnlrp"), ("llama_nobias", "cplrp"), ("vit", "cplrp")]


@pytest.fixture(autouse=True)
def _float32_masks():
    """GPT-2's export adds the causal mask's finfo.min to the additive Trilu mask's: -inf in
    float32, as in torch (exp gives 0); NumPy warns of the overflow."""
    with np.errstate(over="ignore"):
        yield


def relative_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    n = len(a)
    return np.linalg.norm((a - b).reshape(n, -1), axis=1) / np.linalg.norm(b.reshape(n, -1), axis=1)


def lxt_case(name: str) -> tuple[onnxattr.Model, dict, np.ndarray, dict]:
    data = dict(np.load(LXT / f"{name}.npz"))
    model = onnxattr.load(str(LXT / f"{name}.onnx"), wrt=str(data["wrt"]))
    key = "pixel_values" if "pixel_values" in data else "input_ids"
    return model, {key: data[key]}, data["target"], data


def as_tokens(a: np.ndarray) -> np.ndarray:
    """The ViT's patch-embedding Conv output (B, H, h, w) as LXT's (B, T, H) tokens."""
    return a.reshape(a.shape[0], a.shape[1], -1).transpose(0, 2, 1) if a.ndim == 4 else a


@pytest.mark.parametrize("name,method", CASES)
def test_relevance_equals_lxt(name, method):
    model, feeds, target, data = lxt_case(name)
    counts, expected = json.loads(str(data[f"counts_{method}"])), json.loads(str(data[f"expected_counts_{method}"]))
    assert counts == expected and counts and all(v > 0 for v in counts.values())  # LXT's patches ran
    assert float(data[f"forward_max_abs_diff_{method}"]) < 1e-5
    ours = as_tokens(onnxattr.attribute(model, feeds, target, method))
    ref = data[f"relevance_{method}"]
    assert (relative_l2(ours, ref) < 1e-3).all(), relative_l2(ours, ref)
    plain = as_tokens(onnxattr.attribute(model, feeds, target, "input_x_gradient"))
    np.testing.assert_allclose(plain, data["input_x_gradient"], rtol=1e-3, atol=1e-5 * np.abs(plain).max())
    assert (relative_l2(plain, ref) > 0.1).all()  # the criterion tells the rules apart


def test_cplrp_conserves_the_logit_on_a_bias_free_llama():
    model, feeds, target, data = lxt_case("llama_nobias")
    r = onnxattr.attribute(model, feeds, target, "cplrp")
    logits = model(feeds)
    f_t = logits[np.arange(len(target)), target[:, 0], target[:, 1]]
    np.testing.assert_allclose(r.sum(axis=(1, 2)), f_t, rtol=1e-5)
    np.testing.assert_allclose(f_t, data["target_logit_cplrp"], rtol=1e-5)


def test_inspect_names_the_rules_at_the_attention_products():
    model, _, _, _ = lxt_case("llama")
    att, cp = plan_of(model, "attnlrp", {}, "test"), plan_of(model, "cplrp", {}, "test")
    prefix = "/model/model/layers.0/"
    assert att.rule_name(prefix + "self_attn/MatMul") == "Uniform()"      # Q K^T
    assert att.rule_name(prefix + "self_attn/MatMul_1") == "Uniform()"    # A V
    assert att.rule_name(prefix + "mlp/Mul") == "Uniform()"               # gate * up
    assert cp.rule_name(prefix + "self_attn/MatMul") == "gradient"
    assert cp.rule_name(prefix + "self_attn/MatMul_1") == "Constant(0)"
    assert cp.rule_name(prefix + "mlp/Mul") == "Constant(0)"
    assert att.rule_name(prefix + "input_layernorm/RMSNormalization") == "RMSNormIdentity()"
    rope = [n.name for n in model.graph.nodes if n.op_type == "Mul" and "self_attn" in n.name]
    assert rope and all(att.rule_name(n) == "gradient" for n in rope)  # one operand is cos/sin


def test_linear_rule_in_gradient_form():
    """LRP-0 (Epsilon(0)) in gradient form is the gradient: same relevance as no linear rule; gamma
    changes it."""
    model, feeds, target, _ = lxt_case("bert")
    plain = onnxattr.attribute(model, feeds, target, "attnlrp")
    lrp0 = onnxattr.attribute(model, feeds, target, "attnlrp", linear=onnxattr.rules.Epsilon(0.0))
    gamma = onnxattr.attribute(model, feeds, target, "attnlrp", linear=onnxattr.rules.Gamma(0.25))
    assert (relative_l2(lrp0, plain) < 1e-4).all()
    assert (relative_l2(gamma, plain) > 1e-2).all()


# ---- the same transformer written as MatMul, Einsum and Attention-op attention ------------------

B, T, H, HEADS, C = 2, 5, 8, 2, 3
D = H // HEADS


def _weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = {}
    for layer in range(2):
        for p in ("q", "k", "v", "o", "g", "u", "d"):
            w[f"W{p}{layer}"] = rng.normal(0, 0.6, (H, H)).astype(np.float32)
            w[f"b{p}{layer}"] = rng.normal(0, 0.1, (H,)).astype(np.float32)
        for i in (1, 2):
            w[f"s{i}{layer}"] = rng.normal(1, 0.2, (H,)).astype(np.float32)
            w[f"n{i}{layer}"] = rng.normal(0, 0.1, (H,)).astype(np.float32)
    w["Wc"] = rng.normal(0, 0.6, (H, C)).astype(np.float32)
    w["bc"] = rng.normal(0, 0.1, (C,)).astype(np.float32)
    return w


def _attention(form: str, layer: int, q: str, k: str, v: str, out: str) -> list:
    p = f"L{layer}_"
    if form == "Attention":
        return [helper.make_node("Attention", [q, k, v], [out], q_num_heads=HEADS, kv_num_heads=HEADS)]
    split = [helper.make_node("Reshape", [t, "heads_shape"], [p + t + "4"]) for t in (q, k, v)]
    if form == "Einsum":
        return split + [
            helper.make_node("Einsum", [p + q + "4", p + k + "4"], [p + "s"], equation="bqhd,bkhd->bhqk"),
            helper.make_node("Mul", [p + "s", "scale"], [p + "ss"]),
            helper.make_node("Softmax", [p + "ss"], [p + "a"], axis=-1),
            helper.make_node("Einsum", [p + "a", p + v + "4"], [p + "o4"], equation="bhqk,bkhd->bqhd"),
            helper.make_node("Reshape", [p + "o4", "hidden_shape"], [out]),
        ]
    guard = [] if form == "MatMul" else [  # torch's SDPA export: Where(IsNaN(a), 0, a)
        helper.make_node("IsNaN", [p + "a"], [p + "nan"]),
        helper.make_node("Where", [p + "nan", "zero_f", p + "a"], [p + "ag"]),
    ]
    a = p + "a" if form == "MatMul" else p + "ag"
    return split + [
        helper.make_node("Transpose", [p + q + "4"], [p + "qh"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", [p + k + "4"], [p + "kt"], perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", [p + v + "4"], [p + "vh"], perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", [p + "qh", p + "kt"], [p + "s"]),
        helper.make_node("Mul", [p + "s", "scale"], [p + "ss"]),
        helper.make_node("Softmax", [p + "ss"], [p + "a"], axis=-1),
        *guard,
        helper.make_node("MatMul", [a, p + "vh"], [p + "oh"]),
        helper.make_node("Transpose", [p + "oh"], [p + "o4"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", [p + "o4", "hidden_shape"], [out]),
    ]


def _dense(layer: int, name: str, x: str, out: str) -> list:
    return [helper.make_node("MatMul", [x, f"W{name}{layer}"], [out + "_mm"]),
            helper.make_node("Add", [out + "_mm", f"b{name}{layer}"], [out])]


def transformer(form: str, seed: int = 0, weights: dict | None = None) -> onnx.ModelProto:
    """Two pre-norm layers (LayerNorm, attention, residual; LayerNorm, MLP, residual): the first
    MLP gated with SiLU written as x * sigmoid(x), the second with Gelu; a head on token 0.
    ``weights`` as ``_weights`` draws them (tools/flax_transformer.py saves the flax model's)."""
    w = _weights(seed) if weights is None else weights
    nodes, x = [], "x"
    for layer in range(2):
        p = f"L{layer}_"
        nodes.append(helper.make_node("LayerNormalization", [x, f"s1{layer}", f"n1{layer}"], [p + "h"], axis=-1))
        for t in ("q", "k", "v"):
            nodes += _dense(layer, t, p + "h", p + t)
        nodes += _attention(form, layer, p + "q", p + "k", p + "v", p + "att")
        nodes += _dense(layer, "o", p + "att", p + "o")
        nodes.append(helper.make_node("Add", [x, p + "o"], [p + "x1"]))
        nodes.append(helper.make_node("LayerNormalization", [p + "x1", f"s2{layer}", f"n2{layer}"], [p + "h2"], axis=-1))
        nodes += _dense(layer, "u", p + "h2", p + "up")
        if layer == 0:
            nodes += _dense(layer, "g", p + "h2", p + "gate")
            nodes += [helper.make_node("Sigmoid", [p + "gate"], [p + "sig"]),
                      helper.make_node("Mul", [p + "gate", p + "sig"], [p + "silu"]),
                      helper.make_node("Mul", [p + "silu", p + "up"], [p + "m"])]
        else:
            nodes.append(helper.make_node("Gelu", [p + "up"], [p + "m"]))
        nodes += _dense(layer, "d", p + "m", p + "mlp")
        nodes.append(helper.make_node("Add", [p + "x1", p + "mlp"], [p + "x2"]))
        x = p + "x2"
    nodes += [helper.make_node("Gather", [x, "zero"], ["cls"], axis=1),
              helper.make_node("Gemm", ["cls", "Wc", "bc"], ["y"])]
    inits = [numpy_helper.from_array(v, k) for k, v in w.items()] + [
        numpy_helper.from_array(np.array([B, T, HEADS, D], np.int64), "heads_shape"),
        numpy_helper.from_array(np.array([B, T, H], np.int64), "hidden_shape"),
        numpy_helper.from_array(np.array(D ** -0.5, np.float32), "scale"),
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array(0, np.float32), "zero_f"),
    ]
    graph = helper.make_graph(nodes, form, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, T, H])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, C])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23)])


@pytest.fixture(scope="module")
def forms():
    x = np.random.default_rng(5).normal(0, 1, (B, T, H)).astype(np.float32)
    return x, {form: transformer(form) for form in ("MatMul", "SDPA", "Einsum", "Attention")}


@pytest.mark.parametrize("form", ["SDPA", "Einsum", "Attention"])
@pytest.mark.parametrize("method", ["attnlrp", "cplrp"])
def test_attention_forms_give_the_matmul_relevance(forms, form, method):
    x, protos = forms
    ref = onnxattr.load(protos["MatMul"])
    model = onnxattr.load(protos[form])
    y = ort.InferenceSession(protos[form].SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(model(x), y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model(x), ref(x), rtol=1e-5, atol=1e-6)
    target = np.argmax(y, axis=1)
    want = onnxattr.attribute(ref, x, target, method)
    got = onnxattr.attribute(model, x, target, method)
    assert (relative_l2(got, want) < 1e-5).all(), relative_l2(got, want)
    plain = onnxattr.attribute(model, x, target, "input_x_gradient")
    assert (relative_l2(plain, want) > 1e-2).all()  # the rules were found in this form


@pytest.mark.parametrize("method", ["attnlrp", "cplrp"])
def test_flax_export_gives_the_matmul_relevance(method):
    """jax2onnx's export of nnx.MultiHeadAttention (tests/data/attnlrp, tools/flax_transformer.py)."""
    data = dict(np.load(DATA / "flax.npz"))
    x = data.pop("x")
    flax = onnxattr.load(str(DATA / "flax.onnx"))
    ref = onnxattr.load(transformer("MatMul", weights={k: v for k, v in data.items() if k != "logits"}))
    np.testing.assert_allclose(flax(x), data["logits"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ref(x), data["logits"], rtol=1e-4, atol=1e-4)
    target = np.argmax(data["logits"], axis=1)
    want = onnxattr.attribute(ref, x, target, method)
    got = onnxattr.attribute(flax, x, target, method)
    assert (relative_l2(got, want) < 1e-5).all(), relative_l2(got, want)
    assert (relative_l2(onnxattr.attribute(flax, x, target, "input_x_gradient"), want) > 1e-2).all()


def test_cplrp_conserves_without_biases_in_every_form(forms):
    """With the biases, norm shifts and Gemm bias zero, CP-LRP's relevance sums to the logit."""
    x, _ = forms
    for form in ("MatMul", "SDPA", "Einsum", "Attention"):
        proto = transformer(form)
        for init in proto.graph.initializer:
            if init.name[0] in "bn":
                init.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(init)), init.name))
        model = onnxattr.load(proto)
        y = model(x)
        target = np.argmax(y, axis=1)
        r = onnxattr.attribute(model, x, target, "cplrp")
        np.testing.assert_allclose(r.sum(axis=(1, 2)), y[np.arange(B), target], rtol=1e-4)


# ---- attention rollout ---------------------------------------------------------------------------

def _ort_attention(proto: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    """The Softmax outputs, computed by onnxruntime."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    names = [n.output[0] for n in proto.graph.node if n.op_type == "Softmax"]
    proto.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
    return ort.InferenceSession(proto.SerializeToString()).run(names, {"x": x})


def test_attention_rollout_multiplies_the_layers(forms):
    x, protos = forms
    a1, a2 = _ort_attention(protos["MatMul"], x)
    eye = np.eye(T)
    step = [0.5 * a.mean(axis=1) + 0.5 * eye for a in (a1, a2)]
    want = (step[1] @ step[0])[:, 0]  # row of the first token
    for form in ("MatMul", "SDPA", "Einsum"):
        a = onnxattr.attribute(onnxattr.load(protos[form]), x, None, "attention_rollout")
        assert a.shape == x.shape
        np.testing.assert_allclose(onnxattr.token_scores(a), want, rtol=1e-5)
    with pytest.raises(ModelError, match="Attention node"):
        onnxattr.attribute(onnxattr.load(protos["Attention"]), x, None, "attention_rollout")


def test_attention_rollout_reads_the_target_position_and_patches():
    model, feeds, target, _ = lxt_case("gpt2")
    scores = onnxattr.token_scores(onnxattr.attribute(model, feeds, target, "attention_rollout"))
    np.testing.assert_allclose(scores.sum(axis=1), 1, rtol=1e-5)
    last = target[0, 0]
    assert np.all(scores[:, last + 1:] == 0)  # causal: later tokens do not flow into it
    model, feeds, target, _ = lxt_case("vit")
    a = onnxattr.attribute(model, feeds, target, "attention_rollout")
    assert a.shape == (2, 32, 4, 4) and np.all(a > 0) and np.all(a.sum(axis=(1, 2, 3)) < 1)  # the class token's share is left out


def test_rollout_rows_are_distributions():
    rng = np.random.default_rng(0)
    weights = [rng.dirichlet(np.ones(4), size=(2, 3, 4)) for _ in range(3)]
    out = rollout(weights, np.array([0, 3]))
    np.testing.assert_allclose(out.sum(axis=1), 1)
