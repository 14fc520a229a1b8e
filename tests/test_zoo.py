"""Our forward pass equals onnxruntime's on real architectures and on onnx's per-op test models."""
import numpy as np
import pytest
from onnxruntime.capi.onnxruntime_pybind11_state import NotImplemented as OrtNotImplemented

import onnxattr
from onnxattr.errors import UnsupportedOpError
from zoo import LIGHT, case_data, cases, light_model, ort_run, randomized


def max_rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got.astype(np.float64) - want).max() / max(np.abs(want).max(), 1e-6))


@pytest.mark.slow
@pytest.mark.parametrize("name", LIGHT)
def test_light_model_forward_equals_onnxruntime(name):
    proto = randomized(light_model(name), seed=1)
    model = onnxattr.load(proto)
    x = np.random.default_rng(2).uniform(0, 1, (1, 3, 224, 224)).astype(np.float32)
    logits = model(x)
    (want,) = ort_run(proto, x, [model.output_name])
    last = proto.graph.node[-1].op_type
    assert model.graph.dropped_softmax == (last if last == "Softmax" else None)
    assert np.abs(want).max() > 1e-3  # random weights give a non-trivial output
    assert max_rel_err(logits, want) < 1e-4


# The ops the core must cover (issue: core engine). Cases made only of these must pass.
CORE_OPS = {
    "Conv", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Sum", "Relu", "LeakyRelu", "Clip",
    "Sigmoid", "Tanh", "Softmax", "MaxPool", "AveragePool", "GlobalAveragePool",
    "BatchNormalization", "LRN", "Flatten", "Reshape", "Transpose", "Concat", "Split", "Slice",
    "Squeeze", "Unsqueeze", "Pad", "Identity", "Dropout", "Cast", "Constant", "ConstantOfShape",
    "Shape", "Gather", "ReduceMean",
}

CASES = [("pytorch-converted", c) for c in cases("pytorch-converted")] + [
    ("pytorch-operator", c) for c in cases("pytorch-operator")
]


@pytest.mark.parametrize("kind,case", CASES, ids=[f"{k}/{c}" for k, c in CASES])
def test_pytorch_case_forward(kind, case):
    proto, inputs, outputs = case_data(kind, case)
    ops = {n.op_type for n in proto.graph.node}
    graph_inputs = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    if len(graph_inputs) != 1 or len(outputs) != 1:
        pytest.skip("several inputs or outputs")
    if inputs[0].dtype != np.float32:
        pytest.skip(f"input dtype {inputs[0].dtype}")
    try:
        model = onnxattr.load(proto, output_name=proto.graph.output[0].name)
    except UnsupportedOpError as e:
        if ops <= CORE_OPS:
            raise
        pytest.skip(str(e))
    with np.errstate(invalid="ignore", divide="ignore"):  # e.g. sqrt of negatives: NaN, as in ORT
        got = model(inputs[0])
    references = [(outputs[0], 1e-3)]  # what PyTorch computed when the case was made
    try:
        references.append((ort_run(proto, inputs[0], [proto.graph.output[0].name])[0], 1e-4))
    except OrtNotImplemented:
        pass  # onnxruntime dropped the kernels of some old opsets (Add-6, Gemm-6, PRelu-6, ...)
    for want, tol in references:
        assert got.shape == want.shape
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        ok = ~np.isnan(want)
        assert max_rel_err(got[ok], want[ok]) < tol
