import numpy as np
import pytest

from onnxattr.errors import UnsupportedOpError
from onnxattr.ops import REGISTRY, make_op
from optest import check_onnx_case, check_op, check_vjp, our_forward, rand


def bn_params(shape, seed=2, dtype=np.float32):
    return [rand(*shape, seed=seed, dtype=dtype), rand(*shape, seed=seed + 1, dtype=dtype),
            rand(*shape, seed=seed + 2, dtype=dtype), np.abs(rand(*shape, seed=seed + 3, dtype=dtype)) + 0.1]


@pytest.mark.parametrize("opset", [7, 9, 14, 15])
@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 5), (2, 3, 4, 5), (1, 3, 2, 3, 2)])
def test_batchnorm(opset, shape):
    inputs = [rand(*shape, seed=1)] + bn_params((3,))
    (y,), _ = check_op("BatchNormalization", inputs, {"epsilon": 1e-3}, opset=opset)
    assert y.dtype == np.float32
    check_vjp("BatchNormalization", inputs, {"epsilon": 1e-3}, opset=opset)


def test_batchnorm_per_activation_spatial0():
    inputs = [rand(2, 3, 4, 5, seed=1)] + bn_params((3, 4, 5))
    check_op("BatchNormalization", inputs, {"spatial": 0}, opset=7)
    check_vjp("BatchNormalization", inputs, {"spatial": 0}, opset=7)


def test_batchnorm_float64_params_keep_float32():
    # opset 15 allows parameters of another float type; onnxruntime has no kernel for the mix
    x = rand(2, 3, 4, seed=1)
    (y,), _ = our_forward("BatchNormalization", [x] + bn_params((3,), dtype=np.float64), {}, opset=15)
    (want,), _ = our_forward("BatchNormalization", [x] + bn_params((3,)), {}, opset=15)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)


def test_batchnorm_training_mode_is_unsupported():
    with pytest.raises(UnsupportedOpError, match="training_mode"):
        make_op("BatchNormalization", {"training_mode": 1}, 15, "bn")
    assert REGISTRY["BatchNormalization"].max_outputs == 1


