"""Flax NNX CNN and ViT with random weights, through jax2onnx.

    /work/venvs/jax/bin/python tools/zoo/export_jax.py

Channels-last 32x32x3 input ``input`` (dynamic batch ``B``), 10 logits ``logits``, opset 23
(jax2onnx's default), seed 0.

* ``jax_cnn``: 2 x (Conv 3x3 - BatchNorm (running averages, randomized) - relu - max_pool 2x2),
  Conv 3x3 - relu, global average (mean over H, W), Linear 32-10.
* ``jax_vit``: patch embedding Conv 8x8 stride 8 (32 ch), class token, learned position
  embedding, 2 pre-LayerNorm blocks of ``nnx.MultiHeadAttention`` (4 heads) and an MLP
  (Linear 32-64, gelu (tanh form, jax's default), Linear 64-32), final LayerNorm, Linear 32-10
  on the class token.

References (``zoo_common.py``): batch 2, NHWC; the gradient of the argmax logit w.r.t. ``input``
from ``jax.grad``.
"""
from __future__ import annotations

import os
import sys
import time
from importlib.metadata import version

import jax
import jax.numpy as jnp
import numpy as np
import onnx
import onnxruntime
from flax import nnx
from jax2onnx import to_onnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from zoo_common import ZOO, Entry, check_and_save, class_target, error_text, update_manifest  # noqa: E402

OPSET = 23
SHAPE = (32, 32, 3)


class CNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(3, 16, kernel_size=(3, 3), padding="SAME", rngs=rngs)
        self.bn1 = nnx.BatchNorm(16, use_running_average=True, rngs=rngs)
        self.conv2 = nnx.Conv(16, 32, kernel_size=(3, 3), padding="SAME", rngs=rngs)
        self.bn2 = nnx.BatchNorm(32, use_running_average=True, rngs=rngs)
        self.conv3 = nnx.Conv(32, 32, kernel_size=(3, 3), padding="SAME", rngs=rngs)
        self.fc = nnx.Linear(32, 10, rngs=rngs)

    def __call__(self, x):
        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2)):
            x = nnx.max_pool(nnx.relu(bn(conv(x))), window_shape=(2, 2), strides=(2, 2))
        x = nnx.relu(self.conv3(x))
        return self.fc(jnp.mean(x, axis=(1, 2)))


class Block(nnx.Module):
    def __init__(self, dim: int, heads: int, rngs: nnx.Rngs):
        self.ln1 = nnx.LayerNorm(dim, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=heads, in_features=dim, decode=False, rngs=rngs)
        self.ln2 = nnx.LayerNorm(dim, rngs=rngs)
        self.fc1 = nnx.Linear(dim, 2 * dim, rngs=rngs)
        self.fc2 = nnx.Linear(2 * dim, dim, rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(nnx.gelu(self.fc1(self.ln2(x))))


class ViT(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, dim: int = 32, patch: int = 8, depth: int = 2, heads: int = 4):
        n = (SHAPE[0] // patch) ** 2
        self.embed = nnx.Conv(3, dim, kernel_size=(patch, patch), strides=(patch, patch), padding="VALID",
                              rngs=rngs)
        self.cls = nnx.Param(0.1 * jax.random.normal(rngs.params(), (1, 1, dim)))
        self.pos = nnx.Param(0.1 * jax.random.normal(rngs.params(), (1, n + 1, dim)))
        self.blocks = nnx.List([Block(dim, heads, rngs) for _ in range(depth)])
        self.ln = nnx.LayerNorm(dim, rngs=rngs)
        self.head = nnx.Linear(dim, 10, rngs=rngs)

    def __call__(self, x):
        x = self.embed(x)
        b = x.shape[0]
        x = x.reshape(b, -1, x.shape[-1])
        x = jnp.concatenate([jnp.broadcast_to(self.cls.value, (b, 1, x.shape[-1])), x], axis=1) + self.pos.value
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x)[:, 0])


def randomize_batchnorm(model: nnx.Module, rng: np.random.Generator) -> None:
    for _, mod in nnx.iter_graph(model):
        if isinstance(mod, nnx.BatchNorm):
            n = mod.mean.value.shape
            mod.mean.value = jnp.asarray(0.2 * rng.normal(size=n), jnp.float32)
            mod.var.value = jnp.asarray(0.5 + rng.random(n), jnp.float32)
            mod.scale.value = jnp.asarray(0.5 + rng.random(n), jnp.float32)
            mod.bias.value = jnp.asarray(0.2 * rng.normal(size=n), jnp.float32)


SPECS = {"cnn": (CNN, "none"), "vit": (ViT, "nnx.MultiHeadAttention")}


def run_one(key: str) -> Entry:
    cls, attention = SPECS[key]
    entry = Entry(key=f"jax_{key}/jax2onnx/{'none' if attention == 'none' else 'eager'}", arch=f"jax_{key}",
                  framework=f"JAX {jax.__version__} / Flax NNX {version('flax')}",
                  exporter=f"jax2onnx {version('jax2onnx')}", attention="none" if attention == "none" else "eager",
                  notes="" if attention == "none" else "attention: nnx.MultiHeadAttention (no sdpa choice in flax).")
    t0 = time.time()
    model = cls(nnx.Rngs(0))
    randomize_batchnorm(model, np.random.default_rng(0))
    x = np.random.default_rng(4).random((2, *SHAPE)).astype(np.float32)
    logits = np.asarray(model(jnp.asarray(x)))
    target = class_target(logits)

    def picked(inp):
        return jnp.take_along_axis(model(inp), jnp.asarray(target)[:, None], axis=1).sum()

    grad = np.asarray(jax.grad(picked)(jnp.asarray(x)))
    path = os.path.join(ZOO, f"jax_{key}_jax2onnx.onnx")
    try:
        to_onnx(model, [("B", *SHAPE)], model_name=f"jax_{key}", opset=OPSET, input_names=["input"],
                output_names=["logits"], return_mode="file", output_path=path)
    except Exception as exc:  # noqa: BLE001
        entry.status, entry.error = "export_failed", error_text(exc)
        print(f"  jax_{key}: export failed: {entry.error[:300]}", flush=True)
        return entry
    check_and_save(entry, path, {"input": x}, logits, target, grad, "input", "input", {"layout": np.array("NHWC")})
    print(f"  jax_{key}: {entry.status} {entry.onnx_bytes / 1024:.0f} KiB diff {entry.max_rel_diff_ort_framework:.1e} "
          f"ops {entry.ops} ({time.time() - t0:.0f} s) {entry.error[:300]}", flush=True)
    return entry


def main(keys: list[str]) -> None:
    os.makedirs(ZOO, exist_ok=True)
    versions = {"jax": jax.__version__, "flax": version("flax"), "jax2onnx": version("jax2onnx"),
                "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    for key in keys or list(SPECS):
        update_manifest([run_one(key)], versions)


if __name__ == "__main__":
    main(sys.argv[1:])
