"""Small ONNX models built by hand, for identities with known answers."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def model(nodes, inits, n_in, n_out, opset=17, in_shape=None) -> onnx.ModelProto:
    """A graph with input 'x' (batch, n_in) and output 'y' (batch, n_out)."""
    g = helper.make_graph(
        nodes, "toy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape or [None, n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n_out])],
        [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k) for k, v in inits.items()],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def deepexplain_toy() -> onnx.ModelProto:
    """f(x) = ReLU(ReLU(x1 - 1) - ReLU(x2)), as Gemm layers: the DeepExplain example."""
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["a1"]),
        helper.make_node("Gemm", ["a1", "w2", "b2"], ["h2"]),
        helper.make_node("Relu", ["h2"], ["y"]),
    ]
    inits = {"w1": np.eye(2), "b1": [-1.0, 0.0], "w2": [[1.0], [-1.0]], "b2": [0.0]}
    return model(nodes, inits, 2, 1)


def relu_mlp(sizes, seed=0, bias=True) -> onnx.ModelProto:
    """Gemm-ReLU-...-Gemm with random weights (biases zero if not ``bias``)."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], {}
    prev = "x"
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        inits[f"w{i}"] = rng.standard_normal((a, b)) / np.sqrt(a)
        inits[f"b{i}"] = 0.1 * rng.standard_normal(b) if bias else np.zeros(b)
        last = i == len(sizes) - 2
        out = "y" if last else f"h{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [out]))
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"a{i}"]))
            prev = f"a{i}"
    return model(nodes, inits, sizes[0], sizes[-1])


def linear(n_in, n_out, seed=0, bias=True) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits = {"w": rng.standard_normal((n_in, n_out)), "b": rng.standard_normal(n_out) if bias else np.zeros(n_out)}
    return model([helper.make_node("Gemm", ["x", "w", "b"], ["y"])], inits, n_in, n_out)
