"""The steps of :func:`onnxattr.audit`, each usable on its own: :func:`validate` the settings once,
:func:`run_method` one method over a batch of samples (per-sample maps and values; the unit of
work a worker can run on its own batch), :func:`merge` the per-batch results of a method, and
:func:`assemble` the report: checks, gates, pictures and the model and data summaries."""
from __future__ import annotations

import dataclasses
import datetime
import inspect
import pathlib
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..analysis import faithfulness, randomization
from ..analysis.alignment import input_alignment
from ..analysis.spectral import high_frequency_share, power_spectrum
from ..errors import OnnxAttrError, OptionError
from ..feeds import n_rows
from ..feeds import rows as feed_rows
from ..attribution.registry import attribute, lookup, resolve_options
from ..model import Model
from ..rng import sample_rng
from ..viz import heatmap_picture, input_picture
from .gates import Gate, evaluate_gate, sanity_checks
from .metrics import ANALYSES
from .progress import Progress
from .results import PER_SAMPLE, AuditReport, MethodResult

#: the analyses that take a progress step of their own (besides the attribution)
STEPPED = ("randomization", "class_sensitivity", "deletion", "insertion", "sensitivity_n")


@dataclass(frozen=True)
class AuditPlan:
    """The validated settings of an audit: methods with their resolved options, analyses, gates
    and the analyses' parameters (see :func:`onnxattr.audit`)."""

    methods: tuple[str, ...]
    options: dict[str, dict[str, Any]]
    analyses: tuple[str, ...]
    gates: tuple[Gate, ...]
    sample: int | None = 8
    heatmaps: int = 4
    curve_steps: int = 20
    n_subsets: int = 20
    n_sizes: int = 6
    runtime: str = "onnxruntime"
    seed: int = 0
    randomization_threshold: float = 0.5
    class_threshold: float = 0.5

    @property
    def steps_per_method(self) -> int:
        return 1 + sum(a in self.analyses for a in STEPPED)

    def settings(self) -> dict[str, Any]:
        """The settings as the report records them."""
        return {
            "methods": list(self.methods), "sample": self.sample, "heatmaps": self.heatmaps,
            "curve_steps": self.curve_steps, "n_subsets": self.n_subsets, "n_sizes": self.n_sizes,
            "runtime": self.runtime, "seed": self.seed, "analyses": list(self.analyses),
            "randomization_threshold": self.randomization_threshold, "class_threshold": self.class_threshold,
        }


def validate(methods: Sequence[str], options: dict[str, dict[str, Any]] | None = None,
             analyses: Sequence[str] = ANALYSES, gates: Iterable[str | Gate] = (), **params: Any) -> AuditPlan:
    """Check every setting before any work is done; OptionError names the one at fault.
    ``params`` are the other fields of :class:`AuditPlan`."""
    methods = tuple(dict.fromkeys(methods))
    if not methods:
        raise OptionError("no method to audit")
    unknown = sorted(set(analyses) - set(ANALYSES))
    if unknown:
        raise OptionError(f"unknown analysis {', '.join(map(repr, unknown))}; choose from {list(ANALYSES)}")
    options = dict(options or {})
    extra = sorted(set(options) - set(methods))
    if extra:
        raise OptionError(f"options given for {extra}, which are not among the audited methods {list(methods)}")
    seed = params.get("seed", 0)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise OptionError(f"seed must be a non-negative int, got {seed!r}")
    resolved = {m: _resolved(m, options.get(m, {}), seed) for m in methods}
    parsed = tuple(g if isinstance(g, Gate) else Gate.parse(g) for g in gates)
    for g in parsed:
        if g.method is not None and g.method not in methods:
            raise OptionError(f"gate {g.text!r} names method {g.method!r}, which is not audited; "
                              f"methods: {list(methods)}")
        missing = [a for a in g.analyses if a not in analyses]
        if missing:
            raise OptionError(f"gate {g.text!r} needs the analysis {missing[0]!r}, which is skipped")
    for name in ("curve_steps", "n_subsets", "n_sizes", "heatmaps"):
        v = params.get(name, 1)
        low = 0 if name == "heatmaps" else 1
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < low:
            raise OptionError(f"{name} must be {'a non-negative' if low == 0 else 'a positive'} int, got {v!r}")
    sample = params.get("sample")
    if sample is not None and (not isinstance(sample, (int, np.integer)) or isinstance(sample, bool) or sample < 0):
        raise OptionError(f"sample must be a non-negative int or None, got {sample!r}")
    if params.get("runtime", "onnxruntime") not in faithfulness.RUNTIMES:
        raise OptionError(f"unknown runtime {params['runtime']!r}; choose one of {faithfulness.RUNTIMES}")
    return AuditPlan(methods, resolved, tuple(a for a in ANALYSES if a in analyses), parsed, **params)


