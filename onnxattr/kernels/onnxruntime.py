"""onnxruntime's CPU kernels for the ops that carry the FLOPs, as functions over NumPy arrays.

Each function runs one ONNX op (or a chain of two) in a cached single-op InferenceSession:
Conv, Conv's data vjp, ConvTranspose, Gemm, MatMul and Dense (MatMul + Add) and its data vjp.
The NumPy implementations in :mod:`onnxattr.ops` stay the reference and the fallback;
:func:`supported` says which dtypes a kernel takes (onnxruntime's Conv and ConvTranspose are
float32 only).

Sessions are cached by op, attributes, dtype and the static shapes (the batch axis is symbolic, so
one session serves every batch size), and, for weights passed with ``constant=True``, by the
weight arrays' identity: those are baked into the session as initializers, so that onnxruntime
prepacks them once. The cache holds a reference to every baked array, so an identity cannot be
reused while its session lives; pass ``constant=True`` only for arrays that are not modified in
place afterwards (a model's parameters, or modified weights cached once per model and rule).
Weights that change from call to call go in as session inputs (``constant=False``).

Every session runs with the library's thread count (:mod:`onnxattr.threads`), one inter-op
thread, and ``session.intra_op.allow_spinning`` off: dozens of sessions run one after another, and
spinning pools would fight over the cores between calls.

The data vjp of a convolution is the adjoint of its input map. With stride 1 and pads within the
kernel's extent it is itself a correlation of the cotangent with the flipped, transposed kernel
(run as Conv, which is faster than ConvTranspose); otherwise it is a ConvTranspose with the same
weights, pads and strides, whose ``output_padding`` gives back the input's size (Dumoulin &
Visin 2016, "A guide to convolution arithmetic for deep learning", relationships 6-14).
"""
from __future__ import annotations

import os
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Mapping, Sequence

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from .. import threads

OPSET = 17
#: how many sessions stay cached (least recently used dropped first); ResNet-50 with an LRP
#: composite needs about four per convolution
CACHE_SIZE = 1024
#: graph optimization level of the sessions made from now on (part of the cache key; measured
#: in tools/bench_kernels.py)
OPTIMIZATION = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

#: below this many multiply-adds a product runs faster in NumPy: a session's run costs about
#: 10 us more than NumPy's call, and NumPy's BLAS on one thread matches MLAS (measured: 64^3 MACs
#: 5.6 us in NumPy, 15 us here; 128^3 43 vs 50 us)
MIN_MACS = 1 << 21

_FLOAT32_ONLY = ("Conv", "ConvTranspose", "Erf")
_DTYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}


@dataclass(frozen=True)
class ConvGeometry:
    """A convolution's strides, dilations, explicit pads (ONNX order: all begins, then all ends)
    and groups; auto_pad resolved by the caller (``ops.window.resolve`` gives the pads)."""

    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]
    group: int = 1

    @property
    def rank(self) -> int:
        return len(self.strides)

    def attrs(self) -> dict[str, Any]:
        return {"strides": list(self.strides), "dilations": list(self.dilations),
                "pads": list(self.pads), "group": self.group}


def supported(op_type: str, dtype: Any, geometry: ConvGeometry | None = None,
              output_padding: Sequence[int] | None = None) -> bool:
    """Whether onnxruntime's CPU kernel of ``op_type`` takes arrays of ``dtype`` (and, for
    ConvTranspose, this ``output_padding``: onnxruntime wants it below the stride, where ONNX
    allows it below the stride or the dilation)."""
    dtype = np.dtype(dtype)
    if output_padding is not None and geometry is not None:
        if any(a >= s for a, s in zip(output_padding, geometry.strides)):
            return False
    if op_type in _FLOAT32_ONLY:
        return dtype == np.float32
    return dtype in _DTYPES


# ---- the kernels ------------------------------------------------------------------------------

def conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, geometry: ConvGeometry,
         constant: bool = True) -> np.ndarray:
    """ONNX Conv: y[n, o, p] = sum_{c, k} w[o, c, k] x_pad[n, g(o) C/G + c, s p + d k] + b[o]."""
    return _run("Conv", geometry.attrs(), x, [w, b], constant)


