"""The exporter zoo (tests/data/zoo, issue 12 item 7): real architectures with random weights,
exported by torch.onnx (TorchScript and dynamo; eager and SDPA attention), tf2onnx and jax2onnx.

References are in each file's .npz (tools/zoo/README.md): onnxruntime's output, the framework's
gradient (torch.autograd, tf.GradientTape, jax.grad) of the target logit, for text at the
word-embedding output of the model that takes token ids. No framework is needed here.

- The manifest records every architecture x exporter x attention, and what became of it.
- Every file with a model loads; the forward is within 1e-4 (max relative) of onnxruntime (of
  the framework where onnxruntime cannot run the file); the gradient within 1e-3 (per-sample
  relative L2) of the framework's.
- On the CNNs, lrp.epsilon_plus_flat conserves relevance layer by layer, up to each rule's own
  bias and stabilizer share, and no layer carries more than 10 |f_t| (issue 12 item 5).
"""
from __future__ import annotations

import functools
import json
import pathlib

import numpy as np
import pytest

import onnxattr
from onnxattr import backend
from test_conservation import REL, budget

ZOO = pathlib.Path(__file__).parent / "data" / "zoo"
MANIFEST = json.loads((ZOO / "manifest.json").read_text())
ENTRIES = MANIFEST["entries"]
WITH_FILE = ("ok", "ort_error")
FILES = sorted(k for k, e in ENTRIES.items() if e["status"] in WITH_FILE)
#: vision models without attention: issue 12 item 5's CNNs
CNNS = sorted(k for k in FILES if ENTRIES[k]["attention"] == "none")
#: CNNs with attention blocks: LRP must run, but AttnLRP has its own rules for them
HYBRIDS = sorted(k for k in FILES if ENTRIES[k]["arch"] == "hf_mobilevit")

# Every row that is not "ok", with its status (ok: the other 53).
NOT_OK = {
    "hf_gpt2/torchscript_unpatched/eager": "export_failed",  # torch.vmap in transformers' causal mask
    "hf_gpt2/torchscript_unpatched/sdpa": "export_failed",
    "hf_llama/torchscript_unpatched/eager": "export_failed",
    "hf_llama/torchscript_unpatched/sdpa": "export_failed",
    "hf_llama/dynamo_op23/eager": "ort_error",  # onnxruntime 1.32's RotaryEmbedding refuses the caches
    "hf_llama/dynamo_op23/sdpa": "ort_error",
    "hf_mobilevit/dynamo/sdpa": "unsupported",  # transformers has no SDPA for MobileViT or Swin
    "hf_mobilevit/torchscript/sdpa": "unsupported",
    "hf_swin/dynamo/sdpa": "unsupported",
    "hf_swin/dynamo_op23/sdpa": "unsupported",
    "hf_swin/torchscript/sdpa": "unsupported",
    "keras_densenet121/tf2onnx/none": "skipped_for_size",  # replaced by keras_densenet_small
    "keras_efficientnet_b0/tf2onnx/none": "skipped_for_size",
    "keras_resnet50/tf2onnx/none": "skipped_for_size",
}
COUNTS = {"ok": 53, "export_failed": 4, "ort_error": 2, "skipped_for_size": 3, "unsupported": 5}

# Files whose stored onnxruntime values put a ReLU6 (Clip 0..6) input within 1e-6 max|input| of
# a bound (the manifest's clip_near_ties). Where our float32 forward rounds such a value to the
# other side of the bound, that gate flips and the sample's gradient differs from torch's
# wherever that unit matters. Only then, and only if our own forward shows such a near-tie, is
# a larger gradient error accepted for that sample. (On the CPU today none flips.)
RELU6_NEAR_TIES = {
    "hf_mobilenet_v2/dynamo/none": "sample 0: a ReLU6 input 6.0000124 in onnxruntime (1 near-tie)",
    "hf_mobilenet_v2/torchscript/none": "sample 0: a ReLU6 input 6.0000124 in onnxruntime (1 near-tie)",
}

