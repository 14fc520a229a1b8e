import numpy as np
import pytest
from onnx import numpy_helper

from onnxattr.errors import UnsupportedOpError
from onnxattr.ops import make_op
from optest import both, check_op, check_vjp, ints, our_forward, rand, run_ort


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
def test_flatten(axis):
    both("Flatten", [rand(2, 3, 4, 5)], {"axis": axis}, opset=13)


def test_flatten_default_axis_opset_9():
    both("Flatten", [rand(2, 3, 4)], opset=9)


@pytest.mark.parametrize("shape", [[6, -1], [0, 0, -1], [-1], [2, 0, 4, 5], [0, 60]])
def test_reshape_input_form(shape):
    both("Reshape", [rand(2, 3, 4, 5), ints(shape)], opset=13)


def test_reshape_opset_5():
    both("Reshape", [rand(2, 3, 4), ints([4, 0, -1])], opset=5)


def test_reshape_allowzero():
    x = rand(0, 3)
    (y,), _ = check_op("Reshape", [x, ints([3, 0])], {"allowzero": 1}, opset=14)
    assert y.shape == (3, 0)
    (y,), _ = check_op("Reshape", [rand(2, 3), ints([0, 3])], {"allowzero": 0}, opset=14)
    assert y.shape == (2, 3)


def test_reshape_attribute_form():
    x = rand(2, 3, 4)
    (y,), _ = our_forward("Reshape", [x], {"shape": [0, -1]}, opset=1)
    np.testing.assert_array_equal(y, x.reshape(2, 12))
    check_vjp("Reshape", [x], {"shape": [0, -1]}, opset=1)


@pytest.mark.parametrize("perm", [None, [0, 2, 1, 3], [3, 1, 0, 2]])
def test_transpose(perm):
    both("Transpose", [rand(2, 3, 4, 5)], {} if perm is None else {"perm": perm})


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat(axis):
    shapes = [[2, 3, 4], [2, 3, 4], [2, 3, 4]]
    for i, s in enumerate(shapes):
        s[axis] = i + 1
    xs = [rand(*s, seed=i) for i, s in enumerate(shapes)]
    both("Concat", xs, {"axis": axis}, wrt=(0, 1, 2))


def test_concat_of_shapes():
    check_op("Concat", [ints([1, 2]), ints([3])], {"axis": 0})


def test_split_attribute_form():
    both("Split", [rand(2, 7, 3)], {"axis": 1, "split": [2, 4, 1]}, opset=11, n_outputs=3)


def test_split_input_form():
    both("Split", [rand(2, 7, 3), ints([3, 4])], {"axis": -2}, opset=13, n_outputs=2)


def test_split_num_outputs():
    both("Split", [rand(7, 3)], {"axis": 0, "num_outputs": 3}, opset=18, n_outputs=3)


@pytest.mark.parametrize("opset", [11, 13])
def test_split_equal_parts_from_the_node_outputs(opset):
    x = rand(2, 6, 3)
    want = run_ort("Split", [x], {"axis": 1}, n_outputs=3, opset=opset)
    op = make_op("Split", {"axis": 1}, opset, "s")
    with pytest.raises(UnsupportedOpError, match="number of outputs"):
        op.forward(x)
    op.n_outputs = 3
    got, ctx = op.forward(x)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_split_vjp_with_missing_cotangents():
    x = rand(2, 7)
    op = make_op("Split", {"axis": 1, "split": [2, 5]}, 11, "s")
    (a, b), ctx = op.forward(x)
    g = rand(2, 5, seed=3)
    (dx,) = op.vjp(ctx, [None, g], [True])
    np.testing.assert_array_equal(dx, np.concatenate([np.zeros((2, 2), np.float32), g], axis=1))


SLICES = [
    # starts, ends, axes, steps
    ([1], [3], None, None),
    ([0, 1], [-1, 100], [0, 2], None),
    ([-3], [-1], [1], [1]),
    ([-1], [-1000], [2], [-1]),           # reverse the whole axis
    ([10], [0], [1], [-2]),               # start past the end, negative step
    ([2, 0], [2 ** 63 - 1, 4], [-1, -2], [2, 3]),
    ([4], [1], [0], [-1]),
    ([3], [1], [1], [1]),                 # empty
]


@pytest.mark.parametrize("starts,ends,axes,steps", SLICES)
def test_slice_input_form(starts, ends, axes, steps):
    x = rand(5, 4, 6)
    inputs = [x, ints(starts), ints(ends), None if axes is None else ints(axes),
              None if steps is None else ints(steps)]
    while inputs[-1] is None:
        inputs.pop()
    both("Slice", inputs, opset=13)


