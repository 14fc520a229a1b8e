"""Text that comes from a model (node, tensor and graph names, producer, doc strings), made safe
to print on a terminal.

A model is untrusted input: a node named ``"\\x1b]0;pwned\\x07"`` would retitle the terminal,
and one with a right-to-left override would reorder what a reader sees. Everything printed that
comes from a model goes through :func:`escape_text` first.
"""
from __future__ import annotations

__all__ = ["escape_text"]


def escape_text(s: str) -> str:
    """``s`` with every character that a terminal would not show as itself written as a Python
    escape (``\\x1b``, ``\\u202e``, ``\\n``), and backslashes doubled so that the result reads
    back unambiguously.

    Kept as they are: the printable characters of any script and the plain space. Escaped: what
    ``str.isprintable`` rejects, i.e. control characters (C0, DEL, C1), format characters such as
    the bidirectional overrides, line and paragraph separators, other spaces, surrogates and
    unassigned code points. The escapes are those of ``repr``, without its quotes.
    """
    if s.isprintable() and "\\" not in s:
        return s
    return "".join(ch if ch.isprintable() and ch != "\\" else repr(ch)[1:-1] for ch in s)
