"""Composites: how selectors bind to a graph, the first match winning, the LRP base map, the
check of a rule against the kind of layer it is put on, and the printed forms."""
import pathlib

import numpy as np
import pytest
from onnx import helper

import onnxattr
from onnxattr.composites import ACTIVATIONS, Composite, First, Kind, Last, Name, OpType, Product, epsilon_plus_flat
from onnxattr.errors import OptionError
from onnxattr.graph import build
from onnxattr.canonize import canonize
from onnxattr.rules import Epsilon, Flat, Norm, Pass, ZPlus
from toy import model

DATA = pathlib.Path(__file__).parent / "data"


def residual_bn():
    """fc1 -> relu -> bn (not fusable after a ReLU: an Affine) -> add(bn, relu) -> fc2."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["a"], name="relu"),
        helper.make_node("BatchNormalization", ["a", "s", "beta", "mean", "var"], ["n"], name="bn"),
        helper.make_node("Add", ["n", "a"], ["c"], name="add"),
        helper.make_node("Gemm", ["c", "w2", "b2"], ["y"], name="fc2"),
    ]
    inits = {"w1": rng.standard_normal((4, 6)), "b1": rng.standard_normal(6), "s": rng.uniform(0.5, 2, 6),
             "beta": rng.standard_normal(6), "mean": rng.standard_normal(6), "var": rng.uniform(0.5, 2, 6),
             "w2": rng.standard_normal((6, 3)), "b2": rng.standard_normal(3)}
    return model(nodes, inits, 4, 3)


@pytest.fixture(scope="module")
def graph():
    g = canonize(build(residual_bn()))
    assert [(n.name, n.op_type) for n in g.nodes] == [
        ("fc1", "Gemm"), ("relu", "Relu"), ("bn", "Affine"), ("add", "Add"), ("fc2", "Gemm")]
    return g


def picked(selector, graph):
    pred = selector.bind(graph)
    return [n.name for n in graph.nodes if pred(n)]


def test_selectors_bind(graph):
    assert picked(OpType("Gemm"), graph) == ["fc1", "fc2"]
    assert picked(Kind("linear"), graph) == ["fc1", "bn", "fc2"]
    assert picked(Name(r"fc\d"), graph) == ["fc1", "fc2"]
    assert picked(Name("fc"), graph) == []  # a full match, not a search
    assert picked(First(), graph) == ["fc1"]
    assert picked(Last(), graph) == ["fc2"]
    assert picked(First(OpType("Affine")), graph) == ["bn"]
    assert picked(Last(Kind("activation")), graph) == ["relu"]
    assert picked(First(OpType("Conv")), graph) == []


def test_first_match_wins(graph):
    table = Composite([(Name("fc2"), Flat()), (OpType("Gemm"), Epsilon(0.5))]).assign(graph)
    assert set(table) == {"fc1", "fc2"}
    assert isinstance(table["fc2"], Flat) and table["fc1"].epsilon == 0.5


def test_lrp_base_map(graph):
    table = Composite([(OpType("Gemm"), ZPlus())], lrp=True).assign(graph)
    assert {k: type(v) for k, v in table.items()} == {
        "fc1": ZPlus, "relu": Pass, "bn": Pass, "add": Norm, "fc2": ZPlus}
    assert set(Composite([(OpType("Gemm"), ZPlus())]).assign(graph)) == {"fc1", "fc2"}
    # the given pairs come before the base map
    assert isinstance(Composite([(Kind("activation"), Epsilon())], lrp=True).assign(graph)["relu"], Epsilon)


def test_rule_on_the_wrong_kind_of_layer_fails_at_assignment(graph):
    bad = Composite([(Kind("sum"), ZPlus())], name="bad")
    with pytest.raises(OptionError, match=r"'bad' puts ZPlus\(epsilon=1e-06\) on node 'add' \(Add, kind 'sum'\).*linear"):
        bad.assign(graph)
    assert isinstance(Composite([(Kind("sum"), Epsilon())]).assign(graph)["add"], Epsilon)  # any op
    m = onnxattr.load(residual_bn())
    with pytest.raises(OptionError, match="node 'add'"):
        onnxattr.attribute(m, np.ones((1, 4), np.float32), 0, "lrp", composite=bad)


def test_describe_and_repr(graph):
    c = epsilon_plus_flat()
    assert c.describe(graph) == [
        ("fc1", "Gemm", "Flat(epsilon=1e-06)"), ("relu", "Relu", "Pass()"), ("bn", "Affine", "Pass()"),
        ("add", "Add", "Norm(epsilon=1e-06)"), ("fc2", "Gemm", "Epsilon(epsilon=1e-06)")]
    text = repr(c).splitlines()
    assert text[0] == "Composite 'epsilon_plus_flat':"
    assert text[1].split() == ["First(OpType('Conv',", "'ConvTranspose',", "'Gemm',", "'Dense'))", "->", "Flat(epsilon=1e-06)"]
    assert [line.split("->")[1].strip() for line in text[4:]] == ["Pass()", "Pass()", "Norm(epsilon=1e-06)", "gradient"]
    assert "OpType('Affine', 'LRN')" in text[5]


def test_lrn_passes_relevance_in_the_lrp_base_map():
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("LRN", ["c"], ["n"], size=3, name="lrn"),
             helper.make_node("Flatten", ["n"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "w2"], ["y"], name="fc")]
    proto = model(nodes, {"w": rng.standard_normal((2, 1, 1, 1)), "w2": rng.standard_normal((8, 3))}, 1, 3,
                  in_shape=[None, 1, 2, 2])
    g = canonize(build(proto))
    assert isinstance(Composite([], lrp=True).assign(g)["lrn"], Pass)


def products():
    """a = fc1(x); s = sigmoid(a); m1 = s * b (gate * up), m2 = a * c (two plain operands),
    m3 = a * 2 (one operand on the path), each summed into y."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Gemm", ["x", "w1"], ["a"], name="fc1"),
        helper.make_node("Gemm", ["x", "w2"], ["b"], name="fc2"),
        helper.make_node("Sigmoid", ["a"], ["s"], name="sig"),
        helper.make_node("Cast", ["s"], ["sc"], to=1, name="cast"),
        helper.make_node("Mul", ["b", "sc"], ["m1"], name="m1"),
        helper.make_node("Mul", ["a", "b"], ["m2"], name="m2"),
        helper.make_node("Mul", ["a", "two"], ["m3"], name="m3"),
        helper.make_node("Sum", ["m1", "m2", "m3"], ["y"], name="sum"),
    ]
    return model(nodes, {"w1": rng.standard_normal((3, 3)), "w2": rng.standard_normal((3, 3)), "two": 2.0}, 3, 3)


