import numpy as np
import pytest

from onnxattr.errors import UnsupportedOpError
from onnxattr.ops import make_op
from optest import both, ints, our_forward, rand

F32 = np.float32
COORDS = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn"]
NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
SCALES = [[1, 1, 2, 2], [1, 1, 0.5, 0.75], [1, 1, 1.7, 3], [1, 1, 0.6, 1.3]]
SIZES = [[2, 3, 10, 3], [2, 3, 4, 13], [2, 3, 1, 1]]


def x_in():
    return rand(2, 3, 5, 6)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_upsample_opset_7_scales_attribute(mode):
    both("Upsample", [x_in()], {"mode": mode, "scales": [1.0, 1.0, 2.0, 3.0]}, opset=7)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales", [[1, 1, 2, 2], [1, 1, 1.5, 2.5]])
def test_upsample_opset_9_scales_input(mode, scales):
    both("Upsample", [x_in(), np.array(scales, F32)], {"mode": mode}, opset=9)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales", SCALES)
def test_resize_opset_10(mode, scales):
    both("Resize", [x_in(), np.array(scales, F32)], {"mode": mode}, opset=10)


@pytest.mark.parametrize("coord", COORDS)
@pytest.mark.parametrize("nearest", NEAREST)
@pytest.mark.parametrize("scales", SCALES)
def test_resize_nearest_scales(coord, nearest, scales):
    attrs = {"mode": "nearest", "coordinate_transformation_mode": coord, "nearest_mode": nearest}
    both("Resize", [x_in(), np.array([], F32), np.array(scales, F32)], attrs, opset=11)


@pytest.mark.parametrize("coord", COORDS[:4])
@pytest.mark.parametrize("scales", SCALES)
def test_resize_linear_scales(coord, scales):
    attrs = {"mode": "linear", "coordinate_transformation_mode": coord}
    both("Resize", [x_in(), np.array([], F32), np.array(scales, F32)], attrs, opset=11)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("coord", COORDS[:4])
@pytest.mark.parametrize("sizes", SIZES)
def test_resize_sizes(mode, coord, sizes):
    attrs = {"mode": mode, "coordinate_transformation_mode": coord}
    both("Resize", [x_in(), np.array([], F32), np.array([], F32), ints(sizes)], attrs, opset=11)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_opset_13_without_roi(mode):
    x = x_in()
    both("Resize", [x, None, np.array([1, 1, 2, 1.5], F32)], {"mode": mode}, opset=13)
    both("Resize", [x, None, None, ints([2, 3, 7, 4])], {"mode": mode}, opset=13)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
def test_resize_opset_18_axes_and_aspect_ratio(mode, policy):
    x = x_in()
    # onnxruntime ignores a negative axis under not_larger/not_smaller (it keeps that axis'
    # length), so the policies are checked with non-negative axes
    axes = [-1, 2] if policy == "stretch" else [3, 2]
    attrs = {"mode": mode, "axes": axes, "keep_aspect_ratio_policy": policy}
    both("Resize", [x, None, None, ints([9, 7])], attrs, opset=18)
    both("Resize", [x, None, np.array([2.0, 0.5], F32)], {"mode": mode, "axes": [3, 2]}, opset=18)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("sizes", [[2, 3, 9, 7], [2, 3, 3, 4]])
def test_resize_opset_19_half_pixel_symmetric(mode, sizes):
    attrs = {"mode": mode, "coordinate_transformation_mode": "half_pixel_symmetric"}
    both("Resize", [x_in(), None, None, ints(sizes)], attrs, opset=19)
    both("Resize", [x_in(), None, np.array([1, 1, 1.7, 0.6], F32)], attrs, opset=19)


def test_resize_1d_and_3d_linear():
    both("Resize", [rand(2, 3, 7), None, np.array([1, 1, 1.5], F32)], {"mode": "linear"}, opset=13)
    both("Resize", [rand(1, 2, 3, 4, 5), None, None, ints([1, 2, 5, 6, 4])], {"mode": "linear"}, opset=13)


def test_nearest_vjp_is_a_scatter_add():
    x = rand(1, 1, 2, 2)
    op = make_op("Resize", {"mode": b"nearest"}, 13, "r")
    (y,), ctx = op.forward(x, None, np.array([1, 1, 2, 3], F32))
    dx = op.vjp(ctx, [np.ones_like(y)], [True, False, False])[0]
    np.testing.assert_array_equal(dx, np.full((1, 1, 2, 2), 6, F32))


def test_linear_vjp_conserves_the_total():
    x = x_in()
    op = make_op("Resize", {"mode": b"linear"}, 13, "r")
    (y,), ctx = op.forward(x, None, np.array([1, 1, 1.7, 0.6], F32))
    g = rand(*y.shape, seed=5)
    dx = op.vjp(ctx, [g], [True, False, False])[0]
    assert dx.dtype == F32 and y.dtype == F32
    np.testing.assert_allclose(dx.sum(), g.sum(), rtol=1e-5)


def test_kinds():
    assert make_op("Resize", {"mode": b"nearest"}, 13, "r").kind == "route"
    assert make_op("Resize", {"mode": b"linear"}, 13, "r").kind == "sum"


@pytest.mark.parametrize("attrs,match", [
    ({"mode": b"cubic"}, "cubic"),
    ({"mode": b"linear", "coordinate_transformation_mode": b"tf_crop_and_resize"}, "tf_crop_and_resize"),
    ({"mode": b"nearest", "nearest_mode": b"banker"}, "nearest_mode"),
    ({"mode": b"area"}, "mode"),
])
def test_unsupported_forms(attrs, match):
    with pytest.raises(UnsupportedOpError, match=match):
        make_op("Resize", attrs, 13, "r")


def test_antialiased_linear_downsampling_is_unsupported():
    op = make_op("Resize", {"mode": b"linear", "antialias": 1}, 18, "r")
    op.forward(x_in(), None, np.array([1, 1, 2, 2], F32))  # upsampling: antialias changes nothing
    with pytest.raises(UnsupportedOpError, match="antialias"):
        op.forward(x_in(), None, np.array([1, 1, 0.5, 0.5], F32))


def test_missing_scales_and_sizes():
    with pytest.raises(UnsupportedOpError, match="neither"):
        our_forward("Resize", [x_in(), None, None, None], {}, opset=13)


GPU_CASES = [
    ("Resize", [x_in(), None, np.array([1, 1, 2, 1.5], F32)], {"mode": "nearest"}, 13),
    ("Resize", [x_in(), None, np.array([1, 1, 0.6, 1.7], F32)], {"mode": "linear"}, 13),
    ("Resize", [x_in(), None, None, ints([2, 3, 9, 4])],
     {"mode": "linear", "coordinate_transformation_mode": "align_corners"}, 13),
    ("Upsample", [x_in(), np.array([1, 1, 2, 2], F32)], {"mode": "nearest"}, 9),
]


@pytest.mark.gpu
@pytest.mark.parametrize("op_type,inputs,attrs,opset", GPU_CASES)
def test_on_gpu(op_type, inputs, attrs, opset):
    from optest import same_on_gpu

    same_on_gpu(op_type, inputs, attrs, opset)
