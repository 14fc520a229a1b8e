"""Sanity checks (model randomization, class sensitivity) and the similarity measures they use."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
import toy
from onnx import TensorProto, helper, numpy_helper
from oracles import oracle

import onnxattr
from onnxattr.analysis import class_sensitivity, randomization_test
from onnxattr.analysis.randomization import compare, weight_layers
from onnxattr.analysis.similarity import cosine, pearson, rank, spearman, ssim
from onnxattr.errors import InputError, OptionError, UnsupportedOpError

RNG = np.random.default_rng(0)


def random_cnn(seed=0, size=16, channels=(3, 8, 16), classes=10):
    """Conv3x3-BN-ReLU-Conv3x3/2-ReLU-Conv(size/2) -> (N, classes, 1, 1), random weights."""
    rng = np.random.default_rng(seed)
    c0, c1, c2 = channels
    inits = {
        "w1": rng.standard_normal((c1, c0, 3, 3)) * np.sqrt(2 / (c0 * 9)), "b1": 0.1 * rng.standard_normal(c1),
        "scale": rng.uniform(0.5, 1.5, c1), "beta": 0.1 * rng.standard_normal(c1),
        "mean": 0.1 * rng.standard_normal(c1), "var": rng.uniform(0.5, 1.5, c1),
        "w2": rng.standard_normal((c2, c1, 3, 3)) * np.sqrt(2 / (c1 * 9)), "b2": 0.1 * rng.standard_normal(c2),
        "w3": rng.standard_normal((classes, c2, size // 2, size // 2)) * np.sqrt(4 / (c2 * size * size)),
        "b3": 0.1 * rng.standard_normal(classes),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["h1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["h1", "scale", "beta", "mean", "var"], ["n1"], name="bn1"),
        helper.make_node("Relu", ["n1"], ["a1"], name="relu1"),
        helper.make_node("Conv", ["a1", "w2", "b2"], ["h2"], name="conv2", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["h2"], ["a2"], name="relu2"),
        helper.make_node("Conv", ["a2", "w3", "b3"], ["y"], name="conv3"),
    ]
    g = helper.make_graph(
        nodes, "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, c0, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, classes, 1, 1])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def cnn():
    return onnxattr.load(random_cnn())


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).uniform(0, 1, (6, 3, 16, 16)).astype(np.float32)


def snapshot(model):
    return {k: np.array(v, copy=True) for k, v in model.params.items()}, dict(model.params)


def assert_unchanged(model, before):
    values, objects = before
    assert model.params.keys() == values.keys()
    for k, v in values.items():
        assert model.params[k] is objects[k]
        np.testing.assert_array_equal(model.params[k], v)


# ---- similarity ---------------------------------------------------------------------------
def test_spearman_uses_average_ranks_for_ties():
    np.testing.assert_array_equal(rank(np.array([[3.0, 1.0, 2.0, 2.0]])), [[4.0, 1.0, 2.5, 2.5]])
    np.testing.assert_allclose(spearman(np.array([[1.0, 2, 2, 3]]), np.array([[1.0, 2, 3, 4]])), [3 / np.sqrt(10)])
    a = RNG.standard_normal((3, 50))
    np.testing.assert_allclose(spearman(a, np.exp(a)), 1.0)
    np.testing.assert_allclose(spearman(a, -(a**3)), -1.0)
    assert np.isnan(spearman(a[:1], np.ones((1, 50)))[0])


def test_cosine_and_pearson():
    a = RNG.standard_normal((4, 3, 5))
    np.testing.assert_allclose(cosine(a, 2 * a), 1.0)
    np.testing.assert_allclose(pearson(a, 3 * a + 1), 1.0)
    np.testing.assert_allclose(cosine(np.array([[1.0, 0]]), np.array([[1.0, 1]])), [np.sqrt(0.5)])
    assert np.isnan(cosine(np.zeros((1, 3)), np.ones((1, 3)))[0])


def test_ssim_known_values():
    a = RNG.uniform(0, 1, (2, 20, 20))
    np.testing.assert_allclose(ssim(a, a), 1.0)
    b = np.clip(a + 0.3 * RNG.standard_normal(a.shape), 0, 1)
    np.testing.assert_allclose(ssim(a, b), ssim(b, a))
    assert np.all(ssim(a, b) < 0.9)
    # constant maps: only the luminance term is left
    c1, c2 = np.full((1, 12, 12), 0.2), np.full((1, 12, 12), 0.7)
    k = (0.01) ** 2
    np.testing.assert_allclose(ssim(c1, c2), [(2 * 0.2 * 0.7 + k) / (0.2**2 + 0.7**2 + k)])
    # 1-D vectors, and maps smaller than the window
    v = RNG.uniform(0, 1, (3, 40))
    np.testing.assert_allclose(ssim(v, v), 1.0)
    small = RNG.uniform(0, 1, (2, 5, 6))
    np.testing.assert_allclose(ssim(small, small), 1.0)


# ---- model randomization ------------------------------------------------------------------
def test_weight_layers_go_from_the_top_and_include_the_fused_batchnorm(cnn):
    layers = weight_layers(cnn)
    assert [name for name, _ in layers] == ["conv3", "conv2", "conv1"]
    assert all(len(params) == 2 for _, params in layers)  # weight and bias (BN folded into conv1's)
    assert layers[-1][1] == ["conv1::weight", "conv1::bias"]


def test_cascading_randomization_decorrelates_the_gradient(cnn, images):
    before = snapshot(cnn)
    r = randomization_test(cnn, images, method="gradient", mode="cascading", seed=3, keep_maps=True)
    assert_unchanged(cnn, before)
    assert r.layers == ["conv3", "conv2", "conv1"] and r.mode == "cascading"
    assert r.spearman.shape == r.spearman_abs.shape == r.ssim.shape == (3, 6)
    assert r.maps.shape == (3,) + images.shape
    assert abs(r.spearman[-1].mean()) < 0.2  # a fully random network: nothing of the original left
    np.testing.assert_array_equal(r.original, onnxattr.attribute(cnn, images, target=r.target, method="gradient"))
    np.testing.assert_array_equal(r.target, cnn(images).reshape(6, -1).argmax(axis=1))
    # rows are what compare() says about the kept maps
    sp, sp_abs, ss = compare(r.original, r.maps[1])
    np.testing.assert_allclose(r.spearman[1], sp)
    np.testing.assert_allclose(r.spearman_abs[1], sp_abs)
    np.testing.assert_allclose(r.ssim[1], ss)


def test_independent_randomization_changes_one_layer_at_a_time(cnn, images):
    before = snapshot(cnn)
    cas = randomization_test(cnn, images, target=2, method="input_x_gradient", mode="cascading", seed=5)
    ind = randomization_test(cnn, images, target=2, method="input_x_gradient", mode="independent", seed=5)
    assert_unchanged(cnn, before)
    # the first step is the same in both modes (same seed, same top layer)
    np.testing.assert_allclose(ind.spearman[0], cas.spearman[0])
    assert np.all(np.isfinite(ind.ssim)) and np.all(np.abs(ind.spearman) <= 1)
    assert not np.allclose(ind.spearman[1:], cas.spearman[1:])


def test_randomization_works_with_perturbation_and_path_methods(cnn, images):
    before = snapshot(cnn)
    r = randomization_test(cnn, images[:2], target=0, method="integrated_gradients", steps=4)
    s = randomization_test(cnn, images[:2], target=0, method="smoothgrad", samples=3)
    o = randomization_test(cnn, images[:2], target=0, method="occlusion", window=(3, 4, 4))
    assert_unchanged(cnn, before)
    for res in (r, s, o):
        assert res.spearman.shape == (3, 2) and np.all(np.isfinite(res.ssim))


def test_randomization_on_cnn_bn_never_changes_the_model():
    path, data = oracle("cnn_bn")
    try:
        m = onnxattr.load(path)
    except UnsupportedOpError as e:  # the oracle needs ops (Flatten) that may not be there yet
        pytest.skip(str(e))
    before = snapshot(m)
    r = randomization_test(m, data["input"], target=data["target"], method="gradient")
    assert_unchanged(m, before)
    assert len(r.layers) == 4
    assert abs(r.spearman[-1].mean()) < 0.2


def test_randomization_of_a_non_image_model_uses_1d_maps():
    m = onnxattr.load(toy.relu_mlp([20, 32, 32, 4], seed=1))
    x = RNG.standard_normal((5, 20)).astype(np.float32)
    r = randomization_test(m, x, method="gradient")
    assert r.layers == ["Gemm_4", "Gemm_2", "Gemm_0"]
    assert r.ssim.shape == (3, 5) and np.all(np.isfinite(r.ssim))


def test_randomization_options_are_checked(cnn, images):
    with pytest.raises(OptionError, match="mode"):
        randomization_test(cnn, images, method="gradient", mode="sequential")
    with pytest.raises(OptionError, match="unknown method"):
        randomization_test(cnn, images, method="gradients")
    with pytest.raises(InputError):
        randomization_test(cnn, images[:, :2], method="gradient")


# ---- class sensitivity --------------------------------------------------------------------
def test_class_sensitivity_of_the_gradient_of_a_linear_model_compares_weight_columns():
    proto = toy.linear(12, 5, seed=4)
    m = onnxattr.load(proto)
    w = numpy_helper.to_array(next(t for t in proto.graph.initializer if t.name == "w"))  # (12, 5)
    x = RNG.standard_normal((3, 12)).astype(np.float32)
    cs = class_sensitivity(m, x, method="gradient", n_classes=None, seed=1)
    z = m(x)
    np.testing.assert_array_equal(cs.predicted, z.argmax(axis=1))
    np.testing.assert_array_equal(cs.least, z.argmin(axis=1))
    assert cs.others.shape == cs.spearman_others.shape == (3, 4)
    for i in range(3):
        assert cs.predicted[i] not in cs.others[i] and len(set(cs.others[i])) == 4
        ref = w[:, cs.predicted[i]][None]
        np.testing.assert_allclose(cs.cosine_least[i], cosine(ref, w[:, cs.least[i]][None])[0], rtol=1e-5)
        for j, c in enumerate(cs.others[i]):
            np.testing.assert_allclose(cs.spearman_others[i, j], spearman(ref, w[:, c][None])[0], rtol=1e-5)
    one = class_sensitivity(m, x, method="gradient", n_classes=2)
    assert one.others.shape == (3, 2)
    with pytest.raises(OptionError, match="n_classes"):
        class_sensitivity(m, x, method="gradient", n_classes=5)


def test_class_sensitivity_is_undefined_where_a_map_is_constant():
    """The undefined rule (issue 13): a rank correlation with a constant map ranks rounding noise.
    Class 0's weight column is 1 plus one-ulp noise (range ~1e-7 < 1e-6 of its largest |value|),
    and a bias makes class 0 the least likely and class 1 the predicted class for every input."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((12, 4))
    w[:, 0] = 1.0 + np.where(rng.random(12) < 0.5, 0.0, np.spacing(np.float32(1.0)))
    proto = toy.model([helper.make_node("Gemm", ["x", "w", "b"], ["y"])], {"w": w, "b": [-1e3, 1e3, 0.0, 0.0]}, 12, 4)
    m = onnxattr.load(proto)
    x = RNG.standard_normal((3, 12)).astype(np.float32)
    cs = class_sensitivity(m, x, method="gradient", n_classes=None, seed=0)
    assert (cs.least == 0).all() and (cs.predicted == 1).all()
    assert np.isnan(cs.spearman_least).all()
    assert all("least likely class's map is constant" in why for why in cs.undefined)
    assert np.isfinite(spearman(w[None, :, 1], w[None, :, 0].astype(np.float32)))  # without the rule: noise ranked
    zero = cs.others == 0
    assert np.isnan(cs.spearman_others[zero]).all() and np.isfinite(cs.spearman_others[~zero]).all()
    assert np.isfinite(cs.cosine_least).all()  # a constant, non-zero map has a direction
    r = onnxattr.audit(m, x, methods=["gradient"], gates=["class_sensitivity"], analyses=["class_sensitivity"],
                       sample=None, progress=False)
    assert r.methods["gradient"].metrics["class_sensitivity.spearman"] is None and not r.passed
    assert "least likely class's map is constant" in r.methods["gradient"].undefined["class_sensitivity.spearman"]
    assert "constant maps" in r.gates[0].detail
    defined = class_sensitivity(onnxattr.load(toy.linear(12, 4, seed=4)), x, method="gradient")
    assert defined.undefined == [""] * 3 and np.isfinite(defined.spearman_least).all()


