"""The ops added for transformers and today's exporters, against onnx's reference evaluator
(onnx.reference), the second oracle beside onnxruntime."""
import numpy as np
import pytest

from optest import check_op, ints, rand, run_reference, same_on_gpu

I64 = np.int64
CASES = [
    ("IsNaN", [np.array([0.0, np.nan, 1.0], np.float32)], {}, 13),
    ("IsInf", [np.array([np.inf, -np.inf, 1.0], np.float32)], {"detect_negative": 0}, 10),
    ("Mod", [ints([-7, 5, 9]), ints([3, -4, 2])], {}, 13),
    ("Mod", [rand(5) * 4, np.array([1.5, -2.5, 0.7, 3.0, -1.1], np.float32)], {"fmod": 1}, 13),
    ("GatherElements", [rand(3, 4), ints([[0, 3], [1, -1], [2, 2]])], {"axis": 1}, 13),
    ("GatherND", [rand(2, 3, 4), ints([[[1], [0]], [[2], [1]]])], {"batch_dims": 1}, 13),
    ("ScatterElements", [rand(3, 4), ints([[1], [0], [3]]), rand(3, 1, seed=1)], {"axis": 1}, 18),
    ("ScatterND", [rand(4, 3), ints([[1], [3]]), rand(2, 3, seed=1)], {"reduction": "add"}, 18),
    ("Sin", [rand(3, 4)], {}, 7),
    ("Cos", [rand(3, 4)], {}, 7),
    ("Trilu", [rand(2, 4, 5), ints(1)], {"upper": 0}, 14),
    ("CumSum", [rand(3, 4), ints(1)], {"exclusive": 1, "reverse": 1}, 14),
    ("Einsum", [rand(2, 3, 4), rand(2, 4, 5, seed=1)], {"equation": "bij,bjk->bik"}, 12),
    ("DepthToSpace", [rand(1, 8, 2, 3)], {"blocksize": 2, "mode": "CRD"}, 13),
    ("SpaceToDepth", [rand(1, 2, 4, 6)], {"blocksize": 2}, 13),
    ("Gelu", [rand(3, 4)], {"approximate": "tanh"}, 20),
    ("Gelu", [rand(3, 4)], {}, 20),
    ("RMSNormalization", [rand(2, 3, 8), rand(8, seed=1)], {}, 23),
    ("RotaryEmbedding", [rand(2, 3, 4, 8), np.cos(rand(6, 4)), np.sin(rand(6, 4)),
                         ints([[0, 1, 2, 3], [2, 3, 4, 5]])], {"interleaved": 1}, 23),
    ("Attention", [rand(2, 3, 16), rand(2, 5, 8, seed=1), rand(2, 5, 8, seed=2)],
     {"q_num_heads": 4, "kv_num_heads": 2, "is_causal": 1, "softcap": 3.0}, 23),
    ("Softmax", [rand(2, 3, 4)], {"axis": 0}, 13),
    ("LogSoftmax", [rand(2, 3, 4)], {"axis": 1}, 13),
]


@pytest.mark.parametrize("op_type,inputs,attrs,opset", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_forward_equals_onnx_reference(op_type, inputs, attrs, opset):
    check_op(op_type, inputs, attrs, opset=opset, oracle=run_reference)


@pytest.mark.gpu
@pytest.mark.parametrize("op_type,inputs,attrs,opset", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_same_on_gpu(op_type, inputs, attrs, opset):
    same_on_gpu(op_type, inputs, attrs, opset=opset)
