"""The aggregator: records from N capture processes, merged in time order and cut
into windows, handed to the analysers (pt_engine.analysers).

Windows are cut by packet timestamps (counting-rules section 6): window k
covers [k * interval, (k + 1) * interval) in ns since the epoch, so reading a
file twice gives the same windows. Sources are merged in time order: a window
closes only when every source has shown it is at or past the window's end,
with a record (files) or a watermark (live sources report one while idle). A
record older than the open window (a clock stepping back, or a live packet
delivered late) is counted in the open window and reported in
``late_packets``.

File mode emits only windows with packets; live mode emits every window, so
that consumers see a record per interval even on a quiet link.

Sources belong to groups (one per interface in live mode; all files form one
group in file mode); analysers keep what they need per group. This module
owns the windowing only: what is counted is the analysers' business, and
the records are built by pt_engine.stream.
"""
from __future__ import annotations

from collections import deque
from multiprocessing import connection
from typing import TYPE_CHECKING, Callable

from . import records, stream
from .backend import core
from .errors import TransportError
from .transport import Consumer, Done, Progress

if TYPE_CHECKING:
    from .analysers import Analyser

UINT64_MAX = records.UINT64_MAX


class CaptureFeed:
    """One capture process's messages and batches, consumed in order."""

    def __init__(self, consumer: Consumer, group: int, source: int):
        self.consumer = consumer
        self.group = group
        self.source = source
        self.queue: deque[tuple[int, int]] = deque()
        self.batch = None
        self.slot: int | None = None
        self.pos = 0
        self.n = 0
        self.watermark: int | None = None
        self.stats: dict = {}
        self.done: Done | None = None

    def pump(self) -> None:
        """Take every message waiting on the pipe (never blocks)."""
        try:
            while self.done is None and self.consumer.conn.poll(0):
                self._handle(self.consumer.receive())
        except (TransportError, OSError) as err:
            self.done = Done("error", self.stats, "TransportError", str(err))

    def _handle(self, msg) -> None:
        if isinstance(msg, Done):
            self.done = msg
            self.stats = {**self.stats, **msg.stats}
        elif isinstance(msg, Progress):
            self.watermark = msg.watermark_ns
            self.stats = msg.stats
        elif isinstance(msg, tuple):
            slot, n = msg
            if n:
                self.queue.append((slot, n))
            else:
                self.consumer.release(slot)

    def _load(self) -> bool:
        if self.batch is None and self.queue:
            self.slot, self.n = self.queue.popleft()
            self.pos = 0
            self.batch = self.consumer.ring.records[self.slot]
        return self.batch is not None

    @property
    def finished(self) -> bool:
        """Ended and fully consumed."""
        return self.done is not None and self.batch is None and not self.queue

    def frontier(self) -> int | None:
        """No record still to come from this feed is older than this (None: unknown)."""
        if self._load():
            return int(self.batch["ts_ns"][self.pos])
        if self.done is not None:
            return UINT64_MAX
        return self.watermark

    def has_records(self) -> bool:
        return self._load()

    def consume(self, cut, win_start_ns: int, win_end_ns: int, take) -> tuple[int, int]:
        """Hand the records before win_end_ns to `take(batch, start, stop)`;
        returns (records taken, late records among them)."""
        taken = late = 0
        while self._load():
            stop, n_late = cut(self.batch, self.pos, self.n, win_start_ns, win_end_ns)
            if stop > self.pos:
                take(self.batch, self.pos, stop)
                taken += stop - self.pos
                late += n_late
            self.pos = stop
            if stop < self.n:
                break
            self.batch = None
            self.consumer.release(self.slot)
            self.slot = None
        return taken, late


class Aggregator:
    """Merges the feeds, cuts windows, runs the analysers and emits stream records.

    `emit` receives each window (pt_engine.stream.window) as a dict. `live`
    emits empty windows too, with the capture processes' counters.
    """

    def __init__(self, interval_ns: int, analysers: list[Analyser],
                 emit: Callable[[dict], None], live: bool = False):
        self.interval_ns = interval_ns
        self.analysers = analysers
        self.emit = emit
        self.live = live
        self.feeds: list[CaptureFeed] = []
        self.source_info: dict[int, dict] = {}
        self.win_start: int | None = None
        self.win_end: int | None = None
        self.next_start: int | None = None
        self.first_ns: int | None = None
        self.last_end_ns: int | None = None
        self.windows = 0
        self.late_packets = 0
        self._in_window = 0          # records of the open window
        self._late_in_window = 0
        self._cut = core().window_cut

    def add_feed(self, consumer: Consumer, group: int, source: int) -> CaptureFeed:
        """Start consuming one capture process; `source` indexes the hello's sources."""
        feed = CaptureFeed(consumer, group, source)
        self.feeds.append(feed)
        return feed

    def run(self, idle: Callable[[], None] | None = None, tick: float = 0.1) -> None:
        """Consume every feed to its end; `idle` runs whenever nothing can progress
        (and at least every `tick` seconds while waiting); it may add feeds."""
        while True:
            for feed in self.feeds:
                feed.pump()
            progressed = self._step()
            if all(f.finished for f in self.feeds):
                if idle is not None:
                    idle()      # may restart a capture process, adding a feed
                if all(f.finished for f in self.feeds):
                    break
                continue
            if not progressed:
                waiting = [f.consumer.conn for f in self.feeds if f.done is None]
                if waiting:
                    connection.wait(waiting, tick)
                if idle is not None:
                    idle()
        self.close_window()

    def _step(self) -> bool:
        feeds = [f for f in self.feeds if not f.finished]
        if not feeds:
            return False
        if self.win_end is None and not self._open_window(feeds):
            return False
        moved = False
        for feed in feeds:
            taken, late = feed.consume(self._cut, self.win_start, self.win_end,
                                       self._taker(feed.group))
            if taken:
                moved = True
                self._in_window += taken
                self._late_in_window += late
        fronts = [f.frontier() for f in feeds]
        if all(x is not None and x >= self.win_end for x in fronts):
            self.close_window()
            return True
        return moved

    def _taker(self, group: int):
        def take(batch, start: int, stop: int) -> None:
            for analyser in self.analysers:
                analyser.consume(batch, start, stop, group)
        return take

    def _open_window(self, feeds: list[CaptureFeed]) -> bool:
        if self.live and self.next_start is not None:
            start = self.next_start
        else:
            # Every source must have spoken: one that has not could still send
            # records older than the others' first ones.
            fronts = [f.frontier() for f in feeds]
            if any(x is None for x in fronts):
                return False
            heads = [f.frontier() for f in feeds if f.has_records()] or fronts
            start = min(heads) - min(heads) % self.interval_ns
        self.win_start = start
        self.win_end = min(start + self.interval_ns, UINT64_MAX)
        if self.first_ns is None:
            self.first_ns = start
        return True

    def close_window(self) -> None:
        """Emit the open window (if it holds packets, or always when live); the
        analysers fold it into their totals."""
        if self.win_end is None:
            return
        analysed = {}
        for analyser in self.analysers:
            analysed.update(analyser.window(self.win_start, self.win_end))
        if self._in_window or self.live:
            late = self._late_in_window
            self.emit(stream.window(self.win_start, self.win_end, analysed, late,
                                    self.source_stats() if self.live else None))
            self.windows += 1
            self.late_packets += late
            self.last_end_ns = self.win_end
        self._in_window = self._late_in_window = 0
        self.next_start = self.win_end
        self.win_start = self.win_end = None

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
