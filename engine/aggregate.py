"""The aggregator: records from N capture processes -> per-port counters per window.

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
group in file mode). Each group has its own tables, so the stream can say
which interface a counter came from and also give the sum. Counters are
uint64 throughout; the native reducer (pt_engine._core.reduce_records) does the
per-record work with the GIL released.
"""
from __future__ import annotations

from collections import deque
from multiprocessing import connection
from typing import Callable

import numpy as np

from . import records
from .config import PortSpec
from .errors import TransportError
from .transport import Consumer, Done, Progress

UINT64_MAX = records.UINT64_MAX
N_ROWS = records.N_PROTOS * records.N_PORTS
N_CLASSES = len(records.CLASS_NAMES)

# Row order of the stream: (protocol name, port), as in the .expected.json files.
_PROTO_RANK = np.argsort(np.argsort(np.array(records.PROTO_NAMES)))


def _backend():
    from .sources import use_reference_backend
    if use_reference_backend():
        from . import _reference
        return _reference
    from . import _core
    return _core


def stream_order(rows: np.ndarray) -> np.ndarray:
    """Counter rows sorted by (protocol name, port)."""
    rows = rows.astype(np.int64)
    return rows[np.argsort(_PROTO_RANK[rows >> 16] * records.N_PORTS + (rows & 0xFFFF),
                           kind="stable")]


_PROTO_NAME_ARRAY = np.array(records.PROTO_NAMES, dtype=object)


def port_rows(rows: np.ndarray, values: np.ndarray, ports: PortSpec | None) -> list[list]:
    """Stream rows [proto, port, in_packets, in_bytes, out_packets, out_bytes]."""
    if ports is not None:
        keep = ports.mask[rows & 0xFFFF]
        rows, values = rows[keep], values[keep]
    # Column-wise conversion: a busy window has tens of thousands of rows.
    columns = [_PROTO_NAME_ARRAY[rows >> 16].tolist(), (rows & 0xFFFF).tolist(),
               *values.T.tolist()]
    return list(map(list, zip(*columns)))


def class_totals(classes: np.ndarray) -> tuple[dict, dict]:
    """({'packets', 'bytes'}, {class name: {'packets', 'bytes'}}) from a (4, 2) table."""
    values = classes.tolist()
    per_class = {name: {"packets": p, "bytes": b}
                 for name, (p, b) in zip(records.CLASS_NAMES, values)}
    totals = {"packets": sum(v[0] for v in values), "bytes": sum(v[1] for v in values)}
    return totals, per_class


class Counters:
    """One group's window: per-port table, class totals, and the rows in use."""

    def __init__(self):
        self.table = np.zeros((N_ROWS, 4), dtype=np.uint64)
        self.classes = np.zeros((N_CLASSES, 2), dtype=np.uint64)
        self.touched = np.zeros(N_ROWS, dtype=np.uint32)
        self.state = np.zeros(4, dtype=np.uint64)   # see reduce_records

    def rows(self) -> np.ndarray:
        """Rows in use (unordered)."""
        return self.touched[:int(self.state[0])].astype(np.int64)

    def clear(self, rows: np.ndarray) -> None:
        """Zero the given rows, the classes and the bookkeeping (keeps state[2])."""
        self.table[rows] = 0
        self.classes[:] = 0
        self.state[0] = self.state[3] = 0


class Feed:
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

    def consume(self, reduce, counters: Counters, win_end_ns: int) -> bool:
        """Count records before win_end_ns; True if any was counted."""
        moved = False
        while self._load():
            pos = reduce(self.batch, self.pos, self.n, win_end_ns, counters.table,
                         counters.classes, counters.touched, counters.state)
            moved = moved or pos != self.pos
            self.pos = pos
            if pos < self.n:
                break
            self.batch = None
            self.consumer.release(self.slot)
            self.slot = None
        return moved


