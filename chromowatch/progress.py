"""A one-line progress bar on a terminal; silent when stderr is not one (logs, pipes, CI)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30


def format_eta(seconds: float) -> str:
    """'ETA 1:05' style; hours when it is that long."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """`advance()` one item at a time, or `update(done, total)` for work that reports its own
    count (crops through an ensemble); the line shows the rate and, once some work is done,
    the time left."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None,
                 unit: str = "") -> None:
        self.total = total
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self.done = 0.0
        self._start = time.monotonic()
        self._shown = False

    def advance(self, note: str = "") -> None:
        self.update(self.done + 1, self.total, note)

    def update(self, done: float, total: int, note: str = "") -> None:
        self.done, self.total = done, total
        if not self.enabled or total <= 1:  # one item: no bar worth drawing
            return
        filled = int(WIDTH * self.done / max(self.total, 1))
        elapsed = time.monotonic() - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = f" ETA {format_eta((self.total - self.done) / rate)}" if rate > 0 else ""
        unit = f" {self.unit}" if self.unit else ""
        bar = "#" * filled + "-" * (WIDTH - filled)
        self.stream.write(
            f"\r{self.label} [{bar}] {int(self.done)}/{self.total}{unit} {rate:.1f}/s{eta} "
            f"{note[:40]:<40}"
        )
        self._shown = True
        if self.done >= self.total:  # finished: end the line before anything else is logged
            self.close()
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False
