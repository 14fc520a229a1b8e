"""Train a small channels-last JAX CNN (Flax NNX) on the shapes data, export it to ONNX with
jax2onnx at opset 23, and write framework references.

    python tools/export_jax.py

Needs ``pip install jax jaxlib jax2onnx`` (jax2onnx brings flax and optax; versions in
tools/requirements-export.txt).

``jax_cnn_op23``: nnx.Conv 3x3 (16 ch)-relu-nnx.max_pool 2x2, nnx.Conv (32 ch)-relu-max_pool,
nnx.Conv (32 ch)-relu-max_pool, reshape (flatten), nnx.Linear 512-32, relu, nnx.Linear 32-4
(logits). Input ``input`` (B, 32, 32, 3) NHWC, dynamic batch ``B``; output ``logits``.

The model is written with Flax NNX layers on purpose: jax2onnx converts ``nnx.max_pool`` to a 2-D
MaxPool, whereas a bare ``jax.lax.reduce_window`` max over an NHWC array becomes a 4-D MaxPool
(window 1x2x2x1 on an Unsqueezed 6-D tensor) that onnxruntime 1.32 rejects ("Unsupported pooling
size"). Opset 23 is jax2onnx's default and the newest onnxruntime 1.32 runs.
"""
from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
from jax2onnx import to_onnx  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_refs import MODELS, check_and_save, splits  # noqa: E402

NAME, OPSET, EPOCHS, LR, BATCH = "jax_cnn_op23", 23, 12, 3e-3, 64
NOTES = ("Flax NNX CNN, channels-last: 3 x (Conv 3x3-relu-max_pool 2x2) 16/32/32 ch, reshape, "
         "Linear 512-32, relu, Linear 32-4 logits. jax2onnx: one Transpose NHWC->NCHW at the input "
         "and one back before the flatten; Conv with auto_pad=SAME_UPPER and MaxPool with "
         "auto_pad=VALID (no explicit pads); flatten shape built at run time (Shape -> Gather -> "
         "Squeeze -> Unsqueeze -> Concat -> Reshape); Linear = Gemm (transB=0); IR version 10.")


class CNN(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.conv1 = nnx.Conv(3, 16, kernel_size=(3, 3), padding="SAME", rngs=rngs)
        self.conv2 = nnx.Conv(16, 32, kernel_size=(3, 3), padding="SAME", rngs=rngs)
        self.conv3 = nnx.Conv(32, 32, kernel_size=(3, 3), padding="SAME", rngs=rngs)
        self.fc1 = nnx.Linear(32 * 4 * 4, 32, rngs=rngs)
        self.fc2 = nnx.Linear(32, 4, rngs=rngs)

    def __call__(self, x):
        for conv in (self.conv1, self.conv2, self.conv3):
            x = nnx.max_pool(nnx.relu(conv(x)), window_shape=(2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        return self.fc2(nnx.relu(self.fc1(x)))


def main():
    os.makedirs(MODELS, exist_ok=True)
    (xtr, ytr), (xte, yte), (xref, yref, mref) = splits("NHWC")
    print(f"== {NAME} (jax {jax.__version__}, devices {jax.devices()})", flush=True)
    model = CNN(nnx.Rngs(0))
    steps_per_epoch = len(xtr) // BATCH
    sched = optax.warmup_cosine_decay_schedule(LR / 10, LR, steps_per_epoch * EPOCHS // 5,
                                               steps_per_epoch * EPOCHS)
    opt = nnx.Optimizer(model, optax.adam(sched), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, x, y):
        def loss_fn(model):
            logits = model(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

        (loss, logits), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        opt.update(model, grads)
        return loss, (logits.argmax(1) == y).sum()

    rng = np.random.default_rng(0)
    t0 = time.time()
    for epoch in range(EPOCHS):
        perm = rng.permutation(len(xtr))
        total, correct = 0.0, 0
        for i in range(steps_per_epoch):
            idx = perm[i * BATCH:(i + 1) * BATCH]
            loss, c = step(model, opt, jnp.asarray(xtr[idx]), jnp.asarray(ytr[idx]))
            total += float(loss)
            correct += int(c)
        print(f"  epoch {epoch + 1}/{EPOCHS}: loss {total / steps_per_epoch:.4f}, "
              f"train acc {correct / (steps_per_epoch * BATCH):.4f}", flush=True)
    print(f"  trained in {time.time() - t0:.0f} s", flush=True)

    path = os.path.join(MODELS, NAME + ".onnx")
    to_onnx(model, [("B", 32, 32, 3)], model_name=NAME, opset=OPSET, input_names=["input"],
            output_names=["logits"], return_mode="file", output_path=path)

    fwd = nnx.jit(lambda m, x: m(x))
    logits = np.asarray(fwd(model, jnp.asarray(xref)))
    target = logits.argmax(1)

    def picked(x):
        return jnp.take_along_axis(model(x), jnp.asarray(target)[:, None], axis=1).sum()

    grad = np.asarray(jax.grad(picked)(jnp.asarray(xref)))
    test_logits = np.concatenate([np.asarray(fwd(model, jnp.asarray(xte[i:i + 500])))
                                  for i in range(0, len(xte), 500)])
    from importlib.metadata import version
    check_and_save(NAME, framework=f"JAX {jax.__version__} / Flax NNX {version('flax')}",
                   exporter=f"jax2onnx {version('jax2onnx')}", layout="NHWC", x_ref=xref, y_ref=yref,
                   mask_ref=mref, logits=logits, gradient=grad, x_test=xte, y_test=yte,
                   framework_test_logits=test_logits, command="python tools/export_jax.py",
                   notes=NOTES)


if __name__ == "__main__":
    main()
