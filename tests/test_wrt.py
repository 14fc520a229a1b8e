"""Token-id models: feeds held fixed, attribution at wrt='embeddings' (or any tensor), targets on
(B, T, V) outputs. References: onnxruntime's forward of the model cut at the embedding output,
central differences of it, and the closed forms of each method."""
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto

import onnxattr
from onnxattr import InputError, ModelError, OptionError
from textmodels import C, H, T, V, batch, cut_model, text_model, two_tables, weights
import toy


def ort_run(proto, feeds):
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def embeddings(feeds):
    return weights()["E"].astype(np.float32)[feeds["input_ids"]]


def cut_feeds(emb, feeds):
    return {"emb": emb.astype(np.float32), "attention_mask": feeds["attention_mask"]}


@pytest.mark.parametrize("lm", [False, True])
def test_forward_from_token_ids_matches_onnxruntime(lm):
    proto, feeds = text_model(lm), batch()
    got = onnxattr.load(proto, wrt="embeddings")(feeds)
    np.testing.assert_allclose(got, ort_run(proto, feeds), rtol=1e-5, atol=1e-5)


def test_gradient_at_embeddings_equals_central_differences():
    proto, feeds = text_model(), batch()
    model = onnxattr.load(proto, wrt="embeddings")
    assert model.input_name == "emb" and [i.name for i in model.inputs] == ["input_ids", "attention_mask"]
    t = np.array([0, 2, 1])
    g = onnxattr.attribute(model, feeds, target=t, method="gradient")
    assert g.shape == (3, T, H)
    e = embeddings(feeds).astype(np.float64)
    rng = np.random.default_rng(0)
    cut = cut_model()
    for _ in range(3):
        d = rng.standard_normal(e.shape)
        h = 1e-2
        up = ort_run(cut, cut_feeds(e + h * d, feeds))[np.arange(3), t]
        down = ort_run(cut, cut_feeds(e - h * d, feeds))[np.arange(3), t]
        np.testing.assert_allclose((g * d).sum(axis=(1, 2)), (up - down) / (2 * h), rtol=2e-3, atol=1e-4)


def test_token_scores_sum_the_hidden_axis():
    model = onnxattr.load(text_model(), wrt="embeddings")
    a = onnxattr.attribute(model, batch(), target=1, method="input_x_gradient")
    s = onnxattr.token_scores(a)
    assert s.shape == (3, T)
    np.testing.assert_allclose(s, a.sum(axis=2), rtol=1e-6)
    with pytest.raises(InputError, match=r"\(B, T, H\)"):
        onnxattr.token_scores(a[:, 0])


def test_integrated_gradients_complete_at_embeddings_with_a_baseline_token():
    proto, feeds = text_model(), batch()
    model = onnxattr.load(proto, wrt="embeddings")
    t = np.array([1, 0, 2])
    a = onnxattr.attribute(model, feeds, t, "integrated_gradients", baseline_token=4, steps=300,
                           integration="gausslegendre")
    cut = cut_model()
    base = np.broadcast_to(weights()["E"][4].astype(np.float32), (3, T, H))
    f_x = ort_run(cut, cut_feeds(embeddings(feeds), feeds))[np.arange(3), t]
    f_b = ort_run(cut, cut_feeds(base, feeds))[np.arange(3), t]
    np.testing.assert_allclose(a.sum(axis=(1, 2)), f_x - f_b, rtol=1e-3, atol=1e-4)
    zero = onnxattr.attribute(model, feeds, t, "integrated_gradients", steps=300, integration="gausslegendre")
    f_0 = ort_run(cut, cut_feeds(np.zeros_like(base), feeds))[np.arange(3), t]
    np.testing.assert_allclose(zero.sum(axis=(1, 2)), f_x - f_0, rtol=1e-3, atol=1e-4)


def test_baseline_token_is_checked():
    model = onnxattr.load(text_model(), wrt="embeddings")
    with pytest.raises(OptionError, match=rf"token id in \[0, {V}\)"):
        onnxattr.attribute(model, batch(), 0, "integrated_gradients", baseline_token=V)
    with pytest.raises(OptionError, match="not both"):
        onnxattr.attribute(model, batch(), 0, "integrated_gradients", baseline_token=1, baseline=0.5)
    vision = onnxattr.load(toy.linear(4, 2))
    with pytest.raises(OptionError, match="baseline_token needs"):
        onnxattr.attribute(vision, np.ones((1, 4), np.float32), 0, "integrated_gradients", baseline_token=1)


