"""The op registry: ONNX op type -> Op class. Importing the family modules registers their ops."""
from . import (  # noqa: F401  (registration)
    activation, arithmetic, attention, constant, einsum, index, join, linear, norm, pool, reduce,
    reshape, resize,
)
from .base import REGISTRY, Op

__all__ = ["REGISTRY", "Op", "make_op"]


def make_op(op_type: str, attrs: dict, opset: int, name: str = "") -> Op:
    """Instantiate the op of ``op_type``; raise UnsupportedOpError naming the node if there is none."""
    from ..errors import UnsupportedOpError

    cls = REGISTRY.get(op_type)
    if cls is None:
        raise UnsupportedOpError(name, op_type, "no kernel for this op type")
    return cls(attrs, opset, name)
