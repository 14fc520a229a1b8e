"""Train small PyTorch models on the shapes data and export them to ONNX with references.

    python tools/export_torch.py            # all three
    python tools/export_torch.py vgg        # one of: vgg, resnet, cnn_softmax

Writes ``models/torch_vgg_op11.onnx``, ``models/torch_resnet_bn_op17.onnx`` and
``models/torch_cnn_softmax_op13.onnx`` (+ ``.npz`` references, see ``tools/model_refs.py``).

* VGG-style CNN, opset 11: 3 x (Conv3x3-ReLU-MaxPool2), Flatten, Gemm-ReLU-Gemm.
* ResNet with BatchNorm, opset 17: stem Conv-BN-ReLU, an identity BasicBlock, a strided
  BasicBlock with a 1x1 Conv-BN projection, GlobalAveragePool, Flatten, Gemm. Exported with
  ``training=TrainingMode.PRESERVE`` on the eval-mode module and ``do_constant_folding=False``,
  so the exporter does not fuse BatchNorm into the convolutions: the graph keeps its
  BatchNormalization nodes (checked below).
* CNN with an MLP head, opset 13, ending in Softmax: trained with BatchNorm, exported with the
  default settings so that BatchNorm is fused into the Convs (no BatchNormalization node):
  Conv-ReLU-MaxPool, Conv/2-ReLU, Conv-ReLU, AveragePool,
  Flatten, Gemm-ReLU-Gemm-ReLU-Gemm, Softmax. The references are for the pre-softmax logits
  (the module without its Softmax). (A plain MLP on the flattened pixels does not learn this
  data set: it stays near chance, so there is no MLP.)

All use the TorchScript exporter (``dynamo=False``: the dynamo exporter needs onnxscript, which
is not installed) with a dynamic batch axis named ``batch``; input ``input`` (N, 3, 32, 32),
output ``logits`` (``probabilities`` for the one ending in Softmax).
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_refs import MODELS, check_and_save, graph_summary, splits  # noqa: E402

torch.set_num_threads(1)


class VGG(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 4))

    def forward(self, x):
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.down is None else self.down(x)))


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.MaxPool2d(2))
        self.layer1 = BasicBlock(16, 16, 1)
        self.layer2 = BasicBlock(16, 32, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 4)

    def forward(self, x):
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class SoftmaxCNN(nn.Module):
    """BatchNorm (fused into the Convs by the default export), MaxPool, a strided convolution,
    AveragePool, an MLP head; Softmax added at export."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AvgPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 32), nn.ReLU(),
                                  nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, x):
        return self.head(self.features(x))


class WithSoftmax(nn.Module):
    def __init__(self, logits_model):
        super().__init__()
        self.logits_model = logits_model

    def forward(self, x):
        return torch.softmax(self.logits_model(x), dim=1)


def train(model, x, y, epochs, lr, batch=64, weight_decay=0.0, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * ((len(x) + batch - 1) // batch))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        total, correct = 0.0, 0
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            out = model(xt[idx])
            loss = nn.functional.cross_entropy(out, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            correct += int((out.argmax(1) == yt[idx]).sum())
        print(f"  epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}, train acc {correct / len(x):.4f}",
              flush=True)
    model.eval()
    return model


def predict(model, x, batch=500):
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x[i:i + batch])).numpy() for i in range(0, len(x), batch)])


def target_gradient(model, x):
    """(logits, target, d logits[i, target[i]] / d x[i]) with torch.autograd."""
    xt = torch.from_numpy(x).clone().requires_grad_(True)
    logits = model(xt)
    target = logits.argmax(1)
    (grad,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), xt)
    return logits.detach().numpy(), grad.numpy()


def export(model, path, opset, output_name, **kw):
    torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), path, dynamo=False, opset_version=opset,
                      input_names=["input"], output_names=[output_name],
                      dynamic_axes={"input": {0: "batch"}, output_name: {0: "batch"}}, **kw)


