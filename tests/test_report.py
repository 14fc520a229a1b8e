"""onnxattr.audit and the AuditReport: schema, checks and gates on models with known answers,
the files it writes, and the HTML rendered in a real headless browser (skipped without chromium).
"""
from __future__ import annotations

import io
import json
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import helper
from PIL import Image

import onnxattr
from onnxattr import InputError, OptionError
from onnxattr.report import ANALYSES, METRICS, SCHEMA, Gate, Progress, merge, run_method, svg_plot, validate
from oracles import oracle
from reports import same_report
import toy

FAST = dict(sample=3, curve_steps=8, n_subsets=8, n_sizes=3, progress=False)


@pytest.fixture(scope="module")
def cnn_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[onnxattr.report.AuditReport, pathlib.Path]:
    path, data = oracle("cnn_bn")
    out = tmp_path_factory.mktemp("audit")
    r = onnxattr.audit(path, data["input"], methods=("gradient", "guided_backprop"), heatmaps=2,
                       gates=["randomization", "gradient:insertion.auc>=-10"], out_dir=out, **FAST)
    return r, out


def check_schema(doc: dict, methods: list[str], image: bool) -> None:
    """The documented keys of schema onnxattr.audit/2, and strict JSON."""
    json.dumps(doc, allow_nan=False)
    assert doc["schema"] == SCHEMA
    assert set(doc) >= {"schema", "onnxattr_version", "created", "passed", "model", "data", "settings", "methods",
                        "gates", "files"}
    assert set(doc["model"]) >= {"name", "path", "opset", "producer", "input", "output", "classes", "nodes",
                                 "op_types", "parameters", "layers"}
    assert set(doc["data"]) >= {"sources", "n_inputs", "sample", "shape", "layout", "target", "targets", "predicted"}
    assert list(doc["methods"]) == methods
    n = len(doc["data"]["sample"])
    for m in doc["methods"].values():
        assert set(m["metrics"]) == set(METRICS)
        for check in m["checks"].values():
            assert set(check) == {"name", "passed", "value", "threshold", "rule"}
            assert check["passed"] in (True, False, None)
        assert len(m["deletion"]["auc"]) == n and len(m["insertion"]["fractions"]) == len(m["insertion"]["mean_curve"])
        assert len(m["sensitivity_n"]["ns"]) == len(m["sensitivity_n"]["correlation"])
        assert len(m["randomization"]["spearman"]) == len(m["randomization"]["layers"])
        assert (m["spectrum"] is not None) == image
    for g in doc["gates"]:
        assert set(g) == {"gate", "method", "metric", "value", "passed", "detail"}
    assert doc["passed"] == all(g["passed"] for g in doc["gates"])


def test_audit_report_object_and_schema(cnn_report):
    r, out = cnn_report
    assert isinstance(r, onnxattr.report.AuditReport)
    assert list(r.methods) == ["gradient", "guided_backprop"]
    doc = r.to_json()
    check_schema(doc, ["gradient", "guided_backprop"], image=True)
    assert doc["data"]["n_inputs"] == 4 and len(doc["data"]["sample"]) == 3 and doc["data"]["layout"] == "NCHW"
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(doc))
    g = r.methods["gradient"]
    assert g.attribution.shape == (2, 3, 16, 16)  # the maps of the heatmap samples only
    assert (doc["engine"], doc["workers"], doc["retried_batches"], doc["failed"]) == ("local", 1, 0, [])
    assert set(g.checks) == {"randomization", "class_sensitivity"}
    assert g.randomization is not None and g.deletion is not None and g.sensitivity_n is not None
    # the gate 'randomization' gives one outcome per method, the method-specific one a single outcome
    assert [(o.gate, o.method) for o in r.gates] == [("randomization", "gradient"), ("randomization", "guided_backprop"),
                                                     ("gradient:insertion.auc>=-10", "gradient")]
    assert r.gates[-1].passed
    assert r.passed == all(o.passed for o in r.gates)


