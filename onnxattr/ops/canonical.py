"""Ops that canonization makes and the other op modules lack: Swish (ONNX opset 24) and Gate
(the squeeze-excitation product; not an ONNX op)."""
from __future__ import annotations

from typing import Any, Sequence

from .base import Array, Grads, Op, Unary, unbroadcast


class Swish(Unary):
    """y = x * sigmoid(alpha x) (opset 24; SiLU for alpha = 1, Ramachandran et al. 2017)."""

    saves = "x"

    def __init__(self, attrs: dict[str, Any], opset: int, name: str = "") -> None:
        super().__init__(attrs, opset, name)
        self.alpha = float(attrs.get("alpha", 1.0))

    def f(self, xp: Any, x: Array) -> Array:
        return (x / (1 + xp.exp(-self.alpha * x))).astype(x.dtype)

    def df(self, xp: Any, x: Array, y: Array) -> Array:
        s = 1 / (1 + xp.exp(-self.alpha * x))
        return (s * (1 + self.alpha * x * (1 - s))).astype(x.dtype)


class Gate(Op):
    """y = x * g, where the gate g (a sigmoid, broadcast to x) is computed from x: the
    squeeze-excitation product (Hu et al. 2018), made by ``onnxattr.canonize``.

    Its kind is ``activation``: like ReLU (x times its own 0/1 gate), the gate modulates the
    data, so LRP passes the relevance to x and none to the gate ("signal-take-all", Arras et al.
    2017). Its vjp is the exact one."""

    kind = "activation"

    def forward(self, x: Array, g: Array) -> tuple:
        return (x * g,), (x, g)

    def vjp(self, ctx: tuple, grads: Sequence[Array | None], needs: Sequence[bool]) -> Grads:
        x, g = ctx
        return [grads[0] * g if needs[0] else None, unbroadcast(grads[0] * x, g.shape) if needs[1] else None]
