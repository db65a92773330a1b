"""The aggregator: records from N capture processes -> per-port counters per window.

Windows are cut by packet timestamps (counting-rules section 6): window k
covers [k * interval, (k + 1) * interval) in ns since the epoch, so reading a
file twice gives the same windows. Sources are merged in time order: a window
closes only when every source still running has reached a record at or past
its end. A record older than the open window (a capture's clock stepping
back) is counted in the open window and reported as ``late_packets``.
Windows without packets are not emitted.

Counters are uint64 throughout; the native reducer (engine._core.reduce_records)
does the per-record work with the GIL released.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from . import records
from .config import PortSpec
from .errors import TransportError
from .transport import Consumer, Done

UINT64_MAX = (1 << 64) - 1

# Row order of the stream: (protocol name, port), as in the .expected.json files.
_PROTO_RANK = np.argsort(np.argsort(np.array(records.PROTO_NAMES)))


def _backend():
    from .sources import use_reference_backend
    if use_reference_backend():
        from . import _reference
        return _reference
    from . import _core
    return _core


class Counters:
    """A per-port counter table, class totals, and the rows in use."""

    ROWS = records.N_PROTOS * records.N_PORTS

    def __init__(self):
        self.table = np.zeros((self.ROWS, 4), dtype=np.uint64)
        self.classes = np.zeros((len(records.CLASS_NAMES), 2), dtype=np.uint64)
        self.touched = np.zeros(self.ROWS, dtype=np.uint32)
        self.state = np.zeros(4, dtype=np.uint64)   # see reduce_records

    @property
    def packets(self) -> int:
        """Packets counted, all classes."""
        return int(self.classes[:, 0].sum())

    def rows(self) -> np.ndarray:
        """Rows in use, in stream order."""
        rows = self.touched[:int(self.state[0])].astype(np.int64)
        return rows[np.argsort(_PROTO_RANK[rows >> 16] * records.N_PORTS + (rows & 0xFFFF),
                               kind="stable")]

    def clear(self, rows: np.ndarray) -> None:
        """Zero the given rows, the classes and the touched list."""
        self.table[rows] = 0
        self.classes[:] = 0
        self.state[:] = 0


def port_rows(table: np.ndarray, rows: np.ndarray, ports: PortSpec | None) -> list[list]:
    """Stream rows [proto, port, in_packets, in_bytes, out_packets, out_bytes]."""
    if ports is not None:
        rows = rows[ports.mask[rows & 0xFFFF]]
    values = table[rows].tolist()
    return [[records.PROTO_NAMES[r >> 16], r & 0xFFFF, *v] for r, v in zip(rows.tolist(), values)]


def class_totals(classes: np.ndarray) -> tuple[dict, dict]:
    """({'packets', 'bytes'}, {class name: {'packets', 'bytes'}}) from a (4, 2) table."""
    values = classes.tolist()
    per_class = {name: {"packets": p, "bytes": b}
                 for name, (p, b) in zip(records.CLASS_NAMES, values)}
    totals = {"packets": sum(v[0] for v in values), "bytes": sum(v[1] for v in values)}
    return totals, per_class


class _Feed:
    """One capture process's batches, consumed in order."""

    def __init__(self, consumer: Consumer, iface: int):
        self.consumer = consumer
        self.iface = iface
        self.batch = None
        self.slot = None
        self.pos = 0
        self.n = 0
        self.done: Done | None = None

    def advance(self) -> None:
        """Release the current slot and wait for the next non-empty batch or the end."""
        if self.slot is not None:
            self.batch = None
            self.consumer.release(self.slot)
            self.slot = None
        while self.done is None:
            msg = self.consumer.receive()
            if isinstance(msg, Done):
                self.done = msg
                return
            slot, n = msg
            if n == 0:
                self.consumer.release(slot)
                continue
            self.slot, self.n, self.pos = slot, n, 0
            self.batch = self.consumer.ring.records[slot]
            return

    def head_ts(self) -> int:
        return int(self.batch["ts_ns"][self.pos])


class Aggregator:
    """Reduces records into windows and a cumulative total, emitting stream records.

    `emit` receives each window and the summary as a dict (see engine.stream).
    """

    def __init__(self, interval_ns: int, ports: PortSpec | None,
                 emit: Callable[[dict], None]):
        self.interval_ns = interval_ns
        self.ports = ports
        self.emit = emit
        self.window = Counters()
        self.total = np.zeros((Counters.ROWS, 4), dtype=np.uint64)
        self.total_classes = np.zeros((len(records.CLASS_NAMES), 2), dtype=np.uint64)
        self.win_start: int | None = None
        self.win_end: int | None = None
        self.first_ns: int | None = None
        self.last_end_ns: int | None = None
        self.windows = 0
        self.late_packets = 0
        self._reduce = _backend().reduce_records

    def run(self, consumers: list[tuple[Consumer, int]]) -> list[Done]:
        """Merge every feed to its end; returns each source's Done, in feed order.

        A capture process that dies is reported as a Done of kind 'error'.
        """
        feeds = [_Feed(c, iface) for c, iface in consumers]
        for feed in feeds:
            self._advance(feed)
        while True:
            running = [f for f in feeds if f.done is None]
            if not running:
                break
            if self.win_end is None:
                self._open_window(min(f.head_ts() for f in running))
            for feed in running:
                while feed.done is None:
                    feed.pos = self._reduce(feed.batch, feed.pos, feed.n, self.win_end,
                                            self.window.table, self.window.classes,
                                            self.window.touched, self.window.state)
                    if feed.pos < feed.n:
                        break
                    self._advance(feed)
            self.close_window()
        self.close_window()
        return [f.done for f in feeds]

    def _advance(self, feed: _Feed) -> None:
        try:
            feed.advance()
        except TransportError as err:
            feed.done = Done("error", {}, "TransportError", f"source {feed.iface}: {err}")

    def _open_window(self, ts_ns: int) -> None:
        self.win_start = ts_ns - ts_ns % self.interval_ns
        self.win_end = min(self.win_start + self.interval_ns, UINT64_MAX)
        self.window.state[2] = self.win_start
        if self.first_ns is None:
            self.first_ns = self.win_start

    def close_window(self) -> None:
        """Emit the open window (if it holds packets) and fold it into the total."""
        if self.win_end is None:
            return
        w = self.window
        rows = w.rows()
        if w.packets:
            totals, classes = class_totals(w.classes)
            late = int(w.state[3])
            self.emit({"type": "window", "start_ns": self.win_start, "end_ns": self.win_end,
                       "totals": totals, "classes": classes, "late_packets": late,
                       "ports": port_rows(w.table, rows, self.ports)})
            self.windows += 1
            self.late_packets += late
            self.total[rows] += w.table[rows]
            self.total_classes += w.classes
            self.last_end_ns = self.win_end
        w.clear(rows)
        self.win_start = self.win_end = None

    def snapshot(self, kind: str = "snapshot") -> dict:
        """Cumulative counters of the closed windows, as a summary-shaped record."""
        rows = np.flatnonzero(self.total[:, 0] | self.total[:, 2])
        rows = rows[np.argsort(_PROTO_RANK[rows >> 16] * records.N_PORTS + (rows & 0xFFFF),
                               kind="stable")]
        totals, classes = class_totals(self.total_classes)
        return {"type": kind, "start_ns": self.first_ns, "end_ns": self.last_end_ns,
                "windows": self.windows, "late_packets": self.late_packets,
                "totals": totals, "classes": classes,
                "ports": port_rows(self.total, rows, self.ports)}
