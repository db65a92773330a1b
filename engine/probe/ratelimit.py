"""A token bucket on the monotonic clock: the one gate every probe passes.

Every probe of a run, whatever the concurrency, takes a token before it is
sent, so the rate holds however many probes are in flight: over any stretch
of T seconds at most ``burst + rate * T`` probes leave. ``burst`` is 10 ms
worth of tokens (at least 1), so that a loop that wakes a little late still
keeps the average rate without sending a noticeable burst. ``rate`` 0 means
no limit.
"""
from __future__ import annotations

import time

NS = 1_000_000_000


class TokenBucket:
    """`rate` tokens per second, at most `burst` stored; the bucket starts with one.

    Times are ``time.monotonic_ns()`` values; ``clock`` may be replaced (tests).
    """

    def __init__(self, rate: float, burst: float | None = None, clock=time.monotonic_ns):
        if rate < 0:
            raise ValueError(f"rate {rate} is negative")
        self.rate = float(rate)
        self.burst = max(1.0, self.rate / 100) if burst is None else float(burst)
        self.clock = clock
        self._tokens = 1.0
        self._at = clock()

    @property
    def unlimited(self) -> bool:
        return self.rate == 0

    def _refill(self, now: int) -> None:
        if now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate / NS)
            self._at = now

    def take(self, now: int | None = None) -> bool:
        """Take one token if there is one (always, without a limit)."""
        if self.unlimited:
            return True
        self._refill(self.clock() if now is None else now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def wait_ns(self, now: int | None = None) -> int:
        """Nanoseconds until the next token (0: one is there)."""
        if self.unlimited:
            return 0
        self._refill(self.clock() if now is None else now)
        missing = 1.0 - self._tokens
        return 0 if missing <= 0 else int(missing * NS / self.rate) + 1
