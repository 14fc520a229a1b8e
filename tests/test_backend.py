"""The CPU side of the backend switch: the CPU path never imports cupy, device='cuda' fails with
a clear error where CuPy or a GPU is missing, a batch that runs out of GPU memory is split (the
logic, driven here by a simulated out-of-memory error), and the NumPy references of the CUDA
kernels compute what the ops and rules compute (so a kernel that matches its reference on a GPU,
tests/test_gpu.py, matches the CPU path). Every kernel source is compiled with nvcc where it is
installed: no GPU is needed for that.
"""
import concurrent.futures
import pathlib
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import onnxattr
from onnxattr import backend, engine
from onnxattr.errors import DeviceMemoryError, OptionError
from onnxattr.kernels import reference as ref
from onnxattr.model import split_on_oom
from onnxattr.ops import make_op
from geometry import GEOMETRIES, window
from oracles import oracle

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_cpu_path_never_imports_cupy():
    path, _ = oracle("mlp")
    r = run_python(f"""
        import sys
        import numpy as np
        import onnxattr, onnxattr.kernels, onnxattr.kernels.reference
        from onnxattr.kernels import divide, percentile, pool, window  # sources only, no cupy
        model = onnxattr.load({str(path)!r})
        x = np.random.default_rng(0).standard_normal((2, 64)).astype(np.float32)
        for m in ("gradient", "lrp.epsilon_plus_flat", "lrp.gamma", "rectgrad", "deeplift"):
            onnxattr.attribute(model, x, target=1, method=m)
        assert "cupy" not in sys.modules, "the CPU path imported cupy"
        print("ok")
    """)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_unknown_device():
    with pytest.raises(OptionError, match="unknown device 'tpu'"):
        onnxattr.load(oracle("mlp")[0], device="tpu")


def test_cuda_without_cupy_says_how_to_install():
    r = run_python(f"""
        import sys
        sys.modules["cupy"] = None  # import cupy raises ImportError
        import onnxattr
        from onnxattr import backend
        assert not backend.gpu_available()
        try:
            onnxattr.load({str(oracle("mlp")[0])!r}, device="cuda")
        except onnxattr.OptionError as e:
            print("error:", e)
    """)
    assert r.returncode == 0, r.stderr
    assert "needs CuPy" in r.stdout and "onnxattr[gpu]" in r.stdout


def test_cuda_with_cupy_but_no_gpu():
    """cupy installs without a GPU; its device query then raises: that is a clear OptionError too."""
    r = run_python(f"""
        import sys, types
        fake = types.ModuleType("cupy")
        def no_device():
            raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
        fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_device))
        sys.modules["cupy"] = fake
        import onnxattr
        from onnxattr import backend
        assert not backend.gpu_available()
        try:
            onnxattr.load({str(oracle("mlp")[0])!r}, device="cuda")
        except onnxattr.OptionError as e:
            print("error:", e)
    """)
    assert r.returncode == 0, r.stderr
    assert "no usable GPU" in r.stdout and "cudaErrorNoDevice" in r.stdout


def test_out_of_memory_is_recognised():
    assert backend.is_out_of_memory(MemoryError("cupy pool"))
    assert not backend.is_out_of_memory(DeviceMemoryError("final"))
    assert not backend.is_out_of_memory(ValueError("out of memory"))  # not from cupy
    assert issubclass(DeviceMemoryError, MemoryError) and issubclass(DeviceMemoryError, onnxattr.OnnxAttrError)


# ---- splitting a batch that runs out of memory ---------------------------------------------

def oom_above(limit: int):
    calls = []

    def run(a: int, b: int) -> tuple[int, int]:
        calls.append((a, b))
        if b - a > limit:
            raise MemoryError(f"piece of {b - a}")
        return a, b

    return run, calls


def split(run, n, size, fixed=False):
    return split_on_oom(run, n, size, fixed, backend.is_out_of_memory, lambda: None,
                        lambda m, why: f"{m} does not fit ({why})")


