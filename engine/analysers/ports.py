"""The per-port counters (counting-rules sections 3 to 5): the first analyser.

Per counter group (interface), a uint64 table of N_PROTOS * 65536 rows by
(in_packets, in_bytes, out_packets, out_bytes), row ``proto_index << 16 |
port``, and the four class totals (packets, bytes). The native reducer
(pt_engine._core.reduce_records, or its pure-Python twin) does the
per-record work with the GIL released; its bookkeeping array ``state`` is
owned here and nowhere else:

* ``state[0]``: rows in ``touched`` (rows that left all-zero this window, so
  a window is emitted and cleared without scanning the whole table);
* ``state[1]``: the native reducer's error flag;
* ``state[2]``, ``state[3]``: the window start and its late records: kept
  at 0 here, as the windowing (pt_engine.aggregate) counts late records.

Window fields: ``totals``, ``classes``, ``ports`` (the sum of the groups) and,
with several groups, ``interfaces`` (per group).
"""
from __future__ import annotations

import numpy as np

from .. import records
from ..backend import core
from . import Analyser, AnalyserContext

N_ROWS = records.N_PROTOS * records.N_PORTS
N_CLASSES = len(records.CLASS_NAMES)

# Row order of the stream: (protocol name, port), as in the .expected.json files.
_PROTO_RANK = np.argsort(np.argsort(np.array(records.PROTO_NAMES)))
_PROTO_NAME_ARRAY = np.array(records.PROTO_NAMES, dtype=object)


def stream_order(rows: np.ndarray) -> np.ndarray:
    """Counter rows sorted by (protocol name, port)."""
    rows = rows.astype(np.int64)
    return rows[np.argsort(_PROTO_RANK[rows >> 16] * records.N_PORTS + (rows & 0xFFFF),
                           kind="stable")]


def port_rows(rows: np.ndarray, values: np.ndarray, ports) -> list[list]:
    """Stream port rows (pt_engine.stream.PORT_ROW) of counter rows and their values,
    leaving out ports that `ports` (a PortSpec, or None for all) does not select."""
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


class _Window:
    """One group's open window: per-port table, class totals, the rows in use."""

    def __init__(self):
        self.table = np.zeros((N_ROWS, 4), dtype=np.uint64)
        self.classes = np.zeros((N_CLASSES, 2), dtype=np.uint64)
        self.touched = np.zeros(N_ROWS, dtype=np.uint32)
        self.state = np.zeros(4, dtype=np.uint64)   # see the module docstring

    def rows(self) -> np.ndarray:
        """Rows in use (unordered)."""
        return self.touched[:int(self.state[0])].astype(np.int64)

    def clear(self, rows: np.ndarray) -> None:
        """Zero the given rows, the classes and the row count."""
        self.table[rows] = 0
        self.classes[:] = 0
        self.state[0] = 0


class PortCounters(Analyser):
    """Packets and bytes per (protocol, port) and direction, and per packet class."""

    name = "ports"
    fields = ("totals", "classes", "ports", "interfaces")

    def __init__(self, ctx: AnalyserContext):
        super().__init__(ctx)
        self._reduce = core().reduce_records
        self._open = [_Window() for _ in ctx.groups]
        self._total = [np.zeros((N_ROWS, 4), dtype=np.uint64) for _ in ctx.groups]
        self._total_classes = [np.zeros((N_CLASSES, 2), dtype=np.uint64) for _ in ctx.groups]

    def consume(self, batch, start: int, stop: int, group: int) -> None:
        w = self._open[group]
        self._reduce(batch, start, stop, records.UINT64_MAX, w.table, w.classes, w.touched,
                     w.state)

    def window(self, start_ns: int, end_ns: int) -> dict:
        rows_per_group = [w.rows() for w in self._open]
        fields = self._fields([w.table for w in self._open], rows_per_group,
                              [w.classes for w in self._open])
        for g, (w, rows) in enumerate(zip(self._open, rows_per_group)):
            self._total[g][rows] += w.table[rows]
            self._total_classes[g] += w.classes
            w.clear(rows)
        return fields

    def summary(self) -> dict:
        rows = [np.flatnonzero(t[:, 0] | t[:, 2]) for t in self._total]
        return self._fields(self._total, rows, self._total_classes)

    def _fields(self, tables, rows_per_group, classes_per_group) -> dict:
        """totals / classes / ports (the sum of groups), plus per-interface parts."""
        ports = self.ctx.ports
        rows = stream_order(np.unique(np.concatenate(rows_per_group)))
        values = sum(t[rows] for t in tables) if len(tables) > 1 else tables[0][rows]
        totals, classes = class_totals(sum(classes_per_group))
        fields = {"totals": totals, "classes": classes, "ports": port_rows(rows, values, ports)}
        if len(tables) > 1:
            fields["interfaces"] = []
            for name, table, g_rows, g_classes in zip(self.ctx.groups, tables,
                                                      rows_per_group, classes_per_group):
                g_rows = stream_order(g_rows)
                g_totals, g_class = class_totals(g_classes)
                fields["interfaces"].append({"name": name, "totals": g_totals,
                                             "classes": g_class,
                                             "ports": port_rows(g_rows, table[g_rows], ports)})
        return fields
