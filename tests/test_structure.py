"""The package's shape: no import cycle between onnxattr's modules, every module importable as
``import onnxattr.x.y as z``, and none over 500 lines."""
import ast
import importlib
import pathlib

import networkx as nx
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / "onnxattr"
MAX_LINES = 500


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST, package: str):
    """(imported module, names) of every import outside ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if _type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, ()
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            yield name, tuple(a.name for a in node.names)
        stack.extend(ast.iter_child_nodes(node))


def import_graph() -> nx.DiGraph:
    g = nx.DiGraph()
    for name, path in MODULES.items():
        g.add_node(name)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for target, names in _imports(ast.parse(path.read_text()), package):
            if not target.startswith("onnxattr"):
                continue
            # `from . import x` imports the module x where there is one, else a name of the package
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            g.add_edges_from((name, t) for t in subs or [target] if t != name)
    return g


def test_no_import_cycle():
    g = import_graph()
    assert {("onnxattr.model", "onnxattr.engine"), ("onnxattr.analysis", "onnxattr.analysis.alignment"),
            ("onnxattr.attribution", "onnxattr.attribution.backprop"), ("onnxattr.cli", "onnxattr")} <= set(g.edges)
    assert ("onnxattr.engine", "onnxattr.rules.base") not in g.edges  # only under TYPE_CHECKING
    cycles = list(nx.simple_cycles(g))
    assert not cycles, f"import cycles: {[' -> '.join(c + c[:1]) for c in cycles[:5]]}"


#: the ``python -m onnxattr`` entry point runs the command line when imported
LIBRARY = sorted(set(MODULES) - {"onnxattr.__main__"})


@pytest.mark.parametrize("name", LIBRARY)
def test_module_imports_under_its_dotted_name(name):
    namespace: dict = {}
    exec(f"import {name} as z", namespace)
    assert namespace["z"] is importlib.import_module(name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_at_most_500_lines(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines"
