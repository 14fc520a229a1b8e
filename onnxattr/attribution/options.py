"""Method options and the one place their values are checked.

Every option a method registers is an :class:`Option`: its default, what it means, and a check
of its type and range. :func:`onnxattr.attribution.registry.resolve_options` runs the checks of
every option of every method before anything runs, so that a NaN, infinite, negative, huge or
wrongly typed value is an :class:`~onnxattr.errors.OptionError` that names the option and the
allowed values, never a NaN map, a zero map, a bare TypeError or an allocation of gigabytes.
Real values are bounded in magnitude (``MAX_MAGNITUDE``), not only finite: a value near
float32's max passes a finiteness check yet overflows the forward or a rule's sums. What still
overflows within the bounds (a model that amplifies) is refused by ``attribute`` when the map
holds NaN or inf (``registry.check_finite``).
Checks that need the input (a baseline's shape, a window against the input's shape, a token id
against the vocabulary) are made where the input is known, by the method.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..backend import is_device_array
from ..errors import OptionError

#: the most integration steps or noise samples a method may be asked for
MAX_STEPS = 10_000
#: the largest batch_size a method may be given
MAX_BATCH = 65_536
#: the largest |value| of a real option or a baseline/bound. The computation runs in float32
#: (largest 3.4e38), and a value can enter it squared or cubed (a variance in a LayerNorm; q.k
#: in attention, whose gradient carries a third factor; gamma W+ x in a rule; a bound times W+
#: in z^B), summed over thousands of terms: at 3e38 (gamma, bounds) or 1e30 (a baseline on a
#: small transformer) the forward or the rule's sums overflow and the map is NaN or silently
#: zero; at 1e15 the bundled test transformer's IG map already reaches 7e36. 1e12 leaves that
#: map at about 1e28, and real inputs (pixels, normalised features, embeddings, raw tabular
#: values) are far below it.
MAX_MAGNITUDE = 1e12
#: how the bound reads in the allowed values
FINITE = f"finite in float32 and at most {MAX_MAGNITUDE:g} in magnitude"


class Check:
    """One option's allowed values: ``ok(value)`` and the words for them in ``describe``."""

    def ok(self, value: Any) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _span(low: float | None, high: float | None) -> str:
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    return f"[{lo}, {hi}]" if high is not None else f"[{lo}, {hi})"


@dataclass(frozen=True)
class Int(Check):
    """An int (not a bool) in [low, high]; None too where ``none``."""

    low: int | None = None
    high: int | None = None
    none: bool = False

    def ok(self, v: Any) -> bool:
        if v is None:
            return self.none
        return _is_int(v) and (self.low is None or v >= self.low) and (self.high is None or v <= self.high)

    def describe(self) -> str:
        return f"an int in {_span(self.low, self.high)}" + (" or None" if self.none else "")


@dataclass(frozen=True)
class Real(Check):
    """A finite real number in [low, high] (ints accepted, bools not)."""

    low: float | None = None
    high: float | None = None

    def ok(self, v: Any) -> bool:
        return (_is_real(v) and abs(float(v)) <= MAX_MAGNITUDE and (self.low is None or v >= self.low)
                and (self.high is None or v <= self.high))

    def describe(self) -> str:
        return f"a number in {_span(self.low, self.high)}, {FINITE}"


@dataclass(frozen=True)
class Choice(Check):
    """One of the given strings."""

    values: tuple[str, ...]

    def ok(self, v: Any) -> bool:
        return isinstance(v, str) and v in self.values

    def describe(self) -> str:
        return "one of " + ", ".join(map(repr, self.values))


@dataclass(frozen=True)
class Numeric(Check):
    """A finite number, or an array of finite numbers (not a masked array; shape checked by the
    method against the input); None too where ``none``."""

    none: bool = False

    def ok(self, v: Any) -> bool:
        if v is None:
            return self.none
        if _is_real(v):
            return abs(float(v)) <= MAX_MAGNITUDE
        if isinstance(v, np.ma.MaskedArray):
            return False
        host = v.get() if is_device_array(v) else v  # not hasattr(v, "get"): a dict has one too
        if not isinstance(host, np.ndarray) or host.dtype.kind not in "iuf":
            return False
        return bool(host.size == 0 or np.abs(host.astype(np.float64)).max() <= MAX_MAGNITUDE)

    def describe(self) -> str:
        return (f"a number or a NumPy array of numbers (not masked), {FINITE}"
                + (" or None" if self.none else ""))


@dataclass(frozen=True)
class Window(Check):
    """A positive int, or a sequence of positive ints (one per axis); None too where ``none``."""

    none: bool = False
    high: int = 1 << 20

    def ok(self, v: Any) -> bool:
        if v is None:
            return self.none
        items: Sequence[Any] = (v,) if _is_int(v) else v if isinstance(v, (tuple, list)) else ()
        return bool(items) and all(_is_int(i) and 1 <= i <= self.high for i in items)

    def describe(self) -> str:
        return (f"an int in [1, {self.high}] or a tuple of such ints, one per axis"
                + (" or None" if self.none else ""))


@dataclass(frozen=True)
class Instance(Check):
    """An instance of ``cls``; None too where ``none``."""

    cls: type
    none: bool = False

    def ok(self, v: Any) -> bool:
        return isinstance(v, self.cls) or (v is None and self.none)

    def describe(self) -> str:
        return f"a {self.cls.__module__}.{self.cls.__qualname__}" + (" or None" if self.none else "")


@dataclass(frozen=True)
class Anything(Check):
    """Any value (checked by the method itself)."""

    def ok(self, v: Any) -> bool:
        return True

    def describe(self) -> str:
        return "any value"


@dataclass(frozen=True)
class Option:
    """One keyword option of a method: its default, what it means and its allowed values."""

    default: Any
    doc: str
    check: Check = Anything()

    def validate(self, method: str, name: str, value: Any) -> Any:
        """``value`` if allowed; OptionError naming the option, the method and the allowed values."""
        if not self.check.ok(value):
            raise OptionError(f"option {name}={_short(value)} of method {method!r}: {name} must be "
                              f"{self.check.describe()}")
        return value


def _short(v: Any) -> str:
    text = repr(v) if not hasattr(v, "shape") else f"<{type(v).__name__} shape {tuple(v.shape)} dtype {v.dtype}>"
    return text if len(text) <= 80 else text[:77] + "..."


#: options shared by several methods
BATCH_SIZE = Option(None, "largest number of inputs per forward/backward pass; None: up to 64, as many as "
                          "keep each activation within 32 MiB on the CPU (Model.pass_size)",
                    Int(1, MAX_BATCH, none=True))
