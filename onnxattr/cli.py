"""The ``onnxattr`` command.

``onnxattr explain MODEL INPUT... --method M`` writes heatmaps (PNG) and raw maps (.npy); for a
text model (``--wrt embeddings``, .npz inputs with one array per graph input) the tokens coloured
by relevance (an HTML page and a PNG per input);
``onnxattr inspect MODEL`` lists op support (exit 1 if a node is unsupported), the layers with
their shapes, the canonized patterns, the ``--wrt`` tensor and the inputs held fixed, and the rule
each layer gets; ``onnxattr audit MODEL --data ...`` runs methods over a data
sample and writes report.html and report.json (exit 1 if a gate fails); ``onnxattr methods``
lists the methods.

Exit status: 0 success; 1 a gate failed (audit) or a node is unsupported (inspect); 2 an error
the user can fix (bad file, option, input; one line ``onnxattr: error: ...``, no traceback);
3 an internal error (one line; ``ONNXATTR_DEBUG=1`` shows the traceback); 130 interrupted.
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import pathlib
import sys
import textwrap
import traceback
from typing import Any, Sequence

import numpy as np

from . import attribute, load, methods
from .backend import check_device, to_host
from .canonize import summary as canonized_line
from .errors import OnnxAttrError, OptionError
from .graph import op_support, read_model
from .layout import check_layout
from .text import escape_text
from .attribution.registry import lookup, plan_of
from .cluster.ray_import import import_ray
from .inputs import load_vocab, read_feeds, read_inputs
from .report import ANALYSES, CHECKS, DEFAULT_METHODS, METRICS, Progress, audit
from .report.run import producer
from .report.text import write_text_explanation
from .version import __version__
from .viz import heatmap_picture, save_png


def parse_option(text: str) -> tuple[str, Any]:
    """``name=value`` with value a Python literal (number, tuple, string) or a bare string."""
    if "=" not in text:
        raise OptionError(f"option {text!r} is not of the form name=value")
    name, value = text.split("=", 1)
    try:
        return name.strip(), ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name.strip(), value


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


def method_options(texts: Sequence[str], names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``-O [METHOD:]NAME=VALUE`` options for several methods: with METHOD, for that method;
    without, for every method that has an option NAME (OptionError where none has)."""
    out: dict[str, dict[str, Any]] = {n: {} for n in names}
    for text in texts:
        key, value = parse_option(text)
        method, _, opt = key.rpartition(":")
        if method:
            if method not in out:
                raise OptionError(f"option {text!r} is for method {method!r}, which is not among {list(names)}")
            out[method][opt] = value
            continue
        takers = [n for n in names if opt in lookup(n).options]
        if not takers:
            raise OptionError(f"none of the methods {list(names)} has an option {opt!r} (see `onnxattr methods`)")
        for n in takers:
            out[n][opt] = value
    return out


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--input-name", help="graph input to attribute to (models with several)")
    p.add_argument("--output-name", help="tensor to explain (default: the logits)")
    p.add_argument("--wrt", help="attribute to a tensor inside the graph: its name, or 'embeddings' "
                                 "(the word-embedding output of a text model)")


def add_input_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layout", choices=["NCHW", "NHWC"], help="image layout (default: inferred)")
    p.add_argument("--resize", type=int, nargs=2, metavar=("H", "W"), help="resize images to H W")
    p.add_argument("--mean", type=_floats, default=(0.0,), help="per-channel mean, e.g. 0.485,0.456,0.406")
    p.add_argument("--std", type=_floats, default=(1.0,), help="per-channel std, e.g. 0.229,0.224,0.225")
    p.add_argument("--vocab", metavar="FILE",
                   help="text models: token strings from a tokenizer.json or a file with one token per line "
                        "(line i = id i); ids are shown otherwise")


