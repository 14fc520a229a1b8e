"""Bad input gets a clear error that names the problem, before any computation."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxattr
from onnxattr import InputError, ModelError, OptionError, UnsupportedOpError
from oracles import oracle
from zoo import ort_run


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


# ---- what onnxruntime refuses, load refuses; what it runs, load accepts ---------------------
def dense_model(w_shape=(4, 3), x_shape=("N", 4), opset=17, ir=None, out_shape=("N", 3), op="MatMul", **attrs):
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal(w_shape).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node(op, ["x", "w"], ["y"], name="the_layer", **attrs)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape and list(out_shape))], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    if ir is not None:
        m.ir_version = ir
    return m


def test_opset_newer_than_onnx_knows_is_refused():
    with pytest.raises(ModelError, match="opset 99 of the default ONNX domain"):
        onnxattr.load(dense_model(opset=99))


def test_op_definition_newer_than_the_kernels_is_unsupported_by_name():
    path, _ = oracle("mlp")
    proto = onnx.load(path)
    proto.opset_import[0].version = 24
    proto.graph.node[1].op_type = "Identity"  # Identity-24 is newer than the kernels' Identity-23
    with pytest.raises(UnsupportedOpError, match=r"'/1/Relu'.*opset 24 uses Identity-24"):
        onnxattr.load(proto)
    assert onnxattr.load(dense_model(opset=24))  # MatMul did not change after opset 13


def test_ir3_model_with_initializers_not_listed_as_inputs_runs():
    proto = dense_model(opset=8, ir=3)
    x = np.random.default_rng(1).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(onnxattr.load(proto)(x), ort_run(proto, x, ["y"])[0], rtol=1e-5, atol=1e-6)


def test_output_without_declared_shape_runs():
    proto = dense_model(out_shape=None)
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(onnxattr.load(proto)(x), ort_run(proto, x, ["y"])[0], rtol=1e-5)


def test_input_declared_empty_or_not_float32_is_unsupported():
    with pytest.raises(UnsupportedOpError, match=r"'x'.*dimension 1 is declared 0"):
        onnxattr.load(dense_model(w_shape=(0, 3), x_shape=("N", 0)))
    proto = dense_model()
    proto.graph.input[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    proto.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ones((4, 3)), "w"))
    proto.graph.output[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    with pytest.raises(UnsupportedOpError, match=r"'x'.*float64"):
        onnxattr.load(proto)


@pytest.mark.parametrize("proto,match", [
    (dense_model(w_shape=(5, 3)), "the_layer.*Incompatible dimensions"),
    (dense_model(x_shape=("N", 0)), "the_layer.*Incompatible dimensions"),
    (dense_model(w_shape=(3, 5), op="Gemm", transB=0, out_shape=("N", 5)), "the_layer.*Dimension mismatch"),
    (dense_model(w_shape=(2, 4, 3, 3), x_shape=("N", 3, 8, 8), op="Conv", out_shape=None),
     r"'the_layer' \(Conv\): input has 3 channels; the weight of shape \(2, 4, 3, 3\) with group=1 takes 4"),
    (dense_model(w_shape=(3, 3, 3, 3), x_shape=("N", 6, 8, 8), op="Conv", out_shape=None, group=2),
     "'the_layer' .*cannot be split into group=2 groups"),
    (dense_model(w_shape=(4, 3, 3, 3), x_shape=("N", 3, 8, 8), op="Conv", out_shape=None, kernel_shape=[5, 5]),
     r"'the_layer' .*kernel_shape \[5, 5\] differs"),
    (dense_model(w_shape=(4, 0, 3, 3), x_shape=("N", "C", 8, 8), op="Conv", out_shape=None),
     r"'the_layer' \(Conv\): weight of shape \(4, 0, 3, 3\) is empty"),
], ids=["MatMul", "declared-width-0", "Gemm", "Conv-channels", "Conv-groups", "Conv-kernel", "Conv-empty-weight"])
def test_mismatched_weights_are_refused_at_load_by_node(proto, match):
    with pytest.raises(ModelError, match=match):
        onnxattr.load(proto)


def test_gemm_bias_that_does_not_broadcast_is_refused_at_load():
    proto = dense_model(op="Gemm")
    proto.graph.node[0].input.append("c")
    proto.graph.initializer.append(numpy_helper.from_array(np.ones(5, np.float32), "c"))
    with pytest.raises(ModelError, match=r"'the_layer' \(Gemm\): C of shape \(5,\) does not broadcast to \(N, 3\)"):
        onnxattr.load(proto)


def test_second_graph_input_is_held_fixed_not_refused():
    nodes = [helper.make_node("Mul", ["a", "b"], ["y"], name="mul")]
    g = helper.make_graph(nodes, "two", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 3]) for n in "ab"],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])])
    model = onnxattr.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), input_name="a")
    a, b = np.ones((2, 3), np.float32), np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(model({"a": a, "b": b}), a * b)
    with pytest.raises(InputError, match="'b'"):
        model(a)


def test_model_text_in_messages_is_escaped():
    def model(op_type, name):
        g = helper.make_graph([helper.make_node(op_type, ["x"], ["y"], name=name)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])

    with pytest.raises(UnsupportedOpError) as e:
        onnxattr.load(model("Hardmax", "evil\x1b]0;pwned\x07"))
    assert str(e.value).isprintable() and "evil\\x1b]0;pwned\\x07" in str(e.value)
    with pytest.raises(ModelError) as e:
        onnxattr.load(model("No\x1b[2JOp", "n"))
    assert str(e.value).isprintable() and "No\\x1b[2JOp" in str(e.value)
