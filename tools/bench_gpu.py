"""GPU benchmark: onnxattr on CuPy against onnxruntime-gpu's forward and PyTorch's own backward.

A ResNet-50 (bottleneck blocks [3, 4, 6, 3], 25.6 M parameters) is built in PyTorch by hand (no
torchvision), given seeded random weights, and exported to ONNX with a dynamic batch axis into a
temporary folder. On one 224x224 batch (32 by default) the same run times:

- onnxruntime's forward with the CUDAExecutionProvider, input and output bound on the GPU
  (IO binding), the reference of every ratio in the table;
- PyTorch's forward, and its forward + backward to the input (the gradient of the target logits);
- onnxattr on device='cuda': forward, ``gradient``, ``lrp.epsilon_plus_flat`` and
  ``integrated_gradients`` with 32 steps, on a batch already on the GPU.

Each figure is the median of ``--repeats`` runs after ``--warmup`` runs, each run closed by a
device synchronisation (CuPy's stream, torch.cuda.synchronize; onnxruntime's run returns when its
work is done). TF32 is off everywhere unless ``--tf32`` (onnxattr's CuPy matmuls are plain FP32).
The run also checks that the three agree: our forward against PyTorch's and onnxruntime's, our
gradient against PyTorch's. Where onnxruntime has no CUDAExecutionProvider (the CPU wheel) the
ratio column says so and the CPU provider's forward is shown for reference.

Run it from the repository root on a machine with an NVIDIA GPU, CuPy and PyTorch with CUDA:

    python3 tools/bench_gpu.py                       # batch 32, writes bench_gpu.md too
    python3 tools/bench_gpu.py --batch 8 --repeats 5 --out $OUT/bench_gpu.md
    python3 tools/bench_gpu.py --device cpu --batch 2 --size 64 --repeats 1   # smoke test, no GPU
"""
from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any, Callable

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ---- the model -------------------------------------------------------------------------------

