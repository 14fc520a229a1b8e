"""Shared by the zoo exporters (NumPy, onnx and onnxruntime only; no framework import).

* ``ZOO``: the output folder, ``tests/data/zoo``;
* ``Entry``: one manifest row, architecture x exporter x attention, with its status;
* ``check_and_save(...)``: runs an exported file in onnxruntime, compares it with the framework's
  output, writes the reference ``NAME.npz`` beside it and fills the entry;
* ``embedding_tensors(path, table, id_input)``: the Gather outputs that look up ``table`` by the
  integer input ``id_input`` (the word-embedding output);
* ``clip_near_ties(path, feeds)``: Clip (ReLU6) inputs within float32 rounding of a bound;
* ``update_manifest(entries)``: merges the rows into ``manifest.json`` under a file lock.

Reference file ``NAME.npz`` (batch 2):

    <graph input name>  one key per graph input, in the graph's dtype (pixel_values, input_ids, ...)
    onnxruntime         the first graph output, from onnxruntime
    framework           the same output from the framework
    target              int64 (B,) class per sample, or (B, 2) (position, index) for a (B, T, V) output:
                        the framework's argmax (at the last position whose attention_mask is 1)
    gradient            d output[target] / d wrt, per sample, from the framework's autodiff
    wrt                 0-d str: the float graph input the gradient is taken at, or, for text, the
                        ONNX tensor that is the word-embedding output ("" if none was identified)
    wrt_kind            0-d str: "input" or "embeddings"
    clip_near_ties      int64 (B,): Clip (ReLU6) inputs within 1e-6 x (the tensor's largest |value|
                        in that sample) of a bound, per sample (onnxruntime's values); > 0 means
                        float32 rounding may flip a ReLU6 gate
"""
from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import os
import traceback
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ZOO = os.path.join(ROOT, "tests", "data", "zoo")
MANIFEST = os.path.join(ZOO, "manifest.json")
MAX_FILE_BYTES = 3 * 1024 * 1024
FORWARD_RTOL = 1e-4
NEAR_TIE = 1e-6  # relative to the largest |value| of the Clip input in that sample


@dataclass
class Entry:
    """One manifest row. ``status``: ``ok`` (exported, onnxruntime runs it and agrees with the
    framework within ``FORWARD_RTOL``), ``ort_mismatch`` / ``ort_error`` (file kept, onnxruntime
    disagrees or cannot run it), ``export_failed`` (no file; ``error`` holds the message),
    ``unsupported`` (the framework refuses the combination, e.g. an attention implementation the
    architecture lacks) or ``skipped_for_size`` (over ``MAX_FILE_BYTES`` even at the smallest size)."""

    key: str
    arch: str
    framework: str
    exporter: str
    attention: str
    status: str = "export_failed"
    file: str = ""
    reference: str = ""
    error: str = ""
    opset: int = 0
    onnx_bytes: int = 0
    npz_bytes: int = 0
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    ops: dict = field(default_factory=dict)
    wrt: str = ""
    wrt_kind: str = ""
    max_rel_diff_ort_framework: float = float("nan")
    clip_near_ties: list = field(default_factory=list)
    notes: str = ""


def error_text(exc: BaseException, limit: int = 1500) -> str:
    """The exception's type and message, and the innermost frame, shortened for the manifest."""
    msg = f"{type(exc).__name__}: {exc}".strip()
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" [at {os.path.basename(tb[-1].filename)}:{tb[-1].lineno} {tb[-1].name}]" if tb else ""
    msg = " ".join(msg.split())
    return (msg[:limit] + " ...") if len(msg) > limit else msg + where


