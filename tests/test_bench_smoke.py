"""tools/bench.py runs end to end on a tiny ResNet-18-shaped network and reports every row."""
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import bench  # noqa: E402
import resnet18  # noqa: E402


def test_bench_reports_every_method_on_a_tiny_network():
    report = bench.main(["--models", "resnet18", "--size", "32", "--width", "4", "--batch", "2",
                         "--steps", "2", "--repeats", "1", "--no-captum"])
    rows = {line.split("|")[1].strip(): line for line in report.splitlines() if line.startswith("| ")}
    for what in ["onnxruntime forward", "onnxattr forward", *bench.METHODS]:
        assert what in rows, what
    assert "rel. diff to onnxruntime" in rows["onnxattr forward"]
    diff = float(rows["onnxattr forward"].split("max")[1].split("|")[0])
    assert diff < 1e-4


def test_resnet18_graph_has_the_torchvision_layout():
    w = resnet18.weights(widths=(4, 8, 16, 32), classes=10)
    assert w["conv1.weight"].shape == (4, 3, 7, 7)
    assert w["layer2.0.downsample.0.weight"].shape == (8, 4, 1, 1)
    assert "layer1.0.downsample.0.weight" not in w
    proto = resnet18.onnx_model(w, size=32)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Conv") == 20 and ops.count("Add") == 8 and ops[-1] == "Gemm"
