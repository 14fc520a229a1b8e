"""Sliding windows over the spatial axes of an (N, C, *spatial) array: im2col and col2im.

Conv and the pooling ops share this geometry. ``Window`` resolves ONNX's kernel, stride,
dilation, pads, auto_pad and ceil_mode attributes for one input shape; ``view`` returns the
windows as a strided view of shape (N, C, *kernel, *out) without copying, and ``scatter_add`` is
its adjoint (col2im), looping over kernel offsets only. ``clipped_offsets`` gives the same
offsets as slices of the unpadded input (pooling needs no padded copy), ``transposed`` the window
of a stride-1 correlation's adjoint (the full correlation with the flipped kernel), and
``batches`` cuts a batch into the chunks that im2col copies at a time.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Sequence

from ..backend import array_module
from .base import Array, Op, Shape


@dataclass(frozen=True)
class Window:
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]  # including any extra padding that ceil_mode needs
    declared_end: tuple[int, ...]  # the end pads the model declared
    out: tuple[int, ...]

    @property
    def padded(self) -> bool:
        return any(self.pads_begin) or any(self.pads_end)

    def pad(self, x: Array, value: float) -> Array:
        """x with the window's padding on its spatial axes."""
        if not self.padded:
            return x
        xp = array_module(x)
        widths = [(0, 0), (0, 0)] + list(zip(self.pads_begin, self.pads_end))
        return xp.pad(x, widths, mode="constant", constant_values=value)

    def view(self, xpad: Array) -> Array:
        """Windows of the padded input as a (N, C, *kernel, *out) strided view."""
        xp = array_module(xpad)
        s = xpad.strides
        spatial = s[2:]
        shape = xpad.shape[:2] + self.kernel + self.out
        strides = s[:2] + tuple(st * d for st, d in zip(spatial, self.dilations)) + tuple(
            st * k for st, k in zip(spatial, self.strides)
        )
        return xp.lib.stride_tricks.as_strided(xpad, shape=shape, strides=strides)

    def offsets(self) -> Any:
        """Every kernel offset as a tuple of slices into the padded input's spatial axes."""
        for k in itertools.product(*(range(n) for n in self.kernel)):
            yield tuple(
                slice(ki * d, ki * d + (o - 1) * s + 1, s)
                for ki, d, o, s in zip(k, self.dilations, self.out, self.strides)
            ), k

    def clipped_offsets(self, spatial: Sequence[int]) -> Any:
        """For every kernel offset whose windows reach the unpadded input: the slices of the
        output positions p whose cell s * p + d * k - pad lies inside the input, and of those
        cells in the input, so that windows are reduced without a padded copy. Offsets are
        found per axis, so a kernel far larger than its input costs no more than the input."""
        per_axis = []
        for kn, d, o, s, b, n in zip(self.kernel, self.dilations, self.out, self.strides, self.pads_begin, spatial):
            hits = []
            for ki in range(kn):
                shift = d * ki - b  # input index of output position p: s * p + shift
                first = max(0, -(-(-shift) // s))
                last = min(o - 1, (n - 1 - shift) // s)
                if last >= first:
                    hits.append((slice(first, last + 1), slice(s * first + shift, s * last + shift + 1, s)))
            per_axis.append(hits)
        for combo in itertools.product(*per_axis):
            yield tuple(out for out, _ in combo), tuple(cells for _, cells in combo)

    def scatter_add(self, cols: Array, into: Array) -> None:
        """Adjoint of ``view``: add (N, C, *kernel, *out) columns into a padded input, in place."""
        for sl, k in self.offsets():
            into[(slice(None), slice(None)) + sl] += cols[(slice(None), slice(None)) + k]

    def padded_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of an (N, C, *spatial) input with the window's padding."""
        return tuple(shape[:2]) + tuple(n + b + e for n, b, e in zip(shape[2:], self.pads_begin, self.pads_end))

    def transposed(self, spatial: Sequence[int]) -> "Window | None":
        """The window of this stride-1 correlation's adjoint, or None where there is none.

        The vjp of a stride-1 correlation from ``spatial`` to ``out`` is the correlation of its
        output cotangent with the flipped kernel, padded by d (k - 1) - pad at the start (and what
        gives back ``spatial`` at the end): a correlation again, so it runs as im2col over BLAS
        instead of col2im. None for strides > 1 or pads beyond the kernel's extent.
        """
        if any(s != 1 for s in self.strides):
            return None
        extent = [d * (k - 1) for k, d in zip(self.kernel, self.dilations)]
        begin = tuple(e - b for e, b in zip(extent, self.pads_begin))
        end = tuple(n - o + b for n, o, b in zip(spatial, self.out, self.pads_begin))
        if min(begin + end, default=0) < 0:
            return None
        return Window(kernel=self.kernel, strides=self.strides, dilations=self.dilations,
                      pads_begin=begin, pads_end=end, declared_end=end, out=tuple(spatial))

    def crop(self, xpad: Array) -> Array:
        """The unpadded part of a padded input."""
        if not self.padded:
            return xpad
        sl = tuple(
            slice(b, n - e) for b, e, n in zip(self.pads_begin, self.pads_end, xpad.shape[2:])
        )
        return xpad[(slice(None), slice(None)) + sl]


#: The size of one chunk's im2col matrix on the CPU: enough images per chunk for an efficient
#: matrix product, few enough that the copy stays in cache (measured on ResNets).
CHUNK_BYTES = 8 << 20
#: The input of one chunk of pooling planes on the CPU: the passes over it stay in the core's cache.
PLANE_CHUNK_BYTES = 1 << 20


def batches(xp: Any, n: int, bytes_each: int, chunk_bytes: int | None = None) -> list[tuple[int, int]]:
    """(start, stop) of the chunks of ``n`` items (images, planes) that are processed one at a
    time: about ``chunk_bytes`` (CHUNK_BYTES) each on the CPU, all at once on a GPU."""
    limit = CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    step = n if xp.__name__ != "numpy" else max(1, min(n, limit // max(bytes_each, 1)))
    return [(i, min(n, i + step)) for i in range(0, n, step)]


class _Windowed(Op):
    """The declarations of the ops with sliding windows (Conv, ConvTranspose, the pools): the
    attribute values the spec forbids, refused when the op is made."""

    positive = ("kernel_shape", "strides", "dilations")
    non_negative = ("pads", "output_padding")
    choices = {"auto_pad": ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")}

    def check_window(self, spatial: Shape, kernel: Sequence[int]) -> None:
        """Refuse, at load, a window that does not fit the (inferred) spatial shape."""
        if spatial is None or any(n is None for n in spatial):
            return
        resolve(self, spatial, kernel, bool(self.attrs.get("ceil_mode")))


def resolve(
    op: Any,
    spatial: Sequence[int],
    kernel: Sequence[int],
    ceil_mode: bool = False,
) -> Window:
    """The window geometry of ``op`` (its strides/dilations/pads/auto_pad attributes) on an input
    with these spatial sizes. ``op.unsupported`` names the node on a bad attribute."""
    a = op.attrs
    nd = len(spatial)
    kernel = tuple(int(k) for k in kernel)
    strides = tuple(a.get("strides") or (1,) * nd)
    dilations = tuple(a.get("dilations") or (1,) * nd)
    pads = list(a.get("pads") or (0,) * (2 * nd))
    auto_pad = a.get("auto_pad") or "NOTSET"
    if len(kernel) != nd or len(strides) != nd or len(dilations) != nd or len(pads) != 2 * nd:
        raise op.unsupported(
            f"kernel/strides/dilations/pads of lengths {len(kernel)}/{len(strides)}/"
            f"{len(dilations)}/{len(pads)} do not fit {nd} spatial axes"
        )
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = [math.ceil(n / s) for n, s in zip(spatial, strides)]
        total = [max(0, (o - 1) * s + e - n) for o, s, e, n in zip(out, strides, extent, spatial)]
        small = [t // 2 for t in total]
        big = [t - t // 2 for t in total]
        begin, end = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
    elif auto_pad == "VALID":
        begin, end = [0] * nd, [0] * nd
    elif auto_pad == "NOTSET":
        begin, end = pads[:nd], pads[nd:]
    else:
        raise op.unsupported(f"auto_pad={auto_pad!r}")
    out = []
    for n, b, e, ext, s in zip(spatial, begin, end, extent, strides):
        span = n + b + e - ext  # as onnxruntime: ceil_mode may start a window past a short input
        o = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (o - 1) * s >= n + b:  # the last window must start inside the input
            o -= 1
        if o < 1:
            raise op.unsupported(
                f"kernel extent {ext} with stride {s} leaves no output on an input of {n} cells "
                f"padded to {n + b + e}"
            )
        out.append(o)
    full_end = [
        max(e, (o - 1) * s + ext - n - b) for n, b, e, ext, s, o in zip(spatial, begin, end, extent, strides, out)
    ]
    return Window(
        kernel=kernel,
        strides=strides,
        dilations=dilations,
        pads_begin=tuple(begin),
        pads_end=tuple(full_end),
        declared_end=tuple(end),
        out=tuple(out),
    )
