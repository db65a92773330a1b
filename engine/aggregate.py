"""The aggregator: per-window deltas from N capture processes, merged window by
window and handed to the analysers (pt_engine.analysers).

Windows are cut by packet timestamps (counting-rules section 6): window k
covers [k * interval, (k + 1) * interval) in ns since the epoch, so reading a
file twice gives the same windows. Each capture process cuts and counts its
own records (pt_engine.counting) and sends one delta per window it closes,
in window order, with its frontier: no later delta of it is for a window
before the frontier. A window closes here once every capture process's
frontier is past it (a finished one's is the end of time): its deltas are
merged by the analysers and the window record is emitted. Windows close in
time order, so several files are merged in time order.

A record older than its capture process's open window (a clock stepping
back, a live packet delivered late) is counted in that open window and
reported in ``late_packets``. Live, a delta for a window already emitted
(a restarted capture process) goes into the next window, as late.

File mode emits only windows with packets; live mode emits every window, so
that consumers see a record per interval even on a quiet link.

Sources belong to groups (one per interface in live mode; all files form one
group in file mode); analysers keep what they need per group. This module
owns the windowing only: what is counted is the analysers' business, and
the records are built by pt_engine.stream.
"""
from __future__ import annotations

from multiprocessing import connection
from typing import TYPE_CHECKING, Callable

from . import records, stream
from .counting import WindowDelta
from .errors import TransportError
from .transport import Consumer, Delta, Done, Progress

if TYPE_CHECKING:
    from .analysers import Analyser

UINT64_MAX = records.UINT64_MAX


class CaptureFeed:
    """One capture process's messages: its frontier, counters and end."""

    def __init__(self, consumer: Consumer, group: int, source: int):
        self.consumer = consumer
        self.group = group
        self.source = source
        self.frontier: int | None = None
        self.stats: dict = {}
        self.done: Done | None = None

    def pump(self, deliver: Callable[[CaptureFeed, WindowDelta], None]) -> bool:
        """Take every message waiting on the pipe (never blocks); deltas go to
        `deliver`. True if anything came."""
        came = False
        try:
            while self.done is None and self.consumer.conn.poll(0):
                self._handle(self.consumer.receive(), deliver)
                came = True
        except (TransportError, OSError) as err:
            self.done = Done("error", self.stats, "TransportError", str(err))
        return came

    def _handle(self, msg, deliver) -> None:
        if isinstance(msg, Delta):
            deliver(self, msg.window)
            self.frontier = msg.frontier_ns
        elif isinstance(msg, Done):
            self.done = msg
            self.stats = {**self.stats, **msg.stats}
        elif isinstance(msg, Progress):
            if msg.frontier_ns is not None:
                self.frontier = msg.frontier_ns
            self.stats = msg.stats

    @property
    def finished(self) -> bool:
        return self.done is not None

    def limit(self) -> int | None:
        """No delta still to come from this feed is for a window before this
        (None: not known yet)."""
        return UINT64_MAX if self.done is not None else self.frontier


class _Open:
    """A window some capture process has sent a delta for."""

    __slots__ = ("end", "records", "late", "parts")

    def __init__(self, end: int):
        self.end = end
        self.records = 0
        self.late = 0
        self.parts: list[tuple[CaptureFeed, WindowDelta]] = []


