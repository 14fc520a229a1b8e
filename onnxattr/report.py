"""The audit: every chosen method run over a data sample, checked and scored, as one report.

:func:`audit` computes, for each method, on a seeded sample of the data:

- the maps, drawn as heatmaps (PNG) for the first few inputs;
- two sanity checks with pass/fail (Adebayo et al. 2018): ``randomization`` (cascading
  model-parameter randomization; passes when mean |Spearman| between the original map and the
  fully randomized model's map is below ``randomization_threshold``, default 0.5) and
  ``class_sensitivity`` (passes when mean Spearman between the predicted class's map and the
  least likely class's map is below ``class_threshold``, default 0.5);
- faithfulness: deletion and insertion curves and AUCs (Petsiuk et al. 2018), Sensitivity-n
  (Ancona et al. 2018);
- input alignment (cosine between map and input; Sixt et al. 2020) and the power spectrum of the
  maps (Muzellec et al. 2024) with the share of power above half the Nyquist frequency.

Gates (:class:`Gate`, e.g. ``"insertion.auc>=0.5"`` or ``"randomization"``) turn these into a
single ``passed`` for CI. :class:`AuditReport` holds everything; ``to_json()`` gives the versioned
document (schema ``onnxattr.audit/1``, below) and ``write(out_dir)`` writes ``report.json``,
``report.html`` (plots as inline SVG) and the heatmap PNGs it references under ``images/``.

JSON schema ``onnxattr.audit/1`` (NaN is written as null)::

    schema            "onnxattr.audit/1"
    onnxattr_version  str
    created           ISO 8601 time (UTC)
    seconds           how long the audit took
    passed            bool: every gate passed (true when there are no gates)
    model             {name, path, opset, ir_version, producer, input: {name, shape, dtype},
                       output, dropped_softmax, classes, nodes, op_types: {op: count},
                       parameters, layers: [{node, op_type, shape}]}
    data              {sources: [str], n_inputs, sample: [index], shape, layout,
                       target: "argmax" | "given", targets: [int], predicted: [int]}
    settings          {methods, sample, heatmaps, curve_steps, n_subsets, n_sizes, runtime,
                       seed, analyses, randomization_threshold, class_threshold}
    methods           {METHOD: {options, seconds,
                         metrics: {METRIC: number | null},       # the gateable values, METRICS
                         checks: {CHECK: {passed: bool | null, value, threshold, rule}},
                         randomization: {layers, spearman, spearman_abs, ssim} | null,
                         class_sensitivity: {spearman_least, spearman_other,
                                             cosine_least} | null,
                         deletion / insertion: {fractions, mean_curve, auc} | null,
                         sensitivity_n: {ns, correlation} | null,
                         alignment: {cosine} | null,
                         spectrum: {frequencies, power, high_fraction} | null,
                         heatmaps: [file]}}
    gates             [{gate, method, metric, value, passed, detail}]
    files             {inputs: [file]}            # input images of the heatmap rows

Per-input lists follow ``data.sample``. ``checks[...].passed`` is null where a check does not
apply (class sensitivity of a one-output model). Files are relative to the report's folder.
"""
from __future__ import annotations

import datetime
import html
import inspect
import json
import math
import os
import pathlib
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence, TextIO

import numpy as np

from .analysis import faithfulness, randomization
from .analysis.alignment import input_alignment
from .analysis.spectral import power_spectrum
from .errors import InputError, OnnxAttrError, OptionError
from .inputs import IMAGE_SUFFIXES, load_batch
from .layout import check_layout
from .attribution.registry import attribute, lookup, resolve_options
from .model import Model, load
from .viz import heatmap, to_2d, to_image

SCHEMA = "onnxattr.audit/1"
DEFAULT_METHODS = ("gradient", "input_x_gradient", "guided_backprop", "lrp.epsilon_plus_flat")
ANALYSES = ("randomization", "class_sensitivity", "deletion", "insertion", "sensitivity_n", "alignment", "spectrum")
CHECKS = ("randomization", "class_sensitivity")

#: metric -> (analysis that computes it, better direction "lower"/"higher"/None, meaning)
METRICS: dict[str, tuple[str, str | None, str]] = {
    "randomization.spearman": ("randomization", "lower",
                               "mean |Spearman| of the map vs the fully randomized model's map (signed maps)"),
    "randomization.spearman_abs": ("randomization", "lower", "the same on the absolute maps"),
    "randomization.ssim": ("randomization", "lower", "mean SSIM of the absolute maps, original vs fully randomized"),
    "class_sensitivity.spearman": ("class_sensitivity", "lower",
                                   "mean Spearman of the predicted class's map vs the least likely class's map"),
    "deletion.auc": ("deletion", "lower", "mean normalised area under the deletion curve"),
    "insertion.auc": ("insertion", "higher", "mean normalised area under the insertion curve"),
    "sensitivity_n.mean": ("sensitivity_n", "higher", "Sensitivity-n correlation averaged over the subset sizes"),
    "alignment.cosine": ("alignment", None, "mean cosine between map and input"),
    "spectrum.high_fraction": ("spectrum", None, "share of the maps' power above half the Nyquist frequency"),
}


# ---- gates ------------------------------------------------------------------------------------
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, ">": lambda a, b: a > b,
}
_GATE = re.compile(r"^\s*(?:(?P<method>[^:\s<>=]+)\s*:)?\s*(?P<metric>[a-z_]+(?:\.[a-z_]+)?)\s*"
                   r"(?:(?P<op><=|>=|<|>)\s*(?P<value>\S+))?\s*$")


@dataclass(frozen=True)
class Gate:
    """A requirement on the audit: ``[METHOD:]CHECK`` (the sanity check passes) or
    ``[METHOD:]METRIC OP NUMBER`` with OP one of ``< <= > >=``. Without METHOD it applies to
    every audited method. CHECK is ``randomization``, ``class_sensitivity`` or ``sanity`` (both);
    METRIC is a key of :data:`METRICS`. A value that could not be computed fails the gate."""

    text: str
    metric: str
    op: str | None = None
    value: float | None = None
    method: str | None = None

    @classmethod
    def parse(cls, text: str) -> "Gate":
        m = _GATE.match(text)
        if m is None:
            raise OptionError(f"cannot read gate {text!r}: write [METHOD:]CHECK or [METHOD:]METRIC OP NUMBER, "
                              f"e.g. 'randomization' or 'insertion.auc>=0.5'")
        metric, op, value = m["metric"], m["op"], m["value"]
        if op is None:
            if metric not in CHECKS + ("sanity",):
                hint = (" (quote the gate: a shell reads > and < as redirections)" if metric in METRICS else "")
                raise OptionError(f"gate {text!r} has no comparison and {metric!r} is not a check{hint}; "
                                  f"checks: {list(CHECKS) + ['sanity']}")
            return cls(text.strip(), metric, method=m["method"])
        if metric not in METRICS:
            raise OptionError(f"gate {text!r}: unknown metric {metric!r}; metrics: {sorted(METRICS)}")
        try:
            number = float(value)
        except ValueError:
            raise OptionError(f"gate {text!r}: {value!r} is not a number") from None
        if not math.isfinite(number):
            raise OptionError(f"gate {text!r}: the threshold must be a finite number")
        return cls(text.strip(), metric, op, number, m["method"])

    @property
    def analyses(self) -> tuple[str, ...]:
        """The analyses this gate needs."""
        if self.metric == "sanity":
            return CHECKS
        if self.metric in CHECKS:
            return (self.metric,)
        return (METRICS[self.metric][0],)