def cmd_explain(args: argparse.Namespace) -> int:
    model = load(args.model, device=args.device, input_name=args.input_name, output_name=args.output_name, wrt=args.wrt)
    options = dict(parse_option(o) for o in args.option)
    target = None if args.target is None else (args.target[0] if len(args.target) == 1 else args.target)
    if args.heatmaps < 0:
        raise OptionError(f"--heatmaps must be 0 or more, got {args.heatmaps}")
    fed = model.graph.needed()
    if model.graph.token_input is not None or len(fed) > 1:
        return explain_text(args, model, options, target)
    if args.vocab is not None:
        raise OptionError("--vocab is for text models (fed token ids, attributed with --wrt embeddings)")
    x = read_inputs(args.inputs, model, args.layout, tuple(args.resize) if args.resize else None, args.mean, args.std)
    feeds = x if fed == [model.input_name] else {fed[0]: x}  # else a vision model attributed at a layer (--wrt)
    if feeds is not x:  # the maps are drawn over the layer's activation
        x = to_host(model.at_wrt(model.check_feeds(feeds))[model.input_name])
    shown = min(args.heatmaps, len(x))
    bar = Progress(1 + shown, not args.quiet, title="onnxattr explain")
    try:
        bar.label(f"{args.method}: attribution of {len(x)} input(s)")
        a = attribute(model, feeds, target=target, method=args.method, **options)
        bar.step()
        logits = model(feeds)
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = args.method.replace(".", "_")
        np.save(out / f"{stem}.npy", a)
        targets = logits.reshape(len(x), -1).argmax(1) if target is None else np.broadcast_to(target, (len(x),))
        written = [str(out / f"{stem}.npy")]
        layout = check_layout(args.layout if feeds is x else None, x.shape) if x.ndim == 4 else None
        for i in range(shown):
            bar.label(f"heatmap {i + 1} of {shown}")
            path = out / f"{stem}_{i}_target{int(targets[i])}.png"
            save_png(path, heatmap_picture(a[i], x[i], layout, size=256))
            written.append(str(path))
            bar.step()
    finally:
        bar.close()
    print(json.dumps({"schema": "onnxattr.explain/1", "method": args.method, "targets": [int(t) for t in targets],
                      "files": written, "heatmaps_left_out": len(x) - shown}))
    return 0


def explain_text(args: argparse.Namespace, model: Any, options: dict[str, Any], target: Any) -> int:
    """``explain`` for a model fed a dict (text): .npz feeds in, the maps (.npy, and the token
    scores), one HTML page and a PNG per shown input of the tokens coloured by relevance."""
    vocab = None if args.vocab is None else load_vocab(args.vocab)
    data = read_feeds(args.inputs, model)
    feeds = model.check_feeds(data.feeds, "inputs")
    if target is None and data.target is not None:
        target = data.target
    n = len(data)
    shown = min(args.heatmaps, n)
    bar = Progress(2, not args.quiet, title="onnxattr explain")
    try:
        bar.label(f"{args.method}: attribution of {n} input(s)")
        a = attribute(model, feeds, target=target, method=args.method, **options)
        bar.step()
        targets = model.resolve_target(model.check_target(target, n), model(feeds), feeds)
        bar.label("pictures")
        result = write_text_explanation(pathlib.Path(args.out), args.method.replace(".", "_"), model, feeds, a,
                                        targets, data.relevant, vocab, shown)
        bar.step()
    finally:
        bar.close()
    print(json.dumps({"schema": "onnxattr.explain/1", "method": args.method, "targets": np.asarray(targets).tolist(),
                      **result, "heatmaps_left_out": n - sum(f.endswith(".png") for f in result["files"])}))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    check_device(args.device)  # refused where the device is missing, as explain and audit do
    proto = read_model(args.model)
    support = op_support(proto)
    missing = [s for s in support if not s.supported]
    summary: dict[str, Any] = {
        "schema": "onnxattr.inspect/1",
        "model": args.model,
        "opset": next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None),
        "producer": producer(proto),
        "nodes": len(support),
        "supported": len(support) - len(missing),
        "op_types": {op: {"count": sum(s.op_type == op for s in support),
                          "supported": all(s.supported for s in support if s.op_type == op)}
                     for op in sorted({s.op_type for s in support})},
        "unsupported": [{"node": s.node, "op_type": s.op_type, "reason": s.reason} for s in missing],
    }
    if not missing:
        model = load(proto, device=args.device, input_name=args.input_name, output_name=args.output_name, wrt=args.wrt)
        options = dict(parse_option(o) for o in args.option)
        plan = plan_of(model, args.method, options, "inspect")
        g = model.graph
        summary.update(
            input={"name": g.input.name, "shape": list(g.input.shape or []), "dtype": str(g.input.dtype)},
            output=g.output,
            dropped_softmax=g.dropped_softmax,
            canonized=canonized_line(g),
            canonized_nodes=[{"pattern": p, "nodes": list(nodes)} for p, nodes in g.canonized],
            wrt=None if g.head is None and args.wrt is None else {
                "name": g.input.name, "shape": list(g.input.shape or []), "dtype": str(g.input.dtype),
                "computed_by": len(g.head.nodes) if g.head is not None else 0, "token_input": g.token_input},
            fixed_inputs=[{"name": i.name, "shape": list(i.shape or []), "dtype": str(i.dtype)}
                          for i in model.inputs if i.name != g.input.name and i.name in g.needed()],
            method=args.method,
            layers=[
                {
                    "node": n.name,
                    "op_type": n.op_type,
                    "kind": n.kind,
                    "inputs": [t for t in n.inputs if t and t not in g.constants],
                    "shape": [d for d in g.shapes.get(n.outputs[0], ())] if n.outputs[0] in g.shapes else None,
                    "rule": plan.rule_name(n.name),
                }
                for n in g.nodes
            ],
        )
    if args.json:
        print(json.dumps(summary, indent=2))  # JSON escapes control characters itself
    else:
        print(_inspect_text(printable(summary)))
    return 1 if missing else 0


