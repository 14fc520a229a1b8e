"""Activations and normalisations that exporters write as several elementwise nodes, found as
regions of the graph and identified by what they compute.

A region is a set of elementwise nodes (and ReduceMeans that keep their axes, and Casts to
float32) that reads one
tensor x and constants, and whose only tensor read outside it is y. It is rewritten into one
node of a standard op (``identify``) when y = f(x) for that op exactly: the region is evaluated
in float64 on probe inputs, the op's parameters are read from it (alpha of Swish; the scale,
bias and epsilon of a norm), and f must agree everywhere within 1e-5 relative (the float32
rounding of the exporter's constants). So every operand order and association an exporter
writes is recognised, and a region that computes anything else (x * sigmoid(1.702 x) is
Swish(alpha=1.702), not Gelu) is left alone or given its own op. Constants must be scalars for
activations, and lie along the normalised axes for norms, so that the op has the region's
broadcast.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import numpy as np

from ..graph import Node
from .edit import Edit, common_name

ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Neg", "Sqrt", "Reciprocal", "Erf", "Tanh", "Sigmoid",
               "HardSigmoid", "Clip", "Relu", "Max", "Min"}
#: the op types a region must contain (the nonlinearity or the reduction), from which a search starts
CORES = {"Erf", "Tanh", "Sigmoid", "HardSigmoid", "Clip", "Relu", "Max", "Min", "ReduceMean"}
REACH = 8  # how many nodes back from a core the region's input may lie
SPAN = 300  # how many nodes after its input a region may reach (in topological order)
TOL = 1e-5
FLOAT = 1  # onnx.TensorProto.FLOAT

#: what a fit returns: (op type, attributes, extra constant inputs, pattern name)
Fit = tuple[str, dict[str, Any], list[np.ndarray], str]


def fuse_regions(edit: Edit) -> None:
    """Replace every region that computes a standard activation or norm by that op's node."""
    for core_name in [n.name for n in edit.nodes if n.op_type in CORES]:
        core = next((n for n in edit.nodes if n.name == core_name), None)
        match = find(edit, core) if core is not None else None
        if match is not None:
            _apply(edit, *match)


def find(edit: Edit, core: Node) -> tuple[list[Node], str, str, Fit] | None:
    """(nodes, x, y, fit) of the largest region through ``core`` that computes a standard op."""
    best = None
    for x in _sources(edit, core):
        for sub, y, fit in _matches(edit, core, x):
            if best is None or len(sub) > len(best[0]):
                best = (sub, x, y, fit)
            break
    return best


def _apply(edit: Edit, sub: list[Node], x: str, y: str, fit: Fit) -> None:
    op_type, attrs, params, pattern = fit
    name = common_name(sub, op_type)
    inputs = [x] + [edit.constant(f"{name}::{i}", p) for i, p in enumerate(params)]
    from ..errors import UnsupportedOpError

    try:
        node = edit.make(op_type, attrs, name, inputs, [y])
    except UnsupportedOpError:  # an op this build has no kernel for: the region stays as written
        return
    edit.replace(sub, node)
    edit.found.append((pattern, [n.name for n in sub]))


def _data_inputs(node: Node) -> list[str]:
    return node.inputs[:1] if node.op_type in ("ReduceMean", "Clip") else node.inputs


def _admissible(edit: Edit, node: Node) -> bool:
    if node.op_type == "ReduceMean":
        return int(node.op.attrs.get("keepdims", 1)) == 1 and all(t in edit.consts for t in node.inputs[1:] if t)
    if node.op_type == "Clip":
        return all(t in edit.consts for t in node.inputs[1:] if t)
    if node.op_type == "Cast":  # to float32: LlamaRMSNorm's upcast, a no-op on float32 data
        return int(node.op.attrs.get("to", 0)) == FLOAT
    return node.op_type in ELEMENTWISE and len(node.outputs) == 1


def _sources(edit: Edit, core: Node) -> list[str]:
    """Candidate inputs x of a region around ``core``: tensors up to REACH admissible nodes back."""
    out: list[str] = []
    frontier = [t for t in _data_inputs(core) if t and t not in edit.consts]
    for _ in range(REACH):
        nxt = []
        for t in frontier:
            if t in out:
                continue
            out.append(t)
            p = edit.producer(t)
            if p is not None and _admissible(edit, p):
                nxt += [u for u in _data_inputs(p) if u and u not in edit.consts]
        frontier = nxt
    return out


