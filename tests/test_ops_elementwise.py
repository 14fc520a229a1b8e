import numpy as np
import pytest
from onnx import TensorProto

from onnxattr.ops import make_op
from optest import both, check_op, check_vjp, ints, our_forward, rand

F32 = np.float32
SHAPE_PAIRS = [((2, 3, 4), (2, 3, 4)), ((2, 3, 4), (4,)), ((3, 1), (2, 1, 4)), ((1, 3, 1), (2, 1, 5)), ((), (2, 3))]


def positive(*shape, seed=0):
    return np.asarray(np.abs(rand(*shape, seed=seed)) + F32(0.5), F32)


@pytest.mark.parametrize("op_type", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("sa,sb", SHAPE_PAIRS + [(b, a) for a, b in SHAPE_PAIRS[1:]])
def test_binary_broadcasting(op_type, sa, sb):
    a = np.asarray(rand(*sa, seed=1))
    b = positive(*sb, seed=2) if op_type == "Div" else np.asarray(rand(*sb, seed=2))
    y = both(op_type, [a, b], wrt=(0, 1))[0]
    assert y.dtype == F32


@pytest.mark.parametrize("sa,sb", [((2, 3), (3,)), ((3,), (2, 3))])
def test_pow(sa, sb):
    a, b = positive(*sa, seed=1), rand(*sb, seed=2)
    both("Pow", [a, b], wrt=(0, 1))


def test_pow_integer_exponent_and_zero_base():
    a = np.array([0.0, -1.5, 2.0], F32)
    check_op("Pow", [a, np.array(2, np.int64)], opset=15)
    op = make_op("Pow", {}, 15, "p")
    (y,), ctx = op.forward(a, np.array([0.0, 2.0, 3.0], F32))
    da, db = op.vjp(ctx, [np.ones(3, F32)], [True, True])
    assert np.isfinite(da).all() and da[0] == 0  # d(x^0)/dx at x = 0
    assert db[0] == 0  # d(0^b)/db, as torch


def test_integer_division_truncates():
    a = np.array([7, -7, 7, -7, 6], np.int64)
    b = np.array([2, 2, -2, -2, 3], np.int64)
    check_op("Div", [a, b])


@pytest.mark.parametrize("op_type", ["Max", "Min", "Sum", "Mean"])
def test_variadic(op_type):
    xs = [rand(2, 3, seed=1), rand(3, seed=2), rand(1, 1, seed=3)]
    both(op_type, xs, wrt=(0, 1, 2))
    both(op_type, xs[:1])


def test_max_ties_route_to_every_input():
    a = np.array([1.0, 2.0], F32)
    op = make_op("Max", {}, 13, "m")
    (y,), ctx = op.forward(a, a.copy())
    da, db = op.vjp(ctx, [np.ones(2, F32)], [True, True])
    np.testing.assert_array_equal(da, [1, 1])
    np.testing.assert_array_equal(db, [1, 1])


UNARY = [
    ("Relu", {}, None), ("LeakyRelu", {"alpha": 0.2}, None), ("Elu", {"alpha": 0.7}, None),
    ("Sigmoid", {}, None), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, None), ("Tanh", {}, None),
    ("Softplus", {}, None), ("Exp", {}, None), ("Log", {}, "positive"), ("Sqrt", {}, "positive"),
    ("Reciprocal", {}, "positive"), ("Neg", {}, None), ("Abs", {}, None), ("Erf", {}, None),
    ("Identity", {}, None), ("Selu", {}, None), ("Selu", {"alpha": 1.5, "gamma": 0.5}, None),
    ("HardSwish", {}, None), ("Softsign", {}, None), ("Floor", {}, None), ("Ceil", {}, None), ("Round", {}, None),
    ("Sign", {}, None),
]


@pytest.mark.parametrize("op_type,attrs,domain", UNARY)
def test_unary(op_type, attrs, domain):
    x = positive(3, 4, 5) if domain == "positive" else rand(3, 4, 5) * F32(2)
    y = both(op_type, [x], attrs, opset=17)[0]
    assert y.dtype == F32


