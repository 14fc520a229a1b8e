"""Compiled passes (onnxattr.compiled): the same numbers as the interpreter, on exported models.

The references are the interpreter with the NumPy kernels (``kernels="numpy"``, compilation off),
which the oracle suites check against Captum, Zennit and the frameworks' autograd; the oracle
suites themselves also run compiled (tests/kernel_paths.py).
"""
import pathlib

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

import onnxattr
from onnxattr.attribution import registry
from onnxattr.compiled import program as compiled
from onnxattr.compiled.symbolic import BACKWARD, FORWARD, NotCompilable, Sym, Tracer, numpy_like, value_info
from onnxattr.rules.lrp import Epsilon

from zoo import light_model, randomized

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
BUNDLED = ["torch_resnet_bn_op17", "torch_vgg_op11", "torch_cnn_softmax_op13", "keras_cnn_softmax_op18",
           "keras_gap_bn_op15", "jax_cnn_op23"]
LIGHT = ["resnet50", "densenet121", "squeezenet", "shufflenet", "inception_v2"]
METHODS = ["gradient", "input_x_gradient", "guided_backprop", "deconvnet", "lrp.epsilon_plus_flat",
           "lrp.alpha1_beta0", "lrp.epsilon_alpha2_beta1_flat"]


def rel_l2(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def both(proto_or_path, x, method, monkeypatch, target=0, kernels="numpy"):
    """(compiled model, its attribution, the interpreter's with ``kernels``)."""
    monkeypatch.setenv(compiled.ENV, "1")
    model = onnxattr.load(proto_or_path)
    fast = onnxattr.attribute(model, x, target, method)
    monkeypatch.setenv(compiled.ENV, "0")
    ref = onnxattr.attribute(onnxattr.load(proto_or_path, kernels=kernels), x, target, method)
    monkeypatch.setenv(compiled.ENV, "1")
    return model, fast, ref


def compiled_program(model, x, method):
    plan = registry.plan_of(model, method, {}, "test")
    return model.program(plan, {model.input_name: x})


@pytest.mark.parametrize("name", BUNDLED)
def test_every_method_compiles_on_the_bundled_cnns_and_equals_the_interpreter(name, monkeypatch):
    path = MODELS / f"{name}.onnx"
    x = np.load(MODELS / f"{name}.npz")["input"][:2]
    for method in METHODS:
        model, fast, ref = both(path, x, method, monkeypatch)
        assert compiled_program(model, x, method) is not None, (method, model._programs.refused)
        assert rel_l2(fast, ref) < 1e-4, (method, rel_l2(fast, ref))


@pytest.mark.slow
@pytest.mark.parametrize("name", LIGHT)
def test_gradient_and_lrp_compile_on_the_model_zoo(name, monkeypatch):
    proto = randomized(light_model(name), seed=1)
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, 224, 224)).astype(np.float32)
    for method in ("gradient", "lrp.epsilon_plus_flat"):
        # against the interpreter with onnxruntime's per-layer kernels: the same convolution
        # kernels, so that what is compared is the compilation (against NumPy's kernels, float32
        # sums in another order flip ReLUs of these random networks: ResNet-50's gradient differs
        # by 2.0e-3 on either onnxruntime path, and Inception v2's gradients are ~1e-11, noise)
        model, fast, ref = both(proto, x, method, monkeypatch, kernels="onnxruntime")
        assert compiled_program(model, x, method) is not None, (method, model._programs.refused)
        assert rel_l2(fast, ref) < 1e-3, (method, rel_l2(fast, ref))  # ResNet-50's gradient: 1.7e-4


