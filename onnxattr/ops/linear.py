"""Ops with weights: Conv (any rank, padding, stride, dilation, groups), Gemm, MatMul, and the
per-channel ``Affine`` layer that canonization makes of a BatchNormalization with no layer to fuse
into.

Convolution is im2col over BLAS (:func:`correlate`): a chunk of images at a time, the windows are
copied into a (G, C/G*K, images*P) matrix and multiplied by the (G, O/G, C/G*K) weights, so that
each product is large enough for BLAS and each copy small enough to stay in cache; a 1x1
convolution of one image multiplies the input itself. Its adjoint (:func:`correlate_transpose`,
Conv's vjp and ConvTranspose's forward) is, for stride 1, the correlation with the flipped
kernel; for larger strides, the transposed product followed by col2im (``Window.scatter_add``).
On the GPU, 2-D im2col and col2im are CUDA kernels (:mod:`onnxattr.kernels.window`) that pad and
crop as they copy.

With ``op.kernels == "onnxruntime"`` (set by ``load`` on the CPU) Conv and its data vjp,
ConvTranspose, Gemm, MatMul and Dense run through onnxruntime's kernels
(:mod:`onnxattr.kernels.onnxruntime`) where it takes the dtype and the product is large enough
(``MIN_MACS``); weights that are a model's parameters, or derived from them once (LRP's modified
weights), are baked into the cached sessions. Everything else falls back to the NumPy code here.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..backend import array_module, use_kernels
from ..compiled.symbolic import NotCompilable
from ..kernels import onnxruntime as ortk
from ..kernels import window as cuda_window
from .base import Array, Grads, Linear, Op, Shape, unbroadcast
from .window import Window, _Windowed, batches, resolve


def on_ort(op: Op, op_type: str, *arrays: Array | None) -> bool:
    """Whether ``op`` runs ``op_type`` on these arrays through onnxruntime: the model chose those
    kernels, the arrays are on the host, and onnxruntime's kernel takes their dtype."""
    if getattr(op, "kernels", "numpy") != "onnxruntime":
        return False
    present = [a for a in arrays if a is not None]
    dtype = present[0].dtype
    return all(type(a) is np.ndarray and a.dtype == dtype for a in present) and ortk.supported(op_type, dtype)


def constant(*arrays: Array | None) -> bool:
    """Whether every given weight is constant (a parameter, or derived from one), so baked."""
    return all(a is None or ortk.is_constant(a) for a in arrays)


def conv_geometry(win: Window, group: int) -> ortk.ConvGeometry:
    return ortk.ConvGeometry(win.strides, win.dilations, win.pads_begin + win.pads_end, group)