LAYERNORM_GRADIENT = ("LayerNormalization keeps its plain gradient under lrp.epsilon_plus_flat (no rule "
                      "for it in the composites' LRP base map), and a norm's gradient sums to 0 over the "
                      "normalised axis: ConvNeXt's relevance vanishes there (sum R_input / f_t = 0)")
EPSILON_MASS = ("epsilon-LRP (1e-6) on the classifier spreads relevance of both signs: sum |R| at its "
                "input is 11-29 |f_t| on these random-weight MobileNetV2s (the budget still closes)")
CONSERVATION_XFAIL = {k: LAYERNORM_GRADIENT for k in CNNS if ENTRIES[k]["arch"] == "hf_convnext"}
MASS_XFAIL = {**CONSERVATION_XFAIL,
              **{k: EPSILON_MASS for k in CNNS if ENTRIES[k]["arch"] in ("hf_mobilenet_v2", "keras_mobilenet_v2")}}


def params(keys: list[str], xfail: dict[str, str] | None = None) -> list:
    xfail = xfail or {}
    return [pytest.param(k, id=k, marks=[pytest.mark.xfail(strict=True, reason=xfail[k])] if k in xfail else [])
            for k in keys]


@functools.lru_cache(maxsize=None)
def reference(key: str) -> dict[str, np.ndarray]:
    with np.load(ZOO / ENTRIES[key]["reference"]) as ref:
        return {k: ref[k] for k in ref.files}


def feeds_of(key: str) -> dict[str, np.ndarray]:
    ref = reference(key)
    return {i["name"]: ref[i["name"]] for i in ENTRIES[key]["inputs"]}


@functools.lru_cache(maxsize=None)
def loaded(key: str) -> onnxattr.Model:
    ref = reference(key)
    text = str(ref["wrt_kind"]) == "embeddings"
    return onnxattr.load(ZOO / ENTRIES[key]["file"], wrt=str(ref["wrt"]) if text else None)


