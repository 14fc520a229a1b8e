"""Text models in the user-facing parts: .npz feeds and vocabularies, tokens drawn by relevance
(PNG and HTML), relevance mass on the deciding tokens, and ``onnxattr explain``/``inspect``/
``audit`` with ``--wrt`` (issue 12 items 3 and 6). The tiny hand-built model of textmodels.py
always; the bundled trained text transformer where it is in models/."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import textmodels as tm
from PIL import Image

import onnxattr
from onnxattr.analysis.localization import mask_fraction, relevance_mass
from onnxattr.cli import main
from onnxattr.errors import InputError
from onnxattr.inputs import load_feeds, load_vocab, read_feeds, token_strings
from onnxattr.viz import _RDBU_R, token_picture

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "models" / "torch_text_order_op17.onnx"
FAST = ["--sample", "3", "--curve-steps", "4", "--n-subsets", "6", "--n-sizes", "2", "--quiet"]


def run(capsys: pytest.CaptureFixture, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def tiny(tmp_path):
    """The hand-built text classifier, a data file with a target and a relevant mask, and a
    vocabulary with a token that must be escaped in HTML."""
    import onnx

    model = tmp_path / "text.onnx"
    onnx.save(tm.text_model(), model)
    feeds = tm.batch(3)
    relevant = np.zeros((3, tm.T), dtype=bool)
    relevant[:, 1] = True
    data = tmp_path / "text.npz"
    np.savez(data, **feeds, relevant=relevant, target=np.array([0, 1, 2]), logits=np.zeros((3, tm.C)))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["<b>bold</b>"] + [f"tok{i}" for i in range(1, tm.V)]) + "\n")
    return model, data, vocab, feeds


# ---- reading ---------------------------------------------------------------------------------
def test_feeds_files_take_one_array_per_input_and_name_what_is_missing(tiny, tmp_path):
    model_path, data, _, feeds = tiny
    model = onnxattr.load(model_path, wrt="embeddings")
    text = load_feeds(data, model)
    assert set(text.feeds) == {"input_ids", "attention_mask"}  # 'logits' is not read
    np.testing.assert_array_equal(text.target, [0, 1, 2])
    assert text.relevant.dtype == bool and text.relevant.shape == (3, tm.T)
    both = read_feeds([data, data], model)
    assert len(both) == 6 and both.relevant.shape == (6, tm.T)
    np.savez(tmp_path / "bad.npz", input_ids=feeds["input_ids"])
    with pytest.raises(InputError, match=r"bad.npz.*attention_mask"):
        load_feeds(tmp_path / "bad.npz", model)
    np.savez(tmp_path / "short.npz", **feeds, target=np.array([1]))
    with pytest.raises(InputError, match="batch size"):
        load_feeds(tmp_path / "short.npz", model)
    with pytest.raises(InputError, match="one array per input"):
        load_feeds(tmp_path / "x.npy", model)


def test_vocabularies_from_lines_and_tokenizer_json(tmp_path):
    lines = tmp_path / "v.txt"
    lines.write_text("[PAD]\n hello\nworld\n")
    assert load_vocab(lines) == ["[PAD]", " hello", "world"]
    wordpiece = tmp_path / "tokenizer.json"
    wordpiece.write_text(json.dumps({"model": {"type": "WordPiece", "vocab": {"[CLS]": 0, "a": 1, "##b": 3}},
                                     "added_tokens": [{"id": 5, "content": "[MASK]"}]}))
    v = load_vocab(wordpiece)
    assert v == ["[CLS]", "a", None, "##b", None, "[MASK]"]
    assert token_strings(np.array([0, 2, 3, 5, 9]), v) == ["[CLS]", "2", "##b", "[MASK]", "9"]
    unigram = tmp_path / "u.json"
    unigram.write_text(json.dumps({"model": {"type": "Unigram", "vocab": [["<s>", 0.0], ["x", -1.5]]}}))
    assert load_vocab(unigram) == ["<s>", "x"]
    assert token_strings(np.array([1, 0]), None) == ["1", "0"]
    broken = tmp_path / "broken.json"
    broken.write_text('{"model": {}}')
    with pytest.raises(InputError, match="broken.json.*tokenizer.json"):
        load_vocab(broken)


# ---- relevance mass on tokens ----------------------------------------------------------------
def test_relevance_mass_on_token_masks():
    """R+ on the relevant tokens over R+ on the kept ones; the hidden axis summed first."""
    a = np.zeros((2, 4, 3))
    a[0, :, 0] = [1.0, 3.0, -2.0, 4.0]  # token sums 1, 3, -2, 4
    a[1, :, :] = -1.0  # no positive relevance
    relevant = np.array([[False, True, False, False], [True, False, False, False]])
    keep = np.array([[1, 1, 1, 0], [1, 1, 1, 1]])
    np.testing.assert_allclose(relevance_mass(a, relevant)[0], 3 / 8)
    np.testing.assert_allclose(relevance_mass(a, relevant, within=keep)[0], 3 / 4)
    assert np.isnan(relevance_mass(a, relevant)[1])
    np.testing.assert_allclose(mask_fraction(relevant, keep), [1 / 3, 1 / 4])
    with pytest.raises(InputError, match="tokens are"):
        relevance_mass(a, relevant[:, :3])


# ---- pictures ----------------------------------------------------------------------------------
def test_token_picture_colours_boxes_with_the_image_colormap():
    """One box per token, coloured red at the largest positive score, blue at the most negative,
    white at 0, with the colour scale under the boxes."""
    rgb = token_picture(["pos", "neg", "zero"], np.array([2.0, -2.0, 0.0]))
    colors = {tuple(c) for c in rgb[:28].reshape(-1, 3).tolist()}  # the row of boxes
    red, blue, white = (tuple(int(round(v * 255)) for v in _RDBU_R[k]) for k in (-1, 0, 5))
    assert red in colors and blue in colors and white in colors
    bar = rgb[28 + 4 : 28 + 12]  # the colour scale, as under the image heatmaps
    assert tuple(bar[4, 0]) == blue and tuple(bar[4, -1]) == red
    wide = token_picture([f"token{i}" for i in range(60)], np.linspace(-1, 1, 60), width=300)
    assert 200 < wide.shape[1] <= 300 and wide.shape[0] > 100  # wrapped into several lines
    with pytest.raises(ValueError, match="3 tokens but 2 scores"):
        token_picture(["a", "b", "c"], np.zeros(2))


# ---- the command --------------------------------------------------------------------------------
def test_explain_writes_tokens_coloured_by_relevance(capsys, tiny, tmp_path):
    model, data, vocab, feeds = tiny
    rc, out, err = run(capsys, "explain", model, data, "--wrt", "embeddings", "--vocab", vocab, "--method",
                       "integrated_gradients", "-O", "steps=8", "--out", tmp_path / "ex", "-q", "--heatmaps", "2")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["targets"] == [0, 1, 2]  # the data file's targets
    a = np.load(tmp_path / "ex" / "integrated_gradients.npy")
    expected = onnxattr.attribute(onnxattr.load(model, wrt="embeddings"), feeds, target=[0, 1, 2],
                                  method="integrated_gradients", steps=8)
    np.testing.assert_allclose(a, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.load(tmp_path / "ex" / "integrated_gradients_tokens.npy"), a.sum(axis=2), rtol=1e-5)
    pngs = sorted((tmp_path / "ex").glob("*.png"))
    assert [p.name for p in pngs] == ["integrated_gradients_0_target0.png", "integrated_gradients_1_target1.png"]
    assert Image.open(pngs[0]).mode == "RGB" and doc["heatmaps_left_out"] == 1
    html = (tmp_path / "ex" / "integrated_gradients.html").read_text()
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "<b>bold" not in html  # vocab strings escaped
    ids = feeds["input_ids"][1][feeds["attention_mask"][1] != 0]
    assert html.count('class="tok"') == tm.T + len(ids)  # padding left out
    mass = relevance_mass(a, np.eye(tm.T, dtype=bool)[[1, 1, 1]], within=feeds["attention_mask"])
    np.testing.assert_allclose(doc["relevance_mass"], mass, rtol=1e-6)
    np.testing.assert_allclose(doc["relevant_share"], 1 / feeds["attention_mask"].sum(axis=1))


def test_explain_without_wrt_says_to_use_it(capsys, tiny, tmp_path):
    model, data, _, _ = tiny
    rc, _, err = run(capsys, "explain", model, data, "--out", tmp_path)
    assert rc == 2 and "wrt='embeddings'" in err and "Traceback" not in err
    rc, _, err = run(capsys, "explain", tm_image_model(tmp_path), tmp_path / "x.npy", "--vocab", tiny[2])
    assert rc == 2 and "--vocab is for text models" in err


def tm_image_model(tmp_path: pathlib.Path) -> pathlib.Path:
    """A one-input float model and a batch for it, for the refusals of text-only options."""
    import onnx
    import toy

    path = tmp_path / "linear.onnx"
    onnx.save(toy.linear(4, 2), path)
    np.save(tmp_path / "x.npy", np.ones((2, 4), np.float32))
    return path


def test_inspect_shows_the_canonized_patterns_the_wrt_tensor_and_the_fixed_inputs(capsys, tiny):
    model = tiny[0]
    rc, out, err = run(capsys, "inspect", model, "--wrt", "embeddings")
    assert rc == 0, err
    assert "canonized: " in out
    assert "attributed at wrt tensor emb [None, 6, 8] float32, computed by 1 node(s) from token ids input_ids" in out
    assert "inputs held fixed at the values given: input_ids [None, 6] int64, attention_mask [None, 6] int64" in out
    rc, out, _ = run(capsys, "inspect", model, "--wrt", "embeddings", "--json")
    doc = json.loads(out)
    assert doc["wrt"]["name"] == "emb" and doc["wrt"]["token_input"] == "input_ids"
    assert [i["name"] for i in doc["fixed_inputs"]] == ["input_ids", "attention_mask"]
    assert doc["canonized"].startswith("canonized: ")


def test_audit_of_a_text_model_shows_tokens_and_relevance_mass(capsys, tiny, tmp_path):
    model, data, vocab, feeds = tiny
    rc, out, err = run(capsys, "audit", model, "--data", data, "--wrt", "embeddings", "--vocab", vocab,
                       "--method", "gradient", "--method", "input_x_gradient", "--heatmaps", "2",
                       "--gate", "deletion.auc<=1", "--out", tmp_path / "audit", *FAST)
    assert rc == 0, err
    doc = json.loads((tmp_path / "audit" / "report.json").read_text())
    text = doc["data"]["text"]
    assert len(text["tokens"]) == 2 and text["tokens"][0][0] == token_strings(feeds["input_ids"][:1, :1], load_vocab(vocab))[0]
    assert set(text["relevance_mass"]) == {"gradient", "input_x_gradient"}
    assert doc["data"]["targets"] == [0, 1, 2] and doc["data"]["target"] == "given"
    for m in doc["methods"].values():
        assert m["deletion"]["quantity"] == "probability" and set(m["checks"]) == {"randomization", "class_sensitivity"}
    html = (tmp_path / "audit" / "report.html").read_text()
    assert html.count('class="tok"') > 0 and "Relevance mass on the deciding tokens" in html
    rc, _, err = run(capsys, "audit", model, "--data", data, "--wrt", "embeddings", "--gate", "randomization",
                     "--out", tmp_path / "a2", *FAST)
    assert rc in (0, 1), err  # the sanity checks run on text models too; 1: the gate failed
    assert "randomization" in json.loads((tmp_path / "a2" / "report.json").read_text())["methods"]["gradient"]["checks"]


def test_audit_of_a_text_model_draws_smoothgrad_per_sample(capsys, tiny, tmp_path):
    """SmoothGrad's noise is drawn per sample index: its indices count the rows of the feeds,
    not the inputs of the dict."""
    model, data, vocab, feeds = tiny
    rc, out, err = run(capsys, "audit", model, "--data", data, "--wrt", "embeddings", "--method", "smoothgrad",
                       "--heatmaps", "0", "--out", tmp_path / "audit", *FAST)
    assert rc == 0, err
    assert "smoothgrad" in json.loads((tmp_path / "audit" / "report.json").read_text())["methods"]


# ---- the bundled text transformer -----------------------------------------------------------------
@pytest.mark.skipif(not BUNDLED.is_file(), reason="models/torch_text_order_op17.onnx (engineer zoo) not on this branch")
@pytest.mark.parametrize("method", ["gradient", "integrated_gradients"])
def test_relevance_mass_on_the_deciding_tokens_beats_their_share(method):
    """'A before B': the deciding tokens are A and B. Gradient and IG put more of their positive
    relevance on them than their share of the sequence (what a map that ignores them scores)."""
    model = onnxattr.load(BUNDLED, wrt="embeddings")
    ref = np.load(BUNDLED.with_suffix(".npz"))
    feeds = {"input_ids": ref["input_ids"], "attention_mask": ref["attention_mask"]}
    a = onnxattr.attribute(model, feeds, target=ref["target"], method=method)
    mass = np.nanmean(relevance_mass(a, ref["relevant"], within=ref["attention_mask"]))
    share = mask_fraction(ref["relevant"], ref["attention_mask"]).mean()
    assert mass > share + 0.05, (mass, share)


@pytest.mark.skipif(not BUNDLED.is_file(), reason="models/torch_text_order_op17.onnx (engineer zoo) not on this branch")
def test_three_commands_on_the_bundled_text_model(capsys, tmp_path):
    vocab = BUNDLED.with_name("torch_text_order_op17.vocab.txt")
    rc, out, err = run(capsys, "inspect", BUNDLED, "--wrt", "embeddings", "--json")
    assert rc == 0 and json.loads(out)["wrt"]["name"] == "/tok/Gather_output_0"
    rc, out, err = run(capsys, "audit", BUNDLED, "--data", BUNDLED.with_suffix(".npz"), "--wrt", "embeddings",
                       "--vocab", vocab, "--method", "gradient", "--heatmaps", "1", "--out", tmp_path / "audit", *FAST)
    assert rc == 0, err
    doc = json.loads((tmp_path / "audit" / "report.json").read_text())
    assert doc["data"]["text"]["tokens"][0][0] == "[CLS]" and doc["data"]["text"]["relevance_mass"]["gradient"]["mean"]
    rc, out, err = run(capsys, "explain", BUNDLED, BUNDLED.with_suffix(".npz"), "--wrt", "embeddings",
                       "--vocab", vocab, "--method", "gradient", "--out", tmp_path, "-q")
    assert rc == 0, err
    doc = json.loads(out)
    assert np.mean(doc["relevance_mass"]) > np.mean(doc["relevant_share"])
    html = (tmp_path / "gradient.html").read_text()
    assert ">A</span>" in html and ">B</span>" in html and ">[CLS]</span>" in html


def test_audit_of_a_causal_lm_explains_the_next_token_at_the_last_kept_position():
    """(B, T, V) logits: the default target is (last position the mask keeps, its argmax), and the
    curves follow that raw logit normalised by their ends."""
    from onnxattr.report import audit

    model = onnxattr.load(tm.text_model(lm=True), wrt="embeddings")
    feeds = tm.batch(3)
    report = audit(model, feeds, methods=["gradient"], progress=False, curve_steps=4, n_subsets=4, n_sizes=2)
    doc = report.to_json()
    logits = model(feeds)
    last = feeds["attention_mask"].shape[1] - 1 - np.argmax(feeds["attention_mask"][:, ::-1], axis=1)
    assert doc["data"]["targets"] == [[int(p), int(logits[i, p].argmax())] for i, p in enumerate(last)]
    assert doc["methods"]["gradient"]["deletion"]["quantity"] == "logit"
    assert "Heatmaps" in report.to_html()