class Conv(Linear, _Windowed):
    """y[n, o] = sum_{c, k} W[o, c, k] x_pad[n, g(o) * C/G + c, s * p + d * k] + b[o]."""

    positive = _Windowed.positive + ("group",)

    def check(self, shapes: Sequence[Shape | None], values: Sequence[Array | None] = ()) -> None:
        x, w = shapes[0], shapes[1]
        b = shapes[2] if len(shapes) > 2 else None
        if x is None or w is None:
            return
        if len(x) != len(w) or len(x) < 3:
            raise self.unsupported(f"input of shape {list(x)} and weight of shape {list(w)} differ in rank")
        o, cg = w[0], w[1]
        if None not in (x[1], cg) and x[1] != cg * self.group:
            raise self.unsupported(f"input has {x[1]} channels, weight {list(w)} expects {cg} x {self.group} groups")
        if o is not None and o % self.group:
            raise self.unsupported(f"{o} output channels do not split into {self.group} groups")
        if b is not None and o is not None and tuple(b) != (o,):
            raise self.unsupported(f"bias of shape {list(b)} does not match {o} output channels")
        kernel = tuple(w[2:])
        if self.kernel_shape and None not in kernel and tuple(self.kernel_shape) != kernel:
            raise self.unsupported(f"kernel_shape {self.kernel_shape} differs from the weight's {list(kernel)}")
        if None not in kernel:
            self.check_window(x[2:], kernel)

    def window(self, x: Array, w: Array) -> Window:
        kernel = self.kernel_shape or w.shape[2:]
        if tuple(kernel) != tuple(w.shape[2:]):
            raise self.unsupported(f"kernel_shape {kernel} differs from the weight's {w.shape[2:]}")
        return resolve(self, x.shape[2:], kernel)

    def forward(self, x: Array, w: Array, b: Array | None = None) -> tuple:
        c = x.shape[1]
        if c != w.shape[1] * self.group:
            raise self.unsupported(f"input has {c} channels, weight expects {w.shape[1]} x {self.group} groups")
        win = self.window(x, w)
        macs = x.shape[0] * w.size * math.prod(win.out)
        if macs >= ortk.MIN_MACS and on_ort(self, "Conv", x, w, b):
            geo = conv_geometry(win, self.group)
            return (ortk.conv(x, w, b, geo, constant(w, b)),), (x.shape, w, win, geo)
        return (correlate(x, w, win, self.group, b),), (x.shape, w, win, None)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        shape, w, win, geo = ctx
        if any(needs[1:]):
            raise self.unsupported("gradients with respect to weights or bias are not computed")
        g = grads[0]
        if geo is not None and type(g) is np.ndarray and g.dtype == w.dtype:
            return [ortk.conv_data_vjp(g, w, geo, shape[2:], constant(w))]
        return [correlate_transpose(g, w, win, self.group, shape[2:])]

    def vjp_graph(self, ctx: Any, grads: Sequence[Any], needs: Sequence[bool]) -> Grads:
        """One Conv (stride 1) or ConvTranspose (``ortk.data_vjp_form``), its weight transformed
        once per parameter."""
        x, w = ctx.inputs[0], ctx.inputs[1]
        g = grads[0]
        if any(needs[1:]) or not isinstance(w, np.ndarray) or None in x.shape[2:] or None in g.shape[2:]:
            raise NotCompilable(f"{self.name}: a convolution's vjp needs a constant weight and static sizes")
        geo = conv_geometry(self.window(x, w), self.group)
        op, attrs, transform = ortk.data_vjp_form(geo, w.shape[2:], x.shape[2:], g.shape[2:])
        weight = ortk.derived(w, ("data vjp", transform, self.group), lambda a: ortk.transformed(a, transform, attrs))
        return [g.tracer.emit(op, [g, weight], g.dtype, x.shape, **attrs)[0]]