# ---- a text model fed a dict, attributed at its token embeddings --------------------------------
BUNDLED = pathlib.Path(__file__).resolve().parent.parent / "models" / "torch_text_order_op17.onnx"


@pytest.fixture(scope="module")
def text_order():
    model = onnxattr.load(BUNDLED, wrt="embeddings")
    ref = np.load(BUNDLED.with_suffix(".npz"))
    return model, {"input_ids": ref["input_ids"], "attention_mask": ref["attention_mask"]}, ref["target"]


def test_sanity_checks_take_the_feeds_of_a_text_model(text_order):
    """Randomization and class sensitivity on the bundled transformer's feeds (wrt="embeddings"):
    one row per sequence, maps at the (B, T, H) embeddings, and the trained model's gradient map
    changes when its weights or the class change."""
    model, feeds, target = text_order
    n = len(target)
    r = randomization_test(model, feeds, target, "gradient", keep_maps=True)
    emb = model.at_wrt(model.check_feeds(feeds))[model.input_name]
    assert r.original.shape == emb.shape and r.maps.shape == (len(r.layers), *emb.shape)
    assert r.spearman.shape == (len(r.layers), n) and np.abs(r.spearman[-1]).mean() < 0.5
    np.testing.assert_allclose(r.original, onnxattr.attribute(model, feeds, target, "gradient"))
    c = class_sensitivity(model, feeds, "gradient")
    assert c.predicted.shape == (n,) and np.nanmean(c.spearman_least) < 0.9


def test_audit_of_a_text_model_runs_the_sanity_checks(text_order):
    """The audit of a model fed feeds (text, wrt=) runs both sanity checks and gates on them."""
    report = onnxattr.audit(BUNDLED, BUNDLED.with_suffix(".npz"), wrt="embeddings", methods=["gradient"],
                            gates=["randomization", "class_sensitivity"], progress=False, sample=4,
                            analyses=("randomization", "class_sensitivity"))
    g = report.methods["gradient"]
    assert set(g.checks) == {"randomization", "class_sensitivity"}
    assert g.randomization.spearman.shape[1] == 4 and g.class_sensitivity.predicted.shape == (4,)
    assert [o.gate for o in report.gates] == ["randomization", "class_sensitivity"]


def test_class_sensitivity_refuses_a_language_model_output():
    """A (batch, position, class) output has classes per position: refused, naming the output."""
    import textmodels

    model = onnxattr.load(textmodels.text_model(lm=True), wrt="embeddings")
    with pytest.raises(InputError, match=r"class_sensitivity .* has shape \(batch, position, class\)"):
        class_sensitivity(model, textmodels.batch(2), "gradient")
