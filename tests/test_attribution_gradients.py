"""Gradient-family methods against the Captum oracles, finite differences and identities."""
import numpy as np
import pytest

import onnxattr
from onnxattr import OptionError
from onnxattr.attribution.gradients import path_points
from onnxattr.rng import sample_rng
from oracles import MODELS, oracle, rel_l2
from kernel_paths import kernels  # noqa: F401  (the fixture)

pytestmark = pytest.mark.usefixtures("kernels")


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("method", ["gradient", "input_x_gradient", "integrated_gradients"])
def test_matches_captum(name, method):
    path, ref = oracle(name)
    model = onnxattr.load(path)
    a = onnxattr.attribute(model, ref["input"], ref["target"], method)
    assert rel_l2(a, ref[method]).max() < 1e-3


@pytest.mark.parametrize("name", MODELS)
def test_forward_matches_torch(name):
    path, ref = oracle(name)
    out = onnxattr.load(path)(ref["input"])
    np.testing.assert_allclose(out, ref["logits"], rtol=1e-4, atol=1e-4 * np.abs(ref["logits"]).max())


@pytest.mark.parametrize("name", MODELS)
def test_gradient_equals_central_differences(name):
    """<grad, e> against (f(x + h e) - f(x - h e)) / 2h on random directions, the differences
    taken in float64 (parameters cast) so that the step can be small enough to miss ReLU kinks."""
    path, ref = oracle(name)
    model = onnxattr.load(path)
    rng = np.random.default_rng(0)
    x = ref["input"][:2]
    t = ref["target"][:2]
    g = onnxattr.attribute(model, x, t, "gradient").astype(np.float64)
    model.params = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in model.params.items()}
    x64 = x.astype(np.float64)
    h = 1e-5
    for _ in range(3):
        e = rng.standard_normal(x.shape)
        fp = model.forward(x64 + h * e)[np.arange(2), t]
        fm = model.forward(x64 - h * e)[np.arange(2), t]
        fd = (fp - fm) / (2 * h)
        an = (g * e).reshape(2, -1).sum(axis=1)
        np.testing.assert_allclose(an, fd, rtol=1e-4, atol=1e-5 * np.abs(fd).max())


def test_integrated_gradients_completeness():
    """With many Gauss-Legendre points, sum(IG) = f(x) - f(baseline)."""
    path, ref = oracle("cnn_bn")
    model = onnxattr.load(path)
    x, t = ref["input"][:2], ref["target"][:2]
    a = onnxattr.attribute(model, x, t, "integrated_gradients", steps=64, integration="gausslegendre")
    fx = model(x)[np.arange(2), t]
    f0 = model(np.zeros_like(x))[np.arange(2), t]
    np.testing.assert_allclose(a.reshape(2, -1).sum(1), fx - f0, rtol=2e-3, atol=1e-3)


@pytest.mark.parametrize("integration", ["trapezoid", "riemann_middle", "gausslegendre"])
def test_quadrature_integrates_linear_exactly(integration):
    alphas, w = path_points(16, integration)
    assert np.isclose(w.sum(), 1.0)
    assert np.isclose((w * alphas).sum(), 0.5)  # integral of alpha over [0, 1]
    assert 0 <= alphas.min() and alphas.max() <= 1


def test_captum_trapezoid_weights_sum_to_n_minus_one_over_n():
    """Captum's riemann_trapezoid (our default, for parity) halves the ends of 1/n weights."""
    alphas, w = path_points(16, "riemann_trapezoid")
    assert np.isclose(w.sum(), 15 / 16)
    np.testing.assert_allclose(alphas, np.linspace(0, 1, 16))
    for integration in ["riemann_left", "riemann_right"]:
        assert np.isclose(path_points(16, integration)[1].sum(), 1.0)


def test_integrated_gradients_batch_size_does_not_change_result():
    path, ref = oracle("mlp")
    model = onnxattr.load(path)
    x, t = ref["input"], ref["target"]
    a = onnxattr.attribute(model, x, t, "integrated_gradients", batch_size=3)
    b = onnxattr.attribute(model, x, t, "integrated_gradients", batch_size=1000)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    c = onnxattr.attribute(model, x, t, "integrated_gradients")  # batch_size=None: the model's choice
    np.testing.assert_allclose(c, b, rtol=1e-5, atol=1e-7)


