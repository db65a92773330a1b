"""The stream format's one owner (docs/stream-format.md): every record is built here.

A stream is a sequence of self-describing records (maps with a "type"):
``hello`` first, then one ``window`` per interval with traffic, then a final
``summary``; a UNIX-socket subscriber that joins late gets a ``snapshot``
(same shape as ``summary``) right after its ``hello``. Between windows may
come ``alert`` / ``resolved`` records (observers such as pt_engine.alerts)
and ``event`` records (a capture process failed or restarted).

The builders below fix each record's keys and their order (the golden
outputs are compared byte for byte, and msgpack keeps key order). Analysers
contribute their own fields to ``window`` and ``summary`` records
(pt_engine.analysers); the builders place them. Port rows are lists, read by
column name through ``COL`` (``row[COL.in_bytes]``), never by bare position.

Encoders (``encoder``) turn a record into bytes: concatenated msgpack maps,
or JSON lines; sinks (pt_engine.sinks) call them.
"""
from __future__ import annotations

import json
from collections.abc import Sequence

import msgpack

from . import __version__
from .records import PROTO_NAMES    # by counter-row block

FORMAT_NAME = "pt-engine-stream"
FORMAT_VERSION = 1
FORMATS = ("msgpack", "json")
RECORD_TYPES = ("hello", "snapshot", "window", "alert", "resolved", "event", "summary",
                "ping", "scan")

PORT_ROW = ("proto", "port", "in_packets", "in_bytes", "out_packets", "out_bytes")


class _Columns:
    """Index of each port-row column by name: ``COL.in_bytes`` is 3."""

    __slots__ = PORT_ROW

    def __init__(self):
        for i, name in enumerate(PORT_ROW):
            object.__setattr__(self, name, i)

    def __setattr__(self, name, value):
        raise AttributeError("port-row columns are fixed by the stream format")

    def of(self, *names: str) -> tuple[int, ...]:
        """The indices of several columns: ``COL.of('in_bytes', 'out_bytes')``."""
        return tuple(getattr(self, name) for name in names)


COL = _Columns()


def row_key(row: list) -> tuple[str, int]:
    """(proto, port) of a port row."""
    return row[COL.proto], row[COL.port]




class NativeRows(Sequence):
    """Rows of a window or summary kept as numpy arrays: the msgpack encoder
    writes them natively (msgpack()), without a Python list per row; to Python
    code (observers, JSON) they are the list of rows they stand for (tolist(),
    built once, on first use)."""

    __slots__ = ("_list",)

    def __init__(self):
        self._list: list | None = None

    def _rows(self) -> list[list]:
        raise NotImplementedError

    def msgpack(self) -> bytes:
        """The msgpack array of the rows, as msgpack-python would write the lists."""
        raise NotImplementedError

    def tolist(self) -> list[list]:
        """The rows as lists (built once)."""
        if self._list is None:
            self._list = self._rows()
        return self._list

    def __getitem__(self, index):
        return self.tolist()[index]

    def __iter__(self):
        return iter(self.tolist())

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and list(self) == list(other)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.tolist()!r})"


class PortRows(NativeRows):
    """The ``ports`` value of a window or summary: counter rows (``proto_row << 16
    | port``, pt_engine.records) in stream order and their (in_packets, in_bytes,
    out_packets, out_bytes); PORT_ROW rows to Python code."""

    __slots__ = ("rows", "values")

    def __init__(self, rows, values):
        super().__init__()
        self.rows = rows
        self.values = values

    def _rows(self) -> list[list]:
        rows = self.rows.tolist()
        names = [PROTO_NAMES[r >> 16] for r in rows]
        ports = [r & 0xFFFF for r in rows]
        return list(map(list, zip(names, ports, *self.values.T.tolist())))

    def msgpack(self) -> bytes:
        import numpy as np
        from .backend import core
        return core().encode_port_rows(np.ascontiguousarray(self.rows, dtype=np.uint32),
                                       np.ascontiguousarray(self.values, dtype=np.uint64)
                                       .reshape(-1, 4))

    def __len__(self) -> int:
        return len(self.rows)


# --- records ---------------------------------------------------------------------------

