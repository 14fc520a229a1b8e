"""A one-line progress bar on a terminal: ``onnxattr audit [#####.....] 5/10  12s  gradient: deletion``."""
from __future__ import annotations

import sys
import time
from typing import TextIO


class StatusLine:
    """One line redrawn in place on ``stream``: True for stderr when it is a terminal (else
    nothing), False for nothing, or a stream to write to."""

    def __init__(self, stream: bool | TextIO = True) -> None:
        if stream is True:
            stream = sys.stderr if getattr(sys.stderr, "isatty", lambda: False)() else False
        self.stream: TextIO | None = stream or None
        self.started = time.perf_counter()
        self.last = 0

    def show(self, line: str) -> None:
        """Draw ``line`` over the previous one."""
        self.stream.write("\r" + line.ljust(self.last))
        self.stream.flush()
        self.last = len(line)

    def close(self) -> None:
        if self.stream is not None and self.last:
            self.stream.write("\n")
            self.stream.flush()
            self.last = 0


class Progress(StatusLine):
    """A progress bar of ``total`` steps; ``title`` begins the line."""

    def __init__(self, total: int, stream: bool | TextIO = True, width: int = 24, title: str = "onnxattr audit") -> None:
        super().__init__(stream)
        self.total, self.done, self.width, self.title = max(1, total), 0, width, title
        self.text = ""

    def label(self, text: str) -> None:
        self.text = text
        self._draw()

    def step(self) -> None:
        self.done += 1
        self._draw()

    def _draw(self) -> None:
        if self.stream is None:
            return
        filled = self.width * self.done // self.total
        self.show(f"{self.title} [{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} "
                  f"{time.perf_counter() - self.started:4.0f}s  {self.text}")