def _matches(edit: Edit, core: Node, x: str) -> Iterator[tuple[list[Node], str, Fit]]:
    """(nodes, y, fit) for the regions from ``x`` through ``core``, the last-computed y first."""
    p = edit.producer(x)
    start = edit.nodes.index(p) + 1 if p is not None else 0
    produced, region = {x}, []
    for n in edit.nodes[start:start + SPAN]:
        data = _data_inputs(n)
        reads = all(t in produced or t in edit.consts for t in data) and any(t in produced for t in data)
        if reads and _admissible(edit, n):
            region.append(n)
            produced.add(n.outputs[0])
    if not any(n is core for n in region):
        return
    for last in reversed(region):
        sub = _ancestors(region, last, x)
        if not any(n is core for n in sub) or len(sub) < 2 or not _closed(edit, sub, last.outputs[0]):
            continue
        fit = identify(edit, sub, x, last.outputs[0])
        if fit is not None:
            yield sub, last.outputs[0], fit


def _ancestors(region: list[Node], last: Node, x: str) -> list[Node]:
    by_output = {n.outputs[0]: n for n in region}
    keep, stack = set(), [last]
    while stack:
        n = stack.pop()
        if id(n) in keep:
            continue
        keep.add(id(n))
        stack += [by_output[t] for t in _data_inputs(n) if t in by_output and t != x]
    return [n for n in region if id(n) in keep]


def _closed(edit: Edit, sub: list[Node], y: str) -> bool:
    """Whether nothing outside ``sub`` reads a tensor of ``sub`` other than ``y``."""
    inside = {id(n) for n in sub}
    for n in sub:
        t = n.outputs[0]
        if t != y and (t == edit.graph.output or any(id(c) not in inside for c in edit.consumers(t))):
            return False
    return True


def evaluate(edit: Edit, sub: list[Node], x: str, y: str, probe: np.ndarray) -> np.ndarray | None:
    """The region's output for ``probe`` at x, in float64 (None if an op refuses it)."""
    env = {x: probe}
    try:
        with np.errstate(all="ignore"):
            for n in sub:
                args = [env[t] if t in env else edit.consts[t] if t else None for t in n.inputs]
                args = [a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in args]
                (out, *_), _ = n.op.forward(*args)
                env[n.outputs[0]] = np.asarray(out, dtype=np.float64)
    except Exception:  # any op that cannot run on the probe: no match
        return None
    return env[y]


def identify(edit: Edit, sub: list[Node], x: str, y: str) -> Fit | None:
    """The standard op that the region computes exactly, with its parameters, or None."""
    consts = [np.asarray(edit.consts[t]) for n in sub for t in _data_inputs(n) if t in edit.consts]
    if any(c.dtype.kind != "f" for c in consts):
        return None
    rank = edit.rank(x)
    if rank is None or any(c.ndim > rank for c in consts):
        return None
    if any(n.op_type == "ReduceMean" for n in sub):
        return _identify_norm(edit, sub, x, y, consts, rank)
    if any(c.size != 1 for c in consts):
        return None
    f = lambda v: evaluate(edit, sub, x, y, v)  # noqa: E731
    cores = {n.op_type for n in sub} & CORES
    if cores == {"Erf"}:
        return _check(f, _gelu, ("Gelu", {"approximate": "none"}, [], "Gelu(none)"))
    if cores == {"Tanh"}:
        return _check(f, _gelu_tanh, ("Gelu", {"approximate": "tanh"}, [], "Gelu(tanh)"))
    if cores == {"Sigmoid"}:
        one = f(np.array([1.0]))
        one = None if one is None else float(one.reshape(-1)[0])
        if one is None or not 0 < one < 1:
            return None
        alpha = math.log(one / (1 - one))
        alpha = 1.0 if abs(alpha - 1) < TOL else alpha
        return _check(f, lambda v: v / (1 + np.exp(-alpha * v)), ("Swish", {"alpha": alpha}, [], "Swish"))
    if cores <= {"HardSigmoid", "Clip", "Relu", "Max", "Min"}:
        found = _check(f, lambda v: v * np.clip(v / 6 + 0.5, 0, 1), ("HardSwish", {}, [], "HardSwish"))
        if found is not None:
            return found
        at = f(np.array([0.0, 1e-3]))
        if at is None or at.size != 2:
            return None
        at = at.reshape(-1)
        beta, alpha = float(at[0]), float(at[1] - at[0]) / 1e-3
        return _check(f, lambda v: np.clip(alpha * v + beta, 0, 1),
                      ("HardSigmoid", {"alpha": float(alpha), "beta": float(beta)}, [], "HardSigmoid"))
    return None


def _probe() -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.concatenate([np.linspace(-8, 8, 161), 3 * rng.standard_normal(64), [-1e-4, 1e-4, 2.999, 3.001]])


def _check(f: Callable[[np.ndarray], np.ndarray | None], want: Callable[[np.ndarray], np.ndarray], fit: Fit) -> Fit | None:
    v = _probe()
    got = f(v)
    if got is None or got.size != v.size:
        return None
    ref = want(v)
    return fit if bool(np.all(np.abs(got.reshape(-1) - ref) <= TOL * (1 + np.abs(ref)))) else None


