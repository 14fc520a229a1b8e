"""The driver of a cluster run: connect to Ray, stream the batches through an actor pool, write
the shards as batches finish, and hand every sample's record to ``assemble``.

``run`` is engine-agnostic about what a sample's record is: the per-batch function and the
assembly come from the caller (the audit). What it guarantees is the bookkeeping: every chosen
sample ends up with exactly one record (a result, or ``failed`` with the reason), a worker that
dies has its batches run again (counted as retried), and a driver that dies leaves shards that a
resumed run reuses, computing only the samples that are missing.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
import time
import warnings
from typing import Any, Callable, Sequence, TextIO

import numpy as np

from ..errors import OptionError
from . import shards
from .progress import SampleProgress
from .ray_import import import_ray
from ..inputs import sample_indices
from .sources import ImageOptions, SampleReader, sample_shape, scan
from .worker import FAULT_ENV, ONE_THREAD, AttemptLog, BatchWorker, RunBatch, all_failed

#: samples per batch: a batch is also the unit a dead worker's replacement runs again
BATCH_SIZE = 16
#: how often a batch runs again after its worker died, before the run fails (a sample that
#: crashes every worker it meets must not keep the cluster busy forever)
MAX_RETRIES = 3


def run(
    model_path: str | os.PathLike,
    data: np.ndarray | str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    run_batch: RunBatch,
    assemble: Callable[[list[dict[str, Any]]], Any],
    address: str | None = None,
    workers: int | None = None,
    resume: bool = False,
    seed: int = 0,
    *,
    sample: int | None = None,
    batch_size: int = BATCH_SIZE,
    images: ImageOptions | None = None,
    column: str | None = None,
    load_options: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    progress: bool | TextIO = True,
) -> tuple[Any, dict[str, Any]]:
    """Compute every chosen sample's record on a Ray cluster and assemble them.

    Args:
        model_path: the ``.onnx`` file; each worker loads it once (``load_options`` go to
            :func:`onnxattr.load`; ``device`` defaults to "cuda" where the cluster has GPUs).
        data: a float32 batch (put in Ray's object store), or ``.npy``/``.npz`` files, image
            files, Parquet files with an array or image ``column``, or folders of them (see
            :mod:`onnxattr.cluster.sources`); images are read with ``images``.
        out: the output folder; records go to ``out/shards/`` as Parquet while batches finish.
        run_batch: ``run_batch(model, {"x": batch}, indices) -> [record per sample]``, run on
            the workers; a record is a dict of numbers, strings, lists, dicts and arrays.
        assemble: ``assemble(records) -> report``, run on the driver with every chosen sample's
            record (``index``, ``pid``, ``attempt`` added; ``failed`` for samples that failed),
            in index order.
        address: a Ray cluster's address; None: the running cluster (``ray.init`` already
            called, or ``RAY_ADDRESS``/a cluster started with ``ray start``), else a local
            cluster of ``workers`` CPUs (all CPUs when None).
        workers: actors in the pool (default: one per GPU, else one per CPU of the cluster, and
            at most one per batch).
        resume: keep the shards of an interrupted run of the same settings and compute only the
            samples they lack; without it the shards are cleared first.
        seed, sample: ``sample`` samples drawn with ``seed`` (None: all), as the local audit does.
        settings: what else defines the run (methods, options); a resumed run must match it.
        progress: the progress bar (True: stderr when it is a terminal; False: none; a stream).
    Returns:
        ``(assemble(records), info)``; info has ``engine`` "ray", ``workers``,
        ``retried_batches``, ``startup_seconds`` (connecting or starting Ray), ``seconds`` (the
        rest), ``computed`` and ``reused`` (samples computed now, and taken from old shards),
        ``failed``, and the workers' ``pids``.
    """
    ray = import_ray()
    if workers is not None and (not isinstance(workers, (int, np.integer)) or isinstance(workers, bool) or workers < 1):
        raise OptionError(f"workers must be a positive int or None, got {workers!r}")
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise OptionError(f"batch_size must be a positive int, got {batch_size!r}")
    fault = _fault_batch()
    parts = scan(data, column)
    n_total = parts[-1].start + parts[-1].count
    chosen = sample_indices(n_total, sample, seed)
    sources = ([f"array sha256 {hashlib.sha256(np.ascontiguousarray(data).tobytes()).hexdigest()}"]
               if isinstance(data, np.ndarray) else [p.source for p in parts])
    manifest = {"model": os.path.abspath(model_path), "data": sources, "n_inputs": n_total,
                "sample": sample, "seed": seed, "chosen": len(chosen), "settings": settings or {}}
    shards.start(out, manifest, resume)
    old = shards.unique(shards.read(out)) if resume else {}
    missing = np.array([i for i in chosen if int(i) not in old], dtype=np.int64)

    t0 = time.perf_counter()
    started = _connect(ray, address, workers)
    startup = time.perf_counter() - t0
    t1 = time.perf_counter()
    try:
        pool = _pool(ray, workers, load_options, -(-len(missing) // batch_size))
        shape = sample_shape(SampleReader(parts, images, column, data if isinstance(data, np.ndarray) else None), parts)
        reader = SampleReader(parts, images, column, ray.put(data) if isinstance(data, np.ndarray) else None)
        bar = SampleProgress(len(chosen), len(chosen) - len(missing), progress)
        try:
            retried = _compute(ray, os.path.abspath(model_path), run_batch, reader, shape, missing, batch_size, pool, fault, out, bar)
        finally:
            bar.close()
    finally:
        if started:
            ray.shutdown()

    records = shards.unique(shards.read(out))
    lost = [int(i) for i in chosen if int(i) not in records]
    if lost:
        raise RuntimeError(f"the cluster run lost samples {lost[:10]}{' ...' if len(lost) > 10 else ''}")
    chosen_records = [records[int(i)] for i in chosen]
    all_failed(chosen_records)
    report = assemble(chosen_records)
    info = {
        "engine": "ray", "workers": pool["workers"], "retried_batches": retried,
        "startup_seconds": startup, "seconds": time.perf_counter() - t1,
        "computed": len(missing), "reused": len(chosen) - len(missing),
        "failed": sum("failed" in r for r in chosen_records),
        "pids": sorted({int(r["pid"]) for r in chosen_records}),
    }
    return report, info


def _fault_batch() -> int | None:
    value = os.environ.get(FAULT_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise OptionError(f"{FAULT_ENV}={value!r}: give the number of the batch whose worker exits (1, 2, ...)")
    return int(value)


def _connect(ray: Any, address: str | None, workers: int | None) -> bool:
    """Connect to the cluster (see :func:`run`); True where this call connected or started it."""
    if ray.is_initialized():
        return False
    quiet = dict(include_dashboard=False, logging_level=logging.WARNING, configure_logging=True)
    if address is not None:
        ray.init(address=address, **quiet)
        return True
    try:
        ray.init(address="auto", **quiet)
    except ConnectionError:
        ray.init(num_cpus=workers or os.cpu_count(), **quiet)
    return True


def _pool(ray: Any, workers: int | None, load_options: dict[str, Any] | None, batches: int) -> dict[str, Any]:
    """The actor pool's size and each actor's resources: one GPU each where the cluster has GPUs
    (the model on "cuda"), else one CPU each with one thread."""
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    options = dict(load_options or {})
    if gpus:
        options.setdefault("device", "cuda")
        remote: dict[str, Any] = {"num_gpus": 1}
        capacity, unit = gpus, "GPU"
    else:
        remote = {"num_cpus": 1, "runtime_env": {"env_vars": dict(ONE_THREAD)}}
        capacity, unit = cpus, "CPU"
    n = workers or max(1, min(capacity, batches))  # no idle actors by default: at most one per batch
    if n > capacity or n < 1:
        raise OptionError(f"workers={n}: the cluster has {capacity} {unit}s, one per worker")
    return {"workers": n, "remote": remote, "load_options": options}


def _compute(ray: Any, model_path: str, run_batch: RunBatch, reader: SampleReader, shape: tuple[int, ...],
             missing: np.ndarray, batch_size: int, pool: dict[str, Any], fault: int | None,
             out: str | os.PathLike, bar: SampleProgress) -> int:
    """Run the missing samples through the pool, writing a shard per finished batch; returns the
    number of batches that ran again after a worker died."""
    if not len(missing):
        return 0
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)

    log = ray.remote(num_cpus=0)(AttemptLog).remote(fault)
    # one block per batch, each handed whole to a worker: a block is what runs again when its
    # worker dies
    blocks = -(-len(missing) // batch_size)
    with warnings.catch_warnings():  # max_task_retries has no named parameter yet (Ray 2.60)
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        ds = _dataset(ray, missing, blocks, model_path, run_batch, reader, shape, log, pool)
    n = shards.next_number(out)
    try:
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                rows = [_row(*row) for row in zip(batch["index"], batch["pid"], batch["attempt"], batch["record"])]
                shards.write(out, f"part-{n:06d}", rows)
                n += 1
                bar.add(len(rows))
        except ray.exceptions.RayError as e:
            crashing = ray.get(log.begun_more_than.remote(MAX_RETRIES))
            if crashing:
                raise RuntimeError(f"the batch of samples {crashing} made its worker die {MAX_RETRIES + 1} times; "
                                   f"the cluster run gives up (the workers' logs say why)") from e
            raise
        return int(ray.get(log.retried_batches.remote()))
    finally:
        ray.kill(log)


def _dataset(ray: Any, missing: np.ndarray, blocks: int, model_path: str, run_batch: RunBatch, reader: SampleReader,
             shape: tuple[int, ...], log: Any, pool: dict[str, Any]) -> Any:
    """The samples' indices as a Dataset of ``blocks`` blocks, mapped through the actor pool."""
    return ray.data.from_items([{"index": int(i)} for i in missing], override_num_blocks=blocks).map_batches(
        BatchWorker,
        fn_constructor_kwargs=dict(model_path=model_path, run_batch=run_batch, reader=reader, sample_shape=shape,
                                   log=log, load_options=pool["load_options"]),
        compute=ray.data.ActorPoolStrategy(size=pool["workers"], max_tasks_in_flight_per_actor=1),
        batch_size=None,
        batch_format="numpy",
        max_task_retries=MAX_RETRIES,
        **pool["remote"],
    )


def _row(index: Any, pid: Any, attempt: Any, record: bytes) -> dict[str, Any]:
    r = pickle.loads(record)
    clash = sorted(set(r) & set(shards.COLUMNS))
    if clash:
        raise TypeError(f"run_batch's records must not hold the keys {clash}; the driver adds them")
    return {"index": int(index), "pid": int(pid), "attempt": int(attempt), **r}
