"""Modified-backprop methods and LRP composites: the Captum and Zennit oracles, the identities of
the literature, and runs on real architectures."""
import numpy as np
import pytest

import onnxattr
from onnxattr.composites import Composite, First, Kind, Name, OpType
from onnxattr.errors import OptionError
from onnxattr.rules import Epsilon, Flat, ZPlus
from oracles import MODELS, oracle, rel_l2
from toy import deepexplain_toy, linear, relu_mlp
from zoo import light_model, randomized
from kernel_paths import kernels  # noqa: F401  (the fixture)

pytestmark = pytest.mark.usefixtures("kernels")

CAPTUM = ["guided_backprop", "deconvnet", "deeplift"]
ZENNIT = ["lrp.epsilon", "lrp.z_plus", "lrp.gamma", "lrp.alpha1_beta0", "lrp.epsilon_plus_flat",
          "lrp.epsilon_gamma_box", "lrp.epsilon_alpha2_beta1", "lrp.epsilon_alpha2_beta1_flat"]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method", CAPTUM + ZENNIT)
def test_matches_oracle(name, method):
    path, ref = oracle(name)
    model = onnxattr.load(path)
    opts = {"low": ref["low"], "high": ref["high"]} if method == "lrp.epsilon_gamma_box" else {}
    a = onnxattr.attribute(model, ref["input"], ref["target"], method, **opts)
    assert rel_l2(a, ref[method]).max() < 1e-3


def test_deepexplain_toy():
    """f = ReLU(ReLU(x1 - 1) - ReLU(x2)) at x = (3, 1): eps-LRP [3, -1], DeepLIFT [2, -1]."""
    model = onnxattr.load(deepexplain_toy())
    x = np.array([[3.0, 1.0]], dtype=np.float32)
    np.testing.assert_allclose(onnxattr.attribute(model, x, 0, "lrp.epsilon"), [[3.0, -1.0]], rtol=1e-5)
    np.testing.assert_allclose(onnxattr.attribute(model, x, 0, "deeplift"), [[2.0, -1.0]], rtol=1e-5)


def test_epsilon_to_zero_is_input_x_gradient():
    model = onnxattr.load(relu_mlp([10, 16, 16, 4], seed=1))
    x = np.random.default_rng(2).standard_normal((5, 10)).astype(np.float32)
    ixg = onnxattr.attribute(model, x, 2, "input_x_gradient")
    lrp = onnxattr.attribute(model, x, 2, "lrp.epsilon", epsilon=1e-9)
    np.testing.assert_allclose(lrp, ixg, rtol=1e-3, atol=1e-5 * np.abs(ixg).max())


def test_deeplift_without_bias_is_input_x_gradient():
    model = onnxattr.load(relu_mlp([10, 16, 16, 4], seed=3, bias=False))
    x = np.random.default_rng(4).standard_normal((5, 10)).astype(np.float32)
    np.testing.assert_allclose(onnxattr.attribute(model, x, 1, "deeplift"),
                               onnxattr.attribute(model, x, 1, "input_x_gradient"), rtol=1e-4, atol=1e-6)


def test_z_plus_conserves_without_bias():
    model = onnxattr.load(relu_mlp([12, 20, 20, 3], seed=5, bias=False))
    x = np.abs(np.random.default_rng(6).standard_normal((4, 12))).astype(np.float32)
    logits = model(x)
    t = np.array([0, 1, 2, 0])
    a = onnxattr.attribute(model, x, t, "lrp.z_plus")
    np.testing.assert_allclose(a.sum(axis=1), logits[np.arange(4), t], rtol=0, atol=1e-5)


def test_linear_model_methods_coincide():
    """On a linear model (baseline 0) IG, DeepLIFT and eps-LRP all equal Gradient*Input. IG needs
    a quadrature whose weights sum to 1; Captum's default trapezoid gives (steps-1)/steps of it."""
    model = onnxattr.load(linear(8, 3, seed=7, bias=False))
    x = np.random.default_rng(8).standard_normal((4, 8)).astype(np.float32)
    ixg = onnxattr.attribute(model, x, 1, "input_x_gradient")
    runs = {
        "integrated_gradients": onnxattr.attribute(model, x, 1, "integrated_gradients", integration="trapezoid"),
        "deeplift": onnxattr.attribute(model, x, 1, "deeplift"),
        "lrp.epsilon": onnxattr.attribute(model, x, 1, "lrp.epsilon"),
    }
    for method, a in runs.items():
        np.testing.assert_allclose(a, ixg, rtol=1e-4, atol=1e-6, err_msg=method)
    captum_default = onnxattr.attribute(model, x, 1, "integrated_gradients")
    np.testing.assert_allclose(captum_default, ixg * 31 / 32, rtol=1e-4, atol=1e-6)


