"""onnxruntime's kernels (onnxattr/kernels/onnxruntime.py) against the NumPy ops they stand in
for, over random shapes, strides, dilations, groups, pads and output_padding; and the library's
thread setting (onnxattr/threads.py)."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

from onnxattr import threads
from onnxattr.errors import OptionError
from onnxattr.kernels import onnxruntime as ortk
from onnxattr.ops import make_op

RTOL = 1e-5  # float32 rounding of sums in another order, relative to the output's scale


def close(got: np.ndarray, want: np.ndarray, rtol: float = RTOL) -> None:
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"dtype {got.dtype} != {want.dtype}"
    scale = max(float(np.abs(want).max(initial=0.0)), 1e-30)
    err = float(np.abs(got.astype(np.float64) - want).max(initial=0.0)) / scale
    assert err <= rtol, f"max error {err:.2e} of the output's scale"


def random_conv(seed: int, rank: int = 2) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, ortk.ConvGeometry]:
    """A random Conv: its ONNX attributes, x, w, b and the same geometry for the kernels."""
    rng = np.random.default_rng(seed)
    group = int(rng.choice([1, 1, 2, 3]))
    cg, og = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    kernel = [int(k) for k in rng.integers(1, 4, rank)]
    strides = [int(s) for s in rng.integers(1, 4, rank)]
    dilations = [int(d) for d in rng.integers(1, 3, rank)]
    pads = [int(p) for p in rng.integers(0, 3, 2 * rank)]
    extent = [d * (k - 1) + 1 for k, d in zip(kernel, dilations)]
    spatial = [int(rng.integers(max(1, e - pads[i] - pads[i + rank]), e + 7)) for i, e in enumerate(extent)]
    batch = int(rng.integers(1, 4))
    x = rng.standard_normal([batch, cg * group] + spatial).astype(np.float32)
    w = rng.standard_normal([og * group, cg] + kernel).astype(np.float32)
    b = rng.standard_normal(og * group).astype(np.float32)
    attrs = {"strides": strides, "dilations": dilations, "pads": pads, "group": group}
    geometry = ortk.ConvGeometry(tuple(strides), tuple(dilations), tuple(pads), group)
    return attrs, x, w, b, geometry


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("constant", [True, False])
def test_conv_forward_and_data_vjp_equal_the_numpy_op(seed, constant):
    attrs, x, w, b, geometry = random_conv(seed, rank=1 + seed % 3 if seed % 4 else 2)
    op = make_op("Conv", attrs, 17, "conv")
    (want,), ctx = op.forward(x, w, b)
    close(ortk.conv(x, w, b, geometry, constant=constant), want)
    close(ortk.conv(x, w, None, geometry, constant=constant), op.forward(x, w)[0][0])
    g = np.random.default_rng(seed + 100).standard_normal(want.shape).astype(np.float32)
    (dx, _, _) = op.cotangents(ctx, [g], [True, False, False])
    close(ortk.conv_data_vjp(g, w, geometry, x.shape[2:], constant=constant), dx)


@pytest.mark.parametrize("pads", [(0, 0, 0, 0), (1, 1, 1, 1), (2, 0, 1, 3), (3, 3, 3, 3)])
def test_conv_data_vjp_at_stride_1_both_ways(pads):
    # pads within the kernel's extent take the flipped Conv, beyond it ConvTranspose
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    attrs = {"pads": list(pads), "group": 2}
    op = make_op("Conv", attrs, 17, "conv")
    (y,), ctx = op.forward(x, w)
    g = rng.standard_normal(y.shape).astype(np.float32)
    geometry = ortk.ConvGeometry((1, 1), (1, 1), pads, 2)
    close(ortk.conv_data_vjp(g, w, geometry, x.shape[2:]), op.cotangents(ctx, [g], [True, False])[0])


@pytest.mark.parametrize("pads", [(0, 0, 0, 0), (1, 1, 1, 1), (2, 0, 1, 2), (3, 3, 3, 3)])
@pytest.mark.parametrize("dilations", [(1, 1), (2, 1)])
def test_conv_transpose_at_stride_1_both_ways(pads, dilations):
    # pads within the kernel's extent take the flipped Conv (bias and groups included)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 4, 6, 7)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    attrs = {"pads": list(pads), "dilations": list(dilations), "group": 2}
    (want,), _ = make_op("ConvTranspose", attrs, 17, "convT").forward(x, w, b)
    close(ortk.conv_transpose(x, w, b, ortk.ConvGeometry((1, 1), dilations, pads, 2)), want)


@pytest.mark.parametrize("seed", range(30))
def test_conv_transpose_equals_the_numpy_op(seed):
    rng = np.random.default_rng(seed)
    attrs, _, w, b, geometry = random_conv(seed)
    # ConvTranspose's weight is (C, O/G, *kernel): take Conv's (O, C/G, k) and read it that way
    adj = [int(rng.integers(0, max(s, d))) for s, d in zip(geometry.strides, geometry.dilations)]
    if not ortk.supported("ConvTranspose", np.float32, geometry, adj):
        assert any(a >= s for a, s in zip(adj, geometry.strides))
        adj = [min(a, s - 1) for a, s in zip(adj, geometry.strides)]
    # input sizes whose output, (n - 1) s + d (k - 1) + 1 + adj - pads, is not empty
    nd, kernel = geometry.rank, w.shape[2:]
    least = [max(1, 1 + -(-(geometry.pads[i] + geometry.pads[i + nd] - d * (k - 1) - a) // s))
             for i, (s, d, k, a) in enumerate(zip(geometry.strides, geometry.dilations, kernel, adj))]
    spatial = tuple(int(rng.integers(m, m + 5)) for m in least)
    x = rng.standard_normal((int(rng.integers(1, 4)), w.shape[0]) + spatial).astype(np.float32)
    bias = rng.standard_normal(w.shape[1] * geometry.group).astype(np.float32)
    op = make_op("ConvTranspose", dict(attrs, output_padding=adj), 17, "convT")
    (want,), ctx = op.forward(x, w, bias)
    close(ortk.conv_transpose(x, w, bias, geometry, adj), want)
    # its vjp is the Conv of the same geometry (output_padding < stride: the extra cells unread)
    g = rng.standard_normal(want.shape).astype(np.float32)
    close(ortk.conv(g, w, None, geometry), op.cotangents(ctx, [g], [True, False, False])[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)])
def test_gemm_equals_the_numpy_op(dtype, trans_a, trans_b):
    rng = np.random.default_rng(3)
    m, k, n = 5, 7, 4
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    c = rng.standard_normal(n).astype(dtype)
    attrs = {"alpha": 0.5, "beta": 2.0, "transA": int(trans_a), "transB": int(trans_b)}
    (want,), _ = make_op("Gemm", attrs, 17, "gemm").forward(a, b, c)
    for constant in (True, False):
        close(ortk.gemm(a, b, c, 0.5, 2.0, trans_a, trans_b, constant=constant), want)


@pytest.mark.parametrize("shapes", [((3, 5), (5, 4)), ((2, 3, 5), (5, 4)), ((2, 3, 5), (2, 5, 4)),
                                    ((2, 1, 3, 5), (4, 5, 6)), ((5,), (5, 4)), ((3, 5), (5,))])
def test_matmul_between_activations_equals_the_numpy_op(shapes):
    rng = np.random.default_rng(4)
    a, b = (rng.standard_normal(s).astype(np.float32) for s in shapes)
    op = make_op("MatMul", {}, 17, "matmul")
    (want,), ctx = op.forward(a, b)
    close(ortk.matmul(a, b), want)


@pytest.mark.parametrize("lead", [(3,), (2, 5), (1, 2, 3)])
@pytest.mark.parametrize("bias", [True, False])
def test_dense_and_its_data_vjp_equal_the_numpy_op(lead, bias):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(lead + (6,)).astype(np.float32)
    w = rng.standard_normal((6, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32) if bias else None
    op = make_op("Dense", {}, 17, "dense")
    (want,), ctx = op.forward(x, w, b)
    close(ortk.dense(x, w, b), want)
    g = rng.standard_normal(want.shape).astype(np.float32)
    close(ortk.dense_data_vjp(g, w), op.cotangents(ctx, [g], [True, False, False])[0])


def test_one_session_serves_every_batch_size_and_baked_weights_by_identity():
    ortk.clear_cache()
    rng = np.random.default_rng(6)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    geometry = ortk.ConvGeometry((1, 1), (1, 1), (1, 1, 1, 1))
    for n in (1, 2, 5):
        ortk.conv(rng.standard_normal((n, 3, 8, 8)).astype(np.float32), w, None, geometry)
    assert ortk.cached_sessions() == 1
    w2 = w * 2  # another array: another baked session, with its own result
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    close(ortk.conv(x, w2, None, geometry), 2 * ortk.conv(x, w, None, geometry))
    assert ortk.cached_sessions() == 2
    ortk.clear_cache()
    assert ortk.cached_sessions() == 0


def test_derived_weights_are_made_once_per_constant_and_key():
    rng = np.random.default_rng(8)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    calls = []

    def positive(a):
        calls.append(1)
        return np.maximum(a, 0)

    assert not ortk.is_constant(w)
    assert ortk.derived(w, ("pos",), positive) is not ortk.derived(w, ("pos",), positive)  # not constant
    ortk.mark_constant(w)
    assert ortk.is_constant(w) and not ortk.is_constant(w.copy())
    first = ortk.derived(w, ("pos",), positive)
    calls.clear()
    assert ortk.derived(w, ("pos",), positive) is first and not calls
    assert ortk.is_constant(first)
    np.testing.assert_array_equal(first, np.maximum(w, 0))
    assert ortk.derived(w, ("neg",), lambda a: np.minimum(a, 0)) is not first


def test_supported_dtypes():
    assert ortk.supported("Conv", np.float32) and not ortk.supported("Conv", np.float64)
    assert ortk.supported("MatMul", np.float64) and not ortk.supported("MatMul", np.int64)


# ---- threads ---------------------------------------------------------------------------------

@pytest.fixture
def restore_threads(monkeypatch):
    yield
    monkeypatch.undo()  # the environment as it was, then the default count from it
    threads.set_num_threads(None)


def test_thread_count_defaults_to_the_affinity(monkeypatch, restore_threads):
    monkeypatch.delenv(threads.ENV, raising=False)
    threads.set_num_threads(None)
    assert threads.num_threads() == threads.available_cpus()
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    threads.set_num_threads(None)
    assert threads.num_threads() == 1


def test_thread_count_from_the_environment_and_the_setter(monkeypatch, restore_threads):
    blas = threads.blas_threads() is not None
    monkeypatch.setenv(threads.ENV, "1")
    threads.set_num_threads(None)
    assert threads.num_threads() == 1
    assert not blas or threads.blas_threads() == 1  # applied to BLAS when first read
    monkeypatch.setenv(threads.ENV, "3")
    threads.set_num_threads(None)
    assert threads.num_threads() == 3
    threads.set_num_threads(2)
    assert threads.num_threads() == 2
    assert not blas or threads.blas_threads() == 2


@pytest.mark.parametrize("bad", [0, -2, 1.5, "two"])
def test_a_bad_thread_count_is_refused(bad, restore_threads):
    with pytest.raises(OptionError, match="thread count"):
        threads.set_num_threads(bad)


def test_a_bad_thread_count_in_the_environment_names_the_variable(monkeypatch, restore_threads):
    monkeypatch.setenv(threads.ENV, "many")
    with pytest.raises(OptionError, match=threads.ENV):
        threads.set_num_threads(None)


def test_sessions_use_the_thread_count_and_never_spin(restore_threads):
    threads.set_num_threads(1)
    so = ortk.session_options()
    assert so.intra_op_num_threads == 1 and so.inter_op_num_threads == 1
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_blas_limit_holds_blas_to_n_threads_and_restores_it(restore_threads):
    if threads.blas_threads() is None:
        pytest.skip("no BLAS thread control: neither threadpoolctl nor NumPy's bundled OpenBLAS")
    threads.set_num_threads(2)
    assert threads.blas_threads() == 2
    with threads.blas_limit(1):
        assert threads.blas_threads() == 1
    assert threads.blas_threads() == 2


def test_load_takes_the_kernels_switch_and_its_environment_default(monkeypatch):
    import onnxattr
    from onnxattr.errors import OptionError

    path = pathlib.Path(__file__).parent.parent / "models" / "torch_resnet_bn_op17.onnx"
    monkeypatch.delenv(ortk.ENV, raising=False)
    assert onnxattr.load(path).kernels == "onnxruntime"
    assert onnxattr.load(path, kernels="numpy").kernels == "numpy"
    monkeypatch.setenv(ortk.ENV, "numpy")
    model = onnxattr.load(path)
    assert model.kernels == "numpy" and all(n.op.kernels == "numpy" for n in model.graph.nodes)
    with pytest.raises(OptionError, match="kernels=.*'mlas'"):
        onnxattr.load(path, kernels="mlas")
    monkeypatch.setenv(ortk.ENV, "torch")
    with pytest.raises(OptionError, match="ONNXATTR_KERNELS.*'torch'"):
        onnxattr.load(path)


def test_the_onnxruntime_path_runs_the_convolutions_there_and_agrees(monkeypatch):
    import onnxattr

    monkeypatch.setenv("ONNXATTR_COMPILE", "0")  # the per-layer sessions (tests/test_compiled.py: the compiled passes)
    path = pathlib.Path(__file__).parent.parent / "models" / "torch_resnet_bn_op17"
    x = np.load(path.with_suffix(".npz"))["input"]
    results = {}
    for kernels in ("numpy", "onnxruntime"):
        ortk.clear_cache()
        model = onnxattr.load(path.with_suffix(".onnx"), kernels=kernels)
        results[kernels] = onnxattr.attribute(model, x, 0, "gradient"), ortk.cached_sessions()
    (g_np, s_np), (g_ort, s_ort) = results["numpy"], results["onnxruntime"]
    assert s_np == 0 and s_ort > 0
    np.testing.assert_allclose(g_ort, g_np, rtol=1e-4, atol=1e-5 * np.abs(g_np).max())


def test_erf_equals_scipy_to_an_ulp_and_gelu_uses_it(monkeypatch):
    from scipy.special import erf

    from onnxattr.ops.activation import _erf

    x = np.random.default_rng(0).standard_normal((4, 64, 97)).astype(np.float32) * 3
    np.testing.assert_allclose(ortk.erf(x), erf(x), rtol=2.4e-7, atol=6e-8)
    monkeypatch.setattr(ortk, "erf", lambda a: pytest.fail("onnxruntime's erf on a small array"))
    _erf(np, x[:1, :1])  # small arrays stay in SciPy (a session run costs ~10 us)
    monkeypatch.undo()
    calls = []
    monkeypatch.setattr(ortk, "erf", lambda a: calls.append(a.size) or erf(a))
    gelu = make_op("Gelu", {}, 20, "gelu")
    gelu.forward(x)
    assert calls == [x.size]


@pytest.mark.parametrize("kernels, during", [("onnxruntime", 1), ("numpy", 2)])
def test_blas_is_held_to_one_thread_only_while_onnxruntime_carries_a_pass(monkeypatch, restore_threads,
                                                                        kernels, during):
    import onnxattr
    from onnxattr.ops.linear import Conv

    if threads.blas_threads() is None:
        pytest.skip("no control over this NumPy's BLAS")
    path = pathlib.Path(__file__).parent.parent / "models" / "torch_resnet_bn_op17"
    x = np.load(path.with_suffix(".npz"))["input"]
    monkeypatch.setenv("ONNXATTR_COMPILE", "0")  # the interpreter's passes, where BLAS and onnxruntime meet
    model = onnxattr.load(path.with_suffix(".onnx"), kernels=kernels)
    seen = []
    forward = Conv.forward
    monkeypatch.setattr(Conv, "forward", lambda self, *a: seen.append(threads.blas_threads()) or forward(self, *a))
    threads.set_num_threads(2)
    onnxattr.attribute(model, x, 0, "gradient")
    assert set(seen) == {during}
    assert threads.blas_threads() == 2
