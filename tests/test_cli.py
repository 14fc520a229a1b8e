"""The ``onnxattr`` command end to end: inspect, explain, audit and methods on the oracle models
(and on the trained models in models/ where they exist), the JSON they print or write, the exit
codes of gates, and one clear line, with no traceback, for every error a user can cause."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

import onnxattr
from onnxattr.cli import main
from onnxattr.report.run import producer
from oracles import ORACLES, oracle
from test_report import check_schema

ROOT = pathlib.Path(__file__).resolve().parents[1]
MLP, CNN = str(ORACLES / "mlp.onnx"), str(ORACLES / "cnn_bn.onnx")
FAST = ["--sample", "3", "--curve-steps", "6", "--n-subsets", "6", "--n-sizes", "3", "--quiet"]


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


# ---- inspect -----------------------------------------------------------------------------------
def test_inspect_lists_layers_shapes_and_rules(capsys):
    rc, out, err = run(capsys, "inspect", CNN)
    assert rc == 0 and err == ""
    assert "all nodes supported" in out and "input input [None, 3, 16, 16]" in out
    assert "Flat(" in out and "ZPlus(" in out and "Epsilon(" in out  # epsilon_plus_flat's three rules
    rc, out, _ = run(capsys, "inspect", CNN, "--json", "--method", "lrp.epsilon")
    doc = json.loads(out)
    assert doc["schema"] == "onnxattr.inspect/1" and doc["unsupported"] == []
    convs = [layer for layer in doc["layers"] if layer["op_type"] == "Conv"]
    assert convs and all(layer["rule"].startswith("Epsilon") for layer in convs)
    assert all(set(layer) == {"node", "op_type", "kind", "inputs", "shape", "rule"} for layer in doc["layers"])
    assert len(convs[0]["shape"]) == 4 and convs[0]["shape"][0] is None


def unsupported_model(path: pathlib.Path) -> pathlib.Path:
    """Gemm, then two nodes onnxattr does not implement (a custom domain and a control-flow If)."""
    then = helper.make_graph([helper.make_node("Identity", ["h"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [None, 2])])
    nodes = [
        helper.make_node("Gemm", ["x", "w"], ["h"], name="dense"),
        helper.make_node("FancyOp", ["h"], ["f"], name="custom", domain="com.example"),
        helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then, else_branch=then),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
                          [helper.make_tensor("w", TensorProto.FLOAT, [4, 2], [0.0] * 8),
                           helper.make_tensor("c", TensorProto.BOOL, [], [True])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    onnx.save(m, path)
    return path


def test_inspect_lists_every_unsupported_node(capsys, tmp_path):
    path = unsupported_model(tmp_path / "bad.onnx")
    rc, out, err = run(capsys, "inspect", path)
    assert rc == 1 and "2 unsupported node(s)" in out
    assert "custom (com.example.FancyOp)" in out and "branch (If)" in out
    rc, out, _ = run(capsys, "inspect", path, "--json")
    assert rc == 1 and [u["node"] for u in json.loads(out)["unsupported"]] == ["custom", "branch"]
    rc, out, err = run(capsys, "explain", path, ORACLES / "mlp.npz")
    assert rc == 2 and err.startswith("onnxattr: error: node 'custom'") and err.count("\n") == 1


def test_inspect_escapes_control_characters_from_the_model(capsys, tmp_path):
    path = unsupported_model(tmp_path / "bad.onnx")
    proto = onnx.load(path)
    proto.graph.node[1].name = "evil\x1b[2J\nfake line"
    onnx.save(proto, path)
    rc, out, err = run(capsys, "inspect", path)
    assert rc == 1 and "\x1b" not in out and "evil\\x1b[2J\\nfake line (com.example.FancyOp)" in out
    rc, out, err = run(capsys, "explain", path, ORACLES / "mlp.npz")
    assert rc == 2 and "\x1b" not in err and err.count("\n") == 1


# ---- explain -----------------------------------------------------------------------------------
def test_explain_writes_heatmaps_and_raw_maps(capsys, tmp_path):
    rc, out, err = run(capsys, "explain", CNN, ORACLES / "cnn_bn.npz", "--method", "integrated_gradients",
                       "-O", "steps=8", "--target", "3", "--out", tmp_path)
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["schema"] == "onnxattr.explain/1" and doc["targets"] == [3, 3, 3, 3]
    raw = np.load(tmp_path / "integrated_gradients.npy")
    assert raw.shape == (4, 3, 16, 16) and raw.dtype == np.float32
    pngs = sorted(tmp_path.glob("*.png"))
    assert [p.name for p in pngs] == [f"integrated_gradients_{i}_target3.png" for i in range(4)]
    with Image.open(pngs[0]) as im:
        rgb = np.asarray(im.convert("RGB")).astype(int)
    assert im.size == (256, 256 + 24)  # the 16 x 16 map enlarged 16 times, and its colour scale below
    top = rgb[:256]
    assert ((top[..., 0] - top[..., 2]) > 40).any() or ((top[..., 2] - top[..., 0]) > 40).any()  # red or blue
    bar = rgb[256 + 4 + 4]  # the colour scale: blue at -scale, white at 0, red at +scale
    assert bar[0, 2] - bar[0, 0] > 50 and bar[-1, 0] - bar[-1, 2] > 50 and bar[128].min() > 230


def test_explain_at_a_layer_draws_the_maps_over_its_activation(capsys, tmp_path):
    """--wrt on a vision model: the maps have the layer's shape and equal the library's; the
    inspect lines name the wrt tensor and the input held fixed."""
    layer = "/2/Relu_output_0"
    rc, out, err = run(capsys, "explain", CNN, ORACLES / "cnn_bn.npz", "--wrt", layer, "--out", tmp_path, "-q")
    assert rc == 0, err
    x = np.load(ORACLES / "cnn_bn.npz")["input"]
    model = onnxattr.load(CNN, wrt=layer)
    expected = onnxattr.attribute(model, {"input": x}, method="gradient")
    raw = np.load(tmp_path / "gradient.npy")
    assert raw.shape == expected.shape and raw.shape[:2] == (4, model.input_shape[1])
    np.testing.assert_allclose(raw, expected, rtol=1e-6)
    assert len(list(tmp_path.glob("gradient_*_target*.png"))) == 4
    rc, out, _ = run(capsys, "inspect", CNN, "--wrt", layer)
    assert rc == 0 and f"attributed at wrt tensor {layer}" in out
    assert "inputs held fixed at the values given: input [None, 3, 16, 16] float32" in out
    assert "canonized: " in out


def test_explain_reads_images_with_preprocessing(capsys, tmp_path):
    x = oracle("cnn_bn")[1]["input"]
    files = []
    for i in range(2):
        img = (np.random.default_rng(i).random((40, 30, 3)) * 255).astype(np.uint8)
        files.append(tmp_path / f"img{i}.{'png' if i == 0 else 'jpg'}")
        Image.fromarray(img).save(files[-1])
    rc, out, err = run(capsys, "explain", CNN, *files, "--resize", "16", "16", "--mean", "0.5,0.5,0.5",
                       "--std", "0.25,0.25,0.25", "--layout", "NCHW", "--out", tmp_path / "out")
    assert rc == 0, err
    raw = np.load(tmp_path / "out" / "gradient.npy")
    assert raw.shape == (2,) + x.shape[1:]
    assert len(json.loads(out)["files"]) == 3


def test_explain_vector_model_draws_strips(capsys, tmp_path):
    rc, out, err = run(capsys, "explain", MLP, ORACLES / "mlp.npz", "--out", tmp_path)
    assert rc == 0, err
    assert len(list(tmp_path.glob("gradient_*_target*.png"))) == 6


def test_methods_lists_every_method_and_option(capsys):
    rc, out, _ = run(capsys, "methods")
    assert rc == 0
    assert "integrated_gradients:" in out and "steps = 32" in out and "lrp.epsilon_gamma_box:" in out


# ---- audit -------------------------------------------------------------------------------------
def test_audit_writes_report_with_the_documented_schema(capsys, tmp_path):
    rc, out, err = run(capsys, "audit", CNN, "--data", ORACLES / "cnn_bn.npz", "--method", "gradient",
                       "--method", "smoothgrad", "-O", "smoothgrad:samples=4", "--heatmaps", "2",
                       "--out", tmp_path, *FAST[:-1])
    assert rc == 0, err
    assert "audit of cnn_bn.onnx" in out and "report.html" in out
    doc = json.loads((tmp_path / "report.json").read_text())
    check_schema(doc, ["gradient", "smoothgrad"], image=True)
    assert doc["passed"] is True and doc["gates"] == []
    assert doc["methods"]["smoothgrad"]["options"]["samples"] == 4
    assert doc["model"]["name"] == "cnn_bn.onnx" and doc["model"]["path"] == CNN
    for m in doc["methods"].values():
        assert all((tmp_path / f).is_file() for f in m["heatmaps"])
    assert (tmp_path / "report.html").read_text().count("<img ") == 2 * 3


@pytest.mark.parametrize("gates, expected", [
    (["--gate", "deletion.auc<=100", "--gate", "gradient:insertion.auc>-100"], 0),
    (["--gate", "deletion.auc<=100", "--gate", "insertion.auc>100"], 1),
    (["--fail-on", "randomization", "--randomization-threshold", "1.01"], 0),
    (["--fail-on", "randomization", "--randomization-threshold", "0"], 1),
    (["--gate", "sensitivity_n.mean>=0.99"], 1),
])
def test_audit_gates_set_the_exit_code(capsys, tmp_path, gates, expected):
    rc, out, err = run(capsys, "audit", MLP, "--data", ORACLES / "mlp.npz", "--method", "gradient",
                       "--out", tmp_path, *gates, *FAST)
    assert rc == expected, err
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["passed"] is (expected == 0)
    assert doc["gates"] and all(g["method"] == "gradient" for g in doc["gates"])


def test_audit_prints_gate_results(capsys, tmp_path):
    rc, out, _ = run(capsys, "audit", MLP, "--data", ORACLES / "mlp.npz", "--method", "gradient", "--out", tmp_path,
                     "--gate", "insertion.auc>100", *FAST[:-1])
    assert rc == 1
    assert "gate insertion.auc>100 [gradient]: FAIL" in out and "1 of 1 gate check(s) failed" in out


BAD = [
    (["inspect", "missing.onnx"], "'missing.onnx': no such file"),
    (["inspect", __file__], "is not an ONNX model"),
    (["explain", MLP, "missing.npz"], "missing.npz: no such file"),
    (["explain", MLP, __file__], "unknown input type '.py'"),
    (["explain", CNN, "{bad_png}"], "not a readable image"),
    (["explain", MLP, "{png}"], "not an image batch"),
    (["explain", MLP, str(ORACLES / "mlp.npz"), "--method", "gradint"], "unknown method 'gradint'"),
    (["explain", MLP, str(ORACLES / "mlp.npz"), "-O", "steps=3"], "has no option 'steps'"),
    (["explain", MLP, str(ORACLES / "mlp.npz"), "--target", "7"], "out of range"),
    (["explain", MLP, str(ORACLES / "cnn_bn.npz")], "expects 2 dims"),
    (["explain", MLP, str(ORACLES / "mlp.npz"), "--out", "{file}/sub"], "Not a directory"),
    (["audit", MLP, "--data", "missing_dir/"], "no such file or folder"),
    (["audit", MLP, "--data", "{empty}"], "holds no images"),
    (["audit", MLP, "--data", str(ORACLES / "mlp.npz"), "--gate", "insertion.auc"], "quote the gate"),
    (["audit", MLP, "--data", str(ORACLES / "mlp.npz"), "--gate", "nope>1"], "unknown metric"),
    (["audit", MLP, "--data", str(ORACLES / "mlp.npz"), "-O", "steps=3"], "has an option 'steps'"),
    (["audit", MLP, "--data", str(ORACLES / "mlp.npz"), "--method", "lrp.epsilon_gamma_box"], "needs low= and high="),
    (["audit", MLP, "--data", str(ORACLES / "mlp.npz"), "--skip", "insertion", "--gate", "insertion.auc>0"],
     "which is skipped"),
    (["audit", MLP, "--data", str(ORACLES / "mlp.npz"), "--sample", "-2"], "sample must be"),
    (["audit", MLP, "--data", str(ORACLES / "mlp.npz"), "--curve-steps", "0"], "curve_steps must be"),
    (["explain", MLP, "empty.npy"], "empty.npy: empty"),
    (["explain", MLP, "strings.npy"], "strings.npy: holds strings"),
    (["explain", MLP, "complex.npy"], "complex.npy: holds complex numbers"),
    (["explain", MLP, "pickled.npz"], "pickled.npz: holds pickled Python objects, which are not read"),
    (["explain", MLP, "pickle.npy"], "pickle.npy: not a .npy/.npz file; it could only be read as a pickle"),
    (["explain", MLP, "corrupt.npz"], "corrupt.npz: not a readable .npy/.npz file"),
    (["explain", CNN, "bomb.png"], "bomb.png: the image is too large to read safely"),
    (["audit", CNN, "--data", "mixed"], "labels.npy: holds shape (4,), which does not stack"),
    (["explain", MLP, str(ORACLES / "mlp.npz"), "--heatmaps", "-1"], "--heatmaps must be 0 or more"),
]


def png_bomb(path: pathlib.Path, side: int = 30000) -> None:
    """A PNG header that declares side x side pixels (900 M), with no image data behind it."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def bad_files(folder: pathlib.Path) -> None:
    """The malformed input files of BAD (issue 13 §5)."""
    (folder / "empty.npy").write_bytes(b"")
    np.save(folder / "strings.npy", np.array(["a", "b"]))
    np.save(folder / "complex.npy", np.ones((2, 4), np.complex64))
    np.savez(folder / "pickled.npz", x=np.array([{"a": 1}], dtype=object))
    import pickle

    (folder / "pickle.npy").write_bytes(pickle.dumps([1.0, 2.0]))
    good = folder / "good.npz"
    np.savez(good, x=np.zeros((2, 4), np.float32))
    (folder / "corrupt.npz").write_bytes(good.read_bytes()[:40])
    png_bomb(folder / "bomb.png")
    (folder / "mixed").mkdir()
    np.save(folder / "mixed" / "batch.npy", oracle("cnn_bn")[1]["input"])
    np.save(folder / "mixed" / "labels.npy", np.arange(4))


