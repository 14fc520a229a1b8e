"""NumPy equivalents of the CUDA kernels: the oracles the GPU tests compare each kernel with.

They are also checked against the ops and rules they stand in for (``tests/test_backend.py``),
so a kernel that agrees with its reference computes what the CPU path computes.
"""
from __future__ import annotations

import numpy as np


def lrp_divide(r: np.ndarray, z: np.ndarray, eps: float, z2: np.ndarray | None = None,
               gate: np.ndarray | None = None, gate_sign: int = 1) -> np.ndarray:
    """gate(r) / stabilize(z [+ z2], eps); 0 where the denominator is 0 and eps is 0."""
    z = z if z2 is None else z + z2
    d = z + np.where(z >= 0, z.dtype.type(eps), z.dtype.type(-eps))
    if gate is not None:
        r = r * (gate > 0 if gate_sign > 0 else gate < 0)
    if eps > 0:
        return r / d
    zero = d == 0
    return np.where(zero, 0, r / np.where(zero, 1, d)).astype(r.dtype)


def _geometry(kernel, strides, dilations, pads_begin, out):
    return [tuple(int(v) for v in t) for t in (kernel, strides, dilations, pads_begin, out)]


def im2col(x: np.ndarray, kernel, strides, dilations, pads_begin, out, fill: float = 0.0,
           images_last: bool = False) -> np.ndarray:
    """(N, C, H, W) -> (N, C, KH, KW, OH, OW): cols[..., i, j, p, q] = x_pad[..., p*s + i*d, q*s + j*d],
    with x padded by ``fill`` at pads_begin (and as far as the windows reach at the end);
    (C, KH, KW, N, OH, OW) with ``images_last``."""
    (kh, kw), (sh, sw), (dh, dw), (ph, pw), (oh, ow) = _geometry(kernel, strides, dilations, pads_begin, out)
    n, c, h, w = x.shape
    eh = max(0, (oh - 1) * sh + (kh - 1) * dh + 1 - h - ph)
    ew = max(0, (ow - 1) * sw + (kw - 1) * dw + 1 - w - pw)
    xp = np.pad(x, [(0, 0), (0, 0), (ph, eh), (pw, ew)], constant_values=fill)
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = xp[:, :, i * dh : i * dh + (oh - 1) * sh + 1 : sh, j * dw : j * dw + (ow - 1) * sw + 1 : sw]
    return np.ascontiguousarray(cols.transpose(1, 2, 3, 0, 4, 5)) if images_last else cols


def col2im(cols: np.ndarray, shape, kernel, strides, dilations, pads_begin, images_last: bool = False) -> np.ndarray:
    """The adjoint of :func:`im2col` (fill 0): sum each column back onto the input cell it read,
    in kernel-offset order; cells in the padding are dropped. ``shape`` is (N, C, H, W)."""
    if images_last:
        cols = cols.transpose(3, 0, 1, 2, 4, 5)
    n, c, kh, kw, oh, ow = cols.shape
    (kh, kw), (sh, sw), (dh, dw), (ph, pw), _ = _geometry((kh, kw), strides, dilations, pads_begin, (oh, ow))
    h, w = shape[2:]
    eh = max(0, (oh - 1) * sh + (kh - 1) * dh + 1 - h - ph)
    ew = max(0, (ow - 1) * sw + (kw - 1) * dw + 1 - w - pw)
    dx = np.zeros((n, c, h + ph + eh, w + pw + ew), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            dx[:, :, i * dh : i * dh + (oh - 1) * sh + 1 : sh, j * dw : j * dw + (ow - 1) * sw + 1 : sw] += cols[:, :, i, j]
    return dx[:, :, ph : ph + h, pw : pw + w]


def maxpool2d(x: np.ndarray, kernel, strides, dilations, pads_begin, out, index_dtype) -> tuple[np.ndarray, np.ndarray]:
    """Max over each window (x padded by -inf) and the raster index i * KW + j of its first
    maximum."""
    cols = im2col(x, kernel, strides, dilations, pads_begin, out, fill=-np.inf)
    n, c, kh, kw, oh, ow = cols.shape
    flat = cols.reshape(n, c, kh * kw, oh, ow)
    return flat.max(axis=2), flat.argmax(axis=2).astype(index_dtype)


def maxpool2d_vjp(g: np.ndarray, idx: np.ndarray, shape, kernel, strides, dilations, pads_begin) -> np.ndarray:
    """Each window's cotangent sent to its argmax cell (summed where windows overlap)."""
    n, c, oh, ow = g.shape
    kh, kw = (int(k) for k in kernel)
    cols = np.zeros((n, c, kh * kw, oh, ow), dtype=g.dtype)
    np.put_along_axis(cols, idx.astype(np.int64)[:, :, None], g[:, :, None], axis=2)
    return col2im(cols.reshape(n, c, kh, kw, oh, ow), shape, kernel, strides, dilations, pads_begin)


def row_percentile(a: np.ndarray, q: float, method: str = "linear") -> np.ndarray:
    """The q-th percentile of each row of a 2-D array ('linear', NumPy's default, or 'nearest')."""
    return np.percentile(a, q, axis=1, method=method)


def rectgrad_mask(g: np.ndarray, score: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """g * 1[score > tau[sample]]: RectGrad's rule once tau is known per sample."""
    n = g.shape[0]
    return g * (score > tau.reshape((n,) + (1,) * (g.ndim - 1)))
