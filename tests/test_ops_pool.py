import numpy as np
import pytest

from onnxattr.errors import UnsupportedOpError
from onnxattr.ops import REGISTRY, make_op
from optest import check_onnx_case, check_op, check_vjp, our_forward, rand



def distinct(*shape: int, seed: int = 0) -> np.ndarray:
    """Distinct values 0.01 apart in random order: MaxPool has no ties, so its vjp is smooth."""
    n = int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(n) * 0.01 - n * 0.005).reshape(shape).astype(np.float32)


def _pool_cases():
    cases = []
    for shape, k in [((2, 3, 9, 8), [3, 2]), ((2, 3, 11), [3]), ((1, 2, 6, 7, 5), [2, 3, 2])]:
        nd = len(k)
        for strides in ([1] * nd, [2] * nd, [3] + [2] * (nd - 1)):
            for pads in ([0] * 2 * nd, [1] * 2 * nd, [0] * nd + [1] * nd, [1] * nd + [0] * nd):
                for ceil in (0, 1):
                    cases.append((shape, {"kernel_shape": k, "strides": strides, "pads": pads, "ceil_mode": ceil}))
        for auto_pad in ("SAME_UPPER", "SAME_LOWER", "VALID"):
            for ceil in (0, 1):
                cases.append((shape, {"kernel_shape": k, "strides": [2] * nd, "auto_pad": auto_pad, "ceil_mode": ceil}))
        cases.append((shape, {"kernel_shape": k, "strides": [2] * nd, "dilations": [2] * nd,
                              "pads": [1] * 2 * nd}))
        cases.append((shape, {"kernel_shape": k, "strides": [2] * nd, "dilations": [2] * nd,
                              "pads": [0] * nd + [1] * nd, "ceil_mode": 1}))
    cases.append(((2, 3, 9, 8), {"kernel_shape": [3, 3]}))  # defaults
    return cases


POOL_CASES = _pool_cases()


@pytest.mark.parametrize("shape,attrs", POOL_CASES)
def test_maxpool(shape, attrs):
    x = distinct(*shape)
    (y,), _ = check_op("MaxPool", [x], attrs, opset=12)
    assert y.dtype == np.float32
    check_vjp("MaxPool", [x], attrs, opset=12, n_dirs=2)


@pytest.mark.parametrize("shape,attrs", POOL_CASES)
@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_averagepool(shape, attrs, count_include_pad):
    attrs = dict(attrs, count_include_pad=count_include_pad)
    opset = 19 if "dilations" in attrs else 11  # AveragePool has dilations from opset 19
    x = rand(*shape)
    (y,), _ = check_op("AveragePool", [x], attrs, opset=opset)
    assert y.dtype == np.float32
    check_vjp("AveragePool", [x], attrs, opset=opset, n_dirs=1)


@pytest.mark.parametrize("opset", [7, 8])
def test_pools_at_old_opsets(opset):
    attrs = {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 0, 1, 0]}
    check_op("MaxPool", [distinct(2, 3, 7, 6)], attrs, opset=opset)
    check_op("AveragePool", [rand(2, 3, 7, 6)], attrs, opset=opset)


def test_maxpool_integer_input():
    x = (distinct(1, 2, 6, 5) * 100).astype(np.int8)
    check_op("MaxPool", [x], {"kernel_shape": [3, 2], "pads": [1, 1, 1, 1], "strides": [2, 2]}, opset=12)


def test_maxpool_large_kernel_index_type():
    x = distinct(1, 2, 40)
    check_op("MaxPool", [x], {"kernel_shape": [20], "dilations": [2], "pads": [19, 19]}, opset=12)
    check_vjp("MaxPool", [x], {"kernel_shape": [20], "dilations": [2], "pads": [19, 19]}, opset=12)