@pytest.mark.parametrize("argv, words", BAD, ids=[" ".join(a[:1] + a[2:3]) + f" [{i}]" for i, (a, _) in enumerate(BAD)])
def test_user_errors_give_one_line_and_exit_2(capsys, tmp_path, monkeypatch, argv, words):
    monkeypatch.chdir(tmp_path)  # relative names, and where a default output folder would go
    (tmp_path / "bad.png").write_text("not an image")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "file").write_text("")
    (tmp_path / "empty").mkdir()
    bad_files(tmp_path)
    names = {"{bad_png}": "bad.png", "{png}": "ok.png", "{empty}": "empty"}
    argv = [names.get(a, a).replace("{file}", "file") for a in argv]
    rc, out, err = run(capsys, *argv)
    assert rc == 2
    assert err.startswith("onnxattr: error: ") and err.count("\n") == 1, err
    assert words in err and "Traceback" not in err


def test_quiet_audit_still_prints_the_failing_gates(capsys, tmp_path):
    rc, out, err = run(capsys, "audit", MLP, "--data", ORACLES / "mlp.npz", "--method", "gradient", "--out", tmp_path,
                       "--gate", "insertion.auc>100", "--gate", "deletion.auc<=100", *FAST)
    assert rc == 1 and out == ""
    assert err == ("onnxattr: gate insertion.auc>100 [gradient] failed: "
                   + json.loads((tmp_path / "report.json").read_text())["gates"][0]["detail"] + "\n")


