"""Bad input gets a clear error that names the problem, before any computation."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import onnxattr
from onnxattr import InputError, ModelError, OptionError, UnsupportedOpError
from oracles import oracle


@pytest.fixture(scope="module")
def cnn():
    path, ref = oracle("cnn_bn")
    return onnxattr.load(path), ref


def test_unsupported_op_is_named_before_running():
    node = helper.make_node("Hardmax", ["x"], ["y"], name="the_hardmax")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])])
    with pytest.raises(UnsupportedOpError, match="the_hardmax.*Hardmax"):
        onnxattr.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def test_other_domain_is_unsupported():
    node = helper.make_node("FusedConv", ["x"], ["y"], name="fc", domain="com.microsoft")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    with pytest.raises(UnsupportedOpError, match="fc.*com.microsoft.FusedConv"):
        onnxattr.load(m)


def test_not_onnx(tmp_path):
    p = tmp_path / "model.onnx"
    p.write_bytes(b"this is not a protobuf \xff\xfe")
    with pytest.raises(ModelError, match="not an ONNX model"):
        onnxattr.load(p)
    with pytest.raises(ModelError, match="no such file"):
        onnxattr.load(tmp_path / "missing.onnx")
    with pytest.raises(ModelError, match="expected a path"):
        onnxattr.load(42)


def test_wrong_dtype(cnn):
    model, ref = cnn
    with pytest.raises(InputError, match="float32"):
        model(ref["input"].astype(np.float64))
    with pytest.raises(InputError, match="numpy array"):
        onnxattr.attribute(model, ref["input"].tolist(), method="gradient")


def test_wrong_shape(cnn):
    model, ref = cnn
    x = ref["input"]
    with pytest.raises(InputError, match=r"dimension 2 is 15, not 16"):
        model(x[:, :, :15])
    with pytest.raises(InputError, match="4 dims"):
        model(x[0])


def test_nan_input(cnn):
    model, ref = cnn
    x = ref["input"].copy()
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        onnxattr.attribute(model, x, method="gradient")


def test_target_out_of_range(cnn):
    model, ref = cnn
    with pytest.raises(InputError, match="out of range"):
        onnxattr.attribute(model, ref["input"], target=1000, method="gradient")
    with pytest.raises(InputError, match="out of range"):
        onnxattr.attribute(model, ref["input"], target=-1, method="gradient")
    with pytest.raises(InputError, match="entries for a batch"):
        onnxattr.attribute(model, ref["input"], target=[0, 1], method="gradient")
    with pytest.raises(InputError, match="int"):
        onnxattr.attribute(model, ref["input"], target="cat", method="gradient")


def test_unknown_method_and_option(cnn):
    model, ref = cnn
    with pytest.raises(OptionError, match="unknown method 'gradiant'.*'gradient'"):
        onnxattr.attribute(model, ref["input"], method="gradiant")
    with pytest.raises(OptionError, match="no option 'stepz'.*steps"):
        onnxattr.attribute(model, ref["input"], method="integrated_gradients", stepz=3)
    with pytest.raises(OptionError, match="steps"):
        onnxattr.attribute(model, ref["input"], method="integrated_gradients", steps=1)
    with pytest.raises(OptionError, match="integration"):
        onnxattr.attribute(model, ref["input"], method="integrated_gradients", integration="simpson")
    with pytest.raises(OptionError, match="device"):
        onnxattr.load(oracle("mlp")[0], device="tpu")


def test_unknown_output_and_several_outputs():
    path, _ = oracle("mlp")
    with pytest.raises(ModelError, match="no tensor named 'nope'"):
        onnxattr.load(path, output_name="nope")
    with pytest.raises(ModelError, match="no input named 'nope'"):
        onnxattr.load(path, input_name="nope")
    proto = onnx.load(path)
    proto.graph.output.append(helper.make_tensor_value_info(proto.graph.node[0].output[0], TensorProto.FLOAT, [None, None]))
    with pytest.raises(ModelError, match="choose one with output_name="):
        onnxattr.load(proto)
    m = onnxattr.load(proto, output_name=proto.graph.node[0].output[0])
    assert m.output_name == proto.graph.node[0].output[0]


def test_loaded_model_is_not_changed_by_attribution(cnn):
    model, ref = cnn
    before = {k: v.copy() for k, v in model.params.items()}
    onnxattr.attribute(model, ref["input"], method="integrated_gradients", steps=4)
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, before[k])


def test_reading_an_output_the_op_does_not_compute_is_refused():
    node = helper.make_node("MaxPool", ["x"], ["y", "idx"], name="pool", kernel_shape=[2, 2])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 4, 4])],
                          [helper.make_tensor_value_info("idx", TensorProto.INT64, [None, 1, 2, 2])])
    with pytest.raises(UnsupportedOpError, match="pool.*MaxPool.*'idx'"):
        onnxattr.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), output_name="idx")


def test_every_error_class_is_exported():
    import inspect

    from onnxattr import errors

    classes = {n for n, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.OnnxAttrError)}
    assert "DeviceMemoryError" in classes
    assert classes <= set(onnxattr.__all__) and all(getattr(onnxattr, n) is getattr(errors, n) for n in classes)
