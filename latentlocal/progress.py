"""A plain-text progress bar for long CLI jobs (the library never imports rich)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """One line with count, rate and ETA on stderr.

    On a terminal the line is redrawn in place; otherwise (a log file, a pipe) each update is its
    own line, so logs stay readable instead of one endless carriage-return line.
    """

    def __init__(self, total: int = 0, unit: str = "problems", stream: TextIO | None = None) -> None:
        self.total = total
        self.unit = unit
        # Resolved at call time: a default bound at import keeps a stream that may since be closed.
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = time.perf_counter()
        self.fresh = 0

    def update(self, done: int, label: str = "", new: bool = True, total: int | None = None) -> None:
        """``done`` items of ``total`` (given here when it is only known now) are finished; ``new``
        says whether this one was produced by this run (resumed items arrive all at once and would
        make the ETA absurdly short)."""
        if total is not None:
            self.total = total
        self.fresh += int(new)
        elapsed = time.perf_counter() - self.t0
        rate = self.fresh / elapsed * 60 if elapsed > 0 and self.fresh else 0.0
        total = max(self.total, done, 1)
        width = 24
        fill = int(width * done / total)
        eta = f"ETA {(total - done) / rate:.1f} min" if rate else "ETA ?"
        line = f"[{'#' * fill}{'.' * (width - fill)}] {done}/{total} {rate:.1f} {self.unit}/min, {eta}"
        if label:
            line += f"  {label[:60]}"
        self.stream.write("\r\x1b[2K" + line if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