def hello(sources: list[dict], interval_ns: int, bpf: str | None, ports: str | None,
          backend: str, addresses: str = "pseudonymise") -> dict:
    """The first record: what produced the stream and how to read it; `addresses`
    is the --addresses policy in force (pt_engine.addresses)."""
    return {
        "type": "hello",
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "engine_version": __version__,
        "backend": backend,
        "interval_ns": interval_ns,
        "filter": bpf,
        "ports_selected": ports,
        "sources": sources,
        "port_row": list(PORT_ROW),
        "addresses": addresses,
    }


def window(start_ns: int, end_ns: int, analysed: dict, late_packets: int,
           sources: list[dict] | None = None) -> dict:
    """One interval: the analysers' fields (`analysed`), then the windowing's own;
    `sources` (live runs) are the capture processes' counters."""
    record = {"type": "window", "start_ns": start_ns, "end_ns": end_ns, **analysed,
              "late_packets": late_packets}
    if sources is not None:
        record["sources"] = sources
    return record


def summary(kind: str, start_ns: int | None, end_ns: int | None, windows: int,
            late_packets: int, analysed: dict, interrupted: bool | None = None,
            sources: list[dict] | None = None, outputs: list[dict] | None = None) -> dict:
    """The cumulative counters: `kind` "summary" (last record; with `interrupted`
    and `sources`, and `outputs` when an output dropped records or failed) or
    "snapshot" (for a subscriber that joins a running engine)."""
    if kind not in ("summary", "snapshot"):
        raise ValueError(f"a summary-shaped record is 'summary' or 'snapshot', not {kind!r}")
    record = {"type": kind, "start_ns": start_ns, "end_ns": end_ns, "windows": windows,
              "late_packets": late_packets, **analysed}
    if interrupted is not None:
        record["interrupted"] = interrupted
    if sources is not None:
        record["sources"] = sources
    if outputs:
        record["outputs"] = outputs
    return record


def capture_failed(source: int, message: str) -> dict:
    """Event: a capture process failed (`source` indexes the hello's sources)."""
    return {"type": "event", "kind": "capture_failed", "source": source, "message": message}


def capture_restarted(source: int, restarts: int) -> dict:
    """Event: the replacement of a failed capture process is capturing."""
    return {"type": "event", "kind": "capture_restarted", "source": source,
            "restarts": restarts}


def alert(rule: str, scope: str, proto: str, port: int | str, direction: str, metric: str,
          op: str, value: float, limit: float, window_start_ns: int, window_end_ns: int,
          since_ns: int, windows_over: int) -> dict:
    """A threshold rule fired (pt_engine.alerts)."""
    return {**_alert_fields("alert", rule, scope, proto, port, direction, metric, op, value,
                            limit, window_start_ns, window_end_ns),
            "since_ns": since_ns, "windows_over": windows_over}


def resolved(rule: str, scope: str, proto: str, port: int | str, direction: str, metric: str,
             op: str, value: float, limit: float, window_start_ns: int, window_end_ns: int,
             clear_level: float, since_ns: int, fired_ns: int, peak: float) -> dict:
    """A rule's alert ended: the rate is back past `clear_level` (below it for
    op '>', above it for '<')."""
    return {**_alert_fields("resolved", rule, scope, proto, port, direction, metric, op, value,
                            limit, window_start_ns, window_end_ns),
            ("clear_above" if op == "<" else "clear_below"): clear_level,
            "since_ns": since_ns, "fired_ns": fired_ns,
            "duration_ns": window_start_ns - fired_ns, "peak": peak}


# --- active probing (pt_engine.probe) ------------------------------------------------

def probe_hello(command: str, method: str, targets: list[dict], ports: list[int] | None,
                count: int | None, interval_ns: int, timeout_ns: int, rate_pps: float,
                concurrency: int, backend: str, addresses: str = "clear") -> dict:
    """The first record of a `ping` or `scan` stream: what is probed, how and how
    fast, and the --addresses policy its target addresses are shown by."""
    return {"type": "hello", "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
            "engine_version": __version__, "backend": backend, "command": command,
            "method": method, "targets": targets, "ports": ports, "count": count,
            "interval_ns": interval_ns, "timeout_ns": timeout_ns, "rate_pps": rate_pps,
            "concurrency": concurrency, "addresses": addresses}