def test_write_references_only_existing_png_files(cnn_report):
    r, out = cnn_report
    page = (out / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 2 * (1 + 2)  # two rows: the input and one heatmap per method
    for src in sources:
        with Image.open(out / src) as im:
            assert im.format == "PNG" and im.size[0] >= 64
    assert page.count("<svg") >= 4  # randomization, deletion, insertion, Sensitivity-n, spectrum
    for word in ("Sanity checks", "Faithfulness", "Spectra", "Heatmaps", "Model", "pass"):
        assert word in page


def linear_model(rows_equal: bool = False) -> onnx.ModelProto:
    if not rows_equal:
        return toy.linear(16, 3, seed=1)
    w = np.repeat(np.random.default_rng(0).standard_normal((16, 1)), 3, axis=1)
    return toy.model([helper.make_node("Gemm", ["x", "w", "b"], ["y"])], {"w": w, "b": [0.0, 1.0, 2.0]}, 16, 3)


def test_gates_pass_and_fail_on_a_linear_model():
    """Gradient*Input on a linear model with baseline 0 has Sensitivity-n = 1 for every n (Ancona et al.
    2018); the plain gradient does not. Randomizing a linear model's weights changes the gradient."""
    x = np.random.default_rng(0).standard_normal((6, 16)).astype(np.float32)
    gates = ["input_x_gradient:sensitivity_n.mean>=0.99", "gradient:sensitivity_n.mean>=0.99", "randomization"]
    r = onnxattr.audit(onnxattr.load(linear_model()), x, methods=["gradient", "input_x_gradient"], gates=gates,
                       **dict(FAST, sample=None))
    by = {(o.gate, o.method): o for o in r.gates}
    assert by[gates[0], "input_x_gradient"].passed
    assert by[gates[0], "input_x_gradient"].value == pytest.approx(1.0, abs=1e-6)
    assert not by[gates[1], "gradient"].passed
    assert by["randomization", "gradient"].passed and by["randomization", "input_x_gradient"].passed
    assert not r.passed
    assert r.methods["gradient"].spectrum is None  # not an image
    assert "2 of" not in r.summary() and "1 of 4 gate check(s) failed" in r.summary()


def test_class_sensitivity_fails_when_every_class_has_the_same_map():
    """A model whose classes share one weight row: the gradient is the same map for every class."""
    x = np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)
    r = onnxattr.audit(onnxattr.load(linear_model(rows_equal=True)), x, methods=["gradient"],
                       gates=["class_sensitivity"], analyses=["class_sensitivity"], **FAST)
    c = r.methods["gradient"].checks["class_sensitivity"]
    assert c.passed is False and c.value == pytest.approx(1.0)
    assert not r.passed and r.gates[0].value == pytest.approx(1.0)


def test_thresholds_decide_the_checks():
    path, data = oracle("mlp")
    kw = dict(methods=["gradient"], analyses=["randomization", "class_sensitivity"], gates=["sanity"], **FAST)
    strict = onnxattr.audit(path, data["input"], randomization_threshold=0.0, **kw)
    lax = onnxattr.audit(path, data["input"], randomization_threshold=1.01, class_threshold=1.01, **kw)
    assert not strict.passed and lax.passed
    assert [o.metric for o in lax.gates] == ["randomization", "class_sensitivity"]  # 'sanity' is both checks
    assert [o.passed for o in strict.gates] == [False, True]


def test_nan_values_fail_their_gates():
    """lrp.epsilon_plus_flat puts Flat on the first layer: on a one-layer model every map is
    constant, so rank correlations are undefined; a gate on them fails instead of passing silently."""
    x = np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32)
    r = onnxattr.audit(onnxattr.load(linear_model()), x, methods=["lrp.epsilon_plus_flat"],
                       gates=["randomization", "sensitivity_n.mean>-2"], **FAST)
    assert [o.passed for o in r.gates] == [False, False]
    assert "undefined" in r.gates[1].detail and "constant map" in r.gates[1].detail  # says why
    assert r.methods["lrp.epsilon_plus_flat"].checks["randomization"].value is None
    assert "undefined" in r.methods["lrp.epsilon_plus_flat"].checks["randomization"].rule
    json.dumps(r.to_json(), allow_nan=False)


@pytest.mark.parametrize("text, parsed", [
    ("randomization", ("randomization", None, None, None)),
    ("gradient:class_sensitivity", ("class_sensitivity", None, None, "gradient")),
    ("insertion.auc>=0.5", ("insertion.auc", ">=", 0.5, None)),
    (" lrp.epsilon_plus_flat : deletion.auc < 0.3 ", ("deletion.auc", "<", 0.3, "lrp.epsilon_plus_flat")),
    ("sanity", ("sanity", None, None, None)),
])
def test_gate_language(text, parsed):
    g = Gate.parse(text)
    assert (g.metric, g.op, g.value, g.method) == parsed


