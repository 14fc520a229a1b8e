"""onnx's bundled test models, with their constant weights replaced by random ones.

The ``light`` model-zoo graphs (ResNet-50, VGG-19, DenseNet-121, ...) compute their weights with
ConstantOfShape nodes; ``randomized`` replaces each by a random initializer scaled for the layer
that reads it, so that a wrong kernel cannot hide behind constant weights.
"""
from __future__ import annotations

import os
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

DATA = pathlib.Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data"
LIGHT = sorted(p.name[len("light_"):-len(".onnx")] for p in (DATA / "light").glob("light_*.onnx"))


def light_model(name: str) -> onnx.ModelProto:
    return onnx.load(DATA / "light" / f"light_{name}.onnx")


def randomized(proto: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """``proto`` with every ConstantOfShape of a constant shape replaced by a random initializer."""
    rng = np.random.default_rng(seed)
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    g = proto.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    consumers: dict[str, tuple[str, int]] = {}
    for n in g.node:
        for i, t in enumerate(n.input):
            consumers.setdefault(t, (n.op_type, i))
    keep = []
    for n in g.node:
        if n.op_type == "Constant" and n.output:
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        if n.op_type == "ConstantOfShape" and n.input[0] in consts:
            shape = tuple(int(d) for d in consts[n.input[0]])
            value = _init(rng, shape, *consumers.get(n.output[0], ("", 0)))
            g.initializer.append(numpy_helper.from_array(value, n.output[0]))
            continue
        keep.append(n)
    del g.node[:]
    g.node.extend(keep)
    proto.ir_version = max(proto.ir_version, 4)  # from IR 4 on, initializers need not be inputs
    return proto


def _init(rng: np.random.Generator, shape: tuple[int, ...], op: str, index: int) -> np.ndarray:
    if op in ("Conv", "Gemm") and index == 1:
        fan_in = int(np.prod(shape[1:])) if op == "Conv" else shape[0]
        return (rng.standard_normal(shape) * np.sqrt(2.0 / max(fan_in, 1))).astype(np.float32)
    if op == "BatchNormalization" and index in (1, 4):  # scale, variance: positive
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if op == "Mul":
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    return (0.1 * rng.standard_normal(shape)).astype(np.float32)


def ort_run(proto: onnx.ModelProto, x: np.ndarray, outputs: list[str]) -> list[np.ndarray]:
    """onnxruntime's values of any tensors of the graph (intermediate ones made outputs)."""
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    existing = {o.name for o in proto.graph.output}
    for name in outputs:
        if name not in existing:
            proto.graph.output.append(helper.ValueInfoProto(name=name))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0].name
    return sess.run(outputs, {inp: x})


def cases(kind: str) -> list[str]:
    """The case folders of ``pytorch-converted``, ``pytorch-operator`` or ``simple``."""
    return sorted(p.name for p in (DATA / kind).iterdir() if (p / "model.onnx").exists())


def case_data(kind: str, case: str) -> tuple[onnx.ModelProto, list[np.ndarray], list[np.ndarray]]:
    """A test case's model, inputs and expected outputs (its first data set)."""
    d = DATA / kind / case
    proto = onnx.load(d / "model.onnx")
    ds = d / "test_data_set_0"
    load = lambda p: numpy_helper.to_array(onnx.load_tensor(str(p)))  # noqa: E731
    inputs = [load(p) for p in sorted(ds.glob("input_*.pb"))]
    outputs = [load(p) for p in sorted(ds.glob("output_*.pb"))]
    return proto, inputs, outputs
