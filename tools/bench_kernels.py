"""Benchmark: NumPy's convolution (onnxattr.ops.Conv) against onnxruntime's kernels
(onnxattr.kernels.onnxruntime), layer by layer on ResNet-18's 20 convolutions.

For each layer (batch 8, 224x224 input, the shapes built in code from ``tools/resnet18.py``'s
block list, bias as after BatchNorm fusion) it times, in one process and on the same arrays:
- ``numpy fwd`` / ``numpy vjp``: the Conv op's forward and its data vjp (im2col over BLAS);
- ``ort fwd`` / ``ort vjp``: ``conv`` and ``conv_data_vjp`` with the weights baked into the
  session as initializers (``constant=True``, what a loaded model uses);
- ``ort fwd (w input)`` / ``ort vjp (w input)``: the same with the weights fed at every call;
- ``ort vjp (ConvTranspose)``: the data vjp of the stride-1 layers through ConvTranspose instead
  of the flipped Conv;
each onnxruntime job at every graph optimization level asked for (``--levels``: 'all' adds the
NCHWc layout transform of x86), and once onnxruntime's whole ResNet-18 forward, the yardstick of tools/bench.py. A second
table compares NumPy's products with ``dense``, ``dense_data_vjp`` and ``matmul`` on BERT-base's
shapes (8 x 128 tokens) and ResNet-18's classifier. Each round runs
every job once, the NumPy jobs first with BLAS at the library's thread count, then (after a pause
in which OpenBLAS's workers stop spinning) the onnxruntime jobs with BLAS held to one thread
(``threads.blas_limit``, as the onnxruntime path runs). Medians over the rounds; the sums of the
per-layer medians are compared in a table. The machine may be shared and noisy: compare columns
of one run, and repeat.

    python tools/bench_kernels.py                    # 5 rounds, levels 'all' and 'extended'
    python tools/bench_kernels.py --repeats 9 --levels all basic --per-layer
    ONNXATTR_NUM_THREADS=1 python tools/bench_kernels.py
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnxruntime as ort

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

import resnet18  # noqa: E402
from onnxattr import threads  # noqa: E402
from onnxattr.kernels import onnxruntime as ortk  # noqa: E402
from onnxattr.ops import make_op  # noqa: E402

LEVELS = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}


@dataclass
class Layer:
    name: str
    cin: int
    cout: int
    kernel: int
    stride: int
    pad: int
    size: int  # input height = width


def resnet18_convs(size: int = 224, widths: tuple[int, ...] = resnet18.WIDTHS) -> list[Layer]:
    """ResNet-18's convolutions: the 7x7/2 stem, then per BasicBlock two 3x3 convolutions (the
    first strided where the block strides) and a 1x1 projection where the shape changes."""
    layers = [Layer("conv1", 3, widths[0], 7, 2, 3, size)]
    s = size // 4  # after the stem's stride 2 and the 3x3/2 max pooling
    for name, cin, cout, stride in resnet18.blocks(widths):
        layers.append(Layer(f"{name}.conv1", cin, cout, 3, stride, 1, s))
        out = (s + 2 - 3) // stride + 1
        layers.append(Layer(f"{name}.conv2", cout, cout, 3, 1, 1, out))
        if stride != 1 or cin != cout:
            layers.append(Layer(f"{name}.downsample", cin, cout, 1, stride, 0, s))
        s = out
    return layers


def jobs_for(layer: Layer, batch: int, rng: np.random.Generator) -> tuple[dict[str, Callable], dict[str, Callable]]:
    """The NumPy jobs and the onnxruntime jobs of one layer (checked against each other first)."""
    x = rng.uniform(0, 1, (batch, layer.cin, layer.size, layer.size)).astype(np.float32)
    w = (rng.standard_normal((layer.cout, layer.cin, layer.kernel, layer.kernel))
         * np.sqrt(2 / (layer.cin * layer.kernel ** 2))).astype(np.float32)
    b = rng.standard_normal(layer.cout).astype(np.float32)
    p = layer.pad
    attrs = {"strides": [layer.stride] * 2, "pads": [p] * 4}
    op = make_op("Conv", attrs, 17, layer.name)
    (y,), ctx = op.forward(x, w, b)
    g = rng.standard_normal(y.shape).astype(np.float32)
    geo = ortk.ConvGeometry((layer.stride,) * 2, (1, 1), (p,) * 4)
    spatial = x.shape[2:]
    for got, want in ((ortk.conv(x, w, b, geo), y),
                      (ortk.conv_data_vjp(g, w, geo, spatial), op.vjp(ctx, [g], [True, False, False])[0])):
        err = float(np.abs(got - want).max() / np.abs(want).max())
        assert err < 1e-5, f"{layer.name}: onnxruntime differs from NumPy by {err:.1e}"
    numpy_jobs = {
        "numpy fwd": lambda: op.forward(x, w, b),
        "numpy vjp": lambda: op.vjp(ctx, [g], [True, False, False]),
    }
    ort_jobs = {
        "ort fwd": lambda: ortk.conv(x, w, b, geo),
        "ort vjp": lambda: ortk.conv_data_vjp(g, w, geo, spatial),
        "ort fwd (w input)": lambda: ortk.conv(x, w, b, geo, constant=False),
        "ort vjp (w input)": lambda: ortk.conv_data_vjp(g, w, geo, spatial, constant=False),
    }
    if layer.stride == 1:
        adj = (0, 0)
        ort_jobs["ort vjp (ConvTranspose)"] = lambda: ortk.conv_transpose(g, w, None, geo, adj)
    return numpy_jobs, ort_jobs


def whole_forward(batch: int, size: int) -> Callable:
    """onnxruntime's whole ResNet-18 forward with the library's session options."""
    proto = resnet18.onnx_model(resnet18.weights(seed=0), size=size)
    so = ortk.session_options()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(1).uniform(0, 1, (batch, 3, size, size)).astype(np.float32)
    sess.run(None, {name: x})
    return lambda: sess.run(None, {name: x})


def timed(fn: Callable) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def with_level(level: str, fn: Callable) -> Callable:
    """``fn`` run with sessions of one graph optimization level (the level is part of their key)."""
    def job() -> object:
        ortk.OPTIMIZATION = LEVELS[level]
        return fn()
    return job


def run(levels: list[str], batch: int, size: int, repeats: int) -> tuple[dict[str, dict[str, float]], float]:
    """Per-layer medians (ms) of every job, the onnxruntime jobs at every optimization level in
    ``levels`` (interleaved in each round), and the median of onnxruntime's whole forward."""
    ortk.clear_cache()
    rng = np.random.default_rng(0)
    jobs = []
    for layer in resnet18_convs(size):
        numpy_jobs, ort_jobs = jobs_for(layer, batch, rng)
        leveled = {f"{name} [{level}]": with_level(level, fn) for name, fn in ort_jobs.items() for level in levels}
        for fn in leveled.values():
            fn()  # make the session
        jobs.append((layer, numpy_jobs, leveled))
    whole = whole_forward(batch, size)
    times: dict[tuple[str, str], list[float]] = {}
    whole_times: list[float] = []
    for _ in range(repeats):
        for layer, numpy_jobs, _ort in jobs:
            for name, fn in numpy_jobs.items():
                times.setdefault((layer.name, name), []).append(timed(fn))
        time.sleep(0.3)  # OpenBLAS's idle workers spin for a while after the last product
        with threads.blas_limit(1):
            whole_times.append(timed(whole))
            for layer, _numpy, ort_jobs in jobs:
                for name, fn in ort_jobs.items():
                    times.setdefault((layer.name, name), []).append(timed(fn))
    medians: dict[str, dict[str, float]] = {}
    for (layer, name), ts in times.items():
        medians.setdefault(layer, {})[name] = 1e3 * statistics.median(ts)
    return medians, 1e3 * statistics.median(whole_times)


