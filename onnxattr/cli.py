"""The ``onnxattr`` command.

``onnxattr explain MODEL INPUT... --method M`` writes heatmaps (PNG) and raw maps (.npy);
``onnxattr inspect MODEL`` lists op support (exit 1 if a node is unsupported), the layers with
their shapes and the rule each gets. Every error a user can cause prints one line, with no
traceback, and exits with status 2.
"""
from __future__ import annotations

import argparse
import ast
import json
import pathlib
import sys
from typing import Any, Sequence

import numpy as np

from . import attribute, load, methods
from .errors import OnnxAttrError, OptionError
from .graph import op_support, read_model
from .inputs import load_batch
from .methods.registry import lookup, resolve_options
from .layout import check_layout
from .viz import heatmap, save_png, to_2d, to_image


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
    return tuple(float(v) for v in text.split(","))


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--input-name", help="graph input to attribute to (models with several)")
    p.add_argument("--output-name", help="tensor to explain (default: the logits)")


def add_input_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layout", choices=["NCHW", "NHWC"], help="image layout (default: inferred)")
    p.add_argument("--resize", type=int, nargs=2, metavar=("H", "W"), help="resize images to H W")
    p.add_argument("--mean", type=_floats, default=(0.0,), help="per-channel mean, e.g. 0.485,0.456,0.406")
    p.add_argument("--std", type=_floats, default=(1.0,), help="per-channel std, e.g. 0.229,0.224,0.225")


def cmd_explain(args: argparse.Namespace) -> int:
    model = load(args.model, device=args.device, input_name=args.input_name, output_name=args.output_name)
    x = load_batch(args.inputs, model.input_shape, args.layout, tuple(args.resize) if args.resize else None,
                   args.mean, args.std)
    options = dict(parse_option(o) for o in args.option)
    target = None if args.target is None else (args.target[0] if len(args.target) == 1 else args.target)
    a = attribute(model, x, target=target, method=args.method, **options)
    logits = model(x)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.method.replace(".", "_")
    np.save(out / f"{stem}.npy", a)
    targets = logits.reshape(len(x), -1).argmax(1) if target is None else np.broadcast_to(target, (len(x),))
    written = [str(out / f"{stem}.npy")]
    if x.ndim == 4:
        layout = check_layout(args.layout, x.shape)
        maps = to_2d(a, layout)
        for i in range(len(x)):
            path = out / f"{stem}_{i}_target{int(targets[i])}.png"
            save_png(path, heatmap(maps[i], to_image(x[i], layout)), scale=max(1, 256 // maps.shape[-1]))
            written.append(str(path))
    print(json.dumps({"method": args.method, "targets": [int(t) for t in targets], "files": written}))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    proto = read_model(args.model)
    support = op_support(proto)
    missing = [s for s in support if not s.supported]
    summary: dict[str, Any] = {
        "model": args.model,
        "opset": next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None),
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
        "nodes": len(support),
        "unsupported": [{"node": s.node, "op_type": s.op_type, "reason": s.reason} for s in missing],
    }
    if not missing:
        model = load(proto, input_name=args.input_name, output_name=args.output_name)
        options = dict(parse_option(o) for o in args.option)
        bp = method_rules(model, args.method, options)
        g = model.graph
        summary.update(
            input={"name": g.input.name, "shape": list(g.input.shape or []), "dtype": str(g.input.dtype)},
            output=g.output,
            dropped_softmax=g.dropped_softmax,
            method=args.method,
            layers=[
                {
                    "node": n.name,
                    "op_type": n.op_type,
                    "kind": n.kind,
                    "inputs": [t for t in n.inputs if t and t not in g.constants],
                    "shape": [d for d in g.shapes.get(n.outputs[0], ())] if n.outputs[0] in g.shapes else None,
                    "rule": _rule_name(bp, n),
                }
                for n in g.nodes
            ],
        )
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(_inspect_text(summary))
    return 1 if missing else 0


def method_rules(model: Any, method: str, options: dict[str, Any]) -> Any:
    """The Backprop (rules and seed) of a backprop method; OptionError for other methods."""
    m = lookup(method)
    if m.backprop is None:
        raise OptionError(f"method {method!r} has no per-layer rules; choose a backprop method")
    return m.backprop(model, **resolve_options(m, options))


def _rule_name(bp: Any, node: Any) -> str:
    rule = bp.rule_for(node) if bp.rule_for is not None else None
    return "gradient" if rule is None else repr(rule)


def _inspect_text(s: dict[str, Any]) -> str:
    lines = [f"{s['model']}: opset {s['opset']}, {s['nodes']} nodes, producer {s['producer'] or '?'}"]
    if s["unsupported"]:
        lines.append(f"{len(s['unsupported'])} unsupported node(s):")
        lines += [f"  {u['node']} ({u['op_type']}): {u['reason']}" for u in s["unsupported"]]
        return "\n".join(lines)
    lines.append("all nodes supported")
    lines.append(f"input {s['input']['name']} {s['input']['shape']} {s['input']['dtype']}; "
                 f"explained output {s['output']}" + (f" (a final {s['dropped_softmax']} dropped)" if s["dropped_softmax"] else ""))
    lines.append(f"layers after folding and canonization, with the rules of {s['method']}:")
    w = max(len(layer["node"]) for layer in s["layers"])
    for layer in s["layers"]:
        shape = "x".join("N" if d is None else str(d) for d in layer["shape"]) if layer["shape"] else "?"
        lines.append(f"  {layer['node']:<{w}}  {layer['op_type']:<18} {shape:<16} {layer['rule']}")
    return "\n".join(lines)


def cmd_methods(args: argparse.Namespace) -> int:
    for name, entry in methods().items():
        print(f"{name}: {entry['doc']}")
        for opt, o in entry["options"].items():
            print(f"    {opt} = {o['default']!r}: {o['doc']}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="onnxattr", description="Explain and audit ONNX models.")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("explain", help="attribution maps for inputs: heatmaps (PNG) and raw maps (.npy)")
    add_model_args(e)
    e.add_argument("inputs", nargs="+", help="image files (PNG/JPEG) and/or .npy/.npz batches")
    e.add_argument("--method", default="gradient", help="see `onnxattr methods`")
    e.add_argument("--target", type=int, nargs="+", help="class per sample, or one for all (default: argmax)")
    e.add_argument("-O", "--option", action="append", default=[], metavar="NAME=VALUE",
                   help="a method option, e.g. -O steps=64 (repeatable)")
    e.add_argument("--out", default="heatmaps", help="output folder")
    add_input_args(e)
    e.set_defaults(run=cmd_explain)

    i = sub.add_parser("inspect", help="op support, layers, shapes, and the rule each layer gets")
    add_model_args(i)
    i.add_argument("--method", default="lrp.epsilon_plus_flat", help="show this method's rule per layer")
    i.add_argument("-O", "--option", action="append", default=[], metavar="NAME=VALUE", help="a method option")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(run=cmd_inspect)

    m = sub.add_parser("methods", help="list the methods and their options")
    m.set_defaults(run=cmd_methods)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.run(args)
    except OnnxAttrError as e:
        print(f"onnxattr: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