def conv_transpose(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, geometry: ConvGeometry,
                   output_padding: Sequence[int] | None = None, constant: bool = True) -> np.ndarray:
    """ONNX ConvTranspose with explicit pads (w of shape (C, O/G, *kernel)): the adjoint of
    Conv's input map, plus the bias; ``output_padding`` cells are added at the end of each axis.

    With stride 1 and pads within the kernel's extent e = d (k - 1) it runs as the Conv of x with
    the flipped, transposed kernel and pads e - pad (faster than onnxruntime's ConvTranspose).
    """
    nd = geometry.rank
    extent = [d * (k - 1) for k, d in zip(w.shape[2:], geometry.dilations)]
    if all(s == 1 for s in geometry.strides) and not any(output_padding or ()) and all(
            0 <= p <= e for p, e in zip(geometry.pads, extent + extent)):
        pads = tuple(e - p for p, e in zip(geometry.pads, extent + extent))
        flipped = ConvGeometry((1,) * nd, geometry.dilations, pads, geometry.group)
        return _run("Conv", flipped.attrs(), x, [w, b], constant, transform="flip")
    attrs = geometry.attrs()
    if output_padding is not None and any(output_padding):
        attrs["output_padding"] = [int(v) for v in output_padding]
    return _run("ConvTranspose", attrs, x, [w, b], constant)


def conv_data_vjp(g: np.ndarray, w: np.ndarray, geometry: ConvGeometry, spatial: Sequence[int],
                  constant: bool = True) -> np.ndarray:
    """The cotangent of Conv's input x (spatial size ``spatial``) given the output's, g:
    dx[n, c, i] = sum_{o, k} w[o, c, k] g[n, o, p] over the (p, k) with s p + d k = i + pad_b
    (as the op :func:`data_vjp_form` gives)."""
    op, attrs, transform = data_vjp_form(geometry, w.shape[2:], spatial, g.shape[2:])
    return _run(op, attrs, g, [w, None], constant, transform=transform)


def data_vjp_form(geometry: ConvGeometry, kernel: Sequence[int], spatial: Sequence[int],
                  out: Sequence[int]) -> tuple[str, dict[str, Any], str]:
    """Conv's data vjp as one ONNX op: its type, attributes and the transform of the weight it
    multiplies by (:func:`transformed`), for an input of size ``spatial`` and an output of ``out``.

    Stride 1 with pads within the kernel's extent: the Conv of g with the flipped, transposed
    kernel, padded by d (k - 1) - pad_b at the start and what gives back ``spatial`` at the end.
    Otherwise: ConvTranspose with the same weights and pads, and output_padding
    n + pad_b + pad_e - (d (k - 1) + 1) - s (o - 1) (< s: the cells Conv's floor left unread).
    """
    nd = geometry.rank
    begin, end = geometry.pads[:nd], geometry.pads[nd:]
    extent = [d * (k - 1) for k, d in zip(kernel, geometry.dilations)]
    if all(s == 1 for s in geometry.strides):
        tb = [e - p for e, p in zip(extent, begin)]
        te = [n - o + p for n, o, p in zip(spatial, out, begin)]
        if min(tb + te) >= 0:
            return "Conv", ConvGeometry((1,) * nd, geometry.dilations, tuple(tb + te), geometry.group).attrs(), "flip"
    adj = [n + p + q - e - 1 - s * (o - 1)
           for n, p, q, e, s, o in zip(spatial, begin, end, extent, geometry.strides, out)]
    attrs = geometry.attrs()
    if any(adj):
        attrs["output_padding"] = [int(v) for v in adj]
    return "ConvTranspose", attrs, ""


def gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None, alpha: float = 1.0,
         beta: float = 1.0, trans_a: bool = False, trans_b: bool = False,
         constant: bool = True) -> np.ndarray:
    """ONNX Gemm: alpha A' B' + beta C (A' = A^T with trans_a, B' = B^T with trans_b); with
    ``constant`` B and C are baked into the session, A is the input."""
    attrs = {"alpha": float(alpha), "beta": float(beta), "transA": int(trans_a), "transB": int(trans_b)}
    return _run("Gemm", attrs, a, [b, c], constant)


def matmul(a: np.ndarray, b: np.ndarray, constant: bool = False) -> np.ndarray:
    """a @ b with NumPy's matmul semantics (batch axes broadcast); ``constant`` bakes b."""
    return _run("MatMul", {}, a, [b], constant)


def dense(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, constant: bool = True) -> np.ndarray:
    """x @ w + b over the last axis of x, any leading axes (a MatMul and an Add in one session)."""
    return _run("Dense", {}, x, [w, b], constant)


def dense_data_vjp(g: np.ndarray, w: np.ndarray, constant: bool = True) -> np.ndarray:
    """The cotangent of Dense's input: g @ w^T (w^T baked once with ``constant``)."""
    return _run("MatMul", {}, g, [w], constant, transform="transpose")