def resnet50(torch: Any, seed: int = 0) -> Any:
    """ResNet-50 (He et al. 2016, torchvision's layout) with seeded random weights, in eval mode."""
    nn = torch.nn

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, width: int, stride: int) -> None:
            super().__init__()
            cout = 4 * width
            self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)
            self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x: Any) -> Any:
            out = torch.relu(self.bn1(self.conv1(x)))
            out = torch.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return torch.relu(out + (x if self.down is None else self.down(x)))

    class ResNet50(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64),
                                      nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1))
            blocks, cin = [], 64
            for width, n, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
                for i in range(n):
                    blocks.append(Bottleneck(cin, width, stride if i == 0 else 1))
                    cin = 4 * width
            self.blocks = nn.Sequential(*blocks)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(2048, 1000)

        def forward(self, x: Any) -> Any:
            return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))

    torch.manual_seed(seed)
    model = ResNet50()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, outputs of moderate size
                m.weight.uniform_(0.2, 0.6)
                m.bias.uniform_(-0.1, 0.1)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def export(torch: Any, model: Any, path: pathlib.Path, size: int) -> None:
    x = torch.zeros(1, 3, size, size)
    kw = dict(input_names=["input"], output_names=["logits"], opset_version=17,
              dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript exporter's notice
    try:
        torch.onnx.export(model, (x,), str(path), dynamo=False, **kw)
    except TypeError:  # a torch without the dynamo argument
        torch.onnx.export(model, (x,), str(path), **kw)


# ---- timing ----------------------------------------------------------------------------------

def median_seconds(fn: Callable[[], Any], sync: Callable[[], None], warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
        sync()
    times = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    """The largest per-sample relative L2 error of a against b."""
    n = len(b)
    num = np.linalg.norm((a - b).reshape(n, -1).astype(np.float64), axis=1)
    return float((num / np.maximum(np.linalg.norm(b.reshape(n, -1).astype(np.float64), axis=1), 1e-30)).max())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=224, help="input height and width")
    p.add_argument("--steps", type=int, default=32, help="integrated_gradients steps")
    p.add_argument("--ig-batch", type=int, default=64, help="integrated_gradients batch_size")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a smoke test of this script")
    p.add_argument("--tf32", action="store_true", help="allow TF32 in PyTorch and onnxruntime")
    p.add_argument("--no-kernels", action="store_true", help="ONNXATTR_CUDA_KERNELS=0: CuPy compositions only")
    p.add_argument("--out", default="bench_gpu.md", help="also write the report here ('' for none)")
    args = p.parse_args(argv)
    if args.no_kernels:
        os.environ["ONNXATTR_CUDA_KERNELS"] = "0"

    import onnxruntime as ort
    import torch

    import onnxattr
    from onnxattr import backend
    from onnxattr.attribution.registry import lookup, resolve_options

    gpu = args.device == "cuda"
    if gpu and not backend.gpu_available():
        print("no usable GPU for CuPy (pip install 'onnxattr[gpu]' on a machine with one)", file=sys.stderr)
        return 2
    tdev = torch.device("cuda" if gpu and torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cuda.matmul.allow_tf32 = args.tf32

    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32)
    notes: list[str] = []
    rows: list[tuple[str, float, float | None]] = []  # (what, seconds, CuPy pool peak bytes)

    def sync_all() -> None:
        backend.synchronize()
        if tdev.type == "cuda":
            torch.cuda.synchronize()

    with tempfile.TemporaryDirectory() as tmp:
        net = resnet50(torch)
        path = pathlib.Path(tmp) / "resnet50.onnx"
        export(torch, net, path, args.size)
        params = sum(v.numel() for v in net.parameters())

        # -- PyTorch: forward, and forward + backward to the input (the gradient)
        net = net.to(tdev)
        xt = torch.from_numpy(x).to(tdev)
        with torch.no_grad():
            logits_torch = net(xt).cpu().numpy()
        target = logits_torch.argmax(axis=1).astype(np.int64)
        tt = torch.from_numpy(target).to(tdev)

        def torch_forward() -> Any:
            with torch.no_grad():
                return net(xt)

        def torch_gradient() -> Any:
            xg = xt.detach().clone().requires_grad_(True)
            net(xg).gather(1, tt[:, None]).sum().backward()
            return xg.grad

        grad_torch = torch_gradient().cpu().numpy()
        rows.append(("PyTorch forward", median_seconds(torch_forward, sync_all, args.warmup, args.repeats), None))
        rows.append(("PyTorch forward + backward (gradient)",
                     median_seconds(torch_gradient, sync_all, args.warmup, args.repeats), None))
        torch_fb = rows[-1][1]
        net = net.cpu()
        if tdev.type == "cuda":
            torch.cuda.empty_cache()

        # -- onnxruntime: the CUDA provider with IO binding, else the CPU provider for reference
        ort_gpu = gpu and "CUDAExecutionProvider" in ort.get_available_providers()
        if ort_gpu:
            cuda_opts = {"device_id": 0, "use_tf32": int(args.tf32)}
            try:
                sess = ort.InferenceSession(str(path), providers=[("CUDAExecutionProvider", cuda_opts), "CPUExecutionProvider"])
            except Exception:  # an older provider without use_tf32
                sess = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
            ort_gpu = sess.get_providers()[0] == "CUDAExecutionProvider"
        if ort_gpu:
            binding = sess.io_binding()
            binding.bind_ortvalue_input("input", ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
            binding.bind_output("logits", "cuda")

            def ort_forward() -> Any:
                sess.run_with_iobinding(binding)

            ort_forward()
            logits_ort = binding.copy_outputs_to_cpu()[0]
            ort_name = "onnxruntime-gpu forward (CUDA EP, IO binding)"
        else:
            notes.append(f"onnxruntime {ort.__version__} offers {ort.get_available_providers()}: no "
                         "CUDAExecutionProvider, so no ratio to its GPU forward (install onnxruntime-gpu); "
                         "its CPU forward is shown for reference")
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

            def ort_forward() -> Any:
                return sess.run(["logits"], {"input": x})

            logits_ort = ort_forward()[0]
            ort_name = "onnxruntime forward (CPU EP, reference only)"
        ort_reps = args.repeats if ort_gpu else max(1, min(3, args.repeats))
        rows.insert(0, (ort_name, median_seconds(ort_forward, sync_all, min(args.warmup, 1) if not ort_gpu else args.warmup, ort_reps), None))
        ort_fwd = rows[0][1] if ort_gpu else None
        del sess

        # -- onnxattr on the device
        model = onnxattr.load(path, device=args.device)
        xp = model.xp
        xd = xp.asarray(x)
        pool = backend.cupy().get_default_memory_pool() if gpu else None

        def ours(name: str, fn: Callable[[], Any]) -> Any:
            if pool is not None:
                pool.free_all_blocks()
                base = pool.used_bytes()
            result = fn()  # also the warm-up that compiles the kernels
            sync_all()
            peak = (pool.total_bytes() - base) if pool is not None else None
            rows.append((name, median_seconds(fn, sync_all, max(0, args.warmup - 1), args.repeats), peak))
            return result

        logits_ours = backend.to_host(ours("onnxattr forward", lambda: model.forward(xd)))
        for method, label, opts in (
            ("gradient", "onnxattr gradient", {}),
            ("lrp.epsilon_plus_flat", "onnxattr lrp.epsilon_plus_flat", {}),
            ("integrated_gradients", f"onnxattr integrated_gradients ({args.steps} steps, batch_size {args.ig_batch})",
             {"steps": args.steps, "batch_size": args.ig_batch}),
        ):
            m = lookup(method)
            o = resolve_options(m, opts)
            out = ours(label, lambda m=m, o=o: m.fn(model, xd, target, **o))
            if method == "gradient":
                grad_ours = backend.to_host(out)

    # -- the report
    checks = [
        ("forward: onnxattr vs PyTorch, largest difference / largest logit",
         float(np.abs(logits_ours - logits_torch).max() / np.abs(logits_torch).max())),
        ("forward: onnxattr vs onnxruntime, largest difference / largest logit",
         float(np.abs(logits_ours - logits_ort).max() / np.abs(logits_ort).max())),
        ("gradient: onnxattr vs PyTorch, largest per-sample relative L2 error", rel_l2(grad_ours, grad_torch)),
    ]
    env = [f"device: {_device_name(args.device)}", f"python {platform.python_version()}, numpy {np.__version__}, "
           f"onnxruntime {ort.__version__}, torch {torch.__version__}" + (f", cupy {backend.cupy().__version__}" if gpu else ""),
           f"ResNet-50 ({params / 1e6:.1f} M parameters), input {args.batch}x3x{args.size}x{args.size} float32, "
           f"TF32 {'on' if args.tf32 else 'off'}, onnxattr kernels {'off' if args.no_kernels else 'on'}, "
           f"median of {args.repeats} after {args.warmup} warm-up"]
    lines = ["# GPU benchmark: onnxattr (CuPy) vs onnxruntime-gpu and PyTorch", ""]
    lines += [f"- {e}" for e in env + notes]
    lines += ["", "| what | median ms | x onnxruntime-gpu forward | x PyTorch forward+backward | CuPy pool peak GiB |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for name, sec, peak in rows:
        r_ort = f"{sec / ort_fwd:.2f}" if ort_fwd else "n/a"
        lines.append(f"| {name} | {sec * 1e3:.2f} | {r_ort} | {sec / torch_fb:.2f} | "
                     f"{'' if peak is None else f'{peak / 2**30:.2f}'} |")
    lines += ["", "| agreement | value |", "| --- | ---: |"] + [f"| {k} | {v:.2e} |" for k, v in checks]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        pathlib.Path(args.out).write_text(report)
    return 0


def _device_name(device: str) -> str:
    if device != "cuda":
        return f"CPU ({platform.processor() or platform.machine()}): smoke test, not a benchmark"
    from onnxattr import backend

    props = backend.cupy().cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return f"{name}, {props['totalGlobalMem'] / 2**30:.0f} GiB"


if __name__ == "__main__":
    sys.exit(main())
