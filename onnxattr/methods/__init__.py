"""The attribution methods. Importing a family module registers its methods."""
from . import backprop, gradients, perturbation  # noqa: F401  (registration)
from .registry import METHODS, Method, Option, attribute, methods, register

__all__ = ["METHODS", "Method", "Option", "attribute", "methods", "register"]
