"""Backward rules that replace an op's vjp: LRP/DTD (``lrp``), modified gradients and DeepLIFT
(``gradient``), AttnLRP and CP-LRP (``transformer``). A composite (``onnxattr.composites``) says
which rule applies to which node."""
from .base import Rule, stabilize
from .gradient import DeconvNet, GuidedBackprop, RectGrad, Rescale
from .lrp import AlphaBeta, BasicRule, Epsilon, Flat, Gamma, Norm, Pass, WSquare, Z, ZBox, ZPlus
from .transformer import AttentionOp, Constant, GradientForm, Identity, LayerNormIdentity, RMSNormIdentity, Uniform

__all__ = [
    "AlphaBeta", "AttentionOp", "BasicRule", "Constant", "DeconvNet", "Epsilon", "Flat", "Gamma",
    "GradientForm", "GuidedBackprop", "Identity", "LayerNormIdentity", "Norm", "Pass", "RMSNormIdentity",
    "RectGrad", "Rescale", "Rule", "Uniform", "WSquare", "Z", "ZBox", "ZPlus",
    "stabilize",
]