def erf(x: np.ndarray) -> np.ndarray:
    """erf elementwise on float32 (onnxruntime has no double Erf): MLAS's vectorized kernel,
    where SciPy's takes 10-50x as long."""
    return _run("Erf", {}, x, [], True)


# ---- the switch: which kernels a loaded model's ops use -----------------------------------------

KERNELS = ("onnxruntime", "numpy")
#: the environment variable that gives ``load``'s default kernels
ENV = "ONNXATTR_KERNELS"


def choose(kernels: str | None) -> str:
    """``kernels`` checked, or the default: ``ONNXATTR_KERNELS``, else "onnxruntime"."""
    from ..errors import OptionError

    where = "kernels="
    if kernels is None:
        kernels, where = os.environ.get(ENV, "").strip() or "onnxruntime", ENV
    if kernels not in KERNELS:
        raise OptionError(f"{where}: unknown kernels {kernels!r}; choose one of {KERNELS}")
    return kernels


def use(kernels: str, nodes: Sequence[Any], params: Mapping[str, Any]) -> None:
    """Make ``nodes``' ops run with ``kernels``, and declare the model's float parameters
    constant (so that their modified copies are made once, and baked into the sessions)."""
    for node in nodes:
        node.op.kernels = kernels
    mark_constant(*(v for v in params.values() if isinstance(v, np.ndarray) and v.dtype.kind == "f"))


# ---- constants: a model's parameters and the weights derived from them -------------------------

_CONSTANTS: "weakref.WeakValueDictionary[int, Any]" = weakref.WeakValueDictionary()
_DERIVED: dict[tuple[int, Hashable], Any] = {}
_DERIVED_LOCK = threading.Lock()


def mark_constant(*arrays: Any) -> None:
    """Declare arrays constant (a loaded model's parameters): :func:`is_constant` answers True for
    these very objects while they live. They must not be modified in place afterwards. Any array
    type that takes a weak reference can be marked (so :func:`derived` may cache GPU weights too);
    one that takes none stays unmarked, and its derived weights are made afresh."""
    for a in arrays:
        if a is not None:
            try:
                _CONSTANTS[id(a)] = a
            except TypeError:  # no weak reference to this type
                continue


def is_constant(a: Any) -> bool:
    """Whether ``a`` is an array declared constant (by :func:`mark_constant` or made by
    :func:`derived`): the ``constant=`` argument of the kernels for a weight."""
    return a is not None and _CONSTANTS.get(id(a)) is a


def derived(w: Any, key: Hashable, make: Callable[[Any], Any]) -> Any:
    """``make(w)`` for a constant ``w``, computed once while ``w`` lives and itself constant: the
    same array object for the same (w, key), so that the sessions it is baked into are reused.

    ``key`` names the map with its parameters (e.g. ``("gamma+", 0.25)`` for W + 0.25 W+): LRP's
    modified weights, computed once per model and rule. A ``w`` that is not constant gets
    ``make(w)`` afresh.
    """
    if not is_constant(w):
        return make(w)
    k = (id(w), key)
    with _DERIVED_LOCK:
        value = _DERIVED.get(k)
    if value is None:
        value = make(w)
        mark_constant(value)
        with _DERIVED_LOCK:
            value = _DERIVED.setdefault(k, value)
        weakref.finalize(w, _DERIVED.pop, k, None)
    return value


# ---- sessions ---------------------------------------------------------------------------------

