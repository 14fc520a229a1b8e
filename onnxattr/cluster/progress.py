"""The progress bar of a cluster run: samples done across all workers, and the rate."""
from __future__ import annotations

import time
from typing import TextIO

from ..report.progress import StatusLine


class SampleProgress(StatusLine):
    """``onnxattr ray [######......] 96/256 samples  12.3 samples/s  eta 13s``, redrawn in place
    on ``stream`` (True: stderr when it is a terminal; False: nothing). The rate counts the
    samples computed since the bar was made (the driver makes it once Ray has started); samples
    already done (a resumed run) count toward the bar, not the rate."""

    def __init__(self, total: int, done: int = 0, stream: bool | TextIO = True, width: int = 24) -> None:
        super().__init__(stream)
        self.total, self.done, self.width = max(1, total), done, width
        self.computed = 0
        self._draw()

    @property
    def rate(self) -> float | None:
        """Samples per second computed in this run (None before any finished)."""
        seconds = time.perf_counter() - self.started
        return self.computed / seconds if self.computed and seconds > 0 else None

    def add(self, n: int) -> None:
        """``n`` more samples finished."""
        self.done += n
        self.computed += n
        self._draw()

    def _draw(self) -> None:
        if self.stream is None:
            return
        filled = self.width * min(self.done, self.total) // self.total
        rate = self.rate
        speed = f"  {rate:.3g} samples/s  eta {(self.total - self.done) / rate:.0f}s" if rate else ""
        self.show(f"onnxattr ray [{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} samples{speed}")
