"""Upsample (opsets 7-9) and Resize (opsets 10-19), modes nearest and linear.

Resizing is separable: along each resized axis, output cell j reads input cells idx[k, j] with
weights w[k, j] (one pair for nearest, two for linear). The forward is one gather per pair and
axis; the vjp applies the transposed maps (built from the same index/weight pairs) along the
axes in reverse order, again as gathers (``axismap.gather_axis``, ``axismap.transpose_map``).

The coordinate arithmetic follows onnxruntime's (float32): an output cell j of an axis resized
from n to m cells with scale s maps to the input coordinate

    half_pixel            (j + 0.5) / s - 0.5
    pytorch_half_pixel    (j + 0.5) / s - 0.5, or 0 when m == 1
    half_pixel_symmetric  n / 2 * (1 - m / (s n)) + (j + 0.5) / s - 0.5        (opset 19)
    align_corners         j (n - 1) / (m - 1), or 0 when m == 1
    asymmetric            j / s
    tf_half_pixel_for_nn  (j + 0.5) / s

Nearest rounds it (round_prefer_floor, round_prefer_ceil, floor, ceil; Upsample and Resize-10
truncate, or take the ceiling when downsampling, as onnxruntime does) and clamps to [0, n - 1];
linear clamps it to [0, n - 1] and weighs the two cells around it. Scales give m = floor(n s);
sizes give s = m / n. Not implemented, with a clear error: mode 'cubic', coordinate mode
'tf_crop_and_resize' (roi), and antialiased linear downsampling (opset 18).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..backend import to_host
from .base import Array, Grads, Op, host_ints, norm_axis
from .axismap import gather_axis, transpose_map

#: one resized axis: (axis, input length, indices (k, m), weights (k, m) or None for nearest)
AxisMap = tuple[int, int, np.ndarray, "np.ndarray | None"]

COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "half_pixel_symmetric", "align_corners",
                    "asymmetric", "tf_half_pixel_for_nn")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def source_coordinates(mode: str, n: int, m: int, scale: np.float32) -> np.ndarray:
    """The input coordinate (float32) of each of the m output cells of an axis of n cells."""
    j = np.arange(m, dtype=np.float32)
    s = np.float32(scale)
    length_in, length_out = np.float32(n), np.float32(m)
    half = np.float32(0.5)
    if mode == "half_pixel":
        return (j + half) / s - half
    if mode == "pytorch_half_pixel":
        return (j + half) / s - half if m > 1 else np.zeros(m, np.float32)
    if mode == "half_pixel_symmetric":
        adjustment = length_out / (s * length_in)
        offset = length_in / np.float32(2) * (np.float32(1) - adjustment)
        return offset + (j + half) / s - half
    if mode == "align_corners":
        return j * (length_in - 1) / (length_out - 1) if m > 1 else np.zeros(m, np.float32)
    if mode == "asymmetric":
        return j / s
    if mode == "tf_half_pixel_for_nn":
        return (j + half) / s
    raise ValueError(mode)


def nearest_index(c: np.ndarray, n: int, mode: str, downsampling: bool) -> np.ndarray:
    """The input cell nearest to each coordinate, rounded as ``mode`` says, clamped to [0, n)."""
    base = np.floor(c)
    frac = c - base
    if mode == "simple":  # Upsample and Resize-10 in onnxruntime
        i = np.ceil(c) if downsampling else np.trunc(c)
    elif mode == "round_prefer_floor":
        i = base + (frac > 0.5)
    elif mode == "round_prefer_ceil":
        i = base + (frac >= 0.5)
    elif mode == "floor":
        i = base
    else:
        i = np.ceil(c)
    return np.clip(i, 0, n - 1).astype(np.int64)


def linear_pairs(c: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The two input cells around each coordinate (clamped to [0, n - 1]) and their weights."""
    c = np.clip(c, np.float32(0), np.float32(n - 1))
    i0 = np.floor(c).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    w1 = c - i0.astype(np.float32)
    return np.stack([i0, i1]), np.stack([np.float32(1) - w1, w1])


