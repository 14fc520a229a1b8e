"""The loaded model: a LayerGraph (canonized), its parameters on a device, and checked
forward/backward calls.

``Model`` is what ``onnxattr.load`` returns. Calling it runs the forward pass; ``propagate`` runs
forward and one backward pass from a seed at the target output. Inputs are checked here (dtype,
shape, NaN) and batches are cut into chunks where the graph fixes its batch size. On the GPU a
batch that runs out of memory is cut in halves and retried, down to one sample
(:class:`~onnxattr.errors.DeviceMemoryError` where even that does not fit).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

import numpy as np

from . import backend, engine
from .canonize import canonize
from .errors import DeviceMemoryError, InputError, OptionError
from .folding import MAX_FOLD_BYTES
from .graph import build, read_model

if TYPE_CHECKING:
    import os

    import onnx

    from .graph import LayerGraph
    from .ops.base import Array
    from .plan import Plan

R = TypeVar("R")

#: Methods that put many inputs through the model (Integrated Gradients, SmoothGrad, Occlusion)
#: send, by default, at most this many per pass, ...
MAX_PASS = 64
#: ... and on the CPU only as many as keep every activation of a pass within this size: glibc
#: serves larger blocks with fresh memory maps, faulted in page by page on every pass (measured:
#: Integrated Gradients on a ResNet-18 at 224x224 ran 20% slower at 64 inputs per pass than at 8).
PASS_BYTES = 32 << 20


class Model:
    """An ONNX model prepared for attribution. Create it with :func:`onnxattr.load`."""

    def __init__(self, graph: LayerGraph, proto: onnx.ModelProto, device: str = "cpu") -> None:
        self.graph = graph
        self.proto = proto
        self.device = backend.check_device(device)
        self.xp = backend.module_for(device)
        self.params = {
            k: backend.to_device(v, device) if v.dtype.kind == "f" else v
            for k, v in graph.constants.items()
        }
        #: on the GPU: the largest batch known to fit (None until one ran out of memory)
        self.max_chunk: int | None = None

    # ---- what the model takes and gives -------------------------------------------------
    @property
    def input_name(self) -> str:
        return self.graph.input.name

    @property
    def output_name(self) -> str:
        return self.graph.output

    @property
    def input_shape(self) -> tuple[int | None, ...] | None:
        """The declared input shape; None marks a symbolic dimension."""
        return self.graph.input.shape

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the graph fixes, if its first input dimension is a number."""
        shape = self.input_shape
        return shape[0] if shape and isinstance(shape[0], int) and shape[0] > 0 else None

    def pass_size(self, x: Array) -> int:
        """How many inputs like ``x``'s rows a pass takes when the user leaves it open: MAX_PASS on
        a GPU; on the CPU as many as keep the largest activation (by the inferred shapes, at
        least the input itself) within PASS_BYTES, between 1 and MAX_PASS."""
        if self.device == "cuda":
            return MAX_PASS
        sizes = [math.prod(s[1:]) for s in self.graph.shapes.values()
                 if len(s) > 1 and all(isinstance(d, int) for d in s[1:])]
        largest = max(sizes + [math.prod(x.shape[1:])]) * x.itemsize
        return max(1, min(MAX_PASS, PASS_BYTES // max(largest, 1)))

    def __repr__(self) -> str:
        return (
            f"Model(input={self.input_name!r} {self.input_shape}, output={self.output_name!r}, "
            f"{len(self.graph.nodes)} nodes, device={self.device!r})"
        )

    # ---- checked entry points -----------------------------------------------------------
    def check_input(self, x: Any, what: str = "x") -> np.ndarray:
        """``x`` as a float32 batch of the model's input shape; InputError otherwise."""
        if not isinstance(x, np.ndarray):
            if type(x).__module__.startswith("cupy"):
                x = backend.to_host(x)
            else:
                raise InputError(f"{what} must be a numpy array, got {type(x).__name__}")
        if x.dtype != np.float32:
            raise InputError(f"{what} must be float32, got {x.dtype}; convert with {what}.astype(np.float32)")
        shape = self.input_shape
        if shape is not None:
            if x.ndim != len(shape):
                raise InputError(
                    f"{what} has shape {x.shape} ({x.ndim} dims); input {self.input_name!r} "
                    f"expects {len(shape)} dims {_show(shape)}"
                )
            for i, (got, want) in enumerate(zip(x.shape[1:], shape[1:]), start=1):
                if isinstance(want, int) and want > 0 and got != want:
                    raise InputError(
                        f"{what} has shape {x.shape}; input {self.input_name!r} expects "
                        f"{_show(shape)} (dimension {i} is {got}, not {want})"
                    )
        if x.shape[0] == 0:
            raise InputError(f"{what} is an empty batch")
        if not np.isfinite(x).all():
            raise InputError(f"{what} contains NaN or infinite values")
        return x

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The output (logits) for a float32 batch, as a NumPy array."""
        x = self.check_input(x)
        return backend.to_host(self.forward(self.xp.asarray(x)))

    def forward(self, x: Array, fetch: Sequence[str] = ()) -> Array | dict[str, Array]:
        """Forward pass on a device batch: the output, or a dict of the tensors in ``fetch``."""
        parts = self.each_chunk(x, lambda c, start: engine.forward(self.graph, self.params, {self.input_name: c}, fetch=fetch).values)
        if not fetch:
            return _concat(self.xp, [p[self.output_name] for p in parts])
        return {t: _concat(self.xp, [p[t] for p in parts]) for t in fetch}

    def chunks(self, x: Array) -> list[Array]:
        """``x`` cut into batches the graph accepts (all of it unless the batch size is fixed)."""
        b = self.fixed_batch
        if b is None or x.shape[0] == b:
            return [x]
        if x.shape[0] % b:
            raise InputError(f"the model fixes the batch size to {b}; got a batch of {x.shape[0]}")
        return [x[i : i + b] for i in range(0, x.shape[0], b)]

    def each_chunk(self, x: Array, run: Callable[[Array, int], R], whole: bool = False) -> list[R]:
        """``run(chunk, start)`` over the chunks of ``x``; on the GPU, a chunk that runs out of
        memory is halved and retried (and the size that fits is remembered in ``max_chunk``).
        ``whole``: the batch must run as one (its rows are not independent)."""
        if self.device != "cuda":
            results = []
            start = 0
            for c in self.chunks(x):
                results.append(run(c, start))
                start += c.shape[0]
            return results
        fixed = self.fixed_batch
        n = x.shape[0]
        if fixed is not None and n % fixed:
            raise InputError(f"the model fixes the batch size to {fixed}; got a batch of {n}")
        size = fixed or (n if whole else min(n, self.max_chunk or n))
        advice = self._memory_advice if not whole else (
            lambda m, why: f"a batch of {m} that must run as one (input and reference stacked) "
            f"does not fit in GPU memory ({why}); pass fewer samples at a time")
        results, size = split_on_oom(
            lambda a, b: run(x[a:b], a), n, size, fixed is not None or whole,
            backend.is_out_of_memory, backend.release_memory, advice,
        )
        if size < n and fixed is None:
            self.max_chunk = size
        return results

    def _memory_advice(self, size: int, detail: str) -> str:
        shape = tuple(self.input_shape[1:]) if self.input_shape else "?"
        what = (f"a batch of {size} (the batch size the model fixes; export it with a dynamic batch "
                f"axis to run smaller ones)" if self.fixed_batch else f"one sample of input {self.input_name!r}")
        report = backend.memory_report()
        return (f"{what} does not fit in GPU memory ({detail}){'; ' + report if report else ''}. "
                f"Free GPU memory (other processes, CuPy's pool limit), use smaller inputs, or "
                f"device='cpu'. Declared input shape: {shape}")

    def check_target(self, target: Any, n: int) -> np.ndarray | None:
        """``target`` as one int per sample (None stays None: the argmax, once known).

        The class range is checked here where shape inference knows the output size, and
        against the actual output in :meth:`resolve_target` otherwise."""
        if target is None:
            return None
        t = np.asarray(target)
        if t.dtype.kind not in "iu" and not (t.dtype.kind == "f" and t.size and np.all(t == np.round(t))):
            raise InputError(f"target must be an int or one int per sample, got {target!r}")
        t = np.broadcast_to(t.astype(np.int64), (n,)) if t.ndim == 0 else t.astype(np.int64)
        if t.shape != (n,):
            raise InputError(f"target has {t.size} entries for a batch of {n}")
        classes = self.n_classes
        if classes is not None:
            _check_range(t, classes, self.output_name)
        return t

    @property
    def n_classes(self) -> int | None:
        """The number of entries per sample of the explained output, where shape inference knows it."""
        shape = self.graph.shapes.get(self.output_name)
        if shape is None or not all(isinstance(d, int) and d > 0 for d in shape[1:]):
            return None
        return int(np.prod(shape[1:]))

    def resolve_target(self, target: np.ndarray | None, out: Array) -> np.ndarray:
        """The per-sample target for an output batch: the given one (range-checked) or the argmax."""
        flat = out.reshape(out.shape[0], -1)
        if target is None:
            return backend.to_host(flat.argmax(axis=1)).astype(np.int64)
        _check_range(target, flat.shape[1], self.output_name)
        return target

    # ---- forward + backward -------------------------------------------------------------
    def propagate(
        self,
        feeds: Array,
        target: np.ndarray | None,
        plan: Plan,
        observer: engine.Observer | None = None,
        fetch: Sequence[str] = (),
    ) -> dict[str, Array]:
        """One forward and one backward pass of ``plan`` on a device batch.

        Args:
            feeds: the input batch, on the model's device.
            target: one target per sample (None: each sample's argmax); what a callable seed
                gets, resolved against the output. Ignored where the seed is an array.
            plan: the rules, the seed and times_input (:class:`onnxattr.plan.Plan`).
            observer: sees every node's incoming and outgoing relevance.
            fetch: tensors whose relevance is returned too.

        Returns the relevance at the input under the input's name (times the input where
        ``plan.times_input``; zeros where none reached it), plus that of each tensor in ``fetch``
        that relevance reached. The batch is cut as :meth:`each_chunk` cuts it (on the GPU, in
        halves where it runs out of memory), except that a plan with a stacked rule runs as one.
        """

        def run(c: Array, start: int) -> dict[str, Array]:
            tape = engine.forward(self.graph, self.params, {self.input_name: c}, record=True, rules=plan.rules)
            out = tape.values[self.output_name]
            if callable(plan.seed):
                t = None if target is None else target[start : start + c.shape[0]]
                seed = plan.seed(out, self.resolve_target(t, out))
            else:
                seed = plan.seed[start : start + c.shape[0]]
                if seed.shape != out.shape:
                    raise InputError(f"the seed has shape {tuple(seed.shape)} for output {self.output_name!r} "
                                     f"of shape {tuple(out.shape)}")
            grads = engine.backward(self.graph, tape, seed, observer, fetch)
            g = grads[self.input_name]
            g = self.xp.zeros_like(c) if g is None else g
            grads[self.input_name] = g * c if plan.times_input else g
            return grads

        results = self.each_chunk(feeds, run, self.device == "cuda" and plan.stacked)
        return {k: _concat(self.xp, [r[k] for r in results]) for k in results[0]}


def load(
    model: str | os.PathLike | onnx.ModelProto,
    device: str = "cpu",
    input_name: str | None = None,
    output_name: str | None = None,
    *,
    base_dir: str | os.PathLike | None = None,
    max_fold_bytes: int = MAX_FOLD_BYTES,
) -> Model:
    """Read an ONNX model (a path or a ModelProto) and prepare it for attribution.

    A model is treated as untrusted input: what onnxruntime would refuse is refused here, naming
    the node, and nothing the file says can make ``load`` read outside the model's folder or
    allocate without bound.

    Args:
        model: path to a ``.onnx`` file (external data is read from its folder, and only from
            there) or a ModelProto (left unchanged).
        device: ``"cpu"`` (NumPy) or ``"cuda"`` (CuPy).
        input_name: which graph input to attribute to, where the model has several.
        output_name: which tensor to explain; any graph output or intermediate tensor. By
            default the single graph output, with a final Softmax/LogSoftmax dropped so that the
            logits are explained.
        base_dir: for a ModelProto whose tensors keep their data in external files: the folder
            that holds them (locations may not leave it). Without it such a proto is refused.
        max_fold_bytes: the most bytes one constant folded at load may take (default 256 MiB);
            all of them together may take this plus four times the model's own tensors.

    Raises:
        ModelError: not an ONNX model, invalid (the node named), external data outside the
            folder, a folded constant over ``max_fold_bytes``, or no such input/output.
        UnsupportedOpError: a node whose op type, opset form or attributes are not implemented
            (named).
        OptionError: ``base_dir`` with a path, or ``max_fold_bytes`` not a positive int.
    """
    if isinstance(max_fold_bytes, bool) or not isinstance(max_fold_bytes, int) or max_fold_bytes <= 0:
        raise OptionError(f"max_fold_bytes must be a positive int (bytes), got {max_fold_bytes!r}")
    proto = read_model(model, base_dir=base_dir)
    graph = canonize(build(proto, input_name=input_name, output_name=output_name, max_fold_bytes=max_fold_bytes))
    return Model(graph, proto, device)


def split_on_oom(
    run: Callable[[int, int], R],
    n: int,
    size: int,
    fixed: bool,
    is_oom: Callable[[BaseException], bool],
    release: Callable[[], None],
    advice: Callable[[int, str], str],
) -> tuple[list[R], int]:
    """``run(start, stop)`` over [0, n) in pieces of ``size``; a piece that raises an
    out-of-memory error (``is_oom``) is halved and retried, after ``release`` frees cached memory.

    Returns the results in order and the piece size that fit. Where a piece of one (or, with
    ``fixed``, of the fixed size) does not fit, raises DeviceMemoryError with ``advice(size, why)``.
    """
    results: list[R] = []
    start = 0
    while start < n:
        stop = min(n, start + size)
        try:
            results.append(run(start, stop))
            start = stop
            continue
        except Exception as e:
            if not is_oom(e):
                raise
            why = f"{type(e).__name__}: {e}"
        # outside the except block, so that the failed try's arrays are freed with its traceback
        release()
        if fixed or stop - start == 1:
            raise DeviceMemoryError(advice(stop - start, why))
        size = (stop - start + 1) // 2
    return results, size


def _check_range(t: np.ndarray, classes: int, output: str) -> None:
    bad = (t < 0) | (t >= classes)
    if bad.any():
        raise InputError(f"target {t[bad].tolist()} out of range: output {output!r} has {classes} classes")


def _concat(xp: Any, parts: list[Array]) -> Array:
    return parts[0] if len(parts) == 1 else xp.concatenate(parts, axis=0)


def _show(shape: tuple) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"
