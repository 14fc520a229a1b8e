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
    engine            "local" | "ray"             # where the samples were computed
    workers           int                         # processes that computed them
    retried_batches   int                         # batches run again after their worker died
    failed            [{index, reason}]           # samples that failed on their own account

Changes from ``onnxattr.audit/1``: ``deletion.auc`` and ``insertion.auc`` are the areas under
a bounded quantity (``quantity``: "probability", the target's softmax probability; "sigmoid",
the sigmoid of a one-output model's logit; "logit", the raw target value normalised to 1 at the
input and 0 at the baseline), ``mean_curve`` is that quantity's mean curve, and ``undefined``
gives, per input, why a score is undefined ("" where it is defined).

Per-input lists follow ``data.sample`` (the samples that did not fail). ``checks[...].passed`` is null where a check does not
apply (class sensitivity of a one-output model). Files are relative to the report's folder.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

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

    def rows(self, keep: Sequence[bool] | None = None) -> list[dict[str, Any]]:
        """Per sample, its values as plain data (numbers, strings, lists, dicts, arrays): what a
        worker sends back and a shard stores. The map itself (``map``) only where ``keep`` is
        true (the heatmap samples), so that the records of a large run fit in memory;
        randomization's maps of the original model (``original``, ``maps``) are never kept, and
        what all samples share (layers, curve fractions, subset sizes, frequencies) is in the
        first row only. :meth:`from_rows` is the inverse."""
        n = len(self.attribution)
        keep = [False] * n if keep is None else list(keep)
        out = []
        for i in range(n):
            row: dict[str, Any] = {"seconds": self.seconds / n}
            if keep[i]:
                row["map"] = self.attribution[i]
            for key, axes in PER_SAMPLE.items():
                obj = getattr(self, key)
                if obj is not None:  # the fields shared by all samples only in the first row
                    row[key] = {f.name: _one(getattr(obj, f.name), axes.get(f.name), i)
                                for f in dataclasses.fields(obj) if f.name not in NOT_KEPT and (i == 0 or f.name in axes)}
            if self.alignment is not None:
                row["alignment"] = self.alignment[i:i + 1]
            if self.spectrum is not None:
                row["spectrum"] = {"power": self.spectrum[1][i:i + 1], "high_fraction": self.high_fraction[i:i + 1],
                                   **({"frequencies": self.spectrum[0]} if i == 0 else {})}
            out.append(row)
        return out

    @classmethod
    def from_rows(cls, name: str, options: dict[str, Any], rows: Sequence[dict[str, Any]]) -> "MethodResult":
        """The result over the samples of ``rows`` (from :meth:`rows`, in sample order);
        ``attribution`` holds the maps of the rows that kept one, in order."""
        maps = [r["map"] for r in rows if "map" in r]
        r = cls(name, options, np.stack(maps) if maps else np.zeros((0,), dtype=np.float32),
                seconds=float(sum(r["seconds"] for r in rows)))
        for key, axes in PER_SAMPLE.items():
            if rows and key in rows[0]:
                kind = ANALYSIS_TYPES[key]
                first = _shared(rows, key, [f.name for f in dataclasses.fields(kind) if f.name not in axes])
                values = {f.name: None if f.name in NOT_KEPT else
                          _joined([row[key][f.name] for row in rows], axes[f.name]) if f.name in axes
                          else first.get(f.name) for f in dataclasses.fields(kind)}
                setattr(r, key, kind(**values))
        if r.sensitivity_n is not None:
            r.sensitivity_n.correlation = faithfulness.nanmean(r.sensitivity_n.per_input, axis=1)
        if rows and "alignment" in rows[0]:
            r.alignment = np.concatenate([row["alignment"] for row in rows])
        if rows and "spectrum" in rows[0]:
            r.spectrum = (_shared(rows, "spectrum", ["frequencies"])["frequencies"],
                          np.concatenate([row["spectrum"]["power"] for row in rows]))
            r.high_fraction = np.concatenate([row["spectrum"]["high_fraction"] for row in rows])
        return r

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


_CURVE = {"scores": 0, "normalized": 0, "auc": 0, "raw_auc": 0, "undefined": 0}
#: per analysis: the fields with one entry per sample, and the axis of the samples
PER_SAMPLE: dict[str, dict[str, int]] = {
    "randomization": {"spearman": 1, "spearman_abs": 1, "ssim": 1, "original": 0, "target": 0, "maps": 1},
    "class_sensitivity": {f.name: 0 for f in dataclasses.fields(randomization.ClassSensitivity)},
    "deletion": _CURVE,
    "insertion": _CURVE,
    "sensitivity_n": {"per_input": 1, "undefined": 0},
}
ANALYSIS_TYPES = {"randomization": randomization.Randomization, "class_sensitivity": randomization.ClassSensitivity,
                  "deletion": faithfulness.Curve, "insertion": faithfulness.Curve,
                  "sensitivity_n": faithfulness.SensitivityN}
#: full maps of every sample, which rows leave out (None in a result made from rows)
NOT_KEPT = ("original", "maps")


def _one(value: Any, axis: int | None, i: int) -> Any:
    """Sample ``i``'s part of a field (kept as a one-sample slice), or the field if it is not per sample."""
    if axis is None:
        return value
    if isinstance(value, list):
        return value[i:i + 1]
    return np.take(np.asarray(value), [i], axis=axis)


def _joined(values: list[Any], axis: int) -> Any:
    """One-sample slices joined over the samples."""
    if isinstance(values[0], list):
        return [x for v in values for x in v]
    return np.concatenate(values, axis=axis)


def _shared(rows: Sequence[dict[str, Any]], key: str, names: list[str]) -> dict[str, Any]:
    """The first row's ``key`` entry that holds the fields shared by all samples (``names``):
    :meth:`MethodResult.rows` writes them in the first row of each batch only."""
    if not names:
        return rows[0][key]
    return next(row[key] for row in rows if names[0] in row[key])


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
    #: the inputs of the heatmap rows (the first ``heatmaps`` samples that did not fail)
    x: np.ndarray
    #: relative path -> RGB uint8 image; written by :meth:`write`
    images: dict[str, np.ndarray] = field(default_factory=dict)
    input_images: list[str] = field(default_factory=list)
    created: str = ""
    seconds: float = 0.0
    engine: str = "local"
    workers: int = 1
    retried_batches: int = 0
    #: samples that failed on their own account: {index, reason}
    failed: list[dict[str, Any]] = field(default_factory=list)

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
            "engine": self.engine,
            "workers": self.workers,
            "retried_batches": self.retried_batches,
            "failed": plain(self.failed),
        }

    def to_html(self) -> str:
        """The report as one HTML page (plots inline as SVG; heatmaps as the PNGs of ``images``)."""
        return render_html(self)

    def summary(self) -> str:
        """A few lines of text: checks and metrics per method, and the gates."""
        lines = [f"audit of {self.model['name']}: {len(self.data['sample'])} of {self.data['n_inputs']} inputs, "
                 f"{len(self.methods)} method(s), {self.seconds:.1f} s, engine {self.engine} ({self.workers} "
                 f"worker(s){f', {self.retried_batches} batch(es) retried' if self.retried_batches else ''})"]
        if self.failed:
            f = self.failed[0]
            lines.append(f"  {len(self.failed)} sample(s) failed and were left out; #{f['index']}: {f['reason']}")
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
