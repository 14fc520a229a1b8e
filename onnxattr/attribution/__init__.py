"""The attribution methods. Importing a family module registers its methods."""
from . import backprop, gradients, perturbation, transformer  # noqa: F401  (registration)
from .registry import METHODS, Method, Option, attribute, methods, plan_of, register, token_scores
from .tracing import LayerTrace, Trace, trace

__all__ = ["METHODS", "LayerTrace", "Method", "Option", "Trace", "attribute", "methods", "plan_of", "register", "token_scores", "trace"]
