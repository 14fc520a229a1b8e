"""Attribute values the spec forbids, and inputs whose inferred shapes an op cannot run, are
refused when the op is made (or checked at load), naming the node; onnxruntime refuses each of
these too, which the test asks it live."""
import pytest

from onnxattr.errors import UnsupportedOpError
from onnxattr.ops import make_op
from optest import ints, rand, run_ort

X = rand(1, 2, 6, 6)
W = rand(4, 2, 3, 3, seed=1)

BAD_ATTRIBUTES = [
    ("Conv", [X, W], {"dilations": [0, 1]}, "dilations"),
    ("Conv", [X, W], {"dilations": [-1, 1]}, "dilations"),
    ("Conv", [X, W], {"strides": [0, 1]}, "strides"),
    ("Conv", [X, W], {"pads": [-1, 0, 0, 0]}, "pads"),
    ("Conv", [X, W], {"kernel_shape": [0, 3]}, "kernel_shape"),
    ("MaxPool", [X], {"kernel_shape": [2, 2], "dilations": [-1, -1]}, "dilations"),
    ("MaxPool", [X], {"kernel_shape": [0, 2]}, "kernel_shape"),
    ("AveragePool", [X], {"kernel_shape": [2, 2], "pads": [0, 0, -1, 0]}, "pads"),
    ("AveragePool", [X], {"kernel_shape": [2, 2], "strides": [1, 0]}, "strides"),
    ("AveragePool", [X], {"kernel_shape": [2, 2], "auto_pad": "SOMETIMES"}, "auto_pad"),
    ("LRN", [X], {"size": 0}, "size"),
    ("DepthToSpace", [rand(1, 8, 2, 2)], {"blocksize": -2}, "blocksize"),
]


@pytest.mark.parametrize("op_type,inputs,attrs,name", BAD_ATTRIBUTES)
def test_forbidden_attribute_is_refused_when_made(op_type, inputs, attrs, name):
    with pytest.raises(Exception):
        run_ort(op_type, inputs, attrs, opset=17)  # onnxruntime refuses it too
    from optest import _parsed

    with pytest.raises(UnsupportedOpError, match=f"'bad'.*{name}"):
        make_op(op_type, _parsed(attrs), 17, "bad")


def test_required_attribute_missing_is_refused_when_made():
    with pytest.raises(UnsupportedOpError, match="'cat'.*required.*axis"):
        make_op("Concat", {}, 13, "cat")


BAD_SHAPES = [
    ("Flatten", {"axis": 9}, [(2, 3, 4)], "axis=9"),
    ("Flatten", {"axis": -4}, [(2, 3, 4)], "axis=-4"),
    ("Softmax", {"axis": 3}, [(2, 3, 4)], "axis=3"),
    ("Conv", {}, [(1, 3, 6, 6), (4, 2, 3, 3)], "channels"),
    ("Conv", {"group": 2}, [(1, 4, 6, 6), (3, 2, 3, 3)], "groups"),
    ("Conv", {}, [(1, 2, 6, 6), (4, 2, 3, 3), (5,)], "bias"),
    ("Conv", {"kernel_shape": [2, 2]}, [(1, 2, 6, 6), (4, 2, 3, 3)], "kernel_shape"),
    ("Conv", {}, [(1, 2, 2, 2), (4, 2, 3, 3)], "no output"),
    ("Conv", {}, [(1, 2, 6), (4, 2, 3, 3)], "rank"),
    ("ConvTranspose", {}, [(1, 3, 6, 6), (2, 4, 3, 3)], "channels"),
    ("Gemm", {}, [(2, 5), (4, 3)], "multiply"),
    ("Gemm", {"transB": 1}, [(2, 5), (3, 4)], "multiply"),
    ("MatMul", {}, [(2, 3, 5), (4, 3)], "multiply"),
    ("MaxPool", {"kernel_shape": [2, 2]}, [(1, 2, 6)], "spatial axes"),
]


@pytest.mark.parametrize("op_type,attrs,shapes,why", BAD_SHAPES)
def test_shapes_an_op_cannot_run_are_refused_at_load(op_type, attrs, shapes, why):
    from optest import _parsed

    op = make_op(op_type, _parsed(attrs), 17, "node7")
    with pytest.raises(UnsupportedOpError, match=f"'node7'.*{why}"):
        op.check(shapes)
    inputs = [rand(*s, seed=i) for i, s in enumerate(shapes)]
    with pytest.raises(Exception):
        run_ort(op_type, inputs, attrs, opset=17)  # onnxruntime refuses it too