def test_occlusion_window_runs_over_tokens():
    proto, feeds = text_model(), batch()
    model = onnxattr.load(proto, wrt="embeddings")
    t = np.array([2, 2, 0])
    a = onnxattr.attribute(model, feeds, t, "occlusion", window=1)
    cut, e = cut_model(), embeddings(feeds)
    f = ort_run(cut, cut_feeds(e, feeds))[np.arange(3), t]
    for pos in (0, 3):
        occluded = e.copy()
        occluded[:, pos] = 0
        drop = f - ort_run(cut, cut_feeds(occluded, feeds))[np.arange(3), t]
        np.testing.assert_allclose(a[:, pos], np.broadcast_to(drop[:, None], (3, H)), rtol=1e-4, atol=1e-5)


def test_occlusion_with_a_baseline_token_puts_its_embedding_in_the_patch():
    proto, feeds = text_model(), batch()
    model = onnxattr.load(proto, wrt="embeddings")
    a = onnxattr.attribute(model, feeds, 1, "occlusion", window=2, baseline_token=7)
    cut, e = cut_model(), embeddings(feeds)
    f = ort_run(cut, cut_feeds(e, feeds))[:, 1]
    occluded = e.copy()
    occluded[:, 2:4] = weights()["E"][7]
    drop = f - ort_run(cut, cut_feeds(occluded, feeds))[:, 1]
    np.testing.assert_allclose(a[:, 3, 0], drop, rtol=1e-4, atol=1e-5)


def test_smoothgrad_noise_follows_the_embedding_range_and_the_sample():
    model = onnxattr.load(text_model(), wrt="embeddings")
    feeds = batch()
    whole = onnxattr.attribute(model, feeds, 0, "smoothgrad", samples=5, seed=3, batch_size=4)
    for i in range(3):
        alone = {k: v[i : i + 1] for k, v in feeds.items()}
        one = onnxattr.attribute(model, alone, 0, "smoothgrad", samples=5, seed=3, indices=[i], batch_size=2)
        np.testing.assert_allclose(one[0], whole[i], rtol=1e-5, atol=1e-6)
    tiny = onnxattr.attribute(model, feeds, 0, "smoothgrad", samples=2, noise_level=1e-6)
    np.testing.assert_allclose(tiny, onnxattr.attribute(model, feeds, 0, "gradient"), rtol=1e-3, atol=1e-5)
    with pytest.raises(OptionError, match="distinct non-negative"):
        onnxattr.attribute(model, feeds, 0, "smoothgrad", samples=2, indices=[0, 0, 1])


EXTRA = {"lrp.epsilon_gamma_box": {"low": -3.0, "high": 3.0}, "smoothgrad": {"samples": 3},
         "integrated_gradients": {"steps": 4}}


@pytest.mark.parametrize("method", sorted(set(onnxattr.methods()) - {"lrp"}))
def test_every_method_runs_at_embeddings(method):
    model = onnxattr.load(text_model(), wrt="embeddings")
    a = onnxattr.attribute(model, batch(), 1, method, **EXTRA.get(method, {}))
    assert a.shape == (3, T, H) and np.isfinite(a).all() and np.abs(a).sum() > 0


def test_trace_at_embeddings_follows_the_feeds():
    model = onnxattr.load(text_model(), wrt="embeddings")
    assert "from inputs ['input_ids', 'attention_mask']" in repr(model)
    tr = onnxattr.trace(model, batch(), [0, 1, 2], "lrp.epsilon")
    np.testing.assert_allclose(tr.attribution, onnxattr.attribute(model, batch(), [0, 1, 2], "lrp.epsilon"), rtol=1e-6)
    assert {t.node for t in tr.layers} <= {n.name for n in model.graph.nodes}
    assert not any(t.op_type == "Cast" for t in tr.layers)  # the mask's path is held fixed


def test_first_is_the_first_layer_after_wrt():
    model = onnxattr.load(text_model(), wrt="embeddings")
    from onnxattr.composites import epsilon_plus_flat
    rules = epsilon_plus_flat().assign(model.graph)
    first = [name for name, rule in rules.items() if type(rule).__name__ == "Flat"]
    assert first == [model.graph.producer["q"].name]


# ---- inputs and loading ---------------------------------------------------------------
def test_integer_only_model_needs_wrt():
    with pytest.raises(ModelError, match="wrt='embeddings'"):
        onnxattr.load(text_model())


