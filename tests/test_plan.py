"""Plans and seeds: the seed callables on (B, C) and (B, T, V) outputs, an array seed through
Model.propagate, and times_input."""
import numpy as np
import pytest

import onnxattr
from onnxattr.errors import InputError
from onnxattr.plan import Plan, logit, one_hot
from onnxattr.rules import Pass
from toy import linear


def test_one_hot_and_logit_on_class_outputs():
    out = np.arange(12, dtype=np.float32).reshape(3, 4)
    t = np.array([0, 3, 1])
    want = np.zeros((3, 4), np.float32)
    want[[0, 1, 2], t] = 1
    np.testing.assert_array_equal(one_hot(out, t), want)
    np.testing.assert_array_equal(logit(out, t), want * out)
    # a (B, C, 1, 1) output: the index runs over each sample's flattened entries
    np.testing.assert_array_equal(one_hot(out.reshape(3, 4, 1, 1), t), want.reshape(3, 4, 1, 1))


def test_seeds_at_position_and_index_pairs():
    out = np.random.default_rng(0).standard_normal((2, 5, 7)).astype(np.float32)  # (B, T, V)
    t = np.array([[4, 6], [1, 0]])  # (position, index) per sample
    want = np.zeros_like(out)
    want[0, 4, 6] = want[1, 1, 0] = 1
    np.testing.assert_array_equal(one_hot(out, t), want)
    np.testing.assert_array_equal(logit(out, t), want * out)
    with pytest.raises(InputError, match="3 indices per sample for an output of shape"):
        one_hot(out, np.zeros((2, 3), np.int64))


def test_array_seed_is_the_output_cotangent():
    """On y = x W + b the input's cotangent for a seed S is S W^T, whatever the targets."""
    proto = linear(5, 3, seed=2)
    model = onnxattr.load(proto)
    w = model.params["w"]
    x = np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)
    s = np.random.default_rng(2).standard_normal((4, 3)).astype(np.float32)
    got = model.propagate(x, None, Plan(seed=s))[model.input_name]
    np.testing.assert_allclose(got, s @ w.T, rtol=1e-5)
    got = model.propagate(x, None, Plan(seed=s, times_input=True))[model.input_name]
    np.testing.assert_allclose(got, x * (s @ w.T), rtol=1e-5)
    with pytest.raises(InputError, match=r"seed has shape \(4, 2\) for output 'y' of shape \(4, 3\)"):
        model.propagate(x, None, Plan(seed=s[:, :2]))


def test_callable_seed_gets_the_resolved_target():
    model = onnxattr.load(linear(5, 3, seed=2))
    x = np.random.default_rng(1).standard_normal((4, 5)).astype(np.float32)
    seen = []

    def seed(out, target):
        seen.append(target)
        return one_hot(out, target)

    model.propagate(x, None, Plan(seed=seed))
    np.testing.assert_array_equal(seen[0], model(x).argmax(axis=1))


def test_plan_describes_its_rules():
    plan = Plan({"a": Pass()}, name="p")
    assert plan.rule_name("a") == "Pass()" and plan.rule_name("b") == "gradient"
    assert not plan.stacked
