"""Benchmark: onnxattr's forward pass and attributions against onnxruntime's forward pass, and
against the PyTorch tools that compute the same thing.

In one run and on the same input it times onnxruntime's forward, ours, and the methods
``gradient``, ``lrp.epsilon_plus_flat``, ``guided_backprop`` and ``integrated_gradients`` (the heavy
ops through onnxruntime's kernels, the default; ``gradient`` also with ``kernels="numpy"``); with
torch and captum installed (the ``bench`` extra) also Captum's Saliency and IntegratedGradients,
and with zennit (``pip install zennit==0.5.1 --no-deps``) Zennit's EpsilonPlusFlat, on the same
network in PyTorch. The transformers (``--models bert,vit``: BERT-base and ViT-B/16-sized, random
weights, built at bench time with torch and transformers, :mod:`bench_transformers`) are timed
forward and gradient against onnxruntime and against PyTorch's own forward and forward plus
backward. Each measurement is repeated after one warm-up, the repetitions interleaved
(round-robin) so that a noisy machine slows all of them alike, with a pause before each call
(``PAUSE``: spinning thread pools settle); the table gives medians and each
median's ratio to onnxruntime's forward. Peak memory is measured in a fresh subprocess per
measurement (VmHWM above the resident size after loading, so BLAS and onnxruntime allocations
count).

The CNNs: a ResNet-18-shaped network (``tools/resnet18.py``, built with onnx.helper from seeded
random weights; the PyTorch twin is torchvision's resnet18 holding the same arrays) at batch 8, and
onnx's light ResNet-50 test model with random weights (its batch is fixed to 1; no twin).
torchvision's CPU-less wheel imports once its two custom-op schemas are declared
(``bench_transformers.torchvision_schemas``).

    /work/venvs/torch/bin/python tools/bench.py     # the full run of BENCHMARKS.md (torch venv)
    python tools/bench.py --models resnet18 --repeats 3 --no-captum
    BENCH_THREADS=1 python tools/bench.py           # everything on one core
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

#: threads of onnxruntime, numpy's BLAS, onnxattr's own sessions and torch (the issue's machine
#: has 2 cores); set BENCH_THREADS=1 to compare the kernels on one core, which a busy machine disturbs less
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "ONNXATTR_NUM_THREADS"):
    os.environ[_var] = str(THREADS)

import numpy as np  # noqa: E402  (after the thread settings)
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools"), str(ROOT / "tests")]

import onnxattr  # noqa: E402
import resnet18  # noqa: E402
from zoo import light_model, ort_run, randomized  # noqa: E402  (tests/zoo.py)

ort.set_default_logger_severity(3)  # no warnings about the zoo model's unused shape initializers

METHODS = {
    "gradient": {},
    "lrp.epsilon_plus_flat": {},
    "guided_backprop": {},
    "integrated_gradients": {"steps": 32},
}


@dataclass
class Case:
    """One benchmarked network: its ONNX file, an input batch, and (if torch is here) the same
    network in PyTorch."""

    name: str
    path: pathlib.Path
    x: np.ndarray
    torch_model: Any = None


def make_cases(names: list[str], batch: int, size: int, width: int, tmp: pathlib.Path,
               with_torch: bool) -> list[Case]:
    rng = np.random.default_rng(0)
    cases = []
    for name in names:
        if name == "resnet18":
            w = resnet18.weights(seed=0, widths=tuple(width * 2**i for i in range(4)))
            proto = resnet18.onnx_model(w, size=size)
            x = rng.uniform(0, 1, (batch, 3, size, size)).astype(np.float32)
            net = torchvision_resnet18(w, width) if with_torch else None
        elif name in ("bert", "vit"):
            import bench_transformers

            path = tmp / f"{name}.onnx"
            x, net = bench_transformers.make(name, batch, path)
            cases.append(Case(name, path, x, net))
            continue
        elif name == "resnet50":
            proto = randomized(light_model("resnet50"), seed=0)
            proto.ir_version = max(proto.ir_version, 4)  # IR 3 wants initializers among the inputs
            x = rng.uniform(0, 1, (1, 3, 224, 224)).astype(np.float32)  # the graph fixes batch 1
            net = None
        else:
            raise SystemExit(f"unknown model {name!r}; choose resnet18, resnet50, bert or vit")
        path = tmp / f"{name}.onnx"
        onnx.save(proto, path)
        cases.append(Case(name, path, x, net))
    return cases


def torchvision_resnet18(w: resnet18.Weights, width: int) -> Any:
    """torchvision's resnet18 (eval mode) holding the arrays of ``w`` (the names are the same), so
    that Zennit's ResNet canonizer applies; the hand-written twin where the widths differ."""
    import torch

    net = resnet18.torch_model(w)
    if width != 64:
        return net
    import bench_transformers

    bench_transformers.torchvision_schemas()
    import torchvision

    tv = torchvision.models.resnet18(num_classes=resnet18.CLASSES)
    tv.load_state_dict(net.state_dict())
    return tv.eval()


