"""The ops of onnxattr/ops/index.py, reshape.py's block ops and constant.py's tests: forwards
against onnxruntime, vjps against finite differences."""
import numpy as np
import pytest

from onnxattr.errors import UnsupportedOpError
from onnxattr.ops import make_op
from optest import check_op, check_vjp, ints, rand


def both(op_type, inputs, attrs=None, opset=17, wrt=(0,)):
    outputs, _ = check_op(op_type, inputs, attrs, opset=opset)
    check_vjp(op_type, inputs, attrs, wrt=wrt, opset=opset)
    return outputs


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather_elements(axis):
    x = rand(3, 4, 5)
    n = x.shape[axis]
    shape = list(x.shape)
    shape[axis] = 6  # more indices than cells: repeats, whose cotangents add up
    idx = np.random.default_rng(1).integers(-n, n, size=shape).astype(np.int64)
    both("GatherElements", [x, idx], {"axis": axis}, opset=13)


@pytest.mark.parametrize("batch_dims", [0, 1])
@pytest.mark.parametrize("k", [1, 2])
def test_gather_nd(batch_dims, k):
    x = rand(3, 4, 5, 2)
    rng = np.random.default_rng(2)
    lead = (3, 6) if batch_dims else (6,)
    dims = x.shape[batch_dims:batch_dims + k]
    idx = np.stack([rng.integers(-d, d, size=lead) for d in dims], axis=-1).astype(np.int64)
    both("GatherND", [x, idx], {"batch_dims": batch_dims}, opset=13)


def test_gather_nd_opset_11():
    x = rand(4, 5)
    both("GatherND", [x, ints([[0, 1], [3, -1]])], opset=11)


@pytest.mark.parametrize("reduction", [None, "add"])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_scatter_elements(axis, reduction):
    x = rand(4, 5, 3)
    n = x.shape[axis]
    shape = list(x.shape)
    shape[axis] = 2
    rng = np.random.default_rng(3)
    # distinct indices along the axis (the spec leaves duplicates undefined without a reduction)
    idx = np.moveaxis(np.argsort(rng.random(np.moveaxis(np.zeros(x.shape), axis, -1).shape), axis=-1)[..., :2],
                      -1, axis) - (n if reduction else 0)
    upd = rand(*shape, seed=4)
    attrs = {"axis": axis} if reduction is None else {"axis": axis, "reduction": reduction}
    both("ScatterElements", [x, idx.astype(np.int64), upd], attrs, opset=16, wrt=(0, 2))


@pytest.mark.parametrize("reduction", [None, "add"])
def test_scatter_nd(reduction):
    x = rand(4, 5, 3)
    idx = ints([[[0, 1], [3, -1]], [[2, 2], [-4, 0]]])
    upd = rand(2, 2, 3, seed=5)
    attrs = {} if reduction is None else {"reduction": reduction}
    both("ScatterND", [x, idx, upd], attrs, opset=16, wrt=(0, 2))


def test_scatter_nd_opset_11_rows():
    both("ScatterND", [rand(4, 3), ints([[1], [3]]), rand(2, 3, seed=6)], opset=11, wrt=(0, 2))


def test_scatter_mul_is_refused_when_made():
    with pytest.raises(UnsupportedOpError, match="'s1'.*reduction='mul'"):
        make_op("ScatterElements", {"reduction": b"mul"}, 16, "s1")


@pytest.mark.parametrize("upper", [0, 1])
@pytest.mark.parametrize("k", [None, -1, 0, 2])
def test_trilu(upper, k):
    inputs = [rand(2, 4, 5)] + ([] if k is None else [ints(k)])
    both("Trilu", inputs, {"upper": upper}, opset=14)


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space(mode):
    both("DepthToSpace", [rand(2, 8, 3, 4)], {"blocksize": 2, "mode": mode}, opset=13)


def test_depth_to_space_opset_1():
    both("DepthToSpace", [rand(1, 9, 2, 2)], {"blocksize": 3}, opset=1)


def test_space_to_depth():
    both("SpaceToDepth", [rand(2, 3, 4, 6)], {"blocksize": 2}, opset=13)


def test_blocksize_zero_is_refused_when_made():
    with pytest.raises(UnsupportedOpError, match="'d2s'.*blocksize=0"):
        make_op("DepthToSpace", {"blocksize": 0}, 13, "d2s")


def test_isnan_isinf():
    x = np.array([[0.0, np.nan, np.inf], [-np.inf, 1.0, np.nan]], np.float32)
    check_op("IsNaN", [x], opset=13)
    for attrs in ({}, {"detect_negative": 0}, {"detect_positive": 0}):
        check_op("IsInf", [x], attrs, opset=10)
    assert not make_op("IsNaN", {}, 13, "n").differentiable