@dataclass
class GateOutcome:
    """One gate on one method: the value it read, whether it passed, and why."""

    gate: str
    method: str
    metric: str
    value: float | None
    passed: bool
    detail: str


@dataclass
class Check:
    """A sanity check's outcome: ``passed`` (None where it does not apply), the value compared,
    the threshold and the rule in words."""

    name: str
    passed: bool | None
    value: float | None
    threshold: float
    rule: str


# ---- per-method results -----------------------------------------------------------------------
@dataclass
class MethodResult:
    """Everything the audit computed for one method (the analysis objects of
    :mod:`onnxattr.analysis` are kept as they are; None where an analysis was skipped or does not
    apply)."""

    name: str
    options: dict[str, Any]
    attribution: np.ndarray
    seconds: float = 0.0
    randomization: randomization.Randomization | None = None
    class_sensitivity: randomization.ClassSensitivity | None = None
    deletion: faithfulness.Curve | None = None
    insertion: faithfulness.Curve | None = None
    sensitivity_n: faithfulness.SensitivityN | None = None
    alignment: np.ndarray | None = None
    spectrum: tuple[np.ndarray, np.ndarray] | None = None
    high_fraction: float | None = None
    checks: dict[str, Check] = field(default_factory=dict)
    heatmaps: list[str] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, float | None]:
        """The gateable values (keys of :data:`METRICS`); None where not computed."""
        r, c = self.randomization, self.class_sensitivity
        return {
            "randomization.spearman": None if r is None else _mean(np.abs(r.spearman[-1])),
            "randomization.spearman_abs": None if r is None else _mean(np.abs(r.spearman_abs[-1])),
            "randomization.ssim": None if r is None else _mean(r.ssim[-1]),
            "class_sensitivity.spearman": None if c is None else _mean(c.spearman_least),
            "deletion.auc": None if self.deletion is None else _mean(self.deletion.auc),
            "insertion.auc": None if self.insertion is None else _mean(self.insertion.auc),
            "sensitivity_n.mean": None if self.sensitivity_n is None else _mean(self.sensitivity_n.correlation),
            "alignment.cosine": None if self.alignment is None else _mean(self.alignment),
            "spectrum.high_fraction": self.high_fraction,
        }

    def to_json(self) -> dict[str, Any]:
        r, c = self.randomization, self.class_sensitivity
        return {
            "options": _plain(self.options),
            "seconds": round(self.seconds, 3),
            "metrics": _plain(self.metrics),
            "checks": {k: _plain(vars(v)) for k, v in self.checks.items()},
            "randomization": None if r is None else {
                "layers": r.layers,
                "spearman": _plain(_nanmean_rows(np.abs(r.spearman))),
                "spearman_abs": _plain(_nanmean_rows(np.abs(r.spearman_abs))),
                "ssim": _plain(_nanmean_rows(r.ssim)),
            },
            "class_sensitivity": None if c is None else {
                "spearman_least": _plain(c.spearman_least),
                "spearman_other": _plain(c.spearman_others[:, 0]),
                "cosine_least": _plain(c.cosine_least),
            },
            "deletion": _curve_json(self.deletion),
            "insertion": _curve_json(self.insertion),
            "sensitivity_n": None if self.sensitivity_n is None else {
                "ns": _plain(self.sensitivity_n.ns), "correlation": _plain(self.sensitivity_n.correlation),
            },
            "alignment": None if self.alignment is None else {"cosine": _plain(self.alignment)},
            "spectrum": None if self.spectrum is None else {
                "frequencies": _plain(self.spectrum[0]), "power": _plain(self.spectrum[1]),
                "high_fraction": _plain(self.high_fraction),
            },
            "heatmaps": list(self.heatmaps),
        }