def test_matching_shapes_pass_the_check():
    make_op("Conv", {"group": 2}, 17, "c").check([(1, 4, 6, 6), (6, 2, 3, 3), (6,)])
    make_op("Gemm", {"transB": 1}, 17, "g").check([(2, 5), (3, 5), (3,)])
    make_op("MatMul", {}, 17, "m").check([(2, 3, 5), (5,)])
    make_op("Flatten", {"axis": 3}, 17, "f").check([(2, 3, 4)])
    make_op("Conv", {}, 17, "c").check([(None, 2, None, None), (4, 2, 3, 3)])


BAD_BROADCASTS = [
    ("Add", {}, [(2, 3, 4), (5,)]),
    ("Mul", {}, [(2, 3), (3, 2)]),
    ("Max", {}, [(2, 3), (3,), (4, 3)]),
    ("Sum", {}, [(4,), (3,)]),
    ("Where", {}, [(2, 3), (2, 3), (2, 4)]),
    ("BatchNormalization", {}, [(1, 3, 4, 4), (4,), (3,), (3,), (3,)]),
]


@pytest.mark.parametrize("op_type,attrs,shapes", BAD_BROADCASTS)
def test_operands_that_do_not_fit_are_refused_at_load(op_type, attrs, shapes):
    op = make_op(op_type, attrs, 17, "n3")
    with pytest.raises(UnsupportedOpError, match="'n3'"):
        op.check(shapes)
    inputs = [rand(*s, seed=i) > 0 if op_type == "Where" and i == 0 else rand(*s, seed=i) for i, s in enumerate(shapes)]
    with pytest.raises(Exception):
        run_ort(op_type, inputs, attrs, opset=17)


def test_broadcasting_operands_pass_the_check():
    make_op("Add", {}, 17, "a").check([(2, 1, 4), (3, 1), None])
    make_op("Add", {}, 17, "a").check([(None, 3), (5, 1)])
    make_op("BatchNormalization", {}, 17, "b").check([(None, 3, 4, 4)] + [(3,)] * 4)


BAD_VALUES = [
    ("Reshape", {}, [(2, 3, 4), (3,)], [None, ints([5, -1, 2])], "reshape"),
    ("Reshape", {}, [(2, 3, 4), (2,)], [None, ints([-1, -1])], "reshape"),
    ("Squeeze", {}, [(2, 3, 1), (1,)], [None, ints([1])], "squeeze"),
    ("Unsqueeze", {}, [(2, 3), (2,)], [None, ints([0, 0])], "distinct"),
    ("Unsqueeze", {}, [(2, 3), (1,)], [None, ints([5])], "distinct"),
]


@pytest.mark.parametrize("op_type,attrs,shapes,values,why", BAD_VALUES)
def test_constant_operands_that_do_not_fit_are_refused_at_load(op_type, attrs, shapes, values, why):
    op = make_op(op_type, attrs, 13, "n5")
    with pytest.raises(UnsupportedOpError, match=f"'n5'.*{why}"):
        op.check(shapes, values)
    with pytest.raises(Exception):
        run_ort(op_type, [rand(*shapes[0]), values[1]], attrs, opset=13)


def test_fitting_constant_operands_pass_the_check():
    make_op("Reshape", {}, 13, "r").check([(2, 3, 4), (3,)], [None, ints([0, -1, 2])])
    make_op("Reshape", {}, 13, "r").check([(None, 3, 4), (2,)], [None, ints([0, -1])])
    make_op("Squeeze", {}, 13, "s").check([(2, 1, 3), (1,)], [None, ints([-2])])
    make_op("Unsqueeze", {}, 13, "u").check([(2, 3), (2,)], [None, ints([0, -1])])


@pytest.mark.parametrize("op_type,attrs,shapes,values,why", [
    ("Split", {"axis": 1}, [(2, 7), (2,)], [None, ints([3, 3])], "add up"),
    ("Split", {"axis": 3}, [(2, 7)], [None], "out of range"),
    ("Concat", {"axis": 1}, [(2, 3), (4, 3)], [None, None], "differ"),
    ("Concat", {"axis": 2}, [(2, 3), (2, 3)], [None, None], "cannot be joined"),
    ("Gather", {"axis": 0}, [(4, 3), (2,)], [None, ints([1, 4])], "out of range"),
    ("Gather", {"axis": 2}, [(4, 3), (2,)], [None, None], "out of range"),
])
def test_join_and_gather_operands_are_checked_at_load(op_type, attrs, shapes, values, why):
    op = make_op(op_type, attrs, 13, "n9")
    op.n_outputs = 2
    with pytest.raises(UnsupportedOpError, match=f"'n9'.*{why}"):
        op.check(shapes, values)
    make_op("Split", {"axis": 1}, 13, "ok").check([(2, 7), (2,)], [None, ints([3, 4])])
    make_op("Gather", {"axis": -1}, 13, "ok").check([(4, 3), (2,)], [None, ints([-3, 2])])
    make_op("Concat", {"axis": -1}, 13, "ok").check([(2, None), (None, 3)], [None, None])