@pytest.mark.parametrize("text, words", [
    ("insertion.auc", "quote the gate"),
    ("insertion.auc>=x", "not a number"),
    ("bogus.metric<1", "unknown metric"),
    ("insertion.auc=>1", "cannot read gate"),
    ("insertion.auc<nan", "finite"),
])
def test_gate_language_errors(text, words):
    with pytest.raises(OptionError, match=words):
        Gate.parse(text)


def test_audit_argument_errors():
    path, data = oracle("mlp")
    x = data["input"]
    with pytest.raises(OptionError, match="unknown analysis"):
        onnxattr.audit(path, x, analyses=["bogus"], **FAST)
    with pytest.raises(OptionError, match="which is skipped"):
        onnxattr.audit(path, x, analyses=["deletion"], gates=["insertion.auc>0"], **FAST)
    with pytest.raises(OptionError, match="not audited"):
        onnxattr.audit(path, x, methods=["gradient"], gates=["smoothgrad:randomization"], **FAST)
    with pytest.raises(OptionError, match="unknown method"):
        onnxattr.audit(path, x, methods=["gradientt"], **FAST)
    with pytest.raises(OptionError, match="method 'lrp.epsilon_gamma_box'"):
        onnxattr.audit(path, x, methods=["lrp.epsilon_gamma_box"], **FAST)
    with pytest.raises(OptionError, match="engine must be 'local' or 'ray'"):
        onnxattr.audit(path, x, engine="spark", **FAST)
    with pytest.raises(OptionError, match="batch_size must be a positive int"):
        onnxattr.audit(path, x, batch_size=0, **FAST)
    with pytest.raises(OptionError, match="give engine='ray'"):
        onnxattr.audit(path, x, resume=True, **FAST)
    with pytest.raises(OptionError, match="needs the model as a path"):
        onnxattr.audit(onnxattr.load(path), x, engine="ray", out_dir="unused", **FAST)
    with pytest.raises(OptionError, match="seed must be a non-negative int"):
        onnxattr.audit(path, x, **dict(FAST, seed=-1))
    with pytest.raises(InputError, match="no such file"):
        onnxattr.audit(path, "missing.npz", **FAST)
    with pytest.raises(InputError, match="expects 2 dims"):
        onnxattr.audit(path, oracle("cnn_bn")[1]["input"], **FAST)


def test_data_from_a_folder_of_images_is_sampled(tmp_path):
    path, data = oracle("cnn_bn")
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(5):
        rgb = (np.random.default_rng(i).random((16, 16, 3)) * 255).astype(np.uint8)
        Image.fromarray(rgb).save(folder / f"{i}.png")
    r = onnxattr.audit(path, folder, methods=["gradient"], analyses=["deletion"], **dict(FAST, sample=2))
    assert r.data["n_inputs"] == 5 and len(r.data["sample"]) == 2
    assert r.x.shape == (2, 3, 16, 16)
    assert all(s.endswith(".png") for s in r.data["sources"])


def test_target_per_input_follows_the_sample():
    path, data = oracle("cnn_bn")
    target = np.arange(4) % 10
    r = onnxattr.audit(path, data["input"], methods=["gradient"], analyses=["alignment"], target=target,
                       **dict(FAST, sample=2, seed=3))
    assert r.data["target"] == "given"
    assert r.data["targets"] == [int(target[i]) for i in r.data["sample"]]


def test_progress_bar_is_written_to_a_stream():
    path, data = oracle("mlp")
    stream = io.StringIO()
    onnxattr.audit(path, data["input"], methods=["gradient"], analyses=["deletion"],
                   **dict(FAST, progress=stream))
    text = stream.getvalue()
    assert "onnxattr audit [" in text and "2/2" in text and text.endswith("\n")  # 1 batch x 2 steps
    quiet = Progress(3, stream=False)
    quiet.step()
    quiet.close()  # writes nothing, anywhere


