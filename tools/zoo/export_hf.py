"""HuggingFace transformers architectures with random weights, exported by both torch exporters.

    /work/venvs/torch/bin/python tools/zoo/export_hf.py              # every architecture
    /work/venvs/torch/bin/python tools/zoo/export_hf.py vit gpt2     # some of them

Each architecture is built from a tiny config in code (hidden 16-64, 1-2 layers per stage, 32x32
images, vocabulary 200, sequences of 12 tokens) with seed 0 (BatchNorm statistics and affine parameters randomized, so no BatchNorm is the
identity), put in eval mode, and exported with

* ``torch.onnx.export(..., dynamo=False)`` (TorchScript), opset 17, dynamic batch (and sequence)
  axes;
* ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript), the exporter's default
  opset, the same dynamic axes (static shapes when the dynamic export fails; noted);

and, for attention models, with ``attn_implementation="eager"`` and ``"sdpa"``. Text models are
exported from token ids (``input_ids``, ``attention_mask``, ``token_type_ids`` for BERT); the
graph's only output is ``logits``. Under transformers 4.57 the TorchScript export of GPT-2 and
Llama fails inside the vmap-based causal mask (``masking_utils.create_causal_mask``); for those
exports it is replaced by a plain additive triangular-plus-padding mask
(``additive_causal_mask``), which gives the same logits.

References (see ``zoo_common.py``): batch 2; vision: the gradient of the argmax logit w.r.t.
``pixel_values``; text: the gradient at the word-embedding output (a forward hook on
``get_input_embeddings()``), and ``wrt`` names the ONNX tensor of that output (the Gather from the
embedding table, checked against the framework's embedding output in onnxruntime).
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import torch
import transformers
import transformers.utils.import_utils
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from zoo_common import (ZOO, Entry, check_and_save, class_target, embedding_tensors,  # noqa: E402
                        error_text, lm_target, update_manifest)

# The venv's torchvision 0.28.0 fails at import (operator torchvision::nms does not exist);
# none of these models needs it, so transformers is told it is absent.
transformers.utils.import_utils._torchvision_available = False
torch.set_num_threads(1)
warnings.filterwarnings("ignore")
T = transformers
BATCH, SEQ, VOCAB, IMAGE = 2, 12, 200, 32
INIT = 0.1  # initializer_range of the transformer configs: 0.02 leaves attention nearly uniform


def vision_configs() -> dict:
    common = dict(num_labels=10)
    return {
        "vit": (T.ViTForImageClassification, T.ViTConfig(
            image_size=IMAGE, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, initializer_range=INIT, **common), True),
        "deit": (T.DeiTForImageClassification, T.DeiTConfig(
            image_size=IMAGE, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, initializer_range=INIT, **common), True),
        "swin": (T.SwinForImageClassification, T.SwinConfig(
            image_size=IMAGE, patch_size=2, embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=4,
            mlp_ratio=2.0, initializer_range=INIT, **common), True),
        "convnext": (T.ConvNextForImageClassification, T.ConvNextConfig(
            num_stages=2, hidden_sizes=[16, 32], depths=[1, 1], image_size=IMAGE, **common), False),
        "resnet": (T.ResNetForImageClassification, T.ResNetConfig(
            embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic", **common), False),
        "mobilenet_v2": (T.MobileNetV2ForImageClassification, T.MobileNetV2Config(
            image_size=IMAGE, depth_multiplier=0.25, finegrained_output=False, **common), False),
        "efficientnet": (T.EfficientNetForImageClassification, T.EfficientNetConfig(
            image_size=IMAGE, width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320, **common),
            False),
        "mobilevit": (T.MobileViTForImageClassification, T.MobileViTConfig(
            image_size=IMAGE, patch_size=2, hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 12, 12, 16, 24, 48],
            num_attention_heads=4, **common), True),
    }


def text_configs() -> dict:
    return {
        "bert": (T.BertForSequenceClassification, T.BertConfig(
            vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=64, type_vocab_size=2, num_labels=3, initializer_range=INIT), True),
        "distilbert": (T.DistilBertForSequenceClassification, T.DistilBertConfig(
            vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64,
            num_labels=3, initializer_range=INIT), True),
        "gpt2": (T.GPT2LMHeadModel, T.GPT2Config(
            vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4, initializer_range=INIT), True),
        "llama": (T.LlamaForCausalLM, T.LlamaConfig(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, initializer_range=INIT), True),
    }


TRANSFORMER_CONFIGS = (T.ViTConfig, T.DeiTConfig, T.SwinConfig, T.BertConfig, T.DistilBertConfig,
                       T.GPT2Config, T.LlamaConfig)
TEXT_INPUTS = {"bert": ("input_ids", "attention_mask", "token_type_ids"),
               "distilbert": ("input_ids", "attention_mask"),
               "gpt2": ("input_ids", "attention_mask"),
               "llama": ("input_ids", "attention_mask")}
CAUSAL = ("gpt2", "llama")


class Logits(nn.Module):
    """The model with positional inputs named ``names`` and the logits as its only output."""

    def __init__(self, model: nn.Module, names: tuple, causal: bool):
        super().__init__()
        self.model, self.names, self.causal = model, names, causal

    def forward(self, *args):
        kw = dict(zip(self.names, args))
        if self.causal:
            kw["use_cache"] = False
        return self.model(**kw, return_dict=True).logits


def additive_causal_mask(config, input_embeds, attention_mask, cache_position, past_key_values,
                         position_ids=None, **_):
    """(B, 1, T, T) float mask: 0 where key j <= query i and attention_mask[b, j] == 1, else the
    dtype's minimum (what transformers' own mask holds there), without vmap."""
    b, t = input_embeds.shape[:2]
    neg = torch.finfo(input_embeds.dtype).min
    idx = torch.arange(t, device=input_embeds.device)
    allowed = (idx[None, :] <= idx[:, None])[None, None]
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, None, :].bool()
    return torch.zeros((), dtype=input_embeds.dtype).masked_fill(~allowed, neg).expand(b, 1, t, t)


@contextlib.contextmanager
def plain_causal_mask(arch: str):
    module = {"gpt2": T.models.gpt2.modeling_gpt2, "llama": T.models.llama.modeling_llama}[arch]
    saved = module.create_causal_mask
    module.create_causal_mask = additive_causal_mask
    try:
        yield
    finally:
        module.create_causal_mask = saved


def build(cls, config, attention: str) -> nn.Module:
    torch.manual_seed(0)
    if attention == "none":
        model = cls(config)
    else:
        model = cls._from_config(config, attn_implementation=attention)
        if model.config._attn_implementation != attention:
            raise NotImplementedError(f"asked for attn_implementation={attention!r}, "
                                      f"got {model.config._attn_implementation!r}")
    if not isinstance(config, TRANSFORMER_CONFIGS):
        variance_preserving_init(model)
    randomize_batchnorm(model)
    return model.eval()


def variance_preserving_init(model: nn.Module) -> None:
    """He-normal Conv weights and 1/sqrt(fan_in) Linear weights. transformers initialises the CNNs
    with N(0, 0.02), under which the activations of MobileNetV2, EfficientNet and MobileViT vanish
    (logits below 1e-25)."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.Conv2d):
                fan_in = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
                mod.weight.normal_(0.0, (2.0 / fan_in) ** 0.5)
            elif isinstance(mod, nn.Linear):
                mod.weight.normal_(0.0, mod.in_features ** -0.5)