def session(path: str) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def graph_info(path: str) -> dict:
    m = onnx.load(path)
    g = m.graph
    inits = {t.name for t in g.initializer}

    def dims(v):
        return [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?")
                for d in v.type.tensor_type.shape.dim]

    def io(v):
        return {"name": v.name, "shape": dims(v),
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name}

    opset = max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=0)
    ops = collections.Counter(
        (n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}") for n in g.node)
    return {"opset": opset, "inputs": [io(v) for v in g.input if v.name not in inits],
            "outputs": [io(v) for v in g.output], "ops": dict(sorted(ops.items()))}


def _producers(g: onnx.GraphProto) -> dict:
    return {o: n for n in g.node for o in n.output}


def _comes_from_input(name: str, producers: dict, graph_inputs: set, depth: int = 8) -> bool:
    """``name`` is a graph input, or made from one through Cast/Unsqueeze/Reshape/Squeeze/Identity."""
    for _ in range(depth):
        if name in graph_inputs:
            return True
        node = producers.get(name)
        if node is None or node.op_type not in ("Cast", "Unsqueeze", "Reshape", "Squeeze", "Identity",
                                                "Flatten", "View"):
            return False
        name = node.input[0]
    return False


def embedding_tensors(path: str, table: np.ndarray, id_input: str) -> list[str]:
    """Outputs of the Gather nodes whose data is an initializer (or Constant) equal to ``table``
    and whose indices come from the graph input ``id_input``."""
    m = onnx.load(path)
    g = m.graph
    consts = {t.name: t for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = n.attribute[0].t
    producers = _producers(g)
    found = []
    for n in g.node:
        if n.op_type != "Gather" or n.input[0] not in consts:
            continue
        t = consts[n.input[0]]
        if tuple(t.dims) != table.shape:
            continue
        if not np.array_equal(onnx.numpy_helper.to_array(t), table):
            continue
        if _comes_from_input(n.input[1], producers, {id_input}):
            found.append(n.output[0])
    return found


def clip_near_ties(path: str, feeds: dict) -> np.ndarray:
    """Per sample, how many inputs of Clip nodes lie within ``NEAR_TIE`` x (that input's largest
    |value| in the sample) of the node's min or max (onnxruntime's values, the graph's bounds)."""
    m = onnx.load(path)
    g = m.graph
    consts = {t.name: onnx.numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = onnx.numpy_helper.to_array(n.attribute[0].t)
    clips = []
    for n in g.node:
        if n.op_type != "Clip":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        lo = attrs.get("min", consts.get(n.input[1]) if len(n.input) > 1 and n.input[1] else None)
        hi = attrs.get("max", consts.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None)
        clips.append((n.input[0], lo, hi))
    batch = len(next(iter(feeds.values())))
    if not clips:
        return np.zeros(batch, np.int64)
    names = sorted({c[0] for c in clips})
    existing = {o.name for o in g.output}
    for name in names:
        if name not in existing:
            g.output.append(onnx.helper.make_empty_tensor_value_info(name))
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    values = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    counts = np.zeros(batch, np.int64)
    for name, lo, hi in clips:
        v = values[name].reshape(batch, -1)
        tol = NEAR_TIE * np.abs(v).max(axis=1, keepdims=True)
        for bound in (lo, hi):
            if bound is not None:
                counts += (np.abs(v - np.float32(bound)) <= tol).sum(axis=1)
    return counts


def _max_rel(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6))


def check_and_save(entry: Entry, path: str, feeds: dict, framework_out: np.ndarray,
                   target: np.ndarray, gradient: np.ndarray, wrt: str, wrt_kind: str,
                   extra: dict | None = None) -> Entry:
    """Fill ``entry`` from the exported file at ``path``: graph info, onnxruntime's run on
    ``feeds`` against ``framework_out``, Clip near-ties; write ``NAME.npz`` beside it."""
    entry.file = os.path.relpath(path, ZOO)
    entry.onnx_bytes = os.path.getsize(path)
    info = graph_info(path)
    entry.opset, entry.inputs, entry.outputs, entry.ops = (
        info["opset"], info["inputs"], info["outputs"], info["ops"])
    entry.wrt, entry.wrt_kind = wrt, wrt_kind
    names = [i["name"] for i in info["inputs"]]
    missing = [n for n in names if n not in feeds]
    graph_feeds = {n: feeds[n] for n in names if n in feeds}
    ort_out = None
    try:
        if missing:
            raise ValueError(f"graph inputs {missing} have no reference values (have {sorted(feeds)})")
        ort_out = session(path).run(None, graph_feeds)[0]
        entry.max_rel_diff_ort_framework = _max_rel(ort_out, framework_out)
        entry.status = "ok" if entry.max_rel_diff_ort_framework <= FORWARD_RTOL else "ort_mismatch"
        ties = clip_near_ties(path, graph_feeds)
        entry.clip_near_ties = [int(c) for c in ties]
        if ties.any():
            entry.notes += (f" ReLU6 near-tie: {ties.tolist()} Clip inputs per sample lie within "
                            f"{NEAR_TIE} x max|input| of 0 or 6, so float32 rounding may flip those gates.")
    except Exception as exc:  # noqa: BLE001  (recorded in the manifest)
        entry.status = "ort_error"
        entry.error = error_text(exc)
    if entry.onnx_bytes > MAX_FILE_BYTES:
        entry.notes += f" over {MAX_FILE_BYTES} bytes."
    npz = os.path.splitext(path)[0] + ".npz"
    arrays = dict(graph_feeds)
    arrays.update(framework=np.asarray(framework_out, np.float32), target=np.asarray(target, np.int64),
                  gradient=np.asarray(gradient, np.float32), wrt=np.array(wrt), wrt_kind=np.array(wrt_kind),
                  clip_near_ties=np.array(entry.clip_near_ties or [0] * len(target), np.int64))
    if ort_out is not None:
        arrays["onnxruntime"] = ort_out
    arrays.update(extra or {})
    np.savez_compressed(npz, **arrays)
    entry.reference = os.path.relpath(npz, ZOO)
    entry.npz_bytes = os.path.getsize(npz)
    entry.notes = entry.notes.strip()
    return entry


def lm_target(logits: np.ndarray, attention_mask: np.ndarray | None) -> np.ndarray:
    """(B, 2) (position, index): the argmax at the last position whose mask is 1, else T-1."""
    b, t, _ = logits.shape
    if attention_mask is None:
        pos = np.full(b, t - 1)
    else:
        pos = np.array([np.flatnonzero(m)[-1] if m.any() else t - 1 for m in attention_mask])
    return np.stack([pos, logits[np.arange(b), pos].argmax(-1)], axis=1).astype(np.int64)


def class_target(logits: np.ndarray) -> np.ndarray:
    return logits.argmax(-1).astype(np.int64)


@contextlib.contextmanager
def _locked(directory: str):
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def update_manifest(entries: list[Entry], versions: dict) -> dict:
    """Merge ``entries`` (by key) and the producing script's ``versions`` into ``manifest.json``;
    recount the statuses and sizes."""
    os.makedirs(ZOO, exist_ok=True)
    with _locked(ZOO):
        data = {"entries": {}, "versions": {}}
        if os.path.exists(MANIFEST):
            with open(MANIFEST) as f:
                data = json.load(f)
        for e in entries:
            row = asdict(e)
            if row["max_rel_diff_ort_framework"] != row["max_rel_diff_ort_framework"]:
                row["max_rel_diff_ort_framework"] = None
            data["entries"][e.key] = row
        data["versions"].update(versions)
        rows = data["entries"].values()
        data["entries"] = dict(sorted(data["entries"].items()))
        data["counts"] = dict(sorted(collections.Counter(r["status"] for r in rows).items()))
        data["n_files"] = sum(1 for r in rows if r["file"])
        data["total_bytes"] = sum(r["onnx_bytes"] + r["npz_bytes"] for r in rows)
        with open(MANIFEST, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
    return data
