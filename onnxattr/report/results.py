"""The audit's results: :class:`MethodResult` (one method, per-sample values) and
:class:`AuditReport` (everything, as JSON, HTML, text, and files).

JSON schema ``onnxattr.audit/2`` (NaN is written as null)::

    schema            "onnxattr.audit/2"
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
                         undefined: {METRIC: reason},            # why a metric is null or partial
                         checks: {CHECK: {passed: bool | null, value, threshold, rule}},
                         randomization: {layers, spearman, spearman_abs, ssim} | null,
                         class_sensitivity: {spearman_least, spearman_other,
                                             cosine_least} | null,
                         deletion / insertion: {quantity, fractions, mean_curve, auc,
                                                undefined} | null,
                         sensitivity_n: {ns, correlation} | null,
                         alignment: {cosine} | null,
                         spectrum: {frequencies, power, high_fraction} | null,
                         heatmaps: [file]}}
    gates             [{gate, method, metric, value, passed, detail}]
    files             {inputs: [file]}            # input images of the heatmap rows

Changes from ``onnxattr.audit/1``: ``deletion.auc`` and ``insertion.auc`` are the areas under
a bounded quantity (``quantity``: "probability", the target's softmax probability; "sigmoid",
the sigmoid of a one-output model's logit; "logit", the raw target value normalised to 1 at the
input and 0 at the baseline), ``mean_curve`` is that quantity's mean curve, and ``undefined``
gives, per input, why a score is undefined ("" where it is defined).

Per-input lists follow ``data.sample``. ``checks[...].passed`` is null where a check does not
apply (class sensitivity of a one-output model). Files are relative to the report's folder.
"""
from __future__ import annotations

import json
import os
import pathlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..analysis import faithfulness, randomization
from ..version import __version__
from ..viz import save_png
from .gates import Check, GateOutcome
from .html import render_html
from .metrics import SCHEMA, fmt, mean, nanmean_rows, plain


@dataclass
class MethodResult:
    """Everything the audit computed for one method, per sample where the analysis is per sample
    (the analysis objects of :mod:`onnxattr.analysis` as they are; None where an analysis was
    skipped or does not apply). ``spectrum`` is (frequencies (F,), power per sample (N, F));
    ``high_fraction`` and ``alignment`` are (N,)."""

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
    high_fraction: np.ndarray | None = None
    checks: dict[str, Check] = field(default_factory=dict)
    heatmaps: list[str] = field(default_factory=list)

    @property
    def metrics(self) -> dict[str, float | None]:
        """The gateable values (keys of :data:`METRICS`): means over the inputs where each is
        defined; None where not computed or undefined for every input (see :attr:`undefined`)."""
        r, c = self.randomization, self.class_sensitivity
        return {
            "randomization.spearman": None if r is None else mean(np.abs(r.spearman[-1])),
            "randomization.spearman_abs": None if r is None else mean(np.abs(r.spearman_abs[-1])),
            "randomization.ssim": None if r is None else mean(r.ssim[-1]),
            "class_sensitivity.spearman": None if c is None else mean(c.spearman_least),
            "deletion.auc": None if self.deletion is None else mean(self.deletion.auc),
            "insertion.auc": None if self.insertion is None else mean(self.insertion.auc),
            "sensitivity_n.mean": None if self.sensitivity_n is None else mean(self.sensitivity_n.correlation),
            "alignment.cosine": None if self.alignment is None else mean(self.alignment),
            "spectrum.high_fraction": None if self.high_fraction is None else mean(self.high_fraction),
        }

    @property
    def undefined(self) -> dict[str, str]:
        """Metric -> why it is undefined for some or all inputs (the metric is the mean over the
        others, or None where no input is left)."""
        out = {}
        for key, reasons in (("deletion.auc", _reasons(self.deletion)), ("insertion.auc", _reasons(self.insertion)),
                             ("sensitivity_n.mean", _reasons(self.sensitivity_n)),
                             ("class_sensitivity.spearman", _reasons(self.class_sensitivity))):
            bad = [s for s in reasons if s]
            if bad:
                common = Counter(bad).most_common(1)[0][0]
                out[key] = f"undefined for {len(bad)} of {len(reasons)} inputs ({common})"
        m = self.metrics
        for key in ("randomization.spearman", "randomization.spearman_abs", "randomization.ssim"):
            if self.randomization is not None and m[key] is None:
                out[key] = "the correlation is undefined for every input (constant maps)"
        return out

    def to_json(self) -> dict[str, Any]:
        r, c, s = self.randomization, self.class_sensitivity, self.sensitivity_n
        return {
            "options": plain(self.options),
            "seconds": round(self.seconds, 3),
            "metrics": plain(self.metrics),
            "undefined": self.undefined,
            "checks": {k: plain(vars(v)) for k, v in self.checks.items()},
            "randomization": None if r is None else {
                "layers": r.layers,
                "spearman": plain(nanmean_rows(np.abs(r.spearman))),
                "spearman_abs": plain(nanmean_rows(np.abs(r.spearman_abs))),
                "ssim": plain(nanmean_rows(r.ssim)),
            },
            "class_sensitivity": None if c is None else {
                "spearman_least": plain(c.spearman_least),
                "spearman_other": plain(c.spearman_others[:, 0]),
                "cosine_least": plain(c.cosine_least),
            },
            "deletion": curve_json(self.deletion),
            "insertion": curve_json(self.insertion),
            "sensitivity_n": None if s is None else {"ns": plain(s.ns), "correlation": plain(s.correlation)},
            "alignment": None if self.alignment is None else {"cosine": plain(self.alignment)},
            "spectrum": None if self.spectrum is None else {
                "frequencies": plain(self.spectrum[0]), "power": plain(self.spectrum[1].mean(axis=0)),
                "high_fraction": plain(self.metrics["spectrum.high_fraction"]),
            },
            "heatmaps": list(self.heatmaps),
        }


