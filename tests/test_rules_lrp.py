"""Each LRP rule against its dense-matrix formula: the layer as z = W x + b with W its Jacobian."""
import numpy as np
import pytest

from onnxattr.engine import NodeRecord
from onnxattr.graph import Node
from onnxattr.ops import make_op
from onnxattr.rules import AlphaBeta, Epsilon, Flat, Gamma, Norm, WSquare, Z, ZBox, ZPlus, stabilize
from kernel_paths import kernels  # noqa: F401  (the fixture)

pytestmark = pytest.mark.usefixtures("kernels")

CONVS = [
    # (x shape, w shape, attrs)
    ((2, 3, 7, 6), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 4, 8, 7), (6, 2, 3, 2), {"group": 2, "strides": [2, 1], "pads": [1, 0, 0, 1]}),
    ((1, 3, 9, 9), (3, 1, 3, 3), {"group": 3, "dilations": [2, 2]}),
    ((2, 3, 6, 6), (5, 3, 1, 1), {"strides": [2, 2]}),
]


def conv_layer(xs, ws, attrs, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(xs)
    w = rng.standard_normal(ws)
    b = rng.standard_normal(ws[0])
    op = make_op("Conv", {k: v for k, v in attrs.items()}, 17, "conv")
    return Node("conv", "Conv", op, ["x", "w", "b"], ["y"]), x, w, b


def gemm_layer(seed):
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal((3, 5)), rng.standard_normal((5, 4)), rng.standard_normal(4)
    return Node("fc", "Gemm", make_op("Gemm", {}, 17, "fc"), ["x", "w", "b"], ["y"]), x, w, b


def jacobian(node, w, b_like, shape):
    """Dense W (d_out x d_in) of the layer with weight ``w`` and no bias, per sample."""
    d_in = int(np.prod(shape[1:]))
    basis = np.eye(d_in).reshape((d_in,) + tuple(shape[1:]))
    cols = node.op.forward(basis, w, None)[0][0]
    return cols.reshape(d_in, -1).T


def dense_bias(node, b, x, w):
    out = node.op.forward(np.zeros_like(x[:1]), np.zeros_like(w), b)[0][0]
    return out.reshape(-1)


def run(rule, node, x, w, b, r, recorded=False):
    """The rule's relevance at x; ``recorded``: with the output and vjp context of a forward pass,
    as the engine keeps them (else the rule computes every term itself)."""
    (y,), ctx = node.op.forward(x, w, b)
    rec = NodeRecord(ctx=ctx, inputs=(x, w, b), outputs=(y,)) if recorded else NodeRecord(inputs=(x, w, b))
    return rule.backward(node, rec, [r], [True, False, False])[0]


def layers():
    for i, (xs, ws, attrs) in enumerate(CONVS):
        yield conv_layer(xs, ws, attrs, i)
    yield gemm_layer(99)


LAYERS = list(layers())
IDS = [f"conv{i}" for i in range(len(CONVS))] + ["gemm"]
eps = 1e-6


def dense(node, x, w, b):
    W = jacobian(node, w, b, x.shape)
    bias = dense_bias(node, b, x, w)
    return W, bias


def pos(a):
    return np.maximum(a, 0)


def neg(a):
    return np.minimum(a, 0)


def per_sample(x, r, fn):
    """Apply a dense formula fn(x_vec, r_vec) -> R_in_vec to each sample."""
    n = x.shape[0]
    return np.stack([fn(x[i].reshape(-1), r[i].reshape(-1)) for i in range(n)]).reshape(x.shape)


# ---- each rule as a dense formula f(W, bias, x, r) on one sample ----------------------------

def epsilon_formula(e):
    def f(W, bias, xv, rv):
        return xv * (W.T @ (rv / stabilize(W @ xv + bias, e)))
    return f


def zplus(W, bias, xv, rv):
    Wp, Wn = pos(W), neg(W)
    c = rv / stabilize(Wp @ pos(xv) + pos(bias) + Wn @ neg(xv), eps)
    return pos(xv) * (Wp.T @ c) + neg(xv) * (Wn.T @ c)


def alphabeta(a, bt):
    def f(W, bias, xv, rv):
        Wp, Wn = pos(W), neg(W)
        cp = rv / stabilize(Wp @ pos(xv) + pos(bias) + Wn @ neg(xv), eps)
        cn = rv / stabilize(Wn @ pos(xv) + neg(bias) + Wp @ neg(xv), eps)
        return a * (pos(xv) * (Wp.T @ cp) + neg(xv) * (Wn.T @ cp)) - bt * (pos(xv) * (Wn.T @ cn) + neg(xv) * (Wp.T @ cn))
    return f


def gamma(g):
    def f(W, bias, xv, rv):
        Wu, Wd = W + g * pos(W), W + g * neg(W)
        bu, bd = bias + g * pos(bias), bias + g * neg(bias)
        z = W @ xv + bias
        cp = rv * (z > 0) / stabilize(Wu @ pos(xv) + bu + Wd @ neg(xv), eps)
        cn = rv * (z < 0) / stabilize(Wd @ pos(xv) + bd + Wu @ neg(xv), eps)
        return pos(xv) * (Wu.T @ cp) + neg(xv) * (Wd.T @ cp) + pos(xv) * (Wd.T @ cn) + neg(xv) * (Wu.T @ cn)
    return f


LOW, HIGH = -2.0, 3.0


def zbox(W, bias, xv, rv):
    lv, hv = np.full_like(xv, LOW), np.full_like(xv, HIGH)
    z = (W @ xv + bias) - (pos(W) @ lv + pos(bias)) - (neg(W) @ hv + neg(bias))
    c = rv / stabilize(z, eps)
    return xv * (W.T @ c) - lv * (pos(W).T @ c) - hv * (neg(W).T @ c)


def flat(W, bias, xv, rv):
    mask = (W != 0).astype(float)  # the receptive field (what a ones-kernel sees)
    return mask.T @ (rv / stabilize(mask @ np.ones_like(xv), eps))


def wsquare(W, bias, xv, rv):
    W2 = W * W
    return W2.T @ (rv / stabilize(W2 @ np.ones_like(xv), eps))


RULES = {
    "epsilon0.1": (Epsilon(0.1), epsilon_formula(0.1)),
    "epsilon": (Epsilon(), epsilon_formula(eps)),
    "z": (Z(), epsilon_formula(0.0)),
    "zplus": (ZPlus(), zplus),
    "alpha2beta1": (AlphaBeta(2, 1), alphabeta(2, 1)),
    "alpha1beta0": (AlphaBeta(1, 0), alphabeta(1, 0)),
    "gamma0.25": (Gamma(0.25), gamma(0.25)),
    "gamma1": (Gamma(1.0), gamma(1.0)),
    "zbox": (ZBox(LOW, HIGH), zbox),
    "flat": (Flat(), flat),
    "wsquare": (WSquare(), wsquare),
}


# mixed-sign data, with or without the forward pass's record; and non-negative data (after a
# ReLU), where the positive part is the data and the negative part's terms vanish
@pytest.mark.parametrize("data", ["mixed", "mixed-recorded", "nonneg-recorded"])
@pytest.mark.parametrize("layer", LAYERS, ids=IDS)
@pytest.mark.parametrize("name", list(RULES))
def test_rule_equals_its_formula(name, layer, data):
    rule, formula = RULES[name]
    node, x, w, b = layer
    x = np.abs(x) if data.startswith("nonneg") else x
    W, bias = dense(node, x, w, b)
    r = np.random.default_rng(5).standard_normal((x.shape[0], W.shape[0]))
    r_shaped = r.reshape((x.shape[0],) + node.op.forward(x, w, b)[0][0].shape[1:])
    want = per_sample(x, r, lambda xv, rv: formula(W, bias, xv, rv))
    np.testing.assert_allclose(run(rule, node, x, w, b, r_shaped, data.endswith("recorded")), want,
                               rtol=1e-7, atol=1e-9)


def test_norm_splits_add_in_proportion():
    node = Node("add", "Add", make_op("Add", {}, 17, "add"), ["a", "b"], ["y"])
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 1, (2, 5)), rng.uniform(0.1, 1, (2, 5))
    r = rng.standard_normal((2, 5))
    ra, rb = Norm().backward(node, NodeRecord(inputs=(a, b)), [r], [True, True])
    np.testing.assert_allclose(ra, a / (a + b + eps) * r, rtol=1e-7)
    np.testing.assert_allclose(rb, b / (a + b + eps) * r, rtol=1e-7)
    np.testing.assert_allclose(ra + rb, r, rtol=1e-5)


