"""The audit's per-sample work, the same in both engines.

:class:`BatchAudit` turns a batch of samples into one record per sample (its target, prediction,
and every method's values as :meth:`MethodResult.rows`); it is what the local engine runs batch
after batch and what each worker of a Ray cluster runs on its batches. :class:`AuditJob` holds
what the driver knows (the sample chosen, how samples are read, the given targets), runs the
batches here or on a cluster (:func:`onnxattr.cluster.run`), and assembles the records into the
report. Samples are read by index (:class:`onnxattr.cluster.sources.SampleReader`, which does not
import Ray), so a sample that cannot be read or checked fails alone, in either engine.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass
from typing import Any, Sequence, TextIO

import numpy as np

from ..cluster.sources import ImageOptions, Part, SampleReader, sample_shape, scan
from ..cluster.worker import all_failed, compute
from ..inputs import sample_indices
from ..layout import check_layout
from ..model import Model
from .metrics import plain
from .progress import Progress
from .results import AuditReport, MethodResult
from .run import AuditPlan, given_targets, assemble, run_method


@dataclass(frozen=True)
class BatchAudit:
    """``run_batch`` of an audit: every method over a batch, one record per sample. The
    samples of ``heatmap`` (indices) keep their input and maps for the report's pictures."""

    plan: AuditPlan
    layout: str | None
    chosen: np.ndarray  # the run's sample indices, sorted
    given: np.ndarray | None  # given targets, one per chosen sample; None: each sample's argmax
    heatmap: frozenset[int]

    def __call__(self, model: Model, samples: dict[str, np.ndarray], indices: np.ndarray,
                 bar: Progress | None = None) -> list[dict[str, Any]]:
        x = samples["x"]
        logits = model(x).reshape(len(x), -1)
        predicted = logits.argmax(axis=1)
        targets = predicted if self.given is None else self.given[np.searchsorted(self.chosen, indices)]
        keep = [int(i) in self.heatmap for i in indices]
        rows = {m: run_method(model, x, targets, m, self.plan, self.layout, logits.shape[1], bar, indices).rows(keep)
                for m in self.plan.methods}
        return [{"target": targets[k].tolist(), "predicted": int(predicted[k]), "classes": int(logits.shape[1]),
                 **({"input": x[k]} if keep[k] else {}), "methods": {m: rows[m][k] for m in rows}}
                for k in range(len(x))]


@dataclass
class AuditJob:
    """An audit's sample, read and checked on the driver, ready to run in either engine."""

    model: Model
    source: str | None
    plan: AuditPlan
    data: Any
    parts: list[Part]
    reader: SampleReader
    shape: tuple[int, ...]
    batch: BatchAudit
    started: float

    @classmethod
    def of(cls, model: Model, source: str | None, plan: AuditPlan, data: Any, target: Any, layout: str | None,
           resize: tuple[int, int] | None, mean: Sequence[float], std: Sequence[float], started: float) -> "AuditJob":
        parts = scan(data)
        n_total = parts[-1].start + parts[-1].count
        chosen = sample_indices(n_total, plan.sample, plan.seed)
        shape_in = model.input_shape
        images = (ImageOptions.for_input(shape_in, layout, resize, mean, std)
                  if shape_in is None or len(shape_in) == 4 else None)
        reader = SampleReader(parts, images, None, data if isinstance(data, np.ndarray) else None)
        shape = sample_shape(reader, parts)
        lay = check_layout(layout, (1, *shape)) if len(shape) == 3 else None
        given = given_targets(model, target, n_total, chosen, len(chosen))
        batch = BatchAudit(plan, lay, chosen, given, frozenset(int(i) for i in chosen[:plan.heatmaps]))
        return cls(model, source, plan, data, parts, reader, shape, batch, started)

    def local(self, batch_size: int, progress: bool | TextIO) -> AuditReport:
        """Every batch in this process, one after the other."""
        chosen = self.batch.chosen
        batches = -(-len(chosen) // batch_size)
        bar = Progress(batches * len(self.plan.methods) * self.plan.steps_per_method, progress)
        run_batch = functools.partial(self.batch, bar=bar)
        records: list[dict[str, Any]] = []
        try:
            for s in range(0, len(chosen), batch_size):
                idx = chosen[s:s + batch_size]
                done = compute(self.model, run_batch, idx, self.reader.read(idx), self.shape)
                records += [{"index": int(i), **r} for i, r in zip(idx, done)]
        finally:
            bar.close()
        all_failed(records)
        return self.assemble(records)

    def on_ray(self, address: str | None, workers: int | None, resume: bool, batch_size: int,
               out_dir: str | os.PathLike, load_options: dict[str, Any], progress: bool | TextIO) -> AuditReport:
        """The batches on a Ray cluster (see :func:`onnxattr.cluster.run`)."""
        from ..cluster import run

        settings = {**self.plan.settings(), "options": plain(self.plan.options), "target": plain(self.batch.given),
                    "images": plain(dataclasses.asdict(self.reader.images))}
        report, info = run(self.source, self.data, out_dir, self.batch, self.assemble, address, workers, resume,
                           self.plan.seed, sample=self.plan.sample, batch_size=batch_size, images=self.reader.images,
                           load_options=load_options, settings=settings, progress=progress)
        report.engine, report.workers, report.retried_batches = "ray", info["workers"], info["retried_batches"]
        return report

    def assemble(self, records: list[dict[str, Any]]) -> AuditReport:
        """The report from every chosen sample's record (in sample order)."""
        ok = [r for r in records if "failed" not in r]
        inputs = [r["input"] for r in ok if "input" in r]
        x = np.stack(inputs) if inputs else np.zeros((0, *self.shape), dtype=np.float32)
        results = {m: MethodResult.from_rows(m, self.plan.options[m], [r["methods"][m] for r in ok])
                   for m in self.plan.methods}
        data = {
            "sources": [p.source for p in self.parts], "n_inputs": self.parts[-1].start + self.parts[-1].count,
            "sample": [int(r["index"]) for r in ok], "shape": [len(ok), *self.shape], "layout": self.batch.layout,
            "target": "argmax" if self.batch.given is None else "given",
            "targets": [r["target"] for r in ok], "predicted": [int(r["predicted"]) for r in ok],
        }
        report = assemble(self.model, self.source, x, self.plan, results, data, self.started, int(ok[0]["classes"]))
        report.failed = [{"index": int(r["index"]), "reason": r["failed"]} for r in records if "failed" in r]
        return report