def randomize_batchnorm(model: nn.Module) -> None:
    """Random running statistics and affine parameters for every BatchNorm, so that a BatchNorm
    is not the identity it is at initialisation (seeded by the caller's torch.manual_seed)."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                n = mod.num_features
                mod.running_mean.copy_(0.2 * torch.randn(n))
                mod.running_var.copy_(0.5 + torch.rand(n))
                mod.weight.copy_(0.5 + torch.rand(n))
                mod.bias.copy_(0.2 * torch.randn(n))


def text_feeds(arch: str) -> dict:
    rng = np.random.default_rng(3)
    ids = rng.integers(3, VOCAB, size=(BATCH, SEQ)).astype(np.int64)
    mask = np.ones((BATCH, SEQ), np.int64)
    mask[1, -3:] = 0
    feeds = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in TEXT_INPUTS[arch]:
        tt = np.zeros((BATCH, SEQ), np.int64)
        tt[:, SEQ // 2:] = 1
        feeds["token_type_ids"] = tt
    return feeds


def vision_feeds() -> dict:
    x = np.random.default_rng(4).normal(0.0, 1.0, (BATCH, 3, IMAGE, IMAGE)).astype(np.float32)
    return {"pixel_values": x}


def framework_refs(model: nn.Module, wrapper: Logits, feeds: dict, text: bool):
    """(output, target, gradient, embedding output or None) from torch.autograd."""
    args = [torch.from_numpy(feeds[n]).clone() for n in wrapper.names]
    captured = {}
    if text:
        def hook(_mod, _inp, out):
            out.retain_grad()
            captured["emb"] = out
        handle = model.get_input_embeddings().register_forward_hook(hook)
    else:
        args[0].requires_grad_(True)
    try:
        out = wrapper(*args)
    finally:
        if text:
            handle.remove()
    logits = out.detach().numpy()
    if logits.ndim == 3:
        target = lm_target(logits, feeds.get("attention_mask"))
        picked = out[torch.arange(BATCH), torch.from_numpy(target[:, 0]), torch.from_numpy(target[:, 1])]
    else:
        target = class_target(logits)
        picked = out[torch.arange(BATCH), torch.from_numpy(target)]
    picked.sum().backward()
    if text:
        return logits, target, captured["emb"].grad.numpy(), captured["emb"].detach().numpy()
    return logits, target, args[0].grad.numpy(), None


def float64_gradient(model: nn.Module, feeds: dict, target: np.ndarray) -> np.ndarray:
    """d logits[i, target[i]] / d pixel_values[i] of a float64 copy of the model: where it differs
    from the float32 gradient, float32 rounding has flipped a ReLU6 gate."""
    import copy

    m64 = copy.deepcopy(model).double()
    x = torch.from_numpy(feeds["pixel_values"].astype(np.float64)).requires_grad_(True)
    out = m64(pixel_values=x, return_dict=True).logits
    out[torch.arange(BATCH), torch.from_numpy(target)].sum().backward()
    return x.grad.numpy()


def tensor_values(path: str, feeds: dict, names: list[str]) -> list[np.ndarray]:
    m = onnx.load(path)
    for name in names:
        m.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    inputs = {i.name for i in sess.get_inputs()}
    return sess.run(names, {k: v for k, v in feeds.items() if k in inputs})


def export(wrapper: Logits, feeds: dict, path: str, exporter: str, text: bool) -> str:
    """Export; returns notes (e.g. a fallback to static shapes)."""
    args = tuple(torch.from_numpy(feeds[n]) for n in wrapper.names)
    axes = {n: ({0: "batch", 1: "sequence"} if text else {0: "batch"}) for n in wrapper.names}
    axes["logits"] = {0: "batch", 1: "sequence"} if wrapper.causal else {0: "batch"}
    kw = dict(input_names=list(wrapper.names), output_names=["logits"])
    if exporter.startswith("torchscript"):
        torch.onnx.export(wrapper, args, path, dynamo=False, opset_version=17, dynamic_axes=axes, **kw)
        return ""
    kw["external_data"] = False  # one self-contained file, as TorchScript writes
    if exporter == "dynamo_op23":
        kw["opset_version"] = 23
    # forward(*args): torch.export wants dynamic_shapes shaped like the inputs, a tuple of varargs
    auto = torch.export.Dim.AUTO
    shapes = ((tuple({0: auto, 1: auto} if text else {0: auto} for _ in wrapper.names)),)
    try:
        torch.onnx.export(wrapper, args, path, dynamo=True, dynamic_shapes=shapes, report=False, **kw)
        return ""
    except Exception as exc:  # noqa: BLE001
        torch.onnx.export(wrapper, args, path, dynamo=True, report=False, **kw)
        return f"dynamic shapes failed ({error_text(exc, 300)}); exported with static shapes."


EXPORTERS = {
    "torchscript": "torch.onnx (TorchScript, dynamo=False), opset 17",
    "torchscript_unpatched": "torch.onnx (TorchScript, dynamo=False), opset 17, transformers' own causal mask",
    "dynamo": "torch.onnx (dynamo=True), default opset",
    "dynamo_op23": "torch.onnx (dynamo=True), opset 23",
}


def exporters(arch: str, has_attention: bool) -> list[str]:
    """Both exporters for all; the unpatched TorchScript export for the causal LMs (to record its
    failure); opset 23 (Attention, RMSNormalization, RotaryEmbedding) for the attention models
    (MobileViT left out for size)."""
    out = ["torchscript", "dynamo"]
    if arch in CAUSAL:
        out.insert(1, "torchscript_unpatched")
    if has_attention and arch != "mobilevit":
        out.append("dynamo_op23")
    return out


def run_one(arch: str, cls, config, text: bool, exporter: str, attention: str) -> Entry:
    suffix = f"_{attention}" if attention != "none" else ""
    name = f"hf_{arch}_{exporter}{suffix}"
    entry = Entry(key=f"hf_{arch}/{exporter}/{attention}", arch=f"hf_{arch}",
                  framework=f"transformers {transformers.__version__} / torch {torch.__version__.split('+')[0]}",
                  exporter=EXPORTERS[exporter],
                  attention=attention)
    t0 = time.time()
    try:
        model = build(cls, config, attention)
    except Exception as exc:  # noqa: BLE001
        entry.status, entry.error = "unsupported", error_text(exc)
        return entry
    names = TEXT_INPUTS[arch] if text else ("pixel_values",)
    wrapper = Logits(model, names, arch in CAUSAL).eval()
    feeds = text_feeds(arch) if text else vision_feeds()
    with torch.enable_grad():
        logits, target, grad, emb = framework_refs(model, wrapper, feeds, text)
    path = os.path.join(ZOO, name + ".onnx")
    patch = arch in CAUSAL and exporter == "torchscript"
    try:
        with (plain_causal_mask(arch) if patch else contextlib.nullcontext()), torch.no_grad():
            entry.notes = export(wrapper, feeds, path, exporter, text)
    except Exception as exc:  # noqa: BLE001
        entry.status, entry.error = "export_failed", error_text(exc)
        if os.path.exists(path):
            os.remove(path)  # a partial file
        print(f"  {name}: export failed: {entry.error[:300]}", flush=True)
        return entry
    if patch:
        entry.notes += (" Exported with transformers' vmap-based create_causal_mask replaced by a plain additive "
                        "(triangular + padding) mask.")
    wrt, wrt_kind, extra = "pixel_values", "input", {}
    if text:
        wrt_kind = "embeddings"
        table = model.get_input_embeddings().weight.detach().numpy()
        cands = embedding_tensors(path, table, "input_ids")
        wrt = ""
        for cand in cands:
            try:
                (val,) = tensor_values(path, feeds, [cand])
            except Exception as exc:  # noqa: BLE001  (onnxruntime cannot run the graph: check_and_save records it)
                entry.notes += f" {cand} not checked in onnxruntime ({error_text(exc, 200)})."
                wrt = cand
                break
            if val.shape == emb.shape and np.abs(val - emb).max() <= 1e-6 * max(1.0, np.abs(emb).max()):
                wrt = cand
                break
        if not wrt:
            entry.notes += f" word-embedding output not identified (Gather candidates: {cands})."
        extra["embeddings"] = emb
    if not text and any(isinstance(m, nn.ReLU6) for m in model.modules()):
        extra["gradient_float64"] = float64_gradient(model, feeds, target)
        rel = np.linalg.norm((grad - extra["gradient_float64"]).reshape(BATCH, -1), axis=1) / np.linalg.norm(
            extra["gradient_float64"].reshape(BATCH, -1), axis=1)
        entry.notes += (f" float32 vs float64 torch gradient, per-sample relative L2: "
                        f"{', '.join(f'{r:.1e}' for r in rel)}"
                        f"{' (a ReLU6 gate flips under float32 rounding)' if rel.max() > 1e-3 else ''}.")
    check_and_save(entry, path, feeds, logits, target, grad, wrt, wrt_kind, extra)
    print(f"  {name}: {entry.status} opset {entry.opset} {entry.onnx_bytes / 1024:.0f} KiB "
          f"diff {entry.max_rel_diff_ort_framework:.1e} wrt {wrt!r} ({time.time() - t0:.0f} s) "
          f"{entry.error[:200]} {entry.notes}", flush=True)
    return entry


def main(archs: list[str]) -> None:
    os.makedirs(ZOO, exist_ok=True)
    specs = {**{k: (*v, False) for k, v in vision_configs().items()},
             **{k: (*v, True) for k, v in text_configs().items()}}
    versions = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
                "onnxscript": __import__("onnxscript").__version__, "onnx": onnx.__version__,
                "onnxruntime": ort.__version__}
    for arch in archs or list(specs):
        cls, config, has_attention, text = specs[arch]
        print(f"== hf_{arch}", flush=True)
        entries = []
        for exporter in exporters(arch, has_attention):
            for attention in (("eager", "sdpa") if has_attention else ("none",)):
                entries.append(run_one(arch, cls, config, text, exporter, attention))
        update_manifest(entries, versions)


if __name__ == "__main__":
    main(sys.argv[1:])
