"""The audit: run methods over a data sample, check and score them, and write one report.

- :mod:`.records`: :func:`audit`, the entry point, on one machine or a Ray cluster, through the
  per-sample records both engines compute.
- :mod:`.run`: the audit's steps: :func:`validate`, :func:`run_method` (one method over a batch),
  :func:`merge` (per-batch results of a method), :func:`assemble` (the report).
- :mod:`.gates`: :class:`Gate`, :class:`Check`, :func:`evaluate_gate`.
- :mod:`.metrics`: :data:`ANALYSES`, :data:`METRICS`, :data:`SCHEMA` and number helpers.
- :mod:`.results`: :class:`MethodResult`, :class:`AuditReport` and the JSON schema.
- :mod:`.html`, :mod:`.svg`: the report page and its plots; :mod:`.progress`: the progress bar.
"""
from .gates import Check, Gate, GateOutcome, evaluate_gate
from .metrics import ANALYSES, CHECKS, DEFAULT_METHODS, METRICS, SCHEMA
from .progress import Progress
from .results import AuditReport, MethodResult
from .records import audit
from .run import AuditPlan, assemble, merge, model_summary, run_method, validate
from .svg import svg_plot

__all__ = ["ANALYSES", "AuditPlan", "AuditReport", "CHECKS", "Check", "DEFAULT_METHODS", "Gate", "GateOutcome",
           "METRICS", "MethodResult", "Progress", "SCHEMA", "assemble", "audit", "evaluate_gate", "merge",
           "model_summary", "run_method", "svg_plot", "validate"]