def test_pass_size_keeps_activations_within_the_budget(monkeypatch):
    from onnxattr import model as model_module

    path, ref = oracle("cnn_bn")
    model = onnxattr.load(path)
    x = ref["input"]
    largest = max(np.prod(s[1:]) for s in model.graph.shapes.values() if len(s) > 1) * 4
    assert model.pass_size(x) == model_module.MAX_PASS  # small activations: the cap
    monkeypatch.setattr(model_module, "PASS_BYTES", int(largest * 3.5))
    assert model.pass_size(x) == 3
    monkeypatch.setattr(model_module, "PASS_BYTES", 1)
    assert model.pass_size(x) == 1


@pytest.mark.parametrize("method", ["integrated_gradients", "smoothgrad", "occlusion"])
@pytest.mark.parametrize("bad", [0, -2, 2.5, "8", True])
def test_bad_batch_size_is_named(method, bad):
    path, ref = oracle("mlp")
    model = onnxattr.load(path)
    with pytest.raises(OptionError, match=r"batch_size must be an int in \[1, 65536\] or None"):
        onnxattr.attribute(model, ref["input"], ref["target"], method, batch_size=bad)


def test_smoothgrad_zero_noise_is_gradient_and_seeded():
    path, ref = oracle("cnn_bn")
    model = onnxattr.load(path)
    x, t = ref["input"][:2], ref["target"][:2]
    a = onnxattr.attribute(model, x, t, "smoothgrad", noise_level=0.0, samples=3)
    np.testing.assert_allclose(a, onnxattr.attribute(model, x, t, "gradient"), rtol=1e-5, atol=1e-7)
    s1 = onnxattr.attribute(model, x, t, "smoothgrad", samples=4, seed=1)
    s2 = onnxattr.attribute(model, x, t, "smoothgrad", samples=4, seed=1)
    s3 = onnxattr.attribute(model, x, t, "smoothgrad", samples=4, seed=2)
    np.testing.assert_array_equal(s1, s2)
    assert not np.allclose(s1, s3)


def test_smoothgrad_is_mean_of_noisy_gradients():
    path, ref = oracle("mlp")
    model = onnxattr.load(path)
    x, t = ref["input"][:3], ref["target"][:3]
    a = onnxattr.attribute(model, x, t, "smoothgrad", samples=5, noise_level=0.2, seed=7)
    noise = np.stack([sample_rng(7, i).standard_normal((5,) + x.shape[1:], dtype=np.float32) for i in range(3)], axis=1)
    sigma = 0.2 * (x.max(axis=1) - x.min(axis=1))
    grads = [onnxattr.attribute(model, x + noise[k] * sigma[:, None], t, "gradient") for k in range(5)]
    np.testing.assert_allclose(a, np.mean(grads, axis=0), rtol=1e-4, atol=1e-6)


def test_occlusion_one_is_output_drop():
    path, ref = oracle("mlp")
    model = onnxattr.load(path)
    x, t = ref["input"][:2], ref["target"][:2]
    a = onnxattr.attribute(model, x, t, "occlusion", window=1)
    f = model(x)[np.arange(2), t]
    for i in [0, 17, 63]:
        xo = x.copy()
        xo[:, i] = 0
        np.testing.assert_allclose(a[:, i], f - model(xo)[np.arange(2), t], rtol=1e-4, atol=1e-5)


def test_occlusion_window_averages_overlapping_patches():
    path, ref = oracle("cnn_bn")
    model = onnxattr.load(path)
    x, t = ref["input"][:1], ref["target"][:1]
    a = onnxattr.attribute(model, x, t, "occlusion", window=(3, 4, 4), strides=(3, 2, 2), batch_size=7)
    f = model(x)[0, t[0]]

    def drop(i, j):
        xo = x.copy()
        xo[:, :, i : i + 4, j : j + 4] = 0
        return f - model(xo)[0, t[0]]

    # pixel (0, 0) is only in the patch at (0, 0); pixel (2, 2) in patches (0,0),(0,2),(2,0),(2,2)
    assert np.isclose(a[0, 0, 0, 0], drop(0, 0), rtol=1e-4, atol=1e-5)
    expected = np.mean([drop(0, 0), drop(0, 2), drop(2, 0), drop(2, 2)])
    assert np.isclose(a[0, 1, 2, 2], expected, rtol=1e-4, atol=1e-5)


def test_methods_lists_options_with_defaults():
    table = onnxattr.methods()
    assert table["integrated_gradients"]["options"]["steps"]["default"] == 32
    assert table["integrated_gradients"]["options"]["baseline"]["default"] == 0.0
    assert table["integrated_gradients"]["options"]["integration"]["default"] == "riemann_trapezoid"
    for name, entry in table.items():
        assert entry["doc"], f"{name} has no docstring"