@pytest.mark.parametrize("approximate", [None, "none", "tanh"])
def test_gelu_opset_20(approximate):
    attrs = {} if approximate is None else {"approximate": approximate}
    both("Gelu", [rand(3, 4) * F32(3)], attrs, opset=20)


def test_erf_is_vectorized(monkeypatch):
    """Erf runs scipy.special.erf on the whole array: no Python call per element."""
    monkeypatch.setattr(np, "vectorize", None)
    y = both("Erf", [rand(3, 4)])[0]
    assert y.dtype == F32


@pytest.mark.parametrize("attrs", [{"min": -0.5, "max": 0.3}, {"min": -0.2}, {"max": 0.1}, {}])
def test_clip_opset_6_attributes(attrs):
    both("Clip", [rand(4, 5)], attrs, opset=6)


@pytest.mark.parametrize("lo,hi", [(-0.5, 0.3), (-0.2, None), (None, 0.1), (None, None)])
def test_clip_opset_13_inputs(lo, hi):
    inputs = [rand(4, 5), None if lo is None else np.array(lo, F32), None if hi is None else np.array(hi, F32)]
    while inputs[-1] is None:
        inputs.pop()
    both("Clip", inputs, opset=13)


def test_clip_vjp_at_the_bound_passes():
    op = make_op("Clip", {}, 13, "c")
    x = np.array([-1.0, 0.0, 0.5, 2.0], F32)
    (y,), ctx = op.forward(x, np.array(0.0, F32), np.array(1.0, F32))
    g = op.cotangents(ctx, [np.ones(4, F32)], [True, False, False])
    assert len(g) == 3 and g[1] is None
    np.testing.assert_array_equal(g[0], [0, 1, 1, 0])


@pytest.mark.parametrize("slope_shape", [(1,), (3, 1, 1), (5,), (1, 3, 4, 5)])
def test_prelu_broadcast_slope(slope_shape):
    x = rand(2, 3, 4, 5)
    both("PRelu", [x, rand(*slope_shape, seed=3) * F32(0.3)], wrt=(0, 1), opset=16)


def test_prelu_opset_6_slope_per_channel():
    # onnxruntime has no PRelu before opset 7: compare with the formula
    x, slope = rand(2, 3, 4, 5), rand(3, seed=3)
    (y,), _ = our_forward("PRelu", [x, slope], {}, opset=6)
    np.testing.assert_allclose(y, np.where(x > 0, x, x * slope[:, None, None]))
    check_vjp("PRelu", [x, slope], wrt=(0, 1), opset=6)


@pytest.mark.parametrize("opset", [7, 10])
def test_dropout_attribute_form(opset):
    # onnxruntime's opset-10 mask is all False and its opset-7 mask has no inferred type, so
    # the mask is checked against the spec: all ones, of x's type before opset 10
    x = rand(3, 4)
    check_op("Dropout", [x], {"ratio": 0.3}, opset=opset)
    (y, mask), _ = our_forward("Dropout", [x], {"ratio": 0.3}, opset=opset)
    np.testing.assert_array_equal(y, x)
    assert mask.all() and mask.dtype == (F32 if opset < 10 else np.bool_)
    check_vjp("Dropout", [x], {"ratio": 0.3}, opset=opset)


@pytest.mark.parametrize("opset", [12, 13])
def test_dropout_input_form(opset):
    x = rand(3, 4)
    inputs = [x, np.array(0.4, F32), np.array(False)]
    y, mask = check_op("Dropout", inputs, n_outputs=2, opset=opset)[0]
    assert mask.dtype == np.bool_ and mask.all()
    check_vjp("Dropout", inputs, opset=opset)
    check_op("Dropout", [x], n_outputs=1, opset=opset)


def test_dropout_in_training_mode_is_unsupported():
    from onnxattr.errors import UnsupportedOpError

    op = make_op("Dropout", {}, 13, "d")
    with pytest.raises(UnsupportedOpError, match="training_mode"):
        op.forward(rand(2), np.array(0.5, F32), np.array(True))