def test_rerunning_an_audit_into_a_folder_replaces_its_images(capsys, tmp_path):
    args = ["audit", MLP, "--data", ORACLES / "mlp.npz", "--out", tmp_path, *FAST]
    assert run(capsys, *args, "--method", "gradient", "--method", "smoothgrad")[0] == 0
    assert any("smoothgrad" in p.name for p in (tmp_path / "images").iterdir())
    assert run(capsys, *args, "--method", "gradient")[0] == 0
    assert not any("smoothgrad" in p.name for p in (tmp_path / "images").iterdir())


def test_explain_draws_at_most_heatmaps_pngs(capsys, tmp_path):
    rc, out, err = run(capsys, "explain", MLP, ORACLES / "mlp.npz", "--heatmaps", "2", "--out", tmp_path)
    assert rc == 0, err
    assert len(list(tmp_path.glob("*.png"))) == 2 and json.loads(out)["heatmaps_left_out"] == 4
    assert np.load(tmp_path / "gradient.npy").shape[0] == 6


def test_explain_shows_progress_on_a_terminal(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    rc, out, err = run(capsys, "explain", MLP, ORACLES / "mlp.npz", "--heatmaps", "3", "--out", tmp_path)
    assert rc == 0 and "onnxattr explain [" in err and "4/4" in err


def test_version_and_producer(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"onnxattr {onnxattr.__version__}"
    proto = onnx.load(MLP)
    proto.producer_name, proto.producer_version = "tf2onnx", "1.17.0 None"
    assert producer(proto) == "tf2onnx 1.17.0"


def test_inspect_refuses_cuda_without_cupy(capsys):
    pytest.importorskip("onnxattr.backend")
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed")
    except ImportError:
        pass
    rc, out, err = run(capsys, "inspect", CNN, "--device", "cuda")
    assert rc == 2 and "needs CuPy" in err and out == ""


def test_internal_errors_give_one_line_and_exit_3(capsys, monkeypatch):
    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("onnxattr.cli.cmd_methods", broken)
    monkeypatch.delenv("ONNXATTR_DEBUG", raising=False)
    rc, out, err = run(capsys, "methods")
    assert rc == 3 and err.count("\n") == 1
    assert err.startswith("onnxattr: internal error: ZeroDivisionError: a bug") and "ONNXATTR_DEBUG=1" in err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["audit", MLP])  # --data is required
    assert e.value.code == 2
    assert "the following arguments are required: --data" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["explain", MLP, "x.npy", "--mean", "0.5,x"])
    assert e.value.code == 2