class Aggregator:
    """Reduces records into windows and cumulative totals, emitting stream records.

    `groups` names the counter groups (interfaces); `emit` receives each window
    and the summary as a dict (pt_engine.stream). `live` emits empty windows too.
    """

    def __init__(self, interval_ns: int, ports: PortSpec | None,
                 emit: Callable[[dict], None], groups: list[str] | None = None,
                 live: bool = False):
        self.interval_ns = interval_ns
        self.ports = ports
        self.emit = emit
        self.live = live
        self.group_names = groups or ["all"]
        self.window = [Counters() for _ in self.group_names]
        self.total = [np.zeros((N_ROWS, 4), dtype=np.uint64) for _ in self.group_names]
        self.total_classes = [np.zeros((N_CLASSES, 2), dtype=np.uint64)
                              for _ in self.group_names]
        self.feeds: list[Feed] = []
        self.source_info: dict[int, dict] = {}
        self.win_start: int | None = None
        self.win_end: int | None = None
        self.next_start: int | None = None
        self.first_ns: int | None = None
        self.last_end_ns: int | None = None
        self.windows = 0
        self.late_packets = 0
        self._reduce = _backend().reduce_records

    def add_feed(self, consumer: Consumer, group: int, source: int) -> Feed:
        """Start consuming one capture process; `source` indexes the hello's sources."""
        feed = Feed(consumer, group, source)
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
            if feed.consume(self._reduce, self.window[feed.group], self.win_end):
                moved = True
        fronts = [f.frontier() for f in feeds]
        if all(x is not None and x >= self.win_end for x in fronts):
            self.close_window()
            return True
        return moved

    def _open_window(self, feeds: list[Feed]) -> bool:
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
        for counters in self.window:
            counters.state[2] = start
        if self.first_ns is None:
            self.first_ns = start
        return True

    def close_window(self) -> None:
        """Emit the open window (if it holds packets, or always when live) and fold
        it into the totals."""
        if self.win_end is None:
            return
        rows_per_group = [c.rows() for c in self.window]
        classes = sum(c.classes for c in self.window)
        packets = int(classes[:, 0].sum())
        if packets or self.live:
            late = sum(int(c.state[3]) for c in self.window)
            record = {"type": "window", "start_ns": self.win_start, "end_ns": self.win_end,
                      **self._counters_fields([c.table for c in self.window], rows_per_group,
                                              [c.classes for c in self.window]),
                      "late_packets": late}
            if self.live:
                record["sources"] = self.source_stats()
            self.emit(record)
            self.windows += 1
            self.late_packets += late
            self.last_end_ns = self.win_end
        for g, (counters, rows) in enumerate(zip(self.window, rows_per_group)):
            self.total[g][rows] += counters.table[rows]
            self.total_classes[g] += counters.classes
            counters.clear(rows)
        self.next_start = self.win_end
        self.win_start = self.win_end = None

    def _counters_fields(self, tables, rows_per_group, classes_per_group) -> dict:
        """totals / classes / ports (the sum of groups), plus per-interface parts."""
        rows = stream_order(np.unique(np.concatenate(rows_per_group)))
        values = sum(t[rows] for t in tables) if len(tables) > 1 else tables[0][rows]
        totals, classes = class_totals(sum(classes_per_group))
        fields = {"totals": totals, "classes": classes,
                  "ports": port_rows(rows, values, self.ports)}
        if len(tables) > 1:
            fields["interfaces"] = []
            for name, table, g_rows, g_classes in zip(self.group_names, tables,
                                                      rows_per_group, classes_per_group):
                g_rows = stream_order(g_rows)
                g_totals, g_class = class_totals(g_classes)
                fields["interfaces"].append({"name": name, "totals": g_totals,
                                             "classes": g_class,
                                             "ports": port_rows(g_rows, table[g_rows],
                                                                self.ports)})
        return fields

    def source_stats(self) -> list[dict]:
        """Latest counters of every capture process (cumulative, as libpcap gives them)."""
        out = []
        for feed in self.feeds:
            entry = {**self.source_info.get(feed.source, {"source": feed.source}),
                     **feed.stats}
            entry["status"] = "running" if feed.done is None else feed.done.kind
            out.append(entry)
        return out

    def snapshot(self, kind: str = "snapshot") -> dict:
        """Cumulative counters of the closed windows, as a summary-shaped record."""
        rows = [np.flatnonzero(t[:, 0] | t[:, 2]) for t in self.total]
        return {"type": kind, "start_ns": self.first_ns, "end_ns": self.last_end_ns,
                "windows": self.windows, "late_packets": self.late_packets,
                **self._counters_fields(self.total, rows, self.total_classes)}