def report(medians: dict[str, dict[str, float]], whole: float, per_layer: bool) -> str:
    columns = list(dict.fromkeys(c for row in medians.values() for c in row))
    lines = []
    if per_layer:
        lines += ["| layer | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for layer, row in medians.items():
            lines.append(f"| {layer} | " + " | ".join(f"{row[c]:.2f}" if c in row else "" for c in columns) + " |")
        lines.append("")
    lines += [f"onnxruntime's whole ResNet-18 forward: {whole:.1f} ms", "",
              "| sum over the layers | ms | / whole forward |", "|---|---|---|"]
    for c in columns:
        rows = [row for row in medians.values() if c in row]
        total = sum(row[c] for row in rows)
        note = f" ({len(rows)} stride-1 layers)" if len(rows) < len(medians) else ""
        lines.append(f"| {c}{note} | {total:.1f} | {total / whole:.2f} |")
        if c.startswith("ort vjp (ConvTranspose)"):
            flip = sum(row[c.replace(" (ConvTranspose)", "")] for row in rows)
            lines.append(f"| {c.replace(' (ConvTranspose)', '')}, the same layers | {flip:.1f} | {flip / whole:.2f} |")
    return "\n".join(lines)


#: (name, x shape, w shape or None for a product of two activations): BERT-base's dense layers
#: and attention products at 8 x 128 tokens, and ResNet-18's classifier at batch 8
PRODUCTS = [
    ("bert qkv/out 768x768", (8, 128, 768), (768, 768)),
    ("bert ffn up 768x3072", (8, 128, 768), (768, 3072)),
    ("bert ffn down 3072x768", (8, 128, 3072), (3072, 768)),
    ("bert Q K^T", (8, 12, 128, 64), None),
    ("bert A V", (8, 12, 128, 128), None),
    ("resnet fc 512x1000", (8, 512), (512, 1000)),
]


def product_jobs(rng: np.random.Generator) -> list[tuple[str, dict[str, Callable], dict[str, Callable]]]:
    """NumPy and onnxruntime jobs of the products in PRODUCTS (Dense with its vjp, or MatMul)."""
    out = []
    for name, xs, ws in PRODUCTS:
        x = rng.standard_normal(xs).astype(np.float32)
        if ws is None:
            other = rng.standard_normal(xs[:-2] + (xs[-1], 128 if xs[-1] == 64 else 64)).astype(np.float32)
            out.append((name, {"numpy fwd": lambda x=x, o=other: x @ o},
                        {"ort fwd": lambda x=x, o=other: ortk.matmul(x, o)}))
            continue
        w = (rng.standard_normal(ws) / np.sqrt(ws[0])).astype(np.float32)
        b = rng.standard_normal(ws[1]).astype(np.float32)
        g = rng.standard_normal(xs[:-1] + (ws[1],)).astype(np.float32)
        op = make_op("Dense", {}, 17, name)
        flat = x.reshape(-1, ws[0])
        numpy_jobs = {"numpy fwd (Dense op)": lambda x=x, w=w, b=b, op=op: op.forward(x, w, b),
                      "numpy fwd (2-D product)": lambda x=flat, w=w, b=b: x @ w + b,
                      "numpy vjp": lambda g=g, w=w: g @ w.T}
        out.append((name, numpy_jobs,
                    {"ort fwd": lambda x=x, w=w, b=b: ortk.dense(x, w, b),
                     "ort fwd (w input)": lambda x=x, w=w, b=b: ortk.dense(x, w, b, constant=False),
                     "ort vjp": lambda g=g, w=w: ortk.dense_data_vjp(g, w),
                     "ort vjp (w input)": lambda g=g, w=w: ortk.dense_data_vjp(g, w, constant=False)}))
    return out


def run_products(repeats: int) -> str:
    """A table of the products' medians (ms), NumPy's BLAS against onnxruntime's MLAS."""
    ortk.OPTIMIZATION = LEVELS["all"]
    jobs = product_jobs(np.random.default_rng(2))
    for _, _numpy, ort_jobs in jobs:
        for fn in ort_jobs.values():
            fn()
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(repeats):
        for name, numpy_jobs, _ort in jobs:
            for col, fn in numpy_jobs.items():
                times.setdefault((name, col), []).append(timed(fn))
        time.sleep(0.3)
        with threads.blas_limit(1):
            for name, _numpy, ort_jobs in jobs:
                for col, fn in ort_jobs.items():
                    times.setdefault((name, col), []).append(timed(fn))
    columns = list(dict.fromkeys(col for _, col in times))
    lines = ["| product | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, _, _ in jobs:
        cells = [f"{1e3 * statistics.median(times[(name, c)]):.2f}" if (name, c) in times else "" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--levels", nargs="+", default=["all", "extended"], choices=list(LEVELS))
    parser.add_argument("--per-layer", action="store_true", help="print every layer's medians")
    parser.add_argument("--products-only", action="store_true", help="only the Dense/MatMul table")
    args = parser.parse_args(argv)
    count = threads.num_threads()  # applies the count to BLAS too
    print(f"threads: {count} (onnxruntime; BLAS pool {threads.blas_threads()}), "
          f"onnxruntime {ort.__version__}, numpy {np.__version__}, batch {args.batch}, "
          f"{args.size}x{args.size}, {args.repeats} rounds\n")
    if not args.products_only:
        medians, whole = run(args.levels, args.batch, args.size, args.repeats)
        print(report(medians, whole, args.per_layer) + "\n", flush=True)
    print(run_products(args.repeats), flush=True)


if __name__ == "__main__":
    main()
