"""Composites: how selectors bind to a graph, the first match winning, the LRP base map, the
check of a rule against the kind of layer it is put on, and the printed forms."""
import numpy as np
import pytest
from onnx import helper

import onnxattr
from onnxattr.composites import Composite, First, Kind, Last, Name, OpType, epsilon_plus_flat
from onnxattr.errors import OptionError
from onnxattr.graph import build
from onnxattr.canonize import canonize
from onnxattr.rules import Epsilon, Flat, Norm, Pass, ZPlus
from toy import model


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
    assert "OpType('Affine')" in text[5]
