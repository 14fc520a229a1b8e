"""The modified-gradient rules against their formulas, on single activation nodes."""
import numpy as np
import pytest

from onnxattr.engine import NodeRecord
from onnxattr.graph import Node
from onnxattr.ops import make_op
from onnxattr.rules import Rescale

ACTIVATIONS = {
    "Relu": (lambda v: np.maximum(v, 0), lambda v: (v > 0).astype(v.dtype)),
    "Sigmoid": (lambda v: 1 / (1 + np.exp(-v)), lambda v: np.exp(-v) / (1 + np.exp(-v)) ** 2),
    "Tanh": (np.tanh, lambda v: 1 - np.tanh(v) ** 2),
}


@pytest.mark.parametrize("op_type", list(ACTIVATIONS))
def test_rescale_equals_its_formula(op_type):
    """DeepLIFT's Rescale on a stacked batch [x; x0]: both halves get R (f(x) - f(x0)) / (x - x0),
    and where |x - x0| < eps each row its own derivative f'(.) R."""
    f, df = ACTIVATIONS[op_type]
    rng = np.random.default_rng(0)
    x, x0 = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    x0[0, 0] = x[0, 0]  # no difference: the gradient applies
    x0[1, 2, :2] = x[1, 2, :2] + 1e-12  # below eps = 1e-10
    stacked = np.concatenate([x, x0])
    g = rng.standard_normal(stacked.shape)
    op = make_op(op_type, {}, 17, "act")
    (y,), ctx = op.forward(stacked)
    node = Node("act", op_type, op, ["x"], ["y"])
    got = Rescale(1e-10).backward(node, NodeRecord(ctx=ctx, inputs=(stacked,), outputs=(y,)), [g], [True])[0]

    dx = x - x0
    close = np.abs(dx) < 1e-10
    m = np.where(close, 0, (f(x) - f(x0)) / np.where(close, 1, dx))
    want = np.concatenate([np.where(close, df(x), m), np.where(close, df(x0), m)]) * g
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert close.sum() == 6
