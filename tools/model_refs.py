"""Shared by the export scripts (NumPy, onnx and onnxruntime only; no framework import).

* ``splits(layout)``: the fixed training, held-out test and reference sets of the shapes data;
* ``check_and_save(...)``: runs the exported ONNX model in onnxruntime, compares it with the
  framework's forward pass (fails loudly on a mismatch), writes ``models/NAME.npz`` with the
  framework references and records the model in ``models/manifest.json``;
* ``write_readme()``: regenerates ``models/README.md`` from the manifest.

The reference file ``models/NAME.npz`` holds

    input             float32 (8, ...) test inputs in the model's own layout (2 per class)
    target            int64 (8,) the framework's predicted class
    logits            float32 (8, 4) framework forward, pre-softmax when the graph ends in Softmax
    gradient          float32 like input: d logits[i, target[i]] / d input[i]
    input_x_gradient  float32 like input: gradient * input
    mask              bool (8, 32, 32) ground-truth object pixels
    label             int64 (8,) true class
    layout            0-d str array, "NCHW" or "NHWC"
    ends_in_softmax   0-d bool: the ONNX graph's last node is Softmax (its output = softmax(logits))
    accuracy          0-d float: accuracy on the held-out test set (onnxruntime forward)
"""
from __future__ import annotations

import collections
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODELS = os.path.join(ROOT, "models")
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from shapes_data import make_shapes  # noqa: E402

N_TRAIN, N_TEST, N_REF = 8000, 2000, 8
SEED_TRAIN, SEED_TEST, SEED_REF = 0, 1, 2


def splits(layout: str):
    """((x, y) train, (x, y) test, (x, y, mask) reference); disjoint seeds, fixed sizes."""
    xtr, ytr, _ = make_shapes(N_TRAIN, SEED_TRAIN, layout)
    xte, yte, _ = make_shapes(N_TEST, SEED_TEST, layout)
    xref, yref, mref = make_shapes(N_REF, SEED_REF, layout)
    return (xtr, ytr), (xte, yte), (xref, yref, mref)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def session(path: str) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def ort_forward(path: str, x: np.ndarray, batch: int = 500) -> np.ndarray:
    sess = session(path)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + batch]})[0]
                           for i in range(0, len(x), batch)])


def graph_summary(path: str) -> dict:
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    g = m.graph
    inits = {t.name for t in g.initializer}

    def dims(v):
        return [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?")
                for d in v.type.tensor_type.shape.dim]

    opset = max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    ops = collections.Counter(n.op_type for n in g.node)
    n_params = int(sum(np.prod(t.dims) for t in g.initializer if t.data_type == onnx.TensorProto.FLOAT))
    return {
        "opset": int(opset),
        "ir_version": int(m.ir_version),
        "producer": f"{m.producer_name} {m.producer_version}".strip(),
        "inputs": [{"name": i.name, "shape": dims(i)} for i in g.input if i.name not in inits],
        "outputs": [{"name": o.name, "shape": dims(o)} for o in g.output],
        "ops": dict(sorted(ops.items())),
        "last_op": g.node[-1].op_type,
        "n_nodes": len(g.node),
        "n_float_params": n_params,
    }


