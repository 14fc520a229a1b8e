"""Gates and sanity checks: the pass/fail layer of an audit.

A :class:`Gate` is a requirement written as text (``"randomization"``, ``"insertion.auc>=0.5"``);
:func:`evaluate_gate` reads it against each method's metrics. A :class:`Check` is the outcome of
one of the two sanity checks (Adebayo et al. 2018), made by :func:`sanity_checks`. A value that
is undefined (None or NaN) fails its gate, and the outcome says why.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from ..errors import OptionError
from .metrics import CHECKS, METRICS, fmt

if TYPE_CHECKING:
    from .results import MethodResult

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, ">": lambda a, b: a > b,
}
_GATE = re.compile(r"^\s*(?:(?P<method>[^:\s<>=]+)\s*:)?\s*(?P<metric>[a-z_]+(?:\.[a-z_]+)?)\s*"
                   r"(?:(?P<op><=|>=|<|>)\s*(?P<value>\S+))?\s*$")
_CHECK_METRIC = {"randomization": "randomization.spearman", "class_sensitivity": "class_sensitivity.spearman"}


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


def evaluate_gate(gate: Gate, results: Mapping[str, "MethodResult"]) -> list[GateOutcome]:
    """The gate's outcome on each method it applies to."""
    out = []
    for name in [gate.method] if gate.method else list(results):
        r = results[name]
        if gate.op is None:
            for check in (CHECKS if gate.metric == "sanity" else (gate.metric,)):
                c = r.checks.get(check)
                if c is None or c.passed is None:
                    out.append(GateOutcome(gate.text, name, check, None, False, f"{check} does not apply to this model"))
                elif c.value is None:
                    out.append(GateOutcome(gate.text, name, check, None, False, f"{check}: {c.rule}"))
                else:
                    out.append(GateOutcome(gate.text, name, check, c.value, c.passed,
                                           f"{_CHECK_METRIC[check]} = {fmt(c.value)}, the check requires "
                                           f"< {c.threshold:g}"))
            continue
        value = r.metrics.get(gate.metric)
        if value is None or not math.isfinite(value):
            why = r.undefined.get(gate.metric, "it could not be computed")
            out.append(GateOutcome(gate.text, name, gate.metric, None, False,
                                   f"{gate.metric} is undefined, so the gate fails: {why}"))
            continue
        ok = _OPS[gate.op](value, gate.value)
        out.append(GateOutcome(gate.text, name, gate.metric, value, ok,
                               f"{gate.metric} = {fmt(value)}, required {gate.op} {gate.value:g}"))
    return out


_UNDEFINED = "; undefined (constant maps), so it fails"


def sanity_checks(r: "MethodResult", analyses: Sequence[str], classes: int, rand_t: float,
                  class_t: float) -> dict[str, Check]:
    """The randomization and class-sensitivity checks of one method's results."""
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