@dataclass
class AuditReport:
    """What :func:`audit` returns. ``passed`` is True when every gate passed."""

    model: dict[str, Any]
    data: dict[str, Any]
    settings: dict[str, Any]
    methods: dict[str, MethodResult]
    gates: list[GateOutcome]
    x: np.ndarray
    #: relative path -> RGB uint8 image; written by :meth:`write`
    images: dict[str, np.ndarray] = field(default_factory=dict)
    input_images: list[str] = field(default_factory=list)
    created: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (schema ``onnxattr.audit/1``, see the module docstring)."""
        from . import __version__

        return {
            "schema": SCHEMA,
            "onnxattr_version": __version__,
            "created": self.created,
            "seconds": round(self.seconds, 3),
            "passed": self.passed,
            "model": _plain(self.model),
            "data": _plain(self.data),
            "settings": _plain(self.settings),
            "methods": {name: r.to_json() for name, r in self.methods.items()},
            "gates": [_plain(vars(g)) for g in self.gates],
            "files": {"inputs": list(self.input_images)},
        }

    def to_html(self) -> str:
        """The report as one HTML page (plots inline as SVG; heatmaps as the PNGs of ``images``)."""
        return render_html(self)

    def summary(self) -> str:
        """A few lines of text: checks and metrics per method, and the gates."""
        lines = [f"audit of {self.model['name']}: {len(self.data['sample'])} of {self.data['n_inputs']} inputs, "
                 f"{len(self.methods)} method(s), {self.seconds:.1f} s"]
        w = max(len(n) for n in self.methods)
        for name, r in self.methods.items():
            checks = "  ".join(f"{k} {_verdict(c.passed)}" for k, c in r.checks.items())
            m = r.metrics
            scores = "  ".join(f"{k} {_fmt(m[k])}" for k in ("deletion.auc", "insertion.auc", "sensitivity_n.mean")
                               if k.split(".")[0] in self.settings["analyses"])
            lines.append(f"  {name:<{w}}  {checks}  {scores}".rstrip())
        for g in self.gates:
            lines.append(f"  gate {g.gate} [{g.method}]: {'pass' if g.passed else 'FAIL'} ({g.detail})")
        if self.gates:
            lines.append("all gates passed" if self.passed else
                         f"{sum(not g.passed for g in self.gates)} of {len(self.gates)} gate check(s) failed")
        return "\n".join(lines)

    def write(self, out_dir: str | os.PathLike) -> dict[str, pathlib.Path]:
        """Write ``report.json``, ``report.html`` and the images into ``out_dir`` (created);
        returns the paths of the two reports."""
        from PIL import Image

        out = pathlib.Path(out_dir)
        (out / "images").mkdir(parents=True, exist_ok=True)
        for rel, rgb in self.images.items():
            Image.fromarray(rgb).save(out / rel)
        paths = {"json": out / "report.json", "html": out / "report.html"}
        paths["json"].write_text(json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n")
        paths["html"].write_text(self.to_html())
        return paths


# ---- the audit --------------------------------------------------------------------------------
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
) -> AuditReport:
    """Run ``methods`` over a sample of ``data``: heatmaps, sanity checks, faithfulness, alignment
    and spectra, and evaluate ``gates``.

    Args:
        model_or_path: a loaded :class:`~onnxattr.model.Model` or a path to an ``.onnx`` file.
        data: a float32 batch, or paths: ``.npy``/``.npz`` batches, image files, or folders of
            them (images are preprocessed with ``layout``, ``resize`` (H, W), ``mean``, ``std``).
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
        device, input_name, output_name: as in :func:`onnxattr.load`, where a path is given.
    Returns:
        :class:`AuditReport`.
    """
    started = time.perf_counter()
    methods = list(dict.fromkeys(methods))
    if not methods:
        raise OptionError("no method to audit")
    unknown = sorted(set(analyses) - set(ANALYSES))
    if unknown:
        raise OptionError(f"unknown analysis {', '.join(map(repr, unknown))}; choose from {list(ANALYSES)}")
    options = dict(options or {})
    extra = sorted(set(options) - set(methods))
    if extra:
        raise OptionError(f"options given for {extra}, which are not among the audited methods {methods}")
    resolved = {m: resolve_options(lookup(m), options.get(m, {})) for m in methods}
    parsed = [g if isinstance(g, Gate) else Gate.parse(g) for g in gates]
    for g in parsed:
        if g.method is not None and g.method not in methods:
            raise OptionError(f"gate {g.text!r} names method {g.method!r}, which is not audited; methods: {methods}")
        missing = [a for a in g.analyses if a not in analyses]
        if missing:
            raise OptionError(f"gate {g.text!r} needs the analysis {missing[0]!r}, which is skipped")
    for name, v in (("curve_steps", curve_steps), ("n_subsets", n_subsets), ("n_sizes", n_sizes), ("heatmaps", heatmaps + 1)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise OptionError(f"{name} must be a positive int, got {v!r}")
    if sample is not None and (not isinstance(sample, (int, np.integer)) or sample < 0):
        raise OptionError(f"sample must be a non-negative int or None, got {sample!r}")

    model = (model_or_path if isinstance(model_or_path, Model)
             else load(model_or_path, device=device, input_name=input_name, output_name=output_name))
    source = None if isinstance(model_or_path, Model) else str(model_or_path)
    x_all, sources, n_total, picked = _read_data(data, model, sample, seed, layout, resize, mean, std)
    x = model.check_input(x_all, "data")
    lay = check_layout(layout, x.shape) if x.ndim == 4 else None

    logits = model(x).reshape(len(x), -1)
    predicted = logits.argmax(axis=1)
    t = _targets(model, target, n_total, picked, len(x))
    targets = predicted if t is None else t
    classes = logits.shape[1]

    steps_per_method = 1 + sum(a in analyses for a in ANALYSES[:5])
    bar = Progress(len(methods) * steps_per_method, progress)
    results: dict[str, MethodResult] = {}
    images: dict[str, np.ndarray] = {}
    rows = list(range(min(heatmaps, len(x))))
    input_files = []
    for i in rows:
        rel = f"images/input_{i}.png"
        images[rel] = input_picture(x[i], lay)
        input_files.append(rel)
    feature_count = int(np.prod(x.shape[2:] if lay == "NCHW" else x.shape[1:3])) if lay else int(np.prod(x.shape[1:]))
    ns = faithfulness.default_ns(feature_count, n_sizes)
    perturb = dict(runtime=runtime, features="pixel" if lay else "scalar", layout=lay)
    output = "probability" if classes >= 2 else "logit"
    name = ""
    try:
        for name in methods:
            opts = resolved[name]
            t0 = time.perf_counter()
            bar.label(f"{name}: attribution")
            a = attribute(model, x, target=targets, method=name, **opts)
            bar.step()
            r = MethodResult(name, opts, a)
            if "randomization" in analyses:
                bar.label(f"{name}: randomization")
                r.randomization = randomization.randomization_test(
                    model, x, targets, name, "cascading", seed, lay, **_passable(opts, randomization.randomization_test))
                bar.step()
            if "class_sensitivity" in analyses:
                bar.label(f"{name}: class sensitivity")
                if classes >= 2:
                    r.class_sensitivity = randomization.class_sensitivity(
                        model, x, name, n_classes=1, seed=seed, **_passable(opts, randomization.class_sensitivity))
                bar.step()
            if "deletion" in analyses:
                bar.label(f"{name}: deletion")
                r.deletion = faithfulness.deletion(model, x, a, targets, steps=curve_steps, output=output, **perturb)
                bar.step()
            if "insertion" in analyses:
                bar.label(f"{name}: insertion")
                r.insertion = faithfulness.insertion(model, x, a, targets, steps=curve_steps, output=output, **perturb)
                bar.step()
            if "sensitivity_n" in analyses:
                bar.label(f"{name}: sensitivity-n")
                r.sensitivity_n = faithfulness.sensitivity_n(model, x, a, targets, ns=ns, n_subsets=n_subsets,
                                                             seed=seed, **perturb)
                bar.step()
            if "alignment" in analyses:
                r.alignment = input_alignment(a, x)
            if "spectrum" in analyses and x.ndim in (3, 4):
                r.spectrum = power_spectrum(a, lay)
                r.high_fraction = high_frequency_share(a, lay)
            r.checks = _checks(r, analyses, classes, randomization_threshold, class_threshold)
            for i in rows:
                rel = f"images/{_slug(name)}_{i}.png"
                images[rel] = heatmap_picture(a[i], x[i], lay)
                r.heatmaps.append(rel)
            r.seconds = time.perf_counter() - t0
            results[name] = r
    except OnnxAttrError as e:
        e.args = (f"method {name!r}: {e}",)  # which method failed; the exception keeps its class
        raise
    finally:
        bar.close()

    outcomes = [o for g in parsed for o in evaluate_gate(g, results)]
    layers = [{"node": n.name, "op_type": n.op_type,
               "shape": list(model.graph.shapes[n.outputs[0]]) if n.outputs and n.outputs[0] in model.graph.shapes else None}
              for n in model.graph.nodes]
    report = AuditReport(
        model=dict(model_summary(model, source), layers=layers),
        data={
            "sources": sources, "n_inputs": n_total, "sample": [int(i) for i in picked], "shape": list(x.shape),
            "layout": lay, "target": "argmax" if t is None else "given",
            "targets": [int(v) for v in targets], "predicted": [int(v) for v in predicted],
        },
        settings={
            "methods": methods, "sample": sample, "heatmaps": heatmaps, "curve_steps": curve_steps,
            "n_subsets": n_subsets, "n_sizes": n_sizes, "runtime": runtime, "seed": seed,
            "analyses": [a for a in ANALYSES if a in analyses],
            "randomization_threshold": randomization_threshold, "class_threshold": class_threshold,
        },
        methods=results,
        gates=outcomes,
        x=x,
        images=images,
        input_images=input_files,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        seconds=time.perf_counter() - started,
    )
    if out_dir is not None:
        report.write(out_dir)
    return report


def evaluate_gate(gate: Gate, results: dict[str, MethodResult]) -> list[GateOutcome]:
    """The gate's outcome on each method it applies to."""
    out = []
    names = [gate.method] if gate.method else list(results)
    for name in names:
        r = results[name]
        if gate.op is None:
            for check in (CHECKS if gate.metric == "sanity" else (gate.metric,)):
                c = r.checks.get(check)
                if c is None or c.passed is None:
                    out.append(GateOutcome(gate.text, name, check, None, False, f"{check} does not apply to this model"))
                else:
                    key = {"randomization": "randomization.spearman",
                           "class_sensitivity": "class_sensitivity.spearman"}[check]
                    out.append(GateOutcome(gate.text, name, check, c.value, c.passed,
                                           f"{key} = {_fmt(c.value)}, the check requires < {c.threshold:g}"
                                           if c.value is not None else f"{check}: {c.rule}"))
            continue
        value = r.metrics.get(gate.metric)
        if value is None or not math.isfinite(value):
            out.append(GateOutcome(gate.text, name, gate.metric, None, False, f"{gate.metric} could not be computed"))
            continue
        ok = _OPS[gate.op](value, gate.value)
        out.append(GateOutcome(gate.text, name, gate.metric, value, ok,
                               f"{gate.metric} = {_fmt(value)}, required {gate.op} {gate.value:g}"))
    return out


