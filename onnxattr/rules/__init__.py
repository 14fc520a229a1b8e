"""Backward rules that replace an op's vjp: LRP/DTD (``lrp``), modified gradients and DeepLIFT
(``gradient``). A composite (``onnxattr.composites``) says which rule applies to which node."""
from .base import Rule, stabilize
from .gradient import DeconvNet, GuidedBackprop, RectGrad, Rescale
from .lrp import AlphaBeta, BasicRule, Epsilon, Flat, Gamma, Norm, Pass, WSquare, Z, ZBox, ZPlus

__all__ = [
    "AlphaBeta", "BasicRule", "DeconvNet", "Epsilon", "Flat", "Gamma", "GuidedBackprop", "Norm",
    "Pass", "RectGrad", "Rescale", "Rule", "WSquare", "Z", "ZBox", "ZPlus",
    "stabilize",
]