def test_svg_plot_skips_bad_points_and_draws_axes():
    svg = svg_plot([("a", [0, 1, 2], [1.0, float("nan"), 3.0], "#123456"), ("b", [1, 10], [0.0, 1.0], "#654321")],
                   "t", "x", "y", ylog=True)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "#123456" in svg and ">t<" in svg and "nan" not in svg.lower()


# ---- the HTML in a real browser ---------------------------------------------------------------
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)

PROBE = """<script>window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  var svgs = Array.prototype.slice.call(document.querySelectorAll('svg'));
  document.body.setAttribute('data-images', imgs.length);
  document.body.setAttribute('data-broken', bad.map(function (i) { return i.getAttribute('src'); }).join(' '));
  document.body.setAttribute('data-svgs', svgs.filter(function (s) { return s.getBoundingClientRect().width > 0; }).length);
  document.body.setAttribute('data-probe', 'done');
});</script>"""


def chromium(tmp_path: pathlib.Path, *args: str) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def body_attributes(dom: str) -> dict[str, str]:
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    return dict(re.findall(r'(data-[a-z]+)="([^"]*)"', body.group(1)))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_chromium_without_broken_images(cnn_report, tmp_path):
    r, out = cnn_report
    page = (out / "report.html").read_text()
    probe = out / "probe.html"  # beside the report, so that relative image paths resolve the same way
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    attrs = body_attributes(chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()))
    assert attrs["data-probe"] == "done"
    assert int(attrs["data-images"]) == len(re.findall(r"<img ", page)) == 6
    assert attrs["data-broken"] == ""
    assert int(attrs["data-svgs"]) == page.count("<svg")

    # the probe notices a broken image: the test can fail
    missing = out / r.methods["gradient"].heatmaps[0]
    saved = missing.read_bytes()
    missing.unlink()
    try:
        attrs = body_attributes(chromium(tmp_path, "--dump-dom", probe.as_uri()))
    finally:
        missing.write_bytes(saved)
    assert attrs["data-broken"] == r.methods["gradient"].heatmaps[0]

    shot = tmp_path / "shot.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1000,1400", (out / "report.html").as_uri())
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.shape[:2] == (1400, 1000)
    assert (pixels.reshape(-1, 3) != pixels[0, 0]).any(axis=1).mean() > 0.05  # something was drawn


