"""The window geometries (kernel, strides, dilations, pads) that the window ops and the GPU
kernels are checked over, and the Window each describes."""
from onnxattr.ops.window import Window

GEOMETRIES = [  # kernel, strides, dilations, pads begin, pads end, input H x W
    ((3, 3), (1, 1), (1, 1), (1, 1), (1, 1), (9, 8)),
    ((3, 2), (2, 3), (1, 2), (0, 1), (2, 1), (11, 10)),
    ((1, 1), (2, 2), (1, 1), (0, 0), (0, 0), (7, 6)),
    ((5, 4), (1, 2), (2, 1), (2, 0), (1, 3), (12, 9)),
    ((2, 2), (2, 2), (1, 1), (0, 0), (1, 1), (7, 7)),  # as ceil_mode pads the end
    ((7, 7), (2, 2), (1, 1), (3, 3), (3, 3), (56, 56)),  # ResNet's stem
]


def window(k, s, d, pb, pe, hw) -> Window:
    """The Window of one geometry, its output size computed as ONNX's floor formula gives it."""
    out = tuple((n + b + e - ((kk - 1) * dd + 1)) // ss + 1 for n, b, e, kk, dd, ss in zip(hw, pb, pe, k, d, s))
    return Window(kernel=k, strides=s, dilations=d, pads_begin=pb, pads_end=pe, declared_end=pe, out=out)
