"""device='cuda' gives the CPU's results: every method on the oracle models, the forward pass of
onnx's model-zoo graphs, each CUDA kernel against its NumPy reference, the generic CuPy path with
the kernels turned off, and the splitting of batches that run out of GPU memory.

All marked ``gpu`` and skipped unless CuPy imports and a GPU answers (so they skip cleanly in CI,
with or without CuPy installed). Run them on a GPU machine with ``python -m pytest -m gpu``.
"""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import onnxattr
from onnxattr import backend
from onnxattr.errors import DeviceMemoryError, OptionError
from onnxattr.kernels import reference as ref
from onnxattr.attribution import METHODS
from geometry import GEOMETRIES, window
from oracles import MODELS, oracle, rel_l2

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not backend.gpu_available(), reason="needs CuPy and a usable NVIDIA GPU"),
]

ROOT = pathlib.Path(__file__).resolve().parents[1]
TOL = 1e-4  # per-sample relative L2 error of the GPU's map against the CPU's


@pytest.fixture(scope="module")
def cp():
    return backend.cupy()


_LOADED: dict = {}


def pair(name: str) -> tuple:
    """The oracle model on the CPU and on the GPU, and its data (loaded once)."""
    if name not in _LOADED:
        path, data = oracle(name)
        _LOADED[name] = onnxattr.load(path, device="cpu"), onnxattr.load(path, device="cuda"), data
    return _LOADED[name]