def test_embeddings_found_through_cast_of_int32_ids():
    proto = text_model(ids_elem=TensorProto.INT32)
    feeds = batch()
    feeds["input_ids"] = feeds["input_ids"].astype(np.int32)
    model = onnxattr.load(proto, wrt="embeddings")
    assert model.input_name == "emb"
    np.testing.assert_allclose(model(feeds), ort_run(proto, feeds), rtol=1e-5, atol=1e-5)


def test_largest_table_wins_and_a_tie_is_listed():
    model = onnxattr.load(two_tables(same_size=False), wrt="embeddings")
    assert model.input_name == "we"
    with pytest.raises(ModelError, match="'we'.*'te'|'te'.*'we'"):
        onnxattr.load(two_tables(same_size=True), wrt="embeddings")


def test_wrt_and_input_name_must_agree():
    with pytest.raises(ModelError, match="disagree"):
        onnxattr.load(text_model(), wrt="embeddings", input_name="input_ids")
    with pytest.raises(ModelError, match="no tensor named 'nope'"):
        onnxattr.load(text_model(), wrt="nope")
    with pytest.raises(ModelError, match="is int64"):
        onnxattr.load(text_model(), wrt="input_ids")


@pytest.mark.parametrize("bad, match", [
    ({"input_ids": np.zeros((3, T), np.int64)}, r"missing \['attention_mask'\]"),
    ({**batch(), "extra": np.zeros(3)}, r"unknown \['extra'\]"),
    ({**batch(), "attention_mask": np.ones((2, T), np.int64)}, "batch sizes differ"),
    ({**batch(), "input_ids": np.zeros((3, T), np.float32)}, r"x\['input_ids'\] must hold integers"),
    ({**batch(), "input_ids": np.full((3, T), V, np.int64)}, "outside the embedding table"),
    ({**batch(), "attention_mask": np.ones((3, T + 1), np.int64)}, "dimension 1 is 7, not 6"),
    (batch()["input_ids"], "pass x as a dict"),
])
def test_feeds_are_checked_per_input(bad, match):
    model = onnxattr.load(text_model(), wrt="embeddings")
    with pytest.raises(InputError, match=match):
        onnxattr.attribute(model, bad, 0)


def test_masked_array_with_nan_under_the_mask_is_refused():
    model = onnxattr.load(toy.linear(4, 2))
    x = np.ma.array(np.array([[1, np.nan, 2, 3]], np.float32), mask=[[0, 1, 0, 0]])
    with pytest.raises(InputError, match="masked array"):
        model(x)
    with pytest.raises(OptionError, match="baseline"):
        onnxattr.attribute(model, np.ones((1, 4), np.float32), 0, "integrated_gradients", baseline=x[0])


def test_float_inputs_beside_the_attributed_one_are_held_fixed():
    from onnx import helper
    nodes = [helper.make_node("Mul", ["a", "b"], ["y"])]
    g = helper.make_graph(nodes, "two", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 3]) for n in "ab"],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])])
    model = onnxattr.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), input_name="a")
    a, b = np.ones((2, 3), np.float32), np.arange(6, dtype=np.float32).reshape(2, 3)
    got = onnxattr.attribute(model, {"a": a, "b": b}, target=[1, 2], method="gradient")
    want = np.zeros((2, 3), np.float32)
    want[0, 1], want[1, 2] = b[0, 1], b[1, 2]
    np.testing.assert_array_equal(got, want)


def test_wrt_serves_a_layer_of_a_vision_model():
    """d f_t / d a0 at the first ReLU's output of an MLP, against the input gradient pulled back:
    dx = (da0 * [h0 > 0]) W0^T."""
    proto = toy.relu_mlp([5, 7, 3])
    x = np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32)
    at_a0 = onnxattr.attribute(onnxattr.load(proto, wrt="a0"), x, 2, "gradient")
    assert at_a0.shape == (4, 7)
    from onnx import numpy_helper
    w0 = numpy_helper.to_array(next(i for i in proto.graph.initializer if i.name == "w0"))
    b0 = numpy_helper.to_array(next(i for i in proto.graph.initializer if i.name == "b0"))
    dx = (at_a0 * (x @ w0 + b0 > 0)) @ w0.T
    np.testing.assert_allclose(dx, onnxattr.attribute(onnxattr.load(proto), x, 2, "gradient"), rtol=1e-5, atol=1e-6)


