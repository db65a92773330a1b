"""`pt-engine scan`: a TCP probe per (target, port), retried, into ``scan`` records.

The probe is a connect, or with ``--syn`` a SYN from a raw socket
(pt_engine.probe.syn); the states are the same either way.

Each port is ``open`` (the handshake completed; the socket is then closed
with a reset, as nmap -sT does), ``closed`` (a reset: ECONNREFUSED) or
``filtered``: no answer after ``retries`` more attempts, or the kernel
reported the destination unreachable (an ICMP unreachable, a local filter),
which is not retried. ``rtt_ns`` is the time to the answer of the attempt
that decided (null when filtered). A target's record is written once all
its ports are decided, ports in ascending order.
"""
from __future__ import annotations

from collections import deque

from .. import stream
from .loop import Probe, Schedule
from .targets import Target

_STATES = {"reply": "open", "refused": "closed", "unreachable": "filtered"}


class ScanSchedule(Schedule):
    """`targets` x `ports`, target by target; records to `emit`."""

    def __init__(self, targets: list[Target], ports: list[int], retries: int, emit, wall):
        self.targets = targets
        self.ports = ports
        self.retries = retries
        self.emit = emit
        self.wall = wall
        self._order = ((i, port) for i in range(len(targets)) for port in ports)
        self._retry: deque[Probe] = deque()
        self.results: dict[int, dict[int, dict]] = {}
        self.started: dict[int, int] = {}
        self.stopped = False

    def next(self, now: int):
        if self._retry:
            return self._retry.popleft()
        if self.stopped:
            return None
        item = next(self._order, None)
        if item is None:
            return None
        index, port = item
        target = self.targets[index]
        self.started.setdefault(index, now)
        self.results.setdefault(index, {})
        return Probe(index, target.text, target.family, port)

    def finish(self) -> None:
        """Start no new port (a stop); retries of ports begun still run."""
        self.stopped = True

    def done(self, probe: Probe, outcome: str, rtt_ns, end_ns: int) -> None:
        if outcome == "timeout" and probe.attempt < self.retries:
            self._retry.append(Probe(probe.target, probe.address, probe.family, probe.port,
                                     attempt=probe.attempt + 1))
            return
        state = _STATES.get(outcome, "filtered")
        results = self.results[probe.target]
        results[probe.port] = {"port": probe.port, "proto": "tcp", "state": state,
                               "rtt_ns": rtt_ns if state != "filtered" else None}
        if len(results) == len(self.ports):
            self._write(probe.target, end_ns)

    def _write(self, index: int, end_ns: int) -> None:
        results = self.results.pop(index)
        self.emit(stream.scan(self.targets[index].text,
                              [results[port] for port in sorted(results)],
                              self.wall(self.started[index]), self.wall(end_ns)))

    def close(self, end_ns: int) -> None:
        """After a stop: the targets begun, with the ports decided."""
        for index in sorted(self.results):
            if self.results[index]:
                self._write(index, end_ns)
