import numpy as np
import pytest

from onnxattr.errors import UnsupportedOpError
from onnxattr.ops import REGISTRY, make_op
from optest import check_onnx_case, check_op, check_vjp, our_forward, rand
from kernel_paths import kernels  # noqa: F401  (the fixture)

pytestmark = pytest.mark.usefixtures("kernels")

CASES = [
    # (x shape, w shape (C, O/group, *kernel), attrs)
    ((2, 3, 5, 4), (3, 4, 3, 3), {}),
    ((2, 3, 5, 4), (3, 4, 3, 3), {"strides": [2, 2]}),
    ((2, 3, 5, 4), (3, 4, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((2, 3, 5, 4), (3, 4, 3, 3), {"strides": [2, 3], "pads": [1, 0, 2, 1], "output_padding": [1, 2]}),
    ((2, 4, 5, 4), (4, 3, 3, 2), {"group": 2, "strides": [2, 1], "pads": [1, 0, 0, 1]}),
    ((1, 4, 5, 5), (4, 1, 3, 3), {"group": 4, "strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}),
    ((2, 3, 5, 4), (3, 2, 3, 3), {"dilations": [2, 1], "strides": [2, 2]}),
    ((2, 3, 5, 4), (3, 2, 3, 3), {"strides": [2, 2], "output_shape": [10, 8]}),
    ((2, 3, 5, 4), (3, 2, 3, 3), {"strides": [2, 2], "output_shape": [9, 9]}),
    ((2, 3, 5, 4), (3, 2, 3, 3), {"strides": [2, 2], "output_shape": [12, 10]}),  # larger than the full size
    ((2, 3, 5, 4), (3, 2, 4, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ((2, 3, 5, 4), (3, 2, 4, 3), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}),
    ((2, 3, 5, 4), (3, 2, 4, 3), {"strides": [3, 2], "auto_pad": "SAME_UPPER", "output_padding": [1, 1]}),
    ((2, 3, 5, 4), (3, 2, 4, 3), {"strides": [2, 2], "auto_pad": "VALID"}),
    ((2, 3, 5, 4), (3, 2, 4, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER", "output_shape": [9, 7]}),
    ((2, 3, 5, 4), (3, 2, 4, 3), {"strides": [2, 2], "auto_pad": "SAME_LOWER", "output_shape": [9, 7]}),
    ((2, 3, 7), (3, 2, 3), {"strides": [2], "pads": [1, 0]}),  # 1-D
    ((1, 2, 3, 4, 3), (2, 2, 2, 3, 2), {"strides": [2, 1, 2], "pads": [0, 1, 0, 1, 0, 1]}),  # 3-D
    ((2, 3, 5, 4), (3, 4, 1, 1), {}),  # pointwise
    ((2, 3, 5, 4), (3, 4, 1, 1), {"strides": [2, 2]}),
]


@pytest.mark.parametrize("xs,ws,attrs", CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_conv_transpose_forward_and_vjp(xs, ws, attrs, bias):
    x, w = rand(*xs, seed=1), rand(*ws, seed=2)
    inputs = [x, w] + ([rand(ws[1] * attrs.get("group", 1), seed=3)] if bias else [])
    (y,), _ = check_op("ConvTranspose", inputs, attrs)
    assert y.dtype == np.float32
    check_vjp("ConvTranspose", inputs, attrs)


@pytest.mark.parametrize("xs,ws,attrs", [c for c in CASES if "output_shape" not in c[2] and "auto_pad" not in c[2]])
def test_conv_transpose_is_the_adjoint_of_conv(xs, ws, attrs):
    # <ConvTranspose(x; W), y> = <x, Conv(y; W)> with the same strides, pads, dilations, groups
    x, w = rand(*xs, seed=1, dtype=np.float64), rand(*ws, seed=2, dtype=np.float64)
    (y,), _ = our_forward("ConvTranspose", [x, w], attrs)
    v = rand(*y.shape, seed=4, dtype=np.float64)
    conv_attrs = {k: a for k, a in attrs.items() if k != "output_padding"}
    (cv,), _ = our_forward("Conv", [v, w], conv_attrs)
    assert cv.shape == x.shape
    np.testing.assert_allclose(np.sum(y * v), np.sum(x * cv), rtol=1e-10)


def test_conv_transpose_kind_and_errors():
    cls = REGISTRY["ConvTranspose"]
    assert (cls.kind, cls.data_input, cls.weight_input, cls.bias_input) == ("linear", 0, 1, 2)
    with pytest.raises(UnsupportedOpError, match="channels"):
        our_forward("ConvTranspose", [rand(1, 2, 4, 4), rand(3, 2, 3, 3)], {})
    with pytest.raises(UnsupportedOpError, match="auto_pad"):
        make_op("ConvTranspose", {"auto_pad": "WRONG"}, 17, "ct")
    op = make_op("ConvTranspose", {}, 17, "ct")
    (y,), ctx = op.forward(rand(1, 2, 4, 4), rand(2, 3, 3, 3))
    with pytest.raises(UnsupportedOpError, match="weights"):
        op.vjp(ctx, [y], [True, True])


@pytest.mark.parametrize("case", [
    "pytorch-converted/test_ConvTranspose2d",
    "pytorch-converted/test_ConvTranspose2d_no_bias",
    "pytorch-operator/test_operator_convtranspose",
])
def test_onnx_backend_data(case):
    check_onnx_case(case)