def test_python_dash_m_in_a_subprocess(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "onnxattr", "audit", MLP, "--data", str(ORACLES / "mlp.npz"), "--method", "gradient",
           "--gate", "randomization.spearman<0", "--out", str(tmp_path), *FAST[:-1]]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1, done.stderr
    assert "FAIL" in done.stdout and (tmp_path / "report.html").is_file()
    assert "onnxattr audit [" not in done.stderr  # stderr is not a terminal: no progress bar
    done = subprocess.run([sys.executable, "-m", "onnxattr", "explain", MLP, "missing.png"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr == "onnxattr: error: missing.png: no such file or folder\n"


# ---- the trained models in models/, where they exist -------------------------------------------
# Image models (references keyed "input"); the text model (input_ids, attention_mask) is run
# through the three commands with --wrt embeddings in test_text_ui.py.
TRAINED = sorted(p for p in (ROOT / "models").glob("*.onnx")
                 if p.with_suffix(".npz").is_file() and "input" in np.load(p.with_suffix(".npz")).files)


@pytest.mark.skipif(not TRAINED, reason="no trained models in models/ yet")
@pytest.mark.parametrize("path", TRAINED, ids=[p.stem for p in TRAINED])
def test_three_commands_on_trained_models(capsys, tmp_path, path):
    data = path.with_suffix(".npz")
    rc, out, err = run(capsys, "inspect", path, "--json")
    assert rc == 0, out
    assert json.loads(out)["unsupported"] == []
    rc, out, err = run(capsys, "explain", path, data, "--method", "lrp.epsilon_plus_flat", "--out", tmp_path / "ex")
    assert rc == 0, err
    assert json.loads(out)["files"]
    rc, out, err = run(capsys, "audit", path, "--data", data, "--method", "gradient", "--out", tmp_path / "audit",
                       "--heatmaps", "1", "--skip", "sensitivity_n", "--gate", "randomization", *FAST[:-1])
    assert rc in (0, 1), err
    doc = json.loads((tmp_path / "audit" / "report.json").read_text())
    assert doc["schema"] == "onnxattr.audit/2" and doc["model"]["name"] == path.name
    assert set(doc["methods"]["gradient"]["metrics"]) >= {"deletion.auc", "insertion.auc", "randomization.spearman"}
    assert doc["passed"] is (rc == 0)
