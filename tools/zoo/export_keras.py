"""keras.applications architectures with random weights (``weights=None``), through tf2onnx.

    /work/venvs/tf/bin/python tools/zoo/export_keras.py

Input 32x32x3 (the smallest every application accepts), 10 classes, ``classifier_activation=None``
(logits out), He-normal Conv kernels, BatchNorm statistics and affine parameters randomized
(seeds 0 and 1). tf2onnx
``from_function`` on a ``tf.function`` with input ``input`` (None, 32, 32, 3), opset 18.

* ``MobileNetV2(alpha=0.35)`` fits in 3 MB.
* ``EfficientNetB0``, ``ResNet50`` and ``DenseNet121`` do not at any input size: their weights
  alone are 16, 94 and 28 MB in float32 even with 10 classes. Each is recorded as
  ``skipped_for_size`` (with its parameter count) and replaced by the same architecture built by
  keras.applications' own builder at a smaller width/depth:
  ``efficientnet.EfficientNet(width 0.25, depth 0.25)``, ``resnet.ResNet`` with three
  ``stack_residual_blocks_v1`` stages of 16/32/64 filters, one bottleneck block each, and
  ``densenet.DenseNet(blocks=[1, 1, 1, 1])``.

References (``zoo_common.py``): batch 2, NHWC; the gradient of the argmax logit w.r.t. ``input``
from ``tf.GradientTape``.
"""
from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

import keras  # noqa: E402
import onnx  # noqa: E402
import onnxruntime  # noqa: E402
import tf2onnx  # noqa: E402
from keras.src.applications import densenet, efficientnet, resnet  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from zoo_common import (MAX_FILE_BYTES, ZOO, Entry, check_and_save, class_target,  # noqa: E402
                        error_text, update_manifest)

SHAPE = (32, 32, 3)
COMMON = dict(weights=None, input_shape=SHAPE, classes=10, classifier_activation=None)
OPSET = 18


def small_resnet():
    def stack_fn(x):
        x = resnet.stack_residual_blocks_v1(x, 16, 1, stride1=1, name="conv2")
        x = resnet.stack_residual_blocks_v1(x, 32, 1, name="conv3")
        return resnet.stack_residual_blocks_v1(x, 64, 1, name="conv4")
    return resnet.ResNet(stack_fn, False, True, name="resnet_small", **COMMON)


SPECS = {
    # key: (builder, input scale, notes)
    "mobilenet_v2": (lambda: keras.applications.MobileNetV2(alpha=0.35, **COMMON), 1.0,
                     "keras.applications.MobileNetV2(alpha=0.35); ReLU6 activations."),
    "efficientnet_b0": (lambda: keras.applications.EfficientNetB0(**COMMON), 255.0, "EfficientNetB0."),
    "efficientnet_small": (lambda: efficientnet.EfficientNet(0.25, 0.25, 32, name="efficientnet_small", **COMMON),
                           255.0, "keras.applications' EfficientNet builder at width 0.25, depth 0.25 (B0's "
                           "blocks, Rescaling(1/255) and a Normalization at the input, given a fixed mean and variance)."),
    "resnet50": (lambda: keras.applications.ResNet50(**COMMON), 1.0, "ResNet50."),
    "resnet_small": (small_resnet, 1.0, "keras.applications' ResNet builder with three "
                     "stack_residual_blocks_v1 stages (16/32/64 filters, one bottleneck block each)."),
    "densenet121": (lambda: keras.applications.DenseNet121(**COMMON), 1.0, "DenseNet121."),
    "densenet_small": (lambda: densenet.DenseNet([1, 1, 1, 1], name="densenet_small", **COMMON), 1.0,
                       "keras.applications' DenseNet builder with blocks=[1, 1, 1, 1] (growth rate 32)."),
}


def variance_preserving_init(model: keras.Model, rng: np.random.Generator) -> None:
    """He-normal Conv kernels and 1/sqrt(fan_in) Dense kernels. Under Keras' Glorot defaults the
    activations of MobileNetV2 vanish (logits about 1e-11)."""
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
            k = layer.kernel
            shape = tuple(k.shape)
            if isinstance(layer, keras.layers.DepthwiseConv2D):
                fan_in, gain = shape[0] * shape[1], 2.0
            elif isinstance(layer, keras.layers.Dense):
                fan_in, gain = shape[0], 1.0
            else:
                fan_in, gain = shape[0] * shape[1] * shape[2], 2.0
            k.assign((rng.normal(size=shape) * (gain / fan_in) ** 0.5).astype(np.float32))