def _reasons(result: Any) -> list[str]:
    return [] if result is None else list(result.undefined)


def curve_json(c: faithfulness.Curve | None) -> dict[str, Any] | None:
    """A deletion or insertion curve as the report stores it."""
    if c is None:
        return None
    return {"quantity": c.quantity, "fractions": plain(c.fractions), "mean_curve": plain(nanmean_rows(c.plotted.T)),
            "auc": plain(c.auc), "undefined": list(c.undefined)}


@dataclass
class AuditReport:
    """What :func:`onnxattr.audit` returns. ``passed`` is True when every gate passed."""

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

    @property
    def failed_gates(self) -> list[GateOutcome]:
        return [g for g in self.gates if not g.passed]

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict (schema ``onnxattr.audit/2``, see the module docstring)."""
        return {
            "schema": SCHEMA,
            "onnxattr_version": __version__,
            "created": self.created,
            "seconds": round(self.seconds, 3),
            "passed": self.passed,
            "model": plain(self.model),
            "data": plain(self.data),
            "settings": plain(self.settings),
            "methods": {name: r.to_json() for name, r in self.methods.items()},
            "gates": [plain(vars(g)) for g in self.gates],
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
            scores = "  ".join(f"{k} {fmt(m[k])}" for k in ("deletion.auc", "insertion.auc", "sensitivity_n.mean")
                               if k.split(".")[0] in self.settings["analyses"])
            lines.append(f"  {name:<{w}}  {checks}  {scores}".rstrip())
        lines += [f"  gate {g.gate} [{g.method}]: {'pass' if g.passed else 'FAIL'} ({g.detail})" for g in self.gates]
        if self.gates:
            lines.append("all gates passed" if self.passed else
                         f"{len(self.failed_gates)} of {len(self.gates)} gate check(s) failed")
        return "\n".join(lines)

    def write(self, out_dir: str | os.PathLike) -> dict[str, pathlib.Path]:
        """Write ``report.json``, ``report.html`` and the images into ``out_dir`` (created).
        The previous run's ``images/`` are removed first; other files there (such as the
        ``shards/`` of a resumable run) are kept. Returns the paths of the two reports."""
        out = pathlib.Path(out_dir)
        images = out / "images"
        if images.is_dir():
            for old in images.glob("*.png"):
                old.unlink()
        images.mkdir(parents=True, exist_ok=True)
        for rel, rgb in self.images.items():
            save_png(out / rel, rgb)
        paths = {"json": out / "report.json", "html": out / "report.html"}
        paths["json"].write_text(json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n")
        paths["html"].write_text(self.to_html())
        return paths


def _verdict(passed: bool | None) -> str:
    return "n/a" if passed is None else ("pass" if passed else "FAIL")