def check_and_save(name: str, *, framework: str, exporter: str, layout: str,
                   x_ref: np.ndarray, y_ref: np.ndarray, mask_ref: np.ndarray,
                   logits: np.ndarray, gradient: np.ndarray, x_test: np.ndarray,
                   y_test: np.ndarray, framework_test_logits: np.ndarray,
                   command: str, notes: str = "", extra: dict | None = None) -> dict:
    """Check ``models/NAME.onnx`` against the framework and write ``models/NAME.npz``.

    ``logits`` / ``framework_test_logits`` are the framework's pre-softmax outputs; if the
    graph's last op is Softmax the onnxruntime output is compared with their softmax.
    """
    path = os.path.join(MODELS, name + ".onnx")
    info = graph_summary(path)
    ends_in_softmax = info["last_op"] == "Softmax"
    # batch dimension must be dynamic
    assert isinstance(info["inputs"][0]["shape"][0], str), f"{name}: batch axis not dynamic: {info}"
    assert len(info["inputs"]) == 1 and len(info["outputs"]) == 1, info

    def compare(fw_logits, onnx_out, what):
        ref = softmax(fw_logits) if ends_in_softmax else fw_logits
        diff = float(np.abs(onnx_out - ref).max())
        tol = 1e-4 * max(1.0, float(np.abs(ref).max()))
        if not diff <= tol:
            raise SystemExit(f"FAIL {name}: onnxruntime vs {framework} on {what}: "
                             f"max abs diff {diff:.3g} > {tol:.3g}")
        return diff

    logits = np.asarray(logits, np.float32)
    out_ref = ort_forward(path, x_ref)
    diff_ref = compare(logits, out_ref, "reference inputs")
    out_test = ort_forward(path, x_test)
    diff_test = compare(np.asarray(framework_test_logits, np.float32), out_test, "test set")
    # batch sizes 1 and 3 too (dynamic batch really works)
    for b in (1, 3):
        compare(logits[:b], ort_forward(path, x_ref[:b]), f"batch {b}")

    acc = float((out_test.argmax(1) == y_test).mean())
    target = logits.argmax(1).astype(np.int64)
    gradient = np.asarray(gradient, np.float32)
    assert gradient.shape == x_ref.shape and np.isfinite(gradient).all()
    assert np.abs(gradient).max() > 0, f"{name}: zero gradient"
    np.savez_compressed(
        os.path.join(MODELS, name + ".npz"),
        input=x_ref.astype(np.float32), target=target, logits=logits, gradient=gradient,
        input_x_gradient=(gradient * x_ref).astype(np.float32), mask=mask_ref.astype(bool),
        label=y_ref.astype(np.int64), layout=np.array(layout), ends_in_softmax=np.array(ends_in_softmax),
        accuracy=np.array(acc))

    info.update(framework=framework, exporter=exporter, layout=layout, accuracy=acc,
                n_test=int(len(y_test)), max_abs_diff_ref=diff_ref, max_abs_diff_test=diff_test,
                ends_in_softmax=ends_in_softmax, command=command, notes=notes,
                onnx_bytes=os.path.getsize(path),
                npz_bytes=os.path.getsize(os.path.join(MODELS, name + ".npz")))
    if extra:
        info.update(extra)
    record(name, info)
    print(f"{name}: opset {info['opset']}, {layout}, acc {acc:.4f}, "
          f"ort diff {diff_ref:.2g}/{diff_test:.2g}, last op {info['last_op']}, "
          f"{info['onnx_bytes'] / 1024:.0f} KiB, ops {info['ops']}")
    return info


def record(name: str, info: dict) -> None:
    """Set ``models/manifest.json``'s entry ``name`` to ``info`` and rewrite the README from it."""
    manifest_path = os.path.join(MODELS, "manifest.json")
    manifest = {}
    if os.path.exists(manifest_path):
        with open(manifest_path) as f:
            manifest = json.load(f)
    manifest[name] = info
    with open(manifest_path, "w") as f:
        json.dump(dict(sorted(manifest.items())), f, indent=1)
        f.write("\n")
    write_readme(manifest)


