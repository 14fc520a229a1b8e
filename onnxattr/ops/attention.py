"""The transformer ops of opset 23: Attention and RotaryEmbedding.

Attention is softmax(scale * Q K^T [softcapped] + bias) V over (batch, heads, sequence, head
size) tensors, or (batch, sequence, hidden) ones split into ``q_num_heads``/``kv_num_heads``
heads; K and V heads are repeated for grouped-query attention. The bias holds the attention
mask (boolean: -inf where false; float: added), and with ``is_causal`` the top-left causal mask
(key j seen by query i iff j <= i). Rows that are masked entirely give 0, as onnx's reference.
The past key/value cache (and the outputs beyond Y) are not implemented, and refused.

RotaryEmbedding rotates pairs of features (x1, x2) by the angle whose cosine and sine the caches
give at each position: (x1 cos - x2 sin, x1 sin + x2 cos), over the first
``rotary_embedding_dim`` features (all by default), as halves or interleaved. The rotation is
linear in x and its transpose is the rotation by the opposite angle, so the vjp is the same map
with the sine negated. The caches get no cotangent (they are constants in every exporter).
References: the ONNX operator specs, and onnx/reference/ops/op_attention.py and
op_rotary_embedding.py, which these follow.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Sequence

import numpy as np

from ..backend import array_module
from .base import Array, Grads, Op, Shape, unbroadcast


def heads_first(x: Array, heads: int | None) -> Array:
    """(B, S, H*D) as (B, H, S, D); a 4-D input as it is."""
    if x.ndim == 4:
        return x
    b, s, hidden = x.shape
    return x.reshape(b, s, heads, hidden // heads).transpose(0, 2, 1, 3)


def heads_merged(x: Array, like: tuple[int, ...]) -> Array:
    """(B, H, S, D) back to the layout of an input of shape ``like``."""
    if len(like) == 4:
        return x
    b, h, s, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, s, h * d)


class Attention(Op):
    """Y = softmax(scale * Q K^T (softcap: c tanh(. / c)) + bias) V (opset 23)."""

    kind = "other"
    max_outputs: ClassVar[int] = 1
    non_negative = ("softcap",)

    def check(self, shapes: Sequence[Shape | None], values: Sequence[Array | None] = ()) -> None:
        if any(s is not None for s in shapes[4:]):
            raise self.unsupported("the past key/value cache and nonpad_kv_seqlen inputs are not implemented")
        q = shapes[0] if shapes else None
        if q is not None and len(q) == 3 and (self.q_num_heads is None or self.kv_num_heads is None):
            raise self.unsupported("3-D inputs need the q_num_heads and kv_num_heads attributes")

    def bias(self, xp: Any, mask: Array | None, sq: int, skv: int, dtype: Any) -> Array:
        """The additive bias of the scores: the mask (padded with -inf to the keys) and the
        causal mask, broadcastable to (B, H, Sq, Skv)."""
        bias = xp.zeros((sq, skv), dtype=dtype)
        if mask is not None:
            if mask.dtype == np.bool_:
                mask = xp.where(mask, dtype.type(0), dtype.type(-np.inf))
            pad = skv - mask.shape[-1]
            if pad > 0:
                mask = xp.pad(mask, [(0, 0)] * (mask.ndim - 1) + [(0, pad)], constant_values=-np.inf)
            bias = bias + mask.astype(dtype, copy=False)
        if self.is_causal:
            i = xp.arange(sq).reshape(sq, 1)
            j = xp.arange(skv).reshape(1, skv)
            bias = bias + xp.where(j <= i, dtype.type(0), dtype.type(-np.inf))
        return bias

    def forward(self, q: Array, k: Array, v: Array, mask: Array | None = None, *cache: Array | None) -> tuple:
        xp = array_module(q, k, v)
        if any(c is not None for c in cache):
            raise self.unsupported("the past key/value cache and nonpad_kv_seqlen inputs are not implemented")
        qh = heads_first(q, self.q_num_heads)
        kh = heads_first(k, self.kv_num_heads)
        vh = heads_first(v, self.kv_num_heads)
        reps = qh.shape[1] // kh.shape[1]
        if reps * kh.shape[1] != qh.shape[1] or kh.shape[1] != vh.shape[1]:
            raise self.unsupported(f"{qh.shape[1]} query heads cannot share {kh.shape[1]}/{vh.shape[1]} key/value heads")
        kr, vr = (xp.repeat(t, reps, axis=1) if reps > 1 else t for t in (kh, vh))
        scale = q.dtype.type(self.scale if self.scale is not None else 1 / math.sqrt(qh.shape[3]))
        s = (qh @ kr.swapaxes(-1, -2)) * scale
        t = None
        if self.softcap:
            t = xp.tanh(s / q.dtype.type(self.softcap))
            s = t * q.dtype.type(self.softcap)
        bias = self.bias(xp, mask, qh.shape[2], kr.shape[2], q.dtype)
        z = s + bias
        top = z.max(axis=-1, keepdims=True)
        dead = xp.isneginf(top)  # rows with every key masked
        e = xp.exp(z - xp.where(dead, 0, top))
        p = e / xp.where(dead, 1, e.sum(axis=-1, keepdims=True))
        y = heads_merged(p @ vr, q.shape)
        ctx = (q.shape, k.shape, v.shape, None if mask is None else mask.shape, qh, kr, vr, p, t, scale, reps)
        return (y,), ctx

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        q_shape, k_shape, v_shape, mask_shape, qh, kr, vr, p, t, scale, reps = ctx
        g = heads_first(grads[0], p.shape[1]) if len(q_shape) == 3 else grads[0]
        dp = g @ vr.swapaxes(-1, -2)
        dz = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
        ds = dz * (1 - t * t) if t is not None else dz
        ds = ds * scale

        def fold(d: Array) -> Array:  # sum the repeated heads back onto their key/value head
            if reps == 1:
                return d
            b, h, s, e = d.shape
            return d.reshape(b, h // reps, reps, s, e).sum(axis=2)

        dq = heads_merged(ds @ kr, q_shape) if needs[0] else None
        dk = heads_merged(fold(ds.swapaxes(-1, -2) @ qh), k_shape) if needs[1] else None
        dv = heads_merged(fold(p.swapaxes(-1, -2) @ g), v_shape) if needs[2] else None
        dmask = None
        if len(needs) > 3 and needs[3]:
            if mask_shape[-1] != p.shape[-1]:
                raise self.unsupported("a gradient through a mask shorter than the keys is not computed")
            dmask = unbroadcast(dz, mask_shape)
        return [dq, dk, dv, dmask]


class RotaryEmbedding(Op):
    """y = x with feature pairs rotated by the position's angle (opset 23); see the module."""

    kind = "other"
    non_negative = ("rotary_embedding_dim", "num_heads")

    def rotate(self, x: Array, cos: Array, sin: Array) -> Array:
        """The rotation of x ((B, H, S, D), or (B, S, hidden) with num_heads) by the angles of
        cos, sin of shape (B, S, d/2)."""
        xp = array_module(x)
        shape = x.shape
        if x.ndim == 4:
            x = x.transpose(0, 2, 1, 3)
        else:
            if not self.num_heads:
                raise self.unsupported("a 3-D input needs the num_heads attribute")
            x = x.reshape(shape[0], shape[1], self.num_heads, -1)
        d = self.rotary_embedding_dim or x.shape[3]
        half = d // 2
        if cos.shape[-1] != half or d > x.shape[3] or d % 2:
            raise self.unsupported(f"caches of width {cos.shape[-1]} do not rotate {d} of {x.shape[3]} features")
        c, s = cos[:, :, None, :], sin[:, :, None, :]
        rot = x[..., :d]
        x1, x2 = (rot[..., 0::2], rot[..., 1::2]) if self.interleaved else (rot[..., :half], rot[..., half:])
        real = c * x1 - s * x2
        imag = s * x1 + c * x2
        if self.interleaved:
            rot = xp.stack([real, imag], axis=-1).reshape(rot.shape)
        else:
            rot = xp.concatenate([real, imag], axis=-1)
        y = xp.concatenate([rot, x[..., d:]], axis=-1).astype(x.dtype, copy=False)
        return y.transpose(0, 2, 1, 3) if len(shape) == 4 else y.reshape(shape)

    def forward(self, x: Array, cos: Array, sin: Array, position_ids: Array | None = None) -> tuple:
        xp = array_module(x)
        if position_ids is not None:
            pos = xp.asarray(position_ids).astype(np.int64, copy=False)
            cos, sin = cos[pos], sin[pos]
        return (self.rotate(x, cos, sin),), (cos, sin)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        if any(needs[1:3]):
            raise self.unsupported("gradients with respect to the cos/sin caches are not computed")
        cos, sin = ctx
        return [self.rotate(grads[0], cos, -sin)]
