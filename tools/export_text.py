"""Train a small text transformer on a synthetic task with known deciding tokens; export it from
token ids with references.

    /work/venvs/torch/bin/python tools/export_text.py

Task ("A before B"): a sequence is ``[CLS]`` followed by 6-15 filler words (``w00`` ... ``w59``)
among which the marker tokens ``A`` and ``B`` each occur exactly once, at random positions, then
``[PAD]`` up to 16 tokens. Class 1 when ``A`` comes before ``B``, else 0. The deciding tokens are
``A`` and ``B`` (``relevant``); the fillers carry no information.

Model: token embedding (64 x 32) + learned position embedding (sliced to the sequence length),
2 pre-LayerNorm blocks (4-head self-attention with an additive padding mask, MLP 32-64-32 with
exact GELU), final LayerNorm, Linear 32-2 on the ``[CLS]`` position. Trained CPU-only,
single-threaded, with AdamW; exported with the TorchScript exporter (``dynamo=False``), opset 17,
inputs ``input_ids`` and ``attention_mask`` (int64, dynamic ``batch`` and ``sequence`` axes),
output ``logits``.

Writes ``models/torch_text_order_op17.onnx``, ``.npz`` (references), ``.vocab.txt`` (one token per
line, line i = id i) and the model's entry in ``models/manifest.json``.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "zoo"))
from model_refs import MODELS, graph_summary, record, session  # noqa: E402
from zoo_common import embedding_tensors  # noqa: E402

torch.set_num_threads(1)
NAME = "torch_text_order_op17"
VOCAB = ["[PAD]", "[CLS]", "A", "B"] + [f"w{i:02d}" for i in range(60)]
PAD, CLS, TOK_A, TOK_B, FIRST_FILLER = 0, 1, 2, 3, 4
SEQ, MIN_WORDS, MAX_WORDS = 16, 6, 15
N_TRAIN, N_TEST, N_REF = 20000, 2000, 8
DIM, HEADS, LAYERS = 32, 4, 2


def make_text(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(input_ids, attention_mask, label, relevant), int64 / int64 / int64 / bool; classes alternate
    before shuffling, so they are balanced."""
    rng = np.random.default_rng(seed)
    ids = np.full((n, SEQ), PAD, np.int64)
    mask = np.zeros((n, SEQ), np.int64)
    relevant = np.zeros((n, SEQ), bool)
    label = rng.permutation(np.arange(n) % 2).astype(np.int64)
    for i in range(n):
        words = int(rng.integers(MIN_WORDS, MAX_WORDS + 1))
        ids[i, 0] = CLS
        ids[i, 1:1 + words] = rng.integers(FIRST_FILLER, len(VOCAB), words)
        p, q = np.sort(rng.choice(words, 2, replace=False)) + 1
        first, second = (TOK_A, TOK_B) if label[i] == 1 else (TOK_B, TOK_A)
        ids[i, p], ids[i, q] = first, second
        mask[i, :1 + words] = 1
        relevant[i, [p, q]] = True
    return ids, mask, label, relevant


class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)

    def forward(self, x, bias):
        b, t, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.ln1(x)).reshape(b, t, 3, h, d // h).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / (d // h) ** 0.5 + bias, dim=-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(nn.functional.gelu(self.fc1(self.ln2(x))))


class TextTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.tok = nn.Embedding(len(VOCAB), DIM)
        self.pos = nn.Parameter(0.1 * torch.randn(32, DIM))
        self.blocks = nn.ModuleList(Block(DIM, HEADS) for _ in range(LAYERS))
        self.ln = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, 2)

    def forward(self, input_ids, attention_mask):
        x = self.tok(input_ids) + self.pos[:input_ids.shape[1]]
        bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -1e9
        for blk in self.blocks:
            x = blk(x, bias)
        return self.head(self.ln(x)[:, 0])


def train(model, ids, mask, y, steps=2500, batch=128, lr=3e-3, seed=0):
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    ids_t, mask_t, y_t = map(torch.from_numpy, (ids, mask, y))
    g = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(ids), (batch,), generator=g)
        out = model(ids_t[idx], mask_t[idx])
        loss = nn.functional.cross_entropy(out, y_t[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 250 == 0:
            acc = float((out.argmax(1) == y_t[idx]).float().mean())
            print(f"  step {step + 1}/{steps}: loss {float(loss):.4f}, batch acc {acc:.3f}", flush=True)
    return model.eval()


def predict(model, ids, mask, batch=500):
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(ids[i:i + batch]), torch.from_numpy(mask[i:i + batch])).numpy()
                               for i in range(0, len(ids), batch)])


