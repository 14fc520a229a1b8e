"""Per-op profile of one attribution: the time each op type takes in the forward and in the
backward pass, next to onnxruntime's whole forward.

    python tools/bench_ops.py                          # ResNet-18, batch 8, 224x224, gradient
    python tools/bench_ops.py --method lrp.epsilon_plus_flat --kernels numpy
    python tools/bench_ops.py --model /tmp/bert.onnx   # any float-input ONNX model

A compiled plan (the default on the CPU, :mod:`onnxattr.compiled`) is profiled by onnxruntime's
own profiler: the kernel time of each op type in the forward and in the backward session, per
run. With ``ONNXATTR_COMPILE=0`` (or a plan that does not compile) each op call is timed by
wrapping the ops' ``forward`` and ``cotangents`` (the LRP rules call both, so their modified
passes land under their op type; the rest of a rule's work, its divisions, is in the total
only). Medians of ``--repeats`` runs after a warm-up.
"""
from __future__ import annotations

import argparse
import collections
import os
import pathlib
import statistics
import sys
import time
from typing import Any, Callable

THREADS = int(os.environ.get("BENCH_THREADS", "2"))
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "ONNXATTR_NUM_THREADS"):
    os.environ[_var] = str(THREADS)

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

import onnxattr  # noqa: E402
import resnet18  # noqa: E402


def profile(model: onnxattr.Model, x: np.ndarray, method: str) -> dict[tuple[str, str], float]:
    """Seconds per (op type, "forward" | "backward") in one attribution."""
    totals: dict[tuple[str, str], float] = collections.defaultdict(float)
    nodes = model.graph.nodes + (model.graph.head.nodes if model.graph.head else [])
    undo: list[Callable[[], None]] = []

    def timed(obj: Any, name: str, key: tuple[str, str]) -> None:
        fn = getattr(obj, name)

        def wrapper(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                totals[key] += time.perf_counter() - t

        setattr(obj, name, wrapper)
        undo.append(lambda: delattr(obj, name))

    for n in nodes:
        timed(n.op, "forward", (n.op_type, "forward"))
        timed(n.op, "cotangents", (n.op_type, "backward"))
    try:
        t = time.perf_counter()
        onnxattr.attribute(model, x, target=0, method=method)
        totals[("all", "total")] = time.perf_counter() - t
    finally:
        for u in undo:
            u()
    return dict(totals)


def profile_compiled(path: str, x: np.ndarray, method: str, repeats: int) -> dict[tuple[str, str], float] | None:
    """Seconds per (op type, "forward" | "backward" session) in one compiled attribution
    (onnxruntime's profiler, kernel times summed and divided by the runs); None where the plan
    does not compile."""
    import json

    from onnxattr.attribution import registry
    from onnxattr.kernels import onnxruntime as ortk

    plain = ortk.session_options

    def profiled(n_threads: int | None = None) -> ort.SessionOptions:
        so = plain(n_threads)
        so.enable_profiling = True
        return so

    ortk.session_options = profiled
    try:
        model = onnxattr.load(path)
        program = model.program(registry.plan_of(model, method, {}, "bench_ops"), {model.input_name: x})
    finally:
        ortk.session_options = plain
    if program is None:
        return None
    for _ in range(repeats + 1):
        onnxattr.attribute(model, x, target=0, method=method)
    totals: dict[tuple[str, str], float] = collections.defaultdict(float)
    for name, session in (("forward", program.forward_session), ("backward", program.backward_session)):
        for event in json.load(open(session.end_profiling())):
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
                totals[(event["args"]["op_name"], name)] += event["dur"] / 1e6 / (repeats + 1)
    return dict(totals)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="an ONNX model with one float input (default: the ResNet-18)")
    p.add_argument("--shape", default="8x3x224x224", help="input shape, e.g. 8x128x768")
    p.add_argument("--method", default="gradient")
    p.add_argument("--kernels", default="onnxruntime")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    path = a.model
    if path is None:
        path = "/tmp/bench_ops_resnet18.onnx"
        import onnx

        onnx.save(resnet18.onnx_model(resnet18.weights(seed=0), size=int(a.shape.split("x")[-1])), path)
    x = np.random.default_rng(0).uniform(0, 1, tuple(int(v) for v in a.shape.split("x"))).astype(np.float32)
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}
    model = onnxattr.load(path, kernels=a.kernels)
    profile(model, x, a.method)  # warm-up: sessions built
    runs, refs = [], []
    for _ in range(a.repeats):
        t = time.perf_counter()
        sess.run(None, feed)
        refs.append(time.perf_counter() - t)
        runs.append(profile(model, x, a.method))
    ref = statistics.median(refs)
    if a.kernels == "onnxruntime":
        compiled = profile_compiled(path, x, a.method, a.repeats)
        if compiled is not None:
            runs = [{**compiled, **{k: v for k, v in r.items() if k[0] == "all"}} for r in runs]
    keys = sorted({k for r in runs for k in r}, key=lambda k: -statistics.median(r.get(k, 0.0) for r in runs))
    print(f"{path} {list(x.shape)} {a.method}, kernels={a.kernels}, {THREADS} threads; "
          f"onnxruntime forward {ref * 1e3:.0f} ms (median of {a.repeats})\n")
    print("| op | pass | ms | / onnxruntime forward |\n|---|---|---:|---:|")
    for k in keys:
        ms = statistics.median(r.get(k, 0.0) for r in runs) * 1e3
        print(f"| {k[0]} | {k[1]} | {ms:.0f} | {ms / 1e3 / ref:.2f}x |")


if __name__ == "__main__":
    main()