def test_split_halves_until_it_fits():
    run, calls = oom_above(3)
    results, size = split(run, 10, 10)
    assert results == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert size == 3 and calls[:3] == [(0, 10), (0, 5), (0, 3)]


def test_split_one_sample_that_does_not_fit():
    run, _ = oom_above(0)
    with pytest.raises(DeviceMemoryError, match=r"1 does not fit \(MemoryError: piece of 1\)"):
        split(run, 4, 4)


def test_split_fixed_batch_is_not_halved():
    run, calls = oom_above(3)
    with pytest.raises(DeviceMemoryError, match="4 does not fit"):
        split(run, 8, 4, fixed=True)
    assert calls == [(0, 4)]


def test_split_passes_other_errors_on():
    def run(a, b):
        raise KeyError("not memory")

    with pytest.raises(KeyError):
        split(run, 4, 4)


@pytest.fixture
def simulated_gpu(monkeypatch):
    """A CPU model that takes the GPU's chunking path, with engine.forward running out of
    'memory' on batches of more than two samples."""
    real = engine.forward

    def forward(graph, params, feeds, *args, **kwargs):
        n = next(iter(feeds.values())).shape[0]
        if n > 2:
            raise MemoryError(f"simulated: batch of {n}")
        return real(graph, params, feeds, *args, **kwargs)

    def make(name):
        path, data = oracle(name)
        model = onnxattr.load(path)
        want = {m: onnxattr.attribute(model, data["input"], data["target"], m) for m in ("gradient", "lrp.z_plus")}
        monkeypatch.setattr(engine, "forward", forward)
        model.device = "cuda"
        return model, data, want

    return make


def test_model_splits_on_out_of_memory(simulated_gpu):
    model, data, want = simulated_gpu("mlp")  # 6 samples
    for m, a in want.items():
        got = onnxattr.attribute(model, data["input"], data["target"], m)
        np.testing.assert_allclose(got, a, rtol=1e-5, atol=1e-7)  # BLAS rounds by batch size
    assert model.max_chunk == 2
    assert model(data["input"]).shape == (6, 5)


def test_convergence_splits_on_out_of_memory(simulated_gpu):
    """CSC runs through Model.propagate, so it gets the same halving as attribute."""
    from onnxattr.analysis import cosine_similarity_convergence

    path, data = oracle("mlp")
    want = cosine_similarity_convergence(onnxattr.load(path), data["input"], "lrp.epsilon", n=3)
    model, data, _ = simulated_gpu("mlp")
    got = cosine_similarity_convergence(model, data["input"], "lrp.epsilon", n=3)  # 6 samples: split
    np.testing.assert_allclose(got.values, want.values, rtol=1e-5)


def test_deeplift_batch_is_never_split(simulated_gpu):
    model, data, _ = simulated_gpu("mlp")
    with pytest.raises(DeviceMemoryError, match="input and reference stacked"):
        onnxattr.attribute(model, data["input"][:2], data["target"][:2], "deeplift")  # a stacked batch of 4


# ---- the kernels' NumPy references compute what the ops and rules compute -------------------

@pytest.mark.parametrize("geom", GEOMETRIES)
def test_reference_im2col_col2im_are_the_window_ops(geom):
    w = window(*geom)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3) + geom[-1]).astype(np.float32)
    cols = ref.im2col(x, w.kernel, w.strides, w.dilations, w.pads_begin, w.out)
    np.testing.assert_array_equal(cols, w.view(w.pad(x, 0.0)))
    g = rng.standard_normal(cols.shape).astype(np.float32)
    padded = (2, 3) + tuple(n + b + e for n, b, e in zip(geom[-1], w.pads_begin, w.pads_end))
    dx = np.zeros(padded, dtype=g.dtype)
    w.scatter_add(g, dx)
    np.testing.assert_array_equal(ref.col2im(g, x.shape, w.kernel, w.strides, w.dilations, w.pads_begin), w.crop(dx))