@pytest.mark.parametrize("name, wrt", [("torch_vit_op17", None), ("torch_text_order_op17", "embeddings")])
def test_transformer_gradients_compile_per_batch_size(name, wrt, monkeypatch):
    """Attention reshapes to sizes computed from Shape ops, which ONNX's inference does not
    follow: the program is compiled for the batch size at hand (sizes from one forward pass),
    once per size, and equals the interpreter; a text model's token ids stay fixed inputs."""
    data = np.load(MODELS / f"{name}.npz")
    monkeypatch.setenv(compiled.ENV, "1")
    model = onnxattr.load(MODELS / f"{name}.onnx", wrt=wrt)
    monkeypatch.setenv(compiled.ENV, "0")
    ref = onnxattr.load(MODELS / f"{name}.onnx", wrt=wrt, kernels="numpy")
    monkeypatch.setenv(compiled.ENV, "1")
    names = [i.name for i in model.inputs]
    for n in (2, 3):
        x = {k: data[k][:n] for k in data.files if k in names} if wrt else data["input"][:n]
        fast = onnxattr.attribute(model, x, 0, "gradient")
        monkeypatch.setenv(compiled.ENV, "0")
        want = onnxattr.attribute(ref, x, 0, "gradient")
        monkeypatch.setenv(compiled.ENV, "1")
        assert rel_l2(fast, want) < 1e-4, rel_l2(fast, want)
    assert sum(p is not None and p != "static" for p in model._programs.cache.values()) == 2


def test_relevance_at_inner_tensors_equals_the_interpreters(monkeypatch):
    """propagate(fetch=...): the backward session also returns the relevance at the tensors
    asked for (the layer-wise analyses read these)."""
    path = MODELS / "torch_resnet_bn_op17.onnx"
    x = np.load(MODELS / "torch_resnet_bn_op17.npz")["input"][:2]
    model = onnxattr.load(path)
    fetch = [n.outputs[0] for n in model.graph.nodes if n.op_type == "Relu"][-3:]
    plan = registry.plan_of(model, "lrp.epsilon_plus_flat", {}, "test")
    monkeypatch.setenv(compiled.ENV, "1")
    fast = model.propagate({model.input_name: x}, np.zeros(2, dtype=int), plan, fetch=fetch)
    assert len(model._programs.cache) == 1 and None not in model._programs.cache.values()
    monkeypatch.setenv(compiled.ENV, "0")
    ref = model.propagate({model.input_name: x}, np.zeros(2, dtype=int), plan, fetch=fetch)
    assert set(fast) == set(ref) == set(fetch) | {model.input_name}
    for t in ref:
        assert rel_l2(fast[t], ref[t]) < 1e-5, t


def test_a_plan_with_no_static_form_runs_in_the_interpreter(monkeypatch):
    """Inception v1's LRN has no ONNX vjp here: the gradient is left to the interpreter, which
    gives the same map; the reason names the node."""
    proto = randomized(light_model("inception_v1"), seed=1)
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, 224, 224)).astype(np.float32)
    model, fast, ref = both(proto, x, "gradient", monkeypatch, kernels="onnxruntime")
    assert compiled_program(model, x, "gradient") is None
    assert "LRN" in model._programs.refused
    np.testing.assert_array_equal(fast, ref)
    assert compiled_program(model, x, "lrp.epsilon_plus_flat") is not None  # LRN passes relevance under LRP


def test_a_program_is_built_once_per_plan_and_rules_compare_by_value(monkeypatch):
    monkeypatch.setenv(compiled.ENV, "1")
    model = onnxattr.load(MODELS / "torch_resnet_bn_op17.onnx")
    x = np.load(MODELS / "torch_resnet_bn_op17.npz")["input"][:2]
    for _ in range(2):
        onnxattr.attribute(model, x, 0, "gradient")
        onnxattr.attribute(model, x, 0, "lrp.epsilon_plus_flat")
    assert len(model._programs.cache) == 2
    onnxattr.attribute(model, x, 0, "lrp.epsilon", epsilon=0.5)
    onnxattr.attribute(model, x, 0, "lrp.epsilon", epsilon=0.25)
    assert len(model._programs.cache) == 4
    assert compiled.rules_key({"a": Epsilon(0.5)}) == compiled.rules_key({"a": Epsilon(0.5)})
    assert compiled.rules_key({"a": Epsilon(0.5)}) != compiled.rules_key({"a": Epsilon(0.25)})