def ping(target: str, port: int | None, figures: dict, window_start_ns: int,
         window_end_ns: int, up: bool | None = None) -> dict:
    """One target's (and port's) window of probes, or with `up` its final totals;
    `figures` from pt_engine.probe.stats (sent ... jitter_rfc3550_ns)."""
    record = {"type": "ping", "target": target, "port": port, **figures,
              "window_start_ns": window_start_ns, "window_end_ns": window_end_ns}
    if up is not None:
        record["final"] = True
        record["up"] = up
    return record


def scan(target: str, ports: list[dict], start_ns: int, end_ns: int) -> dict:
    """One target's scan: every port probed, `{port, proto, state, rtt_ns}` by port."""
    states = [p["state"] for p in ports]
    return {"type": "scan", "target": target, "ports": ports,
            **{state: states.count(state) for state in ("open", "closed", "filtered")},
            "start_ns": start_ns, "end_ns": end_ns}


def ping_alert(rule: str, target: str, port: int | None, metric: str, op: str, value: float,
               limit: float, window_start_ns: int, window_end_ns: int, since_ns: int,
               windows_over: int) -> dict:
    """A ping rule fired (pt_engine.alerts): `windows_over` ping windows in a row past it."""
    return {"type": "alert", "rule": rule, "target": target, "port": port, "metric": metric,
            "op": op, "value": value, "limit": limit, "window_start_ns": window_start_ns,
            "window_end_ns": window_end_ns, "since_ns": since_ns, "windows_over": windows_over}


def ping_resolved(rule: str, target: str, port: int | None, metric: str, op: str,
                  value: float, limit: float, window_start_ns: int, window_end_ns: int,
                  clear_level: float, since_ns: int, fired_ns: int, peak: float) -> dict:
    """A ping rule's alert ended."""
    return {"type": "resolved", "rule": rule, "target": target, "port": port,
            "metric": metric, "op": op, "value": value, "limit": limit,
            "window_start_ns": window_start_ns, "window_end_ns": window_end_ns,
            ("clear_above" if op == "<" else "clear_below"): clear_level,
            "since_ns": since_ns, "fired_ns": fired_ns,
            "duration_ns": window_start_ns - fired_ns, "peak": peak}


def _alert_fields(kind, rule, scope, proto, port, direction, metric, op, value, limit,
                  window_start_ns, window_end_ns) -> dict:
    return {"type": kind, "rule": rule, "scope": scope, "proto": proto, "port": port,
            "direction": direction, "metric": metric, "op": op, "value": value,
            "limit": limit, "window_start_ns": window_start_ns,
            "window_end_ns": window_end_ns}


# --- encoding --------------------------------------------------------------------------

_COUNTED = ("window", "summary", "snapshot")     # records that may hold NativeRows


def encoder(fmt: str):
    """A function record -> bytes for 'msgpack' or 'json' (one line per record)."""
    if fmt == "msgpack":
        packer = msgpack.Packer(use_bin_type=True)

        def pack_value(value) -> bytes:
            # The bytes Packer.pack would write, with NativeRows encoded natively.
            if isinstance(value, NativeRows):
                return value.msgpack()
            if isinstance(value, dict):
                return packer.pack_map_header(len(value)) + b"".join(
                    packer.pack(k) + pack_value(v) for k, v in value.items())
            if isinstance(value, list):
                if not any(isinstance(v, (NativeRows, dict)) for v in value):
                    return packer.pack(value)   # plain lists: all in C
                return packer.pack_array_header(len(value)) + b"".join(map(pack_value, value))
            return packer.pack(value)

        def pack(record: dict) -> bytes:
            return pack_value(record) if record.get("type") in _COUNTED else packer.pack(record)
        return pack
    if fmt == "json":
        return lambda record: json.dumps(record, separators=(",", ":"),
                                         default=_plain).encode() + b"\n"
    raise ValueError(f"unknown stream format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _plain(value):
    if isinstance(value, NativeRows):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not part of the stream format")


def decode(data: bytes, fmt: str = "msgpack") -> list[dict]:
    """All records in a complete stream (for tests and small consumers)."""
    if fmt == "json":
        return [json.loads(line) for line in data.splitlines() if line.strip()]
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    return list(unpacker)
