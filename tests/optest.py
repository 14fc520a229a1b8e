"""Check one ONNX op: our forward against onnxruntime, our vjp against central finite differences.

``check_op`` builds a single-node model with onnx.helper, runs it in onnxruntime and through our
op class, and compares; ``check_vjp`` compares <vjp(g), e> with (f(x + h e) - f(x - h e)) / 2h . g
in float64 on random directions.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from onnxattr.ops import make_op

DEFAULT_OPSET = 17
ONNX_DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")


def single_node_model(op_type: str, inputs: Sequence[np.ndarray | None], attrs: dict[str, Any],
                      n_outputs: int = 1, opset: int = DEFAULT_OPSET) -> tuple[onnx.ModelProto, dict]:
    """A one-node model of the op (None inputs are omitted optional inputs) and its feeds."""
    names = [f"in{i}" if a is not None else "" for i, a in enumerate(inputs)]
    outs = [f"out{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, names, outs, **attrs)
    graph_inputs = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
        for n, a in zip(names, inputs) if a is not None
    ]
    graph = helper.make_graph([node], "t", graph_inputs, [helper.ValueInfoProto(name=o) for o in outs])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    types = {v.name: v.type for v in inferred.graph.value_info}
    for out in model.graph.output:
        out.type.CopyFrom(types[out.name])
    model.ir_version = min(model.ir_version, 10)
    return model, {n: a for n, a in zip(names, inputs) if a is not None}


def run_ort(op_type: str, inputs: Sequence[np.ndarray | None], attrs: dict[str, Any],
            n_outputs: int = 1, opset: int = DEFAULT_OPSET) -> list[np.ndarray]:
    """The op's outputs computed by onnxruntime (None inputs are omitted optional inputs)."""
    model, feeds = single_node_model(op_type, inputs, attrs, n_outputs, opset)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def run_reference(op_type: str, inputs: Sequence[np.ndarray | None], attrs: dict[str, Any],
                  n_outputs: int = 1, opset: int = DEFAULT_OPSET) -> list[np.ndarray]:
    """The op's outputs computed by onnx's reference evaluator (the second oracle)."""
    from onnx.reference import ReferenceEvaluator

    model, feeds = single_node_model(op_type, inputs, attrs, n_outputs, opset)
    return ReferenceEvaluator(model).run(None, feeds)


def our_forward(op_type: str, inputs: Sequence[np.ndarray | None], attrs: dict[str, Any],
                opset: int = DEFAULT_OPSET) -> tuple:
    op = make_op(op_type, _parsed(attrs), opset, "test")
    return op.forward(*inputs)


def _parsed(attrs: dict[str, Any]) -> dict[str, Any]:
    """Attributes as the graph loader gives them: through an AttributeProto round trip."""
    return {k: helper.get_attribute_value(helper.make_attribute(k, v)) for k, v in attrs.items()}


def check_op(op_type: str, inputs: Sequence[np.ndarray | None], attrs: dict[str, Any] | None = None,
             n_outputs: int = 1, opset: int = DEFAULT_OPSET, rtol: float = 1e-4, oracle: Any = None) -> tuple:
    """Assert our forward equals onnxruntime's (or ``oracle``'s, e.g. ``run_reference``); return
    our (outputs, ctx)."""
    attrs = attrs or {}
    expected = (oracle or run_ort)(op_type, inputs, attrs, n_outputs, opset)
    outputs, ctx = our_forward(op_type, inputs, attrs, opset)
    for i, (got, want) in enumerate(zip(outputs, expected)):
        got = np.asarray(got)
        assert got.shape == want.shape, f"{op_type} output {i}: shape {got.shape} != {want.shape}"
        scale = max(float(np.abs(want).max(initial=0.0)), 1e-6)
        err = float(np.abs(got.astype(np.float64) - want).max(initial=0.0)) / scale
        assert err < rtol, f"{op_type} output {i}: max relative error {err:.2e}"
    return outputs, ctx


