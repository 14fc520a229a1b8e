"""The engine on small graphs with closed-form gradients: cotangents summed where a tensor fans
out, records kept per the rules and freed as the backward uses them, and fetched tensors."""
import numpy as np
from onnx import helper

from onnxattr import engine
from onnxattr.graph import build
from onnxattr.rules import Epsilon, Pass
from toy import model


def fan_out():
    """y = x * x + relu(x) + x: the input feeds three nodes (and Mul twice); dy/dx = 2x + 1[x>0] + 1."""
    nodes = [
        helper.make_node("Mul", ["x", "x"], ["s"], name="square"),
        helper.make_node("Relu", ["x"], ["r"], name="relu"),
        helper.make_node("Add", ["s", "r"], ["t"], name="add1"),
        helper.make_node("Add", ["t", "x"], ["y"], name="add2"),
    ]
    return build(model(nodes, {}, 4, 4))


def run(graph, x, rules=None, fetch=()):
    tape = engine.forward(graph, graph.constants, {"x": x}, fetch=fetch, record=True, rules=rules)
    return tape


def test_fan_out_sums_cotangents():
    g = fan_out()
    x = np.random.default_rng(0).standard_normal((3, 4))
    tape = run(g, x)
    np.testing.assert_allclose(tape.values["y"], x * x + np.maximum(x, 0) + x)
    seed = np.random.default_rng(1).standard_normal((3, 4))
    grads = engine.backward(g, tape, seed)
    np.testing.assert_allclose(grads["x"], seed * (2 * x + (x > 0) + 1), rtol=1e-12)


def test_forward_keeps_what_each_rule_asks_for():
    g = fan_out()
    x = np.random.default_rng(0).standard_normal((2, 4))
    tape = run(g, x, rules={"relu": Pass(), "add1": Epsilon()})
    relu, add1, add2 = tape.records["relu"], tape.records["add1"], tape.records["add2"]
    assert isinstance(relu.rule, Pass) and relu.inputs is None and relu.outputs is None
    assert isinstance(add1.rule, Epsilon) and len(add1.inputs) == 2 and add1.outputs is not None
    assert add2.rule is None and add2.inputs is None  # the exact vjp needs only its context
    assert engine.forward(g, g.constants, {"x": x}).records == {}  # no record without record=True


def test_backward_frees_each_record_when_used():
    g = fan_out()
    x = np.random.default_rng(0).standard_normal((2, 4))
    tape = run(g, x)
    assert set(tape.records) == {"square", "relu", "add1", "add2"}
    seen = []

    def observer(node, grads_out, grads_in):
        seen.append((node.name, set(tape.records)))

    engine.backward(g, tape, np.ones((2, 4)), observer)
    # in reverse order, and a node's record is gone by the time its relevance is passed on
    assert [name for name, _ in seen] == ["add2", "add1", "relu", "square"]
    for name, left in seen:
        assert name not in left
    assert tape.records == {}


def test_fetch_gives_values_and_cotangents_of_inner_tensors():
    g = fan_out()
    x = np.random.default_rng(0).standard_normal((2, 4))
    tape = run(g, x, fetch=["s", "r"])
    np.testing.assert_allclose(tape.values["s"], x * x)
    np.testing.assert_allclose(tape.values["r"], np.maximum(x, 0))
    seed = np.random.default_rng(2).standard_normal((2, 4))
    grads = engine.backward(g, tape, seed, fetch=["s", "t"])
    np.testing.assert_allclose(grads["t"], seed)
    np.testing.assert_allclose(grads["s"], seed)
    assert "r" not in grads  # not asked for


def test_a_rule_replaces_the_vjp():
    g = fan_out()
    x = np.random.default_rng(3).standard_normal((2, 4))
    tape = run(g, x, rules={"relu": Pass()})
    seed = np.ones((2, 4))
    grads = engine.backward(g, tape, seed)
    np.testing.assert_allclose(grads["x"], 2 * x + 1 + 1)  # the ReLU passes everything