def _resolved(method: str, given: dict[str, Any], seed: int) -> dict[str, Any]:
    """The method's options; a method with a ``seed`` option (SmoothGrad) that was not given one
    takes the audit's, so the audit seed fixes its draws too."""
    entry = lookup(method)
    opts = resolve_options(entry, given)
    if "seed" in opts and "seed" not in given:
        opts = resolve_options(entry, {**given, "seed": seed})
    return opts


def run_method(model: Model, x: np.ndarray, targets: np.ndarray, name: str, plan: AuditPlan,
               layout: str | None = None, classes: int | None = None, bar: Progress | None = None,
               indices: Sequence[int] | None = None) -> MethodResult:
    """One method over a batch: its maps and the per-sample values of every planned analysis.

    Args:
        model: the loaded model; ``x``: a checked float32 batch, or checked feeds {input name: array}
            (a text model: the maps are at its ``wrt`` tensor, features are tokens);
            ``targets``: one int per sample (or (position, index) pairs).
        name: the method; its options are ``plan.options[name]``.
        layout: "NCHW"/"NHWC" for an image batch (features are pixels), else None (scalars).
        classes: entries of the explained output per sample (default: from a forward pass).
        bar: advanced once per step.
        indices: each sample's index in the data (default 0..B-1). Every random draw of a
            sample comes from ``sample_rng(plan.seed, index)``: SmoothGrad's noise (its
            ``indices`` option), the random class of class sensitivity and the subsets of
            Sensitivity-n, so a sample gets the same values in any batch, on any worker.
    Returns:
        :class:`MethodResult` with per-sample values; :func:`merge` joins those of several batches.
    """
    bar = bar or Progress(1, stream=False)
    analyses, opts, seed = plan.analyses, plan.options[name], plan.seed
    idx = np.arange(n_rows(x) if isinstance(x, dict) else len(x)) if indices is None else np.asarray(indices, dtype=np.int64)
    per_sample = {**opts, "indices": idx} if "indices" in opts and opts["indices"] is None else opts
    if classes is None:
        classes = int(np.prod(model(x).shape[1:]))
    started = time.perf_counter()
    try:
        bar.label(f"{name}: attribution")
        a = attribute(model, x, target=targets, method=name, **per_sample)
        bar.step()
        r = MethodResult(name, opts, a)
        if "randomization" in analyses:
            bar.label(f"{name}: randomization")
            r.randomization = randomization.randomization_test(
                model, x, targets, name, "cascading", seed, layout,
                **_passable(per_sample, randomization.randomization_test))
            bar.step()
        if "class_sensitivity" in analyses:
            bar.label(f"{name}: class sensitivity")
            if classes >= 2:
                r.class_sensitivity = _each_sample(
                    lambda k, rng, o: randomization.class_sensitivity(
                        model, sample_rows(x, k, k + 1), name, n_classes=1, seed=rng, **_passable(o, randomization.class_sensitivity)),
                    idx, seed, per_sample)
            bar.step()
        text = isinstance(x, dict)
        if text:
            features, kind = int(a.shape[1]), "token"
        else:
            features = int(np.prod(x.shape[2:] if layout == "NCHW" else x.shape[1:3])) if layout else int(np.prod(x.shape[1:]))
            kind = "pixel" if layout else "scalar"
        perturb = dict(runtime=plan.runtime, features=kind, layout=layout)
        for key, fn in (("deletion", faithfulness.deletion), ("insertion", faithfulness.insertion)):
            if key in analyses:
                bar.label(f"{name}: {key}")
                setattr(r, key, fn(model, x, a, targets, steps=plan.curve_steps, **perturb))
                bar.step()
        if "sensitivity_n" in analyses:
            bar.label(f"{name}: sensitivity-n")
            ns = faithfulness.default_ns(features, plan.n_sizes)
            r.sensitivity_n = _each_sample(
                lambda k, rng, o: faithfulness.sensitivity_n(model, sample_rows(x, k, k + 1), a[k:k + 1], targets[k:k + 1], ns=ns,
                                                             n_subsets=plan.n_subsets, seed=rng, **perturb),
                idx, seed, per_sample)
            bar.step()
        if "alignment" in analyses:
            r.alignment = input_alignment(a, faithfulness.batch_of(model, x).x if text else x)
        if "spectrum" in analyses and not text and x.ndim in (3, 4):
            r.spectrum = power_spectrum(a, layout, average=False)
            r.high_fraction = high_frequency_share(a, layout)
    except OnnxAttrError as e:
        e.args = (f"method {name!r}: {e}",)  # which method failed; the exception keeps its class
        raise
    r.seconds = time.perf_counter() - started
    return r


