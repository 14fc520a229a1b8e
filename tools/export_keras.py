"""Train small channels-last Keras (TensorFlow backend) CNNs on the shapes data, export to ONNX
with tf2onnx, and write framework references.

    python tools/export_keras.py              # both
    python tools/export_keras.py cnn_softmax  # one of: cnn_softmax, gap_bn

Needs ``pip install tensorflow-cpu tf2onnx`` (versions in tools/requirements-export.txt).

* ``keras_cnn_softmax_op18``: Conv2D-ReLU-MaxPool x 2, Flatten, Dense-ReLU, Dense(4, softmax).
  Exported at opset 18 (the newest tf2onnx 1.17 knows). The graph ends in Softmax; the
  references are for the pre-softmax logits, computed in TensorFlow as penultimate features
  @ kernel + bias of the last Dense.
* ``keras_gap_bn_op15``: Conv2D-BatchNorm-ReLU-MaxPool, Conv2D-BatchNorm-ReLU-MaxPool,
  Conv2D-ReLU, GlobalAveragePooling2D, Dense(4) logits. Opset 15.

Both are exported through ``tf2onnx.convert.from_function`` on a ``tf.function`` with a
(None, 32, 32, 3) float32 input signature (dynamic batch), input name ``input``, NHWC layout;
tf2onnx converts the NHWC convolutions to NCHW Convs with one Transpose at the input (and one
back before Flatten), Keras' Flatten to a Reshape whose shape is built at run time
(Shape/Gather/Cast/Slice/Concat/Cast), and Dense to MatMul + Add. The output is named
``Identity:0`` and the batch dimension ``unk__NN`` (tf2onnx's names).
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
import tf2onnx  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_refs import MODELS, check_and_save, graph_summary, splits  # noqa: E402


def cnn_softmax():
    inp = keras.Input((32, 32, 3), name="input")
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(32, activation="relu")(h)
    out = keras.layers.Dense(4, activation="softmax", name="probabilities")(h)
    return keras.Model(inp, out)


def gap_bn():
    inp = keras.Input((32, 32, 3), name="input")
    h = inp
    for ch in (16, 32):
        h = keras.layers.Conv2D(ch, 3, padding="same", use_bias=False)(h)
        h = keras.layers.BatchNormalization()(h)
        h = keras.layers.ReLU()(h)
        h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(4, name="logits")(h)
    return keras.Model(inp, out)


SPECS = {
    # key: (file name, builder, opset, epochs, lr, softmax at the end, notes)
    "cnn_softmax": ("keras_cnn_softmax_op18", cnn_softmax, 18, 12, 3e-3, True,
                    "Keras CNN, channels-last: 3 x (Conv2D 3x3-ReLU-MaxPool) 16/32/32 ch, Flatten, "
                    "Dense 512-32 ReLU, Dense 32-4 with softmax activation: the graph ends in Softmax "
                    "(output = probabilities; references are the pre-softmax logits). tf2onnx: one "
                    "Transpose NHWC->NCHW at the input and one back to NHWC before Flatten; Flatten's "
                    "target shape is built at run time (Shape -> Gather (NCHW->NHWC order) -> Cast "
                    "int32 -> Slice -> Concat -> Cast int64 -> Reshape); Dense = MatMul + Add; output "
                    "named `Identity:0`, batch dim `unk__NN`."),
    "gap_bn": ("keras_gap_bn_op15", gap_bn, 15, 18, 3e-3, False,
               "Keras CNN, channels-last: 2 x (Conv2D-BatchNorm-ReLU-MaxPool) 16/32 ch, Conv2D 32 "
               "ch-ReLU, GlobalAveragePooling2D, Dense 32-4 logits. tf2onnx folds the inference-mode "
               "BatchNorms into the Conv weights/biases (no BatchNormalization node); one Transpose "
               "at the input only; GlobalAveragePool + Squeeze (axes as input); Dense = MatMul + Add; "
               "output named `Identity:0`."),
}


def logits_fn(model, softmax_end):
    """Pre-softmax logits as a function of the input."""
    if not softmax_end:
        return lambda x: model(x, training=False)
    last = model.layers[-1]
    penult = keras.Model(model.inputs, model.layers[-2].output)
    return lambda x: tf.matmul(penult(x, training=False), last.kernel) + last.bias


def predict(fn, x, batch=500):
    return np.concatenate([fn(tf.constant(x[i:i + batch])).numpy() for i in range(0, len(x), batch)])


def main(keys):
    os.makedirs(MODELS, exist_ok=True)
    (xtr, ytr), (xte, yte), (xref, yref, mref) = splits("NHWC")
    for key in keys:
        name, build, opset, epochs, lr, softmax_end, notes = SPECS[key]
        print(f"== {name}", flush=True)
        keras.utils.set_random_seed(0)
        tf.config.experimental.enable_op_determinism()
        model = build()
        steps = epochs * ((len(xtr) + 63) // 64)
        sched = keras.optimizers.schedules.CosineDecay(lr / 10, steps, warmup_target=lr,
                                                       warmup_steps=steps // 5)
        model.compile(keras.optimizers.Adam(sched),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=not softmax_end),
                      metrics=["accuracy"])
        t0 = time.time()
        model.fit(xtr, ytr, batch_size=64, epochs=epochs, shuffle=True, verbose=2)
        print(f"  trained in {time.time() - t0:.0f} s", flush=True)

        spec = (tf.TensorSpec((None, 32, 32, 3), tf.float32, name="input"),)

        @tf.function(input_signature=spec)
        def forward(x):
            return model(x, training=False)

        path = os.path.join(MODELS, name + ".onnx")
        tf2onnx.convert.from_function(forward, input_signature=spec, opset=opset, output_path=path)
        summary = graph_summary(path)
        if softmax_end and summary["last_op"] != "Softmax":
            raise SystemExit(f"FAIL {name}: graph does not end in Softmax: {summary['ops']}")

        fn = logits_fn(model, softmax_end)
        # the pre-softmax function really is what the model computes before its softmax
        np.testing.assert_allclose(tf.nn.softmax(fn(xref)).numpy() if softmax_end else fn(xref).numpy(),
                                   model(xref, training=False).numpy(), rtol=1e-5, atol=1e-6)
        x = tf.constant(xref)
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = fn(x)
            target = tf.argmax(logits, axis=1)
            picked = tf.reduce_sum(tf.gather(logits, target, axis=1, batch_dims=1))
        grad = tape.gradient(picked, x).numpy()
        check_and_save(name, framework=f"TensorFlow {tf.__version__} / Keras {keras.__version__}",
                       exporter=f"tf2onnx {tf2onnx.__version__} (from_function)", layout="NHWC",
                       x_ref=xref, y_ref=yref, mask_ref=mref, logits=logits.numpy(), gradient=grad,
                       x_test=xte, y_test=yte, framework_test_logits=predict(fn, xte),
                       command=f"python tools/export_keras.py {key}", notes=notes)


if __name__ == "__main__":
    main(sys.argv[1:] or list(SPECS))
