""":func:`audit` and its per-sample work, the same in both engines.

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
import time
from dataclasses import dataclass
from typing import Any, Iterable, Sequence, TextIO

import numpy as np

from ..errors import OptionError
from ..cluster.sources import ImageOptions, Part, SampleReader, sample_shape, scan
from ..cluster.worker import all_failed, compute
from ..inputs import check_file_shape, fed_input, load_vocab, read_feed_data, refuse_images, sample_indices, takes_feeds
from ..layout import check_layout
from ..model import Model, load
from .gates import Gate
from .metrics import ANALYSES, DEFAULT_METHODS, plain
from .progress import Progress
from .results import AuditReport, MethodResult
from .text import text_summary
from .run import AuditPlan, assemble, run_method, validate


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
        check_files(model, parts)
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


def check_files(model: Model, parts: Sequence[Part]) -> None:
    """InputError naming the file where a whole file cannot fit the model's input: an image for
    a model that does not take images, a batch of the wrong rank or feature shape (what a
    sample holds is checked as it is read, naming the sample)."""
    fed = fed_input(model)
    refuse_images([p.source for p in parts if p.kind == "image"], fed)
    for p in parts:
        if p.kind in ("npy", "npz") and p.shape is not None:
            check_file_shape(p.source, p.shape, fed)


def given_targets(model: Model, target: Any, n_total: int, picked: np.ndarray, n: int) -> np.ndarray | None:
    """The given target for the sampled inputs (one per input of the data is sampled with them)."""
    if target is None:
        return None
    t = np.asarray(target)
    if t.ndim == 1 and t.shape[0] == n_total and n_total != n:
        t = t[picked]
    return model.check_target(t, n)


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
    engine: str = "local",
    address: str | None = None,
    resume: bool = False,
    workers: int | None = None,
    batch_size: int = 16,
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
        data: a float32 batch, or paths: ``.npy``/``.npz`` batches, image files, Parquet files
            with an array or image column, or folders of them (images are preprocessed with
            ``layout``, ``resize`` (H, W), ``mean``, ``std``). Samples are read by index, only
            those of the sample.
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
            A model fed a dict (token ids, ``wrt=``) reads its data as feeds (an ``.npz`` with one
            array per graph input, optional ``target`` and ``relevant``) and runs on the local
            engine; its sanity checks randomize and compare the maps at the ``wrt`` tensor (class
            sensitivity is left out for a (batch, position, class) output).
        vocab: for a text model: a ``tokenizer.json`` or a file of one token per line, to show
            tokens instead of ids.
        engine: "local" (this process) or "ray" (a Ray cluster: ``pip install 'onnxattr[ray]'``;
            the model must be given as a path, and ``out_dir`` holds the per-sample shards).
        address: the Ray cluster's address; None: the running cluster, else a local one.
        resume: (ray) keep the shards in ``out_dir`` of an interrupted run of the same audit
            and compute only the samples they lack; without it old shards are cleared.
        workers: (ray) processes in the pool (default: one per GPU, else one per CPU, at most
            one per batch).
        batch_size: samples per batch (a batch is what a worker runs at once, and what runs
            again after a worker died); the values do not depend on it.

    Every sample's random draws come from (``seed``, its index in the data), so both engines
    and every ``batch_size`` give the same values. A sample that fails on its own account
    (unreadable, another shape than the data's first sample, NaN or infinite values) is left
    out and listed in the report's ``failed``; InputError when every sample fails.
    Returns:
        :class:`AuditReport` (``to_json()`` gives the document of schema ``onnxattr.audit/2``).
    """
    started = time.perf_counter()
    plan = validate(methods, options, analyses, gates, sample=sample, heatmaps=heatmaps, curve_steps=curve_steps,
                    n_subsets=n_subsets, n_sizes=n_sizes, runtime=runtime, seed=seed,
                    randomization_threshold=randomization_threshold, class_threshold=class_threshold)
    if engine not in ("local", "ray"):
        raise OptionError(f"engine must be 'local' or 'ray', got {engine!r}")
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise OptionError(f"batch_size must be a positive int, got {batch_size!r}")
    if engine == "local" and (resume or workers is not None or address is not None):
        raise OptionError("address, workers and resume belong to a cluster run: give engine='ray'")
    if engine == "ray" and (isinstance(model_or_path, Model) or out_dir is None):
        raise OptionError("engine='ray' needs the model as a path (each worker loads it) and an out_dir "
                          "(the per-sample shards are written there)")
    model = (model_or_path if isinstance(model_or_path, Model)
             else load(model_or_path, device=device, input_name=input_name, output_name=output_name, wrt=wrt))
    source = None if isinstance(model_or_path, Model) else str(model_or_path)
    if vocab is not None and not takes_feeds(model):
        raise OptionError(f"vocab is for text models (fed token ids, attributed with wrt=); {model!r} is not")
    if takes_feeds(model):
        if engine != "local":
            raise OptionError("engine='ray' runs models fed one array; a model fed several inputs or attributed "
                              "at a wrt tensor runs on the local engine")
        report = _audit_feeds(model, source, data, plan, target, seed, vocab, progress, started)
        if out_dir is not None:
            report.write(out_dir)
        return report
    job = AuditJob.of(model, source, plan, data, target, layout, resize, mean, std, started)
    if engine == "local":
        report = job.local(batch_size, progress)
    else:
        load_options = dict(input_name=input_name, output_name=output_name, **({} if device == "cpu" else {"device": device}))
        report = job.on_ray(address, workers, resume, batch_size, out_dir, load_options, progress)
    if out_dir is not None:
        report.write(out_dir)
    return report


def _audit_feeds(model: Model, source: str | None, data: Any, plan: AuditPlan, target: Any, seed: int,
                 vocab: str | os.PathLike | None, progress: bool | TextIO, started: float) -> AuditReport:
    """:func:`audit` of a model fed a dict {input name: array} (a text model, ``wrt=``): the
    data are feeds (:func:`onnxattr.inputs.read_feed_data`), the maps are at the ``wrt`` tensor,
    features are its tokens, the heatmaps are the tokens coloured per method, and where the data
    mark the deciding tokens (``relevant``) the relevance mass on them is reported."""
    tokens = None if vocab is None else load_vocab(vocab)
    text, sources, n_total, picked = read_feed_data(data, model, plan.sample, seed)
    x, n = model.check_feeds(text.feeds, "data"), len(picked)
    out = model(x)
    if out.ndim == 3:
        plan = _without_class_sensitivity(plan)
    predicted = model.resolve_target(None, out, x)
    if target is None and text.target is not None:  # the data's own targets, sampled with it
        given = model.check_target(text.target, n)
    else:
        given = given_targets(model, target, n_total, picked, n)
    targets = predicted if given is None else given
    bar = Progress(len(plan.methods) * plan.steps_per_method, progress)
    results: dict[str, MethodResult] = {}
    try:
        for name in plan.methods:
            results[name] = run_method(model, x, targets, name, plan, None, int(np.prod(out.shape[1:])), bar, picked)
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
    return assemble(model, source, x, plan, results, data_section, started)


def _without_class_sensitivity(plan: AuditPlan) -> AuditPlan:
    """``plan`` for a model whose output is (batch, position, class) (a language model): class
    sensitivity compares the classes of one output, so it is left out, and a gate that needs it
    is refused."""
    for g in plan.gates:
        if "class_sensitivity" in g.analyses:
            raise OptionError(f"gate {g.text!r} needs class sensitivity, which does not apply to an output of "
                              "shape (batch, position, class)")
    return dataclasses.replace(plan, analyses=tuple(a for a in plan.analyses if a != "class_sensitivity"))