def test_an_unknown_switch_value_is_refused_naming_the_variable(monkeypatch):
    from onnxattr.errors import OptionError

    model = onnxattr.load(MODELS / "torch_resnet_bn_op17.onnx")
    x = np.load(MODELS / "torch_resnet_bn_op17.npz")["input"][:1]
    monkeypatch.setenv(compiled.ENV, "off")
    with pytest.raises(OptionError, match="ONNXATTR_COMPILE='off'"):
        onnxattr.attribute(model, x, 0, "gradient")


def test_the_switch_and_copies_fall_back_to_the_interpreter(monkeypatch):
    x = np.load(MODELS / "torch_resnet_bn_op17.npz")["input"][:1]
    monkeypatch.setenv(compiled.ENV, "0")
    model = onnxattr.load(MODELS / "torch_resnet_bn_op17.onnx")
    assert compiled_program(model, x, "gradient") is None
    monkeypatch.setenv(compiled.ENV, "1")
    assert compiled_program(model, x, "gradient") is not None
    assert compiled_program(onnxattr.load(MODELS / "torch_resnet_bn_op17.onnx", kernels="numpy"), x, "gradient") is None
    copy = __import__("copy").copy(model)
    copy.params = dict(model.params)  # the analyses' randomized copies: new weights, no compilation
    assert compiled_program(copy, x, "gradient") is None


def test_the_gradient_keeps_masks_and_indices_not_activations(monkeypatch):
    """What the forward session hands to the backward: a byte per ReLU output (its mask), the
    MaxPool's indices, shapes; no float activation (the convolutions' vjps need none)."""
    monkeypatch.setenv(compiled.ENV, "1")
    model = onnxattr.load(MODELS / "torch_resnet_bn_op17.onnx")
    x = np.load(MODELS / "torch_resnet_bn_op17.npz")["input"][:2]
    program = compiled_program(model, x, "gradient")
    _, saved = program.forward({model.input_name: x})
    kinds = {v.dtype.kind for v in saved.values()}
    assert kinds <= {"b", "i"}, {k: v.dtype for k, v in saved.items()}
    assert any(v.dtype == np.bool_ for v in saved.values())


def test_lrp_keeps_inputs_and_recomputes_its_modified_passes_in_the_backward(monkeypatch):
    """z+ layers' modified forward passes run in the backward session from the saved inputs: the
    forward session keeps no second copy of each activation."""
    monkeypatch.setenv(compiled.ENV, "1")
    model = onnxattr.load(MODELS / "torch_resnet_bn_op17.onnx")
    x = np.load(MODELS / "torch_resnet_bn_op17.npz")["input"][:2]
    program = compiled_program(model, x, "lrp.epsilon_plus_flat")
    activations = {t for n in model.graph.nodes for t in n.outputs} | {model.input_name}
    floats = [k for k in program.saved + program._passed if k not in activations]
    assert all(not k.startswith("_") or "Greater" in k or "Shape" in k or "second" in k or "Concat" in k
               or "Reduce" in k for k in floats), floats


# ---- the symbolic tensors ---------------------------------------------------------------------

def run_traced(fn, *arrays):
    """fn(xp, *arrays) traced over Syms (all of the backward phase) and run by onnxruntime."""
    tracer = Tracer(17)
    tracer.backward_started = True
    syms = [Sym(tracer, f"a{i}", a.dtype, a.shape, BACKWARD) for i, a in enumerate(arrays)]
    out = fn(numpy_like, *syms)
    tracer.node("Identity", [out], ["out"], BACKWARD)
    graph = helper.make_graph(tracer.nodes[BACKWARD], "t", [value_info(s.name, s.dtype, s.shape) for s in syms],
                              [value_info("out", out.dtype, out.shape)], tracer.initializers[BACKWARD])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {s.name: a for s, a in zip(syms, arrays)})[0], out