def test_a_method_run_on_two_batches_and_merged_equals_one_run():
    """run_method is the unit of work of a batch; merge joins batches into the same per-sample
    values and means as one run over all of them, the seeded analyses too: their draws come from
    (seed, sample index)."""
    path, data = oracle("cnn_bn")
    model, x = onnxattr.load(path), data["input"]
    plan = validate(["smoothgrad"], {"smoothgrad": {"samples": 3}}, curve_steps=6, n_subsets=5, n_sizes=2,
                    runtime="onnxattr")
    targets = model(x).reshape(len(x), -1).argmax(1)
    idx = np.array([7, 3, 12, 0])
    whole = run_method(model, x, targets, "smoothgrad", plan, "NCHW", indices=idx)
    parts = merge([run_method(model, x[s], targets[s], "smoothgrad", plan, "NCHW", indices=idx[s])
                   for s in (slice(0, 1), slice(1, None))])
    np.testing.assert_allclose(parts.attribution, whole.attribution, rtol=1e-5, atol=1e-7)
    for key, value in whole.metrics.items():
        assert (value is None and parts.metrics[key] is None) or parts.metrics[key] == pytest.approx(value, rel=1e-5)
    np.testing.assert_allclose(parts.deletion.scores, whole.deletion.scores, rtol=1e-5)
    np.testing.assert_allclose(parts.sensitivity_n.per_input, whole.sensitivity_n.per_input, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(parts.class_sensitivity.others, whole.class_sensitivity.others)
    assert parts.randomization.spearman.shape == whole.randomization.spearman.shape
    assert parts.to_json()["spectrum"]["power"] == pytest.approx(whole.to_json()["spectrum"]["power"], rel=1e-6)
    other = run_method(model, x, targets, "smoothgrad", plan, "NCHW", indices=idx + 1)  # other samples, other draws
    assert not np.allclose(other.attribution, whole.attribution)
    assert validate(["smoothgrad"], seed=7).options["smoothgrad"]["seed"] == 7  # the audit seed, unless given
    assert validate(["smoothgrad"], {"smoothgrad": {"seed": 2}}, seed=7).options["smoothgrad"]["seed"] == 2


def test_rows_hold_per_sample_values_and_maps_only_where_kept():
    path, data = oracle("cnn_bn")
    model, x = onnxattr.load(path), data["input"]
    plan = validate(["gradient"], curve_steps=4, n_subsets=4, n_sizes=2, runtime="onnxattr")
    r = run_method(model, x, model(x).reshape(len(x), -1).argmax(1), "gradient", plan, "NCHW")
    rows = r.rows(keep=[True, False, True, False])
    assert ["map" in row for row in rows] == [True, False, True, False]
    back = onnxattr.report.MethodResult.from_rows("gradient", r.options, rows)
    np.testing.assert_array_equal(back.attribution, r.attribution[[0, 2]])
    want, got = r.to_json(), back.to_json()
    assert got == want
    assert back.randomization.original is None  # full maps of every sample are not kept


def test_a_failing_sample_is_listed_and_the_audit_goes_on():
    path, data = oracle("mlp")
    x = data["input"].copy()
    x[1, 0] = np.inf
    r = onnxattr.audit(path, x, methods=["gradient"], analyses=["deletion"], **dict(FAST, sample=0))
    assert r.failed == [{"index": 1, "reason": r.failed[0]["reason"]}] and "infinite" in r.failed[0]["reason"]
    assert r.data["sample"] == [i for i in range(len(x)) if i != 1]
    assert len(r.methods["gradient"].deletion.auc) == len(x) - 1
    assert "1 sample(s) failed" in r.summary()
    with pytest.raises(InputError, match=f"every one of the {len(x)} samples failed"):
        onnxattr.audit(path, np.full_like(x, np.nan), methods=["gradient"], analyses=["deletion"], **dict(FAST, sample=0))


def test_the_values_do_not_depend_on_the_batch_size():
    path, data = oracle("cnn_bn")
    kw = dict(FAST, sample=0, methods=["smoothgrad"], options={"smoothgrad": {"samples": 3}}, heatmaps=3)
    one = onnxattr.audit(path, data["input"], batch_size=1, **kw).to_json()
    many = onnxattr.audit(path, data["input"], batch_size=16, **kw).to_json()
    same_report(one, many, skip=("created", "seconds"))


def test_writing_again_clears_the_images_and_keeps_the_shards(cnn_report, tmp_path):
    r, _ = cnn_report
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "old_method_7.png").write_bytes(b"stale")
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "part-0.npz").write_bytes(b"kept")
    r.write(tmp_path)
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted(pathlib.Path(k).name for k in r.images)
    assert (tmp_path / "shards" / "part-0.npz").read_bytes() == b"kept"


@pytest.mark.parametrize("name", ["gates", "html", "metrics", "progress", "records", "results", "run", "svg"])
def test_every_report_module_imports_first_and_as_a_name(name):
    """In a fresh interpreter, so that an import cycle shows up whichever module comes first."""
    root = pathlib.Path(__file__).resolve().parents[1]
    code = f"import onnxattr.report.{name} as z; assert z.__name__ == 'onnxattr.report.{name}'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)
    assert done.returncode == 0, done.stderr


def test_analyses_list_is_complete():
    assert {METRICS[k][0] for k in METRICS} <= set(ANALYSES)


def test_page_shows_the_engine_and_the_failed_samples(cnn_report):
    """engine, workers, retried batches and each failed sample (index and reason) are on the page
    as in report.json; a reason's control and bidi characters are shown as escapes."""
    from dataclasses import replace

    from onnxattr.report.html import render_html

    r, _ = cnn_report
    page = render_html(replace(r, engine="ray", workers=3, retried_batches=2,
                               failed=[{"index": 7, "reason": "worker died \u202e<b>\x1b"}]))
    assert "engine ray &middot; 3 worker(s) &middot; 2 batch(es) retried" in page
    assert "1 sample(s) failed" in page and "<li>#7: worker died \\u202e&lt;b&gt;\\x1b</li>" in page
    assert "\u202e" not in page and "\x1b" not in page
    plain = render_html(r)
    assert "engine local &middot; 1 worker(s)</p>" in plain and "failed and were left out" not in plain