def ort_session(path: pathlib.Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def jobs_for(case: Case, steps: int, reference: bool = True) -> tuple[dict[str, Callable[[], Any]], dict[str, str]]:
    """The timed callables of one case, and the checks of agreement (text per row)."""
    sess = ort_session(case.path)
    inp = sess.get_inputs()[0].name
    x = case.x
    logits = sess.run(None, {inp: x})[0]
    target = logits.reshape(len(x), -1).argmax(axis=1)
    model = onnxattr.load(str(case.path))
    jobs: dict[str, Callable[[], Any]] = {
        "onnxruntime forward": lambda: sess.run(None, {inp: x}),
        "onnxattr forward": lambda: model(x),
    }
    transformer = case.name in ("bert", "vit")
    for m in ["gradient"] if transformer else list(METHODS):
        o = dict(METHODS[m], **({"steps": steps} if m == "integrated_gradients" else {}))
        jobs[m] = lambda m=m, o=o: onnxattr.attribute(model, x, target=target, method=m, **o)
    (explained,) = ort_run(  # the tensor we explain (before a final Softmax)
        onnx.load(case.path), x, [model.output_name])
    checks = {"onnxattr forward": _diff(model(x), explained, "onnxruntime")}
    if reference and not transformer:  # the reference kernels, for the gain (the transformers' take minutes)
        ref = onnxattr.load(str(case.path), kernels="numpy")
        jobs["onnxattr forward (numpy kernels)"] = lambda: ref(x)
        jobs["gradient (numpy kernels)"] = lambda: onnxattr.attribute(ref, x, target=target, method="gradient")
        checks["gradient (numpy kernels)"] = _diff(jobs["gradient (numpy kernels)"](), jobs["gradient"](), "onnxruntime kernels")
    if case.torch_model is not None and case.name in ("bert", "vit"):
        import bench_transformers

        peers = bench_transformers.peers(case.torch_model, x, target)
        jobs.update(peers)
        checks["gradient"] = _diff(jobs["gradient"](), peers["PyTorch forward+backward"]().numpy(), "PyTorch")
    elif case.torch_model is not None:
        jobs_checks = captum_and_zennit(case, x, target, steps, model)
        jobs.update(jobs_checks[0])
        checks.update(jobs_checks[1])
    return jobs, checks


def captum_and_zennit(case: Case, x: np.ndarray, target: np.ndarray, steps: int,
                      model: onnxattr.Model) -> tuple[dict[str, Callable[[], Any]], dict[str, str]]:
    """Captum's Saliency and IntegratedGradients and (where installed, on torchvision's resnet18)
    Zennit's EpsilonPlusFlat, with the relative differences of ours to theirs."""
    import torch
    from captum.attr import IntegratedGradients, Saliency

    warnings.filterwarnings("ignore", message=".*did not already require gradients", category=UserWarning)
    net = case.torch_model
    tx = torch.from_numpy(x)
    tt = torch.from_numpy(target)
    saliency, ig = Saliency(net), IntegratedGradients(net)
    batch = 64 // len(x) * len(x)  # the same points per pass as ours (batch_size=64)
    jobs: dict[str, Callable[[], Any]] = {
        "Captum Saliency": lambda: saliency.attribute(tx, target=tt, abs=False),
        "Captum IntegratedGradients": lambda: ig.attribute(
            tx, target=tt, n_steps=steps, method="riemann_trapezoid", internal_batch_size=batch),
    }
    ours = onnxattr.attribute(model, x, target=target, method="gradient")
    checks = {"gradient": _diff(ours, jobs["Captum Saliency"]().numpy(), "Captum")}
    ours = onnxattr.attribute(model, x, target=target, method="integrated_gradients", steps=steps)
    checks["integrated_gradients"] = _diff(ours, jobs["Captum IntegratedGradients"]().detach().numpy(), "Captum")
    try:
        from zennit.attribution import Gradient
        from zennit.composites import EpsilonPlusFlat
        from zennit.torchvision import ResNetCanonizer
    except ImportError:
        return jobs, checks
    if type(net).__module__.startswith("torchvision"):
        onehot = torch.nn.functional.one_hot(tt, logits_width(net)).float()

        def zennit() -> Any:
            with Gradient(model=net, composite=EpsilonPlusFlat(canonizers=[ResNetCanonizer()])) as attributor:
                return attributor(tx, lambda out: out * onehot)[1]

        jobs["Zennit EpsilonPlusFlat"] = zennit
        ours = onnxattr.attribute(model, x, target=target, method="lrp.epsilon_plus_flat")
        checks["lrp.epsilon_plus_flat"] = _diff(ours, zennit().detach().numpy(), "Zennit")
    return jobs, checks


def logits_width(net: Any) -> int:
    return int(net.fc.out_features)


def _diff(got: np.ndarray, want: np.ndarray, name: str) -> str:
    """The relative L2 and max differences to another framework's result. Gradients of a ReLU
    network jump where float rounding flips a ReLU or a MaxPool's argmax, so the max difference
    of a gradient map is a few such pixels; the L2 difference says how much of the map agrees."""
    d = np.abs(got.astype(np.float64) - want)
    l2 = np.linalg.norm(d) / max(float(np.linalg.norm(want)), 1e-30)
    mx = d.max() / max(float(np.abs(want).max()), 1e-30)
    return f"rel. diff to {name}: L2 {l2:.1e}, max {mx:.1e}"


#: seconds between two timed calls: onnxruntime's default sessions and torch keep their thread
#: pools spinning for a while after a call, and would take the cores from the next one (measured:
#: onnxruntime's forward of the ResNet-18 took 0.172 s right after a spinning session's call,
#: 0.144 s after a pause, whatever its own settings)
PAUSE = 0.1

#: jobs that need no warm-up of their own: they run the passes of ``gradient``, already warm
COLD_OK = ("integrated_gradients", "Captum IntegratedGradients")


def time_jobs(jobs: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Wall-clock seconds of ``repeats`` calls of each job after one warm-up, interleaved."""
    for k, f in jobs.items():
        if k not in COLD_OK:
            f()
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(repeats):
        for k, f in jobs.items():
            time.sleep(PAUSE)
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return times


# ---- peak memory, one fresh subprocess per measurement ----------------------------------------

def _status(field: str) -> int:
    """A field of /proc/self/status in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_child(path: str, what: str, shape: tuple[int, ...]) -> dict[str, int]:
    """In this process: load the model and run ``what`` on one sample (so that onnxruntime's
    sessions, ours and the reference's, are built and their weights prepacked, as after loading),
    then once on an input of ``shape``; the resident size before that run and the peak above it
    (the high-water mark is reset just before)."""
    x = np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)[:1]
    if what == "onnxruntime forward":
        sess = ort_session(pathlib.Path(path))
        run = lambda: sess.run(None, {sess.get_inputs()[0].name: x})  # noqa: E731
    else:
        model = onnxattr.load(path)
        run = (lambda: model(x)) if what == "onnxattr forward" else (
            lambda: onnxattr.attribute(model, x, target=0, method=what))
    run()
    x = np.random.default_rng(0).uniform(0, 1, shape).astype(np.float32)
    base = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident size
    run()
    return {"base": base, "peak": _status("VmHWM") - base}


def peak(path: pathlib.Path, what: str, shape: tuple[int, ...]) -> dict[str, int] | None:
    cmd = [sys.executable, __file__, "--peak-child", str(path), what, "x".join(map(str, shape))]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        print(f"peak memory of {what!r} failed:\n{out.stderr}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_table(case: Case) -> str:
    """Peak memory of onnxruntime's forward, ours and the gradient (and LRP on the CNNs)."""
    whats = ["onnxruntime forward", "onnxattr forward", "gradient"]
    whats += [] if case.name in ("bert", "vit") else ["lrp.epsilon_plus_flat"]
    rows = ["", f"### Peak memory, {case.name} input {list(case.x.shape)} (above the resident size after one sample ran)",
            "", "| what | peak (MB) | ratio to onnxruntime forward | resident after one sample (MB) |",
            "|---|---:|---:|---:|"]
    peaks = {w: peak(case.path, w, case.x.shape) for w in whats}
    ref = (peaks["onnxruntime forward"] or {}).get("peak")
    for w, r in peaks.items():
        if r is not None:
            ratio = f"{r['peak'] / ref:.2f}x" if ref else "-"
            rows.append(f"| {w} | {r['peak'] / 2**20:.0f} | {ratio} | {r['base'] / 2**20:.0f} |")
    return "\n".join(rows)


# ---- report -------------------------------------------------------------------------------------

#: environment variables that change the speed of NumPy's BLAS or of the allocator; the report
#: names the ones that are set, and puts them in the command that makes the run again
TUNING = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def blas_core() -> str:
    """The kernel family OpenBLAS chose at load time (e.g. Haswell: AVX2, SkylakeX: AVX-512), read
    from the library NumPy loaded; empty where NumPy's BLAS is not OpenBLAS."""
    with open("/proc/self/maps") as f:
        paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line})
    for path in paths:
        lib = ctypes.CDLL(path)
        for name in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                return fn().decode()
    return ""


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    blas = "unknown BLAS"
    try:
        cfg = np.show_config(mode="dicts")
        b = cfg["Build Dependencies"]["blas"]
        blas = f"{b.get('name')} {b.get('version')}"
    except Exception:  # the config layout differs between numpy versions
        pass
    core = blas_core()
    blas += f", {core} kernels" if core else ""
    parts = [f"{cpu}, {os.cpu_count()} cores visible, {THREADS} threads used",
             f"Python {platform.python_version()}, numpy {np.__version__} ({blas}), onnxruntime {ort.__version__}"]
    try:
        import captum
        import torch

        parts.append(f"torch {torch.__version__}, captum {captum.__version__}")
    except ImportError:
        parts.append("torch/captum not installed")
    return "; ".join(parts)