@pytest.mark.parametrize("to,src", [
    (TensorProto.DOUBLE, rand(3, 4)), (TensorProto.FLOAT, rand(3, 4).astype(np.float64)),
    (TensorProto.FLOAT16, rand(3, 4)), (TensorProto.INT64, rand(3, 4) * F32(3)),
    (TensorProto.FLOAT, ints([1, -2, 3])), (TensorProto.BOOL, rand(5)),
])
def test_cast(to, src):
    check_op("Cast", [src], {"to": to}, opset=13)


def test_cast_vjp():
    check_vjp("Cast", [rand(3, 4)], {"to": TensorProto.DOUBLE}, opset=13)
    op = make_op("Cast", {"to": TensorProto.INT64}, 13, "c")
    (y,), ctx = op.forward(rand(3))
    assert op.vjp(ctx, [np.ones(3)], [True]) == [None]
    op = make_op("Cast", {"to": TensorProto.DOUBLE}, 13, "c")
    (y,), ctx = op.forward(rand(3))
    assert op.vjp(ctx, [np.ones(3)], [True])[0].dtype == F32


def test_cast_opset_1_string_type():
    op = make_op("Cast", {"to": b"FLOAT"}, 1, "c")
    (y,), _ = op.forward(ints([1, 2]))
    assert y.dtype == F32


GPU_CASES = [(op_type, [rand(3, 4, 5) * F32(2)], attrs, 17) for op_type, attrs, domain in UNARY if domain is None]
GPU_CASES += [(op_type, [positive(3, 4)], {}, 17) for op_type in ("Log", "Sqrt", "Reciprocal")]
GPU_CASES += [(op_type, [positive(2, 3, 4), rand(3, 1, seed=1)], {}, 17)
              for op_type in ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean")]
GPU_CASES += [
    ("Gelu", [rand(3, 4)], {"approximate": "tanh"}, 20), ("Gelu", [rand(3, 4)], {}, 20),
    ("Clip", [rand(3, 4), np.array(-0.2, F32), np.array(0.3, F32)], {}, 13),
    ("Clip", [rand(3, 4)], {"max": 0.1}, 6),
    ("PRelu", [rand(2, 3, 4, 5), rand(3, 1, 1, seed=2)], {}, 16),
    ("Dropout", [rand(3, 4), np.array(0.5, F32), np.array(False)], {}, 13),
    ("Cast", [rand(3, 4)], {"to": TensorProto.DOUBLE}, 13),
    ("Div", [ints([7, -7]), ints([2, 2])], {}, 13),
]


@pytest.mark.gpu
@pytest.mark.parametrize("op_type,inputs,attrs,opset", GPU_CASES)
def test_on_gpu(op_type, inputs, attrs, opset):
    from optest import same_on_gpu

    same_on_gpu(op_type, inputs, attrs, opset)


@pytest.mark.parametrize("op_type", ["Sin", "Cos"])
def test_sin_cos(op_type):
    both(op_type, [rand(3, 4) * F32(3)], opset=7)


@pytest.mark.parametrize("fmod", [0, 1])
def test_mod_of_integers(fmod):
    a = np.array([[-7, -3, 4, 9], [5, -8, 0, 13]], np.int64)
    b = np.array([3, -4, 5, -2], np.int64)
    check_op("Mod", [a, b], {"fmod": fmod}, opset=13)


def test_mod_of_floats():
    a = rand(3, 4) * F32(5)
    b = np.array([1.5, -2.25, 0.7, -3.1], F32)  # quotients well away from integers
    both("Mod", [a, b], {"fmod": 1}, opset=13, wrt=(0, 1))


def test_mod_of_floats_without_fmod_is_refused():
    from onnxattr.errors import UnsupportedOpError

    op = make_op("Mod", {}, 13, "m")
    with pytest.raises(UnsupportedOpError, match="'m'.*fmod=0"):
        op.forward(rand(2), rand(2))