@pytest.mark.parametrize("fn", [
    lambda xp, a, b: a + b * 2 - b / 3,
    lambda xp, a, b: 1 - a * a,
    lambda xp, a, b: a * (b > 0),
    lambda xp, a, b: xp.where(a >= 0, a.dtype.type(1e-6), a.dtype.type(-1e-6)) + a,
    lambda xp, a, b: xp.maximum(a, 0) + xp.minimum(b, 0),
    lambda xp, a, b: xp.where(a > 0, 1, b + 0.5).astype(a.dtype),
    lambda xp, a, b: (((a > 0) & (a < 1)) * 0.25).astype(a.dtype),
    lambda xp, a, b: xp.exp(-a * a) + xp.tanh(b) + xp.sign(a) * xp.abs(b),
    lambda xp, a, b: (a * b).sum(axis=0, keepdims=True).reshape((1, 4, 5)),
    lambda xp, a, b: a.transpose(1, 0, 2) + 0,
    lambda xp, a, b: a @ np.arange(20, dtype=np.float32).reshape(5, 4),
], ids=["arith", "rsub", "mask", "stabilize", "max-min", "where-numbers", "and", "unary", "sum-reshape",
        "transpose", "matmul"])
def test_traced_numpy_code_equals_numpy(fn):
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((3, 4, 5)).astype(np.float32) for _ in range(2))
    got, sym = run_traced(fn, a, b)
    want = fn(np, a, b)
    assert got.dtype == want.dtype and got.shape == want.shape == tuple(sym.shape)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_the_stabilizer_is_exact_without_where_and_known_signs_need_no_test():
    """z + where(z >= 0, eps, -eps) written as a Cast, a Mul and an Add (exact for +-eps), and,
    for a z known to be >= 0 (z+ of a ReLU's output), as z + eps."""
    from onnxattr.rules.base import stabilize

    z = np.array([[-2.0, -1e-9, 0.0, 1e-9, 3.0]], dtype=np.float32)
    got, sym = run_traced(lambda xp, a: stabilize(a, 1e-6), z)
    np.testing.assert_array_equal(got, stabilize(z, 1e-6))
    assert not any(n.op_type == "Where" for n in sym.tracer.nodes[BACKWARD])
    tracer = Tracer(17)
    relu = Sym(tracer, "relu", np.float32, (None, 5), FORWARD, nonneg=True)
    stabilize(relu, 1e-6)
    assert [n.op_type for n in tracer.nodes[FORWARD]] == ["Add"]


def test_what_has_no_static_form_is_refused_not_guessed():
    tracer = Tracer(17)
    x = Sym(tracer, "x", np.float32, (None, 3), FORWARD)
    with pytest.raises(NotCompilable, match="run time"):
        bool(x > 0)
    with pytest.raises(NotCompilable, match="percentile"):
        numpy_like.percentile(x, 50)
    with pytest.raises(NotCompilable, match="argsort"):
        x.argsort()
    with pytest.raises(NotCompilable, match="opset 8"):
        Tracer(8)


def test_masks_of_forward_values_are_computed_in_the_forward_session():
    """A node the backward adds on forward values only runs in the forward session where what
    it makes is smaller (a mask, a shape); otherwise in the backward, from the saved inputs."""
    tracer = Tracer(17)
    y = Sym(tracer, "y", np.float32, (None, 8), FORWARD)
    tracer.backward_started = True
    g = Sym(tracer, "g", np.float32, (None, 8), BACKWARD)
    mask = y > 0
    assert mask.phase == FORWARD and mask.dtype == np.bool_
    z = y * 2.0
    assert z.phase == BACKWARD  # as large as y: recomputed from y, not kept
    out = g * mask
    assert out.phase == BACKWARD and set(tracer.saved) == {mask.name, "y"}