def rel_l2(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    n = want.shape[0]
    diff = (got.astype(np.float64) - want).reshape(n, -1)
    return np.linalg.norm(diff, axis=1) / np.linalg.norm(want.reshape(n, -1).astype(np.float64), axis=1)


def test_manifest_counts_every_architecture_exporter_and_attention():
    statuses = {k: e["status"] for k, e in ENTRIES.items()}
    assert {k: s for k, s in statuses.items() if s != "ok"} == NOT_OK
    counted = {s: list(statuses.values()).count(s) for s in set(statuses.values())}
    assert counted == MANIFEST["counts"] == COUNTS
    for key, e in ENTRIES.items():
        arch, _, attention = key.split("/")
        assert (arch, attention) == (e["arch"], e["attention"])
        has_file = bool(e["file"]) and (ZOO / e["file"]).is_file()
        assert has_file == (e["status"] in WITH_FILE), key
        assert has_file == (ZOO / (e["reference"] or "-")).is_file(), key
    listed = {e["file"] for e in ENTRIES.values() if e["file"]} | {e["reference"] for e in ENTRIES.values() if e["reference"]}
    present = {p.name for p in ZOO.iterdir() if p.suffix in (".onnx", ".npz")}
    assert present == listed
    sizes = [(ZOO / name).stat().st_size for name in present]
    assert max(sizes) <= 3 * 2**20 and sum(sizes) <= 25 * 2**20


@pytest.mark.parametrize("key", params(FILES))
def test_loads_and_forward_matches_onnxruntime(key):
    ref, model = reference(key), loaded(key)
    feeds = feeds_of(key)
    if str(ref["wrt_kind"]) == "embeddings":
        # "embeddings" finds the word-embedding Gather the zoo checked against the framework
        assert onnxattr.load(ZOO / ENTRIES[key]["file"], wrt="embeddings").input_name == model.input_name
        emb = backend.to_host(model.at_wrt(model.check_feeds(feeds))[model.input_name])
        assert np.abs(emb - ref["embeddings"]).max() <= 1e-6 * np.abs(ref["embeddings"]).max()
    # onnxruntime cannot run the ort_error files; the framework's output stands in for it
    want = ref["onnxruntime"] if ENTRIES[key]["status"] == "ok" else ref["framework"]
    got = model(feeds)
    assert got.shape == want.shape
    assert np.abs(got.astype(np.float64) - want).max() <= 1e-4 * np.abs(want).max()


@pytest.mark.parametrize("key", params(FILES))
def test_gradient_matches_framework_autograd(key):
    ref, model = reference(key), loaded(key)
    feeds = feeds_of(key)
    g = onnxattr.attribute(model, feeds, target=ref["target"], method="gradient")
    assert g.shape == ref["gradient"].shape
    err = rel_l2(g, ref["gradient"])
    off = [i for i in range(len(err)) if not err[i] <= 1e-3]
    if key in RELU6_NEAR_TIES:
        flipped = [i for i in off if ref["clip_near_ties"][i] > 0 and relu6_near_tie(model, feeds, i)]
        off = [i for i in off if i not in flipped]
    assert not off, f"per-sample relative L2 errors {err}"


def relu6_near_tie(model: onnxattr.Model, feeds: dict, sample: int) -> bool:
    """Whether, in our forward, some Clip(0, 6) input of ``sample`` lies within 1e-6 max|input| of
    0 or 6 (the zoo's clip_near_ties criterion): float32 rounding may put it on either side."""
    clips = [n.inputs[0] for n in model.graph.nodes if n.op_type == "Clip"]
    values = model.forward(model.at_wrt(model.check_feeds(feeds)), fetch=clips)
    for v in values.values():
        a = backend.to_host(v)[sample]
        tol = 1e-6 * np.abs(a).max()
        if np.any((np.abs(a) <= tol) | (np.abs(a - 6) <= tol)):
            return True
    return False


@functools.lru_cache(maxsize=None)
def lrp_budget(key: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(nodes whose budget does not close, per sample max over nodes of sum |R_in| / |f_t|,
    per sample sum R_input / f_t) under lrp.epsilon_plus_flat, each sample at its target."""
    model, ref = loaded(key), reference(key)
    (x,) = feeds_of(key).values()
    bad, mass, ratio = [], [], []
    for i, t in enumerate(ref["target"]):
        rel, f_t, rows = budget(model, x[i:i + 1], int(t))
        bad += [f"sample {i}: {node} ({op}): out {s_out:.6g} in {s_in:.6g} share {share:.6g}"
                for node, op, s_out, s_in, share, _, abs_out in rows
                if abs((s_out - s_in) - share) > REL * max(abs_out, abs(f_t))]
        mass.append(max(r[5] for r in rows) / abs(f_t))
        ratio.append(float(rel.sum()) / f_t)
    return bad, np.array(mass), np.array(ratio)


@pytest.mark.parametrize("key", params(CNNS, CONSERVATION_XFAIL))
def test_lrp_every_cnn_node_keeps_what_its_rule_does_not_take(key):
    bad, _, ratio = lrp_budget(key)
    assert np.all(np.isfinite(ratio))
    assert not bad, "\n".join(bad[:20])


@pytest.mark.parametrize("key", params(CNNS, MASS_XFAIL))
def test_lrp_no_cnn_node_carries_more_than_ten_times_the_logit(key):
    _, mass, _ = lrp_budget(key)
    assert np.all(mass <= 10), mass


@pytest.mark.parametrize("key", params(HYBRIDS))
def test_lrp_on_attention_cnns_gives_finite_bounded_relevance(key):
    """MobileViT (convolutions and attention): AttnLRP's issue gives attention its rules; here
    only that relevance stays finite and of the logit's order (no 1e24 blow-up)."""
    model, ref = loaded(key), reference(key)
    (x,) = feeds_of(key).values()
    a = onnxattr.attribute(model, x, target=ref["target"], method="lrp.epsilon_plus_flat")
    f_t = model(x)[np.arange(len(x)), ref["target"]]
    ratio = a.reshape(len(x), -1).sum(axis=1) / f_t
    assert np.all(np.isfinite(a)) and np.all(np.abs(ratio) <= 10), ratio
