"""The per-port counters (counting-rules sections 3 to 5): the first analyser.

Its counter is native and is the capture process's windowing itself
(``PortWindows``, ext/windows.pyx, or its pure-Python twin): each capture
process counts its window into a table of N_PROTOS * 65536 rows by
(in_packets, in_bytes, out_packets, out_bytes), row ``proto_index << 16 |
port``, plus the four class totals, and hands over the used rows in stream
order as a delta (layout in ext/windows.pyx). This side merges the deltas
of a window, per counter group (interface), and keeps the run's totals.

Window fields: ``totals``, ``classes``, ``ports`` (the sum of the groups) and,
with several groups, ``interfaces`` (per group). ``ports`` is a
pt_engine.stream.PortRows: the msgpack encoder writes it without a Python
list per row.
"""
from __future__ import annotations

import numpy as np

from .. import records
from ..backend import core
from ..stream import PortRows
from . import Analyser, AnalyserContext

N_ROWS = records.N_PROTOS * records.N_PORTS
N_CLASSES = len(records.CLASS_NAMES)

# Row order of the stream: (protocol name, port), as in the .expected.json files.
_PROTO_RANK = np.argsort(np.argsort(np.array(records.PROTO_NAMES)))


def stream_order(rows: np.ndarray) -> np.ndarray:
    """Counter rows sorted by (protocol name, port)."""
    rows = rows.astype(np.int64)
    return rows[np.argsort(_stream_keys(rows), kind="stable")]


def port_rows(rows: np.ndarray, values: np.ndarray, ports) -> PortRows:
    """Stream port rows (pt_engine.stream.PORT_ROW) of counter rows in stream order
    and their values, leaving out ports that `ports` (a PortSpec, or None for
    all) does not select."""
    if ports is not None:
        keep = ports.mask[rows & 0xFFFF]
        rows, values = rows[keep], values[keep]
    return PortRows(rows, values)


def class_totals(classes: np.ndarray) -> tuple[dict, dict]:
    """({'packets', 'bytes'}, {class name: {'packets', 'bytes'}}) from a (4, 2) table."""
    values = classes.tolist()
    per_class = {name: {"packets": p, "bytes": b}
                 for name, (p, b) in zip(records.CLASS_NAMES, values)}
    totals = {"packets": sum(v[0] for v in values), "bytes": sum(v[1] for v in values)}
    return totals, per_class


HEADER_WORDS = 16          # DELTA_HEADER in ext/windows.pyx
_NO_ROWS = np.zeros(0, dtype=np.int64)
_NO_VALUES = np.zeros((0, 4), dtype=np.uint64)


def parse_delta(delta) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, values, classes) of a PortWindows delta: counter rows (uint32) in
    stream order, their (n, 4) uint64 values, the (4, 2) class totals. The
    arrays are views of `delta`."""
    head = np.frombuffer(delta, dtype="<u8", count=HEADER_WORDS)
    n = int(head[12])
    at = HEADER_WORDS * 8
    rows = np.frombuffer(delta, dtype="<u4", count=n, offset=at)
    at += (n * 4 + 7) & ~7
    values = np.frombuffer(delta, dtype="<u8", count=n * 4, offset=at).reshape(n, 4)
    return rows, values, head[4:12].reshape(4, 2)


def _stream_keys(rows: np.ndarray) -> np.ndarray:
    return _PROTO_RANK[rows >> 16] * records.N_PORTS + (rows & 0xFFFF)


def merge_rows(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The sum of several (rows, values) sets, rows in stream order; exact (uint64)."""
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return _NO_ROWS, _NO_VALUES
    if len(parts) == 1:
        return parts[0]
    rows = np.concatenate([r for r, _ in parts])
    values = np.concatenate([v for _, v in parts])
    order = np.argsort(_stream_keys(rows), kind="stable")
    rows, values = rows[order], values[order]
    first = np.flatnonzero(np.concatenate(([True], rows[1:] != rows[:-1])))
    return rows[first], np.add.reduceat(values, first, axis=0)


class PortCounters(Analyser):
    """Packets and bytes per (protocol, port) and direction, and per packet class."""

    name = "ports"
    fields = ("totals", "classes", "ports", "interfaces")

    def __init__(self, ctx: AnalyserContext):
        super().__init__(ctx)
        self._add_rows = core().add_rows
        self._parts: list[list] = [[] for _ in ctx.groups]
        self._classes = [np.zeros((N_CLASSES, 2), dtype=np.uint64) for _ in ctx.groups]
        self._total = [np.zeros((N_ROWS, 4), dtype=np.uint64) for _ in ctx.groups]
        self._total_classes = [np.zeros((N_CLASSES, 2), dtype=np.uint64) for _ in ctx.groups]

    def merge(self, delta, group: int) -> None:
        rows, values, classes = parse_delta(delta)
        self._parts[group].append((rows, values))
        self._classes[group] += classes

    def window(self, start_ns: int, end_ns: int) -> dict:
        merged = [merge_rows(parts) for parts in self._parts]
        fields = self._fields(merged, self._classes)
        for g, (rows, values) in enumerate(merged):
            self._add_rows(self._total[g], np.ascontiguousarray(rows, dtype=np.uint32),
                           np.ascontiguousarray(values, dtype=np.uint64))
            self._total_classes[g] += self._classes[g]
            self._classes[g] = np.zeros((N_CLASSES, 2), dtype=np.uint64)
            self._parts[g] = []
        return fields

    def summary(self) -> dict:
        merged = []
        for table in self._total:
            rows = stream_order(np.flatnonzero(table[:, 0] | table[:, 2]))
            merged.append((rows, table[rows]))
        return self._fields(merged, self._total_classes)

    def _fields(self, merged: list[tuple[np.ndarray, np.ndarray]], classes_per_group) -> dict:
        """totals / classes / ports (the sum of groups), plus per-interface parts."""
        ports = self.ctx.ports
        totals, classes = class_totals(sum(classes_per_group))
        fields = {"totals": totals, "classes": classes,
                  "ports": port_rows(*merge_rows(merged), ports)}
        if len(merged) > 1:
            fields["interfaces"] = []
            for name, (rows, values), g_classes in zip(self.ctx.groups, merged,
                                                       classes_per_group):
                g_totals, g_class = class_totals(g_classes)
                fields["interfaces"].append({"name": name, "totals": g_totals,
                                             "classes": g_class,
                                             "ports": port_rows(rows, values, ports)})
        return fields
