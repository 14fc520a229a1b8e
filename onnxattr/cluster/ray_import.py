"""Ray, imported only when a cluster run asks for it (the single-machine engine never imports it)."""
from __future__ import annotations

from types import ModuleType

from ..errors import OptionError

INSTALL = "pip install 'onnxattr[ray]'"


def import_ray() -> ModuleType:
    """The ``ray`` module with Ray Data loaded; OptionError saying how to install it where it is
    missing."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise OptionError(f"engine='ray' needs Ray Data, which is not installed ({e}); install it with: {INSTALL}") from e
    return ray
