"""Whole passes compiled into onnxruntime sessions: :mod:`.symbolic` (NumPy-like tensors that
write ONNX nodes) and :mod:`.program` (a plan's forward and backward sessions)."""
