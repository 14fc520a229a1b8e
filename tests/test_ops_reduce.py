import numpy as np
import pytest

from onnxattr.ops import make_op
from optest import check_op, check_vjp, ints, rand

REDUCERS = ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2",
            "ReduceSumSquare", "ReduceLogSumExp"]
#: the first opset where axes is an input
AXES_INPUT = {"ReduceSum": 13}
AXES = [None, [1], [0, 2], [-1], [-3, -1]]


def inputs_and_attrs(op_type, axes, opset, keepdims, x):
    attrs = {} if keepdims is None else {"keepdims": keepdims}
    if axes is None:
        return [x], attrs
    if opset >= AXES_INPUT.get(op_type, 18):
        return [x, ints(axes)], attrs
    return [x], dict(attrs, axes=axes)


@pytest.mark.parametrize("op_type", REDUCERS)
@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("axes", AXES)
@pytest.mark.parametrize("keepdims", [None, 0])
def test_reduce_forward_and_vjp(op_type, opset, axes, keepdims):
    x = rand(3, 4, 5)
    inputs, attrs = inputs_and_attrs(op_type, axes, opset, keepdims, x)
    check_op(op_type, inputs, attrs, opset=opset)
    check_vjp(op_type, inputs, attrs, opset=opset)


@pytest.mark.parametrize("op_type", REDUCERS)
def test_noop_with_empty_axes(op_type):
    opset = 18
    x = rand(2, 3)
    attrs = {"noop_with_empty_axes": 1}
    (y,), _ = check_op(op_type, [x], attrs, opset=opset)  # the elementwise part only
    if op_type in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin"):
        np.testing.assert_array_equal(y, x)
    check_vjp(op_type, [x], attrs, opset=opset)
    # an empty axes input is "no axes" too
    check_op(op_type, [x, ints([])], {}, opset=opset)


@pytest.mark.parametrize("op_type,share", [("ReduceMax", 1 / 3), ("ReduceMin", 1 / 2)])
def test_extremum_ties_share_the_cotangent(op_type, share):
    x = np.array([[1.0, 5.0, 5.0, 5.0], [-2.0, 0.0, -2.0, 1.0]], np.float32)
    op = make_op(op_type, {"axes": [1], "keepdims": 0}, 13, "r")
    (y,), ctx = op.forward(x)
    (dx,) = op.vjp(ctx, [np.ones(2, np.float32)], [True])
    row = 0 if op_type == "ReduceMax" else 1
    np.testing.assert_allclose(dx[row], (x[row] == y[row]) * share)
    np.testing.assert_allclose(dx.sum(axis=1), [1.0, 1.0])


def test_reduce_keeps_float32():
    for op_type in REDUCERS:
        (y,), _ = check_op(op_type, [rand(2, 3)], {"keepdims": 0})
        assert y.dtype == np.float32, op_type


def test_reduce_kinds():
    assert make_op("ReduceMean", {}, 13, "r").kind == "sum"
    assert make_op("ReduceSum", {}, 13, "r").kind == "sum"
    assert make_op("ReduceMax", {}, 13, "r").kind == "maxpool"


@pytest.mark.parametrize("op_type", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("attrs", [{}, {"axis": -1, "keepdims": 0}, {"axis": 1, "select_last_index": 1}])
def test_arg_extremum(op_type, attrs):
    x = np.array([[[1, 3, 3], [0, 0, -1]], [[2, 2, 2], [5, -1, 5]]], np.float32)
    check_op(op_type, [x], attrs, opset=13)
    op = make_op(op_type, {}, 13, "a")
    assert op.kind == "shape" and not op.differentiable


GPU_CASES = [(op_type, [rand(3, 4, 5), ints(axes)], {"keepdims": k}, 18)
             for op_type in REDUCERS for axes, k in (([1], 1), ([0, -1], 0))]
GPU_CASES += [(op_type, [rand(3, 4)], {"noop_with_empty_axes": 1}, 18) for op_type in REDUCERS]
GPU_CASES += [("ReduceMax", [np.array([[1, 3, 3], [2, 0, 2]], np.float32), ints([1])], {}, 18),
              ("ArgMax", [rand(3, 4)], {"axis": 1, "select_last_index": 1}, 13)]


@pytest.mark.gpu
@pytest.mark.parametrize("op_type,inputs,attrs,opset", GPU_CASES)
def test_on_gpu(op_type, inputs, attrs, opset):
    from optest import same_on_gpu

    same_on_gpu(op_type, inputs, attrs, opset)


@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("axis", [0, 2, -1])
def test_cumsum(axis, exclusive, reverse):
    x = rand(3, 4, 5)
    inputs = [x, np.asarray(axis, np.int64)]
    attrs = {"exclusive": exclusive, "reverse": reverse}
    check_op("CumSum", inputs, attrs, opset=14)
    check_vjp("CumSum", inputs, attrs, opset=14)


def test_cumsum_of_integers():
    check_op("CumSum", [np.arange(6, dtype=np.int64).reshape(2, 3), np.asarray([1], np.int32)], opset=11)
