"""LRP conserves relevance layer by layer on canonized CNNs (issue 12, item 5).

Under ``lrp.epsilon_plus_flat``, at every node: sum R_out - sum R_in equals what the rule
itself takes away, the share of the bias and of the stabilizer, computed here separately from
the layer's forward values (0 for a node without a rule, a Pass, and a layer without bias up
to its stabilizer); and no node's sum |R| exceeds 10 |f_t|. The light model-zoo CNNs (random
weights, as test_zoo.py) are slow; the bundled models run in CI.
"""
from __future__ import annotations

import functools
import pathlib

import numpy as np
import pytest

import onnxattr
from onnxattr import engine
from onnxattr.attribution.registry import plan_of
from onnxattr.rules import Epsilon, Flat, Pass, ZPlus
from zoo import LIGHT, light_model, randomized

MODELS = pathlib.Path(__file__).parent.parent / "models"
#: the bundled CNNs; the transformers (text and ViT) get their own rules (AttnLRP), not these
BUNDLED = sorted(p.stem for p in MODELS.glob("*.onnx") if not any(k in p.stem for k in ("text", "vit")))
REL = 1e-5


def _stabilized(z: np.ndarray, eps: float) -> np.ndarray:
    return z + np.where(z >= 0, eps, -eps)


def rule_share(node, rule, inputs: list, live: list[bool], r: np.ndarray) -> float:
    """sum R_out - sum R_in that ``rule`` defines at ``node``: sum_j R_j (d_j - c_j) / d_j with
    d_j the stabilized denominator and c_j the part of z_j that the inputs' relevance carries
    (z_j minus the bias, or minus the constant operands of an Add; integer operands, such as a
    ReduceMean's axes, are kept)."""
    f = lambda *a: np.asarray(node.op.forward(*a)[0][0], dtype=np.float64)  # noqa: E731
    if rule is None or isinstance(rule, Pass):
        return 0.0
    x, rest = inputs[0], inputs[1:]
    if isinstance(rule, Flat):
        z = f(np.ones_like(x), np.ones_like(rest[0]))
        c = z
        eps = rule.epsilon
    elif isinstance(rule, ZPlus):
        pos, neg = np.maximum, np.minimum
        w = rest[0]
        b = rest[1] if len(rest) > 1 else None
        c = f(pos(x, 0), pos(w, 0)) + f(neg(x, 0), neg(w, 0))
        z = c + (0 if b is None else f(np.zeros_like(x), w, pos(b, 0)))
        eps = rule.epsilon
    elif isinstance(rule, Epsilon):
        z = f(*inputs)
        if node.kind == "linear":
            c = f(*inputs[:2])
        else:
            c = f(*[a if is_live or a is None or a.dtype.kind != "f" else np.zeros_like(a) for a, is_live in zip(inputs, live)])
        eps = rule.epsilon
    else:
        raise AssertionError(f"no share formula for {rule!r}")
    d = _stabilized(z, eps)
    return float((r.astype(np.float64) * (d - c) / d).sum())


def budget(model: onnxattr.Model, x: np.ndarray, target: int):
    """(relevance at the input, f_t, rows): per node (name, op, sum R_out, sum R_in, the rule's
    share, sum |R_in|, sum |R_out|), for the first sample of ``x``."""
    graph = model.graph
    plan = plan_of(model, "lrp.epsilon_plus_flat", {}, "test")
    names = {t for n in graph.nodes for t in n.inputs if t and t not in model.params}
    values = engine.forward(graph, model.params, {model.input_name: x}, fetch=sorted(names)).values
    f_t = float(values[graph.output].reshape(x.shape[0], -1)[0, target])
    rows = []

    def observe(node, grads_out, grads_in):
        r = np.asarray(grads_out[0], dtype=np.float64)
        live = [t in graph.live for t in node.inputs]
        gin = [np.asarray(g, dtype=np.float64) for g, is_live in zip(grads_in, live) if is_live and g is not None]
        inputs = [np.asarray(values[t] if t in values else model.params[t]) if t else None for t in node.inputs]
        share = rule_share(node, plan.rules.get(node.name), inputs, live, r)
        rows.append((node.name, node.op_type, r.sum(), sum(g.sum() for g in gin), share,
                     sum(np.abs(g).sum() for g in gin), np.abs(r).sum()))

    out = model.propagate(model.xp.asarray(x), np.array([target]), plan, observe)
    return np.asarray(out[model.input_name]), f_t, rows


@functools.lru_cache(maxsize=None)
def measured(name: str) -> tuple[list[str], float, float]:
    """(budget failures, max over nodes of sum |R_in| / |f_t|, sum R_input / f_t) of one model:
    a bundled one (its first reference sample) or a light zoo CNN (random weights and input)."""
    if name in BUNDLED:
        model = onnxattr.load(MODELS / f"{name}.onnx")
        x = np.load(MODELS / f"{name}.npz")["input"][:1]
    else:
        model = onnxattr.load(randomized(light_model(name), seed=1))
        shape = tuple(d if isinstance(d, int) else 1 for d in model.graph.input.shape)
        x = np.random.default_rng(2).uniform(0, 1, (1,) + shape[1:]).astype(np.float32)
    target = int(np.argmax(model(x)[0]))
    rel, f_t, rows = budget(model, x, target)
    bad = [f"{node} ({op}): out {s_out:.6g} in {s_in:.6g} share {share:.6g}"
           for node, op, s_out, s_in, share, _, abs_out in rows
           if abs((s_out - s_in) - share) > REL * max(abs_out, abs(f_t))]
    return bad, max(r[5] for r in rows) / abs(f_t), float(rel.sum() / f_t)


# Epsilon (1e-6) on the dense layers spreads relevance of both signs: sum |R| there is 15-60 |f_t|.
EPSILON_MASS = pytest.mark.xfail(strict=True, reason="epsilon-LRP on the dense layers: sum |R| > 10 |f_t|")
# LRN passes relevance (the LRP base map's Pass), so the zoo's LRN nets conserve too.
ZOO_BUDGET = [pytest.param(n, marks=[pytest.mark.slow]) for n in LIGHT]
MASS = [pytest.param(n, marks=[EPSILON_MASS] if n in ("jax_cnn_op23", "torch_vgg_op11") else [])
        for n in BUNDLED] + [
    pytest.param(n, marks=[pytest.mark.slow] + ([EPSILON_MASS] if n in ("bvlc_alexnet", "zfnet512", "vgg19") else []))
    for n in LIGHT]


@pytest.mark.parametrize("name", BUNDLED + ZOO_BUDGET)
def test_every_node_keeps_what_its_rule_does_not_take(name):
    """sum R_out - sum R_in = the bias's and stabilizer's share, 0 where the rule has none."""
    bad, _, ratio = measured(name)
    assert not bad, "\n".join(bad[:20])
    assert np.isfinite(ratio)


@pytest.mark.parametrize("name", MASS)
def test_no_node_carries_more_than_ten_times_the_logit(name):
    _, mass, _ = measured(name)
    assert mass <= 10
