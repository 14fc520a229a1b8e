"""What runs on the cluster: the actor that computes batches, and the log of batch attempts.

:class:`BatchWorker` is the callable class of ``Dataset.map_batches``; Ray Data keeps a pool of
them (one per worker), each holding the model it loaded once. A batch arrives as the sample
indices; the worker reads those samples (:class:`~onnxattr.cluster.sources.SampleReader`), turns
each that cannot run on its own account (unreadable, wrong shape, NaN or infinite values) into a
``failed`` record with the reason, and hands the rest to the per-batch function
``run_batch(model, samples, indices) -> [record per sample]``, with ``samples = {"x": batch}``.
Where that raises an InputError, the batch's samples run one at a time so that only the culprit
fails. Any other error is a bug and fails the run.

:class:`AttemptLog` (one per run, a Ray actor) counts how often each sample's batch was begun, so
a batch that runs again after its worker died is counted once as retried and its records carry
``attempt`` 2. It also carries the fault hook of the kill test: the run's k-th batch
(``ONNXATTR_FAULT_EXIT_ON_BATCH=k``, counted across the cluster from 1) makes its worker exit on
the spot, once.
"""
from __future__ import annotations

import os
import pickle
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InputError
from ..model import Model, load
from .sources import SampleReader

RunBatch = Callable[[Model, dict[str, np.ndarray], np.ndarray], list[dict[str, Any]]]
FAULT_ENV = "ONNXATTR_FAULT_EXIT_ON_BATCH"
#: the environment of a worker that has one CPU: one thread for the library (read by
#: onnxattr.threads), OpenMP and the BLAS libraries
ONE_THREAD = {"ONNXATTR_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "MKL_NUM_THREADS": "1"}


class AttemptLog:
    """How many times each sample's batch was begun, and which batch of the run is to crash."""

    def __init__(self, fault_batch: int | None = None) -> None:
        self.fault_batch = fault_batch
        self.begun: dict[int, int] = {}
        self.batches = 0
        self.retried = 0

    def begin(self, indices: Sequence[int]) -> tuple[int, bool]:
        """Note a batch begun: (its attempt, 1 for the first; whether its worker must exit now)."""
        self.batches += 1
        attempt = 1 + max(self.begun.get(int(i), 0) for i in indices)
        for i in indices:
            self.begun[int(i)] = self.begun.get(int(i), 0) + 1
        self.retried += attempt > 1
        return attempt, self.batches == self.fault_batch

    def retried_batches(self) -> int:
        """How many batches began again after a worker died holding them."""
        return self.retried

    def begun_more_than(self, n: int) -> list[int]:
        """The samples whose batch was begun more than ``n`` times."""
        return sorted(i for i, k in self.begun.items() if k > n)


class BatchWorker:
    """One worker of the pool: loads the model once, then computes batches of samples."""

    def __init__(self, model_path: str, run_batch: RunBatch, reader: SampleReader,
                 sample_shape: tuple[int, ...], log: Any, load_options: dict[str, Any] | None = None) -> None:
        self.model = load(model_path, **(load_options or {}))
        self.run_batch = run_batch
        self.reader = reader
        self.sample_shape = tuple(sample_shape)
        self.log = log  # the run's AttemptLog actor
        self.pid = os.getpid()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``{"index": ...}`` in; ``{"index", "pid", "attempt", "record"}`` out, one row per
        sample, the record pickled (it travels only to this run's driver)."""
        import ray

        indices = np.asarray(batch["index"], dtype=np.int64)
        attempt, crash = ray.get(self.log.begin.remote(indices.tolist()))
        if crash:
            os._exit(1)
        records = compute(self.model, self.run_batch, indices, self.reader.read(indices), self.sample_shape)
        n = len(indices)
        return {
            "index": indices,
            "pid": np.full(n, self.pid, dtype=np.int64),
            "attempt": np.full(n, attempt, dtype=np.int64),
            "record": np.array([pickle.dumps(r) for r in records], dtype=object),
        }


def compute(model: Model, run_batch: RunBatch, indices: np.ndarray, samples: list[np.ndarray | str],
            sample_shape: tuple[int, ...]) -> list[dict[str, Any]]:
    """One record per sample: run_batch's, or ``{"failed": reason}``."""
    records: list[dict[str, Any] | None] = [None] * len(indices)
    good = []
    for k, (i, s) in enumerate(zip(indices, samples)):
        reason = s if isinstance(s, str) else _problem(model, int(i), s, sample_shape)
        if reason:
            records[k] = {"failed": reason}
        else:
            good.append(k)
    if good:
        idx = indices[good]
        x = np.stack([samples[k] for k in good])
        try:
            done = _checked(run_batch(model, {"x": x}, idx), len(good))
        except InputError:  # one of the samples is at fault: find which
            done = [_alone(model, run_batch, x[j:j + 1], idx[j:j + 1]) for j in range(len(good))]
        for k, r in zip(good, done):
            records[k] = r
    return records  # type: ignore[return-value]


def all_failed(records: list[dict[str, Any]]) -> None:
    """InputError where every record (``index`` added) is a failure: nothing to report."""
    failed = [r for r in records if "failed" in r]
    if failed and len(failed) == len(records):
        raise InputError(f"every one of the {len(failed)} samples failed; sample {failed[0]['index']}: "
                         f"{failed[0]['failed']}")


def _problem(model: Model, index: int, x: np.ndarray, sample_shape: tuple[int, ...]) -> str:
    """Why sample ``index`` cannot run ("" when it can)."""
    if x.shape != sample_shape:
        return f"sample {index} has shape {x.shape}, the data's samples have {sample_shape}"
    try:
        model.check_input(x[None], f"sample {index}")
    except InputError as e:
        return str(e)
    return ""


def _alone(model: Model, run_batch: RunBatch, x: np.ndarray, idx: np.ndarray) -> dict[str, Any]:
    try:
        return _checked(run_batch(model, {"x": x}, idx), 1)[0]
    except InputError as e:
        return {"failed": f"sample {int(idx[0])}: {e}"}


def _checked(records: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    if not isinstance(records, list) or len(records) != n or not all(isinstance(r, dict) for r in records):
        raise TypeError(f"run_batch must return a list of {n} dicts (one record per sample), "
                        f"got {type(records).__name__} of {len(records) if hasattr(records, '__len__') else '?'}")
    return records