SPECS = {
    # key: (file name, class, opset, epochs, lr, weight decay, softmax at the end, export kwargs, notes)
    "vgg": ("torch_vgg_op11", VGG, 11, 10, 3e-3, 0.0, False, {},
            "VGG-style: 3 x (Conv3x3-ReLU-MaxPool2) 16/32/32 channels, Flatten, Gemm 512-64, ReLU, "
            "Gemm 64-4; logits output."),
    "resnet": ("torch_resnet_bn_op17", ResNet, 17, 10, 3e-3, 1e-4, False,
               {"training": torch.onnx.TrainingMode.PRESERVE, "do_constant_folding": False},
               "ResNet: stem Conv-BN-ReLU-MaxPool, identity BasicBlock (16 ch), strided BasicBlock "
               "(32 ch, 1x1 Conv-BN projection), residual Adds, GlobalAveragePool, Flatten, Gemm; "
               "BatchNormalization kept as nodes (eval-mode statistics; exported with "
               "TrainingMode.PRESERVE and no constant folding, so not fused into the Convs). One "
               "Identity node: the exporter deduplicates equal initializers and layer2.bn2.bias equals "
               "layer2.down.1.bias exactly (both feed the same residual sum from the same zero init), "
               "so one is an Identity of the other."),
    "cnn_softmax": ("torch_cnn_softmax_op13", SoftmaxCNN, 13, 15, 3e-3, 1e-4, True, {},
                    "CNN trained with BatchNorm, exported with the default settings (eval mode, constant "
                    "folding) so each BatchNorm is fused into its Conv: Conv3x3 (16 ch)-ReLU-MaxPool, "
                    "Conv3x3/2 (32 ch)-ReLU, Conv3x3 (32 ch)-ReLU, "
                    "AveragePool 2x2, "
                    "Flatten, Gemm 512-32, ReLU, Gemm 32-32, ReLU, Gemm 32-4, then Softmax (last "
                    "node, axis=1; output = probabilities, the references are the pre-softmax logits)."),
}


def main(keys):
    os.makedirs(MODELS, exist_ok=True)
    (xtr, ytr), (xte, yte), (xref, yref, mref) = splits("NCHW")
    for key in keys:
        name, cls, opset, epochs, lr, wd, softmax_end, kw, notes = SPECS[key]
        print(f"== {name}", flush=True)
        torch.manual_seed(0)
        model = cls()
        t0 = time.time()
        train(model, xtr, ytr, epochs, lr, weight_decay=wd)
        print(f"  trained in {time.time() - t0:.0f} s", flush=True)
        path = os.path.join(MODELS, name + ".onnx")
        output_name = "probabilities" if softmax_end else "logits"
        # eval() on the wrapper too: the exporter restores the *wrapper's* mode afterwards,
        # recursively, which would put a BatchNorm model back into training mode.
        export(WithSoftmax(model).eval() if softmax_end else model, path, opset, output_name, **kw)
        model.eval()
        summary = graph_summary(path)
        if key == "resnet" and summary["ops"].get("BatchNormalization", 0) != 6:
            raise SystemExit(f"FAIL {name}: expected 6 BatchNormalization nodes, got {summary['ops']}")
        if key == "cnn_softmax" and "BatchNormalization" in summary["ops"]:
            raise SystemExit(f"FAIL {name}: BatchNorm not fused: {summary['ops']}")
        if softmax_end and summary["last_op"] != "Softmax":
            raise SystemExit(f"FAIL {name}: graph does not end in Softmax: {summary['ops']}")
        logits, grad = target_gradient(model, xref)
        check_and_save(name, framework=f"PyTorch {torch.__version__.split('+')[0]}",
                       exporter="torch.onnx (TorchScript, dynamo=False)", layout="NCHW",
                       x_ref=xref, y_ref=yref, mask_ref=mref, logits=logits, gradient=grad,
                       x_test=xte, y_test=yte, framework_test_logits=predict(model, xte),
                       command=f"python tools/export_torch.py {key}", notes=notes)


if __name__ == "__main__":
    main(sys.argv[1:] or list(SPECS))
