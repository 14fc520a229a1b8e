"""Text that comes from a model (node, tensor and graph names, op types, producer, doc strings),
made safe to print on a terminal.

A model is untrusted input: a node named ``"\\x1b]0;pwned\\x07"`` would retitle the terminal,
and one with a right-to-left override would reorder what a reader sees. Everything printed that
comes from a model goes through :func:`escape_text` first.
"""
from __future__ import annotations

__all__ = ["escape_text"]


def escape_text(s: str) -> str:
    """``s`` with every character that a terminal would not show as itself written as its
    Python escape (``\\x1b``, ``\\u202e``, ``\\n``).

    Kept as they are: the printable characters of any script, the plain space and backslashes
    (so that escaping twice changes nothing: any layer may call this on text that another
    layer already escaped). Escaped: what ``str.isprintable`` rejects, i.e. control characters
    (C0, DEL, C1), format characters such as the bidirectional overrides and zero-width
    characters, line and paragraph separators, spaces other than U+0020, surrogates and
    unassigned code points.
    """
    if s.isprintable():
        return s
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in s)
