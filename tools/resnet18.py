"""A ResNet-18-shaped network with random weights, as an ONNX graph and as a PyTorch module.

torchvision has no CPU build here, so the network is written out by hand: a 7x7/2 stem with
BatchNorm, ReLU and a 3x3/2 MaxPool, four stages of two BasicBlocks (64, 128, 256, 512 channels;
the first block of stages 2-4 strides by 2 with a 1x1 projection), global average pooling and a
1000-way Gemm. ``weights`` draws every parameter from a seeded generator (He-scaled convolutions,
BatchNorm statistics in general position); ``onnx_model`` builds the graph with onnx.helper from
those arrays (opset 17, dynamic batch), so the benchmark runs without torch; ``torch_model`` loads
the same arrays into an ``nn.Module`` in eval mode for the Captum comparison.

    python tools/resnet18.py resnet18.onnx      # write the ONNX model
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
WIDTHS = (64, 128, 256, 512)
CLASSES = 1000

Weights = dict[str, np.ndarray]


def blocks(widths: tuple[int, ...] = WIDTHS) -> list[tuple[str, int, int, int]]:
    """(name, in channels, out channels, stride) of every BasicBlock, in order."""
    out, cin = [], widths[0]
    for stage, cout in enumerate(widths, start=1):
        for i in range(2):
            stride = 2 if stage > 1 and i == 0 else 1
            out.append((f"layer{stage}.{i}", cin, cout, stride))
            cin = cout
    return out


def weights(seed: int = 0, widths: tuple[int, ...] = WIDTHS, classes: int = CLASSES) -> Weights:
    """Every parameter, named as in a torchvision ResNet's state dict (float32)."""
    rng = np.random.default_rng(seed)
    w: Weights = {}

    def conv(name: str, cout: int, cin: int, k: int) -> None:
        std = np.sqrt(2.0 / (cin * k * k))
        w[f"{name}.weight"] = (rng.standard_normal((cout, cin, k, k)) * std).astype(np.float32)

    def bn(name: str, c: int) -> None:
        w[f"{name}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        w[f"{name}.bias"] = (0.1 * rng.standard_normal(c)).astype(np.float32)
        w[f"{name}.running_mean"] = (0.1 * rng.standard_normal(c)).astype(np.float32)
        w[f"{name}.running_var"] = rng.uniform(0.5, 1.5, c).astype(np.float32)

    conv("conv1", widths[0], 3, 7)
    bn("bn1", widths[0])
    for name, cin, cout, stride in blocks(widths):
        conv(f"{name}.conv1", cout, cin, 3)
        bn(f"{name}.bn1", cout)
        conv(f"{name}.conv2", cout, cout, 3)
        bn(f"{name}.bn2", cout)
        if stride != 1 or cin != cout:
            conv(f"{name}.downsample.0", cout, cin, 1)
            bn(f"{name}.downsample.1", cout)
    w["fc.weight"] = (rng.standard_normal((classes, widths[-1])) / np.sqrt(widths[-1])).astype(np.float32)
    w["fc.bias"] = (0.01 * rng.standard_normal(classes)).astype(np.float32)
    return w


def onnx_model(w: Weights, size: int = 224) -> onnx.ModelProto:
    """The network as an ONNX graph: input ``x`` (N, 3, size, size), output ``logits``."""
    nodes: list[onnx.NodeProto] = []

    def conv_bn(x: str, name: str, bn_name: str, stride: int, relu: bool) -> str:
        k = w[f"{name}.weight"].shape[-1]
        nodes.append(helper.make_node("Conv", [x, f"{name}.weight"], [f"{name}.out"], name=name,
                                      kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4))
        nodes.append(helper.make_node(
            "BatchNormalization",
            [f"{name}.out"] + [f"{bn_name}.{p}" for p in ("weight", "bias", "running_mean", "running_var")],
            [f"{bn_name}.out"], name=bn_name, epsilon=1e-5))
        if not relu:
            return f"{bn_name}.out"
        nodes.append(helper.make_node("Relu", [f"{bn_name}.out"], [f"{bn_name}.relu"], name=f"{bn_name}.relu"))
        return f"{bn_name}.relu"

    h = conv_bn("x", "conv1", "bn1", 2, relu=True)
    nodes.append(helper.make_node("MaxPool", [h], ["maxpool.out"], name="maxpool",
                                  kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    h = "maxpool.out"
    for name, _, _, stride in blocks(tuple(w[f"layer{s}.0.conv1.weight"].shape[0] for s in range(1, 5))):
        y = conv_bn(h, f"{name}.conv1", f"{name}.bn1", stride, relu=True)
        y = conv_bn(y, f"{name}.conv2", f"{name}.bn2", 1, relu=False)
        if f"{name}.downsample.0.weight" in w:
            h = conv_bn(h, f"{name}.downsample.0", f"{name}.downsample.1", stride, relu=False)
        nodes.append(helper.make_node("Add", [y, h], [f"{name}.add"], name=f"{name}.add"))
        nodes.append(helper.make_node("Relu", [f"{name}.add"], [f"{name}.out"], name=f"{name}.relu"))
        h = f"{name}.out"
    nodes.append(helper.make_node("GlobalAveragePool", [h], ["avgpool.out"], name="avgpool"))
    nodes.append(helper.make_node("Flatten", ["avgpool.out"], ["flatten.out"], name="flatten", axis=1))
    nodes.append(helper.make_node("Gemm", ["flatten.out", "fc.weight", "fc.bias"], ["logits"], name="fc",
                                  transB=1))
    classes = w["fc.weight"].shape[0]
    graph = helper.make_graph(
        nodes, "resnet18",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        initializer=[numpy_helper.from_array(v, k) for k, v in w.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="onnxattr-tools")
    onnx.checker.check_model(model)
    return model


def torch_model(w: Weights) -> Any:
    """The same network as a torch ``nn.Module`` (eval mode) holding the arrays of ``w``."""
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu1 = nn.ReLU()
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu2 = nn.ReLU()
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x: Any) -> Any:
            y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
            return self.relu2(y + (x if self.downsample is None else self.downsample(x)))

    class ResNet18(nn.Module):
        def __init__(self, widths: tuple[int, ...], classes: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(widths[0])
            self.relu = nn.ReLU()
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            for stage in range(1, 5):
                layer = nn.Sequential(*(BasicBlock(ci, co, s) for name, ci, co, s in blocks(widths)
                                        if name.startswith(f"layer{stage}.")))
                setattr(self, f"layer{stage}", layer)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(widths[-1], classes)

        def forward(self, x: Any) -> Any:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    widths = tuple(w[f"layer{s}.0.conv1.weight"].shape[0] for s in range(1, 5))
    net = ResNet18(widths, w["fc.weight"].shape[0])
    state = {k: torch.from_numpy(v.copy()) for k, v in w.items()}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
        raise ValueError(f"weights do not fit the module: missing {missing}, unexpected {unexpected}")
    return net.eval()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/resnet18.py OUT.onnx")
    onnx.save(onnx_model(weights()), sys.argv[1])
