"""Export tiny models whose ONNX graphs hold the pieces that exporters split layers into, for
tests/test_canonize.py (files in tests/data/canon/). Random weights; nothing is trained.

    /work/venvs/torch/bin/python tools/make_canon_models.py torch
    /work/venvs/tf/bin/python tools/make_canon_models.py keras
    /work/venvs/jax/bin/python tools/make_canon_models.py jax

torch (the TorchScript exporter, ``dynamo=False``, batch axis dynamic):
  torch_silu_op13        Linear, nn.SiLU, Linear                     (Sigmoid, Mul)
  torch_gelu_erf_op13    Linear, nn.GELU(), Linear                   (Div, Erf, Add, Mul, Mul)
  torch_gelu_tanh_op17   Linear, nn.GELU("tanh"), Linear             (Pow 3, Mul, Add, Tanh, ...)
  torch_hardswish_op13   Conv, nn.Hardswish, nn.Hardsigmoid, Conv   (HardSigmoid, Mul; HardSigmoid)
  torch_layernorm_op11   Linear, nn.LayerNorm, Linear                (ReduceMean, Sub, Pow, ...)
  torch_layernorm2_op16  Linear, nn.LayerNorm over the last two axes
  torch_rmsnorm_op17     Linear, transformers' LlamaRMSNorm (Cast, Pow, ReduceMean, Add, Sqrt,
                         Div(1, .), Mul, Cast, Mul), Linear
  torch_rmsnorm_div_op13 Linear, RMSNorm written x / sqrt(mean x^2 + eps) * w, Linear
                         (torch.nn.RMSNorm does not export below opset 23)
  torch_se_op13          Conv, ReLU, squeeze-excitation (GAP, Conv, ReLU, Conv, Sigmoid, Mul), Conv
  torch_se_hard_op13     MobileNetV3's block: Conv, Hardswish, squeeze-excitation with a Hardsigmoid gate
  torch_bn_after_relu_op13  Conv, ReLU, BatchNorm2d (a BatchNormalization node), Conv;
                         a Linear whose output is scaled and shifted by constants (Mul, Add)
keras (tf2onnx 1.17 ``from_function``, opset 18):
  keras_blocks_op18      Conv2D, BatchNormalization, swish, Dense, LayerNormalization, gelu (tanh
                         form), Dense, BatchNormalization on a Dense output, hard_silu, Dense,
                         hard_sigmoid, Dense, relu, BatchNormalization (between two ReLUs, so TF cannot fold it: Mul,
                         Add), relu, Dense. (A BatchNormalization right after hard_silu gets its
                         scale folded by TF into hard_silu's 1/6, which is then no HardSwish.)
                         (Keras's exact gelu becomes TF's Erfc, which tf2onnx 1.17 cannot convert.)
jax (jax2onnx 0.17.1 ``to_onnx``, opset 23; flax nnx):
  jax_blocks_op23        Linear, nnx.LayerNorm (var = E[x^2] - E[x]^2, Max 0), gelu (exported as the
                         Gelu op), Linear, silu (Sigmoid, Mul), Linear, hard_swish (Add, Max, Min,
                         Div, Mul), Linear
  jax_rmsnorm_op23       Linear, nnx.RMSNorm (its epsilon through CastLike), Linear

Each file is small (a few KB) and has its input ``x`` and output ``y``; the tests compare our
forward with onnxruntime on the file itself, so no references are stored.
"""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "data", "canon")


