"""`pt-engine ping`: rounds of probes to every target, windows of rounds into ``ping`` records.

Round k (one probe to each target, and each port with ``--tcp``) is due
``k * interval`` after the start; the rate limit and the concurrency may
hold it back, never the other way. ``rounds_per_window`` rounds make one
window per target: its ``ping`` record (pt_engine.probe.stats figures) is
written once each of its probes has been answered or timed out, windows of
a target in order. At the end each target gets a ``final`` record with the
run's totals and ``up`` (any reply). With ``--tcp`` a reset counts as a
reply (the host answered; the RTT is the time to the reset), as tcping and
nmap's -PS host discovery count it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .. import stream
from .loop import Probe, Schedule
from .stats import Series
from .targets import Target

_PENDING = object()


@dataclass
class _Window:
    outcomes: list = field(default_factory=list)
    pending: int = 0
    start_ns: int = 0
    end_ns: int = 0


class PingSchedule(Schedule):
    """Rounds for `targets` x `ports` ([None]: ICMP); `count` rounds (0: until
    `duration_ns` or a stop), records to `emit`; `wall` maps monotonic to epoch ns."""

    def __init__(self, targets: list[Target], ports: list[int | None], count: int,
                 duration_ns: int | None, interval_ns: int, rounds_per_window: int,
                 emit, wall):
        self.targets = targets
        self.keys = [(i, port) for i in range(len(targets)) for port in ports]
        self.count = count
        self.duration_ns = duration_ns
        self.interval_ns = interval_ns
        self.per_window = rounds_per_window
        self.emit = emit
        self.wall = wall
        self.series = {key: Series() for key in self.keys}
        self.windows: dict[tuple, dict[int, _Window]] = {key: {} for key in self.keys}
        self.next_window = dict.fromkeys(self.keys, 0)
        self.round = 0
        self.pos = 0
        self.start_ns: int | None = None
        self.finished = False

    def next(self, now: int):
        if self.start_ns is None:
            self.start_ns = now
        if self.finished:
            return None
        if self.pos == 0:
            due = self.start_ns + self.round * self.interval_ns
            if (self.count and self.round >= self.count) or (
                    self.duration_ns is not None and self.round
                    and due >= self.start_ns + self.duration_ns):
                self.finish()
                return None
            if now < due:
                return due
        key = self.keys[self.pos]
        target = self.targets[key[0]]
        index = self.round // self.per_window
        window = self.windows[key].setdefault(index, _Window(start_ns=now))
        probe = Probe(key[0], target.text, target.family, key[1],
                      tag=(key, index, len(window.outcomes)))
        window.outcomes.append(_PENDING)
        window.pending += 1
        self.pos += 1
        if self.pos == len(self.keys):
            self.pos, self.round = 0, self.round + 1
        return probe

    def finish(self) -> None:
        """No round starts after this (the count is reached, the duration over, a stop)."""
        self.finished = True

    def done(self, probe: Probe, outcome: str, rtt_ns, end_ns: int) -> None:
        key, index, slot = probe.tag
        window = self.windows[key][index]
        answered = outcome in ("reply", "refused")
        window.outcomes[slot] = rtt_ns if answered else None
        window.pending -= 1
        window.end_ns = max(window.end_ns, end_ns)
        self._flush(key)

    def late(self, probe: Probe) -> None:
        self.series[probe.tag[0]].late_reply()

    def duplicate(self, probe: Probe) -> None:
        self.series[probe.tag[0]].duplicate()

    def _complete(self, key, index: int) -> bool:
        window = self.windows[key].get(index)
        if window is None or window.pending:
            return False
        full = len(window.outcomes) == self.per_window
        return full or self.finished or self.round // self.per_window > index

    def _flush(self, key) -> None:
        while self._complete(key, self.next_window[key]):
            index = self.next_window[key]
            window = self.windows[key].pop(index)
            self.next_window[key] = index + 1
            self.emit(stream.ping(self.targets[key[0]].text, key[1],
                                  self.series[key].window(window.outcomes),
                                  self.wall(window.start_ns), self.wall(window.end_ns)))

    def close(self, end_ns: int) -> None:
        """After the loop: the last windows, then each target's final record."""
        self.finished = True
        for key in self.keys:
            self._flush(key)
        for key in self.keys:
            totals = self.series[key].totals()
            self.emit(stream.ping(self.targets[key[0]].text, key[1], totals,
                                  self.wall(self.start_ns or end_ns), self.wall(end_ns),
                                  up=totals["received"] > 0))
