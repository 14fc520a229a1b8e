"""The LRP stabilized division as one kernel: c = gate(r) / stabilize(z + z2, eps).

stabilize(z) = z + eps * sign(z) with sign(0) = +1 (Zennit's convention); with eps = 0 the
result is 0 where the denominator is exactly 0. ``z2`` fuses the sum of the two denominator terms
of z+ and alpha-beta (z = z_k(x+, W+) + z_k(x-, W-)), and ``gate`` the sign mask of LRP-gamma
(r * 1[gate > 0] or r * 1[gate < 0]), so a rule's mapper reads each array once and writes once.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .cuda import launch, register

register("lrp_divide", r"""
extern "C" __global__ void lrp_divide(const T* r, const T* z, const T* z2, const T* gate, T* out,
                                      T eps, int has_z2, int gate_sign, int zero_safe,
                                      long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        T zi = z[i];
        if (has_z2) zi = zi + z2[i];
        const T d = zi + (zi >= (T)0 ? eps : -eps);
        T num = r[i];
        if (gate_sign > 0) num = num * (T)(gate[i] > (T)0);
        else if (gate_sign < 0) num = num * (T)(gate[i] < (T)0);
        out[i] = (zero_safe && d == (T)0) ? (T)0 : num / d;
    }
}
""", {"T": "float"}, {"T": "double"})


def supported(*arrays: Any) -> bool:
    """Whether the kernel takes these arrays: one float dtype, one shape, all C-contiguous."""
    a = arrays[0]
    return a.dtype in (np.float32, np.float64) and all(
        b.dtype == a.dtype and b.shape == a.shape and b.flags.c_contiguous for b in arrays
    )


def lrp_divide(r: Any, z: Any, epsilon: float, z2: Any = None, gate: Any = None, gate_sign: int = 1) -> Any:
    """gate(r) / stabilize(z [+ z2], epsilon) for cupy arrays of one shape and float dtype.

    NumPy equivalent (:func:`onnxattr.kernels.reference.lrp_divide`)::

        z = z if z2 is None else z + z2
        d = z + np.where(z >= 0, eps, -eps)
        if gate is not None:
            r = r * (gate > 0 if gate_sign > 0 else gate < 0)
        out = r / d if eps > 0 else np.where(d == 0, 0, r / np.where(d == 0, 1, d))
    """
    import cupy as cp

    out = cp.empty_like(r)
    t = r.dtype.type
    args = (
        r, z, z if z2 is None else z2, z if gate is None else gate, out, t(epsilon),
        np.int32(z2 is not None), np.int32(0 if gate is None else (1 if gate_sign > 0 else -1)),
        np.int32(not epsilon > 0), np.int64(r.size),
    )
    launch("lrp_divide", r.size, args, T=r.dtype)
    return out