def test_product_selector_finds_products_of_two_activations_and_their_gates():
    g = canonize(build(products()))
    assert picked(Product(), g) == ["m1", "m2"]
    assert picked(Product(constant=(1, ACTIVATIONS)), g) == ["m1"]  # through the Cast
    assert picked(Product(constant=(0, ACTIVATIONS)), g) == []
    assert picked(Product(constant=(0, OpType("Softmax"))), g) == []
    assert repr(Product(constant=(1, OpType("Softmax")))) == "Product(constant=(1, OpType('Softmax')))"


def test_attnlrp_and_cplrp_rules_on_products():
    """attnlrp halves both operands' gradients at m1 and m2; cplrp sends nothing to the gate s and
    leaves m2 its gradient."""
    m = onnxattr.load(products())
    x = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    a, b = x @ m.params["w1"], x @ m.params["w2"]
    s = 1 / (1 + np.exp(-a))
    w1, w2 = m.params["w1"], m.params["w2"]
    t = 0
    # d/dx of y_t = b s + a b + 2 a, with each product's operands' gradients halved (attnlrp) and
    # the sigmoid by the identity rule (g s / a)
    g_a = 0.5 * b[:, t] * s[:, t] / (a[:, t] + 1e-10) + 0.5 * b[:, t] + 2
    g_b = 0.5 * s[:, t] + 0.5 * a[:, t]
    want = x * (np.outer(g_a, w1[:, t]) + np.outer(g_b, w2[:, t]))
    np.testing.assert_allclose(onnxattr.attribute(m, x, t, "attnlrp"), want, rtol=1e-4)
    g_a = b[:, t] + 2  # cplrp: no uniform rule; the gate gets nothing, m2 its gradient
    g_b = s[:, t] + a[:, t]
    want = x * (np.outer(g_a, w1[:, t]) + np.outer(g_b, w2[:, t]))
    np.testing.assert_allclose(onnxattr.attribute(m, x, t, "cplrp"), want, rtol=1e-4)


@pytest.mark.parametrize("name", ["torch_silu_op13", "torch_gelu_erf_op13", "torch_gelu_tanh_op17",
                                  "torch_hardswish_op13", "torch_se_hard_op13"])
def test_deeplift_rescales_the_canonical_nonlinearities(name):
    """Summation to delta: with every nonlinearity rescaled, sum R = f(x) - f(0) (before, the
    canonical Swish/Gelu/HardSwish/Gate kept their gradient and it failed on each)."""
    m = onnxattr.load(str(DATA / "canon" / f"{name}.onnx"))
    shape = tuple(d if isinstance(d, int) else 2 for d in m.graph.input.shape)
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    r = onnxattr.attribute(m, x, 0, "deeplift")
    delta = (m(x) - m(np.zeros_like(x))).reshape(len(x), -1)[:, 0]
    np.testing.assert_allclose(r.reshape(len(x), -1).sum(axis=1), delta, rtol=1e-4, atol=1e-7)