def correlate(x: Array, w: Array, win: Window, groups: int, bias: Array | None = None) -> Array:
    """y[n, o, p] = sum_{c, k} w[o, c, k] x_pad[n, g(o) * C/G + c, s * p + d * k] (+ bias[o]): the
    convolution of ONNX (a correlation) with weights w of shape (O, C/G, *kernel).

    Chunks of images (``window.batches``) are copied into (G, C/G*K, images*P) columns, one
    chunk at a time, and multiplied by the weights; a single image's product lands in the output
    directly, several images' are put back in (N, O, P) order with the bias added on the way.
    """
    xp = array_module(x)
    n = x.shape[0]
    o, nd = w.shape[0], len(win.kernel)
    p = math.prod(win.out)
    wm = w.reshape(groups, o // groups, -1)
    dtype = xp.result_type(x.dtype, w.dtype)
    y = xp.empty((n, o, p), dtype=dtype)
    b = None if bias is None else bias.reshape(o, 1)
    cuda = use_kernels(x) and cuda_window.supported(x, win)
    windows = None if cuda else win.view(win.pad(x, 0.0))  # (N, C, *kernel, *out), no copy
    images_last = (1,) + tuple(range(2, 2 + nd)) + (0,) + tuple(range(2 + nd, 2 + 2 * nd))
    for start, stop in batches(xp, n, wm.shape[0] * wm.shape[2] * p * x.itemsize):
        m = stop - start
        if cuda:
            cols = cuda_window.im2col(x[start:stop], win, images_last=True)
        else:
            cols = windows[start:stop].transpose(images_last)
        cols = cols.reshape(groups, -1, m * p)  # im2col: (G, C/G*K, images*P)
        if m == 1:
            xp.matmul(wm, cols, out=y[start].reshape(groups, o // groups, p))
            if b is not None:
                y[start] += b
            continue
        z = xp.matmul(wm, cols).reshape(o, m, p).transpose(1, 0, 2)
        if b is None:
            y[start:stop] = z
        else:
            xp.add(z, b, out=y[start:stop])
    return y.reshape((n, o) + win.out)


def correlate_transpose(g: Array, w: Array, win: Window, groups: int, spatial: Sequence[int]) -> Array:
    """The adjoint of :func:`correlate` (no bias) on an input of ``spatial`` size:
    dx[n, c, i] = sum_{o, k} w[o, c, k] g[n, o, p] over the (p, k) with s * p + d * k = i + pad.

    With stride 1 it is the correlation of g with the flipped, transposed kernel
    (``Window.transposed``); otherwise the transposed product gives the columns of each chunk
    of images, and col2im adds them into the padded input.
    """
    xp = array_module(g)
    n = g.shape[0]
    o, cg, kernel = w.shape[0], w.shape[1], tuple(w.shape[2:])
    c, nd = cg * groups, len(kernel)
    full = win.transposed(spatial)
    if full is not None:
        flip = (slice(None),) * 3 + (slice(None, None, -1),) * nd
        wf = w.reshape((groups, o // groups, cg) + kernel).swapaxes(1, 2)[flip].reshape((c, o // groups) + kernel)
        return correlate(g, wf, full, groups)
    p = math.prod(win.out)
    wt = w.reshape(groups, o // groups, -1).transpose(0, 2, 1)  # (G, C/G*K, O/G)
    dtype = xp.result_type(g.dtype, w.dtype)
    cuda = use_kernels(g) and cuda_window.supported(g, win)
    shape = (n, c) + tuple(spatial)
    dx = xp.empty(shape, dtype=dtype) if cuda else xp.zeros(win.padded_shape(shape), dtype=dtype)
    for start, stop in batches(xp, n, wt.shape[0] * wt.shape[1] * p * g.itemsize):
        m = stop - start
        gm = g[start:stop].reshape(m, groups, o // groups, p).transpose(1, 2, 0, 3).reshape(groups, o // groups, m * p)
        cols = xp.matmul(wt, gm).reshape((c,) + kernel + (m,) + win.out)  # (C, *kernel, images, *out)
        if cuda:
            dx[start:stop] = cuda_window.col2im(cols, (m,) + shape[1:], win, images_last=True)
        else:
            win.scatter_add(xp.moveaxis(cols, 1 + nd, 0), dx[start:stop])  # col2im
    return dx if cuda else win.crop(dx)


class Gemm(Linear):
    """y = alpha * A' B' + beta * C, with A' = A^T if transA and B' = B^T if transB."""

    def setup(self) -> None:
        self.trans_a = bool(self.transA)
        self.trans_b = bool(self.transB)

    def check(self, shapes: Sequence[Shape | None], values: Sequence[Array | None] = ()) -> None:
        a, b = shapes[0], shapes[1]
        if a is None or b is None:
            return
        if len(a) != 2 or len(b) != 2:
            raise self.unsupported(f"operands of shapes {list(a)} and {list(b)} are not matrices")
        k_a = a[0] if self.trans_a else a[1]
        k_b = b[1] if self.trans_b else b[0]
        if None not in (k_a, k_b) and k_a != k_b:
            raise self.unsupported(f"A' of shape {list(a)} (transA={self.transA}) and B' of shape "
                                   f"{list(b)} (transB={self.transB}) do not multiply")

    def forward(self, a: Array, b: Array, c: Array | None = None) -> tuple:
        if a.size * (b.shape[0] if self.trans_b else b.shape[1]) >= ortk.MIN_MACS and on_ort(self, "Gemm", a, b, c):
            y = ortk.gemm(a, b, c, self.alpha, self.beta, self.trans_a, self.trans_b, constant(b, c))
            return (y,), (a, b, None if c is None else c.shape)
        at = a.T if self.trans_a else a
        bt = b.T if self.trans_b else b
        y = at @ bt
        if self.alpha != 1.0:
            y *= y.dtype.type(self.alpha)
        if c is not None:
            y += c if self.beta == 1.0 else c * c.dtype.type(self.beta)
        return (y,), (a, b, None if c is None else c.shape)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        a, b, c_shape = ctx
        g = grads[0] if self.alpha == 1.0 else grads[0] * grads[0].dtype.type(self.alpha)
        bt = b.T if self.trans_b else b
        at = a.T if self.trans_a else a
        da = db = dc = None
        if needs[0] and g.size * b.size >= ortk.MIN_MACS * g.shape[1] and on_ort(self, "Gemm", g, b):
            da = ortk.gemm(g, b, None, 1.0, 0.0, False, not self.trans_b, constant(b))
            da = da.T if self.trans_a else da
        elif needs[0]:
            da = g @ bt.T
            da = da.T if self.trans_a else da
        if needs[1]:
            db = at.T @ g
            db = db.T if self.trans_b else db
        if len(needs) > 2 and needs[2]:
            dc = unbroadcast(grads[0] * grads[0].dtype.type(self.beta), c_shape)
        return [da, db, dc]

    def vjp_graph(self, ctx: Any, grads: Sequence[Any], needs: Sequence[bool]) -> Grads:
        """dA = alpha g B'^T: one Gemm with B baked (the weight as a constant only)."""
        b = ctx.inputs[1]
        if any(needs[1:]) or self.trans_a or not isinstance(b, np.ndarray):
            raise NotCompilable(f"{self.name}: Gemm's vjp with respect to its weight, or with transA")
        g = grads[0]
        a = ctx.inputs[0]
        return [g.tracer.emit("Gemm", [g, b], g.dtype, a.shape, alpha=float(self.alpha), transB=int(not self.trans_b))[0]]


class MatMul(Op):
    """y = a @ b with NumPy's matmul semantics (1-D operands promoted, batch axes broadcast)."""

    kind = "other"

    def check(self, shapes: Sequence[Shape | None], values: Sequence[Array | None] = ()) -> None:
        a, b = shapes
        if a is None or b is None or not a or not b:
            return
        k_a, k_b = a[-1], b[0] if len(b) == 1 else b[-2]
        batch = zip(reversed(a[:-2]), reversed(b[:-2]))
        if (None not in (k_a, k_b) and k_a != k_b) or any(
                isinstance(m, int) and isinstance(n, int) and 1 not in (m, n) and m != n for m, n in batch):
            raise self.unsupported(f"operands of shapes {list(a)} and {list(b)} do not multiply")

    def forward(self, a: Array, b: Array) -> tuple:
        self.check((a.shape, b.shape))  # shapes computed at run time are known only now
        if self.ort(a, b):
            return (ortk.matmul(a, b, constant(b)),), (a, b)
        return (a @ b,), (a, b)

    def ort(self, a: Array, b: Array) -> bool:
        """Whether a @ b (both at least matrices) runs through onnxruntime: large enough, and
        its kernel takes the arrays."""
        if a.ndim < 2 or b.ndim < 2 or not on_ort(self, "MatMul", a, b):
            return False
        macs = max(a.size // a.shape[-2], b.size // b.shape[-1]) * a.shape[-2] * b.shape[-1]
        return macs >= ortk.MIN_MACS

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        a, b = ctx
        if self.ort(a, b) and type(grads[0]) is np.ndarray and grads[0].dtype == a.dtype:
            return self.ort_vjp(a, b, grads[0], needs)
        a2 = a if a.ndim > 1 else a[None, :]
        b2 = b if b.ndim > 1 else b[:, None]
        g = grads[0].reshape((a2 @ b2).shape) if (a.ndim == 1 or b.ndim == 1) else grads[0]
        da = unbroadcast(g @ b2.swapaxes(-1, -2), a2.shape).reshape(a.shape) if needs[0] else None
        db = unbroadcast(a2.swapaxes(-1, -2) @ g, b2.shape).reshape(b.shape) if needs[1] else None
        return [da, db]

    def ort_vjp(self, a: Array, b: Array, g: Array, needs: Sequence[bool]) -> Grads:
        """da = g b^T and db = a^T g through onnxruntime (a constant b's transpose made once)."""
        da = db = None
        if needs[0]:
            if constant(b):
                bt = ortk.derived(b, "T", transposed)
                da = ortk.matmul(g, bt, True)
            else:
                da = ortk.matmul(g, np.ascontiguousarray(b.swapaxes(-1, -2)))
            da = unbroadcast(da, a.shape)
        if needs[1]:
            db = unbroadcast(ortk.matmul(np.ascontiguousarray(a.swapaxes(-1, -2)), g), b.shape)
        return [da, db]


def transposed(w: Array) -> Array:
    """w with its last two axes swapped, contiguous."""
    return np.ascontiguousarray(w.swapaxes(-1, -2))


class Affine(Linear):
    """y[n, c, ...] = scale[c] x[n, c, ...] + bias[c], c along ``axis`` (1, or the last axis of
    an NHWC tensor): an unfused BatchNormalization, or per-channel scalings, after
    canonization (not an ONNX op; made by ``onnxattr.canonize``)."""

    defaults = {"axis": 1}

    def forward(self, x: Array, scale: Array, bias: Array | None = None) -> tuple:
        shape = tuple(-1 if i == self.axis % x.ndim else 1 for i in range(x.ndim))
        y = x * scale.reshape(shape)
        if bias is not None:
            y = y + bias.reshape(shape)
        return (y,), (scale, shape)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        scale, shape = ctx
        return [grads[0] * scale.reshape(shape)]


class ConvTranspose(Linear, _Windowed):
    """y[n, o] = sum_{c, k} W[c, o, k] x[n, c, p] at y_pad[s * p + d * k], cropped, + b[o]: the
    adjoint of Conv's input map with the same geometry (its vjp is that Conv's forward).

    With W of shape (C, O/G, *kernel), x_pad's spatial size is (in - 1) * s + (k - 1) * d + 1
    + output_padding, and the output drops pads_begin/pads_end from it; an ``output_shape``
    attribute (or auto_pad SAME_*, meaning output = in * s) fixes the total padding instead,
    split as the ONNX spec says: the odd cell at the end for SAME_UPPER, else at the start.
    """

    positive = _Windowed.positive + ("group",)

    def window(self, x: Array, w: Array) -> tuple[Window, tuple[int, ...]]:
        """The Conv window that maps the padded output onto x, and the output's spatial shape."""
        spatial = tuple(x.shape[2:])
        nd = len(spatial)
        kernel = tuple(self.kernel_shape or w.shape[2:])
        if kernel != tuple(w.shape[2:]):
            raise self.unsupported(f"kernel_shape {list(kernel)} differs from the weight's {w.shape[2:]}")
        strides = tuple(self.strides or (1,) * nd)
        dilations = tuple(self.dilations or (1,) * nd)
        adj = tuple(self.output_padding or (0,) * nd)
        pads = list(self.pads or (0,) * (2 * nd))
        out_shape = self.output_shape
        if len(strides) != nd or len(dilations) != nd or len(adj) != nd or len(pads) != 2 * nd:
            raise self.unsupported(
                f"strides/dilations/output_padding/pads of lengths {len(strides)}/{len(dilations)}/"
                f"{len(adj)}/{len(pads)} do not fit {nd} spatial axes"
            )
        full = [(n - 1) * s + (k - 1) * d + 1 + p for n, s, k, d, p in zip(spatial, strides, kernel, dilations, adj)]
        if out_shape:
            out = tuple(int(v) for v in out_shape)[-nd:]
            if len(out) != nd:
                raise self.unsupported(f"output_shape {list(out_shape)} does not fit {nd} spatial axes")
        elif self.auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out = tuple(n * s for n, s in zip(spatial, strides))
        else:
            out = None
        if out is not None:  # output_shape or SAME_*: split the total padding that gives ``out``
            total = [max(0, f - o) for f, o in zip(full, out)]
            begin = [t // 2 if self.auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
        else:
            begin, end = ([0] * nd, [0] * nd) if self.auto_pad == "VALID" else (pads[:nd], pads[nd:])
            out = tuple(f - b - e for f, b, e in zip(full, begin, end))
        if any(o <= 0 for o in out):
            raise self.unsupported(f"the output's spatial shape {list(out)} is empty")
        # the padded output holds ``full``, or more where output_shape asks for more
        end = [max(0, f - o - b) for f, o, b in zip(full, out, begin)]
        win = Window(
            kernel=kernel,
            strides=strides,
            dilations=dilations,
            pads_begin=tuple(begin),
            pads_end=tuple(end),
            declared_end=tuple(end),
            out=spatial,
        )
        return win, out

    def check(self, shapes: Sequence[Shape | None], values: Sequence[Array | None] = ()) -> None:
        x, w = shapes[0], shapes[1]
        if x is None or w is None:
            return
        if len(x) != len(w) or len(x) < 3:
            raise self.unsupported(f"input of shape {list(x)} and weight of shape {list(w)} differ in rank")
        if None not in (x[1], w[0]) and x[1] != w[0]:
            raise self.unsupported(f"input has {x[1]} channels, weight {list(w)} expects {w[0]}")
        if x[1] is not None and x[1] % self.group:
            raise self.unsupported(f"{x[1]} input channels do not split into {self.group} groups")

    def forward(self, x: Array, w: Array, b: Array | None = None) -> tuple:
        xp = array_module(x)
        c = x.shape[1]
        g = self.group
        if c != w.shape[0]:
            raise self.unsupported(f"input has {c} channels, weight expects {w.shape[0]}")
        if c % g:
            raise self.unsupported(f"{c} input channels do not split into {g} groups")
        win, out = self.window(x, w)
        geo = self.ort_geometry(x, w, b, win, out)
        if geo is not None:
            adj = self.output_padding or (0,) * len(out)
            return (ortk.conv_transpose(x, w, b, geo, adj, constant(w, b)),), (x.shape, w, win, geo)
        y = correlate_transpose(x, w, win, g, out)
        if b is not None:
            y = y + b.reshape((1, -1) + (1,) * len(out))
        return (xp.ascontiguousarray(y),), (x.shape, w, win, None)

    def ort_geometry(self, x: Array, w: Array, b: Array | None, win: Window,
                     out: tuple[int, ...]) -> ortk.ConvGeometry | None:
        """The explicit geometry onnxruntime's ConvTranspose runs this layer with, or None where
        it does not (NumPy's dtype, too small, output_padding >= stride, or an output_shape
        larger than the full output, which the window pads rather than crops)."""
        if x.shape[0] * w.size * math.prod(x.shape[2:]) < ortk.MIN_MACS or not on_ort(self, "ConvTranspose", x, w, b):
            return None
        full = [(n - 1) * s + (k - 1) * d + 1 + a for n, s, k, d, a in zip(
            x.shape[2:], win.strides, win.kernel, win.dilations, self.output_padding or (0,) * len(out))]
        if any(f - pb - pe != o for f, pb, pe, o in zip(full, win.pads_begin, win.pads_end, out)):
            return None
        geo = conv_geometry(win, self.group)
        return geo if ortk.supported("ConvTranspose", x.dtype, geo, self.output_padding or None) else None

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        shape, w, win, geo = ctx
        if any(needs[1:]):
            raise self.unsupported("gradients with respect to weights or bias are not computed")
        g = grads[0]
        if geo is not None and type(g) is np.ndarray and g.dtype == w.dtype:
            return [ortk.conv(g, w, None, geo, constant(w))]
        return [correlate(g, w, win, self.group)]


class Dense(Linear):
    """y = x W + b over the last axis of x, any leading axes (as torch.nn.Linear): a MatMul by a
    constant matrix, with its bias Add merged, after canonization (not an ONNX op; made by
    ``onnxattr.canonize``)."""

    def forward(self, x: Array, w: Array, b: Array | None = None) -> tuple:
        if x.size * w.shape[1] >= ortk.MIN_MACS and on_ort(self, "Dense", x, w, b):
            return (ortk.dense(x, w, b, constant(w, b)),), w
        y = (x.reshape(-1, x.shape[-1]) @ w).reshape(x.shape[:-1] + w.shape[1:])  # one BLAS call
        if b is not None:
            y += b
        return (y,), w

    def vjp(self, ctx: Array, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        g, w = grads[0], ctx
        if g.size * w.shape[0] >= ortk.MIN_MACS and on_ort(self, "Dense", g, w):
            return [ortk.dense_data_vjp(g, w, constant(w))]
        return [(g.reshape(-1, g.shape[-1]) @ w.T).reshape(g.shape[:-1] + w.shape[:1])]

    def forward_graph(self, x: Any, w: Array, b: Array | None = None) -> tuple:
        """MatMul and Add (any leading axes)."""
        y = x @ w
        return (y if b is None else y + b,)

    def vjp_graph(self, ctx: Any, grads: Sequence[Any], needs: Sequence[bool]) -> Grads:
        return [grads[0] @ ortk.derived(ctx.inputs[1], "T", transposed)]