def options(method: str, data: dict, x: np.ndarray) -> dict:
    if method == "lrp.epsilon_gamma_box":
        return {"low": data["low"], "high": data["high"]}
    if method == "lrp":
        from onnxattr.composites import epsilon_plus_flat

        return {"composite": epsilon_plus_flat()}
    if method == "occlusion":
        return {"window": tuple(max(1, d // 4) for d in x.shape[1:])}
    if method == "smoothgrad":
        return {"samples": 8}
    return {}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_on_cuda_equals_cpu(name, method):
    cpu, gpu, data = pair(name)
    x, t = data["input"], data["target"]
    opts = options(method, data, x)
    try:
        want = onnxattr.attribute(cpu, x, t, method, **opts)
    except OptionError as e:  # a method registered later with a required option this test lacks
        pytest.skip(f"{method}: {e}")
    got = onnxattr.attribute(gpu, x, t, method, **opts)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == x.shape
    assert rel_l2(got, want).max() < TOL


@pytest.mark.parametrize("name", MODELS)
def test_forward_on_cuda_equals_cpu(name):
    cpu, gpu, data = pair(name)
    want = cpu(data["input"])
    got = gpu(data["input"])
    assert np.abs(got - want).max() <= TOL * np.abs(want).max()
    assert np.abs(got - data["logits"]).max() <= 1e-3 * np.abs(data["logits"]).max()


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method", ["lrp.epsilon_plus_flat", "lrp.gamma", "lrp.alpha1_beta0", "rectgrad", "gradient"])
def test_generic_cupy_path_equals_kernels(name, method, monkeypatch):
    """ONNXATTR_CUDA_KERNELS=0 runs the plain CuPy composition: same maps."""
    _, gpu, data = pair(name)
    x, t = data["input"], data["target"]
    with_kernels = onnxattr.attribute(gpu, x, t, method)
    monkeypatch.setenv("ONNXATTR_CUDA_KERNELS", "0")
    without = onnxattr.attribute(gpu, x, t, method)
    assert rel_l2(with_kernels, without).max() < TOL


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "vgg19", "densenet121", "squeezenet", "inception_v1", "shufflenet"])
def test_light_zoo_forward_on_cuda_equals_cpu(name):
    from zoo import LIGHT, light_model, randomized

    if name not in LIGHT:
        pytest.skip(f"onnx ships no light_{name}")
    proto = randomized(light_model(name), seed=1)
    x = np.random.default_rng(2).uniform(0, 1, (1, 3, 224, 224)).astype(np.float32)
    want = onnxattr.load(proto, device="cpu")(x)
    got = onnxattr.load(proto, device="cuda")(x)
    assert np.abs(got.astype(np.float64) - want).max() <= TOL * max(np.abs(want).max(), 1e-6)


# ---- each kernel against its NumPy reference -------------------------------------------------

DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eps", [0.0, 1e-6, 0.25])
def test_kernel_lrp_divide(cp, dtype, eps):
    from onnxattr.kernels.divide import lrp_divide

    rng = np.random.default_rng(0)
    r, z, z2, gate = (rng.standard_normal((3, 50, 7)).astype(dtype) for _ in range(4))
    z[0] = 0
    z2[0, :10] = 0
    d = [cp.asarray(a) for a in (r, z, z2, gate)]
    np.testing.assert_array_equal(lrp_divide(d[0], d[1], eps).get(), ref.lrp_divide(r, z, eps))
    np.testing.assert_array_equal(lrp_divide(d[0], d[1], eps, d[2]).get(), ref.lrp_divide(r, z, eps, z2))
    for sign in (1, -1):
        np.testing.assert_array_equal(lrp_divide(d[0], d[1], eps, d[2], d[3], sign).get(),
                                      ref.lrp_divide(r, z, eps, z2, gate, sign))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", GEOMETRIES)
def test_kernel_im2col_col2im(cp, dtype, geom):
    from onnxattr.kernels import window as kernels

    w = window(*geom)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3) + geom[-1]).astype(dtype)
    want = ref.im2col(x, w.kernel, w.strides, w.dilations, w.pads_begin, w.out)
    np.testing.assert_array_equal(kernels.im2col(cp.asarray(x), w).get(), want)
    np.testing.assert_array_equal(kernels.im2col(cp.asarray(x), w, fill=-np.inf).get(),
                                  ref.im2col(x, w.kernel, w.strides, w.dilations, w.pads_begin, w.out, fill=-np.inf))
    g = rng.standard_normal(want.shape).astype(dtype)
    np.testing.assert_array_equal(kernels.col2im(cp.asarray(g), x.shape, w).get(),
                                  ref.col2im(g, x.shape, w.kernel, w.strides, w.dilations, w.pads_begin))
    last = np.ascontiguousarray(g.transpose(1, 2, 3, 0, 4, 5))  # (C, KH, KW, N, OH, OW)
    np.testing.assert_array_equal(kernels.im2col(cp.asarray(x), w, images_last=True).get(),
                                  ref.im2col(x, w.kernel, w.strides, w.dilations, w.pads_begin, w.out, images_last=True))
    np.testing.assert_array_equal(kernels.col2im(cp.asarray(last), x.shape, w, images_last=True).get(),
                                  ref.col2im(last, x.shape, w.kernel, w.strides, w.dilations, w.pads_begin, images_last=True))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index_dtype", [np.uint8, np.int32])
@pytest.mark.parametrize("geom", GEOMETRIES)
def test_kernel_maxpool(cp, dtype, index_dtype, geom):
    from onnxattr.kernels import pool

    w = window(*geom)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3) + geom[-1]).astype(dtype)
    x[:, :, :4, :4] = 0.5  # ties: the first maximum wins
    y, idx = pool.maxpool2d(cp.asarray(x), w, index_dtype)
    ry, ridx = ref.maxpool2d(x, w.kernel, w.strides, w.dilations, w.pads_begin, w.out, index_dtype)
    np.testing.assert_array_equal(y.get(), ry)
    np.testing.assert_array_equal(idx.get(), ridx)
    assert idx.dtype == index_dtype
    g = rng.standard_normal(ry.shape).astype(dtype)
    np.testing.assert_array_equal(pool.maxpool2d_vjp(cp.asarray(g), idx, x.shape, w).get(),
                                  ref.maxpool2d_vjp(g, ridx, x.shape, w.kernel, w.strides, w.dilations, w.pads_begin))


