"""Per-row percentiles by radix select, and RectGrad's mask.

RectGrad thresholds a * R at its q-th percentile over each sample's units of a layer. CuPy's
percentile sorts every row; here each row's two order statistics around the percentile (the
floor and the ceiling of the virtual index, NumPy's 'linear' method) are found by a most
significant digit radix select on the float bits mapped to ordered unsigned keys ('nearest'
needs one of them, the rank NumPy rounds to): per 8-bit
digit, one pass counts the digits of the elements that share the prefix found so far (a
histogram per block in shared memory, then added to the row's), and one thread per row and
order statistic picks the digit whose bucket holds the wanted rank. Four passes over the data
for float32 (eight for float64) instead of a sort; the interpolation is NumPy's own.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .cuda import THREADS, kernel, launch, register

_KEYS = r"""
__device__ __forceinline__ unsigned int to_key(float v) {
    const unsigned int u = __float_as_uint(v);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ unsigned long long to_key(double v) {
    const unsigned long long u = (unsigned long long)__double_as_longlong(v);
    return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}
__device__ __forceinline__ float from_key(unsigned int k) {
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}
__device__ __forceinline__ double from_key(unsigned long long k) {
    return __longlong_as_double((long long)((k & 0x8000000000000000ull) ? (k & 0x7fffffffffffffffull) : ~k));
}
"""

register("radix_histogram", _KEYS + r"""
extern "C" __global__ void radix_histogram(const T* a, long long len, const K* prefix,
                                           unsigned int* hist, int shift) {
    // grid (blocks per row, rows); hist is (rows, 2, 256); prefix is (rows, 2)
    __shared__ unsigned int h[512];
    for (int b = threadIdx.x; b < 512; b += blockDim.x) h[b] = 0u;
    __syncthreads();
    const long long row = blockIdx.y;
    const T* x = a + row * len;
    const K p0 = prefix[2 * row], p1 = prefix[2 * row + 1];
    const int high = shift + 8;  // the bits above the digit are already fixed
    const bool all = high >= (int)(8 * sizeof(K));
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < len;
         i += (long long)gridDim.x * blockDim.x) {
        const K k = to_key(x[i]);
        const unsigned int d = (unsigned int)((k >> shift) & (K)255);
        if (all || ((k ^ p0) >> high) == (K)0) atomicAdd(&h[d], 1u);
        if (all || ((k ^ p1) >> high) == (K)0) atomicAdd(&h[256 + d], 1u);
    }
    __syncthreads();
    for (int b = threadIdx.x; b < 512; b += blockDim.x)
        if (h[b]) atomicAdd(&hist[row * 512 + b], h[b]);
}
""", {"T": "float", "K": "unsigned int"}, {"T": "double", "K": "unsigned long long"})

register("radix_select", _KEYS + r"""
extern "C" __global__ void radix_select(unsigned int* hist, K* prefix, long long* rank, T* value,
                                        int shift, int last, int n) {
    // one thread per (row, order statistic): pick the digit whose bucket holds the rank
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n) return;
    unsigned int* h = hist + (long long)t * 256;
    long long k = rank[t];
    for (int b = 0; b < 256; ++b) {
        const long long c = (long long)h[b];
        if (k < c) {
            prefix[t] |= ((K)b) << shift;
            break;
        }
        k -= c;
    }
    rank[t] = k;
    for (int b = 0; b < 256; ++b) h[b] = 0u;  // ready for the next digit
    if (last) value[t] = from_key(prefix[t]);
}
""", {"T": "float", "K": "unsigned int"}, {"T": "double", "K": "unsigned long long"})

register("rectgrad_mask", r"""
extern "C" __global__ void rectgrad_mask(const T* g, const T* score, const T* tau, T* out,
                                         long long len, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        out[i] = g[i] * (T)(score[i] > tau[i / len]);
    }
}
""", {"T": "float"}, {"T": "double"})

_KEY_DTYPE = {np.dtype(np.float32): np.dtype(np.uint32), np.dtype(np.float64): np.dtype(np.uint64)}
MAX_ROWS = 65535  # gridDim.y


def supported(a: Any) -> bool:
    """Whether :func:`row_percentile` takes ``a``: a 2-D float32/64 array of at most 65535 rows."""
    return a.ndim == 2 and a.dtype in (np.float32, np.float64) and 0 < a.shape[0] <= MAX_ROWS and a.shape[1] > 0


METHODS = ("linear", "nearest")


def ranks(length: int, q: float, method: str = "linear") -> tuple[int, int, float]:
    """The ranks of the two order statistics of NumPy's percentile and the interpolation weight.

    NumPy: v = (n - 1) * q / 100; 'linear': lo = floor(v), hi = lo + 1 (both n - 1 where
    v >= n - 1), weight v - lo; 'nearest': lo = hi = v rounded half to even, weight 0."""
    if method not in METHODS:
        raise ValueError(f"percentile method {method!r}: the kernel has {METHODS}")
    v = (length - 1) * np.true_divide(q, 100)
    if method == "nearest":
        k = int(np.around(v))
        return k, k, 0.0
    if v >= length - 1:
        return length - 1, length - 1, float(v - (length - 1))
    if v < 0:
        return 0, 0, float(v)
    lo = np.floor(v)
    return int(lo), int(lo) + 1, float(v - lo)


def row_percentile(a: Any, q: float, method: str = "linear") -> Any:
    """The q-th percentile of each row of a 2-D cupy array, as
    ``np.percentile(a, q, axis=1, method=method)`` ('linear' or 'nearest').

    NumPy equivalent (:func:`onnxattr.kernels.reference.row_percentile`)::

        np.percentile(a, q, axis=1, method=method)
    """
    import cupy as cp

    a = cp.ascontiguousarray(a)
    rows, length = a.shape
    key = _KEY_DTYPE[a.dtype]
    lo, hi, t = ranks(length, q, method)
    prefix = cp.zeros((rows, 2), dtype=key)
    rank = cp.asarray(np.tile(np.asarray([lo, hi], dtype=np.int64), rows))
    hist = cp.zeros((rows, 2, 256), dtype=np.uint32)
    value = cp.empty((rows, 2), dtype=a.dtype)
    per_row = max(1, min(-(-length // (THREADS * 8)), max(1, 4096 // rows)))
    histogram = kernel("radix_histogram", T=a.dtype, K=key)
    bits = 8 * key.itemsize
    for shift in range(bits - 8, -8, -8):
        histogram((per_row, rows), (THREADS,), (a, np.int64(length), prefix, hist, np.int32(shift)))
        launch("radix_select", 2 * rows,
               (hist, prefix, rank, value, np.int32(shift), np.int32(shift == 0), np.int32(2 * rows)),
               T=a.dtype, K=key)
    below, above = value[:, 0], value[:, 1]
    if method == "nearest":
        return below.copy()
    # NumPy's _lerp with a Python float weight (so in a's own dtype)
    diff = above - below
    return above - diff * (1 - t) if t >= 0.5 else below + diff * t


def rectgrad(g: Any, a: Any, q: float, method: str = "linear") -> Any:
    """RectGrad at one activation: g * 1[a g > tau], tau the q-th percentile of a g per sample.

    NumPy equivalent (:func:`onnxattr.kernels.reference.row_percentile` and
    :func:`~onnxattr.kernels.reference.rectgrad_mask`)::

        score = a * g
        tau = np.percentile(score.reshape(n, -1), q, axis=1, method=method)
        return g * (score > tau.reshape(n, 1, ...))
    """
    import cupy as cp

    score = cp.ascontiguousarray(a * g)
    n = g.shape[0]
    tau = row_percentile(score.reshape(n, -1), q, method).astype(g.dtype, copy=False)
    g = cp.ascontiguousarray(g)
    out = cp.empty_like(g)
    if out.size:
        launch("rectgrad_mask", out.size, (g, score, tau, out, np.int64(out.size // n), np.int64(out.size)), T=g.dtype)
    return out