def printable(v: Any) -> Any:
    """``v`` with every string in it (in lists and dicts too) passed through
    :func:`~onnxattr.text.escape_text`, so that names from a model cannot drive the terminal."""
    if isinstance(v, str):
        return escape_text(v)
    if isinstance(v, dict):
        return {printable(k): printable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [printable(x) for x in v]
    return v


def _inspect_text(s: dict[str, Any]) -> str:
    lines = [f"{s['model']}: opset {s['opset']}, {s['nodes']} nodes, producer {s['producer'] or '?'}"]
    ops = s["op_types"]
    ok = ", ".join(f"{op} {v['count']}" for op, v in ops.items() if v["supported"]) or "none"
    lines.append(f"op support: {s['supported']} of {s['nodes']} nodes supported; supported op types: {ok}")
    if s["unsupported"]:
        lines.append(f"{len(s['unsupported'])} unsupported node(s):")
        lines += [f"  {u['node']} ({u['op_type']}): {u['reason']}" for u in s["unsupported"]]
        return "\n".join(lines)
    lines.append("all nodes supported")
    lines.append(s["canonized"])
    if s["wrt"] is not None:
        w = s["wrt"]
        lines.append(f"attributed at wrt tensor {w['name']} {w['shape']} {w['dtype']}, computed by {w['computed_by']} "
                     f"node(s)" + (f" from token ids {w['token_input']}" if w["token_input"] else ""))
    else:
        lines.append(f"input {s['input']['name']} {s['input']['shape']} {s['input']['dtype']}")
    fixed = ", ".join(f"{i['name']} {i['shape']} {i['dtype']}" for i in s["fixed_inputs"])
    if fixed:
        lines.append(f"inputs held fixed at the values given: {fixed}")
    lines.append(f"explained output {s['output']}" + (f" (a final {s['dropped_softmax']} dropped)" if s["dropped_softmax"] else ""))
    lines.append(f"layers after folding and canonization, with the rules of {s['method']}:")
    w = max(len(layer["node"]) for layer in s["layers"])
    for layer in s["layers"]:
        shape = "x".join("N" if d is None else str(d) for d in layer["shape"]) if layer["shape"] else "?"
        lines.append(f"  {layer['node']:<{w}}  {layer['op_type']:<18} {shape:<16} {layer['rule']}")
    return "\n".join(lines)


def cmd_audit(args: argparse.Namespace) -> int:
    names = list(dict.fromkeys(args.method or DEFAULT_METHODS))
    for n in names:
        lookup(n)
    gates = list(args.fail_on) + list(args.gate)
    if args.ray is not None:
        import_ray()  # without Ray: how to install it, before any work
    elif args.resume or args.workers is not None:
        raise OptionError("--resume and --workers belong to a cluster run: add --ray [ADDRESS]")
    report = audit(
        args.model, args.data, methods=names, target=args.target, sample=args.sample, heatmaps=args.heatmaps,
        gates=gates, progress=not args.quiet, options=method_options(args.option, names),
        analyses=[a for a in ANALYSES if a not in set(args.skip)], curve_steps=args.curve_steps,
        n_subsets=args.n_subsets, n_sizes=args.n_sizes, runtime=args.runtime, seed=args.seed,
        randomization_threshold=args.randomization_threshold, class_threshold=args.class_threshold,
        layout=args.layout, resize=tuple(args.resize) if args.resize else None, mean=args.mean, std=args.std,
        device=args.device, input_name=args.input_name, output_name=args.output_name, wrt=args.wrt, vocab=args.vocab,
        engine="local" if args.ray is None else "ray", address=args.ray or None, resume=args.resume,
        workers=args.workers, batch_size=args.batch_size, out_dir=args.out,
    )
    paths = {"html": pathlib.Path(args.out) / "report.html", "json": pathlib.Path(args.out) / "report.json"}
    if not args.quiet:
        print(report.summary())
        print(f"wrote {paths['html']} and {paths['json']}")
    elif not report.passed:  # -q keeps stdout empty, but a failure is always said
        for g in report.failed_gates:
            print(f"onnxattr: gate {g.gate} [{g.method}] failed: {g.detail}", file=sys.stderr)
    return 0 if report.passed else 1


def cmd_methods(args: argparse.Namespace) -> int:
    for name, entry in methods().items():
        print(f"{name}: {entry['doc']}")
        for opt, o in entry["options"].items():
            print(f"    {opt} = {o['default']!r}: {o['doc']}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="onnxattr", description="Explain and audit ONNX models.")
    p.add_argument("--version", action="version", version=f"onnxattr {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("explain", help="attribution maps for inputs: heatmaps (PNG) and raw maps (.npy)")
    add_model_args(e)
    e.add_argument("inputs", nargs="+", help="image files (PNG/JPEG) and/or .npy/.npz batches; for a text model "
                                              ".npz files with one array per graph input (and optional "
                                              "'target' and 'relevant')")
    e.add_argument("--method", default="gradient", help="see `onnxattr methods`")
    e.add_argument("--target", type=int, nargs="+", help="class per sample, or one for all (default: argmax)")
    e.add_argument("-O", "--option", action="append", default=[], metavar="NAME=VALUE",
                   help="a method option, e.g. -O steps=64 (repeatable)")
    e.add_argument("--out", default="heatmaps", help="output folder")
    e.add_argument("--heatmaps", type=int, default=16,
                   help="inputs drawn as heatmap PNGs, the first ones (default 16; 0: none; the .npy has all)")
    e.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_input_args(e)
    e.set_defaults(run=cmd_explain)

    i = sub.add_parser("inspect", help="op support, layers, shapes, and the rule each layer gets")
    add_model_args(i)
    i.add_argument("--method", default="lrp.epsilon_plus_flat", help="show this method's rule per layer")
    i.add_argument("-O", "--option", action="append", default=[], metavar="NAME=VALUE", help="a method option")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(run=cmd_inspect)

    a = sub.add_parser(
        "audit", help="run methods over a data set: sanity checks, faithfulness, spectra; report.html/json",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=AUDIT_HELP, epilog=_gate_help())
    add_model_args(a)
    a.add_argument("--data", nargs="+", required=True, metavar="PATH",
                   help="a .npy/.npz batch, image files, Parquet files (an array or image column), or folders of them")
    a.add_argument("--method", action="append", metavar="M",
                   help=f"a method to audit (repeatable; default: {' '.join(DEFAULT_METHODS)})")
    a.add_argument("-O", "--option", action="append", default=[], metavar="[METHOD:]NAME=VALUE",
                   help="a method option, for every method that has it or for METHOD only (repeatable)")
    a.add_argument("--target", type=int, help="class explained for every input (default: each input's argmax)")
    a.add_argument("--gate", action="append", default=[], metavar="EXPR",
                   help="a requirement, e.g. 'insertion.auc>=0.5' (repeatable; see below)")
    a.add_argument("--fail-on", action="append", default=[], choices=list(CHECKS) + ["sanity"],
                   help="fail when this sanity check fails (the same as --gate CHECK)")
    a.add_argument("--sample", type=int, default=8, help="inputs drawn from the data (seeded; 0: all; default 8)")
    a.add_argument("--heatmaps", type=int, default=4, help="sampled inputs shown as heatmaps (default 4)")
    a.add_argument("--skip", action="append", default=[], choices=list(ANALYSES), help="leave out an analysis")
    a.add_argument("--curve-steps", type=int, default=20, help="points of the deletion/insertion curves (default 20)")
    a.add_argument("--n-subsets", type=int, default=20, help="Sensitivity-n subsets per size (default 20)")
    a.add_argument("--n-sizes", type=int, default=6, help="Sensitivity-n subset sizes (default 6)")
    a.add_argument("--randomization-threshold", type=float, default=0.5,
                   help="the randomization check passes below this mean |Spearman| (default 0.5)")
    a.add_argument("--class-threshold", type=float, default=0.5,
                   help="the class-sensitivity check passes below this mean Spearman (default 0.5)")
    a.add_argument("--runtime", choices=["onnxruntime", "onnxattr"], default="onnxruntime",
                   help="forward passes of the perturbation metrics (default onnxruntime)")
    a.add_argument("--seed", type=int, default=0, help="seed of the sample, subsets and random weights")
    a.add_argument("--out", default="audit", help="output folder (default: audit)")
    a.add_argument("--batch-size", type=int, default=16,
                   help="samples computed together (default 16); the values do not depend on it")
    a.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="run on a Ray cluster: the one at ADDRESS, else the running one, else a local one "
                        "(pip install 'onnxattr[ray]'); per-sample results go to OUT/shards")
    a.add_argument("--workers", type=int, help="with --ray: workers in the pool (default: one per GPU, else per CPU)")
    a.add_argument("--resume", action="store_true",
                   help="with --ray: continue an interrupted run from OUT/shards, computing only missing samples")
    a.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar and no summary; failing gates are still printed on stderr")
    add_input_args(a)
    a.set_defaults(run=cmd_audit)

    m = sub.add_parser("methods", help="list the methods and their options")
    m.set_defaults(run=cmd_methods)
    return p


AUDIT_HELP = """\
Run attribution methods over a sample of a data set and write report.html and report.json
(heatmaps, sanity checks with pass/fail per method, faithfulness curves and scores, spectra,
the model summary). The exit status is 1 when a gate fails, for CI."""

def _gate_help() -> str:
    metrics = "\n".join(
        textwrap.fill(f"{k:<27} {v[2]}" + (f"; {v[1]} is better" if v[1] else ""), 96,
                      initial_indent="  ", subsequent_indent=" " * 30)
        for k, v in METRICS.items())
    return f"""\
gates (--gate EXPR, repeatable; quote them: the shell reads < and > as redirections):
  [METHOD:]CHECK              the sanity check passes; CHECK is randomization, class_sensitivity,
                              or sanity (both)
  [METHOD:]METRIC OP NUMBER   the metric compares true; OP is one of < <= > >=
  Without METHOD a gate applies to every audited method. A value that could not be computed
  fails its gate.

metrics (means over the sampled inputs):
{metrics}

checks:
  randomization               passes when randomization.spearman < --randomization-threshold
  class_sensitivity           passes when class_sensitivity.spearman < --class-threshold

examples:
  onnxattr audit model.onnx --data batch.npz --gate randomization --gate 'insertion.auc>=0.5'
  onnxattr audit model.onnx --data images/ --resize 224 224 --mean 0.485,0.456,0.406 \\
      --std 0.229,0.224,0.225 --method integrated_gradients -O steps=16 --fail-on sanity

exit status: 0 every gate passed, 1 a gate failed, 2 an error in the command or its inputs"""


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except OnnxAttrError as e:
        print(f"onnxattr: error: {printable(str(e))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # stdout closed early (| head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:  # files that cannot be read or written
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        print(f"onnxattr: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("onnxattr: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: one line, and the traceback on request
        if os.environ.get("ONNXATTR_DEBUG"):
            traceback.print_exc()
        print(f"onnxattr: internal error: {type(e).__name__}: {e} (please report it; set ONNXATTR_DEBUG=1 "
              f"for the traceback)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