README_HEAD = """\
# Test models

Small models trained on the synthetic *shapes* data set (`tools/shapes_data.py`: one coloured
circle / square / triangle / cross on a textured, noisy 32x32 background, with the ground-truth
object mask), exported to ONNX by three frameworks, each with framework-computed references for
the attribution tests. Everything here is regenerated by the commands in the table (fixed seeds;
the training is CPU-only, single-threaded, a few minutes per model). Exact framework versions:
`tools/requirements-export.txt`. Opsets 11, 13, 15, 17, 18 and 23 (the newest jax2onnx writes
and onnxruntime 1.32 runs; tf2onnx 1.17 stops at 18).

The three frameworks do not need to share one environment (TensorFlow and JAX pull in many
packages); for example:

    python -m venv --system-site-packages /tmp/venv-torch && /tmp/venv-torch/bin/pip install torch==2.13.0
    python -m venv --system-site-packages /tmp/venv-tf && /tmp/venv-tf/bin/pip install tensorflow-cpu==2.21.0 tf2onnx==1.17.0
    python -m venv --system-site-packages /tmp/venv-jax && /tmp/venv-jax/bin/pip install jax==0.10.2 jaxlib==0.10.2 jax2onnx==0.17.1
    /tmp/venv-torch/bin/python tools/export_torch.py     # etc.

Each script adds its models to `manifest.json` and rewrites this file from it, so run them one at
a time.

Classes: 0 circle, 1 square, 2 triangle, 3 cross. Inputs are float32 in [0, 1], no normalisation.
Accuracy is onnxruntime's on 2000 held-out images (`make_shapes(2000, seed=1)`).

Two transformers: `torch_vit_op17`, a small ViT (a two-convolution stem, then transformers'
`ViTForImageClassification`) trained on the same shapes, and
`torch_text_order_op17`, a text transformer that takes token ids (`input_ids`, `attention_mask`,
int64) and was trained on a synthetic task whose deciding tokens are known: a sequence of
6-15 filler words holds the marker tokens `A` and `B` once each; class 1 when `A` comes before
`B`, else 0 (`tools/export_text.py`: `make_text(n, seed)`; accuracy on 2000 held-out sequences,
seed 1). Its vocabulary is `torch_text_order_op17.vocab.txt`, one token per line (line i = id i);
attribute it at its word-embedding output (`wrt="embeddings"`, the tensor named in the
reference's `wrt`). The PyTorch scripts run in the torch venv with transformers
(`tools/zoo/requirements.txt`).

Untrained real architectures (transformers, keras.applications, flax; every exporter) with their
references are in `tests/data/zoo/`, built by `tools/zoo/` (see `tools/zoo/README.md`).

"""

