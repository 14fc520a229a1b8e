"""A two-layer Flax NNX transformer exported by jax2onnx, for tests/test_attnlrp.py: AttnLRP and
CP-LRP on the flax export must equal the same weights written as MatMul attention (the test
builds that graph with onnx.helper from the weights saved here).

    /work/venvs/jax/bin/python tools/flax_transformer.py      # writes tests/data/attnlrp/flax.{onnx,npz}

The architecture is the test's ``transformer``: input x (2, 5, 8); per layer a pre-LayerNorm
``nnx.MultiHeadAttention`` (2 heads, biases) with a residual, then a pre-LayerNorm MLP with a
residual: SiLU-gated (gate * up) in layer 0, exact GELU in layer 1; a linear head on token 0.
The npz holds the weights under the test's names (W?{layer} (8, 8) as x @ W, b?{layer}, s/n
LayerNorm scale and bias), the input ``x`` and flax's own ``logits``.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax2onnx import to_onnx

B, T, H, HEADS, C = 2, 5, 8, 2, 3
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "attnlrp")


class Layer(nnx.Module):
    def __init__(self, gated: bool, rngs: nnx.Rngs):
        self.ln1 = nnx.LayerNorm(H, epsilon=1e-5, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=HEADS, in_features=H, decode=False, rngs=rngs)
        self.ln2 = nnx.LayerNorm(H, epsilon=1e-5, rngs=rngs)
        self.gated = gated
        self.g = nnx.Linear(H, H, rngs=rngs)
        self.u = nnx.Linear(H, H, rngs=rngs)
        self.d = nnx.Linear(H, H, rngs=rngs)

    def __call__(self, x):
        x = x + self.attn(self.ln1(x))
        h = self.ln2(x)
        m = nnx.silu(self.g(h)) * self.u(h) if self.gated else jax.nn.gelu(self.u(h), approximate=False)
        return x + self.d(m)


class Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.layers = nnx.List([Layer(True, rngs), Layer(False, rngs)])
        self.head = nnx.Linear(H, C, rngs=rngs)

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.head(x[:, 0])


def randomize(net: Net, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw every parameter (scale 0.6 for kernels, so that attention is peaked) and return them
    under the test's names."""
    w = {}

    def put(param, value):
        param.value = jnp.asarray(value.reshape(param.value.shape), jnp.float32)

    for i, layer in enumerate(net.layers):
        for p, lin in (("q", layer.attn.query), ("k", layer.attn.key), ("v", layer.attn.value),
                       ("o", layer.attn.out), ("g", layer.g), ("u", layer.u), ("d", layer.d)):
            w[f"W{p}{i}"] = rng.normal(0, 0.6, (H, H)).astype(np.float32)
            w[f"b{p}{i}"] = rng.normal(0, 0.1, (H,)).astype(np.float32)
            put(lin.kernel, w[f"W{p}{i}"])
            put(lin.bias, w[f"b{p}{i}"])
        for j, ln in ((1, layer.ln1), (2, layer.ln2)):
            w[f"s{j}{i}"] = rng.normal(1, 0.2, (H,)).astype(np.float32)
            w[f"n{j}{i}"] = rng.normal(0, 0.1, (H,)).astype(np.float32)
            put(ln.scale, w[f"s{j}{i}"])
            put(ln.bias, w[f"n{j}{i}"])
    w["Wc"] = rng.normal(0, 0.6, (H, C)).astype(np.float32)
    w["bc"] = rng.normal(0, 0.1, (C,)).astype(np.float32)
    put(net.head.kernel, w["Wc"])
    put(net.head.bias, w["bc"])
    return w


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    net = Net(nnx.Rngs(0))
    w = randomize(net, np.random.default_rng(0))
    x = np.random.default_rng(5).normal(0, 1, (B, T, H)).astype(np.float32)
    logits = np.asarray(net(jnp.asarray(x)))
    to_onnx(net, [(B, T, H)], model_name="flax_transformer", opset=23, input_names=["x"], output_names=["y"],
            return_mode="file", output_path=os.path.join(OUT, "flax.onnx"))
    np.savez(os.path.join(OUT, "flax.npz"), x=x, logits=logits, **w)
    print("logits", logits)


if __name__ == "__main__":
    main()
