"""2-D max pooling with the argmax of each window, and its vjp, one kernel each.

The generic path makes two passes over the padded input per kernel offset (compare, maximum).
Here one thread per window reads its cells once and keeps the raster offset i * KW + j of the
first maximum (the cell PyTorch and onnxruntime route the gradient to, and the one
:class:`onnxattr.ops.pool.MaxPool`'s vjp picks); a uint8 index per window is a quarter of what
keeping x for the vjp costs. The vjp gathers, for each input cell, the windows whose argmax it is
(no atomics).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .cuda import launch, register
from .window import _params

register("maxpool2d", r"""
extern "C" __global__ void maxpool2d(const T* x, T* y, I* idx, int c, int h, int w, int kh, int kw,
                                     int sh, int sw, int dh, int dw, int ph, int pw,
                                     int oh, int ow, T lowest, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        long long r = i;
        const int q = (int)(r % ow); r /= ow;
        const int p = (int)(r % oh); r /= oh;  // r = n * C + c
        const T* plane = x + r * (long long)h * w;
        T best = lowest;
        int arg = 0;
        for (int k = 0; k < kh; ++k) {
            const int yy = p * sh + k * dh - ph;
            for (int j = 0; j < kw; ++j) {
                const int xx = q * sw + j * dw - pw;
                const T v = (yy >= 0 && yy < h && xx >= 0 && xx < w) ? plane[yy * w + xx] : lowest;
                if (k == 0 && j == 0) { best = v; continue; }
                // as the generic path: the index moves on a strictly greater value, and a NaN
                // (which compares false) still becomes the maximum, as np.maximum makes it
                if (v > best) { best = v; arg = k * kw + j; }
                else if (v != v) best = v;
            }
        }
        y[i] = best;
        idx[i] = (I)arg;
    }
}
""", *({"T": t, "I": i} for t in ("float", "double") for i in ("unsigned char", "int")))

register("maxpool2d_vjp", r"""
extern "C" __global__ void maxpool2d_vjp(const T* g, const I* idx, T* dx, int c, int h, int w,
                                         int kh, int kw, int sh, int sw, int dh, int dw,
                                         int ph, int pw, int oh, int ow, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        long long r = i;
        const int xx = (int)(r % w); r /= w;
        const int y = (int)(r % h); r /= h;  // r = n * C + c
        const long long base = r * (long long)oh * ow;
        T acc = (T)0;
        for (int k = 0; k < kh; ++k) {
            const int ty = y + ph - k * dh;
            if (ty < 0 || ty % sh) continue;
            const int p = ty / sh;
            if (p >= oh) continue;
            for (int j = 0; j < kw; ++j) {
                const int tx = xx + pw - j * dw;
                if (tx < 0 || tx % sw) continue;
                const int q = tx / sw;
                if (q >= ow) continue;
                const long long o = base + (long long)p * ow + q;
                if ((int)idx[o] == k * kw + j) acc += g[o];
            }
        }
        dx[i] = acc;
    }
}
""", *({"T": t, "I": i} for t in ("float", "double") for i in ("unsigned char", "int")))


def supported(x: Any, win: Any, index_dtype: Any) -> bool:
    """Whether the kernels take this input and index type."""
    from .window import supported as window_supported

    return window_supported(x, win) and np.dtype(index_dtype) in (np.uint8, np.int32)


def maxpool2d(x: Any, win: Any, index_dtype: Any) -> tuple[Any, Any]:
    """Max over each window of ``x`` (padded by -inf) and the raster offset of its first maximum.

    NumPy equivalent (:func:`onnxattr.kernels.reference.maxpool2d`)::

        cols = im2col(x, ..., fill=-np.inf).reshape(n, c, kh * kw, oh, ow)
        return cols.max(axis=2), cols.argmax(axis=2).astype(index_dtype)
    """
    import cupy as cp

    x = cp.ascontiguousarray(x)
    n, c, h, w = x.shape
    p = _params(win)
    out = (n, c, int(p[8]), int(p[9]))
    y = cp.empty(out, dtype=x.dtype)
    idx = cp.empty(out, dtype=index_dtype)
    if y.size:
        launch("maxpool2d", y.size,
               (x, y, idx, np.int32(c), np.int32(h), np.int32(w)) + p + (x.dtype.type(-np.inf), np.int64(y.size)),
               T=x.dtype, I=idx.dtype)
    return y, idx


def maxpool2d_vjp(g: Any, idx: Any, shape: tuple[int, ...], win: Any) -> Any:
    """Each window's cotangent sent to its argmax cell, summed where windows overlap: (N, C, H, W).

    NumPy equivalent (:func:`onnxattr.kernels.reference.maxpool2d_vjp`)::

        cols = np.zeros((n, c, kh * kw, oh, ow))
        np.put_along_axis(cols, idx[:, :, None], g[:, :, None], axis=2)
        return col2im(cols.reshape(n, c, kh, kw, oh, ow), shape, ...)
    """
    import cupy as cp

    g = cp.ascontiguousarray(g)
    idx = cp.ascontiguousarray(idx)
    n, c, h, w = (int(v) for v in shape)
    dx = cp.empty((n, c, h, w), dtype=g.dtype)
    if dx.size:
        launch("maxpool2d_vjp", dx.size,
               (g, idx, dx, np.int32(c), np.int32(h), np.int32(w)) + _params(win) + (np.int64(dx.size),),
               T=g.dtype, I=idx.dtype)
    return dx
