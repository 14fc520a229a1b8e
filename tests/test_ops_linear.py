import numpy as np
import pytest

from optest import check_op, check_vjp, rand
from kernel_paths import kernels  # noqa: F401  (the fixture)

pytestmark = pytest.mark.usefixtures("kernels")


CONV_CASES = [
    # (x shape, w shape, attrs)
    ((2, 3, 9, 8), (4, 3, 3, 3), {}),
    ((2, 3, 9, 8), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 4, 11, 10), (6, 2, 3, 2), {"group": 2, "strides": [2, 1], "pads": [1, 0, 2, 1]}),
    ((1, 4, 12, 12), (4, 1, 3, 3), {"group": 4, "pads": [1, 1, 1, 1]}),  # depthwise
    ((2, 3, 13, 13), (5, 3, 3, 3), {"dilations": [2, 2], "strides": [2, 3]}),
    ((2, 3, 10, 9), (5, 3, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((2, 3, 10, 9), (5, 3, 4, 4), {"auto_pad": "SAME_LOWER", "strides": [3, 2]}),
    ((2, 3, 10, 9), (5, 3, 1, 1), {}),  # pointwise
    ((2, 3, 10, 9), (5, 3, 1, 1), {"strides": [2, 2]}),  # strided pointwise
    ((2, 3, 17), (4, 3, 5), {"pads": [2, 1], "strides": [2]}),  # 1-D
    ((1, 2, 5, 6, 7), (3, 2, 2, 3, 2), {"pads": [1, 0, 1, 0, 1, 1]}),  # 3-D
]


@pytest.mark.parametrize("xs,ws,attrs", CONV_CASES)
@pytest.mark.parametrize("bias", [False, True])
def test_conv_forward_and_vjp(xs, ws, attrs, bias):
    x, w = rand(*xs, seed=1), rand(*ws, seed=2)
    inputs = [x, w] + ([rand(ws[0], seed=3)] if bias else [])
    check_op("Conv", inputs, attrs)
    check_vjp("Conv", inputs, attrs)


@pytest.mark.parametrize("attrs", [{}, {"transA": 1}, {"transB": 1, "alpha": 0.5, "beta": 2.0}])
def test_gemm(attrs):
    a = rand(5, 4, seed=1)
    b = rand(4, 3, seed=2)
    if attrs.get("transA"):
        a = a.T.copy()
    if attrs.get("transB"):
        b = b.T.copy()
    c = rand(3, seed=3)
    check_op("Gemm", [a, b, c], attrs)
    check_vjp("Gemm", [a, b, c], attrs, wrt=(0, 1, 2))


@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((4,), (4, 5)),
                                   ((2, 3, 4), (4,)), ((2, 1, 3, 4), (5, 4, 2))])
def test_matmul(sa, sb):
    a, b = rand(*sa, seed=1), rand(*sb, seed=2)
    check_op("MatMul", [a, b])
    check_vjp("MatMul", [a, b], wrt=(0, 1))


@pytest.mark.parametrize("chunk_bytes", [1, 3 * 3 * 3 * 9 * 8 * 4 * 2])  # one image; two of five
@pytest.mark.parametrize("op_type,ws,attrs", [
    ("Conv", (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}),  # stride 1: vjp as a flipped correlation
    ("Conv", (4, 3, 3, 3), {"strides": [2, 2], "pads": [1, 0, 1, 2]}),  # vjp by col2im
    ("ConvTranspose", (3, 2, 3, 3), {"strides": [2, 2], "pads": [1, 1, 0, 0]}),
])
def test_convolutions_in_chunks_of_images(monkeypatch, chunk_bytes, op_type, ws, attrs):
    # im2col copies a chunk of images at a time; the result must not depend on the chunking
    monkeypatch.setattr("onnxattr.ops.window.CHUNK_BYTES", chunk_bytes)
    inputs = [rand(5, 3, 9, 8, seed=1), rand(*ws, seed=2), rand(ws[0] if op_type == "Conv" else ws[1], seed=3)]
    check_op(op_type, inputs, attrs)
    check_vjp(op_type, inputs, attrs)


@pytest.mark.parametrize("xs", [(5, 4), (2, 3, 4)])
def test_dense_is_matmul_plus_bias(xs):
    from optest import our_forward

    x, w, b = rand(*xs, seed=1), rand(4, 3, seed=2), rand(3, seed=3)
    (y,), _ = our_forward("Dense", [x, w, b], {})
    (want,), _ = check_op("MatMul", [x, w])
    np.testing.assert_allclose(y, want + b, rtol=1e-6)
    check_vjp("Dense", [x, w, b])
