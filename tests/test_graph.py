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


# ---- untrusted models: external data stays inside the model's folder ----------------------
def external_model(folder, location="weights.bin"):
    """mlp saved with its weights in one external file, then pointed at ``location``."""
    path, ref = oracle("mlp")
    proto = onnx.load(path)
    onnx.save_model(proto, folder / "ext.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    proto = onnx.load(folder / "ext.onnx", load_external_data=False)
    for t in proto.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    return proto, ref


def test_model_proto_with_external_data_needs_base_dir(tmp_path, monkeypatch):
    proto, ref = external_model(tmp_path)
    before = proto.SerializeToString()
    monkeypatch.chdir(tmp_path)  # where the old loader looked
    with pytest.raises(onnxattr.ModelError, match=f"keeps tensor '{proto.graph.initializer[0].name}' and .* external files; pass base_dir="):
        onnxattr.load(proto)
    model = onnxattr.load(proto, base_dir=tmp_path)
    np.testing.assert_allclose(model(ref["input"]), ref["logits"], rtol=1e-4, atol=1e-5)
    assert proto.SerializeToString() == before  # the caller's proto is left as it was
    with pytest.raises(onnxattr.OptionError, match="base_dir= is only for a ModelProto"):
        onnxattr.load(tmp_path / "ext.onnx", base_dir=tmp_path)


@pytest.mark.parametrize("location", ["../secret.bin", "sub/../../secret.bin", "/etc/hostname", "..\\secret.bin"])
def test_external_data_outside_the_folder_is_refused(tmp_path, location):
    (tmp_path / "secret.bin").write_bytes(b"\x00" * 100000)
    folder = tmp_path / "model"
    folder.mkdir()
    proto, _ = external_model(folder, location)
    onnx.save_model(proto, folder / "bad.onnx")
    with pytest.raises(onnxattr.ModelError, match="inside the model's folder"):
        onnxattr.load(folder / "bad.onnx")
    with pytest.raises(onnxattr.ModelError, match="inside the model's folder"):
        onnxattr.load(proto, base_dir=folder)


def test_external_data_through_a_symlink_out_is_refused(tmp_path):
    (tmp_path / "secret.bin").write_bytes(b"\x00" * 100000)
    folder = tmp_path / "model"
    folder.mkdir()
    proto, _ = external_model(folder, "link.bin")
    (folder / "link.bin").symlink_to(tmp_path / "secret.bin")
    onnx.save_model(proto, folder / "bad.onnx")
    with pytest.raises(onnxattr.ModelError, match="'link.bin' leads outside the model's folder"):
        onnxattr.load(folder / "bad.onnx")


def test_external_data_beyond_the_file_is_refused(tmp_path):
    proto, _ = external_model(tmp_path)
    t = proto.graph.initializer[0]
    for e in t.external_data:
        if e.key == "offset":
            e.value = str(10**9)
    onnx.save_model(proto, tmp_path / "bad.onnx")
    with pytest.raises(onnxattr.ModelError, match=f"tensor '{t.name}': external data bytes .* lie outside"):
        onnxattr.load(tmp_path / "bad.onnx")


# ---- constant folding is bounded before it allocates ----------------------------------------
def folded_model(node, inits):
    """y = x + sum(node's output): the node's inputs are all constant, so load folds it."""
    nodes = [node, helper.make_node("ReduceSum", [node.output[0]], ["s"], keepdims=0),
             helper.make_node("Add", ["x", "s"], ["y"])]
    g = helper.make_graph(nodes, "fold", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("node,inits,size", [
    (helper.make_node("Expand", ["one", "shape"], ["big"], name="the_expand"),
     {"one": np.ones((1, 1), np.float32), "shape": np.array([100000, 100000], np.int64)}, "37.3 GiB"),
    (helper.make_node("ConstantOfShape", ["shape"], ["big"], name="the_fill"),
     {"shape": np.array([1 << 20, 1 << 20], np.int64)}, "4.0 TiB"),
    (helper.make_node("Range", ["a", "b", "c"], ["big"], name="the_range"),
     {"a": np.float32(0), "b": np.float32(1e12), "c": np.float32(1)}, "3.6 TiB"),
    (helper.make_node("Tile", ["one", "reps"], ["big"], name="the_tile"),
     {"one": np.ones((1, 1), np.float32), "reps": np.array([100000, 100000], np.int64)}, "37.3 GiB"),
], ids=["Expand", "ConstantOfShape", "Range", "Tile"])
def test_folding_bombs_are_refused_before_allocating(node, inits, size):
    with pytest.raises(onnxattr.ModelError, match=f"'{node.name}' .*would allocate {size}, over max_fold_bytes"):
        onnxattr.load(folded_model(node, inits))


def test_max_fold_bytes_is_settable():
    node = helper.make_node("ConstantOfShape", ["shape"], ["big"], name="fill",
                            value=numpy_helper.from_array(np.ones(1, np.float32)))
    proto = folded_model(node, {"shape": np.array([1024, 1024], np.int64)})  # 4 MiB
    with pytest.raises(onnxattr.ModelError, match="'fill'.*4.0 MiB, over max_fold_bytes"):
        onnxattr.load(proto, max_fold_bytes=1 << 20)
    x = np.zeros((2, 3), np.float32)
    np.testing.assert_allclose(onnxattr.load(proto, max_fold_bytes=8 << 20)(x), x + 1024 * 1024)
    for bad in (0, -1, 1.5, True, "1G"):
        with pytest.raises(onnxattr.OptionError, match="max_fold_bytes"):
            onnxattr.load(proto, max_fold_bytes=bad)


def test_many_folded_constants_are_bounded_together():
    nodes = [helper.make_node("Expand", ["one", "shape"], [f"e{i}"], name=f"expand_{i}") for i in range(8)]
    nodes += [helper.make_node("Sum", [f"e{i}" for i in range(8)], ["big"], name="sum")]
    g = helper.make_graph(nodes + [helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
                                   helper.make_node("Add", ["x", "s"], ["y"])], "many",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                          [init("one", np.ones((1, 1), np.float32)), init("shape", np.array([4096, 4096], np.int64))])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])  # 8 x 64 MiB
    with pytest.raises(onnxattr.ModelError, match="'expand_3'.*would bring the folded constants to 256.0 MiB"):
        onnxattr.load(proto, max_fold_bytes=200 << 20)