def test_stabilizer_sign_of_zero_is_positive():
    z = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(stabilize(z, 0.5), [-1.5, 0.5, 2.5])


def test_alpha_beta_must_differ_by_one():
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        AlphaBeta(2.0, 2.0)


@pytest.mark.parametrize("layer", LAYERS, ids=IDS)
@pytest.mark.parametrize("name", list(RULES))
def test_rule_in_float32_with_constant_weights_equals_float64(name, layer, kernels):
    """The modified forwards with weights marked constant (a model's parameters): on the
    onnxruntime path they are baked into cached sessions, made once per parameter and rule."""
    from onnxattr.kernels import onnxruntime as ortk

    rule, _ = RULES[name]
    node, x, w, b = layer
    r = np.random.default_rng(5).standard_normal(node.op.forward(x, w, b)[0][0].shape)
    want = run(rule, node, x, w, b, r)
    x32, w32, b32, r32 = (a.astype(np.float32) for a in (x, w, b, r))
    ortk.mark_constant(w32, b32)
    got = run(rule, node, x32, w32, b32, r32)
    sessions = ortk.cached_sessions()
    again = run(rule, node, x32, w32, b32, r32)
    assert ortk.cached_sessions() == sessions  # nothing built twice
    np.testing.assert_array_equal(again, got)
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
