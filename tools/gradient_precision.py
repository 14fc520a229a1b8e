"""How far float32 gradients of the benchmark's ResNet-18 are from the float64 gradient.

The gradient of a deep ReLU network at 224x224 depends on which side of zero each ReLU input and
which cell of each MaxPool window ends up, and float32 rounding moves a few of them. This script
measures that floor: PyTorch's float32 gradient and onnxattr's, each against PyTorch's float64
gradient of the same network and input (BENCHMARKS.md quotes it). Needs torch.

    python tools/gradient_precision.py
"""
from __future__ import annotations

import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

import onnxattr  # noqa: E402
import resnet18  # noqa: E402


def torch_gradient(weights: resnet18.Weights, x: np.ndarray, dtype: object) -> np.ndarray:
    """d logit_0 / dx of every sample, in PyTorch at ``dtype``."""
    import torch

    net = resnet18.torch_model(weights).to(dtype)
    t = torch.from_numpy(x).to(dtype).requires_grad_(True)
    net(t)[:, 0].sum().backward()
    return t.grad.double().numpy()


def main() -> None:
    import torch

    w = resnet18.weights(seed=0)
    x = np.random.default_rng(0).uniform(0, 1, (8, 3, 224, 224)).astype(np.float32)
    exact = torch_gradient(w, x, torch.float64)
    ours = onnxattr.attribute(onnxattr.load(resnet18.onnx_model(w, size=224)), x, target=0, method="gradient")

    def rel(a: np.ndarray) -> float:
        return float(np.linalg.norm(a - exact) / np.linalg.norm(exact))

    print(f"relative L2 to PyTorch's float64 gradient: PyTorch float32 {rel(torch_gradient(w, x, torch.float32)):.1e}, "
          f"onnxattr {rel(ours.astype(np.float64)):.1e}")


if __name__ == "__main__":
    main()