def constant_normalization(model: keras.Model, rng: np.random.Generator) -> None:
    """Give every un-adapted Normalization layer a fixed mean and variance as NumPy arrays: left
    as the layer's tensors (derived from its variables), tf2onnx makes them graph inputs."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.Normalization):
            shape = tuple(layer._broadcast_shape)
            layer.mean = rng.uniform(0.4, 0.6, shape).astype(np.float32)
            layer.variance = rng.uniform(0.05, 0.1, shape).astype(np.float32)


def randomize_batchnorm(model: keras.Model, rng: np.random.Generator) -> None:
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            for w in layer.weights:
                n = w.shape
                leaf = w.path.rsplit("/", 1)[-1]
                value = {"gamma": 0.5 + rng.random(n), "beta": 0.2 * rng.normal(size=n),
                         "moving_mean": 0.2 * rng.normal(size=n), "moving_variance": 0.5 + rng.random(n)}[leaf]
                w.assign(value.astype(np.float32))


def run_one(key: str) -> Entry:
    build, scale, notes = SPECS[key]
    entry = Entry(key=f"keras_{key}/tf2onnx/none", arch=f"keras_{key}",
                  framework=f"TensorFlow {tf.__version__} / Keras {keras.__version__}",
                  exporter=f"tf2onnx {tf2onnx.__version__} (from_function)", attention="none", notes=notes)
    t0 = time.time()
    keras.utils.set_random_seed(0)
    model = build()
    n_params = model.count_params()
    if 4 * n_params > MAX_FILE_BYTES:
        entry.status = "skipped_for_size"
        entry.error = (f"{n_params:,} parameters = {4 * n_params / 2**20:.1f} MiB in float32 at the smallest "
                       f"input (32x32) and 10 classes; the limit is {MAX_FILE_BYTES / 2**20:.0f} MiB per file.")
        print(f"  keras_{key}: skipped_for_size ({entry.error})", flush=True)
        return entry
    variance_preserving_init(model, np.random.default_rng(1))
    randomize_batchnorm(model, np.random.default_rng(0))
    constant_normalization(model, np.random.default_rng(2))
    x = (scale * np.random.default_rng(4).random((2, *SHAPE))).astype(np.float32)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        out = model(xt, training=False)
        target = class_target(out.numpy())
        # (tf.gather with batch_dims gives no gradient here; a one-hot product does)
        picked = tf.reduce_sum(out * tf.one_hot(target, out.shape[-1]))
    grad = tape.gradient(picked, xt).numpy()
    spec = (tf.TensorSpec((None, *SHAPE), tf.float32, name="input"),)

    @tf.function(input_signature=spec)
    def forward(inp):
        return model(inp, training=False)

    path = os.path.join(ZOO, f"keras_{key}_tf2onnx.onnx")
    try:
        tf2onnx.convert.from_function(forward, input_signature=spec, opset=OPSET, output_path=path)
    except Exception as exc:  # noqa: BLE001
        entry.status, entry.error = "export_failed", error_text(exc)
        print(f"  keras_{key}: export failed: {entry.error[:300]}", flush=True)
        return entry
    check_and_save(entry, path, {"input": x}, out.numpy(), target, grad, "input", "input",
                   {"layout": np.array("NHWC")})
    print(f"  keras_{key}: {entry.status} {entry.onnx_bytes / 1024:.0f} KiB diff "
          f"{entry.max_rel_diff_ort_framework:.1e} ties {entry.clip_near_ties} ({time.time() - t0:.0f} s) "
          f"{entry.error[:200]}", flush=True)
    return entry


def main(keys: list[str]) -> None:
    os.makedirs(ZOO, exist_ok=True)
    versions = {"tensorflow": tf.__version__, "keras": keras.__version__, "tf2onnx": tf2onnx.__version__,
                "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    for key in keys or list(SPECS):
        update_manifest([run_one(key)], versions)


if __name__ == "__main__":
    main(sys.argv[1:])
