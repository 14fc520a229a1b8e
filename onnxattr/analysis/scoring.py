"""What the perturbation metrics perturb and how they score it: the batch at the attributed
tensor with the inputs held fixed (:class:`Batch`), its features, and the target score of many
perturbed copies (:class:`Scorer`), through our engine or through onnxruntime.

For a model attributed at a tensor inside the graph (``wrt=``, e.g. a text model's word
embeddings) the perturbed values are that tensor's, and onnxruntime runs a copy of the graph
where the tensor is made an input beside the original inputs (:func:`wrt_as_input`), so that
token ids and attention masks are fed as they are.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import onnx
from onnx import helper

from .. import backend, targets
from ..errors import InputError, OptionError
from ..layout import channel_axis, check_layout
from ..model import Model

RUNTIMES = ("onnxattr", "onnxruntime")
OUTPUTS = ("auto", "probability", "sigmoid", "logit")
FEATURES = ("scalar", "pixel", "token")


def quantity_for(model: Model, output: str = "auto") -> str:
    """The score a metric follows: ``output`` itself, or for "auto" the bounded quantity of the
    model's class output (Petsiuk et al. 2018): "probability" (softmax of the target over the
    classes) where the explained output is the model's output (or its logits before a dropped
    Softmax) with one class axis of 2 or more entries, "sigmoid" where it has one entry; else
    (an intermediate tensor, several non-unit axes such as a causal LM's (T, V), an unknown
    shape) "logit", the raw value."""
    if output not in OUTPUTS:
        raise OptionError(f"unknown output {output!r}; choose one of {OUTPUTS}")
    if output != "auto":
        return output
    g = model.graph
    is_model_output = g.dropped_softmax is not None or g.output in {o.name for o in model.proto.graph.output}
    shape = g.shapes.get(g.output)
    if not is_model_output or shape is None or not all(isinstance(d, int) and d > 0 for d in shape[1:]):
        return "logit"
    axes = [d for d in shape[1:] if d != 1]
    return "sigmoid" if not axes else ("probability" if len(axes) == 1 else "logit")


@dataclass
class Batch:
    """A checked batch as the metrics perturb it: ``x`` the values (host, float32) of the
    attributed tensor (``model.input_name``: the graph input, or the ``wrt`` tensor), and
    ``fixed`` the other inputs (host), held at their values row by row."""

    x: np.ndarray
    fixed: dict[str, np.ndarray]

    def repeat(self, rows: list[int], k: int) -> dict[str, np.ndarray]:
        """The fixed inputs of ``rows``, each row repeated ``k`` times in a row (the layout of
        k perturbed copies per sample)."""
        return {name: np.repeat(v[rows], k, axis=0) for name, v in self.fixed.items()}


def batch_of(model: Model, x: Any) -> Batch:
    """``x`` (an array for a single-input model, or a dict {input name: array}) checked, and the
    attributed tensor's values computed where it lies inside the graph."""
    feeds = model.check_feeds(x)
    name = model.input_name
    fixed = {k: v for k, v in feeds.items() if k != name}
    if model.graph.head is None and name in feeds:
        return Batch(feeds[name], fixed)
    return Batch(np.asarray(backend.to_host(model.at_wrt(feeds)[name]), dtype=np.float32), fixed)


def check_batch(model: Model, x: Any, attr: np.ndarray) -> tuple[Batch, np.ndarray]:
    """``x`` checked against the model (:func:`batch_of`), and ``attr`` of the attributed
    tensor's shape."""
    b = batch_of(model, x)
    attr = backend.to_host(attr)
    if attr.shape != b.x.shape:
        raise InputError(f"attr has shape {attr.shape}, the attributed tensor {model.input_name!r} has shape "
                         f"{b.x.shape}; they must match")
    if attr.dtype.kind not in "fiu" or not np.isfinite(attr).all():
        raise InputError("attr must be a finite numeric array")
    return b, attr


def baseline_for(model: Model, b: Batch, baseline: Any, baseline_token: int | None = None) -> np.ndarray:
    """The baseline as a float32 array of the attributed tensor's shape: a number, or an array
    that broadcasts; or, with ``baseline_token``, the tensor recomputed with every token id set
    to that token (for ``wrt="embeddings"``: that token's embedding at every position)."""
    if baseline_token is not None:
        if not isinstance(baseline, (int, float)) or baseline != 0:
            raise OptionError("give baseline or baseline_token, not both")
        if not isinstance(baseline_token, (int, np.integer)) or isinstance(baseline_token, bool):
            raise OptionError(f"baseline_token must be a token id (int), got {baseline_token!r}")
        return np.asarray(backend.to_host(model.token_baseline(b.fixed, int(baseline_token))), dtype=np.float32)
    base = backend.to_host(baseline)
    if base.dtype.kind not in "fiu":
        raise InputError(f"baseline must be a number or a numeric array, got dtype {base.dtype}")
    base = base.astype(np.float32)
    try:
        base = np.broadcast_to(base, b.x.shape)
    except ValueError:
        raise InputError(f"baseline of shape {base.shape} does not broadcast to the input's {b.x.shape}") from None
    if not np.isfinite(base).all():
        raise InputError("baseline contains NaN or infinite values")
    return base


