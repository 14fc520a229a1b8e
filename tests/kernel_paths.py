"""The ``kernels`` fixture: a test that uses it runs once on each CPU kernel path.

"compiled": whole passes compiled into onnxruntime sessions (:mod:`onnxattr.compiled`) where the
plan compiles, per-layer sessions elsewhere (the default). "onnxruntime": compilation off, every
product through onnxruntime's per-layer sessions, however small (``MIN_MACS`` set to 0), so that
the small test models exercise them; ops made outside a model (``make_op``) take the path too.
"numpy": the reference kernels.
"""
import pytest

from onnxattr.compiled import program as compiled
from onnxattr.kernels import onnxruntime as ortk
from onnxattr.ops.base import Op


@pytest.fixture(params=["compiled", "onnxruntime", "numpy"])
def kernels(request, monkeypatch):
    path = "onnxruntime" if request.param == "compiled" else request.param
    monkeypatch.setenv(ortk.ENV, path)
    monkeypatch.setenv(compiled.ENV, "1" if request.param == "compiled" else "0")
    monkeypatch.setattr(Op, "kernels", path, raising=False)
    if request.param == "onnxruntime":
        monkeypatch.setattr(ortk, "MIN_MACS", 0)
    return path
