"""Einsum: forwards against onnxruntime, vjps of every operand against finite differences."""
import pytest

from onnxattr.errors import UnsupportedOpError
from onnxattr.ops import make_op
from optest import check_op, check_vjp, rand

CASES = [
    ("ij,jk->ik", [(3, 4), (4, 5)]),
    ("bhqd,bhkd->bhqk", [(2, 3, 4, 5), (2, 3, 6, 5)]),
    ("bhqk,bhkd->bhqd", [(2, 3, 4, 6), (2, 3, 6, 5)]),
    ("ij,jk", [(3, 4), (4, 5)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (1, 4, 5)]),
    ("i...j,j->i...", [(3, 2, 4), (4,)]),
    ("ij->j", [(3, 4)]),
    ("ij->", [(3, 4)]),
    ("i,j->ij", [(3,), (4,)]),
    ("bn,anm,bm->ba", [(2, 3), (4, 3, 5), (2, 5)]),
    ("ij,kj->i", [(3, 4), (5, 4)]),
]


@pytest.mark.parametrize("equation,shapes", CASES)
def test_einsum(equation, shapes):
    xs = [rand(*s, seed=i) for i, s in enumerate(shapes)]
    check_op("Einsum", xs, {"equation": equation}, opset=12)
    check_vjp("Einsum", xs, {"equation": equation}, opset=12, wrt=tuple(range(len(xs))))


def test_diagonal_is_refused_when_made():
    with pytest.raises(UnsupportedOpError, match="'e'.*diagonal"):
        make_op("Einsum", {"equation": b"ii->i"}, 12, "e")
