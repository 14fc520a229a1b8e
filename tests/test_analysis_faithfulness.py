"""Faithfulness metrics against closed-form answers on toy models."""
from __future__ import annotations

import numpy as np
import pytest
import toy
from onnx import TensorProto, helper, numpy_helper
from oracles import oracle

import onnxattr
from onnxattr.analysis import deletion, insertion, mu_fidelity, sensitivity_n
from onnxattr.analysis.faithfulness import Scorer, default_ns, quantity_for
from onnxattr.errors import InputError, OptionError, UnsupportedOpError


def conv_model(w: np.ndarray, bias=None, softmax=False, relu=False):
    """y = Conv(x, w) with a kernel as large as the input: (N, C, H, W) -> (N, K, 1, 1), optionally
    through ReLU first (a nonlinear model) or Softmax after (so the logits are intermediate)."""
    k, c, h, wd = w.shape
    inits = {"w": w}
    ins = ["x", "w"]
    if bias is not None:
        inits["b"] = bias
        ins.append("b")
    nodes = []
    src = "x"
    if relu:
        inits["shift"] = np.full((1, c, h, wd), -0.5)
        nodes += [helper.make_node("Add", ["x", "shift"], ["s"]), helper.make_node("Relu", ["s"], ["r"])]
        src = "r"
    nodes.append(helper.make_node("Conv", [src] + ins[1:], ["z" if softmax else "y"]))
    if softmax:
        nodes.append(helper.make_node("Softmax", ["z"], ["y"], axis=1))
    g = helper.make_graph(
        nodes, "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, c, h, wd])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, k, 1, 1])],
        [numpy_helper.from_array(np.asarray(v, np.float32), n) for n, v in inits.items()],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def one_pixel_model():
    """Two logits (3 x[0, 0, 3, 5], 0): the model reads one pixel."""
    w = np.zeros((2, 1, 8, 8))
    w[0, 0, 3, 5] = 3.0
    return onnxattr.load(conv_model(w))


RNG = np.random.default_rng(0)


def test_default_ns_are_log_spaced_up_to_80_percent():
    ns = default_ns(1000)
    assert ns[0] == 1 and ns[-1] == 800 and 10 <= len(ns) <= 16
    assert np.all(np.diff(ns) > 0)


def test_sensitivity_n_of_gradient_x_input_on_a_linear_model_is_one():
    m = onnxattr.load(toy.linear(20, 3, seed=1))
    x = RNG.standard_normal((3, 20)).astype(np.float32)
    a = onnxattr.attribute(m, x, target=[0, 1, 2], method="input_x_gradient")
    s = sensitivity_n(m, x, a, target=[0, 1, 2], n_subsets=50)
    assert s.ns[0] == 1 and s.ns[-1] == 16
    assert s.per_input.shape == (len(s.ns), 3)
    np.testing.assert_allclose(s.correlation, 1.0, atol=1e-5)
    np.testing.assert_allclose(s.per_input, 1.0, atol=1e-5)


def test_sensitivity_n_per_pixel_on_a_linear_conv_is_one():
    w = RNG.standard_normal((4, 3, 6, 6))
    m = onnxattr.load(conv_model(w, bias=RNG.standard_normal(4)))
    x = RNG.standard_normal((2, 3, 6, 6)).astype(np.float32)
    a = onnxattr.attribute(m, x, target=1, method="input_x_gradient")
    s = sensitivity_n(m, x, a, target=1, ns=[1, 5, 20], n_subsets=40, features="pixel")
    np.testing.assert_allclose(s.per_input, 1.0, atol=1e-5)


def test_occlusion_1_has_sensitivity_1_equal_to_one_on_a_relu_mlp():
    m = onnxattr.load(toy.relu_mlp([12, 16, 16, 3], seed=2))
    x = RNG.standard_normal((4, 12)).astype(np.float32)
    a = onnxattr.attribute(m, x, method="occlusion", window=1)
    s = sensitivity_n(m, x, a, ns=[1], n_subsets=60)
    np.testing.assert_allclose(s.per_input, 1.0, atol=1e-5)
    # and not for larger n: the model is not linear
    assert sensitivity_n(m, x, a, ns=[6], n_subsets=60).correlation[0] < 0.999


def test_occlusion_1_has_sensitivity_1_equal_to_one_on_cnn_bn():
    path, data = oracle("cnn_bn")
    try:
        m = onnxattr.load(path)
    except UnsupportedOpError as e:  # the oracle needs ops (Flatten) that may not be there yet
        pytest.skip(str(e))
    x = data["input"][:2]
    a = onnxattr.attribute(m, x, target=data["target"][:2], method="occlusion", window=(1, 1, 1))
    s = sensitivity_n(m, x, a, target=data["target"][:2], ns=[1], n_subsets=100)
    np.testing.assert_allclose(s.per_input, 1.0, atol=1e-4)


def sum_model(f: int):
    """f(x) = sum(x) as a Gemm with a column of ones."""
    return onnxattr.load(toy.model([helper.make_node("Gemm", ["x", "w"], ["y"])], {"w": np.ones((f, 1))}, f, 1))


def test_mu_fidelity_of_the_input_on_a_sum_is_one_and_of_minus_input_minus_one():
    m = sum_model(30)
    x = RNG.standard_normal((3, 30)).astype(np.float32)
    np.testing.assert_allclose(mu_fidelity(m, x, x, target=0, n_subsets=64), 1.0, atol=1e-6)
    np.testing.assert_allclose(mu_fidelity(m, x, -x, target=0, subset_size=5), -1.0, atol=1e-6)


def test_the_one_pixel_model_gets_perfect_deletion_and_insertion():
    """Logits (3 x[0, 0, 3, 5], 0): the pixel is all the evidence. The normalised raw value goes
    1 -> 0 (deletion) with the first slice; the probability goes from p(x) to the baseline's 0.5."""
    m = one_pixel_model()
    x = RNG.uniform(0.5, 1.0, (3, 1, 8, 8)).astype(np.float32)
    a = onnxattr.attribute(m, x, target=0, method="gradient")
    p = 1 / (1 + np.exp(-3 * x[:, 0, 3, 5].astype(np.float64)))
    d = deletion(m, x, a, target=0, steps=16, output="logit")
    i = insertion(m, x, a, target=0, steps=16, output="logit")
    assert d.quantity == "logit" and np.all(d.auc == 0.0) and d.mean == 0.0 and not d.higher_is_better
    assert np.all(i.auc == 1.0) and i.mean == 1.0 and i.higher_is_better
    assert d.fractions[0] == 0 and d.fractions[-1] == 1 and len(d.fractions) == 17
    np.testing.assert_array_equal(d.normalized[:, 0], 1.0)
    np.testing.assert_array_equal(i.normalized[:, 0], 0.0)
    assert d.undefined == ["", "", ""]
    # the default: the area under the target's softmax probability, the step rule
    d = deletion(m, x, a, target=0, steps=16)
    i = insertion(m, x, a, target=0, steps=16)
    assert d.quantity == i.quantity == "probability"
    np.testing.assert_allclose(d.auc, 0.5, rtol=1e-12)
    np.testing.assert_allclose(i.auc, p, rtol=1e-6)
    np.testing.assert_array_equal(d.plotted, d.scores)
    # the reversed order is the worst possible: the pixel goes last
    d = deletion(m, x, -a, target=0, steps=16)
    i = insertion(m, x, -a, target=0, steps=16)
    np.testing.assert_allclose(d.auc, 15 / 16 * p + 1 / 16 * 0.5, rtol=1e-6)
    np.testing.assert_allclose(i.auc, 15 / 16 * 0.5 + 1 / 16 * p, rtol=1e-6)
    d = deletion(m, x, -a, target=0, steps=16, output="logit")
    np.testing.assert_allclose(d.auc, 1 - 1 / 16)


def test_deletion_scores_are_the_target_probability():
    m = one_pixel_model()
    x = RNG.uniform(0.5, 1.0, (2, 1, 8, 8)).astype(np.float32)
    a = RNG.standard_normal(x.shape).astype(np.float32)
    d = deletion(m, x, a, target=0, steps=4)
    p = 1 / (1 + np.exp(-3 * x[:, 0, 3, 5].astype(np.float64)))
    np.testing.assert_allclose(d.scores[:, 0], p, rtol=1e-6)
    np.testing.assert_allclose(d.scores[:, -1], 0.5, rtol=1e-6)
    np.testing.assert_allclose(d.raw_auc, ((d.scores[:, 1:] + d.scores[:, :-1]) / 2 * 0.25).sum(axis=1))


def test_onnxruntime_runtime_reads_the_logits_before_a_final_softmax():
    w = RNG.standard_normal((3, 2, 5, 5))
    m = onnxattr.load(conv_model(w, bias=RNG.standard_normal(3), softmax=True, relu=True))
    assert m.output_name == "z"
    x = RNG.uniform(0, 1, (3, 2, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(Scorer(m, "onnxruntime").logits(x), m(x).reshape(3, 3), rtol=1e-5, atol=1e-6)
    a = onnxattr.attribute(m, x, method="input_x_gradient")
    ours = deletion(m, x, a, steps=10)
    ort = deletion(m, x, a, steps=10, runtime="onnxruntime")
    np.testing.assert_allclose(ours.scores, ort.scores, rtol=1e-5, atol=1e-6)
    s1 = sensitivity_n(m, x, a, ns=[3, 10], n_subsets=30, runtime="onnxruntime", batch_size=7)
    s2 = sensitivity_n(m, x, a, ns=[3, 10], n_subsets=30)
    np.testing.assert_allclose(s1.per_input, s2.per_input, atol=1e-5)


def test_a_model_with_a_fixed_batch_size_is_fed_whole_batches():
    proto = toy.model([helper.make_node("Gemm", ["x", "w"], ["y"])], {"w": RNG.standard_normal((6, 2))}, 6, 2,
                      in_shape=[2, 6])
    m = onnxattr.load(proto)
    x = RNG.standard_normal((2, 6)).astype(np.float32)
    a = onnxattr.attribute(m, x, target=0, method="input_x_gradient")
    for runtime in ("onnxattr", "onnxruntime"):
        s = sensitivity_n(m, x, a, target=0, ns=[2], n_subsets=7, batch_size=5, runtime=runtime)
        np.testing.assert_allclose(s.per_input, 1.0, atol=1e-5)


def test_bad_options_and_shapes_are_reported():
    m = onnxattr.load(toy.linear(8, 2))
    x = RNG.standard_normal((2, 8)).astype(np.float32)
    with pytest.raises(InputError, match="attr has shape"):
        sensitivity_n(m, x, x[:, :4])
    with pytest.raises(OptionError, match="runtime"):
        deletion(m, x, x, runtime="tensorrt")
    with pytest.raises(OptionError, match="output"):
        insertion(m, x, x, output="logits")
    with pytest.raises(OptionError, match="features"):
        mu_fidelity(m, x, x, features="patch")
    with pytest.raises(OptionError, match="use output='logit'"):
        deletion(sum_model(8), x, x, output="probability")
    with pytest.raises(OptionError, match="ns must"):
        sensitivity_n(m, x, x, ns=[0, 3])
    with pytest.raises(OptionError, match="ns must"):
        sensitivity_n(m, x, x, ns=[9])
    with pytest.raises(OptionError, match="subset_size"):
        mu_fidelity(m, x, x, subset_size=9)
    with pytest.raises(OptionError, match="steps"):
        deletion(m, x, x, steps=0)
    with pytest.raises(InputError, match="baseline"):
        deletion(m, x, x, baseline=np.zeros(3))
    with pytest.raises(InputError, match="out of range"):
        deletion(m, x, x, target=5)


# ---- scores that mean what they say (issue 13 §1) ---------------------------------------------
def confident_at_baseline(dependent: bool = True):
    """Three logits: bias (8, 0, 0), so the all-zeros baseline is class 0 with p = 0.99966; x
    moves logit 0 by 0.01 x_0 (or not at all)."""
    w = np.zeros((6, 3))
    w[:, 1:] = RNG.standard_normal((6, 2)) * 0.01
    w[0, 0] = 0.01 if dependent else 0.0
    return onnxattr.load(toy.model([helper.make_node("Gemm", ["x", "w", "b"], ["y"])],
                                   {"w": w, "b": [8.0, 0.0, 0.0]}, 6, 3))


def test_a_baseline_classified_as_the_target_keeps_the_auc_bounded():
    """s(x) - s(baseline) is about 1e-5 here: normalising by it gave AUCs of -992 (issue 13). The
    default score is the area under the probability itself, in [0, 1]."""
    m = confident_at_baseline()
    x = RNG.standard_normal((4, 6)).astype(np.float32)
    a = RNG.standard_normal(x.shape).astype(np.float32)
    for fn in (deletion, insertion):
        c = fn(m, x, a, target=0, steps=8)
        assert c.quantity == "probability" and c.undefined == [""] * 4
        assert np.all((c.auc >= 0.99) & (c.auc <= 1.0))
        assert np.all((c.plotted >= 0) & (c.plotted <= 1))
    # the raw logit does not depend on x at all: the normalised curve is undefined, and says why
    m = confident_at_baseline(dependent=False)
    c = deletion(m, x, a, target=0, steps=8, output="logit")
    assert np.isnan(c.auc).all() and np.isnan(c.normalized).all()
    assert all("cannot be normalised" in u for u in c.undefined)
    assert deletion(m, x, a, target=0, steps=8).undefined == [""] * 4  # the probability is defined


@pytest.mark.parametrize("noise", [0.0, 1e-12])
def test_a_constant_map_has_undefined_scores(noise):
    """A constant map ranks no feature above another and its subset sums are all n c: every
    score that orders or correlates by it is NaN with a reason, also when rounding noise makes the
    values differ in the last digits."""
    m = onnxattr.load(toy.relu_mlp([12, 16, 3], seed=4))
    x = RNG.standard_normal((3, 12)).astype(np.float32)
    a = 0.7 + noise * RNG.standard_normal(x.shape)
    s = sensitivity_n(m, x, a, ns=[2, 5], n_subsets=20)
    assert np.isnan(s.per_input).all() and all("constant map" in u for u in s.undefined)
    assert np.isnan(mu_fidelity(m, x, a, subset_size=4, n_subsets=20)).all()
    for fn in (deletion, insertion):
        c = fn(m, x, a, steps=4)
        assert np.isnan(c.auc).all() and all("constant" in u for u in c.undefined)


def test_an_output_that_does_not_move_has_undefined_correlations():
    """The target logit does not depend on x: the output drops are all 0 (up to rounding)."""
    m = confident_at_baseline(dependent=False)
    x = RNG.standard_normal((2, 6)).astype(np.float32)
    s = sensitivity_n(m, x, RNG.standard_normal(x.shape), target=0, ns=[2], n_subsets=16)
    assert np.isnan(s.per_input).all() and all("does not change" in u for u in s.undefined)


def test_the_quantity_follows_the_output():
    """Softmax over the classes; the sigmoid of a one-output model; the raw value of an
    intermediate tensor (normalised by the curve's two ends)."""
    x = RNG.standard_normal((2, 8)).astype(np.float32)
    one = sum_model(8)
    c = deletion(one, x, x, target=0, steps=4)
    assert c.quantity == "sigmoid"
    np.testing.assert_allclose(c.scores[:, 0], 1 / (1 + np.exp(-x.sum(axis=1, dtype=np.float64))), rtol=1e-5)
    hidden = onnxattr.load(toy.relu_mlp([8, 5, 3], seed=1), output_name="a0")
    assert quantity_for(hidden) == "logit" and quantity_for(hidden, "probability") == "probability"
    assert quantity_for(onnxattr.load(toy.linear(8, 3))) == "probability"
    with pytest.raises(OptionError, match="unknown output"):
        quantity_for(one, "softmax")


# ---- text: perturbations at the wrt tensor (issue 12 item 6) ---------------------------------
def _ort(proto, feeds):
    import onnxruntime as ort

    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0].astype(np.float64)


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("runtime", ["onnxattr", "onnxruntime"])
def test_text_deletion_with_a_baseline_token_equals_replacing_the_ids(runtime):
    """At wrt='embeddings' replacing a token's embedding by E[t] is replacing its id by t (the
    position table is added after the lookup): every point of the curve equals onnxruntime's
    probability on the original model with the k most relevant ids set to t."""
    import textmodels as tm

    proto = tm.text_model()
    m = onnxattr.load(proto, wrt="embeddings")
    feeds = tm.batch(3)
    a = onnxattr.attribute(m, feeds, method="gradient")
    c = deletion(m, feeds, a, steps=tm.T, features="token", baseline_token=4, runtime=runtime)
    ins = insertion(m, feeds, a, steps=tm.T, features="token", baseline_token=4, runtime=runtime)
    target = _ort(proto, feeds).argmax(axis=1)
    relevance = onnxattr.token_scores(a)
    for i in range(3):
        order = np.argsort(-relevance[i], kind="stable")
        for k in range(tm.T + 1):
            removed = {"input_ids": feeds["input_ids"][i : i + 1].copy(), "attention_mask": feeds["attention_mask"][i : i + 1]}
            removed["input_ids"][0, order[:k]] = 4
            kept = {"input_ids": np.full_like(removed["input_ids"], 4), "attention_mask": removed["attention_mask"]}
            kept["input_ids"][0, order[:k]] = feeds["input_ids"][i, order[:k]]
            np.testing.assert_allclose(c.scores[i, k], _softmax(_ort(proto, removed))[0, target[i]], rtol=1e-5)
            np.testing.assert_allclose(ins.scores[i, k], _softmax(_ort(proto, kept))[0, target[i]], rtol=1e-5)
    assert c.quantity == "probability" and c.undefined == [""] * 3


def test_text_deletion_with_zeros_equals_the_cut_model_and_onnxruntime_runs_the_graph_with_wrt_as_input():
    """The zeros baseline: the all-removed point is the model cut at the embedding output fed
    zeros; the session behind runtime='onnxruntime' takes the embedding beside the token ids."""
    import textmodels as tm

    from onnxattr.analysis.faithfulness import Scorer, wrt_as_input

    m = onnxattr.load(tm.text_model(), wrt="embeddings")
    feeds = tm.batch(3)
    a = onnxattr.attribute(m, feeds, method="input_x_gradient")
    c = deletion(m, feeds, a, steps=3, features="token", runtime="onnxruntime")
    zeros = {"emb": np.zeros((3, tm.T, tm.H), np.float32), "attention_mask": feeds["attention_mask"]}
    t = _ort(tm.text_model(), feeds).argmax(axis=1)
    np.testing.assert_allclose(c.scores[:, -1], _softmax(_ort(tm.cut_model(), zeros))[np.arange(3), t], rtol=1e-5)
    emb = np.random.default_rng(5).standard_normal((3, tm.T, tm.H)).astype(np.float32)
    copy = wrt_as_input(m.proto, m.input_name, TensorProto.FLOAT, (None, tm.T, tm.H))
    assert {i.name for i in copy.graph.input} >= {"input_ids", "attention_mask", m.input_name}
    np.testing.assert_allclose(_ort(copy, {**feeds, m.input_name: emb}),
                               _ort(tm.cut_model(), {"emb": emb, "attention_mask": feeds["attention_mask"]}), rtol=1e-5)
    ours = Scorer(m, "onnxattr").logits(emb, feeds)
    np.testing.assert_allclose(Scorer(m, "onnxruntime").logits(emb, feeds), ours, rtol=1e-5, atol=1e-6)


def test_text_lm_targets_follow_the_raw_value_normalised_and_coinciding_ends_are_undefined():
    """(position, index) targets on a (B, T, V) output: the raw logit there, normalised by the
    curve's ends; where every id already is the baseline token, the ends coincide: NaN, with
    the reason."""
    import textmodels as tm

    proto = tm.text_model(lm=True)
    m = onnxattr.load(proto, wrt="embeddings")
    feeds = tm.batch(3)
    pairs = np.array([[5, 1], [3, 2], [2, 0]])
    a = onnxattr.attribute(m, feeds, target=pairs, method="gradient")
    for runtime in ("onnxattr", "onnxruntime"):
        c = deletion(m, feeds, a, target=pairs, steps=3, features="token", baseline_token=7, runtime=runtime)
        assert c.quantity == "logit" and c.undefined == [""] * 3
        np.testing.assert_allclose(c.scores[:, 0], _ort(proto, feeds)[np.arange(3), pairs[:, 0], pairs[:, 1]], rtol=1e-5)
        np.testing.assert_allclose(c.normalized[:, 0], 1.0, rtol=1e-6)
        np.testing.assert_allclose(c.normalized[:, -1], 0.0, atol=1e-6)
    same = {"input_ids": np.full_like(feeds["input_ids"], 7), "attention_mask": feeds["attention_mask"]}
    a = onnxattr.attribute(m, same, target=pairs, method="gradient")
    c = deletion(m, same, a, target=pairs, steps=3, features="token", baseline_token=7)
    assert np.isnan(c.auc).all() and all("cannot be normalised" in u for u in c.undefined)


def test_token_features_sum_each_tokens_embedding_and_sensitivity_n_runs_at_wrt():
    import textmodels as tm

    from onnxattr.analysis.faithfulness import features_of

    m = onnxattr.load(tm.text_model(), wrt="embeddings")
    feeds = tm.batch(2)
    a = onnxattr.attribute(m, feeds, method="input_x_gradient")
    f = features_of(a, a, "token")
    np.testing.assert_allclose(f.relevance, onnxattr.token_scores(a), rtol=1e-6)
    assert f.expand(np.eye(tm.T, dtype=bool)[:2]).shape == a.shape
    s = sensitivity_n(m, feeds, a, ns=[1, 3], n_subsets=8, features="token", runtime="onnxruntime")
    assert s.per_input.shape == (2, 2) and np.isfinite(s.per_input).all()
    with pytest.raises(OptionError, match="baseline or baseline_token"):
        deletion(m, feeds, a, baseline=1.0, baseline_token=3)
    with pytest.raises(OptionError, match="token id"):
        deletion(m, feeds, a, baseline_token=tm.V + 3)
    with pytest.raises(InputError, match="attributed tensor"):
        deletion(m, feeds, a[:, :2])
