""":func:`audit` and its steps, each usable on its own: :func:`validate` the settings once,
:func:`run_method` one method over a batch of samples (per-sample maps and values; the unit of
work a worker can run on its own batch), :func:`merge` the per-batch results of a method, and
:func:`assemble` the report: checks, gates, pictures and the model and data summaries."""
from __future__ import annotations

import dataclasses
import datetime
import inspect
import os
import pathlib
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence, TextIO

import numpy as np

from ..analysis import faithfulness, randomization
from ..analysis.alignment import input_alignment
from ..analysis.spectral import high_frequency_share, power_spectrum
from ..errors import OnnxAttrError, OptionError
from ..feeds import rows as feed_rows
from ..inputs import load_vocab, read_data, read_feed_data, takes_feeds
from ..layout import check_layout
from ..attribution.registry import attribute, lookup, resolve_options
from ..model import Model, load
from ..viz import heatmap_picture, input_picture
from .gates import Gate, evaluate_gate, sanity_checks
from .metrics import ANALYSES, DEFAULT_METHODS
from .progress import Progress
from .results import AuditReport, MethodResult
from .text import text_summary

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
    resolved = {m: resolve_options(lookup(m), options.get(m, {})) for m in methods}
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


def run_method(model: Model, x: np.ndarray, targets: np.ndarray, name: str, plan: AuditPlan,
               layout: str | None = None, classes: int | None = None, bar: Progress | None = None) -> MethodResult:
    """One method over a batch: its maps and the per-sample values of every planned analysis.

    Args:
        model: the loaded model; ``x``: a checked float32 batch, or checked feeds {input name: array}
            (a text model: the maps are at its ``wrt`` tensor, features are tokens);
            ``targets``: one int per sample (or (position, index) pairs).
        name: the method; its options are ``plan.options[name]``.
        layout: "NCHW"/"NHWC" for an image batch (features are pixels), else None (scalars).
        classes: entries of the explained output per sample (default: from a forward pass).
        bar: advanced once per step.
    Returns:
        :class:`MethodResult` with per-sample values; :func:`merge` joins those of several batches.
    """
    bar = bar or Progress(1, stream=False)
    analyses, opts, seed = plan.analyses, plan.options[name], plan.seed
    if classes is None:
        classes = int(np.prod(model(x).shape[1:]))
    started = time.perf_counter()
    try:
        bar.label(f"{name}: attribution")
        a = attribute(model, x, target=targets, method=name, **opts)
        bar.step()
        r = MethodResult(name, opts, a)
        if "randomization" in analyses:
            bar.label(f"{name}: randomization")
            r.randomization = randomization.randomization_test(
                model, x, targets, name, "cascading", seed, layout, **_passable(opts, randomization.randomization_test))
            bar.step()
        if "class_sensitivity" in analyses:
            bar.label(f"{name}: class sensitivity")
            if classes >= 2:
                r.class_sensitivity = randomization.class_sensitivity(
                    model, x, name, n_classes=1, seed=seed, **_passable(opts, randomization.class_sensitivity))
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
            r.sensitivity_n = faithfulness.sensitivity_n(model, x, a, targets, ns=faithfulness.default_ns(features, plan.n_sizes),
                                                         n_subsets=plan.n_subsets, seed=seed, **perturb)
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
        joined[f] = sum(values, []) if isinstance(values[0], list) else np.concatenate(values, axis=axis)
    return dataclasses.replace(obj, **joined)


_CURVE = {"scores": 0, "normalized": 0, "auc": 0, "raw_auc": 0, "undefined": 0}


def merge(parts: Sequence[MethodResult]) -> MethodResult:
    """The results of one method on several batches, as one result over their samples in order
    (per-sample values concatenated; the means follow from them)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    cat = lambda f, axes: _cat(getattr(first, f), [getattr(p, f) for p in parts], axes)  # noqa: E731
    s = cat("sensitivity_n", {"per_input": 1, "undefined": 0})
    if s is not None:
        s = dataclasses.replace(s, correlation=faithfulness.nanmean(s.per_input, axis=1))
    spectrum = None
    if first.spectrum is not None:
        spectrum = (first.spectrum[0], np.concatenate([p.spectrum[1] for p in parts]))
    return dataclasses.replace(
        first,
        attribution=np.concatenate([p.attribution for p in parts]),
        seconds=sum(p.seconds for p in parts),
        randomization=cat("randomization", {"spearman": 1, "spearman_abs": 1, "ssim": 1, "original": 0,
                                            "target": 0, "maps": 1}),
        class_sensitivity=cat("class_sensitivity", {f.name: 0 for f in dataclasses.fields(randomization.ClassSensitivity)}),
        deletion=cat("deletion", _CURVE),
        insertion=cat("insertion", _CURVE),
        sensitivity_n=s,
        alignment=None if first.alignment is None else np.concatenate([p.alignment for p in parts]),
        spectrum=spectrum,
        high_fraction=None if first.high_fraction is None else np.concatenate([p.high_fraction for p in parts]),
        checks={}, heatmaps=[],
    )


def assemble(model: Model, source: str | None, x: np.ndarray, plan: AuditPlan, results: dict[str, MethodResult],
             data: dict[str, Any], started: float) -> AuditReport:
    """The report from the per-method results over the whole sample: the sanity checks, the
    gates, the pictures of the first ``plan.heatmaps`` inputs, and the model summary. ``data``
    is the report's data section (its ``layout`` decides how pictures are drawn)."""
    lay = data["layout"]
    text = isinstance(x, dict)
    classes = model.n_classes or int(np.prod(model(feed_rows(x, 0, 1) if text else x[:1]).shape[1:]))
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