@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1},
    {"kernel_shape": [3, 2], "strides": [1, 2], "dilations": [2, 1], "pads": [0, 1, 2, 0]},
])
def test_reference_maxpool_is_the_maxpool_op(attrs):
    op = make_op("MaxPool", attrs, 17, "pool")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    x[:, :, :4, :4] = 0.5  # ties: the first maximum wins in both
    (y,), ctx = op.forward(x)
    w = op.window(x)
    ry, idx = ref.maxpool2d(x, w.kernel, w.strides, w.dilations, w.pads_begin, w.out, np.uint8)
    np.testing.assert_array_equal(ry, y)
    g = rng.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_array_equal(ref.maxpool2d_vjp(g, idx, x.shape, w.kernel, w.strides, w.dilations, w.pads_begin),
                                  op.vjp(ctx, [g], [True])[0])


@pytest.mark.parametrize("eps", [0.0, 1e-6])
def test_reference_divide_is_the_rules_division(eps):
    from onnxattr.rules.base import divide, divide_sum

    rng = np.random.default_rng(2)
    r, z, z2, gate = (rng.standard_normal((4, 5, 3)).astype(np.float32) for _ in range(4))
    z[0] = 0.0
    np.testing.assert_array_equal(ref.lrp_divide(r, z, eps), divide(r, z, eps))
    np.testing.assert_array_equal(ref.lrp_divide(r, z, eps, z2), divide(r, z + z2, eps))
    for sign, mask in ((1, gate > 0), (-1, gate < 0)):
        want = divide(r * mask, z + z2, eps)
        np.testing.assert_array_equal(ref.lrp_divide(r, z, eps, z2, gate, sign), want)
        np.testing.assert_array_equal(divide_sum(r, z, z2, eps, gate, sign), want)


def test_reference_rectgrad_is_the_rule():
    from onnxattr.engine import NodeRecord
    from onnxattr.rules import RectGrad

    rng = np.random.default_rng(3)
    g = rng.standard_normal((3, 4, 5, 5)).astype(np.float32)
    a = np.maximum(rng.standard_normal(g.shape), 0).astype(np.float32)
    score = a * g
    tau = ref.row_percentile(score.reshape(3, -1), 90.0, RectGrad.method).astype(np.float32)
    got = RectGrad(90.0).backward(None, NodeRecord(outputs=(a,)), [g], [True])[0]
    np.testing.assert_array_equal(ref.rectgrad_mask(g, score, tau), got)


def test_percentile_ranks_are_numpys():
    from onnxattr.kernels.percentile import ranks

    rng = np.random.default_rng(4)
    for n in (1, 2, 7, 1000, 12345):
        a = np.sort(rng.standard_normal(n))
        for q in (0.0, 1.0, 12.5, 50.0, 97.3, 98.0, 100.0):
            lo, hi, t = ranks(n, q)
            below, above = a[lo], a[hi]
            lerp = above - (above - below) * (1 - t) if t >= 0.5 else below + (above - below) * t
            assert lerp == np.percentile(a, q), (n, q)
            lo, hi, t = ranks(n, q, "nearest")
            assert lo == hi and t == 0 and a[lo] == np.percentile(a, q, method="nearest"), (n, q)


# ---- the ops call the kernels with the right layouts ----------------------------------------

@pytest.fixture
def reference_kernels(monkeypatch):
    """The CUDA kernels that Conv and MaxPool call, replaced by their NumPy references; returns
    the names of the kernels called. So the ops' kernel branches run on NumPy arrays and their
    calls (layouts, shapes, index types) are checked here; the kernels are checked against the
    references on a GPU (tests/test_gpu.py)."""
    from onnxattr.kernels import pool, window

    def geometry(win):
        return win.kernel, win.strides, win.dilations, win.pads_begin

    calls = []

    def record(name, f):
        def run(*args, **kwargs):
            calls.append(name)
            return f(*args, **kwargs)
        return run

    monkeypatch.setattr(window, "im2col", record("im2col", lambda x, win, fill=0.0, images_last=False: ref.im2col(
        x, *geometry(win), win.out, fill, images_last)))
    monkeypatch.setattr(window, "col2im", record("col2im", lambda cols, shape, win, images_last=False: ref.col2im(
        cols, shape, *geometry(win), images_last)))
    monkeypatch.setattr(pool, "maxpool2d", record("maxpool2d", lambda x, win, index: ref.maxpool2d(
        x, *geometry(win), win.out, index)))
    monkeypatch.setattr(pool, "maxpool2d_vjp", record("maxpool2d_vjp", lambda g, idx, shape, win: ref.maxpool2d_vjp(
        g, idx, shape, *geometry(win))))
    return calls


