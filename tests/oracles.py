"""The Captum and Zennit oracle files (copied from shared/oracles into tests/data/oracles)."""
from __future__ import annotations

import pathlib

import numpy as np

ORACLES = pathlib.Path(__file__).parent / "data" / "oracles"
MODELS = ("mlp", "cnn_bn", "resnet_small")


def oracle(name: str) -> tuple[pathlib.Path, dict[str, np.ndarray]]:
    """The model path and the arrays of one oracle file."""
    data = np.load(ORACLES / f"{name}.npz")
    return ORACLES / f"{name}.onnx", {k: data[k] for k in data.files}


def rel_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-sample relative L2 error of ``a`` against the reference ``b``."""
    n = len(b)
    num = np.linalg.norm((a - b).reshape(n, -1).astype(np.float64), axis=1)
    den = np.linalg.norm(b.reshape(n, -1).astype(np.float64), axis=1)
    return num / np.maximum(den, 1e-12)