def table(case: Case, times: dict[str, list[float]], checks: dict[str, str]) -> str:
    base = statistics.median(times["onnxruntime forward"])
    rows = [f"### {case.name}, input {list(case.x.shape)}", "",
            "| what | median (s) | ratio to onnxruntime forward | fastest (s) | check |", "|---|---:|---:|---:|---|"]
    for k, ts in times.items():
        med = statistics.median(ts)
        rows.append(f"| {k} | {med:.4g} | {med / base:.2f}x | {min(ts):.4g} | {checks.get(k, '')} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="resnet18,resnet50,bert,vit", help="comma-separated: resnet18, resnet50, bert, vit")
    p.add_argument("--batch", type=int, default=8, help="batch of the ResNet-18 and the transformers (ResNet-50 fixes 1)")
    p.add_argument("--size", type=int, default=224, help="image size of the ResNet-18")
    p.add_argument("--width", type=int, default=64, help="channels of the ResNet-18's first stage")
    p.add_argument("--steps", type=int, default=32, help="Integrated Gradients steps")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions after a warm-up")
    p.add_argument("--no-captum", action="store_true", help="skip Captum even if it is installed")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--no-reference", action="store_true", help="skip the rows of kernels='numpy'")
    p.add_argument("--memory", default="resnet18,bert", help="models whose peak memory is measured")
    p.add_argument("--peak-child", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.peak_child:
        path, what, shape = a.peak_child
        print(json.dumps(peak_child(path, what, tuple(int(v) for v in shape.split("x")))))
        return ""
    with_torch = not a.no_captum
    if with_torch:
        try:
            import captum  # noqa: F401
            import torch

            torch.set_num_threads(THREADS)
        except ImportError:
            with_torch = False
    env = "".join(f"{k}={os.environ[k]} " for k in ("BENCH_THREADS", *TUNING) if k in os.environ)
    command = " ".join([env + "python tools/bench.py"] + (sys.argv[1:] if argv is None else argv))
    out = [f"Machine: {machine()}", "", f"Command: `{command}`"]
    print("\n".join(out), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        cases = make_cases(a.models.split(","), a.batch, a.size, a.width, pathlib.Path(tmp), with_torch)
        for case in cases:
            jobs, checks = jobs_for(case, a.steps, not a.no_reference)
            times = time_jobs(jobs, a.repeats)
            out += ["", table(case, times, checks)]
            print("\n" + out[-1], flush=True)
        for case in cases:
            if not a.no_memory and case.name in a.memory.split(",") and (case.name != "resnet18" or a.width == 64):
                out.append(memory_table(case))
                print(out[-1], flush=True)
    return "\n".join(out)


if __name__ == "__main__":
    main()