def references(model, ids, mask):
    """(logits, target, embeddings, d logits[i, target[i]] / d embeddings[i]) with torch.autograd,
    at the output of the token embedding (a forward hook)."""
    captured = {}

    def hook(_m, _i, out):
        out.retain_grad()
        captured["emb"] = out

    handle = model.tok.register_forward_hook(hook)
    try:
        out = model(torch.from_numpy(ids), torch.from_numpy(mask))
    finally:
        handle.remove()
    target = out.argmax(1)
    out.gather(1, target[:, None]).sum().backward()
    emb = captured["emb"]
    return out.detach().numpy(), target.numpy(), emb.detach().numpy(), emb.grad.numpy()


def main() -> None:
    os.makedirs(MODELS, exist_ok=True)
    tr = make_text(N_TRAIN, 0)
    te = make_text(N_TEST, 1)
    ref = make_text(N_REF, 2)
    torch.manual_seed(0)
    model = TextTransformer()
    t0 = time.time()
    train(model, tr[0], tr[1], tr[2])
    seconds = time.time() - t0
    print(f"  trained in {seconds:.0f} s", flush=True)
    path = os.path.join(MODELS, NAME + ".onnx")
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "logits": {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(model, (torch.from_numpy(ref[0]), torch.from_numpy(ref[1])), path, dynamo=False,
                          opset_version=17, input_names=["input_ids", "attention_mask"], output_names=["logits"],
                          dynamic_axes=axes)
    sess = session(path)

    def ort(ids, mask):
        return np.concatenate([sess.run(None, {"input_ids": ids[i:i + 500], "attention_mask": mask[i:i + 500]})[0]
                               for i in range(0, len(ids), 500)])

    fw_test = predict(model, te[0], te[1])
    ort_test = ort(te[0], te[1])
    diff_test = float(np.abs(ort_test - fw_test).max())
    acc = float((ort_test.argmax(1) == te[2]).mean())
    logits, target, emb, grad = references(model, ref[0], ref[1])
    diff_ref = float(np.abs(ort(ref[0], ref[1]) - logits).max())
    # a shorter sequence axis and batch 1 run too (dynamic axes)
    short = float(np.abs(ort(ref[0][:1, :12], ref[1][:1, :12]) - predict(model, ref[0][:1, :12], ref[1][:1, :12])).max())
    for what, d in (("test set", diff_test), ("reference", diff_ref), ("batch 1, 12 tokens", short)):
        if not d <= 1e-4 * max(1.0, float(np.abs(logits).max())):
            raise SystemExit(f"FAIL {NAME}: onnxruntime vs torch on {what}: max abs diff {d:.3g}")
    if acc < 0.95:
        raise SystemExit(f"FAIL {NAME}: held-out accuracy {acc:.4f} < 0.95")
    table = model.tok.weight.detach().numpy()
    (wrt,) = embedding_tensors(path, table, "input_ids")
    np.savez_compressed(
        os.path.join(MODELS, NAME + ".npz"), input_ids=ref[0], attention_mask=ref[1], target=target.astype(np.int64),
        relevant=ref[3], label=ref[2], logits=logits, embeddings=emb, gradient=grad,
        input_x_gradient=(grad * emb).astype(np.float32), wrt=np.array(wrt), layout=np.array("tokens"),
        ends_in_softmax=np.array(False), accuracy=np.array(acc))
    with open(os.path.join(MODELS, NAME + ".vocab.txt"), "w") as f:
        f.write("\n".join(VOCAB) + "\n")
    info = graph_summary(path)
    info.update(framework=f"PyTorch {torch.__version__.split('+')[0]}",
                exporter="torch.onnx (TorchScript, dynamo=False)", layout="tokens", accuracy=acc, n_test=N_TEST,
                max_abs_diff_ref=diff_ref, max_abs_diff_test=diff_test, ends_in_softmax=False,
                command="python tools/export_text.py", train_seconds=round(seconds, 1), wrt=wrt,
                vocabulary=NAME + ".vocab.txt",
                notes=("Text transformer on the synthetic 'A before B' task (class 1 when token A comes "
                       "before token B among 6-15 filler words; `relevant` marks A and B): token embedding "
                       "64x32 + learned positions, 2 pre-LN blocks (4-head attention with an additive "
                       "padding mask, MLP 32-64-32, exact GELU), LayerNorm, Linear 32-2 on [CLS]. "
                       f"Word-embedding output (the Gather from `tok.weight`): `{wrt}`."),
                onnx_bytes=os.path.getsize(path), npz_bytes=os.path.getsize(os.path.join(MODELS, NAME + ".npz")))
    record(NAME, info)
    print(f"{NAME}: acc {acc:.4f}, ort diff {diff_ref:.2g}/{diff_test:.2g}, wrt {wrt}, ops {info['ops']}")


if __name__ == "__main__":
    main()