class _Interpolate(Op):
    """The shared forward and vjp over per-axis index/weight maps. Subclasses parse their
    attributes into ``mode``, ``coordinates`` and ``nearest`` and give ``geometry``."""

    mode: str = "nearest"
    coordinates: str = "asymmetric"
    nearest: str = "simple"

    def set_mode(self, mode: str) -> None:
        mode = "linear" if mode == "bilinear" else mode
        if mode == "cubic":
            raise self.unsupported("mode='cubic' is not implemented (nearest and linear are)")
        if mode not in ("nearest", "linear"):
            raise self.unsupported(f"mode={mode!r}; implemented: 'nearest', 'linear'")
        self.mode = mode
        # nearest only copies cells; linear is a weighted sum with weights adding up to 1
        self.kind = "route" if mode == "nearest" else "sum"

    def geometry(self, shape: tuple[int, ...], inputs: Sequence[Array | None]) -> tuple[list[int], list[np.float32]]:
        """The output shape and the per-axis scales (float32)."""
        raise NotImplementedError

    def maps(self, shape: tuple[int, ...], out: list[int], scales: list[np.float32]) -> list[AxisMap]:
        result = []
        for axis, (n, m, s) in enumerate(zip(shape, out, scales)):
            if n == m and s == 1:
                continue
            if n == 0 or m == 0:
                raise self.unsupported(f"resizing an axis of {n} cells to {m}")
            c = source_coordinates(self.coordinates, n, m, s)
            if self.mode == "nearest":
                result.append((axis, n, nearest_index(c, n, self.nearest, bool(s < 1))[None], None))
            else:
                result.append((axis, n, *linear_pairs(c, n)))
        return result

    def forward(self, x: Array, *rest: Array | None) -> tuple:
        shape = tuple(x.shape)
        out, scales = self.geometry(shape, rest)
        maps = self.maps(shape, out, scales)
        y = x
        for axis, _, idx, w in maps:
            y = gather_axis(y, idx, w, axis)
        return (y,), maps

    def vjp(self, ctx: list[AxisMap], grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        if not needs[0]:
            return []
        g = grads[0]
        for axis, n, idx, w in reversed(ctx):
            g = gather_axis(g, *transpose_map(idx, w, n), axis)
        return [g]


def _floats(a: Array | None) -> np.ndarray | None:
    """A scales input as float32 on the host (None where absent or empty)."""
    if a is None:
        return None
    v = np.asarray(to_host(a), dtype=np.float32).reshape(-1)
    return v if v.size else None


def _from_scales(shape: tuple[int, ...], scales: Sequence[float]) -> tuple[list[int], list[np.float32]]:
    s = [np.float32(v) for v in scales]
    return [int(np.float32(n) * v) for n, v in zip(shape, s)], s


class Upsample(_Interpolate):
    """y = x upsampled by ``scales`` (an attribute in opset 7, an input in opset 9), nearest
    or (bi)linear, with asymmetric coordinates: output cell j reads input j / scale."""

    def setup(self) -> None:
        if self.opset < 7:
            raise self.unsupported("Upsample before opset 7 (height_scale/width_scale attributes)")
        self.set_mode(self.attrs["mode"])

    def geometry(self, shape: tuple[int, ...], inputs: Sequence[Array | None]) -> tuple[list[int], list[np.float32]]:
        scales = _floats(inputs[0]) if inputs and inputs[0] is not None else self.attrs.get("scales")
        if scales is None or len(scales) != len(shape):
            raise self.unsupported(f"scales {scales} do not give one scale per axis of shape {shape}")
        return _from_scales(shape, scales)


class Resize(_Interpolate):
    """y = x resized to ``sizes`` or by ``scales`` (inputs: X, scales in opset 10; X, roi,
    scales, sizes from opset 11, with scales or sizes empty or absent), nearest or linear, with
    the coordinate_transformation_mode and nearest_mode attributes (opset 11+; opset 10 is
    asymmetric), and from opset 18 the ``axes`` the scales/sizes are for and
    keep_aspect_ratio_policy (stretch, not_larger, not_smaller)."""

    POLICIES = ("stretch", "not_larger", "not_smaller")

    def setup(self) -> None:
        self.set_mode(self.attrs["mode"])
        if self.opset >= 11:
            self.coordinates = self.coordinate_transformation_mode
            self.nearest = self.nearest_mode
        if self.coordinates == "tf_crop_and_resize":
            raise self.unsupported("coordinate_transformation_mode='tf_crop_and_resize' (roi) is not implemented")
        if self.coordinates not in COORDINATE_MODES:
            raise self.unsupported(f"coordinate_transformation_mode={self.coordinates!r}")
        if self.nearest not in NEAREST_MODES + ("simple",):
            raise self.unsupported(f"nearest_mode={self.nearest!r}")
        self.antialias = bool(self.attrs.get("antialias")) and self.mode != "nearest"
        self.policy = self.attrs.get("keep_aspect_ratio_policy") or "stretch"
        if self.policy not in self.POLICIES:
            raise self.unsupported(f"keep_aspect_ratio_policy={self.policy!r}")

    def geometry(self, shape: tuple[int, ...], inputs: Sequence[Array | None]) -> tuple[list[int], list[np.float32]]:
        if self.opset < 11:
            scales, sizes = _floats(inputs[0] if inputs else None), None
        else:
            padded = list(inputs) + [None] * 3
            scales, sizes = _floats(padded[1]), host_ints(padded[2]) or None
        r = len(shape)
        axes = list(range(r)) if self.attrs.get("axes") is None else [norm_axis(a, r) for a in self.attrs["axes"]]
        given = sizes if sizes is not None else scales
        if given is None:
            raise self.unsupported("neither 'scales' nor 'sizes' is given")
        if len(given) != len(axes):
            raise self.unsupported(f"{len(given)} scales/sizes for {len(axes)} axes of shape {shape}")
        out = list(shape)
        factors = [np.float32(1)] * r
        if sizes is None:
            full = [np.float32(1)] * r
            for a, v in zip(axes, scales):
                full[a] = v
            out, factors = _from_scales(shape, full)
        elif self.policy == "stretch":
            for a, m in zip(axes, sizes):
                out[a], factors[a] = m, np.float32(m) / np.float32(shape[a])
        else:
            ratios = [np.float32(m) / np.float32(shape[a]) for a, m in zip(axes, sizes)]
            s = min(ratios) if self.policy == "not_larger" else max(ratios)
            for a in axes:
                out[a], factors[a] = int(np.floor(s * np.float32(shape[a]) + np.float32(0.5))), s
        if self.antialias and any(f < 1 for f in factors):
            raise self.unsupported("antialias=1 with linear downsampling is not implemented")
        return out, factors