def test_custom_composite_by_name_type_and_position():
    path, ref = oracle("cnn_bn")
    model = onnxattr.load(path)
    eps_flat = onnxattr.attribute(model, ref["input"], ref["target"], "lrp.epsilon_plus_flat")
    same = Composite([(First(), Flat()), (OpType("Conv"), ZPlus()), (OpType("Gemm"), Epsilon())], lrp=True)
    np.testing.assert_allclose(onnxattr.attribute(model, ref["input"], ref["target"], "lrp", composite=same),
                               eps_flat, rtol=1e-6)
    first_conv = next(n.name for n in model.graph.nodes if n.op_type == "Conv")
    by_name = Composite([(Name(first_conv), Flat()), (Kind("linear"), ZPlus())], lrp=True)
    table = dict((n, r) for n, _, r in by_name.describe(model.graph))
    assert table[first_conv] == "Flat(epsilon=1e-06)"
    assert "Gradient" not in repr(by_name) and "Flat" in repr(by_name)
    with pytest.raises(OptionError, match="composite="):
        onnxattr.attribute(model, ref["input"], method="lrp")
    with pytest.raises(OptionError, match="low= and high="):
        onnxattr.attribute(model, ref["input"], method="lrp.epsilon_gamma_box")
    with pytest.raises(TypeError, match="Selector to a Rule"):
        Composite([("Conv", ZPlus())])


@pytest.mark.parametrize("q", [0.0, 50.0, 98.0])
def test_rectgrad_equals_plain_numpy_reference(q):
    """RectGrad on a ReLU MLP written out with the weights: at each ReLU (output a, incoming g)
    keep g where a*g > the q-th 'nearest' percentile of a*g per sample; the map is x * g_in."""
    from onnx import numpy_helper

    proto = relu_mlp([20, 64, 64, 3], seed=11)
    w = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in proto.graph.initializer}
    model = onnxattr.load(proto)
    x = np.random.default_rng(12).standard_normal((4, 20)).astype(np.float32)
    got = onnxattr.attribute(model, x, 2, "rectgrad", q=q)

    h0 = x @ w["w0"] + w["b0"]
    a0 = np.maximum(h0, 0)
    a1 = np.maximum(a0 @ w["w1"] + w["b1"], 0)
    g = np.zeros((4, 3))
    g[:, 2] = 1
    g = g @ w["w2"].T
    for a, weight in [(a1, w["w1"]), (a0, w["w0"])]:
        s = a * g
        tau = np.percentile(s, q, axis=1, method="nearest", keepdims=True)
        g = (g * (s > tau)) @ weight.T
    np.testing.assert_allclose(got, x * g, rtol=1e-4, atol=1e-6)
    if q == 98.0:
        assert np.count_nonzero(got) > 0


LIGHT_FOR_RULES = ["resnet50", "densenet121", "inception_v1", "squeezenet", "shufflenet"]


def every_rule() -> Composite:
    """One composite that puts every LRP rule to work on one network: ZBox on the first
    convolution, the other convolutions cycling through the rest, Epsilon on dense layers."""
    from onnxattr.composites import CONV, DENSE
    from onnxattr.rules import AlphaBeta, Gamma, WSquare, Z, ZBox

    cycle = [Epsilon(0.1), ZPlus(), Gamma(0.25), AlphaBeta(2, 1), AlphaBeta(1, 0), Flat(), WSquare(), Z()]

    class Cycling(OpType):
        def bind(self, graph):
            convs = [n.name for n in graph.nodes if self.matches(n)]
            return lambda node, k=len(cycle): node.name in convs and convs.index(node.name) % k == self.k

    pairs = [(First(CONV), ZBox(0.0, 1.0))]
    for k, rule in enumerate(cycle):
        sel = Cycling("Conv")
        sel.k = k
        pairs.append((sel, rule))
    return Composite(pairs + [(DENSE, Epsilon())], lrp=True, name="every_rule")


@pytest.mark.slow
@pytest.mark.parametrize("name", LIGHT_FOR_RULES)
def test_rules_run_on_real_architectures(name):
    """Every rule (LRP through one composite, and the modified gradients) runs on the model-zoo
    graphs with random weights and gives a finite, non-zero map."""
    model = onnxattr.load(randomized(light_model(name), seed=3))
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, 224, 224)).astype(np.float32)
    composite = every_rule()
    used = {r for _, _, r in composite.describe(model.graph)}
    assert {"ZPlus(epsilon=1e-06)", "Z()", "Pass()", "Norm(epsilon=1e-06)"} <= used
    for method, opts in [("lrp", {"composite": composite}), ("guided_backprop", {}), ("deconvnet", {}),
                         ("rectgrad", {})]:
        a = onnxattr.attribute(model, x, 0, method, **opts)
        assert np.isfinite(a).all(), method
        assert np.abs(a).sum() > 0, method


