"""LXT 2.1 references (AttnLRP, CP-LRP) for tiny random-weight transformers exported to ONNX.

Writes ``tests/data/lxt/NAME.onnx`` and ``tests/data/lxt/NAME.npz`` for

    bert          HF BertForSequenceClassification             attnlrp
    gpt2          HF GPT2LMHeadModel                           attnlrp, cplrp
    llama         HF LlamaForCausalLM, GQA, all linear biases  attnlrp, cplrp
    llama_nobias  HF LlamaForCausalLM without biases           attnlrp, cplrp (conservation test)
    vit           torchvision VisionTransformer 32x32, patch 8 cplrp (LXT's default map for it)

Run (from the repository root, in the torch virtual environment)::

    python tools/lxt_refs.py                 # all models, into tests/data/lxt/
    python tools/lxt_refs.py --only gpt2     # one model

Pinned versions (Python 3.11.7, CPU): torch==2.13.0 (CPU wheel), transformers==4.57.6,
lxt==2.1 (``pip install lxt==2.1 --no-deps``), torchvision==0.28.0 (``--no-deps``; only a CUDA
build exists here, so the script defines the schemas ``torchvision::nms`` and
``torchvision::qnms`` without kernels before importing it), onnx==1.23.2, onnxruntime==1.32.0,
numpy==2.4.6. LXT's efficient mode needs none of its declared dependencies (zennit only for its
gamma composite, which is not used here).

How a reference is made (one fresh process per model and method, because LXT patches classes
and modules globally and cannot be undone):

* the parent builds the model with a fixed seed, exports it with the TorchScript exporter
  (``dynamo=False``, opset 17, eager attention). For GPT-2 and Llama transformers' vmap-based
  causal mask is replaced by a plain additive triangular mask during export only; for the ViT the
  MultiheadAttention fast path is disabled during export;
* a child process loads the same weights, runs the unpatched model, applies
  ``lxt.efficient.monkey_patch`` with LXT's own map for the method, wraps LXT's rule functions and
  patched forwards with call counters, and runs the patched model from a leaf tensor at the
  attribution point (the word-embedding lookup output, or the patch embeddings before the class
  token and the position embedding). It seeds the gradient with one at the target logit, as LXT's
  efficient mode does (``logits[target].backward()``), so relevance = activation * gradient
  starts at the logit's value.

Each ``NAME.npz`` holds (B samples, T tokens or patches, H hidden):

    <graph input name>            the ONNX graph's input (int64 ids (B, T) or float32 pixels)
    target                        int64 (B,) class, or (B, 2) (position, index) for LMs
    logits                        float32, the unpatched torch forward
    onnx_logits_max_abs_diff      0-d: onnxruntime vs torch on the exported file
    wrt                           0-d str: the ONNX tensor at the attribution point (Gather
                                  output; for the ViT the patch-embedding Conv output (B, H, 4, 4),
                                  whose relevance is relevance[b, t, h] at [b, h, t // 4, t % 4])
    wrt_tokens                    0-d str, ViT only: the (B, T, H) Transpose output after the Conv
    input_x_gradient              float32 (B, T, H): the same at the unpatched model (plain autograd),
                                  to check that a test can tell the rules from no rules
    relevance_<method>            float32 (B, T, H)
    target_logit_<method>         float32 (B,) the patched model's target logit
    forward_max_abs_diff_<method> 0-d: patched vs unpatched logits (LXT's forward check)
    counts_<method>               0-d str, JSON {name: calls}: ``fwd:<rule>`` calls of LXT's rule
                                  functions during the forward, ``bwd:<rule>`` calls of their
                                  autograd backward, ``fwd:<Class>.forward`` calls of the patched
                                  module forwards
    expected_counts_<method>      0-d str, JSON: the counts the model's structure implies
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "tests", "data", "lxt")
OPSET = 17
BATCH, SEQ, VOCAB = 2, 12, 96
INIT = 0.25  # HF's default 0.02 gives near-uniform attention in models this small: a weak test of the softmax
VIT_QKV_SCALE = 3.0
METHODS = {"bert": ("attnlrp",), "gpt2": ("attnlrp", "cplrp"), "llama": ("attnlrp", "cplrp"),
           "llama_nobias": ("attnlrp", "cplrp"), "vit": ("cplrp",)}


def define_torchvision_schemas() -> None:
    """Declare torchvision's two custom-op schemas (no kernels) so that its CUDA-only wheel imports."""
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    define_torchvision_schemas.lib = lib  # keep the library object alive


