"""Check every zoo reference against onnxruntime alone (NumPy, onnx, onnxruntime; no framework).

    python tools/zoo/check_refs.py            # all files in tests/data/zoo/manifest.json

For each file with status ``ok``: the stored ``onnxruntime`` output is reproduced, and the
framework's ``gradient`` is checked by a central difference of onnxruntime's target output along
the gradient's own direction: (f(w + h u) - f(w - h u)) / 2h should equal |g| for u = g / |g|,
per sample (the best of three steps h = 1e-2, 1e-3, 1e-4 x max(1, max|w|)). For text the word-embedding output ``wrt`` is made a graph input (its Gather is
removed) and fed the reference ``embeddings``. Prints the relative error per file.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from zoo_common import MANIFEST, ZOO  # noqa: E402


def with_tensor_as_input(path: str, name: str, shape: tuple) -> bytes:
    """The model with the node producing ``name`` removed and ``name`` a float graph input."""
    m = onnx.load(path)
    g = m.graph
    (node,) = [n for n in g.node if name in n.output]
    g.node.remove(node)
    g.input.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(shape)))
    return m.SerializeToString()


def picked(out: np.ndarray, target: np.ndarray) -> np.ndarray:
    b = np.arange(len(out))
    if target.ndim == 2:
        return out[b, target[:, 0], target[:, 1]].astype(np.float64)
    return out[b, target].astype(np.float64)


def check(row: dict) -> tuple[float, float]:
    path = os.path.join(ZOO, row["file"])
    ref = np.load(os.path.join(ZOO, row["reference"]))
    names = [i["name"] for i in row["inputs"]]
    feeds = {n: ref[n] for n in names}
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = sess.run(None, feeds)[0]
    same = float(np.abs(out - ref["onnxruntime"]).max())
    wrt = str(ref["wrt"])
    if str(ref["wrt_kind"]) == "embeddings":
        point = ref["embeddings"]
        sess = ort.InferenceSession(with_tensor_as_input(path, wrt, point.shape), providers=["CPUExecutionProvider"])
        feeds = {k: v for k, v in feeds.items() if k in {i.name for i in sess.get_inputs()}}
    else:
        point = ref[wrt]
    g = ref["gradient"].astype(np.float64)
    target = ref["target"]
    worst = 0.0
    for i in range(len(point)):
        norm = np.linalg.norm(g[i])
        u = (g[i] / norm).astype(np.float32)
        errors = []
        for step in (1e-2, 1e-3, 1e-4):  # the smallest error: ReLU6 kinks lie within 1e-2 on MobileNetV2
            h = step * max(1.0, float(np.abs(point[i]).max()))
            vals = []
            for s in (1, -1):
                p = point.copy()
                p[i] = point[i] + s * h * u
                vals.append(picked(sess.run(None, {**feeds, wrt: p})[0], target)[i])
            errors.append(abs((vals[0] - vals[1]) / (2 * h) - norm) / norm)
        worst = max(worst, min(errors))
    return same, worst


def main() -> None:
    with open(MANIFEST) as f:
        rows = json.load(f)["entries"]
    for key, row in rows.items():
        if row["status"] != "ok":
            continue
        same, fd = check(row)
        print(f"{key:40s} ort reproduced (max abs {same:.1e}); gradient vs central difference: rel {fd:.1e}")


if __name__ == "__main__":
    main()