def test_trace_reports_conservation_per_layer():
    path, ref = oracle("resnet_small")
    model = onnxattr.load(path)
    tr = onnxattr.trace(model, ref["input"][:2], ref["target"][:2], "lrp.epsilon")
    a = onnxattr.attribute(model, ref["input"][:2], ref["target"][:2], "lrp.epsilon")
    # the trace runs the interpreter (it observes every node); attribute may run the compiled
    # sessions, whose float32 sums round differently
    np.testing.assert_allclose(tr.attribution, a, rtol=1e-5, atol=1e-5 * np.abs(a).max())
    conserved = tr.conservation()
    adds = [t for t in tr.layers if t.op_type == "Add"]
    assert adds and all(np.allclose(t.conserved, 1, atol=1e-4) for t in adds)  # Norm is conservative
    relus = [t for t in tr.layers if t.op_type == "Relu"]
    assert all(np.allclose(conserved[t.node], 1) for t in relus)  # Pass
    with pytest.raises(OptionError, match="not a single backward pass"):
        onnxattr.trace(model, ref["input"][:2], method="integrated_gradients")


def unfused_bn_mlp():
    """fc1 -> relu -> bn -> fc2 without biases; the BatchNorm follows a ReLU, so it stays an
    Affine layer (scale only: beta = mean = 0)."""
    from onnx import helper
    from toy import model

    rng = np.random.default_rng(8)
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["h"], name="fc1"), helper.make_node("Relu", ["h"], ["a"], name="relu"),
             helper.make_node("BatchNormalization", ["a", "s", "zero", "zero", "var"], ["n"], name="bn"),
             helper.make_node("Gemm", ["n", "w2"], ["y"], name="fc2")]
    inits = {"w1": rng.standard_normal((6, 8)), "s": rng.uniform(0.2, 3, 8), "zero": np.zeros(8),
             "var": rng.uniform(0.5, 2, 8), "w2": rng.standard_normal((8, 3))}
    return model(nodes, inits, 6, 3)


@pytest.mark.parametrize("method", ["lrp.epsilon", "lrp.epsilon_plus_flat", "lrp.z_plus"])
def test_unfused_batchnorm_passes_relevance(method):
    """Zennit passes relevance through a BatchNorm it cannot merge; so does the Affine layer that
    canonization leaves: it conserves, and so does the bias-free network as a whole."""
    model = onnxattr.load(unfused_bn_mlp())
    assert [n.op_type for n in model.graph.nodes] == ["Gemm", "Relu", "Affine", "Gemm"]
    x = np.random.default_rng(9).standard_normal((4, 6)).astype(np.float32)
    tr = onnxattr.trace(model, x, 1, method)
    np.testing.assert_allclose(tr.conservation()["bn"], 1, rtol=1e-6)
    assert not np.allclose(onnxattr.trace(model, x, 1, "gradient").conservation()["bn"], 1, rtol=1e-2)
    np.testing.assert_allclose(tr.attribution.sum(axis=1), model(x)[:, 1], rtol=1e-4)


def test_trace_of_a_batch_that_runs_in_chunks_has_each_layer_once():
    """A model that fixes its batch size to 2 runs a batch of 6 in three chunks; the trace has
    one entry per node over all 6 samples, equal to the traces of the chunks."""
    proto = relu_mlp([4, 6, 3])
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    model = onnxattr.load(proto)
    x = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    whole = onnxattr.trace(model, x, 1, "lrp.epsilon")
    assert len(whole.layers) == len({t.node for t in whole.layers})
    parts = [onnxattr.trace(model, x[i : i + 2], 1, "lrp.epsilon") for i in (0, 2, 4)]
    for k, layer in enumerate(whole.layers):
        np.testing.assert_allclose(layer.relevance_in, np.concatenate([p.layers[k].relevance_in for p in parts]))
        np.testing.assert_allclose(layer.relevance_out, np.concatenate([p.layers[k].relevance_out for p in parts]))


def test_trace_keeps_the_complete_chunks_of_a_retried_batch():
    from onnxattr.attribution.tracing import LayerTrace, per_layer
    def obs(node, m, v):
        return LayerTrace(node, "Gemm", np.full(m, v), np.full(m, v))
    # a batch of 4 that failed part-way (one node), then a whole attempt that failed after its
    # backward, then two halves that succeeded
    seen = [obs("a", 4, 9), obs("a", 4, 8), obs("b", 4, 8), obs("a", 2, 1), obs("b", 2, 1), obs("a", 2, 2), obs("b", 2, 2)]
    layers = per_layer(seen, 4)
    assert [t.node for t in layers] == ["a", "b"]
    np.testing.assert_array_equal(layers[1].relevance_in, [1, 1, 2, 2])
