"""Canonization leaves the forward pass unchanged and makes the layers explicit."""
import numpy as np
import pytest

import onnxattr
from onnxattr.canonize import canonize
from onnxattr.graph import build, read_model
from oracles import MODELS, oracle
from zoo import light_model, randomized


@pytest.mark.parametrize("name", MODELS)
def test_forward_unchanged_and_bn_fused(name):
    path, ref = oracle(name)
    raw = build(read_model(path))
    canon = canonize(raw)
    assert "BatchNormalization" not in {n.op_type for n in canon.nodes}
    model = onnxattr.load(path)
    want = onnxattr.Model(raw, model.proto)(ref["input"])
    np.testing.assert_allclose(model(ref["input"]), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.slow
def test_densenet_and_dropout():
    proto = randomized(light_model("densenet121"), seed=0)
    raw = build(read_model(proto))
    canon = canonize(raw)
    assert {"BatchNormalization", "Dropout", "Identity"}.isdisjoint(n.op_type for n in canon.nodes)
    x = np.random.default_rng(0).uniform(0, 1, (1, 3, 224, 224)).astype(np.float32)
    want = onnxattr.Model(raw, proto)(x)
    got = onnxattr.Model(canon, proto)(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_lone_batchnorm_becomes_affine():
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in
             {"s": rng.uniform(0.5, 2, 3), "b": rng.standard_normal(3), "m": rng.standard_normal(3),
              "v": rng.uniform(0.5, 2, 3)}.items()]
    g = helper.make_graph([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3, 4, 4])], inits)
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 15)])
    model = onnxattr.load(proto)
    assert [n.op_type for n in model.graph.nodes] == ["Affine"]
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    from zoo import ort_run

    np.testing.assert_allclose(model(x), ort_run(proto, x, ["y"])[0], rtol=1e-5, atol=1e-6)
