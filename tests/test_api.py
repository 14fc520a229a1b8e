"""The public API that the README documents is the one onnxattr exports (issue 17).

The README's "Public API" table lists ``onnxattr.NAME`` for every exported name; it must equal
``onnxattr.__all__``, both ways. Every other dotted ``onnxattr.x.y`` the README names must resolve:
a top-level name is exported (or a subpackage), and a deeper one is an attribute of its module.
"""
from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import pytest

import onnxattr

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
#: a dotted name, not a schema such as onnxattr.audit/2 or a file path
DOTTED = re.compile(r"\bonnxattr(?:\.[A-Za-z_]\w*)+(?![\w/])")


def api_section(text: str) -> str:
    m = re.search(r"^## Public API\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert m, "the README has no '## Public API' section"
    return m.group(1)


def documented(text: str) -> list[str]:
    """The names in the first column of the Public API table."""
    return re.findall(r"^\| `onnxattr\.(\w+)` \|", api_section(text), flags=re.M)


def test_the_api_table_is_what_onnxattr_exports():
    names = documented(README)
    assert len(names) == len(set(names)), f"listed twice: {sorted(n for n in names if names.count(n) > 1)}"
    missing = sorted(set(onnxattr.__all__) - set(names))
    extra = sorted(set(names) - set(onnxattr.__all__))
    assert not missing, f"exported but not in the README's Public API table: {missing}"
    assert not extra, f"in the README's Public API table but not exported: {extra}"
    for name in names:
        assert hasattr(onnxattr, name)


def resolve(dotted: str) -> object:
    """The object a dotted name stands for: the longest importable module prefix, then attributes."""
    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ModuleNotFoundError:
            continue
        for attr in parts[k:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


@pytest.mark.parametrize("dotted", sorted(set(DOTTED.findall(README))))
def test_every_dotted_name_in_the_readme_exists(dotted):
    top = dotted.split(".")[1]
    is_module = importlib.util.find_spec(f"onnxattr.{top}") is not None
    dunder = top.startswith("__") and hasattr(onnxattr, top)  # __all__, __version__
    assert top in onnxattr.__all__ or is_module or dunder, \
        f"the README uses {dotted}, but onnxattr neither exports {top!r} nor has such a subpackage"
    resolve(dotted)


def test_the_checks_above_catch_a_wrong_table():
    """An extra row and a missing one are both seen (the table parser is not vacuous)."""
    section = api_section(README)
    assert len(documented(README)) >= 10
    broken = README.replace(section, section.replace("| `onnxattr.trace` |", "| `onnxattr.tracer` |"))
    assert set(documented(broken)) ^ set(onnxattr.__all__) == {"trace", "tracer"}