def _each_sample(analysis: Callable[[int, np.random.Generator, dict[str, Any]], Any], indices: np.ndarray,
                 seed: int, options: dict[str, Any]) -> Any:
    """A seeded analysis run one sample at a time, each with its own generator
    ``sample_rng(seed, index)`` (and SmoothGrad's ``indices`` option narrowed to it), joined
    over the samples: the draws of a sample do not depend on the batch it is in."""
    parts = []
    for k, i in enumerate(indices):
        o = {**options, "indices": indices[k:k + 1]} if "indices" in options else options
        parts.append(analysis(k, sample_rng(seed, int(i)), o))
    joined = _cat(parts[0], parts, PER_SAMPLE.get(_KIND[type(parts[0])], {}))
    if isinstance(joined, faithfulness.SensitivityN):
        joined.correlation = faithfulness.nanmean(joined.per_input, axis=1)
    return joined


def sample_rows(x: np.ndarray | dict[str, np.ndarray], a: int, b: int) -> np.ndarray | dict[str, np.ndarray]:
    """Rows [a, b) of a batch: an array, or a feeds dict (every input cut alike)."""
    return feed_rows(x, a, b) if isinstance(x, dict) else x[a:b]


def _passable(options: dict[str, Any], analysis: Callable[..., Any]) -> dict[str, Any]:
    """The method options that ``analysis`` can pass on: an option named like one of the
    analysis's own parameters (SmoothGrad's ``seed``) cannot be, and keeps its default there."""
    own = set(inspect.signature(analysis).parameters)
    return {k: v for k, v in options.items() if k not in own}


def _cat(obj: Any, parts: Sequence[Any], axes: dict[str, int]) -> Any:
    """``obj`` (a dataclass) with each field of ``axes`` concatenated over ``parts`` on its axis."""
    if obj is None:
        return None
    joined = {}
    for f, axis in axes.items():
        values = [getattr(p, f) for p in parts]
        if values[0] is None:
            continue
        joined[f] = [v for part in values for v in part] if isinstance(values[0], list) else np.concatenate(values, axis=axis)
    return dataclasses.replace(obj, **joined)


_KIND = {randomization.ClassSensitivity: "class_sensitivity", faithfulness.SensitivityN: "sensitivity_n"}


