"""Power spectrum, FORGrad's low-pass filter and the cutoff search."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxattr
from onnxattr.analysis import insertion, lowpass, mu_fidelity, power_spectrum, select_cutoff
from onnxattr.analysis.spectral import high_frequency_share
from onnxattr.errors import InputError, OptionError

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("shape", [(2, 3, 8, 10), (2, 9, 7, 3), (3, 6, 6)])
def test_full_band_is_the_identity(shape):
    a = RNG.standard_normal(shape).astype(np.float32)
    out = lowpass(a, 1.0)
    assert out.dtype == a.dtype and out is not a
    np.testing.assert_array_equal(out, a)


@pytest.mark.parametrize("layout,shape", [("NCHW", (2, 3, 12, 9)), ("NHWC", (2, 12, 9, 3)), (None, (2, 11, 16))])
@pytest.mark.parametrize("cutoff", [0.01, 0.1, 0.33, 0.8, 0.999])
def test_lowpass_keeps_each_channel_sum(layout, shape, cutoff):
    a = RNG.standard_normal(shape).astype(np.float32) + 0.3
    out = lowpass(a, cutoff, layout=layout)
    assert out.shape == a.shape and out.dtype == np.float32
    axes = (2, 3) if layout == "NCHW" else (1, 2)
    np.testing.assert_allclose(out.sum(axis=axes, dtype=np.float64), a.sum(axis=axes, dtype=np.float64),
                               rtol=1e-5, atol=1e-4)


def test_lowpass_removes_what_is_above_the_cutoff_and_keeps_what_is_below():
    i, j = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    checker = (-1.0) ** (i + j)  # the corner frequency (0.5, 0.5): rho = sqrt(2)
    slow = np.cos(2 * np.pi * i / 16)  # f = 1/16: rho = 0.125
    a = np.stack([checker + slow + 2.0])
    np.testing.assert_allclose(lowpass(a, 0.99), np.stack([slow + 2.0]), atol=1e-12)
    np.testing.assert_allclose(lowpass(a, 0.1), np.full_like(a, 2.0), atol=1e-12)  # only the DC term is left
    np.testing.assert_allclose(lowpass(a, 0.125), np.stack([slow + 2.0]), atol=1e-12)
    # the same filter on every channel, in either layout
    b = RNG.standard_normal((2, 3, 8, 8))
    nhwc = lowpass(b.transpose(0, 2, 3, 1), 0.4, "NHWC")
    np.testing.assert_allclose(lowpass(b, 0.4, "NCHW"), nhwc.transpose(0, 3, 1, 2))


def test_power_spectrum_of_white_noise_is_flat():
    sigma = 2.0
    noise = sigma * np.random.default_rng(1).standard_normal((32, 64, 64))
    f, p = power_spectrum(noise)
    assert f[0] == 0 and f[-1] == 0.5 and p.shape == f.shape == (33,)
    np.testing.assert_allclose(p[2:], sigma**2, rtol=0.25)  # each ring has >= 12 * 32 frequencies
    slope = np.polyfit(f[2:], p[2:] / sigma**2, 1)[0]
    assert abs(slope) < 0.2
    assert abs(p[2:].mean() / sigma**2 - 1) < 0.03


def test_power_spectrum_sums_channels_and_sees_the_lowpass():
    a = RNG.standard_normal((4, 3, 32, 32))
    f, p = power_spectrum(a, layout="NCHW", average=False)
    _, q = power_spectrum(a.sum(axis=1))
    assert p.shape == (4, 17)
    np.testing.assert_allclose(p.mean(axis=0), q)
    _, low = power_spectrum(lowpass(a, 0.25))
    assert np.all(low[f > 0.25 * 0.5 + 1 / 32] < 1e-20)
    np.testing.assert_allclose(low[1:3], q[1:3], rtol=1e-12)


def smooth_model(size=16):
    """y = <w, x> with a smooth Gaussian blob w: (N, 1, size, size) -> (N, 1, 1, 1)."""
    i, j = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    w = np.exp(-((i - 6.0) ** 2 + (j - 9.0) ** 2) / (2 * 3.0**2))[None, None]
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])], "smooth",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1, 1, 1])],
        [numpy_helper.from_array(w.astype(np.float32), "w")],
    )
    return onnxattr.load(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])), w


def test_select_cutoff_removes_high_frequency_noise():
    m, w = smooth_model()
    x = np.ones((4, 1, 16, 16), dtype=np.float32)
    i, j = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    noisy = (w * x + 0.5 * (-1.0) ** (i + j)).astype(np.float32)  # the true map plus a checkerboard
    sel = select_cutoff(m, x, noisy, target=0, cutoffs=[0.05, 0.3, 0.6, 1.0], metric="mu_fidelity", n_subsets=64)
    assert sel.metric == "mu_fidelity" and sel.higher_is_better
    assert sel.best_cutoff in (0.3, 0.6)
    assert sel.scores[list(sel.cutoffs).index(sel.best_cutoff)] > sel.scores[-1] + 0.2
    expected = mu_fidelity(m, x, lowpass(noisy, 0.3), target=0, n_subsets=64).mean()
    np.testing.assert_allclose(sel.scores[1], expected)


def test_select_cutoff_with_a_holdout_reports_the_chosen_cutoff_there():
    m, w = smooth_model()
    x = RNG.uniform(0.5, 1.5, (6, 1, 16, 16)).astype(np.float32)
    a = (w * x + 0.3 * RNG.standard_normal(x.shape)).astype(np.float32)
    sel = select_cutoff(m, x, a, target=0, cutoffs=[0.2, 1.0], metric="deletion", holdout=0.5, steps=8,
                        output="logit")
    assert not sel.higher_is_better
    assert sel.best_cutoff == sel.cutoffs[int(np.argmin(sel.scores))]
    assert np.isfinite(sel.holdout_score) and np.isfinite(sel.holdout_unfiltered)
    sel2 = select_cutoff(m, x, a, target=0, cutoffs=[0.2, 1.0], metric="insertion", steps=8, output="logit")
    x_all = np.nanmean(insertion(m, x, lowpass(a, 0.2), target=0, steps=8, output="logit").raw_auc)
    np.testing.assert_allclose(sel2.scores[0], x_all)  # the raw AUC, as RISE and FORGrad score


def test_bad_options_are_reported():
    a = RNG.standard_normal((2, 3, 8, 8))
    for bad in (0, -0.1, 1.5, "0.5", np.nan):
        with pytest.raises(OptionError, match="cutoff"):
            lowpass(a, bad)
    with pytest.raises(InputError, match="2-D maps"):
        lowpass(a[:, 0, 0], 0.5)
    with pytest.raises(InputError, match="2-D maps"):
        power_spectrum(a[:, 0, 0])
    with pytest.raises(OptionError, match="layout"):
        lowpass(a, 0.5, layout="CHWN")
    m, _ = smooth_model(8)
    x = np.ones((2, 1, 8, 8), dtype=np.float32)
    with pytest.raises(OptionError, match="metric"):
        select_cutoff(m, x, x, metric="auc")
    with pytest.raises(OptionError, match="cutoffs"):
        select_cutoff(m, x, x, cutoffs=[0.5, 2.0])
    with pytest.raises(OptionError, match="holdout"):
        select_cutoff(m, x, x, holdout=1.0)
    with pytest.raises(InputError, match="attr has shape"):
        select_cutoff(m, x, x[:, :, :4])


def test_high_frequency_share_per_sample():
    """A checkerboard has all its power at (0.5, 0.5), above half the Nyquist frequency; a constant
    map has all of it at 0; a zero map has none (NaN). Channels are summed first."""
    i, j = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    checker = (-1.0) ** (i + j)
    maps = np.stack([checker, np.ones((8, 8)), np.zeros((8, 8))])
    share = high_frequency_share(maps)
    assert share.shape == (3,)
    np.testing.assert_allclose(share[:2], [1.0, 0.0], atol=1e-12)
    assert np.isnan(share[2])
    nchw = np.stack([maps[:2] / 2, maps[:2] / 2], axis=1)  # two channels that sum to the maps
    np.testing.assert_allclose(high_frequency_share(nchw, "NCHW"), share[:2], atol=1e-12)