def _passable(options: dict[str, Any], analysis: Callable[..., Any]) -> dict[str, Any]:
    """The method options that ``analysis`` can pass on: an option named like one of the
    analysis's own parameters (SmoothGrad's ``seed``) cannot be, and keeps its default there."""
    own = set(inspect.signature(analysis).parameters)
    return {k: v for k, v in options.items() if k not in own}


_UNDEFINED = "; undefined (constant maps), so it fails"


def _checks(r: MethodResult, analyses: Sequence[str], classes: int, rand_t: float, class_t: float) -> dict[str, Check]:
    m = r.metrics
    checks = {}
    if "randomization" in analyses:
        v = m["randomization.spearman"]
        checks["randomization"] = Check(
            "randomization", v is not None and v < rand_t, v, rand_t,
            f"mean |Spearman| (original vs fully randomized model) < {rand_t:g}" + _UNDEFINED * (v is None))
    if "class_sensitivity" in analyses:
        v = m["class_sensitivity.spearman"]
        rule = f"mean Spearman (predicted vs least likely class) < {class_t:g}"
        if classes < 2:
            checks["class_sensitivity"] = Check("class_sensitivity", None, None, class_t, rule + " (one output: n/a)")
        else:
            checks["class_sensitivity"] = Check("class_sensitivity", v is not None and v < class_t, v, class_t,
                                                rule + _UNDEFINED * (v is None))
    return checks


def model_summary(model: Model, source: str | None = None) -> dict[str, Any]:
    """Name, opset, producer, input and output, op counts and parameter count of a model."""
    proto, g = model.proto, model.graph
    return {
        "name": pathlib.Path(source).name if source else (proto.graph.name or "model"),
        "path": source,
        "opset": next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None),
        "ir_version": int(proto.ir_version),
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "input": {"name": g.input.name, "shape": list(g.input.shape or []), "dtype": str(g.input.dtype)},
        "output": g.output,
        "dropped_softmax": g.dropped_softmax,
        "classes": model.n_classes,
        "nodes": len(proto.graph.node),
        "op_types": dict(sorted(Counter(n.op_type for n in proto.graph.node).items())),
        "parameters": int(sum(int(np.prod(t.dims)) for t in proto.graph.initializer)),
    }


# ---- data -------------------------------------------------------------------------------------
DATA_SUFFIXES = (".npy", ".npz") + IMAGE_SUFFIXES


def data_files(paths: Sequence[str | os.PathLike]) -> list[pathlib.Path]:
    """The files named by ``paths``: files as given, folders expanded to their images and
    .npy/.npz files (sorted). InputError for a path that does not exist or an empty folder."""
    files: list[pathlib.Path] = []
    for p in map(pathlib.Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in DATA_SUFFIXES)
            if not found:
                raise InputError(f"{p}: folder holds no images ({', '.join(IMAGE_SUFFIXES)}) or .npy/.npz files")
            files += found
        elif p.is_file():
            files.append(p)
        elif p.exists():
            raise InputError(f"{p}: not a file or folder")
        else:
            raise InputError(f"{p}: no such file or folder")
    if not files:
        raise InputError("no input files given")
    return files


def read_inputs(paths: Sequence[str | os.PathLike], model: Model, layout: str | None = None,
                resize: tuple[int, int] | None = None, mean: Sequence[float] = (0.0,),
                std: Sequence[float] = (1.0,)) -> np.ndarray:
    """A float32 batch from files and folders (see :func:`data_files`), images preprocessed for
    ``model``; InputError where images are given to a model whose input is not an image batch."""
    files = data_files(paths)
    shape = model.input_shape
    if any(f.suffix.lower() in IMAGE_SUFFIXES for f in files) and shape is not None and len(shape) != 4:
        raise InputError(f"input {model.input_name!r} has shape {_show(shape)}, not an image batch; "
                         f"give .npy/.npz arrays instead of images")
    return load_batch([str(f) for f in files], shape, layout, resize, mean, std)


def _read_data(data: Any, model: Model, sample: int | None, seed: int, layout: str | None,
               resize: tuple[int, int] | None, mean: Sequence[float],
               std: Sequence[float]) -> tuple[np.ndarray, list[str], int, np.ndarray]:
    """(sampled batch, sources, number of inputs, indices picked)."""
    if isinstance(data, np.ndarray):
        x, sources = data, ["array"]
    else:
        paths = [data] if isinstance(data, (str, os.PathLike)) else list(data)
        files = data_files(paths)
        sources = [str(f) for f in files]
        if all(f.suffix.lower() in IMAGE_SUFFIXES for f in files):  # one sample per file: sample paths first
            picked = _pick(len(files), sample, seed)
            return read_inputs([files[i] for i in picked], model, layout, resize, mean, std), sources, len(files), picked
        x = read_inputs(files, model, layout, resize, mean, std)
    if x.ndim == 0 or x.shape[0] == 0:
        raise InputError(f"the data holds no inputs (shape {x.shape})")
    picked = _pick(x.shape[0], sample, seed)
    return x[picked], sources, int(x.shape[0]), picked


