"""onnxattr: attribution and analysis for any model that exports to ONNX.

>>> import onnxattr
>>> model = onnxattr.load("model.onnx")                 # or device="cuda"
>>> logits = model(x)                                   # numpy float32 batch in, numpy out
>>> a = onnxattr.attribute(model, x, target=3, method="integrated_gradients")
>>> onnxattr.methods()                                  # every method and its options
>>> text = onnxattr.load("bert.onnx", wrt="embeddings")  # attribute token ids at the embeddings
>>> a = onnxattr.attribute(text, {"input_ids": ids, "attention_mask": mask}, method="integrated_gradients")
>>> onnxattr.token_scores(a)                            # (B, T, H) -> (B, T)
>>> report = onnxattr.audit("model.onnx", data=x, gates=["randomization"])  # checks, scores, report
"""
from .errors import DeviceMemoryError, InputError, ModelError, OnnxAttrError, OptionError, UnsupportedOpError
from .attribution import attribute, methods, token_scores, trace
from .model import Model, load
from .report import audit

from .version import __version__

__all__ = [
    "DeviceMemoryError",
    "InputError",
    "Model",
    "ModelError",
    "OnnxAttrError",
    "OptionError",
    "UnsupportedOpError",
    "attribute",
    "audit",
    "load",
    "methods",
    "token_scores",
    "trace",
]