@pytest.mark.parametrize("attrs", [{"starts": [1, -3], "ends": [3, 100]},
                                   {"starts": [-2], "ends": [1000], "axes": [2]},
                                   {"starts": [0, 1], "ends": [-1, -1], "axes": [2, 0]}])
def test_slice_attribute_form(attrs):
    both("Slice", [rand(5, 4, 6)], attrs, opset=9)


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axes", [None, [1], [-1, 1]])
def test_squeeze(opset, axes):
    x = rand(2, 1, 3, 1)
    if axes is None:
        both("Squeeze", [x], opset=opset)
    elif opset < 13:
        both("Squeeze", [x], {"axes": axes}, opset=opset)
    else:
        both("Squeeze", [x, ints(axes)], opset=opset)


def test_squeeze_rejects_a_long_axis():
    with pytest.raises(UnsupportedOpError, match="not of size 1"):
        our_forward("Squeeze", [rand(2, 3), ints([0])], {}, opset=13)


@pytest.mark.parametrize("opset", [11, 13])
@pytest.mark.parametrize("axes", [[0], [1, -1], [-5, 2]])
def test_unsqueeze(opset, axes):
    x = rand(2, 3, 4)
    if opset < 13:
        both("Unsqueeze", [x], {"axes": axes}, opset=opset)
    else:
        both("Unsqueeze", [x, ints(axes)], opset=opset)


PADS = [[0, 1, 2, 1, 0, 2], [1, 0, 1, 2, 3, 0], [1, -1, 0, 0, 2, -2]]


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
@pytest.mark.parametrize("pads", PADS)
def test_pad_input_form(mode, pads):
    x = rand(3, 4, 5)
    inputs = [x, ints(pads)] + ([np.array(1.5, np.float32)] if mode == "constant" else [])
    both("Pad", inputs, {"mode": mode}, opset=13)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_attribute_form(mode):
    attrs = {"mode": mode, "pads": [0, 2, 1, 0, 1, 3]}
    if mode == "constant":
        attrs["value"] = -2.0
    both("Pad", [rand(2, 4, 5)], attrs, opset=2)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_axes_input(mode):
    x = rand(2, 3, 4, 5)
    both("Pad", [x, ints([1, 2, 2, 1]), None, ints([-1, 1])], {"mode": mode}, opset=19)


def test_pad_without_value_pads_zeros():
    (y,), _ = check_op("Pad", [rand(2, 3), ints([1, 1, 1, 1])], opset=13)
    assert y[0, 0] == 0


def test_pad_unknown_mode():
    with pytest.raises(UnsupportedOpError, match="mode"):
        make_op("Pad", {"mode": b"mirror"}, 13, "p")


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("indices", [[2, 0, -1, 2], [[0, 1], [-2, 0]], 1, -1])
def test_gather(axis, indices):
    x = rand(3, 4, 5)
    idx = np.asarray(indices, dtype=np.int64)
    both("Gather", [x, idx], {"axis": axis})


def test_gather_int32_indices_and_int_data():
    check_op("Gather", [ints([3, 224, 224]), np.asarray([1, 2], np.int32)], {"axis": 0})


@pytest.mark.parametrize("opset,attrs", [(13, {}), (15, {"start": 1}), (15, {"start": -3, "end": -1}),
                                         (15, {"end": 10})])
def test_shape(opset, attrs):
    check_op("Shape", [rand(2, 3, 4, 5)], attrs, opset=opset)


def test_size():
    check_op("Size", [rand(2, 3, 4)])


def test_constant_of_shape():
    check_op("ConstantOfShape", [ints([2, 3])])
    value = numpy_helper.from_array(np.array([7], np.int64))
    check_op("ConstantOfShape", [ints([4])], {"value": value})


@pytest.mark.parametrize("attrs", [
    {"value": numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3))},
    {"value_float": 2.5},
    {"value_floats": [1.0, 2.0]},
    {"value_int": 3},
    {"value_ints": [1, -1]},
])
def test_constant(attrs):
    check_op("Constant", [], attrs, opset=13)


def test_constant_string_is_unsupported():
    with pytest.raises(UnsupportedOpError, match="value_string"):
        make_op("Constant", {"value_string": b"x"}, 13, "c")


