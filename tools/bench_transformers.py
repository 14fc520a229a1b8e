"""BERT-base and ViT-B/16-sized models for tools/bench.py, built at bench time with torch and
transformers from their configs (random weights; nothing is downloaded or committed).

Each is exported with the TorchScript exporter (opset 17, eager attention) from a float input:
BERT from ``inputs_embeds`` (batch, 128 tokens, 768), so that the gradient is taken at the
embeddings, and the ViT from ``pixel_values`` (batch, 3, 224, 224). ``peers`` gives PyTorch's own
forward and forward plus backward (the gradient at the same input for the same targets).
"""
from __future__ import annotations

import pathlib
from typing import Any, Callable

import numpy as np

TOKENS = 128


def torchvision_schemas() -> None:
    """Declare torchvision's custom-op schemas (no kernels), so that its CUDA-only wheel imports
    (transformers imports it too)."""
    import torch

    if not hasattr(torchvision_schemas, "lib"):
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        torchvision_schemas.lib = lib  # keep the library object alive


def build(name: str) -> Any:
    """The model ``name`` ("bert" or "vit"), BERT-base / ViT-B/16 sized, eval mode, seeded."""
    import torch

    torchvision_schemas()
    torch.manual_seed(0)
    if name == "bert":
        from transformers import BertConfig, BertForSequenceClassification

        cfg = BertConfig(num_labels=2, attn_implementation="eager")  # BERT-base: 12 x 768, 12 heads
        net = BertForSequenceClassification(cfg)
    elif name == "vit":
        from transformers import ViTConfig, ViTForImageClassification

        cfg = ViTConfig(image_size=224, patch_size=16, num_labels=1000, attn_implementation="eager")
        net = ViTForImageClassification(cfg)
    else:
        raise SystemExit(f"unknown transformer {name!r}; choose bert or vit")
    return net.eval()


class Logits:
    """The model as a function of its float input alone (what is exported and timed)."""

    def __init__(self, net: Any, name: str) -> None:
        import torch

        class Wrap(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def forward(self, x: Any) -> Any:
                if name == "bert":
                    return self.net(inputs_embeds=x).logits
                return self.net(pixel_values=x).logits

        self.module = Wrap().eval()


def make(name: str, batch: int, path: pathlib.Path) -> tuple[np.ndarray, Any]:
    """Export ``name`` to ``path``; return an input batch and the torch module."""
    import torch

    module = Logits(build(name), name).module
    rng = np.random.default_rng(0)
    if name == "bert":
        x = (rng.standard_normal((batch, TOKENS, 768)) * 0.5).astype(np.float32)
    else:
        x = rng.uniform(-1, 1, (batch, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        torch.onnx.export(module, (torch.from_numpy(x),), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "batch"}})
    return x, module


def peers(module: Any, x: np.ndarray, target: np.ndarray) -> dict[str, Callable[[], Any]]:
    """PyTorch's own forward, and its forward plus backward to the input (the gradient)."""
    import torch

    tx, tt = torch.from_numpy(x), torch.from_numpy(target)

    def forward() -> Any:
        with torch.no_grad():
            return module(tx)

    def gradient() -> Any:
        xi = tx.clone().requires_grad_(True)
        out = module(xi)
        out.gather(1, tt[:, None]).sum().backward()
        return xi.grad

    return {"PyTorch forward": forward, "PyTorch forward+backward": gradient}
