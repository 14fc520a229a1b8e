"""Train a small HuggingFace ViT on the shapes data and export it to ONNX with references.

    /work/venvs/torch/bin/python tools/export_vit.py

A ViT with a convolutional stem ("early convolutions", Xiao et al. 2021): Conv 3x3 (16 ch) -
ReLU - Conv 3x3 stride 2 (32 ch) - ReLU, then ``transformers.ViTForImageClassification`` from a
config in code on that 32-channel 16x16 map: 4x4 patches (16 patches + the class token), hidden
48, 2 layers, 4 heads, MLP 96, exact GELU, eager attention; the logits of the class token's head.
``initializer_range=0.1``: under transformers' 0.02 the class token carries almost nothing of the
image at first and training sits at chance for epochs. (A plain ViT on the 32x32 pixels, 4x4 or
8x8 patches, stays below 45% after 15-20 epochs on this data.) Trained CPU-only, single-threaded,
with AdamW and random 90-degree turns and mirrors (without them it overfits: 97% train, 75%
held out), exported with the TorchScript exporter (``dynamo=False``),
opset 17, input ``input`` (N, 3, 32, 32), output ``logits``; references as for the other shapes
models (``tools/model_refs.py``).
"""
from __future__ import annotations

import os
import sys
import time

import torch
import transformers
import transformers.utils.import_utils
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_torch import predict, target_gradient  # noqa: E402
from model_refs import MODELS, check_and_save, splits  # noqa: E402

# The venv's torchvision 0.28.0 fails at import (operator torchvision::nms does not exist); the
# ViT does not need it, so transformers is told it is absent.
transformers.utils.import_utils._torchvision_available = False
torch.set_num_threads(1)
NAME = "torch_vit_op17"
EPOCHS, LR, BATCH = 70, 3e-3, 64


class ViTLogits(nn.Module):
    """Convolutional stem, then transformers' ViT on the stem's 32-channel 16x16 map."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
        config = transformers.ViTConfig(image_size=16, patch_size=4, num_channels=32, hidden_size=48,
                                        num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=4,
                                        initializer_range=0.1)
        self.vit = transformers.ViTForImageClassification._from_config(config, attn_implementation="eager")

    def forward(self, x):
        return self.vit(pixel_values=self.stem(x), return_dict=True).logits


def train(model: nn.Module, x, y, seed: int = 0) -> nn.Module:
    """AdamW, one-cycle schedule with a short warm-up; each batch turned by a random multiple of 90
    degrees and randomly mirrored (all four classes are invariant to both)."""
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.05)
    steps = EPOCHS * ((len(x) + BATCH - 1) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps, pct_start=0.1)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(EPOCHS):
        perm = torch.randperm(len(x), generator=g)
        total, correct = 0.0, 0
        for i in range(0, len(x), BATCH):
            idx = perm[i:i + BATCH]
            k, flip = torch.randint(0, 4, (2,), generator=g).tolist()
            xb = torch.rot90(xt[idx], k, dims=(2, 3))
            xb = torch.flip(xb, dims=(3,)) if flip % 2 else xb
            out = model(xb)
            loss = nn.functional.cross_entropy(out, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            correct += int((out.argmax(1) == yt[idx]).sum())
        print(f"  epoch {epoch + 1}/{EPOCHS}: loss {total / len(x):.4f}, train acc {correct / len(x):.4f}", flush=True)
    return model.eval()


def main() -> None:
    os.makedirs(MODELS, exist_ok=True)
    (xtr, ytr), (xte, yte), (xref, yref, mref) = splits("NCHW")
    torch.manual_seed(0)
    model = ViTLogits()
    t0 = time.time()
    train(model, xtr, ytr)
    seconds = time.time() - t0
    print(f"  trained in {seconds:.0f} s", flush=True)
    model.eval()
    path = os.path.join(MODELS, NAME + ".onnx")
    with torch.no_grad():
        torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), path, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    logits, grad = target_gradient(model, xref)
    check_and_save(NAME, framework=f"PyTorch {torch.__version__.split('+')[0]} / transformers {transformers.__version__}",
                   exporter="torch.onnx (TorchScript, dynamo=False)", layout="NCHW",
                   x_ref=xref, y_ref=yref, mask_ref=mref, logits=logits, gradient=grad,
                   x_test=xte, y_test=yte, framework_test_logits=predict(model, xte),
                   command="python tools/export_vit.py", extra={"train_seconds": round(seconds, 1)},
                   notes=("ViT with a convolutional stem: Conv 3x3 (16 ch)-ReLU-Conv 3x3/2 (32 ch)-ReLU, then "
                          "transformers ViTForImageClassification (eager attention) on the 32x16x16 map: 4x4 "
                          "patches (Conv 4x4/4, 48 ch), class token, learned positions, 2 pre-LayerNorm blocks "
                          "(4 heads, MLP 48-96-48, exact GELU as Erf), LayerNorm, Linear 48-4 on the class token."))


if __name__ == "__main__":
    main()