def _gelu(v: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return 0.5 * v * (1 + erf(v / math.sqrt(2)))


def _gelu_tanh(v: np.ndarray) -> np.ndarray:
    return 0.5 * v * (1 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))


def _axes(edit: Edit, node: Node, rank: int) -> tuple[int, ...] | None:
    axes = node.op.attrs.get("axes")
    if len(node.inputs) > 1 and node.inputs[1]:
        axes = edit.consts[node.inputs[1]].reshape(-1).tolist()
    if axes is None:
        return None
    return tuple(sorted(int(a) - rank if int(a) >= 0 else int(a) for a in axes))


def _identify_norm(edit: Edit, sub: list[Node], x: str, y: str, consts: list[np.ndarray], rank: int) -> Fit | None:
    """LayerNormalization or RMSNormalization over the trailing axes the ReduceMeans name."""
    axes = {_axes(edit, n, rank) for n in sub if n.op_type == "ReduceMean"}
    shape = edit.shape(x)
    if len(axes) != 1 or shape is None:
        return None
    (axes,) = axes
    k = len(axes) if axes else 0
    if not axes or axes != tuple(range(-k, 0)) or k >= rank:
        return None
    norm_shape = list(shape[-k:])
    for c in consts:  # a parameter may vary along the normalised axes only
        full = (1,) * (rank - c.ndim) + c.shape
        if any(d != 1 for d in full[:-k]):
            return None
        # where inference left a normalised axis open (a Reshape computed at run time), a
        # parameter that varies along it gives its size
        norm_shape = [d if isinstance(d, int) and d > 0 else (p if p > 1 else d) for d, p in zip(norm_shape, full[-k:])]
    norm_shape = tuple(norm_shape)
    if not all(isinstance(d, int) and d > 0 for d in norm_shape):
        return None
    eps_candidates = sorted({float(c.reshape(-1)[0]) for n in sub if n.op_type == "Add"
                             for c in (edit.consts.get(t) for t in n.inputs) if c is not None and c.size == 1
                             and 0 < float(c.reshape(-1)[0]) < 0.1})
    f = lambda v: evaluate(edit, sub, x, y, v)  # noqa: E731
    for eps in eps_candidates:
        for kind in ("LayerNormalization", "RMSNormalization"):
            fit = _fit_norm(f, kind, eps, norm_shape, rank, k)
            if fit is not None:
                return fit
    return None


def _normalize(kind: str, v: np.ndarray, eps: float, k: int) -> np.ndarray:
    axes = tuple(range(-k, 0))
    if kind == "LayerNormalization":
        v = v - v.mean(axis=axes, keepdims=True)
    return v / np.sqrt((v * v).mean(axis=axes, keepdims=True) + eps)


def _fit_norm(f: Callable, kind: str, eps: float, norm_shape: tuple, rank: int, k: int) -> Fit | None:
    """y = normalize(x) * scale + bias: scale and bias from x and -x (the normalisation is odd),
    then checked on rows of every size, down to a variance near epsilon, and with offsets."""
    rng = np.random.default_rng(1)
    lead = (1,) * (rank - k - 1)
    rows = 8
    x1 = rng.standard_normal((rows,) + lead + norm_shape) + rng.normal(0, 2, (rows,) + lead + (1,) * k)
    y1, y2 = f(x1), f(-x1)
    if y1 is None or y2 is None or y1.shape != x1.shape:
        return None
    n1 = _normalize(kind, x1, eps, k)
    scale = ((y1 - y2) * n1).sum(axis=0) / np.maximum((2 * n1 * n1).sum(axis=0), 1e-300)
    bias = (y1 + y2).mean(axis=0) / 2
    scales = np.array([1, 10, 0.1, math.sqrt(eps), 3 * math.sqrt(eps), 100, 0.01, 2]).reshape((rows,) + (1,) * (rank - 1))
    x3 = rng.standard_normal(x1.shape) * scales + rng.normal(0, 3, (rows,) + lead + (1,) * k) * scales
    y3 = f(x3)
    ref = _normalize(kind, x3, eps, k) * scale + bias
    if y3 is None or not bool(np.all(np.abs(y3 - ref) <= TOL * (1 + np.abs(ref)))):
        return None
    scale, bias = scale.reshape(norm_shape), bias.reshape(norm_shape)
    attrs = {"axis": -k, "epsilon": eps}
    if kind == "RMSNormalization":
        if np.abs(bias).max() > TOL * (1 + np.abs(scale).max()):
            return None
        return kind, attrs, [scale], kind
    return kind, attrs, [scale, bias], kind
