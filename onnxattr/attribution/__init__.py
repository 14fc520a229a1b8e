"""The attribution methods. Importing a family module registers its methods."""
from . import backprop, gradients, perturbation  # noqa: F401  (registration)
from .registry import METHODS, Backprop, Method, Option, Trace, attribute, methods, register, trace

__all__ = ["METHODS", "Backprop", "Method", "Option", "Trace", "attribute", "methods", "register", "trace"]
