"""Loading: external data, several inputs/outputs, intermediate outputs, constant folding of
shape computations, exporters' quirks (unsorted nodes, shared names)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxattr
from oracles import oracle
from zoo import ort_run

rng = np.random.default_rng(0)


def init(name, a):
    return numpy_helper.from_array(np.asarray(a), name)


def keras_style_model(opset=13):
    """x (N, 4, 4, 2) NHWC -> Transpose -> Relu -> Reshape to (N, -1) built from Shape/Gather/Concat
    (the batch size is only known at run time) -> MatMul + Add -> Softmax."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
        helper.make_node("Relu", ["t"], ["r"]),
        helper.make_node("Shape", ["r"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes0"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "minus1"], ["target_shape"], axis=0),
        helper.make_node("Reshape", ["r", "target_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    inits = [init("zero", np.int64(0)), init("axes0", np.array([0], np.int64)),
             init("minus1", np.array([-1], np.int64)),
             init("w", rng.standard_normal((32, 5)).astype(np.float32)),
             init("b", rng.standard_normal(5).astype(np.float32))]
    g = helper.make_graph(nodes, "keras", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 4, 2])],
                          [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 5])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def test_dynamic_reshape_softmax_dropped_and_canonized():
    proto = keras_style_model()
    model = onnxattr.load(proto)
    assert model.graph.dropped_softmax == "Softmax"
    assert model.output_name == "logits"
    ops = [n.op_type for n in model.graph.nodes]
    assert "Dense" in ops and "MatMul" not in ops and "Add" not in ops  # MatMul + Add -> one layer
    x = rng.standard_normal((3, 4, 4, 2)).astype(np.float32)
    np.testing.assert_allclose(model(x), ort_run(proto, x, ["logits"])[0], rtol=1e-5, atol=1e-6)
    g = onnxattr.attribute(model, x, 1, "gradient")
    assert g.shape == x.shape and np.abs(g).sum() > 0
    probs = onnxattr.load(proto, output_name="probs")
    np.testing.assert_allclose(probs(x), ort_run(proto, x, ["probs"])[0], rtol=1e-5, atol=1e-6)


def test_intermediate_output_can_be_explained():
    path, ref = oracle("cnn_bn")
    proto = onnx.load(path)
    relu = next(n for n in proto.graph.node if n.op_type == "Relu")
    model = onnxattr.load(proto, output_name=relu.output[0])
    x = ref["input"][:2]
    got = model(x)
    np.testing.assert_allclose(got, ort_run(proto, x, [relu.output[0]])[0], rtol=1e-5, atol=1e-5)
    a = onnxattr.attribute(model, x, target=5, method="gradient")
    assert a.shape == x.shape and np.abs(a).sum() > 0


def test_several_inputs_need_input_name():
    nodes = [helper.make_node("Mul", ["a", "b"], ["y"])]
    g = helper.make_graph(nodes, "two", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 3]) for n in "ab"],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(onnxattr.ModelError, match="choose one with input_name="):
        onnxattr.load(proto)


def test_external_data_loads(tmp_path):
    path, ref = oracle("mlp")
    proto = onnx.load(path)
    onnx.save_model(proto, tmp_path / "ext.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").exists()
    model = onnxattr.load(tmp_path / "ext.onnx")
    np.testing.assert_allclose(model(ref["input"]), ref["logits"], rtol=1e-4, atol=1e-5)


def test_unsorted_nodes_and_shared_names():
    path, ref = oracle("mlp")
    proto = onnx.load(path)
    nodes = list(proto.graph.node)
    for n in nodes:
        n.name = "same"
    del proto.graph.node[:]
    proto.graph.node.extend(reversed(nodes))
    model = onnxattr.load(onnx.ModelProto.FromString(proto.SerializeToString()))
    assert len({n.name for n in model.graph.nodes}) == len(model.graph.nodes)
    np.testing.assert_allclose(model(ref["input"]), ref["logits"], rtol=1e-4, atol=1e-5)


def test_fixed_batch_model_runs_any_batch_in_chunks():
    proto = keras_style_model()
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    model = onnxattr.load(proto)
    assert model.fixed_batch == 1
    x = rng.standard_normal((3, 4, 4, 2)).astype(np.float32)
    want = np.concatenate([ort_run(proto, x[i : i + 1], ["logits"])[0] for i in range(3)])
    np.testing.assert_allclose(model(x), want, rtol=1e-5, atol=1e-6)
    assert onnxattr.attribute(model, x, 0, "integrated_gradients", steps=4).shape == x.shape


def test_layer_graph_on_networkx():
    path, _ = oracle("resnet_small")
    model = onnxattr.load(path)
    g = model.graph.nx
    import networkx as nx

    assert nx.is_directed_acyclic_graph(g)
    adds = [n for n, d in g.nodes(data=True) if d["op_type"] == "Add"]
    assert adds and all(g.in_degree(a) == 2 for a in adds)  # residual: two producers
