"""Audits bigger than one machine: the per-sample work of an audit on a Ray cluster.

:func:`run` reads the data as a Ray Dataset of sample indices, computes each batch in a pool of
actors that each load the model once (``Dataset.map_batches`` with
:class:`~onnxattr.cluster.worker.BatchWorker`), writes every finished batch's per-sample records
as a Parquet shard under ``<out>/shards/``, and hands all the records to the caller's
``assemble``. Importing this package does not import Ray; :func:`run` does, and says how to
install it (``pip install 'onnxattr[ray]'``) where it is missing.

Modules: ``sources`` (the data's parts and reading samples by index), ``worker`` (the actor and
the log of batch attempts), ``shards`` (the Parquet shards and the run's manifest),
``progress`` (the bar), ``driver`` (:func:`run`), ``ray_import``.
"""
from .driver import run
from .sources import ImageOptions

__all__ = ["ImageOptions", "run"]