class _Cache:
    """Least-recently-used sessions, each with the arrays baked into it (kept alive, so that
    their ids stay unique while the session is cached)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[tuple, tuple[ort.InferenceSession, tuple]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple) -> ort.InferenceSession | None:
        with self.lock:
            entry = self.entries.get(key)
            if entry is None:
                return None
            self.entries.move_to_end(key)
            return entry[0]

    def put(self, key: tuple, session: ort.InferenceSession, baked: tuple) -> None:
        with self.lock:
            self.entries[key] = (session, baked)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)

    def clear(self) -> None:
        with self.lock:
            self.entries.clear()

    def __len__(self) -> int:
        return len(self.entries)


_CACHE = _Cache(CACHE_SIZE)


def clear_cache() -> None:
    """Drop every cached session (and the references to the weights baked into them)."""
    _CACHE.clear()


def cached_sessions() -> int:
    """How many sessions are cached."""
    return len(_CACHE)


def _run(op: str, attrs: dict[str, Any], x: np.ndarray, params: Sequence[np.ndarray | None],
         constant: bool, transform: str = "") -> np.ndarray:
    """Run ``op`` on the data input ``x`` and the parameters (None: an absent optional input)."""
    x = np.ascontiguousarray(x)
    present = [p for p in params if p is not None]
    layout = tuple(p is not None for p in params)
    n_threads = threads.num_threads()
    frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in attrs.items()))
    head = (op, frozen, transform, x.dtype.str, x.shape[1:], layout, n_threads, OPTIMIZATION)
    if constant:
        key = head + tuple(id(p) for p in present)
    else:
        key = head + tuple(p.shape for p in present)
    session = _CACHE.get(key)
    if session is None:
        session = _session(op, attrs, x, params, constant, transform, n_threads)
        _CACHE.put(key, session, tuple(present) if constant else ())
    feeds = {"x": x}
    if not constant:
        for i, p in enumerate(params):
            if p is not None:
                feeds[f"p{i}"] = np.ascontiguousarray(transformed(p, transform, attrs) if i == 0 else p, dtype=x.dtype)
    return session.run(None, feeds)[0]


def transformed(w: np.ndarray, transform: str, attrs: Mapping[str, Any]) -> np.ndarray:
    """The weight the session multiplies by: w itself, its transpose, or a convolution's kernel
    flipped and transposed per group (the kernel of the stride-1 data vjp)."""
    if transform == "transpose":
        return w.T
    if transform == "flip":
        group = attrs["group"]
        o, cg, kernel = w.shape[0], w.shape[1], tuple(w.shape[2:])
        flip = (slice(None),) * 3 + (slice(None, None, -1),) * len(kernel)
        return w.reshape((group, o // group, cg) + kernel).swapaxes(1, 2)[flip].reshape((cg * group, o // group) + kernel)
    return w


def _session(op: str, attrs: dict[str, Any], x: np.ndarray, params: Sequence[np.ndarray | None],
             constant: bool, transform: str, n_threads: int) -> ort.InferenceSession:
    dtype = _DTYPES[x.dtype]
    names, inits, inputs = [], [], [helper.make_tensor_value_info("x", dtype, ("N",) + x.shape[1:])]
    for i, p in enumerate(params):
        if p is None:
            names.append("")
            continue
        name = f"p{i}"
        names.append(name)
        value = transformed(p, transform, attrs) if i == 0 else p
        if constant:
            inits.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=x.dtype), name))
        else:
            inputs.append(helper.make_tensor_value_info(name, dtype, value.shape))
    while names and not names[-1]:
        names.pop()
    if op == "Dense":
        nodes = [helper.make_node("MatMul", ["x", names[0]], ["z" if len(names) > 1 else "y"])]
        if len(names) > 1:
            nodes.append(helper.make_node("Add", ["z", names[1]], ["y"]))
    else:
        nodes = [helper.make_node(op, ["x"] + names, ["y"], **attrs)]
    graph = helper.make_graph(nodes, op, inputs, [helper.make_tensor_value_info("y", dtype, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return ort.InferenceSession(model.SerializeToString(), session_options(n_threads),
                                providers=["CPUExecutionProvider"])


def session_options(n_threads: int | None = None) -> ort.SessionOptions:
    """The options of every session the library makes: the library's thread count (or
    ``n_threads``), one inter-op thread, sequential execution, no spinning, and one memory arena
    shared by all of them (:func:`shared_arena`)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads.num_threads() if n_threads is None else n_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = OPTIMIZATION
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.enable_cpu_mem_arena = shared_arena()
    if so.enable_cpu_mem_arena:
        so.add_session_config_entry("session.use_env_allocators", "1")
    so.log_severity_level = 3
    return so


_ARENA: list[bool] = []


def shared_arena() -> bool:
    """Register, once per process, one CPU memory arena for every session of the library, which
    grows by what is asked (not by powers of two); whether it is there.

    Without an arena each run maps its large buffers afresh and faults them in page by page
    (measured, ResNet-18 batch 8: the compiled gradient 2.96x onnxruntime's forward without, 2.51x
    with); an arena per session would keep every session's largest buffers (363 MB against 223 MB
    for the per-layer sessions of one gradient). One shared arena keeps the largest working set of
    any one run: the compiled gradient's peak was 51-77 MB, 1.3-2.0x onnxruntime's forward's.
    """
    with _DERIVED_LOCK:
        if not _ARENA:
            try:
                info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
                ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, -1, -1))  # 1: kSameAsRequested
                _ARENA.append(True)
            except Exception:  # noqa: BLE001  (an allocator registered already, or none can be: no arena)
                _ARENA.append(False)
        return _ARENA[0]