@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},  # stride 1: the vjp is a correlation again
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 2], "group": 2},  # the vjp is col2im
    {"kernel_shape": [1, 2], "strides": [2, 1], "dilations": [1, 2]},
])
def forward_and_vjp(op, module, kernels, *inputs):
    """The op's output and input cotangent (for a seeded random cotangent), with ``use_kernels``
    as ``kernels`` says."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module, "use_kernels", lambda a: kernels)
        (y,), ctx = op.forward(*inputs)
        g = np.random.default_rng(7).standard_normal(y.shape).astype(y.dtype)
        return y, op.vjp(ctx, [g], [True] + [False] * (len(inputs) - 1))[0]


@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]},  # stride 1: the vjp is a correlation again
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 2], "group": 2},  # the vjp is col2im
    {"kernel_shape": [1, 2], "strides": [2, 1], "dilations": [1, 2]},
])
def test_conv_through_the_kernels_equals_numpy(reference_kernels, attrs):
    from onnxattr.ops import linear

    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4, 9, 8)).astype(np.float32)
    w = rng.standard_normal((6, 4 // attrs.get("group", 1)) + tuple(attrs["kernel_shape"])).astype(np.float32)
    op = make_op("Conv", attrs, 17, "conv")
    y, dx = forward_and_vjp(op, linear, True, x, w)
    assert reference_kernels == ["im2col"] + (["col2im"] if "strides" in attrs else ["im2col"])
    want_y, want_dx = forward_and_vjp(op, linear, False, x, w)
    np.testing.assert_allclose(y, want_y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, want_dx, rtol=1e-5, atol=1e-5)


def test_maxpool_through_the_kernel_equals_numpy(reference_kernels):
    from onnxattr.ops import pool

    op = make_op("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}, 17, "pool")
    x = np.random.default_rng(6).standard_normal((2, 3, 9, 8)).astype(np.float32)
    x[:, :, :4, :4] = 0.5  # ties: the first maximum wins in both
    y, dx = forward_and_vjp(op, pool, True, x)
    assert reference_kernels == ["maxpool2d", "maxpool2d_vjp"]
    want_y, want_dx = forward_and_vjp(op, pool, False, x)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(dx, want_dx)


# ---- the CUDA sources compile (nvcc, no GPU needed) -----------------------------------------

@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_kernel_sources_compile(tmp_path):
    from onnxattr.kernels import divide, percentile, pool, window  # noqa: F401  (registration)
    from onnxattr.kernels.cuda import SOURCES

    jobs = []
    for name, (source, variants) in SOURCES.items():
        assert variants, name
        for i, types in enumerate(variants):
            f = tmp_path / f"{name}_{i}.cu"
            f.write_text("".join(f"typedef {c} {k};\n" for k, c in sorted(types.items())) + source)
            jobs.append(f)

    def compile_one(f: pathlib.Path) -> tuple[str, int, str]:
        r = subprocess.run(["nvcc", "-arch=sm_80", "-cubin", "-Werror", "all-warnings", "-o", str(f.with_suffix(".cubin")), str(f)],
                           capture_output=True, text=True, timeout=300)
        return f.name, r.returncode, r.stderr

    with concurrent.futures.ThreadPoolExecutor(4) as pool_:
        failed = [(n, err) for n, rc, err in pool_.map(compile_one, jobs) if rc]
    assert not failed, failed
