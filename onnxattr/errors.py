"""The exceptions onnxattr raises. Each names the node, tensor, shape or option at fault."""


class OnnxAttrError(Exception):
    """Base class of every error onnxattr raises on purpose."""


class ModelError(OnnxAttrError):
    """The file or ModelProto is not a valid ONNX model, or asks for an input/output it lacks."""


class UnsupportedOpError(ModelError):
    """A node uses an op type, attribute or opset form that onnxattr does not implement."""

    def __init__(self, node_name: str, op_type: str, detail: str = "") -> None:
        self.node_name = node_name
        self.op_type = op_type
        why = f": {detail}" if detail else ""
        super().__init__(f"node {node_name!r} (op type {op_type}) is not supported{why}")


class InputError(OnnxAttrError, ValueError):
    """An input batch, target or baseline has the wrong shape, dtype or values."""


class OptionError(OnnxAttrError, ValueError):
    """An unknown method, an unknown option, or an option with a bad value."""


class DeviceMemoryError(OnnxAttrError, MemoryError):
    """Even a batch of one sample does not fit in the GPU's memory (device='cuda')."""