def _first_max_grad(x: np.ndarray, k: int, s: int) -> np.ndarray:
    """The MaxPool vjp of a 1-D pool, by a loop: each window's g goes to its first maximum."""
    dx = np.zeros_like(x)
    for p in range((x.shape[-1] - k) // s + 1):
        w = x[..., p * s : p * s + k]
        first = w.argmax(axis=-1)
        np.put_along_axis(dx[..., p * s : p * s + k], first[..., None],
                          np.take_along_axis(dx[..., p * s : p * s + k], first[..., None], -1) + 1, -1)
    return dx


@pytest.mark.parametrize("k,s", [(2, 2), (3, 1), (3, 2)])
def test_maxpool_ties_go_to_first_maximum(k, s):
    x = np.round(rand(2, 3, 12, seed=4)).astype(np.float32)  # many ties
    op = make_op("MaxPool", {"kernel_shape": [k], "strides": [s]}, 12, "t")
    (y,), ctx = op.forward(x)
    (dx,) = op.vjp(ctx, [np.ones_like(y)], [True])
    np.testing.assert_array_equal(dx, _first_max_grad(x, k, s))


@pytest.mark.parametrize("op_type", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("shape", [(2, 3, 7), (2, 3, 4, 5), (1, 2, 3, 4, 2)])
def test_global_pools(op_type, shape):
    x = distinct(*shape)
    (y,), _ = check_op(op_type, [x])
    assert y.dtype == np.float32
    check_vjp(op_type, [x])


def test_global_maxpool_ties_go_to_first_maximum():
    x = np.zeros((1, 2, 3, 3), np.float32)
    x[0, 1, 2, 0] = x[0, 1, 1, 2] = 1.0
    op = make_op("GlobalMaxPool", {}, 17, "t")
    (y,), ctx = op.forward(x)
    (dx,) = op.vjp(ctx, [np.full(y.shape, 2.0, np.float32)], [True])
    want = np.zeros_like(x)
    want[0, 0, 0, 0] = want[0, 1, 1, 2] = 2.0
    np.testing.assert_array_equal(dx, want)


def test_kinds_and_outputs():
    assert REGISTRY["MaxPool"].kind == REGISTRY["GlobalMaxPool"].kind == "maxpool"
    assert REGISTRY["AveragePool"].kind == REGISTRY["GlobalAveragePool"].kind == "sum"
    assert REGISTRY["MaxPool"].max_outputs == 1  # no 'Indices' output


def test_bad_attributes_raise():
    with pytest.raises(UnsupportedOpError, match="kernel_shape"):
        make_op("MaxPool", {}, 12, "p")
    with pytest.raises(UnsupportedOpError, match="auto_pad"):
        our_forward("AveragePool", [rand(1, 1, 4, 4)], {"kernel_shape": [2, 2], "auto_pad": "WRONG"})
    with pytest.raises(UnsupportedOpError, match="spatial axes"):
        our_forward("MaxPool", [rand(1, 1, 4, 4)], {"kernel_shape": [2]})


@pytest.mark.parametrize("case", [
    "pytorch-converted/test_MaxPool1d",
    "pytorch-converted/test_MaxPool1d_stride",
    "pytorch-converted/test_MaxPool1d_stride_padding_dilation",
    "pytorch-converted/test_MaxPool2d",
    "pytorch-converted/test_MaxPool2d_stride_padding_dilation",
    "pytorch-converted/test_MaxPool3d",
    "pytorch-converted/test_MaxPool3d_stride",
    "pytorch-converted/test_MaxPool3d_stride_padding",
    "pytorch-converted/test_AvgPool2d",
    "pytorch-converted/test_AvgPool2d_stride",
    "pytorch-converted/test_AvgPool3d",
    "pytorch-converted/test_AvgPool3d_stride",
    "pytorch-converted/test_AvgPool3d_stride1_pad0_gpu_input",
    "pytorch-operator/test_operator_maxpool",
])
def test_onnx_backend_data(case):
    check_onnx_case(case)


@pytest.mark.parametrize("op_type", ["AveragePool", "MaxPool"])
@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [9, 9], "ceil_mode": 1, "strides": [9, 9]},  # HF EfficientNet's pooler
    {"kernel_shape": [4, 4], "ceil_mode": 1, "strides": [2, 2]},
    {"kernel_shape": [5, 5], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [5, 5], "pads": [1, 1, 1, 1], "count_include_pad": 1},
])
def test_window_larger_than_the_input_follows_onnxruntime(op_type, attrs):
    if op_type == "MaxPool" and "count_include_pad" in attrs:
        attrs = {k: v for k, v in attrs.items() if k != "count_include_pad"}
    x = distinct(2, 3, 3, 3)
    check_op(op_type, [x], attrs, opset=17)
    check_vjp(op_type, [x], attrs, opset=17)


def test_a_huge_kernel_costs_only_its_input():
    op = make_op("AveragePool", {"kernel_shape": [1280, 1280], "strides": [1280, 1280], "ceil_mode": 1}, 17, "p")
    (y,), _ = op.forward(np.ones((1, 2, 7, 7), np.float32))
    np.testing.assert_allclose(y, np.ones((1, 2, 1, 1)))


@pytest.mark.parametrize("attrs,why", [
    ({"kernel_shape": [5, 5]}, "leaves no output"),
    ({"kernel_shape": [5, 5], "ceil_mode": 1}, "leaves no output"),
])
def test_window_onnxruntime_refuses_is_refused_at_load(attrs, why):
    op = make_op("AveragePool", attrs, 17, "pool")
    with pytest.raises(UnsupportedOpError, match=f"'pool'.*{why}"):
        op.check([(2, 3, 3, 3)])
    op.check([(2, 3, None, 3)])  # unknown sizes are left to the forward