def audit(
    model_or_path: Model | str | os.PathLike,
    data: np.ndarray | str | os.PathLike | Sequence[str | os.PathLike],
    methods: Sequence[str] = DEFAULT_METHODS,
    target: Any = None,
    sample: int | None = 8,
    heatmaps: int = 4,
    gates: Iterable[str | Gate] = (),
    out_dir: str | os.PathLike | None = None,
    progress: bool | TextIO = True,
    options: dict[str, dict[str, Any]] | None = None,
    analyses: Sequence[str] = ANALYSES,
    curve_steps: int = 20,
    n_subsets: int = 20,
    n_sizes: int = 6,
    runtime: str = "onnxruntime",
    seed: int = 0,
    randomization_threshold: float = 0.5,
    class_threshold: float = 0.5,
    layout: str | None = None,
    resize: tuple[int, int] | None = None,
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (1.0,),
    device: str = "cpu",
    input_name: str | None = None,
    output_name: str | None = None,
    wrt: str | None = None,
    vocab: str | os.PathLike | None = None,
) -> AuditReport:
    """Run ``methods`` over a sample of ``data``: heatmaps, sanity checks, faithfulness, alignment
    and spectra, and evaluate ``gates``.

    Computed per method on the sample:

    - the maps, drawn as heatmaps (PNG) for the first few inputs;
    - two sanity checks with pass/fail (Adebayo et al. 2018): ``randomization`` (cascading
      model-parameter randomization; passes when mean |Spearman| between the original map and
      the fully randomized model's map is below ``randomization_threshold``) and
      ``class_sensitivity`` (passes when mean Spearman between the predicted class's map and the
      least likely class's map is below ``class_threshold``);
    - faithfulness: deletion and insertion curves of the target's probability (softmax over the
      classes, the sigmoid of a one-output model; other outputs: the raw value normalised by the
      curve's two ends) and their AUCs (Petsiuk et al. 2018), Sensitivity-n (Ancona et al. 2018);
    - input alignment (cosine between map and input; Sixt et al. 2020), the power spectrum of
      the maps (Muzellec et al. 2024) and the share of power above half the Nyquist frequency.

    Args:
        model_or_path: a loaded :class:`~onnxattr.model.Model` or a path to an ``.onnx`` file.
        data: a float32 batch, or paths: ``.npy``/``.npz`` batches, image files, or folders of
            them (images are preprocessed with ``layout``, ``resize`` (H, W), ``mean``, ``std``).
            For a model fed several inputs or attributed at ``wrt`` (text): a dict {input name:
            array} or ``.npz`` files with one array per graph input, an optional ``target`` and
            an optional ``relevant`` (B, T) mask of the deciding tokens (its relevance mass is
            reported). The randomization and class-sensitivity checks do not run on such
            models yet.
        methods: method names (see :func:`onnxattr.methods`); ``options`` maps a method name to
            its options.
        target: None (each input's argmax), an int, or one int per input of ``data``.
        sample: how many inputs (drawn with ``seed``) every analysis runs on; None or 0: all.
        heatmaps: how many of the sampled inputs get heatmaps in the report.
        gates: requirements (:class:`Gate` or its text); see :meth:`Gate.parse`.
        out_dir: where to write the report (nothing is written when None).
        progress: True: a progress bar on stderr when it is a terminal; False: none; a stream:
            the bar is written there.
        analyses: a subset of :data:`ANALYSES` to run.
        curve_steps: points of the deletion and insertion curves.
        n_subsets, n_sizes: Sensitivity-n's random subsets per size, and the number of sizes
            (log-spaced from 1 to 80% of the features).
        runtime: forward passes of the perturbation metrics: "onnxruntime" or "onnxattr".
        randomization_threshold, class_threshold: the sanity checks' thresholds.
        device, input_name, output_name, wrt: as in :func:`onnxattr.load`, where a path is given.
        vocab: for a text model, a tokenizer.json or a file with one token per line, for the
            token strings of the heatmaps (ids are shown otherwise).
    Returns:
        :class:`AuditReport` (``to_json()`` gives the document of schema ``onnxattr.audit/2``).
    """
    started = time.perf_counter()
    plan = validate(methods, options, analyses, gates, sample=sample, heatmaps=heatmaps, curve_steps=curve_steps,
                    n_subsets=n_subsets, n_sizes=n_sizes, runtime=runtime, seed=seed,
                    randomization_threshold=randomization_threshold, class_threshold=class_threshold)
    model = (model_or_path if isinstance(model_or_path, Model)
             else load(model_or_path, device=device, input_name=input_name, output_name=output_name, wrt=wrt))
    source = None if isinstance(model_or_path, Model) else str(model_or_path)
    if vocab is not None and not takes_feeds(model):
        raise OptionError(f"vocab is for text models (fed token ids, attributed with wrt=); {model!r} is not")
    if takes_feeds(model):
        return _audit_feeds(model, source, data, plan, target, seed, vocab, out_dir, progress, started)
    x_all, sources, n_total, picked = read_data(data, model, sample, seed, layout, resize, mean, std)
    x = model.check_input(x_all, "data")
    lay = check_layout(layout, x.shape) if x.ndim == 4 else None
    logits = model(x).reshape(len(x), -1)
    predicted = logits.argmax(axis=1)
    given = _given_targets(model, target, n_total, picked, len(x))
    targets = predicted if given is None else given

    bar = Progress(len(plan.methods) * plan.steps_per_method, progress)
    results: dict[str, MethodResult] = {}
    try:
        for name in plan.methods:
            results[name] = run_method(model, x, targets, name, plan, lay, logits.shape[1], bar)
    finally:
        bar.close()
    data_section = {
        "sources": sources, "n_inputs": n_total, "sample": [int(i) for i in picked], "shape": list(x.shape),
        "layout": lay, "target": "argmax" if given is None else "given",
        "targets": [int(v) for v in targets], "predicted": [int(v) for v in predicted],
    }
    report = assemble(model, source, x, plan, results, data_section, started)
    if out_dir is not None:
        report.write(out_dir)
    return report