@pytest.mark.parametrize("method", ["linear", "nearest"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("q", [0.0, 3.0, 50.0, 98.0, 99.999, 100.0])
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (2, 100), (4, 5000), (32, 64 * 56 * 56)])
def test_kernel_row_percentile(cp, method, dtype, q, shape):
    from onnxattr.kernels.percentile import row_percentile

    rng = np.random.default_rng(3)
    a = rng.standard_normal(shape).astype(dtype)
    a[:, ::3] = 0.0  # ties, as after a ReLU
    if shape[1] > 10:
        a[:, 1] = -0.0
    got = row_percentile(cp.asarray(a), q, method).get()
    want = ref.row_percentile(a, q, method)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("method", ["linear", "nearest"])
@pytest.mark.parametrize("q", [0.0, 50.0, 98.0])
def test_kernel_rectgrad(cp, method, q):
    from onnxattr.kernels.percentile import rectgrad

    rng = np.random.default_rng(4)
    g = rng.standard_normal((4, 8, 9, 9)).astype(np.float32)
    a = np.maximum(rng.standard_normal(g.shape), 0).astype(np.float32)
    score = a * g
    tau = ref.row_percentile(score.reshape(4, -1), q, method).astype(np.float32)
    np.testing.assert_array_equal(rectgrad(cp.asarray(g), cp.asarray(a), q, method).get(),
                                  ref.rectgrad_mask(g, score, tau))


# ---- memory --------------------------------------------------------------------------------

@pytest.fixture
def pool_limit(cp):
    """Set CuPy's pool limit for one test (bytes above what the model's parameters hold)."""
    pool = cp.get_default_memory_pool()
    old = pool.get_limit()

    def set_above_params(extra: int) -> None:
        pool.free_all_blocks()
        pool.set_limit(size=pool.used_bytes() + extra)

    yield set_above_params
    pool.set_limit(size=old)
    pool.free_all_blocks()


def peak_bytes(cp, run) -> int:
    pool = cp.get_default_memory_pool()
    pool.free_all_blocks()
    base = pool.used_bytes()
    run()
    return pool.total_bytes() - base  # freed blocks stay cached: the total is the peak


def test_batch_that_does_not_fit_is_split(cp, pool_limit):
    path, data = oracle("resnet_small")
    cpu, gpu = onnxattr.load(path), onnxattr.load(path, device="cuda")
    x = np.repeat(data["input"], 6, axis=0)  # 18 samples
    t = np.repeat(data["target"], 6)
    want = onnxattr.attribute(cpu, x, t, "lrp.epsilon_plus_flat")
    one = peak_bytes(cp, lambda: onnxattr.attribute(gpu, x[:1], t[:1], "lrp.epsilon_plus_flat"))
    pool_limit(4 * one)
    got = onnxattr.attribute(gpu, x, t, "lrp.epsilon_plus_flat")
    assert gpu.max_chunk is not None and 1 <= gpu.max_chunk < len(x)
    assert rel_l2(got, want).max() < TOL


def test_one_sample_that_does_not_fit_is_a_clear_error(cp, pool_limit):
    path, data = oracle("resnet_small")
    gpu = onnxattr.load(path, device="cuda")
    pool_limit(64 << 10)  # 64 KiB beyond the parameters
    with pytest.raises(DeviceMemoryError, match="one sample of input .* does not fit in GPU memory"):
        onnxattr.attribute(gpu, data["input"], data["target"], "gradient")


def test_parameters_live_on_the_device(cp):
    _, gpu, _ = pair("resnet_small")
    floats = [v for v in gpu.params.values() if v.dtype.kind == "f"]
    assert floats and all(isinstance(v, cp.ndarray) for v in floats)


# ---- the whole suite on the GPU ---------------------------------------------------------------

@pytest.mark.slow
def test_whole_suite_on_cuda():
    """Every other test file with onnxattr.load defaulting to device='cuda': the oracles,
    identities and zoo checks hold on the GPU too."""
    code = (
        "import sys, pytest, onnxattr.model as m\n"
        "m.load.__defaults__ = ('cuda',) + m.load.__defaults__[1:]\n"
        "sys.exit(pytest.main(['-q', '-x', '-p', 'no:cacheprovider', 'tests', '-m', 'not gpu',\n"
        "                      '--ignore=tests/test_backend.py', '--ignore=tests/test_gpu.py']))\n"
    )
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=3600)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