# ----------------------------------------------------------------------------- models

def build(name: str) -> torch.nn.Module:
    """The tiny random-weight model NAME (fixed seed, eval mode, eager attention)."""
    torch.manual_seed({"bert": 1, "gpt2": 2, "llama": 3, "llama_nobias": 4, "vit": 5}[name])
    if name == "bert":
        from transformers import BertConfig, BertForSequenceClassification
        cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=SEQ, num_labels=3,
                         initializer_range=INIT, attn_implementation="eager")
        model = BertForSequenceClassification(cfg)
    elif name == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel
        cfg = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=SEQ,
                         initializer_range=INIT, attn_implementation="eager")
        model = GPT2LMHeadModel(cfg)
    elif name.startswith("llama"):
        from transformers import LlamaConfig, LlamaForCausalLM
        bias = name == "llama"
        cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2 if bias else 4,
                          max_position_embeddings=SEQ, attention_bias=bias, mlp_bias=bias,
                          initializer_range=INIT, attn_implementation="eager")
        model = LlamaForCausalLM(cfg)
    else:
        from torchvision.models.vision_transformer import VisionTransformer
        model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
                                  mlp_dim=64, num_classes=10)
        with torch.no_grad():  # sharpen the attention as for the HF models
            for layer in model.encoder.layers:
                layer.self_attention.in_proj_weight.mul_(VIT_QKV_SCALE)
    randomize_constant_init(model)
    if name == "llama_nobias":
        assert not any(getattr(m, "bias", None) is not None for m in model.modules()), "bias found"
    return model.eval()


def randomize_constant_init(model: torch.nn.Module) -> None:
    """Frameworks initialise biases, norm scales, the ViT's head and class token to constants:
    draw them at random so that the references test them (1-D weights are norm scales)."""
    with torch.no_grad():
        for pname, param in model.named_parameters():
            if pname.endswith("bias") or pname.endswith("class_token") or "heads.head" in pname:
                param.normal_(0.0, 0.2)
            elif pname.endswith("weight") and param.ndim == 1:
                param.normal_(1.0, 0.2)


def make_input(name: str) -> tuple[str, torch.Tensor]:
    """The graph input's name and value (fixed seed)."""
    gen = torch.Generator().manual_seed(7)
    if name == "vit":
        return "pixel_values", torch.randn(BATCH, 3, 32, 32, generator=gen)
    return "input_ids", torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen)