def torch_models() -> None:
    import torch
    from torch import nn

    torch.manual_seed(0)

    class LlamaRMSNorm(nn.Module):
        def __init__(self, n: int, eps: float = 1e-6) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.rand(n) + 0.5)
            self.eps = eps

        def forward(self, x):  # as transformers' LlamaRMSNorm (the casts are exported)
            dtype = x.dtype
            x = x.to(torch.float32)
            var = x.pow(2).mean(-1, keepdim=True)
            return self.weight * (x * torch.rsqrt(var + self.eps)).to(dtype)

    class DivRMSNorm(LlamaRMSNorm):
        def forward(self, x):
            return x / torch.sqrt((x * x).mean(-1, keepdim=True) + self.eps) * self.weight

    class SE(nn.Module):
        def __init__(self, c: int, r: int = 2, gate: nn.Module | None = None) -> None:
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc1, self.fc2 = nn.Conv2d(c, c // r, 1), nn.Conv2d(c // r, c, 1)
            self.gate = gate or nn.Sigmoid()

        def forward(self, x):
            return x * self.gate(self.fc2(torch.relu(self.fc1(self.pool(x)))))

    class ScaledHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.bn, self.conv2 = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3)
            self.fc = nn.Linear(4 * 4 * 4, 5)
            self.register_buffer("scale", torch.rand(5) + 0.5)
            self.register_buffer("shift", torch.randn(5))

        def forward(self, x):
            h = self.conv2(self.bn(torch.relu(self.conv1(x))))
            return self.fc(h.flatten(1)) * self.scale + self.shift

    def randomize_norms(m: nn.Module) -> nn.Module:
        for mod in m.modules():
            if isinstance(mod, (nn.LayerNorm, nn.BatchNorm2d)):
                with torch.no_grad():
                    mod.weight.uniform_(0.5, 1.5)
                    if getattr(mod, "bias", None) is not None:
                        mod.bias.normal_()
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.normal_()
                mod.running_var.uniform_(0.5, 2)
        return m.eval()

    seq = nn.Sequential
    specs = {
        "torch_silu_op13": (seq(nn.Linear(6, 8), nn.SiLU(), nn.Linear(8, 3)), (2, 6), 13),
        "torch_gelu_erf_op13": (seq(nn.Linear(6, 8), nn.GELU(), nn.Linear(8, 3)), (2, 6), 13),
        "torch_gelu_tanh_op17": (seq(nn.Linear(6, 8), nn.GELU("tanh"), nn.Linear(8, 3)), (2, 6), 17),
        "torch_hardswish_op13": (seq(nn.Conv2d(3, 4, 3), nn.Hardswish(), nn.Conv2d(4, 4, 3), nn.Hardsigmoid(),
                                     nn.Conv2d(4, 2, 1)), (2, 3, 7, 7), 13),
        "torch_layernorm_op11": (seq(nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 3)), (2, 5, 6), 11),
        "torch_layernorm2_op16": (seq(nn.Linear(6, 8), nn.LayerNorm((5, 8), eps=1e-3), nn.Linear(8, 3)), (2, 5, 6), 16),
        "torch_rmsnorm_op17": (seq(nn.Linear(6, 8), LlamaRMSNorm(8), nn.Linear(8, 3)), (2, 5, 6), 17),
        "torch_rmsnorm_div_op13": (seq(nn.Linear(6, 8), DivRMSNorm(8), nn.Linear(8, 3)), (2, 5, 6), 13),
        "torch_se_op13": (seq(nn.Conv2d(3, 4, 3), nn.ReLU(), SE(4), nn.Conv2d(4, 2, 3)), (2, 3, 8, 8), 13),
        "torch_bn_after_relu_op13": (ScaledHead(), (2, 3, 8, 8), 13),
        "torch_se_hard_op13": (seq(nn.Conv2d(3, 4, 3), nn.Hardswish(), SE(4, gate=nn.Hardsigmoid()), nn.Conv2d(4, 2, 3)),
                               (2, 3, 8, 8), 13),
    }
    for name, (module, shape, opset) in specs.items():
        module = randomize_norms(module)
        x = torch.randn(*shape)
        path = os.path.join(OUT, name + ".onnx")
        torch.onnx.export(module, (x,), path, input_names=["x"], output_names=["y"], opset_version=opset,
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
        report(path)


def keras_models() -> None:
    import numpy as np
    import tensorflow as tf
    import tf2onnx
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 3))
    h = layers.Conv2D(4, 3)(inp)
    h = layers.BatchNormalization()(h)
    h = layers.Activation("swish")(h)
    h = layers.Flatten()(h)
    h = layers.Dense(8)(h)
    h = layers.LayerNormalization()(h)
    h = layers.Activation(lambda t: keras.activations.gelu(t, approximate=True))(h)
    h = layers.Dense(8)(h)
    h = layers.BatchNormalization()(h)
    h = layers.Activation("hard_silu")(h)
    h = layers.Dense(8)(h)
    h = layers.Activation("hard_sigmoid")(h)
    h = layers.Dense(8, activation="relu")(h)
    h = layers.BatchNormalization()(h)
    h = layers.Activation("relu")(h)
    out = layers.Dense(3)(h)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, (layers.BatchNormalization, layers.LayerNormalization)):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) if i in (0, 3) else
                               rng.standard_normal(w.shape).astype(np.float32)
                               for i, w in enumerate(layer.get_weights())])

    @tf.function(input_signature=[tf.TensorSpec((None, 6, 6, 3), tf.float32, name="x")])
    def forward(x):
        return {"y": model(x, training=False)}

    path = os.path.join(OUT, "keras_blocks_op18.onnx")
    tf2onnx.convert.from_function(forward, input_signature=forward.input_signature, opset=18, output_path=path)
    report(path)


def jax_models() -> None:
    from flax import nnx
    from jax2onnx import to_onnx

    class Blocks(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.l1, self.ln = nnx.Linear(6, 8, rngs=rngs), nnx.LayerNorm(8, rngs=rngs)
            self.l2, self.l3 = nnx.Linear(8, 8, rngs=rngs), nnx.Linear(8, 8, rngs=rngs)
            self.l4 = nnx.Linear(8, 3, rngs=rngs)

        def __call__(self, x):
            h = nnx.gelu(self.ln(self.l1(x)), approximate=False)
            h = nnx.silu(self.l2(h))
            return self.l4(nnx.hard_swish(self.l3(h)))

    class RMS(nnx.Module):
        def __init__(self, rngs: nnx.Rngs) -> None:
            self.l1, self.rms, self.l2 = nnx.Linear(6, 8, rngs=rngs), nnx.RMSNorm(8, rngs=rngs), nnx.Linear(8, 3, rngs=rngs)

        def __call__(self, x):
            return self.l2(self.rms(self.l1(x)))

    for name, cls in (("jax_blocks_op23", Blocks), ("jax_rmsnorm_op23", RMS)):
        model = cls(nnx.Rngs(0))
        for _, param in nnx.iter_graph(model):  # norm scales and biases random, not 1 and 0
            if isinstance(param, nnx.Param) and param.value.ndim == 1:
                param.value = param.value + 0.5 * nnx.Rngs(1).params.normal(param.value.shape)
        path = os.path.join(OUT, name + ".onnx")
        to_onnx(model, [("B", 5, 6)], model_name=name, opset=23, input_names=["x"], output_names=["y"],
                return_mode="file", output_path=path)
        report(path)


def report(path: str) -> None:
    import onnx

    proto = onnx.load(path)
    ops = [n.op_type for n in proto.graph.node]
    print(f"{os.path.basename(path)} ({os.path.getsize(path)} bytes): {' '.join(ops)}")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    which = sys.argv[1:] or ["torch"]
    if "torch" in which:
        torch_models()
    if "keras" in which:
        keras_models()
    if "jax" in which:
        jax_models()