def _pick(n: int, sample: int | None, seed: int) -> np.ndarray:
    if not sample or sample >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))


def _targets(model: Model, target: Any, n_total: int, picked: np.ndarray, n: int) -> np.ndarray | None:
    if target is None:
        return None
    t = np.asarray(target)
    if t.ndim == 1 and t.shape[0] == n_total and n_total != n:
        t = t[picked]
    return model.check_target(t, n)


# ---- pictures ---------------------------------------------------------------------------------
PICTURE_SIZE = 128


def _enlarge(rgb: np.ndarray, size: int = PICTURE_SIZE) -> np.ndarray:
    h, w = rgb.shape[:2]
    k = max(1, size // max(h, w))
    return np.repeat(np.repeat(rgb, k, axis=0), k, axis=1)


def _strip(rgb: np.ndarray) -> np.ndarray:
    """A (1, F, 3) picture of a vector, made about twice PICTURE_SIZE wide and 24 pixels high."""
    k = max(1, PICTURE_SIZE * 2 // max(1, rgb.shape[1]))
    return np.repeat(np.repeat(rgb, 24, axis=0), k, axis=1)


def heatmap_picture(a: np.ndarray, x: np.ndarray, layout: str | None) -> np.ndarray:
    """One sample's map as an RGB uint8 picture: over the grey input for images (``layout`` set),
    the map alone for 2-D maps, a colour strip for vectors and other ranks."""
    if layout is not None:
        return _enlarge(heatmap(to_2d(a[None], layout)[0], to_image(x, layout)))
    if a.ndim == 2:
        return _enlarge(heatmap(a))
    return _strip(heatmap(np.ravel(a)[None, :]))


def input_picture(x: np.ndarray, layout: str | None) -> np.ndarray:
    """One input sample as an RGB uint8 picture: the image for images (``layout`` set), grey
    (min-max scaled) for 2-D samples, a grey strip for vectors and other ranks."""
    if layout is not None:
        return _enlarge((np.clip(to_image(x, layout), 0, 1) * 255).round().astype(np.uint8))
    v = np.asarray(x, dtype=np.float64)
    v = v if v.ndim == 2 else v.reshape(1, -1)
    lo, hi = v.min(), v.max()
    grey = ((v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)) * 255
    rgb = np.repeat(grey.round().astype(np.uint8)[..., None], 3, axis=-1)
    return _enlarge(rgb) if np.ndim(x) == 2 else _strip(rgb)


def high_frequency_share(a: np.ndarray, layout: str | None, above: float = 0.25) -> float:
    """Mean over samples of the share of a map's spectral power |FFT2|^2 at radial frequencies
    >= ``above`` cycles/pixel (default half the Nyquist frequency); maps summed over channels."""
    maps = to_2d(np.asarray(a, dtype=np.float64), layout) if np.ndim(a) == 4 else np.asarray(a, dtype=np.float64)
    h, w = maps.shape[1:]
    power = np.abs(np.fft.fft2(maps, axes=(1, 2))) ** 2
    r = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
    total = power.sum(axis=(1, 2))
    high = power[:, r >= above].sum(axis=1)
    return _mean(np.where(total > 0, high / np.where(total > 0, total, 1.0), np.nan))


# ---- progress ---------------------------------------------------------------------------------
class Progress:
    """A one-line progress bar: ``[#####.....] 5/10  12s  gradient: deletion``, redrawn in place."""

    def __init__(self, total: int, stream: bool | TextIO = True, width: int = 24) -> None:
        if stream is True:
            stream = sys.stderr if getattr(sys.stderr, "isatty", lambda: False)() else False
        self.stream: TextIO | None = stream or None
        self.total, self.done, self.width = max(1, total), 0, width
        self.text = ""
        self.started = time.perf_counter()
        self.last = 0

    def label(self, text: str) -> None:
        self.text = text
        self._draw()

    def step(self) -> None:
        self.done += 1
        self._draw()

    def _draw(self) -> None:
        if self.stream is None:
            return
        filled = self.width * self.done // self.total
        line = (f"onnxattr audit [{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} "
                f"{time.perf_counter() - self.started:4.0f}s  {self.text}")
        self.stream.write("\r" + line.ljust(self.last))
        self.stream.flush()
        self.last = len(line)

    def close(self) -> None:
        if self.stream is not None and self.last:
            self.stream.write("\n")
            self.stream.flush()
            self.last = 0


# ---- HTML -------------------------------------------------------------------------------------
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")

CSS = """
body { font: 15px/1.45 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: #1f2328;
       margin: 0; background: #f6f8fa; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px; } h2 { font-size: 20px; margin: 32px 0 8px; border-bottom: 1px solid #d0d7de;
  padding-bottom: 4px; } h3 { font-size: 16px; margin: 16px 0 6px; }
.meta { color: #59636e; font-size: 13px; } .note { color: #59636e; font-size: 13px; max-width: 900px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 14px; }
th, td { border: 1px solid #d0d7de; padding: 4px 10px; text-align: left; vertical-align: middle; }
th { background: #f6f8fa; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums;
  white-space: nowrap; } td.name { white-space: nowrap; }
.badge { display: inline-block; padding: 1px 9px; border-radius: 10px; font-weight: 600; font-size: 13px; color: #fff; }
.pass { background: #1a7f37; } .fail { background: #cf222e; } .na { background: #8c959f; }
.verdict { font-size: 18px; padding: 4px 14px; border-radius: 14px; margin-left: 10px; vertical-align: middle; }
.grid td { text-align: center; padding: 6px; } .grid img { display: block; margin: 0 auto; image-rendering: pixelated; }
.grid .cap { font-size: 12px; color: #59636e; }
.plots { display: flex; flex-wrap: wrap; gap: 18px; } .plots figure { margin: 0; }
figcaption { font-size: 13px; color: #59636e; max-width: 460px; }
code { background: #f6f8fa; padding: 0 4px; border-radius: 4px; font-size: 13px; }
details summary { cursor: pointer; color: #0969da; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 5px; vertical-align: -1px; }
.colorbar { display: inline-block; width: 160px; height: 12px; vertical-align: middle; border: 1px solid #d0d7de;
  background: linear-gradient(to right, #053061, #4393c3, #f7f7f7, #d6604d, #67001f); }
"""


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _badge(passed: bool | None, text: str | None = None) -> str:
    cls, word = ("na", "n/a") if passed is None else (("pass", "pass") if passed else ("fail", "fail"))
    return f'<span class="badge {cls}">{_e(text or word)}</span>'


def render_html(r: AuditReport) -> str:
    """The report page (see :meth:`AuditReport.to_html`)."""
    names = list(r.methods)
    colors = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    verdict = _badge(r.passed, "PASSED" if r.passed else "FAILED").replace('class="badge', 'class="badge verdict')
    gate_note = "" if r.gates else " (no gates were set)"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>onnxattr audit: {_e(r.model['name'])}</title>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<style>{CSS}</style></head><body><main>",
        f"<h1>Attribution audit: {_e(r.model['name'])}{verdict}</h1>",
        f'<p class="meta">{len(r.data["sample"])} of {r.data["n_inputs"]} inputs &middot; {len(names)} method(s) '
        f"&middot; {r.seconds:.1f} s &middot; {_e(r.created)} &middot; onnxattr {_e(_version())} &middot; "
        f"schema <code>{SCHEMA}</code>{gate_note}</p>",
    ]
    parts += _summary_section(r, colors)
    parts += _gates_section(r, colors)
    parts += _heatmap_section(r)
    parts += _sanity_section(r, colors)
    parts += _faithfulness_section(r, colors)
    parts += _spectrum_section(r, colors)
    parts += _model_section(r)
    parts.append("</main></body></html>")
    return "\n".join(parts) + "\n"


def _version() -> str:
    from . import __version__

    return __version__


def _method_cell(name: str, colors: dict[str, str]) -> str:
    return f'<span class="swatch" style="background:{colors[name]}"></span><code>{_e(name)}</code>'


def _summary_section(r: AuditReport, colors: dict[str, str]) -> list[str]:
    out = ["<h2>Summary</h2>",
           '<p class="note">One row per method. Sanity checks (Adebayo et al. 2018) pass when the map changes: '
           "when the model's weights are randomized, and when another class is explained. Deletion AUC: lower "
           "is better; insertion AUC and Sensitivity-n: higher is better (Petsiuk et al. 2018; Ancona et al. "
           "2018).</p>",
           "<table><tr><th>method</th><th>randomization</th><th>class sensitivity</th><th>deletion AUC &darr;</th>"
           "<th>insertion AUC &uarr;</th><th>Sensitivity-n &uarr;</th><th>input alignment</th>"
           "<th>high-freq. power</th><th>time</th></tr>"]
    for name, m in r.methods.items():
        v = m.metrics
        cells = [_method_cell(name, colors)]
        for check, key in (("randomization", "randomization.spearman"), ("class_sensitivity", "class_sensitivity.spearman")):
            c = m.checks.get(check)
            cells.append("&ndash;" if c is None else f"{_badge(c.passed)} {_fmt(v[key])}")
        for key in ("deletion.auc", "insertion.auc", "sensitivity_n.mean", "alignment.cosine", "spectrum.high_fraction"):
            cells.append(_fmt(v[key]) if v[key] is not None else "&ndash;")
        cells.append(f"{m.seconds:.1f} s")
        out.append("<tr>" + "".join(f'<td class="num">{c}</td>' if i > 0 else f'<td class="name">{c}</td>'
                                    for i, c in enumerate(cells)) + "</tr>")
    out.append("</table>")
    return out


def _gates_section(r: AuditReport, colors: dict[str, str]) -> list[str]:
    """The gates as a table: a row per gate (a 'sanity' gate gives a row per check), a column per
    method; each cell the value read and pass/fail (hover: the detail)."""
    if not r.gates:
        return []
    names = list(r.methods)
    rows: dict[tuple[str, str], dict[str, GateOutcome]] = {}
    for g in r.gates:
        rows.setdefault((g.gate, g.metric), {})[g.method] = g
    out = ["<h2>Gates</h2>",
           "<table><tr><th>gate</th>" + "".join(f'<th class="name">{_method_cell(n, colors)}</th>' for n in names)
           + "</tr>"]
    for (gate, metric), cells in rows.items():
        label = f"<code>{_e(gate)}</code>" + (f' <span class="meta">({_e(metric)})</span>' if metric not in gate else "")
        tds = []
        for n in names:
            g = cells.get(n)
            tds.append('<td class="num">&ndash;</td>' if g is None else
                       f'<td class="num" title="{_e(g.detail)}">{_fmt(g.value)} {_badge(g.passed)}</td>')
        out.append(f"<tr><td>{label}</td>{''.join(tds)}</tr>")
    failed = sum(not g.passed for g in r.gates)
    out.append(f'</table><p class="note">{failed} of {len(r.gates)} gate checks failed. A gate without a method '
               "applies to every method; a value that could not be computed fails.</p>" if failed else
               f'</table><p class="note">All {len(r.gates)} gate checks passed.</p>')
    return out


def _heatmap_section(r: AuditReport) -> list[str]:
    if not r.input_images:
        return []
    names = list(r.methods)
    out = ["<h2>Heatmaps</h2>",
           '<p class="note">Red: positive relevance for the explained class, blue: negative '
           '(<span class="colorbar"></span>, centred on 0, scaled to the 99.5th percentile of |R| per map), '
           "over the input in grey.</p>",
           '<table class="grid"><tr><th>input</th>' + "".join(f"<th><code>{_e(n)}</code></th>" for n in names) + "</tr>"]
    for i, rel in enumerate(r.input_images):
        idx = r.data["sample"][i]
        cap = f"#{idx}: target {r.data['targets'][i]}, predicted {r.data['predicted'][i]}"
        cells = [f'<td><img src="{_e(rel)}" alt="input {idx}"><div class="cap">{_e(cap)}</div></td>']
        cells += [f'<td><img src="{_e(r.methods[n].heatmaps[i])}" alt="{_e(n)} heatmap of input {idx}"></td>' for n in names]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return out


def _sanity_section(r: AuditReport, colors: dict[str, str]) -> list[str]:
    rand = {n: m.randomization for n, m in r.methods.items() if m.randomization is not None}
    cls = {n: m for n, m in r.methods.items() if "class_sensitivity" in m.checks}
    if not rand and not cls:
        return []
    out = ["<h2>Sanity checks</h2>"]
    if rand:
        t = r.settings["randomization_threshold"]
        series = [(n, [0] + list(range(1, len(v.layers) + 1)), [1.0] + list(_nanmean_rows(np.abs(v.spearman))), colors[n])
                  for n, v in rand.items()]
        any_layers = next(iter(rand.values())).layers
        plot = svg_plot(series, "Cascading randomization", "weight layers randomized (from the output)",
                        "mean |Spearman| vs original", ylim=(0, 1), hline=(t, f"threshold {t:g}"), integer_x=True)
        out += ["<h3>Model-parameter randomization (cascading)</h3>",
                '<div class="plots"><figure>' + plot +
                f"<figcaption>Layers are re-initialised from the top ({_e(', '.join(any_layers[:3]))}"
                f"{', ...' if len(any_layers) > 3 else ''}). The check passes when, with every layer random, the "
                f"map's rank correlation with the original is below {t:g}: a map that survives randomization "
                "does not explain what the model learned.</figcaption></figure></div>"]
    if cls:
        out += ["<h3>Class sensitivity</h3>",
                "<table><tr><th>method</th><th>Spearman, least likely class</th><th>Spearman, a random other class</th>"
                "<th>cosine, least likely class</th><th>result</th></tr>"]
        for n, m in cls.items():
            c = m.class_sensitivity
            vals = ([_mean(c.spearman_least), _mean(c.spearman_others), _mean(c.cosine_least)]
                    if c is not None else [None] * 3)
            out.append(f'<tr><td class="name">{_method_cell(n, colors)}</td>' + "".join(f'<td class="num">{_fmt(v)}</td>' for v in vals)
                       + f"<td>{_badge(m.checks['class_sensitivity'].passed)}</td></tr>")
        out.append(f'</table><p class="note">Passes when the predicted class\'s map and the least likely class\'s map '
                   f"have mean Spearman below {r.settings['class_threshold']:g}: maps that are the same for every "
                   "class reconstruct the input rather than explain the decision (Nie et al. 2018).</p>")
    return out


def _faithfulness_section(r: AuditReport, colors: dict[str, str]) -> list[str]:
    figs = []
    for key, title, xl in (("deletion", "Deletion", "fraction of features removed"),
                           ("insertion", "Insertion", "fraction of features inserted")):
        series = [(n, getattr(m, key).fractions, _nanmean_rows(getattr(m, key).normalized.T), colors[n])
                  for n, m in r.methods.items() if getattr(m, key) is not None]
        if series:
            better = "lower" if key == "deletion" else "higher"
            figs.append(svg_plot(series, f"{title} curves", xl, "normalised score") +
                        f"<figcaption>{title}: the target's score, 1 at the input and 0 at the baseline, while the "
                        f"most relevant features go first. Area under the curve: {better} is better.</figcaption>")
    series = [(n, m.sensitivity_n.ns, m.sensitivity_n.correlation, colors[n])
              for n, m in r.methods.items() if m.sensitivity_n is not None]
    if series:
        figs.append(svg_plot(series, "Sensitivity-n", "subset size n (features)", "correlation", xlog=True,
                             ylim=(-1, 1), hline=(0.0, "")) +
                    "<figcaption>Pearson correlation, over random subsets of n features, between their summed "
                    "relevance and the output drop when they are removed (Ancona et al. 2018).</figcaption>")
    if not figs:
        return []
    return ["<h2>Faithfulness</h2>", '<div class="plots">' + "".join(f"<figure>{f}</figure>" for f in figs) + "</div>"]


def _spectrum_section(r: AuditReport, colors: dict[str, str]) -> list[str]:
    series = []
    for n, m in r.methods.items():
        if m.spectrum is None:
            continue
        f, p = m.spectrum
        total = p.sum()
        series.append((n, f, p / total if total > 0 else p, colors[n]))
    if not series:
        return []
    plot = svg_plot(series, "Power spectrum of the maps", "frequency (cycles per pixel)", "relative power",
                    ylog=True, xlim=(0, 0.5))
    return ["<h2>Spectra</h2>", '<div class="plots"><figure>' + plot +
            "<figcaption>Radially averaged power spectrum of the maps, each normalised to sum 1. Gradient maps "
            "carry high-frequency noise from strided downsampling; a low-pass filter chosen per model (FORGrad, "
            "Muzellec et al. 2024) removes it.</figcaption></figure></div>"]


def _model_section(r: AuditReport) -> list[str]:
    m = r.model
    rows = [
        ("file", m["path"] or m["name"]), ("producer", m["producer"] or "?"), ("opset", m["opset"]),
        ("input", f"{m['input']['name']} {_show(m['input']['shape'])} {m['input']['dtype']}"),
        ("explained output", m["output"] + (f" (final {m['dropped_softmax']} dropped)" if m["dropped_softmax"] else "")),
        ("classes", m["classes"] if m["classes"] is not None else "?"),
        ("nodes", m["nodes"]), ("parameters", f"{m['parameters']:,}"),
        ("op types", ", ".join(f"{k} {v}" for k, v in m["op_types"].items())),
        ("op support", "every node supported"),
        ("data", f"{', '.join(r.data['sources'][:3])}{' ...' if len(r.data['sources']) > 3 else ''} "
                 f"({r.data['n_inputs']} inputs, sample of {len(r.data['sample'])}, layout {r.data['layout'] or 'n/a'})"),
        ("targets", "each input's predicted class" if r.data["target"] == "argmax" else "given"),
    ]
    out = ["<h2>Model</h2>", "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>",
           f"<details><summary>{len(m['layers'])} layers after folding and canonization</summary><table>"
           "<tr><th>node</th><th>op</th><th>output shape</th></tr>"]
    out += [f"<tr><td><code>{_e(layer['node'])}</code></td><td>{_e(layer['op_type'])}</td>"
            f"<td>{_e(_show(layer['shape']) if layer['shape'] is not None else '?')}</td></tr>" for layer in m["layers"]]
    out.append("</table></details>")
    s = r.settings
    out.append(f'<p class="note">Settings: methods {_e(", ".join(s["methods"]))}; sample {_e(s["sample"])}; '
               f"curve steps {s['curve_steps']}; Sensitivity-n {s['n_sizes']} sizes x {s['n_subsets']} subsets; "
               f"runtime {_e(s['runtime'])}; seed {s['seed']}.</p>")
    return out


# ---- SVG line plots ---------------------------------------------------------------------------
def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + k * step, 10) for k in range(int((hi - first) / step + 1e-9) + 1)]