class LogitsOnly(torch.nn.Module):
    """Wraps an HF model: token ids in, logits out (no cache), for export."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, return_dict=True, **no_cache(self.model)).logits


def no_cache(model: torch.nn.Module) -> dict:
    """``use_cache=False`` for the decoders (BERT's classifier takes no such argument)."""
    return {} if "Bert" in type(model).__name__ else {"use_cache": False}


def plain_causal_mask(config, input_embeds, attention_mask, cache_position, past_key_values,
                      position_ids=None, **kwargs):
    """Additive (1, 1, T, T) mask: 0 on and below the diagonal, the dtype's minimum above."""
    t = input_embeds.shape[1]
    upper = torch.triu(torch.ones(t, t, dtype=input_embeds.dtype), diagonal=1)
    return (upper * torch.finfo(input_embeds.dtype).min)[None, None]


def export(name: str, model: torch.nn.Module, x: torch.Tensor, input_name: str, path: str) -> None:
    """TorchScript export; plain causal mask (GPT-2, Llama) or no MHA fast path (ViT) meanwhile."""
    import transformers.models.gpt2.modeling_gpt2 as m_gpt2
    import transformers.models.llama.modeling_llama as m_llama
    saved = (m_gpt2.create_causal_mask, m_llama.create_causal_mask, torch.backends.mha.get_fastpath_enabled())
    m_gpt2.create_causal_mask = m_llama.create_causal_mask = plain_causal_mask
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        wrapped = model if name == "vit" else LogitsOnly(model).eval()  # a new Module is in train mode
        with torch.no_grad():
            torch.onnx.export(wrapped, (x,), path, dynamo=False, opset_version=OPSET,
                              input_names=[input_name], output_names=["logits"])
    finally:
        m_gpt2.create_causal_mask, m_llama.create_causal_mask = saved[:2]
        torch.backends.mha.set_fastpath_enabled(saved[2])
        model.eval()


def find_wrt(path: str, name: str) -> dict[str, str]:
    """The ONNX tensor(s) at the attribution point: the Gather of the token ids, or the ViT's Conv."""
    import onnx
    graph = onnx.load(path).graph
    if name == "vit":
        convs = [n for n in graph.node if n.op_type == "Conv"]
        assert len(convs) == 1, f"{path}: expected one Conv, found {len(convs)}"
        conv = convs[0].output[0]
        reshape = [n for n in graph.node if n.op_type == "Reshape" and n.input[0] == conv]
        perm = [n for n in graph.node if reshape and n.op_type == "Transpose" and n.input[0] == reshape[0].output[0]]
        assert len(perm) == 1, f"{path}: no Reshape -> Transpose after the Conv"
        return {"wrt": conv, "wrt_tokens": perm[0].output[0]}
    vocab = {i.name for i in graph.initializer if len(i.dims) == 2 and i.dims[0] == VOCAB}
    gathers = [n for n in graph.node if n.op_type == "Gather" and n.input[0] in vocab]
    assert len(gathers) == 1, f"{path}: expected one Gather of the word embeddings, found {len(gathers)}"
    return {"wrt": gathers[0].output[0]}


def onnx_logits(path: str, input_name: str, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {input_name: x})[0]


# ----------------------------------------------------------------------------- LXT side (child)

def lxt_map(name: str, method: str):
    """LXT's own patch map and the module it patches."""
    if name == "vit":
        from lxt.efficient.models import vit_torch
        assert method == "cplrp"
        return vit_torch.vision_transformer, vit_torch.cp_LRP
    if name == "bert":
        from lxt.efficient.models import bert
        assert method == "attnlrp"
        return bert.modeling_bert, bert.attnLRP
    from lxt.efficient.models import gpt2, llama
    mod = gpt2 if name == "gpt2" else llama
    module = mod.modeling_gpt2 if name == "gpt2" else mod.modeling_llama
    return module, mod.attnLRP if method == "attnlrp" else mod.cp_LRP


def install_counters(counts: dict[str, int], patch_map: dict) -> None:
    """Count calls of LXT's rule functions (forward) and of their autograd backward, and of the
    patched module forwards. Must run after ``monkey_patch`` for the module forwards."""
    import lxt.efficient.models.bert as l_bert
    import lxt.efficient.models.gpt2 as l_gpt2
    import lxt.efficient.patches as l_patches
    import lxt.efficient.rules as l_rules

    def counted(fn, key):
        def wrapper(*args, **kwargs):
            counts[key] = counts.get(key, 0) + 1
            return fn(*args, **kwargs)
        wrapper.__module__ = getattr(fn, "__module__", None)
        return wrapper

    for mod in (l_patches, l_gpt2, l_bert):
        for rule in ("divide_gradient", "identity_rule_implicit", "stop_gradient"):
            if hasattr(mod, rule) and not hasattr(getattr(mod, rule), "__wrapped_by_lxt_refs__"):
                new = counted(getattr(l_rules, rule), f"fwd:{rule}")
                new.__wrapped_by_lxt_refs__ = True
                setattr(mod, rule, new)

    def backward_counter(fn_cls, key):
        original = fn_cls.backward

        def backward(ctx, *grads):
            full = key if key != "divide_gradient" else f"{key}/{ctx.factor}"
            counts[f"bwd:{full}"] = counts.get(f"bwd:{full}", 0) + 1
            return original(ctx, *grads)
        fn_cls.backward = staticmethod(backward)

    backward_counter(l_rules.divide_gradient_fn, "divide_gradient")
    backward_counter(l_rules.identity_rule_implicit_fn, "identity_rule_implicit")
    for target in patch_map:
        if isinstance(target, type):
            target.forward = counted(target.forward, f"fwd:{target.__name__}.forward")


def expected_counts(name: str, method: str) -> dict[str, int]:
    """The calls LXT's patches must make in one forward and backward, from the models' structure
    (2 layers each). ``stop_gradient`` has no backward: it is counted in the forward only."""
    n = 2
    if name == "bert":
        # LayerNorm: embeddings + 2 per layer; QK and AV halved; GELU per layer + the pooler's tanh;
        # Dropout: embeddings, 3 per layer, the classifier's
        return {"fwd:LayerNorm.forward": 2 * n + 1, "fwd:stop_gradient": 2 * n + 1,
                "fwd:divide_gradient": 2 * n, "bwd:divide_gradient/2": 2 * n,
                "fwd:identity_rule_implicit": n + 1, "bwd:identity_rule_implicit": n + 1,
                "fwd:Dropout.forward": 3 * n + 2}
    if name == "gpt2":
        # LayerNorm: ln_1, ln_2 per layer, ln_f; GELU per MLP; Dropout: embeddings, attention and
        # residual per layer (the patched MLP skips its own)
        out = {"fwd:LayerNorm.forward": 2 * n + 1, "fwd:GPT2MLP.forward": n, "fwd:Dropout.forward": 2 * n + 1,
               "fwd:identity_rule_implicit": n, "bwd:identity_rule_implicit": n}
        if method == "attnlrp":  # q/4, k/4, v/2
            out.update({"fwd:stop_gradient": 2 * n + 1, "fwd:divide_gradient": 3 * n,
                        "bwd:divide_gradient/4": 2 * n, "bwd:divide_gradient/2": n})
        else:  # the LayerNorms' std, q, k
            out.update({"fwd:stop_gradient": 2 * n + 1 + 2 * n})
        return out
    if name.startswith("llama"):
        # RMSNorm: 2 per layer and the final one; no Dropout module in Llama
        out = {"fwd:LlamaRMSNorm.forward": 2 * n + 1, "fwd:LlamaMLP.forward": n}
        if method == "attnlrp":  # q/4, k/4, v/2, gate*up halved, SiLU identity
            out.update({"fwd:stop_gradient": 2 * n + 1, "fwd:divide_gradient": 4 * n,
                        "bwd:divide_gradient/4": 2 * n, "bwd:divide_gradient/2": 2 * n,
                        "fwd:identity_rule_implicit": n, "bwd:identity_rule_implicit": n})
        else:  # the RMSNorms' rsqrt, q, k, the gate
            out.update({"fwd:stop_gradient": 2 * n + 1 + 3 * n})
        return out
    # vit, cp_LRP: LayerNorm 2 per block and the final one; GELU per MLP; q, k per attention
    return {"fwd:LayerNorm.forward": 2 * n + 1, "fwd:GELU.forward": n, "fwd:MultiheadAttention.forward": n,
            "fwd:identity_rule_implicit": n, "bwd:identity_rule_implicit": n,
            "fwd:stop_gradient": 2 * n + 1 + 2 * n}


def embed(name: str, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The attribution point's activation for input x (unpatched part of the model)."""
    with torch.no_grad():
        if name == "vit":
            return model._process_input(x)
        return model.get_input_embeddings()(x)


def run_from(name: str, model: torch.nn.Module, leaf: torch.Tensor) -> torch.Tensor:
    """The model's logits computed from the attribution point's activation."""
    if name == "vit":
        original = model._process_input
        model._process_input = lambda _x: leaf
        try:
            return model(torch.zeros(leaf.shape[0], 3, 32, 32))
        finally:
            model._process_input = original
    return model(inputs_embeds=leaf, return_dict=True, **no_cache(model)).logits


def input_x_gradient(name: str, model: torch.nn.Module, x: torch.Tensor):
    """Target, logits, target logits and activation * gradient at the attribution point, with
    gradient one at each sample's target logit (LXT's efficient mode: relevance starts at the logit).
    The target is the argmax class, or (last position, argmax) for an LM."""
    leaf = embed(name, model, x).detach().requires_grad_(True)
    logits = run_from(name, model, leaf)
    rows = torch.arange(x.shape[0])
    if logits.ndim == 3:
        target = torch.stack([torch.full((x.shape[0],), x.shape[1] - 1), logits[:, -1].argmax(-1)], 1)
        picked = logits[rows, target[:, 0], target[:, 1]]
    else:
        target = logits.argmax(-1)
        picked = logits[rows, target]
    picked.sum().backward()  # samples are independent: one backward gives each its own gradient
    return target, logits.detach(), picked.detach(), (leaf * leaf.grad).detach()


def child(name: str, method: str, state_path: str, out_path: str) -> None:
    """One model and method in a fresh process: LXT patch, forward check, counts, relevance."""
    define_torchvision_schemas()
    import lxt.efficient as lxt_eff
    model = build(name)
    model.load_state_dict(torch.load(state_path))
    _, x = make_input(name)
    with torch.no_grad():
        reference = (model(x) if name == "vit" else model(input_ids=x).logits).float()
    module, patch_map = lxt_map(name, method)
    lxt_eff.monkey_patch(module, patch_map, verbose=True)
    counts: dict[str, int] = {}
    install_counters(counts, patch_map)
    if name == "bert":  # LXT replaces the module's classes: instantiate its class, same weights
        patched = module.BertForSequenceClassification(model.config).eval()
        patched.load_state_dict(model.state_dict())
        model = patched
    counts.clear()
    target, logits, picked, relevance = input_x_gradient(name, model, x)
    expected = expected_counts(name, method)
    assert counts == expected, f"{name} {method}: LXT's patches were called {counts}, expected {expected}"
    np.savez(out_path, **{
        "target": target.numpy().astype(np.int64),
        f"relevance_{method}": relevance.numpy().astype(np.float32),
        f"target_logit_{method}": picked.numpy().astype(np.float32),
        f"forward_max_abs_diff_{method}": np.float32((logits - reference).abs().max()),
        f"counts_{method}": np.array(json.dumps(counts, sort_keys=True)),
        f"expected_counts_{method}": np.array(json.dumps(expected, sort_keys=True)),
    })


# ----------------------------------------------------------------------------- parent

def make_reference(name: str, out_dir: str) -> None:
    model = build(name)
    input_name, x = make_input(name)
    onnx_path = os.path.join(out_dir, f"{name}.onnx")
    export(name, model, x, input_name, onnx_path)
    with torch.no_grad():
        logits = (model(x) if name == "vit" else model(input_ids=x).logits).float().numpy()
    ort_logits = onnx_logits(onnx_path, input_name, x.numpy())
    data = {input_name: x.numpy(), "logits": logits,
            "onnx_logits_max_abs_diff": np.float32(np.abs(ort_logits - logits).max())}
    data.update({k: np.array(v) for k, v in find_wrt(onnx_path, name).items()})
    data["target"], _, _, plain = (t.numpy() for t in input_x_gradient(name, model, x))
    data["input_x_gradient"] = plain.astype(np.float32)  # unpatched: how far the rules move relevance
    with tempfile.TemporaryDirectory() as tmp:
        state = os.path.join(tmp, "state.pt")
        torch.save(model.state_dict(), state)
        for method in METHODS[name]:
            part = os.path.join(tmp, f"{method}.npz")
            subprocess.run([sys.executable, __file__, "--child", name, method, state, part], check=True)
            with np.load(part) as got:
                for key in got.files:
                    if key == "target":
                        assert np.array_equal(data["target"], got[key]), f"{name}: targets differ"
                    data[key] = got[key]
    np.savez_compressed(os.path.join(out_dir, f"{name}.npz"), **data)
    size = os.path.getsize(onnx_path)
    assert size <= 1 << 20, f"{onnx_path}: {size} bytes > 1 MB"
    print(f"{name}: onnx {size} B, onnx vs torch {data['onnx_logits_max_abs_diff']:.2e}, wrt {data['wrt']}")
    for method in METHODS[name]:
        rel = data[f"relevance_{method}"]
        print(f"  {method}: forward diff {data[f'forward_max_abs_diff_{method}']:.2e}, "
              f"sum R {rel.sum((1, 2))} vs logit {data[f'target_logit_{method}']}, "
              f"rel. L2 to input_x_gradient {rel_l2(rel, data['input_x_gradient'])}, "
              f"counts {data[f'counts_{method}']}")
    if len(METHODS[name]) == 2:
        print(f"  attnlrp vs cplrp rel. L2 {rel_l2(data['relevance_cplrp'], data['relevance_attnlrp'])}")


def rel_l2(a: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-sample relative L2 distance of a from ref."""
    axes = tuple(range(1, ref.ndim))
    return np.sqrt(((a - ref) ** 2).sum(axes) / (ref ** 2).sum(axes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=sorted(METHODS), action="append")
    parser.add_argument("--out", default=OUT)
    parser.add_argument("--child", nargs=4, metavar=("NAME", "METHOD", "STATE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    define_torchvision_schemas()  # transformers imports torchvision too once it is installed
    os.makedirs(args.out, exist_ok=True)
    for name in args.only or sorted(METHODS):
        make_reference(name, args.out)


if __name__ == "__main__":
    main()
