"""im2col and col2im of 2-D windows (Conv, ConvTranspose) as one kernel each.

The generic path pads the input (a copy), takes a strided view of the windows and lets the matmul
copy it; its adjoint adds each kernel offset's slice in turn (one pass over the input per offset).
Here im2col reads the input once with the padding done by index arithmetic, and col2im gathers,
for each input cell, the columns that read it (no atomics, the same summation order as the
generic path). ``win`` is an :class:`onnxattr.ops.window.Window`, or anything with its
``kernel``, ``strides``, ``dilations``, ``pads_begin`` and ``out``.

Columns come in two layouts: (N, C, KH, KW, OH, OW), the windows view's, or with
``images_last`` (C, KH, KW, N, OH, OW), which reshapes without a copy to the (C*K, N*P) matrix
that one product over the whole batch takes (``ops.linear.correlate``'s layout).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .cuda import launch, register

register("im2col2d", r"""
extern "C" __global__ void im2col2d(const T* x, T* cols, int c, int h, int w, int kh, int kw,
                                    int sh, int sw, int dh, int dw, int ph, int pw,
                                    int oh, int ow, T fill, int images_last, long long batch,
                                    long long n) {
    // cols is (N, C, KH, KW, OH, OW), or (C, KH, KW, N, OH, OW) with images_last; x is (N, C, H, W)
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        long long r = i, img;
        const int q = (int)(r % ow); r /= ow;
        const int p = (int)(r % oh); r /= oh;
        if (images_last) { img = r % batch; r /= batch; }
        const int j = (int)(r % kw); r /= kw;
        const int k = (int)(r % kh); r /= kh;
        if (!images_last) { img = r / c; r %= c; }  // r = the channel
        const int y = p * sh + k * dh - ph;
        const int xx = q * sw + j * dw - pw;
        cols[i] = (y >= 0 && y < h && xx >= 0 && xx < w) ? x[((img * c + r) * h + y) * w + xx] : fill;
    }
}
""", {"T": "float"}, {"T": "double"})

register("col2im2d", r"""
extern "C" __global__ void col2im2d(const T* cols, T* dx, int c, int h, int w, int kh, int kw,
                                    int sh, int sw, int dh, int dw, int ph, int pw,
                                    int oh, int ow, int images_last, long long batch, long long n) {
    // dx is (N, C, H, W): the sum over the windows (p, q) and offsets (k, j) that read (y, x);
    // cols is (N, C, KH, KW, OH, OW), or (C, KH, KW, N, OH, OW) with images_last
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        long long r = i;
        const int xx = (int)(r % w); r /= w;
        const int y = (int)(r % h); r /= h;  // r = image * C + channel
        const long long img = r / c, ch = r % c;
        // cols[..., k, j, p, q] = base[((k * kw + j) * step + p) * ow + q]
        const long long step = images_last ? batch * oh : (long long)oh;
        const T* base = images_last ? cols + (ch * kh * kw * batch + img) * (long long)oh * ow
                                    : cols + r * (long long)kh * kw * oh * ow;
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
                acc += base[((long long)(k * kw + j) * step + p) * ow + q];
            }
        }
        dx[i] = acc;
    }
}
""", {"T": "float"}, {"T": "double"})


def _params(win: Any) -> tuple:
    (kh, kw), (sh, sw), (dh, dw), (ph, pw), (oh, ow) = (
        tuple(int(v) for v in t) for t in (win.kernel, win.strides, win.dilations, win.pads_begin, win.out)
    )
    return tuple(np.int32(v) for v in (kh, kw, sh, sw, dh, dw, ph, pw, oh, ow))


def supported(x: Any, win: Any) -> bool:
    """Whether the kernels take this input: float32/64, (N, C, H, W), sizes that fit an int."""
    return (
        x.ndim == 4 and len(win.kernel) == 2 and x.dtype in (np.float32, np.float64)
        and max(x.shape[2:]) + max(win.pads_begin) + max(win.pads_end) < 2**31
    )


def im2col(x: Any, win: Any, fill: float = 0.0, images_last: bool = False) -> Any:
    """(N, C, H, W) -> (N, C, KH, KW, OH, OW), the windows of ``x`` padded by ``fill``
    ((C, KH, KW, N, OH, OW) with ``images_last``).

    NumPy equivalent (:func:`onnxattr.kernels.reference.im2col`), i.e. a contiguous copy of
    ``win.view(win.pad(x, fill))``::

        xp = np.pad(x, [(0, 0), (0, 0), (ph, eh), (pw, ew)], constant_values=fill)
        cols[:, :, i, j] = xp[:, :, i*dh : i*dh + (oh-1)*sh + 1 : sh, j*dw : j*dw + (ow-1)*sw + 1 : sw]
    """
    import cupy as cp

    x = cp.ascontiguousarray(x)
    n, c, h, w = x.shape
    p = _params(win)
    kernel, out = tuple(int(v) for v in p[:2]), tuple(int(v) for v in p[8:])
    shape = ((c,) + kernel + (n,) + out) if images_last else ((n, c) + kernel + out)
    cols = cp.empty(shape, dtype=x.dtype)
    if cols.size:
        launch("im2col2d", cols.size,
               (x, cols, np.int32(c), np.int32(h), np.int32(w)) + p
               + (x.dtype.type(fill), np.int32(images_last), np.int64(n), np.int64(cols.size)),
               T=x.dtype)
    return cols


def col2im(cols: Any, shape: tuple[int, ...], win: Any, images_last: bool = False) -> Any:
    """The adjoint of :func:`im2col` with fill 0: (N, C, KH, KW, OH, OW) -> (N, C, H, W)
    (columns (C, KH, KW, N, OH, OW) with ``images_last``).

    NumPy equivalent (:func:`onnxattr.kernels.reference.col2im`), i.e. ``win.scatter_add(cols,
    dx)`` into zeros of the padded shape, then ``win.crop(dx)``::

        dx = np.zeros(padded_shape)
        dx[:, :, i*dh : i*dh + (oh-1)*sh + 1 : sh, j*dw : j*dw + (ow-1)*sw + 1 : sw] += cols[:, :, i, j]
        return dx[:, :, ph : ph + h, pw : pw + w]
    """
    import cupy as cp

    cols = cp.ascontiguousarray(cols)
    n, c, h, w = (int(v) for v in shape)
    dx = cp.empty((n, c, h, w), dtype=cols.dtype)
    if dx.size:
        launch("col2im2d", dx.size,
               (cols, dx, np.int32(c), np.int32(h), np.int32(w)) + _params(win)
               + (np.int32(images_last), np.int64(n), np.int64(dx.size)),
               T=cols.dtype)
    return dx
