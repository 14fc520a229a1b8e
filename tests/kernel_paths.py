"""The ``kernels`` fixture: a test that uses it runs once on each CPU kernel path.

On the "onnxruntime" path every product goes through onnxruntime's kernels, however small
(``MIN_MACS`` set to 0), so that the small test models exercise them; ops made outside a model
(``make_op``) take the path too.
"""
import pytest

from onnxattr.kernels import onnxruntime as ortk
from onnxattr.ops.base import Op


@pytest.fixture(params=["onnxruntime", "numpy"])
def kernels(request, monkeypatch):
    monkeypatch.setenv(ortk.ENV, request.param)
    monkeypatch.setattr(Op, "kernels", request.param, raising=False)
    if request.param == "onnxruntime":
        monkeypatch.setattr(ortk, "MIN_MACS", 0)
    return request.param