def lrn_loop(x, size, alpha, beta, bias):
    """The ONNX LRN formula, one channel at a time."""
    c = x.shape[1]
    y = np.empty_like(x)
    for i in range(c):
        lo, hi = max(0, i - (size - 1) // 2), min(c - 1, i + -(-(size - 1) // 2))
        s = (x[:, lo : hi + 1] ** 2).sum(axis=1)
        y[:, i] = x[:, i] / (bias + alpha / size * s) ** beta
    return y


@pytest.mark.parametrize("size", [1, 3, 5])
def test_lrn_against_onnxruntime(size):
    attrs = {"size": size, "alpha": 0.5, "beta": 0.75, "bias": 2.0}
    x = rand(2, 7, 4, 5)
    (y,), _ = check_op("LRN", [x], attrs)
    assert y.dtype == np.float32
    check_vjp("LRN", [x], attrs)
    check_op("LRN", [x], {"size": size})  # default alpha, beta, bias


@pytest.mark.parametrize("size", [2, 4, 9])
@pytest.mark.parametrize("shape", [(2, 6, 3), (2, 5, 3, 2)])
def test_lrn_even_sizes_and_other_ranks(size, shape):
    # onnxruntime only runs 4-D inputs with an odd size; the formula defines the rest
    attrs = {"size": size, "alpha": 0.25, "beta": 0.625, "bias": 1.5}  # exact in float32
    x = rand(*shape, dtype=np.float64)
    (y,), _ = our_forward("LRN", [x], attrs)
    np.testing.assert_allclose(y, lrn_loop(x, **attrs), rtol=1e-12)
    check_vjp("LRN", [x], attrs)


SOFTMAX_CASES = [(opset, axis) for opset in (1, 11, 13) for axis in (None, 0, 1, 2, 3, -1, -2)
                 if not (opset < 11 and axis is not None and axis < 0)]


@pytest.mark.parametrize("op_type", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset,axis", SOFTMAX_CASES)
def test_softmax(op_type, opset, axis):
    attrs = {} if axis is None else {"axis": axis}
    x = rand(2, 3, 4, 5) * 3
    (y,), _ = check_op(op_type, [x], attrs, opset=opset)
    assert y.dtype == np.float32
    check_vjp(op_type, [x], attrs, opset=opset)


@pytest.mark.parametrize("op_type", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("shape", [(7,), (3, 5)])
def test_softmax_low_rank(op_type, shape):
    check_op(op_type, [rand(*shape)], {}, opset=13)
    check_op(op_type, [rand(*shape)], {"axis": 0}, opset=11)
    check_vjp(op_type, [rand(*shape)], {}, opset=13)


def test_softmax_large_logits_are_stable():
    x = np.array([[1000.0, 0.0, -1000.0]], np.float32)
    (y,), _ = check_op("Softmax", [x], {}, opset=13)
    (ly,), _ = check_op("LogSoftmax", [x], {}, opset=13)
    assert np.isfinite(y).all() and np.isfinite(ly).all()


@pytest.mark.parametrize("shape", [(2, 3, 4), (2, 3, 4, 5)])
@pytest.mark.parametrize("axis", [-1, -2, 1, 0])
def test_layernorm(shape, axis):
    trailing = shape[axis:]
    inputs = [rand(*shape), rand(*trailing, seed=2), rand(*trailing, seed=3)]
    (y,), _ = check_op("LayerNormalization", inputs, {"axis": axis, "epsilon": 1e-3})
    assert y.dtype == np.float32
    check_vjp("LayerNormalization", inputs, {"axis": axis, "epsilon": 1e-3}, wrt=(0, 1, 2))


def test_layernorm_without_bias_and_broadcast_scale():
    inputs = [rand(2, 3, 4, 5), rand(5, seed=2)]
    check_op("LayerNormalization", inputs, {"axis": -2})
    check_vjp("LayerNormalization", inputs, {"axis": -2}, wrt=(0, 1))
    assert REGISTRY["LayerNormalization"].max_outputs == 1


@pytest.mark.parametrize("opset", [6, 17])
@pytest.mark.parametrize("shape", [(2, 3, 4), (2, 3, 4, 5), (1, 3, 2, 3, 4)])
def test_instancenorm(opset, shape):
    inputs = [rand(*shape), rand(3, seed=2), rand(3, seed=3)]
    (y,), _ = check_op("InstanceNormalization", inputs, {"epsilon": 1e-3}, opset=opset)
    assert y.dtype == np.float32
    check_vjp("InstanceNormalization", inputs, {"epsilon": 1e-3}, opset=opset)


def test_kinds():
    for op in ("BatchNormalization", "LRN", "Softmax", "LogSoftmax", "LayerNormalization", "InstanceNormalization"):
        assert REGISTRY[op].kind == "other"


@pytest.mark.parametrize("case", [
    "pytorch-converted/test_BatchNorm1d_3d_input_eval",
    "pytorch-converted/test_BatchNorm2d_eval",
    "pytorch-converted/test_BatchNorm2d_momentum_eval",
    "pytorch-converted/test_BatchNorm3d_eval",
    "pytorch-converted/test_BatchNorm3d_momentum_eval",
    "pytorch-converted/test_LogSoftmax",
    "pytorch-converted/test_Softmax",
    "pytorch-converted/test_log_softmax_dim3",
    "pytorch-converted/test_log_softmax_lastdim",
    "pytorch-converted/test_softmax_functional_dim3",
    "pytorch-converted/test_softmax_lastdim",
    "pytorch-operator/test_operator_symbolic_override",
])
def test_onnx_backend_data(case):
    check_onnx_case(case)


@pytest.mark.parametrize("axis", [-1, -2, 1])
def test_rms_normalization(axis):
    x = rand(2, 3, 4) * 2 + 0.5
    scale = rand(*x.shape[axis:], seed=1)
    check_op("RMSNormalization", [x, scale], {"axis": axis, "epsilon": 1e-3}, opset=23)
    check_vjp("RMSNormalization", [x, scale], {"axis": axis, "epsilon": 1e-3}, opset=23, wrt=(0, 1))
