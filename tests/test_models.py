"""The trained models in models/ (PyTorch, TensorFlow/Keras, JAX): our forward equals
onnxruntime's and the framework's, our gradient equals the framework's own, every method runs, and
the maps point at the object. Needs none of the frameworks: their outputs are in models/*.npz."""
import pathlib

import numpy as np
import pytest

import onnxattr
from onnxattr.analysis import mask_fraction, relevance_mass
from oracles import rel_l2
from zoo import ort_run
from kernel_paths import kernels  # noqa: F401  (the fixture)

pytestmark = pytest.mark.usefixtures("kernels")

MODELS = pathlib.Path(__file__).parent.parent / "models"
# The image models (one float input, key "input"); the text model's references hold one key per
# graph input (input_ids, attention_mask) and belong to the text-path tests.
NAMES = sorted(p.stem for p in MODELS.glob("*.onnx")
               if p.with_suffix(".npz").exists() and "input" in np.load(p.with_suffix(".npz")).files)


def load(name):
    ref = dict(np.load(MODELS / f"{name}.npz", allow_pickle=False))
    return onnxattr.load(MODELS / f"{name}.onnx"), ref


def test_models_are_there():
    frameworks = {n.split("_")[0] for n in NAMES}
    assert {"torch"} <= frameworks, NAMES


@pytest.mark.parametrize("name", NAMES)
def test_forward_equals_onnxruntime_and_framework(name):
    model, ref = load(name)
    x = ref["input"]
    logits = model(x)
    ours_vs_ort = rel_l2(logits, ort_run(model.proto, x, [model.output_name])[0]).max()
    ours_vs_framework = rel_l2(logits, ref["logits"]).max()
    assert ours_vs_ort < 1e-4
    assert ours_vs_framework < 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_gradient_equals_framework(name):
    model, ref = load(name)
    g = onnxattr.attribute(model, ref["input"], ref["target"], "gradient")
    assert rel_l2(g, ref["gradient"]).max() < 1e-3
    ixg = onnxattr.attribute(model, ref["input"], ref["target"], "input_x_gradient")
    assert rel_l2(ixg, ref["input_x_gradient"]).max() < 1e-3


IMAGE = [n for n in NAMES if np.load(MODELS / f"{n}.npz")["input"].ndim == 4]


def all_methods(ref):
    for name in onnxattr.methods():
        if name in ("lrp", "attention_rollout"):  # a composite needed; no attention in a CNN
            continue
        opts = {"low": 0.0, "high": 1.0} if name == "lrp.epsilon_gamma_box" else {}
        if name in ("integrated_gradients", "smoothgrad"):
            opts["steps" if name == "integrated_gradients" else "samples"] = 8
        if name == "occlusion":
            opts["window"] = (3, 4, 4) if str(ref["layout"]) == "NCHW" else (4, 4, 3)
            opts["strides"] = (3, 2, 2) if str(ref["layout"]) == "NCHW" else (2, 2, 3)
        yield name, opts


@pytest.mark.parametrize("name", IMAGE)
def test_every_method_runs(name):
    model, ref = load(name)
    x, t = ref["input"][:2], ref["target"][:2]
    for method, opts in all_methods(ref):
        a = onnxattr.attribute(model, x, t, method, **opts)
        assert a.shape == x.shape, method
        assert np.isfinite(a).all() and np.abs(a).sum() > 0, method


ATTENTION = {"torch_vit_op17"}
CASES = [pytest.param(n, m, marks=pytest.mark.xfail(
             strict=True, reason="CNN composite on attention: measured mass 0.20 vs chance 0.16; "
                                 "attention models get AttnLRP rules (issue 12)"))
         if n in ATTENTION and m.startswith("lrp.") else (n, m)
         for n in IMAGE for m in ("input_x_gradient", "lrp.epsilon_plus_flat")]


@pytest.mark.parametrize("name, method", CASES)
def test_relevance_lands_on_the_object(name, method):
    """Relevance mass inside the object mask (Arras et al. 2022) well above a random map's
    (which scores the mask's area fraction on average)."""
    model, ref = load(name)
    layout = str(ref["layout"])
    a = onnxattr.attribute(model, ref["input"], ref["target"], method)
    mass = np.nanmean(relevance_mass(a, ref["mask"], layout))
    chance = mask_fraction(ref["mask"]).mean()
    rng = np.random.default_rng(0)
    random_mass = np.nanmean(relevance_mass(rng.standard_normal(a.shape), ref["mask"], layout))
    assert abs(random_mass - chance) < 0.05
    assert mass > 1.5 * chance, f"{method}: mass {mass:.2f} vs chance {chance:.2f}"