class Aggregator:
    """Merges the feeds' deltas, closes windows, runs the analysers and emits records.

    `emit` receives each window (pt_engine.stream.window) as a dict. `live`
    emits empty windows too, with the capture processes' counters.
    """

    def __init__(self, interval_ns: int, analysers: list[Analyser],
                 emit: Callable[[dict], None], live: bool = False):
        self.interval_ns = interval_ns
        self.analysers = analysers
        self._by_name = {a.name: a for a in analysers}
        self.emit = emit
        self.live = live
        self.feeds: list[CaptureFeed] = []
        self.source_info: dict[int, dict] = {}
        self.open: dict[int, _Open] = {}
        self.next_start: int | None = None     # live: the next window to emit
        self.first_ns: int | None = None
        self.last_end_ns: int | None = None
        self.windows = 0
        self.late_packets = 0

    def add_feed(self, consumer: Consumer, group: int, source: int) -> CaptureFeed:
        """Start consuming one capture process; `source` indexes the hello's sources."""
        feed = CaptureFeed(consumer, group, source)
        self.feeds.append(feed)
        return feed

    def run(self, idle: Callable[[], None] | None = None, tick: float = 0.1) -> None:
        """Consume every feed to its end; `idle` runs whenever nothing can progress
        (and at least every `tick` seconds while waiting); it may add feeds."""
        while True:
            came = False
            for feed in self.feeds:
                came |= feed.pump(self._deliver)
            closed = self._close_ready()
            if all(f.finished for f in self.feeds):
                if idle is not None:
                    idle()      # may restart a capture process, adding a feed
                if all(f.finished for f in self.feeds):
                    break
                continue
            if not (came or closed):
                waiting = [f.consumer.conn for f in self.feeds if f.done is None]
                if waiting:
                    connection.wait(waiting, tick)
                if idle is not None:
                    idle()
        self._close_ready(final=True)

    def _deliver(self, feed: CaptureFeed, delta: WindowDelta) -> None:
        start, late = delta.start_ns, delta.late
        if self.live and self.next_start is not None and start < self.next_start:
            start, late = self.next_start, delta.records     # its window is gone: late
        window = self.open.get(start)
        if window is None:
            window = self.open[start] = _Open(max(delta.end_ns, self._end(start)))
        window.records += delta.records
        window.late += late
        window.parts.append((feed, delta))

    def _end(self, start: int) -> int:
        return min(start + self.interval_ns, UINT64_MAX)

    def _close_ready(self, final: bool = False) -> bool:
        """Close every window no capture process can still add to; True if any."""
        limits = [f.limit() for f in self.feeds]
        if final:
            limit = UINT64_MAX
        elif not limits or None in limits:
            return False
        else:
            limit = min(limits)
        closed = False
        if not self.live:
            for start in sorted(s for s in self.open if s < limit or limit == UINT64_MAX):
                self._close(start)
                closed = True
            return closed
        if self.next_start is None:
            heads = list(self.open) + ([limit - limit % self.interval_ns]
                                       if limit != UINT64_MAX else [])
            if not heads:
                return False
            self.next_start = min(heads)
        # At the end of time, the windows up to the last one with packets.
        last = max(self.open, default=-1) if limit == UINT64_MAX else None
        while self.next_start is not None:
            end = self._end(self.next_start)
            if self.next_start > last if last is not None else end > limit:
                break
            self._close(self.next_start)
            closed = True
            self.next_start = end if end != UINT64_MAX else None
        return closed

    def _close(self, start: int) -> None:
        """Merge and emit one window (if it holds packets, or always when live);
        the analysers fold it into their totals."""
        window = self.open.pop(start, None) or _Open(self._end(start))
        by_name = self._by_name
        ports = by_name.get("ports")
        for feed, delta in window.parts:
            if ports is not None:
                ports.merge(delta.ports, feed.group)
            for name, part in delta.extra.items():
                if name in by_name:
                    by_name[name].merge(part, feed.group)
        analysed = {}
        for analyser in self.analysers:
            analysed.update(analyser.window(start, window.end))
        if window.records or self.live:
            self.emit(stream.window(start, window.end, analysed, window.late,
                                    self.source_stats() if self.live else None))
            self.windows += 1
            self.late_packets += window.late
            if self.first_ns is None:
                self.first_ns = start
            self.last_end_ns = window.end
        for feed, _ in window.parts:
            feed.consumer.ack()
    def source_stats(self) -> list[dict]:
        """Latest counters of every capture process (cumulative, as libpcap gives them)."""
        out = []
        for feed in self.feeds:
            entry = {**self.source_info.get(feed.source, {"source": feed.source}),
                     **feed.stats}
            entry["status"] = "running" if feed.done is None else feed.done.kind
            out.append(entry)
        return out

    def snapshot(self, kind: str = "snapshot", **extra) -> dict:
        """Cumulative counters of the closed windows, as a summary-shaped record
        (`extra`: interrupted, sources, outputs of a summary)."""
        analysed = {}
        for analyser in self.analysers:
            analysed.update(analyser.summary())
        return stream.summary(kind, self.first_ns, self.last_end_ns, self.windows,
                              self.late_packets, analysed, **extra)