def _tick_text(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        return f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e")
    return f"{v:g}"


def svg_plot(series: Sequence[tuple[str, Sequence[float], Sequence[float], str]], title: str, xlabel: str,
             ylabel: str, xlog: bool = False, ylog: bool = False, xlim: tuple[float, float] | None = None,
             ylim: tuple[float, float] | None = None, hline: tuple[float, str] | None = None,
             integer_x: bool = False, width: int = 460, height: int = 300) -> str:
    """A line plot as an inline SVG: one (label, xs, ys, colour) per series, with axes, ticks,
    axis labels, an optional dashed horizontal line and a legend below. Non-finite points (and,
    on a log axis, points <= 0) are left out."""
    ml, mr, mt, mb = 62, 14, 30, 46
    longest = max((len(str(label)) for label, *_ in series), default=1)
    cols = max(1, min(3, int((width - ml - mr) // (longest * 6.6 + 34))))
    legend_rows = (len(series) + cols - 1) // cols
    total_h = height + 18 * legend_rows
    pw, ph = width - ml - mr, height - mt - mb

    def clean(xs: Sequence[float], ys: Sequence[float]) -> list[tuple[float, float]]:
        pts = []
        for a, b in zip(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)):
            if math.isfinite(a) and math.isfinite(b) and (not xlog or a > 0) and (not ylog or b > 0):
                pts.append((math.log10(a) if xlog else a, math.log10(b) if ylog else b))
        return pts

    data = [(label, clean(xs, ys), color) for label, xs, ys, color in series]
    allx = [p[0] for _, pts, _ in data for p in pts]
    ally = [p[1] for _, pts, _ in data for p in pts]
    if xlim is not None:
        x0, x1 = (math.log10(v) for v in xlim) if xlog else xlim
    else:
        x0, x1 = (min(allx), max(allx)) if allx else (0.0, 1.0)
    if ylim is not None:
        y0, y1 = (math.log10(v) for v in ylim) if ylog else ylim
    else:
        y0, y1 = (min(ally), max(ally)) if ally else (0.0, 1.0)
        if hline is not None and not ylog:
            y0, y1 = min(y0, hline[0]), max(y1, hline[0])
        pad = 0.05 * (y1 - y0) if y1 > y0 else 0.5
        y0, y1 = y0 - pad, y1 + pad
    if x1 <= x0:
        x0, x1 = x0 - 0.5, x1 + 0.5

    def px(v: float) -> float:
        return ml + (v - x0) / (x1 - x0) * pw

    def py(v: float) -> float:
        return mt + ph - (v - y0) / (y1 - y0) * ph

    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total_h}" viewBox="0 0 {width} {total_h}" '
         f'font-family="sans-serif" font-size="11" role="img" aria-label="{_e(title)}">',
         f'<rect x="0" y="0" width="{width}" height="{total_h}" fill="#fff"/>',
         f'<text x="{ml + pw / 2:.1f}" y="18" text-anchor="middle" font-size="13" font-weight="600">{_e(title)}</text>']
    if xlog:
        xt = [float(k) for k in range(math.ceil(x0 - 1e-9), math.floor(x1 + 1e-9) + 1)]
        xlabels = [_tick_text(10 ** k) for k in xt]
    else:
        xt = [v for v in _nice_ticks(x0, x1) if not integer_x or float(v).is_integer()]
        xlabels = [_tick_text(v) for v in xt]
    if ylog:
        yt = [float(k) for k in range(math.ceil(y0 - 1e-9), math.floor(y1 + 1e-9) + 1)]
        if len(yt) > 6:
            yt = yt[:: math.ceil(len(yt) / 6)]
        ylabels = [_tick_text(10 ** k) for k in yt]
    else:
        yt = _nice_ticks(y0, y1)
        ylabels = [_tick_text(v) for v in yt]
    for v, text in zip(xt, xlabels):
        s.append(f'<line x1="{px(v):.1f}" y1="{mt}" x2="{px(v):.1f}" y2="{mt + ph}" stroke="#eaeef2"/>'
                 f'<text x="{px(v):.1f}" y="{mt + ph + 15}" text-anchor="middle" fill="#59636e">{text}</text>')
    for v, text in zip(yt, ylabels):
        s.append(f'<line x1="{ml}" y1="{py(v):.1f}" x2="{ml + pw}" y2="{py(v):.1f}" stroke="#eaeef2"/>'
                 f'<text x="{ml - 6}" y="{py(v) + 4:.1f}" text-anchor="end" fill="#59636e">{text}</text>')
    s.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#8c959f"/>')
    s.append(f'<text x="{ml + pw / 2:.1f}" y="{mt + ph + 34}" text-anchor="middle">{_e(xlabel)}</text>')
    s.append(f'<text transform="translate(14 {mt + ph / 2:.1f}) rotate(-90)" text-anchor="middle">{_e(ylabel)}</text>')
    s.append(f'<clipPath id="c{id(data)}"><rect x="{ml}" y="{mt}" width="{pw}" height="{ph}"/></clipPath>')
    if hline is not None and (not ylog or hline[0] > 0):
        hv = math.log10(hline[0]) if ylog else hline[0]
        if y0 <= hv <= y1:
            s.append(f'<line x1="{ml}" y1="{py(hv):.1f}" x2="{ml + pw}" y2="{py(hv):.1f}" stroke="#57606a" '
                     f'stroke-dasharray="5 4"/>')
            if hline[1]:
                s.append(f'<text x="{ml + pw - 4}" y="{py(hv) - 4:.1f}" text-anchor="end" fill="#57606a">{_e(hline[1])}</text>')
    for label, pts, color in data:
        if not pts:
            continue
        path = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in pts)
        s.append(f'<polyline clip-path="url(#c{id(data)})" points="{path}" fill="none" stroke="{color}" '
                 f'stroke-width="2" stroke-linejoin="round"/>')
        if len(pts) <= 25:
            s += [f'<circle cx="{px(a):.1f}" cy="{py(b):.1f}" r="2.5" fill="{color}"/>' for a, b in pts]
    for k, (label, _, color) in enumerate(data):
        lx, ly = ml + (k % cols) * (pw / cols), height + 4 + 18 * (k // cols)
        s.append(f'<line x1="{lx:.1f}" y1="{ly:.1f}" x2="{lx + 18:.1f}" y2="{ly:.1f}" stroke="{color}" stroke-width="3"/>'
                 f'<text x="{lx + 23:.1f}" y="{ly + 4:.1f}">{_e(label)}</text>')
    s.append("</svg>")
    return "".join(s)


# ---- small helpers ----------------------------------------------------------------------------
def _mean(a: Any) -> float | None:
    v = np.asarray(a, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else None


def _nanmean_rows(a: np.ndarray) -> np.ndarray:
    """Mean of each row over its finite entries (NaN where none)."""
    return np.array([m if m is not None else np.nan for m in (_mean(row) for row in np.asarray(a, dtype=np.float64))])


def _curve_json(c: faithfulness.Curve | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {"fractions": _plain(c.fractions), "mean_curve": _plain(_nanmean_rows(c.normalized.T)),
            "auc": _plain(c.auc)}


def _plain(v: Any) -> Any:
    """``v`` with NumPy values as Python ones and NaN/inf as None (strict JSON)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return _plain(v.tolist())
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if v is None or isinstance(v, (str, int, bool)):
        return v
    return repr(v)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.3f}"


def _verdict(passed: bool | None) -> str:
    return "n/a" if passed is None else ("pass" if passed else "FAIL")


def _show(shape: Sequence[Any] | None) -> str:
    return "?" if shape is None else "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


__all__ = ["ANALYSES", "AuditReport", "Check", "Gate", "GateOutcome", "METRICS", "MethodResult", "SCHEMA", "audit",
           "evaluate_gate", "model_summary"]
