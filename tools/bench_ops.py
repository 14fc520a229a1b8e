"""Per-op profile of one attribution: the time each op type takes in the forward and in the
backward pass (op vjps, and LRP rules under their op type), next to onnxruntime's whole forward.

    python tools/bench_ops.py                          # ResNet-18, batch 8, 224x224, gradient
    python tools/bench_ops.py --method lrp.epsilon_plus_flat --kernels numpy
    python tools/bench_ops.py --model /tmp/bert.onnx   # any float-input ONNX model

Each op call is timed by wrapping the ops' ``forward`` and ``cotangents`` for the run (the LRP
rules call both, so their modified passes land under their op type; the rest of a rule's work,
its divisions, is in the total only); the median of ``--repeats`` runs after a warm-up.
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
    keys = sorted({k for r in runs for k in r}, key=lambda k: -statistics.median(r.get(k, 0.0) for r in runs))
    print(f"{path} {list(x.shape)} {a.method}, kernels={a.kernels}, {THREADS} threads; "
          f"onnxruntime forward {ref * 1e3:.0f} ms (median of {a.repeats})\n")
    print("| op | pass | ms | / onnxruntime forward |\n|---|---|---:|---:|")
    for k in keys:
        ms = statistics.median(r.get(k, 0.0) for r in runs) * 1e3
        print(f"| {k[0]} | {k[1]} | {ms:.0f} | {ms / 1e3 / ref:.2f}x |")


if __name__ == "__main__":
    main()