def check_vjp(op_type: str, inputs: Sequence[np.ndarray | None], attrs: dict[str, Any] | None = None,
              wrt: Sequence[int] = (0,), opset: int = DEFAULT_OPSET, seed: int = 0,
              h: float = 1e-6, rtol: float = 1e-6, n_dirs: int = 3) -> None:
    """Assert the vjp w.r.t. the inputs in ``wrt`` matches central finite differences (float64)."""
    rng = np.random.default_rng(seed)
    attrs = attrs or {}
    x64 = [None if a is None else (a.astype(np.float64) if a.dtype.kind == "f" else a) for a in inputs]
    op = make_op(op_type, _parsed(attrs), opset, "test")
    outputs, ctx = op.forward(*x64)
    gs = [rng.standard_normal(o.shape) if o.dtype.kind == "f" else None for o in outputs]
    needs = [i in wrt for i in range(len(inputs))]
    grads = op.cotangents(ctx, gs, needs)
    for i in wrt:
        for _ in range(n_dirs):
            e = rng.standard_normal(x64[i].shape)
            plus = list(x64)
            minus = list(x64)
            plus[i] = x64[i] + h * e
            minus[i] = x64[i] - h * e
            fp = op.forward(*plus)[0]
            fm = op.forward(*minus)[0]
            fd = sum(float(np.sum((p - m) / (2 * h) * g)) for p, m, g in zip(fp, fm, gs) if g is not None)
            an = float(np.sum(grads[i] * e))
            assert abs(fd - an) <= rtol * max(1.0, abs(fd)) + 1e-7, (
                f"{op_type} vjp wrt input {i}: analytic {an:.8g} vs finite difference {fd:.8g}"
            )


def both(op_type: str, inputs: Sequence[np.ndarray | None], attrs: dict[str, Any] | None = None,
         opset: int = DEFAULT_OPSET, wrt: Sequence[int] = (0,), n_outputs: int = 1, **vjp_options: Any) -> tuple:
    """Forward against onnxruntime and vjp against finite differences; our outputs."""
    outputs, _ = check_op(op_type, inputs, attrs, n_outputs=n_outputs, opset=opset)
    check_vjp(op_type, inputs, attrs, wrt=wrt, opset=opset, **vjp_options)
    return outputs


def check_onnx_case(case: str) -> None:
    """Run a single-node case of onnx's backend test data through the op and compare with its
    stored output (the inputs are input_*.pb followed by the model's initializers)."""
    folder = os.path.join(ONNX_DATA, case)
    if not os.path.isdir(folder):
        pytest.skip(f"onnx test data {case} not installed")
    model = onnx.load(os.path.join(folder, "model.onnx"))
    (node,) = model.graph.node
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    data = os.path.join(folder, "test_data_set_0")
    feeds = [numpy_helper.to_array(onnx.load_tensor(os.path.join(data, f)))
             for f in sorted(os.listdir(data)) if f.startswith("input_")]
    values = dict(zip([i.name for i in model.graph.input if i.name not in
                       {t.name for t in model.graph.initializer}], feeds))
    values.update({t.name: numpy_helper.to_array(t) for t in model.graph.initializer})
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    op = make_op(node.op_type, attrs, opset, node.name)
    (got, *_), _ = op.forward(*[values[i] if i else None for i in node.input])
    want = numpy_helper.to_array(onnx.load_tensor(os.path.join(data, "output_0.pb")))
    assert got.shape == want.shape
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def rand(*shape: int, seed: int = 0, dtype: Any = np.float32) -> np.ndarray:
    """A standard-normal array of ``shape``."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def ints(values: Sequence[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def same_on_gpu(op_type, inputs, attrs=None, opset=17, seed=0):
    """Skip without a usable GPU; else run the op on the host and on the GPU (float and bool inputs moved there, integer ones
    left on the host, as the engine does) and assert equal outputs and vjps."""
    from onnxattr import backend

    if not backend.gpu_available():
        pytest.skip("needs CuPy and a usable NVIDIA GPU")
    cp = backend.cupy()
    attrs = {k: helper.get_attribute_value(helper.make_attribute(k, v)) for k, v in (attrs or {}).items()}
    op = make_op(op_type, attrs, opset, "gpu")
    dev = [cp.asarray(a) if a is not None and a.dtype.kind in "fb" else a for a in inputs]
    host_out, host_ctx = op.forward(*inputs)
    dev_out, dev_ctx = op.forward(*dev)
    for h, d in zip(host_out, dev_out):
        if h.dtype.kind == "f":
            np.testing.assert_allclose(backend.to_host(d), h, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(backend.to_host(d), h)
    if not op.differentiable:
        return
    rng = np.random.default_rng(seed)
    gs = [rng.standard_normal(o.shape).astype(o.dtype) if o.dtype.kind == "f" else None for o in host_out]
    needs = [a is not None and a.dtype.kind == "f" for a in inputs]
    host_g = op.cotangents(host_ctx, gs, needs)
    dev_g = op.cotangents(dev_ctx, [None if g is None else cp.asarray(g) for g in gs], needs)
    for h, d in zip(host_g, dev_g):
        assert (h is None) == (d is None)
        if h is not None:
            assert backend.is_device_array(d)
            np.testing.assert_allclose(backend.to_host(d), h, rtol=1e-5, atol=1e-6)


__all__ = ["both", "check_onnx_case", "check_op", "check_vjp", "same_on_gpu", "run_ort", "run_reference", "our_forward", "rand", "ints", "onnx"]
