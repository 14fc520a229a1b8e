"""The opset-23 transformer ops: forwards against onnxruntime, vjps against finite differences."""
import numpy as np
import pytest

from onnxattr.errors import UnsupportedOpError
from onnxattr.ops import make_op
from optest import both as both_at, rand

OPSET = 23


def both(op_type, inputs, attrs, wrt):
    both_at(op_type, inputs, attrs, opset=OPSET, wrt=wrt)


def causal_bool(sq, skv):
    return np.tril(np.ones((sq, skv), bool))


@pytest.mark.parametrize("attrs", [{}, {"scale": 0.3}, {"softcap": 2.0}, {"is_causal": 1}])
def test_attention_4d(attrs):
    q, k, v = rand(2, 4, 3, 8, seed=1), rand(2, 4, 5, 8, seed=2), rand(2, 4, 5, 6, seed=3)
    both("Attention", [q, k, v], attrs, wrt=(0, 1, 2))


def test_attention_3d_grouped_query_heads():
    q, k, v = rand(2, 3, 32, seed=1), rand(2, 5, 16, seed=2), rand(2, 5, 16, seed=3)
    both("Attention", [q, k, v], {"q_num_heads": 4, "kv_num_heads": 2}, wrt=(0, 1, 2))


def test_attention_boolean_mask_and_causal():
    q, k, v = rand(2, 2, 4, 8, seed=1), rand(2, 2, 4, 8, seed=2), rand(2, 2, 4, 8, seed=3)
    mask = np.ones((2, 1, 4, 4), bool)
    mask[1, :, :, 3] = False  # a padded key in the second sample
    both("Attention", [q, k, v, mask], {}, wrt=(0, 1, 2))
    both("Attention", [q, k, v, mask], {"is_causal": 1}, wrt=(0, 1, 2))


def test_attention_float_mask_gets_its_gradient():
    q, k, v = rand(1, 2, 3, 4, seed=1), rand(1, 2, 5, 4, seed=2), rand(1, 2, 5, 4, seed=3)
    mask = rand(3, 5, seed=4)
    both("Attention", [q, k, v, mask], {}, wrt=(0, 1, 2, 3))


def test_attention_cache_is_refused_at_load():
    op = make_op("Attention", {}, OPSET, "att")
    with pytest.raises(UnsupportedOpError, match="'att'.*cache"):
        op.check([(1, 2, 3, 4)] * 3 + [None, (1, 2, 3, 4), (1, 2, 3, 4)])


@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("rotary_dim", [0, 4])
def test_rotary_embedding_4d_with_positions(interleaved, rotary_dim):
    x = rand(2, 3, 4, 8)
    half = (rotary_dim or 8) // 2
    angles = rand(10, half, seed=1)
    pos = np.array([[0, 1, 2, 3], [5, 6, 7, 9]], np.int64)
    attrs = {"interleaved": interleaved, "rotary_embedding_dim": rotary_dim}
    both("RotaryEmbedding", [x, np.cos(angles), np.sin(angles), pos], attrs, wrt=(0,))


def test_rotary_embedding_3d_without_positions():
    x = rand(2, 4, 12)
    angles = rand(2, 4, 2, seed=1)
    both("RotaryEmbedding", [x, np.cos(angles), np.sin(angles)], {"num_heads": 3}, wrt=(0,))