README_TAIL = """
## Reference files (`NAME.npz`)

| key | content |
| --- | --- |
| `input` | float32 (8, ...) inputs in the model's own layout (`make_shapes(8, seed=2)`, 2 per class) |
| `target` | int64 (8,) predicted class (argmax of `logits`) |
| `logits` | float32 (8, 4) the framework's forward, **pre-softmax** also for the graphs that end in Softmax |
| `gradient` | d `logits[i, target[i]]` / d `input[i]`, from the framework's autodiff (torch.autograd, tf.GradientTape, jax.grad) |
| `input_x_gradient` | `gradient * input` |
| `mask` | bool (8, 32, 32) object pixels |
| `label` | int64 (8,) true class |
| `layout` | 0-d str, `"NCHW"` or `"NHWC"` |
| `ends_in_softmax` | 0-d bool: the graph's last node is Softmax, so its output is `softmax(logits)` |
| `accuracy` | 0-d float, as in the table |

The text model's `torch_text_order_op17.npz` has one key per graph input instead of `input`:

| key | content |
| --- | --- |
| `input_ids`, `attention_mask` | int64 (8, 16) token ids and mask (`make_text(8, seed=2)`; `[PAD]` = 0 where the mask is 0) |
| `target` | int64 (8,) predicted class |
| `relevant` | bool (8, 16): the deciding tokens (the positions of `A` and `B`) |
| `label` | int64 (8,) true class |
| `logits` | float32 (8, 2) the framework's forward |
| `embeddings` | float32 (8, 16, 32) the word-embedding output (the Gather from the embedding table) |
| `gradient` | d `logits[i, target[i]]` / d `embeddings[i]`, torch.autograd (a forward hook on the embedding) |
| `input_x_gradient` | `gradient * embeddings` |
| `wrt` | 0-d str: the ONNX name of the word-embedding output |
| `layout` | `"tokens"` |
| `ends_in_softmax`, `accuracy` | as above |

Every script checks each exported graph in onnxruntime against the framework's forward
(reference inputs, the 2000 test images, batches of 1 and 3) and stops with an error when the
largest difference exceeds 1e-4 x max(1, max |logit|). `manifest.json` holds, per model, the
opset, input/output names and shapes, op counts, accuracy and the measured differences.

## Exporter quirks a consumer of these graphs meets

* Graphs ending in Softmax: `torch_cnn_softmax_op13` (output `probabilities`, Softmax axis=1) and
  `keras_cnn_softmax_op18` (output `Identity:0`, Softmax default axis=-1). Attribute the input of
  the Softmax (the logits); the `.npz` references are for those logits.
* tf2onnx names the output `Identity:0` and the batch dimension `unk__NN`, imports the
  `ai.onnx.ml` domain as well, and builds Flatten's shape at run time with Cast nodes (int64 ->
  int32 -> int64) around a Slice; it folds Keras BatchNorm into the Conv weights.
* jax2onnx uses `auto_pad` (`SAME_UPPER` on Conv, `VALID` on MaxPool) instead of explicit pads,
  writes IR version 10, and builds the flatten shape with Shape/Gather/Squeeze/Unsqueeze/Concat.
  (A bare `jax.lax.reduce_window` max pool on NHWC exports as a 4-D MaxPool on a 6-D tensor
  that onnxruntime rejects; the model uses `nnx.max_pool`, which exports as a 2-D MaxPool.)
* The TorchScript exporter deduplicates equal initializers through Identity nodes
  (`torch_resnet_bn_op17` has one, between two BatchNorm biases); with the default export
  (eval mode, constant folding) it fuses BatchNorm into the Convs (`torch_cnn_softmax_op13`),
  with `training=TrainingMode.PRESERVE, do_constant_folding=False` it keeps BatchNormalization
  nodes (`torch_resnet_bn_op17`).
* Channels-last models (Keras, JAX) take NHWC input and transpose to NCHW inside the graph; the
  references' `input` and `gradient` are NHWC for them.

## Samples

`samples/` holds one 32x32 RGB PNG per class (`0_circle.png` ... `3_cross.png`) and the same four
images as `samples/shapes_batch.npy` (float32 (4, 3, 32, 32), NCHW, values = PNG / 255), with
`shapes_labels.npy` and `shapes_masks.npy`. Regenerate: `python tools/shapes_data.py models/samples`.
For an NHWC model, transpose: `x.transpose(0, 2, 3, 1)`.
"""


def _size(n: int) -> str:
    return f"{n / 1024:.0f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MiB"


def write_readme(manifest: dict | None = None) -> None:
    if manifest is None:
        with open(os.path.join(MODELS, "manifest.json")) as f:
            manifest = json.load(f)
    rows = ["| model | framework | exporter | opset | input (layout) | output | accuracy | "
            ".onnx size | params | command |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, m in sorted(manifest.items(), key=lambda kv: (kv[1]["opset"], kv[0])):
        out = m["outputs"][0]
        inputs = ", ".join(f"`{i['name']}` [" + ", ".join(str(d) for d in i["shape"]) + "]" for i in m["inputs"])
        out_s = f"`{out['name']}`" + (" (Softmax)" if m["ends_in_softmax"] else " (logits)")
        rows.append(
            f"| `{name}.onnx` | {m['framework']} | {m['exporter']} | {m['opset']} | "
            f"{inputs} ({m['layout']}) | {out_s} | {100 * m['accuracy']:.1f}% | "
            f"{_size(m['onnx_bytes'])} | {m['n_float_params']:,} | `{m['command']}` |")
    notes = ["", "## Models", ""]
    for name, m in sorted(manifest.items(), key=lambda kv: (kv[1]["opset"], kv[0])):
        ops = ", ".join(f"{k} {v}" for k, v in m["ops"].items())
        notes.append(f"* `{name}`: {m['notes']} Ops: {ops}.")
    with open(os.path.join(MODELS, "README.md"), "w") as f:
        f.write(README_HEAD + "\n".join(rows) + "\n" + "\n".join(notes) + "\n" + README_TAIL)
