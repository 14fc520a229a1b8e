"""Every option of every method is checked in one place: a NaN, infinite, negative, huge or
wrongly typed value is an OptionError naming the option and its allowed values, before anything
runs; the bounds keep memory bounded."""
import time
import tracemalloc

import numpy as np
import pytest

import onnxattr
from onnxattr import OptionError
from onnxattr.attribution import METHODS
from onnxattr.attribution.options import Anything, Numeric, Window
from oracles import oracle
import toy

BAD = [float("nan"), float("inf"), -float("inf"), -1, 1e40, "bad", True, [1, 2], np.ma.array([1.0], mask=[1]),
       np.array([np.nan], np.float32), object()]
CASES = [(m, o, v) for m, method in sorted(METHODS.items()) for o, opt in method.options.items()
         if not isinstance(opt.check, Anything) for v in BAD
         if not (isinstance(opt.check, Numeric) and v == -1 and not isinstance(v, bool))
         and not (isinstance(opt.check, Window) and isinstance(v, list))]


@pytest.fixture(scope="module")
def mlp():
    return onnxattr.load(toy.relu_mlp([4, 5, 3]))


@pytest.mark.parametrize("method, option, value", CASES, ids=[f"{m}-{o}-{i}" for i, (m, o, _) in enumerate(CASES)])
def test_bad_option_values_name_the_option_and_range(mlp, method, option, value):
    x = np.ones((2, 4), np.float32)
    with pytest.raises(OptionError, match=rf"option {option}=.* of method '{method}': {option} must be "):
        onnxattr.attribute(mlp, x, 0, method, **{option: value})


def test_nan_baseline_no_longer_gives_a_nan_map(mlp):
    x = np.ones((2, 4), np.float32)
    for method in ("integrated_gradients", "deeplift", "occlusion"):
        with pytest.raises(OptionError, match=r"baseline must be a number .* finite in float32"):
            onnxattr.attribute(mlp, x, 0, method, baseline=float("nan"))


@pytest.mark.parametrize("option", ["epsilon", "gamma"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.5])
def test_lrp_stabilizers_are_checked(mlp, option, value):
    method = "lrp.epsilon" if option == "epsilon" else "lrp.gamma"
    with pytest.raises(OptionError, match=rf"{option} must be a number in \[0, inf\)"):
        onnxattr.attribute(mlp, np.ones((1, 4), np.float32), 0, method, **{option: value})


def test_huge_steps_are_refused_before_anything_is_allocated(mlp):
    start = time.perf_counter()
    for option, value in (("steps", 10**9), ("steps", 10_001)):
        with pytest.raises(OptionError, match=r"steps must be an int in \[2, 10000\]"):
            onnxattr.attribute(mlp, np.ones((1, 4), np.float32), 0, "integrated_gradients", **{option: value})
    with pytest.raises(OptionError, match=r"samples must be an int in \[1, 10000\]"):
        onnxattr.attribute(mlp, np.ones((1, 4), np.float32), 0, "smoothgrad", samples=10**9)
    with pytest.raises(OptionError, match=r"batch_size must be an int in \[1, 65536\]"):
        onnxattr.attribute(mlp, np.ones((1, 4), np.float32), 0, "smoothgrad", batch_size=65_537)
    assert time.perf_counter() - start < 5


def test_integrated_gradients_memory_does_not_grow_with_steps():
    """IG keeps one pass of path points at a time: on a batch of 16 CNN inputs its peak host
    allocation with 128 steps is that with 4 steps (one pass of 64 inputs)."""
    path, ref = oracle("cnn_bn")
    model = onnxattr.load(path)
    x = np.repeat(ref["input"][:1], 16, axis=0)

    def peak(steps):
        tracemalloc.start()
        onnxattr.attribute(model, x, 0, "integrated_gradients", steps=steps, batch_size=64)
        top = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return top

    few, many = peak(4), peak(128)
    assert many < 1.2 * few + (1 << 20), (few, many)


def test_smoothgrad_chunking_never_changes_the_numbers(mlp):
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    runs = [onnxattr.attribute(mlp, x, 1, "smoothgrad", samples=7, seed=11, batch_size=b) for b in (1, 3, 5, 64)]
    for r in runs[1:]:
        np.testing.assert_allclose(r, runs[0], rtol=1e-5, atol=1e-7)
    tail = onnxattr.attribute(mlp, x[3:], 1, "smoothgrad", samples=7, seed=11, indices=[3, 4])
    np.testing.assert_allclose(tail, runs[0][3:], rtol=1e-5, atol=1e-7)


def test_sample_rng_is_the_spawned_child():
    from onnxattr.rng import sample_rng
    child = np.random.default_rng(np.random.SeedSequence(5).spawn(3)[2])
    np.testing.assert_array_equal(sample_rng(5, 2).standard_normal(4), child.standard_normal(4))
    with pytest.raises(OptionError, match="non-negative"):
        sample_rng(-1, 0)


def test_window_int_is_spatial_on_images_and_whole_tuple_otherwise():
    from onnxattr.attribution.perturbation import windows
    assert windows(4, "window", (3, 32, 32)) == (3, 4, 4)
    assert windows(4, "window", (32, 32, 3)) == (4, 4, 3)
    assert windows(4, "window", (10,)) == (4,)
    assert windows(2, "window", (7, 16)) == (2, 16)
    assert windows((1, 2, 2), "window", (3, 8, 8)) == (1, 2, 2)
    with pytest.raises(OptionError, match="one per non-batch axis"):
        windows((2, 2), "window", (3, 8, 8))


def test_occlusion_window_4_on_an_image_covers_every_channel():
    path, ref = oracle("cnn_bn")
    model = onnxattr.load(path)
    x, t = ref["input"][:1], ref["target"][:1]
    a = onnxattr.attribute(model, x, t, "occlusion", window=4)
    np.testing.assert_array_equal(a, onnxattr.attribute(model, x, t, "occlusion", window=(x.shape[1], 4, 4)))