def merge(parts: Sequence[MethodResult]) -> MethodResult:
    """The results of one method on several batches, as one result over their samples in order
    (per-sample values concatenated; the means follow from them)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    cat = lambda f, axes: _cat(getattr(first, f), [getattr(p, f) for p in parts], axes)  # noqa: E731
    s = cat("sensitivity_n", PER_SAMPLE["sensitivity_n"])
    if s is not None:
        s = dataclasses.replace(s, correlation=faithfulness.nanmean(s.per_input, axis=1))
    spectrum = None
    if first.spectrum is not None:
        spectrum = (first.spectrum[0], np.concatenate([p.spectrum[1] for p in parts]))
    return dataclasses.replace(
        first,
        attribution=np.concatenate([p.attribution for p in parts]),
        seconds=sum(p.seconds for p in parts),
        randomization=cat("randomization", PER_SAMPLE["randomization"]),
        class_sensitivity=cat("class_sensitivity", PER_SAMPLE["class_sensitivity"]),
        deletion=cat("deletion", PER_SAMPLE["deletion"]),
        insertion=cat("insertion", PER_SAMPLE["insertion"]),
        sensitivity_n=s,
        alignment=None if first.alignment is None else np.concatenate([p.alignment for p in parts]),
        spectrum=spectrum,
        high_fraction=None if first.high_fraction is None else np.concatenate([p.high_fraction for p in parts]),
        checks={}, heatmaps=[],
    )


def assemble(model: Model, source: str | None, x: np.ndarray, plan: AuditPlan, results: dict[str, MethodResult],
             data: dict[str, Any], started: float, classes: int | None = None) -> AuditReport:
    """The report from the per-method results over the whole sample: the sanity checks, the
    gates, the pictures of the first ``plan.heatmaps`` inputs (``x`` and each result's
    ``attribution`` hold at least those), and the model summary. ``data`` is the report's data
    section (its ``layout`` decides how pictures are drawn); ``classes``: entries of the
    explained output per sample (default: from a forward pass of ``x[:1]``)."""
    lay = data["layout"]
    text = isinstance(x, dict)
    classes = model.n_classes or classes or int(np.prod(model(sample_rows(x, 0, 1)).shape[1:]))
    images: dict[str, np.ndarray] = {}
    rows = range(0 if text else min(plan.heatmaps, len(x)))  # text: drawn from data["text"] in the page
    input_files = [f"images/input_{i}.png" for i in rows]
    for i, rel in zip(rows, input_files):
        images[rel] = input_picture(x[i], lay)
    for name, r in results.items():
        r.checks = sanity_checks(r, plan.analyses, classes, plan.randomization_threshold, plan.class_threshold)
        r.heatmaps = [f"images/{_slug(name)}_{i}.png" for i in rows]
        for i, rel in zip(rows, r.heatmaps):
            images[rel] = heatmap_picture(r.attribution[i], x[i], lay)
    layers = [{"node": n.name, "op_type": n.op_type,
               "shape": list(model.graph.shapes[n.outputs[0]]) if n.outputs and n.outputs[0] in model.graph.shapes else None}
              for n in model.graph.nodes]
    return AuditReport(
        model=dict(model_summary(model, source), layers=layers),
        data=data,
        settings=plan.settings(),
        methods=results,
        gates=[o for g in plan.gates for o in evaluate_gate(g, results)],
        x=x,
        images=images,
        input_images=input_files,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        seconds=time.perf_counter() - started,
    )


def model_summary(model: Model, source: str | None = None) -> dict[str, Any]:
    """Name, opset, producer, input and output, op counts and parameter count of a model."""
    proto, g = model.proto, model.graph
    return {
        "name": pathlib.Path(source).name if source else (proto.graph.name or "model"),
        "path": source,
        "opset": next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None),
        "ir_version": int(proto.ir_version),
        "producer": producer(proto),
        "input": {"name": g.input.name, "shape": list(g.input.shape or []), "dtype": str(g.input.dtype)},
        "output": g.output,
        "dropped_softmax": g.dropped_softmax,
        "classes": model.n_classes,
        "nodes": len(proto.graph.node),
        "op_types": dict(sorted(Counter(n.op_type for n in proto.graph.node).items())),
        "parameters": int(sum(int(np.prod(t.dims)) for t in proto.graph.initializer)),
    }


def producer(proto: Any) -> str:
    """The exporter's name and version, without the empty or "None" parts some exporters write
    (tf2onnx's version reads "1.17.0 None")."""
    words = f"{proto.producer_name} {proto.producer_version}".split()
    return " ".join(w for w in words if w != "None")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in name)
