"""Input and layer alignment, and cosine similarity convergence (Sixt et al. 2020)."""
from __future__ import annotations

import numpy as np
import pytest
import toy
from oracles import oracle
from test_analysis_randomization import random_cnn

import onnxattr
from onnxattr.analysis import cosine_similarity_convergence, input_alignment, layer_alignment
from onnxattr.analysis.alignment import random_cosine_median
from onnxattr.errors import InputError, OptionError, UnsupportedOpError

RNG = np.random.default_rng(0)


def test_input_alignment_of_x_with_itself_is_one():
    x = RNG.standard_normal((4, 3, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(input_alignment(x, x), 1.0, rtol=1e-6)
    np.testing.assert_allclose(input_alignment(-2 * x, x), -1.0, rtol=1e-6)
    e = np.zeros((1, 2), np.float32)
    np.testing.assert_allclose(input_alignment(np.array([[1.0, 1.0]]), np.array([[1.0, 0.0]])), [np.sqrt(0.5)])
    assert np.isnan(input_alignment(e, e)[0])
    with pytest.raises(InputError, match="must match"):
        input_alignment(x, x[:, :2])


def test_layer_alignment_of_the_gradient_on_a_cnn():
    m = onnxattr.load(random_cnn())
    x = np.random.default_rng(1).uniform(0, 1, (3, 3, 16, 16)).astype(np.float32)
    la = layer_alignment(m, x, target=[0, 4, 7], method="gradient")
    assert la.layers == ["x", "conv1", "relu1", "conv2", "relu2", "conv3"]
    assert la.op_types == ["Input", "Conv", "Relu", "Conv", "Relu", "Conv"]
    assert la.cosine.shape == (6, 3) and np.all(np.abs(la.cosine) <= 1)
    g = onnxattr.attribute(m, x, target=[0, 4, 7], method="gradient")
    np.testing.assert_allclose(la.cosine[0], input_alignment(g, x), rtol=1e-6)
    # at the output the relevance is the one-hot seed: cos = z_t / |z|
    z = m(x).reshape(3, -1).astype(np.float64)
    np.testing.assert_allclose(la.cosine[-1], z[np.arange(3), [0, 4, 7]] / np.linalg.norm(z, axis=1), rtol=1e-5)


def test_layer_alignment_of_gradient_x_input_starts_with_the_map():
    m = onnxattr.load(toy.relu_mlp([10, 16, 3], seed=3))
    x = RNG.standard_normal((4, 10)).astype(np.float32)
    la = layer_alignment(m, x, method="input_x_gradient")
    a = onnxattr.attribute(m, x, method="input_x_gradient")
    np.testing.assert_allclose(la.cosine[0], input_alignment(a, x), rtol=1e-6)
    assert la.layers == ["x", "Gemm_0", "Relu_1", "Gemm_2"]


def test_layer_alignment_runs_on_cnn_bn():
    path, data = oracle("cnn_bn")
    try:
        m = onnxattr.load(path)
    except UnsupportedOpError as e:  # the oracle needs ops (Flatten) that may not be there yet
        pytest.skip(str(e))
    la = layer_alignment(m, data["input"], target=data["target"], method="gradient")
    assert la.layers[0] == m.input_name and len(la.layers) >= 8
    assert la.cosine.shape == (len(la.layers), len(data["input"]))
    assert np.all(np.isfinite(la.cosine[0])) and np.all(np.isfinite(la.cosine[-1]))
    assert all(m.graph.node(s).kind in ("route", "shape") for s in la.skipped)
    np.testing.assert_allclose(la.cosine[0], input_alignment(data["gradient"], data["input"]), rtol=1e-3)


def test_non_backprop_methods_are_refused():
    m = onnxattr.load(toy.relu_mlp([6, 8, 2]))
    x = RNG.standard_normal((2, 6)).astype(np.float32)
    for method in ("integrated_gradients", "smoothgrad", "occlusion"):
        with pytest.raises(OptionError, match=f"{method!r} is not"):
            layer_alignment(m, x, method=method)
        with pytest.raises(OptionError, match=f"{method!r} is not"):
            cosine_similarity_convergence(m, x, method=method)
    with pytest.raises(OptionError, match="has no option"):
        layer_alignment(m, x, method="gradient", steps=3)


def test_random_baseline_is_the_median_abs_cosine_of_random_vectors():
    assert random_cosine_median(1) == 1.0
    rng = np.random.default_rng(5)
    for d in (2, 10, 400):
        u, v = rng.standard_normal((2, 4000, d))
        empirical = np.median(np.abs((u * v).sum(1)) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1))
        np.testing.assert_allclose(random_cosine_median(d), empirical, rtol=0.05)
    np.testing.assert_allclose(random_cosine_median(10_000) * 100, 0.6745, rtol=0.02)


def test_csc_of_the_gradient_on_a_deep_relu_mlp_stays_near_the_random_baseline():
    m = onnxattr.load(toy.relu_mlp([128] * 6 + [10], seed=0))
    x = np.random.default_rng(1).standard_normal((8, 128)).astype(np.float32)
    c = cosine_similarity_convergence(m, x, "gradient", layer="Relu_9", n=5, seed=0)
    assert c.layers[0] == "x" and c.layers[-1] == "Relu_9" and len(c.layers) == 11
    assert c.values.shape == (11, 10, 8)
    np.testing.assert_array_equal(c.dims, 128)
    # the injected vectors are independent: at the injection layer CSC is the baseline
    assert 0.6 < c.median[-1] / c.baseline[-1] < 1.6
    # the gradient does not converge: every layer stays a small multiple of the baseline, far from 1
    assert np.all(c.median < 4 * c.baseline) and np.all(c.median < 0.3)
    # a tensor name gives the same
    same = cosine_similarity_convergence(m, x, "gradient", layer="a4", n=5, seed=0)
    np.testing.assert_allclose(same.median, c.median)


def test_csc_injected_inside_a_cnn():
    m = onnxattr.load(random_cnn())
    x = np.random.default_rng(1).uniform(0, 1, (3, 3, 16, 16)).astype(np.float32)
    c = cosine_similarity_convergence(m, x, "input_x_gradient", layer="conv2", n=3)
    assert c.layers == ["x", "conv1", "relu1", "conv2"]
    np.testing.assert_array_equal(c.dims, [3, 8, 8, 16])  # channels, compared at each position
    assert c.values.shape == (4, 3, 3) and np.all(c.values <= 1)
    full = cosine_similarity_convergence(m, x, "gradient", n=2)  # default: the output layer
    assert full.layers[-1] == "conv3"
    # the loaded model is untouched: still the full graph
    assert m.output_name == "y" and len(m.graph.nodes) == 5


def test_csc_compares_channels_at_each_position():
    """Sixt et al.: |cos| across channels per spatial position. Two maps whose channel vectors are
    parallel at every position but scaled differently in space have CSC 1, though their
    flattened cosine is far from 1."""
    from onnxattr.analysis.alignment import channel_cosines

    rng = np.random.default_rng(0)
    direction = rng.standard_normal((2, 5, 1, 1))
    a = direction * rng.uniform(0.1, 1, (2, 1, 4, 4))
    b = -direction * rng.uniform(0.1, 1, (2, 1, 4, 4)) ** 4
    np.testing.assert_allclose(channel_cosines(a, b), 1.0)
    flat = np.abs((a * b).reshape(2, -1).sum(1)) / (np.linalg.norm(a.reshape(2, -1), axis=1) * np.linalg.norm(b.reshape(2, -1), axis=1))
    assert flat.max() < 0.95
    np.testing.assert_allclose(channel_cosines(np.moveaxis(a, 1, 3), np.moveaxis(b, 1, 3), axis=3), 1.0)


def test_csc_options_are_checked():
    m = onnxattr.load(toy.relu_mlp([6, 8, 2]))
    x = RNG.standard_normal((2, 6)).astype(np.float32)
    with pytest.raises(OptionError, match="unknown layer 'conv9'"):
        cosine_similarity_convergence(m, x, "gradient", layer="conv9")
    with pytest.raises(OptionError, match="n must"):
        cosine_similarity_convergence(m, x, "gradient", n=1)
    with pytest.raises(OptionError, match="unknown method"):
        cosine_similarity_convergence(m, x, "gradeint")