@pytest.mark.parametrize("xs,shape", [((3, 1), [2, 3, 4]), ((2, 3, 4), [3, 1]), ((1, 4), [3, 1]), ((3,), [3])])
def test_expand(xs, shape):
    both("Expand", [rand(*xs), ints(shape)])


@pytest.mark.parametrize("reps", [[1, 1], [2, 3], [3, 1]])
def test_tile(reps):
    both("Tile", [rand(2, 3), ints(reps)])


@pytest.mark.parametrize("values,dtype", [((0, 10, 3), np.int64), ((5, -2, -2), np.int64),
                                          ((0.5, 2.0, 0.25), np.float32), ((3, 3, 1), np.int32)])
def test_range(values, dtype):
    check_op("Range", [np.array(v, dtype) for v in values], opset=11)


@pytest.mark.parametrize("op_type", ["Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"])
def test_comparisons(op_type):
    a = np.array([[1, 2, 3], [4, 5, 6]], np.int64)
    b = np.array([3, 2, 1], np.int64)
    check_op(op_type, [a, b], opset=16)


def test_logic():
    a = np.array([True, False, True])
    b = np.array([[True], [False]])
    check_op("Not", [a])
    check_op("And", [a, b])
    check_op("Or", [a, b])


def test_where():
    cond = rand(3, 1, 5, seed=4) > 0
    x, z = rand(3, 4, 1, seed=1), rand(4, 5, seed=2)
    both("Where", [cond, x, z], wrt=(1, 2))


def test_nonzero():
    check_op("NonZero", [np.array([[1, 0, 2], [0, 3, 0]], np.float32)])
    check_op("NonZero", [np.array([0, 0], np.int64)])


def test_route_and_shape_kinds():
    assert make_op("Reshape", {}, 13, "r").kind == "route"
    assert make_op("Pad", {"mode": b"edge"}, 13, "p").kind == "route"
    for op_type in ("Shape", "Size", "ConstantOfShape", "Range", "Equal"):
        op = make_op(op_type, {}, 13, "s")
        assert op.kind == "shape" and not op.differentiable


# ---- the same op code on CuPy arrays ------------------------------------------------------

GPU_CASES = [
    ("Flatten", [rand(2, 3, 4)], {"axis": 2}, 13),
    ("Reshape", [rand(2, 3, 4), ints([0, -1])], {}, 13),
    ("Transpose", [rand(2, 3, 4)], {"perm": [1, 2, 0]}, 13),
    ("Concat", [rand(2, 3), rand(2, 2, seed=1)], {"axis": 1}, 13),
    ("Split", [rand(2, 7), ints([3, 4])], {"axis": 1}, 13),
    ("Slice", [rand(5, 6), ints([4, 1]), ints([-100, 5]), ints([0, 1]), ints([-2, 2])], {}, 13),
    ("Squeeze", [rand(2, 1, 3), ints([1])], {}, 13),
    ("Unsqueeze", [rand(2, 3), ints([0, -1])], {}, 13),
    ("Pad", [rand(2, 3, 4), ints([0, 1, 2, 0, 2, -1]), np.array(0.5, np.float32)], {"mode": "constant"}, 13),
    ("Pad", [rand(2, 3, 4), ints([0, 2, 2, 0, 1, 3])], {"mode": "reflect"}, 13),
    ("Pad", [rand(2, 3, 4), ints([0, 2, 2, 0, 1, 3])], {"mode": "edge"}, 13),
    ("Gather", [rand(4, 5), ints([[0, 3], [-1, 0]])], {"axis": 1}, 13),
    ("Expand", [rand(3, 1), ints([2, 3, 4])], {}, 13),
    ("Tile", [rand(2, 3), ints([2, 2])], {}, 13),
    ("Where", [rand(3, 4, seed=3) > 0, rand(3, 4), rand(4, seed=1)], {}, 13),
    ("Shape", [rand(2, 3)], {}, 13),
    ("Range", [np.array(0.5, np.float32), np.array(3.0, np.float32), np.array(0.5, np.float32)], {}, 13),
    ("NonZero", [rand(3, 4) > 0], {}, 13),
    ("Equal", [rand(3, 4) > 0, rand(4) > 0], {}, 13),
]


@pytest.mark.gpu
@pytest.mark.parametrize("op_type,inputs,attrs,opset", GPU_CASES)
def test_on_gpu(op_type, inputs, attrs, opset):
    from optest import same_on_gpu

    same_on_gpu(op_type, inputs, attrs, opset)