# ---- features ------------------------------------------------------------------------------
@dataclass
class Features:
    """The features of a batch: their relevance (N, F) and how a (B, F) mask covers the input."""

    relevance: np.ndarray
    shape: tuple[int, ...]
    expand: Callable[[np.ndarray], np.ndarray]

    @property
    def count(self) -> int:
        return self.relevance.shape[1]


def features_of(x: np.ndarray, attr: np.ndarray, features: str = "scalar", layout: str | None = None) -> Features:
    """Per-feature relevance and the mask expander for ``features``: "scalar" (every scalar),
    "pixel" (an image's channels together, by ``layout``) or "token" (a (B, T, ...) tensor's
    positions, the trailing axes together: a token's relevance is the sum over its embedding)."""
    if features not in FEATURES:
        raise OptionError(f"unknown features {features!r}; choose one of {FEATURES}")
    n, shape = x.shape[0], tuple(x.shape[1:])
    a = np.asarray(attr, dtype=np.float64)
    if features == "scalar":
        return Features(a.reshape(n, -1), shape, lambda m: m.reshape((len(m),) + shape))
    if features == "token":
        if len(shape) < 2:
            raise OptionError(f"features='token' needs a (B, T, H) tensor; the attributed tensor has shape {x.shape}")
        tail = (1,) * (len(shape) - 1)
        return Features(a.reshape(n, shape[0], -1).sum(axis=2), shape,
                        lambda m: np.broadcast_to(m.reshape((len(m), shape[0]) + tail), (len(m),) + shape))
    lay = check_layout(layout, x.shape)
    ax = channel_axis(lay)
    spatial = tuple(d for i, d in enumerate(shape, start=1) if i != ax)

    def expand(m: np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.expand_dims(m.reshape((len(m),) + spatial), ax), (len(m),) + shape)

    return Features(a.sum(axis=ax).reshape(n, -1), shape, expand)


