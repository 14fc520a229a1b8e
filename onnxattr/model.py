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
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, TypeVar

import numpy as np

from contextlib import nullcontext

from . import backend, engine, targets, threads
from .kernels import onnxruntime as ortk
from .canonize import canonize
from .compiled import program as compiled
from .errors import DeviceMemoryError, InputError, OptionError
from .feeds import check_feeds, n_rows, rows
from .folding import MAX_FOLD_BYTES
from .graph import build, read_model
from .wrt import embedding_candidates

if TYPE_CHECKING:
    import os

    import onnx

    from .graph import LayerGraph, TensorInfo
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

    def __init__(self, graph: LayerGraph, proto: onnx.ModelProto, device: str = "cpu",
                 kernels: str | None = None) -> None:
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
        #: the CPU's kernels for the heavy ops ("onnxruntime" or "numpy"); the GPU runs CuPy
        self.kernels = ortk.choose(kernels) if device == "cpu" else "cupy"
        if device == "cpu":
            ortk.use(self.kernels, graph.nodes + (graph.head.nodes if graph.head else []), self.params)
        self._programs = compiled.Programs(graph, self.params)

    # ---- what the model takes and gives -------------------------------------------------
    @property
    def input_name(self) -> str:
        """The tensor attributions are taken with respect to: the float graph input, or the
        ``wrt`` tensor inside the graph."""
        return self.graph.input.name

    wrt = input_name

    @property
    def inputs(self) -> list[TensorInfo]:
        """The graph inputs a caller may feed (a dict {name: array}, or one array where the graph
        reads one); ``graph.needed()`` are those it must."""
        return self.graph.inputs

    @property
    def output_name(self) -> str:
        return self.graph.output

    @property
    def input_shape(self) -> tuple[int | None, ...] | None:
        """The declared (inferred, for a ``wrt`` tensor) shape of ``input_name``; None marks a
        symbolic dimension."""
        return self.graph.input.shape

    @property
    def fixed_batch(self) -> int | None:
        """The batch size the graph fixes, if the first dimension of an input is a number."""
        needed = set(self.graph.needed())
        for shape in [self.input_shape] + [i.shape for i in self.inputs if i.name in needed]:
            if shape and isinstance(shape[0], int) and shape[0] > 0:
                return shape[0]
        return None

    @property
    def mask_name(self) -> str | None:
        """The attention-mask input (named ``attention_mask``, else the one integer or boolean
        (B, T) input whose name holds "mask"), for the targets of (B, T, V) outputs."""
        masks = [i.name for i in self.inputs if i.dtype.kind in "iub" and "mask" in i.name.lower()
                 and (i.shape is None or len(i.shape) == 2)]
        if "attention_mask" in masks:
            return "attention_mask"
        return masks[0] if len(masks) == 1 else None

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
        fed = self.graph.needed()
        source = "" if fed == [self.input_name] else f" from inputs {fed}"
        return (
            f"Model(input={self.input_name!r} {self.input_shape}{source}, output={self.output_name!r}, "
            f"{len(self.graph.nodes)} nodes, device={self.device!r})"
        )

    # ---- checked entry points -----------------------------------------------------------
    def check_feeds(self, feeds: Any, what: str = "x") -> dict[str, np.ndarray]:
        """``feeds`` (a dict {input name: array}, or one array for a single-input model) checked
        per input (:func:`onnxattr.feeds.check_feeds`), and the token ids against the vocabulary."""
        out = check_feeds(feeds, self.inputs, what, self.graph.needed())
        ids = self.graph.token_input
        table = self._token_table()
        if ids in out and table is not None:
            bad = (out[ids] < -table) | (out[ids] >= table)
            if bad.any():
                raise InputError(f"{what}[{ids!r}] has token ids {np.unique(out[ids][bad])[:8].tolist()} outside "
                                 f"the embedding table's {table} rows")
        return out

    def check_input(self, x: Any, what: str = "x") -> np.ndarray:
        """``x`` as a float32 batch of the model's one input; InputError otherwise (a model with
        several inputs or a ``wrt`` tensor takes feeds: :meth:`check_feeds`)."""
        if self.graph.head is not None or self.graph.needed() != [self.input_name]:
            raise InputError(f"the model is attributed at {self.input_name!r} from inputs "
                             f"{self.graph.needed()}; pass {what} as a dict {{input name: array}}")
        return self.check_feeds(x, what)[self.input_name]

    def at_wrt(self, feeds: Mapping[str, np.ndarray]) -> dict[str, Array]:
        """Checked host feeds -> device feeds of the attribution: the ``wrt`` tensor's value under
        ``input_name`` (computed by the graph's head where it is inside the graph) and the inputs
        held fixed. Float arrays go to the device, integer and boolean ones stay on the host."""
        dev = {k: self.xp.asarray(v) if v.dtype.kind == "f" else v for k, v in feeds.items()}
        head = self.graph.head
        if head is not None:
            parts = self.each_chunk(dev, lambda c, start: engine.forward(head, self.params, c).values[head.output])
            dev[self.input_name] = _concat(self.xp, parts)
        return dev

    def token_baseline(self, feeds: Mapping[str, Array], token: int) -> Array:
        """The ``wrt`` tensor's value with every token id replaced by ``token`` (and the other
        inputs as given): IG's ``baseline_token``."""
        ids, table = self.graph.token_input, self._token_table()
        if ids is None or table is None:
            raise OptionError(f"baseline_token needs a wrt tensor computed from token ids through an embedding "
                              f"lookup; {self.input_name!r} is not")
        if not -table <= token < table:
            raise OptionError(f"baseline_token must be a token id in [0, {table}), got {token}")
        fixed = {k: v for k, v in feeds.items() if k != self.input_name}
        fixed[ids] = np.full_like(fixed[ids], token)
        return self.at_wrt(fixed)[self.input_name]

    def _token_table(self) -> int | None:
        head = self.graph.head
        if head is None or self.graph.token_input is None:
            return None
        sizes = {self.graph.constants[n.inputs[0]].shape[0] for n, _ in embedding_candidates(head.nodes, self.graph.constants, self.inputs)}
        return min(sizes) if sizes else None

    def __call__(self, feeds: Any) -> np.ndarray:
        """The output (logits) for a batch (a dict {input name: array}, or one array for a
        single-input model), as a NumPy array."""
        return backend.to_host(self.forward(self.at_wrt(self.check_feeds(feeds))))

    def feeds(self, feeds: Array | Mapping[str, Array]) -> dict[str, Array]:
        """Device feeds of the attribution as a dict; a bare array is the ``wrt`` tensor alone."""
        if isinstance(feeds, Mapping):
            return dict(feeds)
        missing = [k for k in self.graph.needed() if k != self.input_name]
        if missing or self.graph.head is not None:
            raise InputError(f"the model also reads inputs {missing}; pass the feeds as a dict")
        return {self.input_name: feeds}

    def forward(self, feeds: Array | Mapping[str, Array], fetch: Sequence[str] = ()) -> Array | dict[str, Array]:
        """Forward pass from device feeds of the attribution (the ``wrt`` tensor and the inputs
        held fixed; a bare array where it is the only input): the output, or a dict of the
        tensors in ``fetch``."""
        def run(c: dict[str, Array], start: int) -> dict[str, Array]:
            program = self.program(None, c, fetch, backward=False)
            if program is not None:
                try:
                    return program.outputs(c)
                except compiled.NotCompilable as e:
                    self._programs.refuse(program, str(e))
            return engine.forward(self.graph, self.params, c, fetch=fetch).values

        parts = self.each_chunk(self.feeds(feeds), run)
        if not fetch:
            return _concat(self.xp, [p[self.output_name] for p in parts])
        return {t: _concat(self.xp, [p[t] for p in parts]) for t in fetch}

    def chunks(self, feeds: Mapping[str, Array]) -> list[dict[str, Array]]:
        """``feeds`` cut into batches the graph accepts (all of it unless the batch size is fixed)."""
        b = self.fixed_batch
        n = n_rows(feeds)
        if b is None or n == b:
            return [dict(feeds)]
        if n % b:
            raise InputError(f"the model fixes the batch size to {b}; got a batch of {n}")
        return [rows(feeds, i, i + b) for i in range(0, n, b)]

    def each_chunk(self, feeds: Mapping[str, Array], run: Callable[[dict[str, Array], int], R],
                   whole: bool = False) -> list[R]:
        """``run(chunk, start)`` over the chunks of ``feeds`` (every feed cut alike by rows); on
        the GPU, a chunk that runs out of memory is halved and retried (and the size that fits is
        remembered in ``max_chunk``). ``whole``: the batch must run as one (its rows are not
        independent)."""
        if self.device != "cuda":
            results = []
            start = 0
            # onnxruntime's pools carry the heavy ops: BLAS's spinning threads would fight them
            with threads.blas_limit(1) if self.kernels == "onnxruntime" else nullcontext():
                for c in self.chunks(feeds):
                    results.append(run(c, start))
                    start += n_rows(c)
            return results
        fixed = self.fixed_batch
        n = n_rows(feeds)
        if fixed is not None and n % fixed:
            raise InputError(f"the model fixes the batch size to {fixed}; got a batch of {n}")
        size = fixed or (n if whole else min(n, self.max_chunk or n))
        advice = self._memory_advice if not whole else (
            lambda m, why: f"a batch of {m} that must run as one (input and reference stacked) "
            f"does not fit in GPU memory ({why}); pass fewer samples at a time")
        results, size = split_on_oom(
            lambda a, b: run(rows(feeds, a, b), a), n, size, fixed is not None or whole,
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
        """``target`` as one int per sample, or (n, 2) (position, index) pairs for a (B, T, V)
        output (None stays None: the argmax, once known); see :mod:`onnxattr.targets`. The range
        is checked here where shape inference knows the output's sizes, and against the actual
        output in :meth:`resolve_target` otherwise."""
        return targets.check_target(target, n, self.graph.shapes.get(self.output_name), self.output_name)

    @property
    def n_classes(self) -> int | None:
        """The number of entries per sample of the explained output, where shape inference knows it."""
        shape = self.graph.shapes.get(self.output_name)
        if shape is None or not all(isinstance(d, int) and d > 0 for d in shape[1:]):
            return None
        return int(np.prod(shape[1:]))

    def resolve_target(self, target: np.ndarray | None, out: Array,
                       feeds: Mapping[str, Array] | None = None) -> np.ndarray:
        """The per-sample target for an output batch: the given one (range-checked) or the argmax
        (on a (B, T, V) output, at the last position where the attention mask in ``feeds`` is 1)."""
        mask = None if feeds is None or self.mask_name is None else feeds.get(self.mask_name)
        return targets.resolve_target(target, out, self.output_name, mask)

    # ---- forward + backward -------------------------------------------------------------
    def program(self, plan: Plan | None, feeds: Mapping[str, Array], fetch: Sequence[str] = (),
                backward: bool = True) -> compiled.Program | None:
        """The plan compiled into onnxruntime sessions (:mod:`onnxattr.compiled`), where the
        model runs onnxruntime's kernels on the CPU and every step of the plan has an ONNX form;
        None where the interpreter runs it. Without ``backward`` (and plan None): the forward
        alone, returning the tensors in ``fetch``."""
        if self.device != "cpu" or self.kernels != "onnxruntime" or not compiled.enabled():
            return None
        if plan is not None and plan.stacked:
            return None
        if self._programs.graph is not self.graph or self._programs.params is not self.params:
            return None  # a copy with another graph or weights (analyses): worth no compilation
        return self._programs.get({} if plan is None else plan.rules, feeds, fetch, backward, self.fixed_batch is not None)

    def propagate(
        self,
        feeds: Array | Mapping[str, Array],
        target: np.ndarray | None,
        plan: Plan,
        observer: engine.Observer | None = None,
        fetch: Sequence[str] = (),
    ) -> dict[str, Array]:
        """One forward and one backward pass of ``plan`` on a device batch.

        Args:
            feeds: device feeds of the attribution: {input_name: the batch at the ``wrt``
                tensor, every input held fixed: its batch} (:meth:`at_wrt`), or the batch alone
                where it is the only input.
            target: one target per sample, (position, index) pairs for a (B, T, V) output, or
                None (the argmax); what a callable seed gets, resolved against the output.
                Ignored where the seed is an array.
            plan: the rules, the seed and times_input (:class:`onnxattr.plan.Plan`).
            observer: sees every node's incoming and outgoing relevance.
            fetch: tensors whose relevance is returned too.

        Returns the relevance at the input under the input's name (times the input where
        ``plan.times_input``; zeros where none reached it), plus that of each tensor in ``fetch``
        that relevance reached. The batch is cut as :meth:`each_chunk` cuts it (on the GPU, in
        halves where it runs out of memory), except that a plan with a stacked rule runs as one.
        """

        def seed_of(out: Array, c: dict[str, Array], start: int) -> Array:
            n = c[self.input_name].shape[0]
            if callable(plan.seed):
                t = None if target is None else target[start : start + n]
                return plan.seed(out, self.resolve_target(t, out, c))
            seed = plan.seed[start : start + n]
            if seed.shape != out.shape:
                raise InputError(f"the seed has shape {tuple(seed.shape)} for output {self.output_name!r} "
                                 f"of shape {tuple(out.shape)}")
            return seed

        def passes(c: dict[str, Array], start: int) -> dict[str, Array]:
            program = self.program(plan, c, fetch) if observer is None else None
            if program is not None:
                try:
                    out, saved = program.forward(c)
                    return program.backward(seed_of(out, c, start), saved)
                except compiled.NotCompilable as e:  # refused at run time: the interpreter runs it
                    self._programs.refuse(program, str(e))
            tape = engine.forward(self.graph, self.params, c, record=True, rules=plan.rules)
            return engine.backward(self.graph, tape, seed_of(tape.values[self.output_name], c, start), observer, fetch)

        def run(c: dict[str, Array], start: int) -> dict[str, Array]:
            x = c[self.input_name]
            grads = passes(c, start)
            g = grads[self.input_name]
            g = self.xp.zeros_like(x) if g is None else g
            grads[self.input_name] = g * x if plan.times_input else g
            return grads

        results = self.each_chunk(self.feeds(feeds), run, self.device == "cuda" and plan.stacked)
        return {k: _concat(self.xp, [r[k] for r in results]) for k in results[0]}


def load(
    model: str | os.PathLike | onnx.ModelProto,
    device: str = "cpu",
    input_name: str | None = None,
    output_name: str | None = None,
    wrt: str | None = None,
    *,
    base_dir: str | os.PathLike | None = None,
    max_fold_bytes: int = MAX_FOLD_BYTES,
    kernels: str | None = None,
) -> Model:
    """Read an ONNX model (a path or a ModelProto) and prepare it for attribution.

    A model is treated as untrusted input: what onnxruntime would refuse is refused here, naming
    the node, and nothing the file says can make ``load`` read outside the model's folder or
    allocate without bound.

    Args:
        model: path to a ``.onnx`` file (external data is read from its folder, and only from
            there) or a ModelProto (left unchanged).
        device: ``"cpu"`` (NumPy) or ``"cuda"`` (CuPy).
        input_name: which float graph input to attribute to, where the model has several (the
            others are held fixed at the values given).
        output_name: which tensor to explain; any graph output or intermediate tensor. By
            default the single graph output, with a final Softmax/LogSoftmax dropped so that the
            logits are explained.
        wrt: attribute to a tensor inside the graph: its name (a layer's activation, say), or
            ``"embeddings"``: the word-embedding lookup's output, found as :mod:`onnxattr.wrt`
            describes. Attributions then have that tensor's shape ((B, T, H) for text; see
            :func:`onnxattr.token_scores`), and every graph input is held fixed at the values
            given. A model whose inputs are all integers needs it.
        base_dir: for a ModelProto whose tensors keep their data in external files: the folder
            that holds them (locations may not leave it). Without it such a proto is refused.
        max_fold_bytes: the most bytes one constant folded at load may take (default 256 MiB);
            all of them together may take this plus four times the model's own tensors.
        kernels: on the CPU, ``"onnxruntime"`` runs the heavy ops (Conv, ConvTranspose, Gemm,
            MatMul and the LRP rules' modified forwards) through onnxruntime's kernels,
            ``"numpy"`` through the library's own (the reference). Default: the environment
            variable ``ONNXATTR_KERNELS``, else ``"onnxruntime"``. Ignored on the GPU (CuPy).

    Raises:
        ModelError: not an ONNX model, invalid (the node named), external data outside the
            folder, a folded constant over ``max_fold_bytes``, no such input/output/wrt tensor,
            or an ambiguous choice.
        UnsupportedOpError: a node whose op type, opset form or attributes are not implemented
            (named).
        OptionError: ``base_dir`` with a path, ``max_fold_bytes`` not a positive int, or unknown
            ``kernels``.
    """
    if isinstance(max_fold_bytes, bool) or not isinstance(max_fold_bytes, int) or max_fold_bytes <= 0:
        raise OptionError(f"max_fold_bytes must be a positive int (bytes), got {max_fold_bytes!r}")
    proto = read_model(model, base_dir=base_dir)
    graph = build(proto, input_name=input_name, output_name=output_name, wrt=wrt, max_fold_bytes=max_fold_bytes)
    graph = canonize(graph)
    return Model(graph, proto, device, kernels)


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


def _concat(xp: Any, parts: list[Array]) -> Array:
    return parts[0] if len(parts) == 1 else xp.concatenate(parts, axis=0)
