"""Log lines on stderr: stdout carries the stream only.

``log`` writes one line prefixed with the program name; ``LogLimit`` keeps a
storm of similar lines (subscribers connecting and going) to a few.
"""
from __future__ import annotations

import sys
import time


def log(message: str) -> None:
    """One line on stderr, prefixed with the program name."""
    print(f"pt-engine: {message}", file=sys.stderr, flush=True)


class LogLimit:
    """At most `burst` lines per `period` seconds; the rest are counted and the
    count is logged with the next line let through (or by flush())."""

    def __init__(self, burst: int = 5, period: float = 10.0):
        self.burst, self.period = burst, period
        self._start, self._lines, self.suppressed = 0.0, 0, 0

    def __call__(self, message: str) -> None:
        now = time.monotonic()
        if now - self._start >= self.period:
            self.flush()
            self._start, self._lines = now, 0
        if self._lines < self.burst:
            self._lines += 1
            log(message)
        else:
            self.suppressed += 1

    def flush(self) -> None:
        if self.suppressed:
            log(f"... and {self.suppressed} more such lines")
            self.suppressed = 0