def _audit_feeds(model: Model, source: str | None, data: Any, plan: AuditPlan, target: Any, seed: int,
                 vocab: str | os.PathLike | None, out_dir: str | os.PathLike | None, progress: bool | TextIO,
                 started: float) -> AuditReport:
    """:func:`audit` of a model fed a dict {input name: array} (a text model, ``wrt=``): the
    data are feeds (:func:`onnxattr.inputs.read_feed_data`), the maps are at the ``wrt`` tensor,
    features are its tokens, the heatmaps are the tokens coloured per method, and where the data
    mark the deciding tokens (``relevant``) the relevance mass on them is reported."""
    tokens = None if vocab is None else load_vocab(vocab)
    text, sources, n_total, picked = read_feed_data(data, model, plan.sample, seed)
    x, n = model.check_feeds(text.feeds, "data"), len(picked)
    plan = _without_sanity_checks(plan)
    out = model(x)
    predicted = model.resolve_target(None, out, x)
    if target is None and text.target is not None:  # the data's own targets, sampled with it
        given = model.check_target(text.target, n)
    else:
        given = _given_targets(model, target, n_total, picked, n)
    targets = predicted if given is None else given
    bar = Progress(len(plan.methods) * plan.steps_per_method, progress)
    results: dict[str, MethodResult] = {}
    try:
        for name in plan.methods:
            results[name] = run_method(model, x, targets, name, plan, None, int(np.prod(out.shape[1:])), bar)
    finally:
        bar.close()
    data_section = {
        "sources": sources, "n_inputs": n_total, "sample": [int(i) for i in picked],
        "shape": {k: list(v.shape) for k, v in x.items()}, "layout": None,
        "target": "argmax" if given is None else "given",
        "targets": np.asarray(targets).tolist(), "predicted": np.asarray(predicted).tolist(),
        "text": text_summary(model, x, text.relevant, {k: r.attribution for k, r in results.items()},
                             min(plan.heatmaps, n), tokens),
    }
    report = assemble(model, source, x, plan, results, data_section, started)
    if out_dir is not None:
        report.write(out_dir)
    return report


def _without_sanity_checks(plan: AuditPlan) -> AuditPlan:
    """``plan`` for a model fed a dict (text): the randomization and class-sensitivity checks do
    not run on those yet, so they are left out, and a gate that needs them is refused."""
    skipped = ("randomization", "class_sensitivity")
    for g in plan.gates:
        if any(a in skipped for a in g.analyses):
            raise OptionError(f"gate {g.text!r} needs a sanity check, which does not run yet on a model fed "
                              f"several inputs or attributed at a wrt tensor")
    return dataclasses.replace(plan, analyses=tuple(a for a in plan.analyses if a not in skipped))


def _given_targets(model: Model, target: Any, n_total: int, picked: np.ndarray, n: int) -> np.ndarray | None:
    """The given target for the sampled inputs (one per input of the data is sampled with them)."""
    if target is None:
        return None
    t = np.asarray(target)
    if t.ndim == 1 and t.shape[0] == n_total and n_total != n:
        t = t[picked]
    return model.check_target(t, n)


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