# ---- targets of (B, T, V) outputs ----------------------------------------------------------
def test_lm_target_none_is_the_argmax_at_the_last_unmasked_position():
    proto, feeds = text_model(lm=True), batch()
    model = onnxattr.load(proto, wrt="embeddings")
    logits = model(feeds)
    last = np.array([T - 1, T - 2, T - 3])
    pairs = np.stack([last, logits[np.arange(3), last].argmax(axis=1)], axis=1)
    np.testing.assert_array_equal(onnxattr.attribute(model, feeds, None, "gradient"),
                                  onnxattr.attribute(model, feeds, pairs, "gradient"))
    listed = [tuple(p) for p in pairs.tolist()]
    np.testing.assert_array_equal(onnxattr.attribute(model, feeds, listed, "gradient"),
                                  onnxattr.attribute(model, feeds, pairs, "gradient"))


def test_lm_gradient_at_a_position_equals_central_differences():
    proto, feeds = text_model(lm=True), batch()
    model = onnxattr.load(proto, wrt="embeddings")
    pairs = np.array([[2, 5], [0, 1], [3, 10]])
    g = onnxattr.attribute(model, feeds, pairs, "gradient")
    e, cut = embeddings(feeds).astype(np.float64), cut_model(lm=True)
    d = np.random.default_rng(2).standard_normal(e.shape)
    pick = (np.arange(3), pairs[:, 0], pairs[:, 1])
    up = ort_run(cut, cut_feeds(e + 1e-2 * d, feeds))[pick]
    down = ort_run(cut, cut_feeds(e - 1e-2 * d, feeds))[pick]
    np.testing.assert_allclose((g * d).sum(axis=(1, 2)), (up - down) / 2e-2, rtol=2e-3, atol=1e-4)


@pytest.mark.parametrize("bad, match", [
    ((2, 5), "bare pair"),
    (3, "pairs"),
    ([1, 2, 3], "pairs"),
    (np.array([[0, 1], [0, 1]]), r"shape \(2, 2\)"),
    (np.array([[0, 1], [0, V], [1, 1]]), "class"),
    (np.array([[T, 1], [0, 1], [1, 1]]), "position"),
    (1.0, "float"),
    ([[0.0, 1.0]] * 3, "ints"),
])
def test_lm_targets_are_checked(bad, match):
    model = onnxattr.load(text_model(lm=True), wrt="embeddings")
    with pytest.raises(InputError, match=match):
        onnxattr.attribute(model, batch(), bad, "gradient")


def test_float_target_is_refused_for_classifiers_too():
    model = onnxattr.load(toy.linear(4, 3))
    x = np.ones((2, 4), np.float32)
    for bad in (1.0, np.float32(1), [1.0, 2.0], True):
        with pytest.raises(InputError, match="target"):
            onnxattr.attribute(model, x, bad)
    with pytest.raises(InputError, match=r"\(B, T, V\)"):
        onnxattr.attribute(model, x, [[0, 1], [0, 2]])


def test_methods_document_the_targets():
    entry = onnxattr.methods()["gradient"]
    assert "(position, index)" in entry["target"] and "bare pair" in entry["target"]


def test_boolean_inputs_are_held_fixed():
    from onnx import helper, numpy_helper
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    g = helper.make_graph(
        [helper.make_node("Where", ["keep", "x", "zero"], ["xm"]), helper.make_node("Gemm", ["xm", "w"], ["y"])], "bool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4]), helper.make_tensor_value_info("keep", TensorProto.BOOL, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.zeros(1, np.float32), "zero")])
    model = onnxattr.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    x, keep = np.ones((2, 4), np.float32), np.array([[1, 0, 1, 1], [0, 0, 1, 0]], bool)
    got = onnxattr.attribute(model, {"x": x, "keep": keep}, target=2, method="gradient")
    np.testing.assert_array_equal(got, keep * w[:, 2])
    with pytest.raises(InputError, match=r"x\['keep'\] must be bool"):
        onnxattr.attribute(model, {"x": x, "keep": keep.astype(np.int64)}, target=2)


def test_declared_inputs_the_graph_does_not_read_may_be_given_or_left_out():
    from onnx import helper
    g = helper.make_graph([helper.make_node("Mul", ["a", "a"], ["y"])], "unused",
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 3]) for n in "ab"],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])])
    model = onnxattr.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), input_name="a")
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    want = onnxattr.attribute(model, a, target=1)
    np.testing.assert_array_equal(want[:, 1], 2 * a[:, 1])
    np.testing.assert_array_equal(onnxattr.attribute(model, {"a": a, "b": a}, target=1), want)
    with pytest.raises(InputError, match=r"x\['b'\] must be float32"):
        onnxattr.attribute(model, {"a": a, "b": a.astype(np.float64)}, target=1)