# ---- scoring ---------------------------------------------------------------------------------
class Scorer:
    """The target score f_t of many inputs, evaluated ``batch_size`` rows at a time: the raw
    value of the explained output ("logit"), the softmax probability ("probability": over the
    flattened output of each row, or over the last axis at the target's position for (position,
    index) targets), or the sigmoid of the raw value ("sigmoid"); "auto" chooses with
    :func:`quantity_for`."""

    def __init__(self, model: Model, runtime: str = "onnxattr", output: str = "logit",
                 batch_size: int = 256) -> None:
        if runtime not in RUNTIMES:
            raise OptionError(f"unknown runtime {runtime!r}; choose one of {RUNTIMES}")
        self.output = quantity_for(model, output)
        positive_int(batch_size, "batch_size")
        self.model = model
        fixed = model.fixed_batch
        self.fixed = fixed or 1
        self.batch_size = max(self.fixed, batch_size - batch_size % self.fixed)
        #: the shape of one row of the output, once a pass has run
        self.row_shape: tuple[int, ...] | None = None
        self.run: Callable[[np.ndarray, dict[str, np.ndarray]], np.ndarray]
        name = model.input_name
        if runtime == "onnxruntime":
            session, step = ort_session(model), fixed or batch_size  # a fixed batch size is fed exactly
            self.run = lambda b, f: np.concatenate([
                np.asarray(session.run([model.output_name], {name: b[i : i + step],
                                                             **{k: v[i : i + step] for k, v in f.items()}})[0])
                for i in range(0, len(b), step)])
        else:
            xp = model.xp
            self.run = lambda b, f: backend.to_host(model.forward(
                {**{k: xp.asarray(v) if v.dtype.kind == "f" else v for k, v in f.items()}, name: xp.asarray(b)}))

    def outputs(self, inputs: np.ndarray, fixed: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """The model's output for each row of ``inputs`` (the attributed tensor's values; ``fixed``:
        the other inputs, one row per row): float64 (B, ...)."""
        fixed = fixed or {}
        parts = []
        for i in range(0, len(inputs), self.batch_size):
            chunk = np.ascontiguousarray(inputs[i : i + self.batch_size], dtype=np.float32)
            f = {k: v[i : i + self.batch_size] for k, v in fixed.items()}
            m = len(chunk)
            pad = -m % self.fixed  # a graph with a fixed batch size gets whole batches
            if pad:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
                f = {k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)]) for k, v in f.items()}
            parts.append(self.run(chunk, f)[:m].astype(np.float64))
        out = np.concatenate(parts)
        self.row_shape = tuple(out.shape[1:])
        return out

    def logits(self, inputs: np.ndarray, fixed: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """The model's output for each row of ``inputs``, flattened per row: float64 (B, K)."""
        out = self.outputs(inputs, fixed)
        return out.reshape(len(out), -1)

    def __call__(self, inputs: np.ndarray, target: np.ndarray, fixed: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """f_t of each row of ``inputs`` at its ``target`` ((B,) or (B, 2)); float64 (B,)."""
        return self.pick(self.outputs(inputs, fixed), target)

    def pick(self, out: np.ndarray, target: np.ndarray) -> np.ndarray:
        """Each row's score at its target, from the rows' outputs (B, ...) or their flattening."""
        target = np.asarray(target)
        if target.ndim == 1:
            out = out.reshape(len(out), -1)
        elif out.ndim == 2 and self.row_shape is not None and len(self.row_shape) == 2:
            out = out.reshape((len(out),) + self.row_shape)
        if self.output == "probability" and (out.shape[-1] if target.ndim == 2 else out[0].size) < 2:
            raise OptionError(f"output='probability' needs an output with 2 or more classes; "
                              f"{self.model.output_name!r} has 1: use output='logit'")
        if self.output == "logit":
            return np.asarray(targets.values_at(out, target), dtype=np.float64)
        if self.output == "sigmoid":
            return 1.0 / (1.0 + np.exp(-np.asarray(targets.values_at(out, target), dtype=np.float64)))
        e = np.exp(out - out.max(axis=-1, keepdims=True))
        return np.asarray(targets.values_at(e / e.sum(axis=-1, keepdims=True), target), dtype=np.float64)


def targets_for(model: Model, b: Batch, target: Any, scorer: Scorer) -> np.ndarray:
    """One target per sample ((B,) ints, or (B, 2) (position, index) pairs for a (B, T, V)
    output): the given one (checked) or the argmax of the model at the batch (on a (B, T, V)
    output, at the last position the attention mask keeps)."""
    return model.resolve_target(model.check_target(target, b.x.shape[0]), scorer.outputs(b.x, b.fixed), b.fixed)


def positive_int(v: Any, name: str) -> int:
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
        raise OptionError(f"{name} must be a positive int, got {v!r}")
    return int(v)


# ---- onnxruntime ---------------------------------------------------------------------------
def wrt_as_input(proto: onnx.ModelProto, name: str, elem_type: int, shape: tuple[int | None, ...] | None) -> onnx.ModelProto:
    """A copy of ``proto`` where the tensor ``name`` is a graph input beside the original inputs:
    the node that computed it writes to a renamed, unread tensor instead (so that it still has
    one producer), and every reader reads the new input."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    g = out.graph
    if name in {i.name for i in g.input}:
        return out
    for node in g.node:
        for k, o in enumerate(node.output):
            if o == name:
                node.output[k] = f"{name}::computed"
    dims = None if shape is None else [d if isinstance(d, int) else f"{name}_dim{k}" for k, d in enumerate(shape)]
    kept = [v for v in g.value_info if v.name != name]
    del g.value_info[:]
    g.value_info.extend(kept)
    g.input.append(helper.make_tensor_value_info(name, elem_type, dims))
    return out


def ort_session(model: Model) -> Any:
    """An onnxruntime session of ``model.proto`` that returns ``model.output_name`` (added as a
    graph output of a copy where it is an intermediate tensor, e.g. the logits before a final
    Softmax) and takes ``model.input_name`` as an input (:func:`wrt_as_input` where it is a
    tensor inside the graph) beside the original inputs. CUDA where the model is on the GPU and
    onnxruntime-gpu is installed."""
    import onnxruntime as ort

    info = model.graph.input
    proto = wrt_as_input(model.proto, model.input_name, helper.np_dtype_to_tensor_dtype(np.dtype(info.dtype)),
                         info.shape)
    g = proto.graph
    name = model.output_name
    if name not in [o.name for o in g.output]:
        known = next((v for v in g.value_info if v.name == name), None)
        g.output.append(known if known is not None else helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    providers = ["CPUExecutionProvider"]
    if model.device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(proto.SerializeToString(), providers=providers)
