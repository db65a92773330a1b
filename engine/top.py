"""`pt-engine top`: a live table of which ports carry the traffic, and who owns them.

top consumes stream records only (pt_engine.stream). Standalone, it starts
`pt-engine run` with a private UNIX socket and subscribes to it; with
`--connect unix:/path` it subscribes to a running engine and captures nothing
itself. On a terminal it draws with curses and answers keys; otherwise it
prints one plain-text table per window, for pipes and logs.
"""
from __future__ import annotations

import functools
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from .analysers import tcp_quality as quality
from .errors import ConfigError, EngineError
from .stream import COL

SORTS = ("rate", "total", "port", "rtt", "retrans")
# The TCP quality columns sum the rows of this many windows, the last one included.
QUALITY_WINDOWS = 10
PROTOS = (None, "tcp", "udp", "sctp", "udplite", "dccp")
# Every key of the terminal face: (keys, what they do) for the help screen, and
# the short words of the legend line, most useful first (the line keeps the
# words that fit, whole).
KEYS = (
    ("q", "quit (Ctrl-C too)"),
    ("h ?", "this help; any key leaves it"),
    ("j k  Down Up", "move the selection one row"),
    ("PgDn PgUp", "move it a page"),
    ("Home End", "to the first / last row"),
    ("s", "cycle the sort: rate, total, port, rtt, retrans"),
    ("r t p", "sort by rate / total / port"),
    ("l x", "sort by RTT p95 / retransmitted % of data segments"),
    ("f", "cycle a protocol filter"),
    ("/", "show one port (a number or a service name)"),
    ("c", "clear the filters"),
    ("e", "fold / unfold the ephemeral (client) ports"),
    ("a", "the selected port's talkers, in and out (a again: back)"),
    ("n", "service names / port numbers"),
    ("b", "rates in bits / bytes per second"),
    ("space", "pause the display (counting goes on)"),
)
LEGEND = ("q quit", "h help", "j/k move", "s sort", "f proto", "/ port", "a talkers",
          "e fold", "space pause", "n names", "b bits", "l rtt", "x retrans")
# The port of a folded row: after every real port when sorted by port.
EPHEMERAL = 65536
EPHEMERAL_DEFAULT = (32768, 60999)     # Linux's default ip_local_port_range
EPHEMERAL_RANGE_FILE = "/proc/sys/net/ipv4/ip_local_port_range"


@dataclass
class Row:
    """One (port, protocol, direction) line of the table."""

    proto: str
    port: int
    direction: str            # "in" (towards the port) or "out" (from it)
    bytes_per_s: float = 0.0
    packets_per_s: float = 0.0
    total_bytes: int = 0
    total_packets: int = 0
    window_ns: int = 0        # start of the last window this row had traffic in
    alert: bool = False
    seen_ns: int | None = None  # for expiry: window_ns, or the first window after a snapshot
    ports: int = 1            # ports folded into this row (the ephemeral row: several)
    quality: list | None = None  # TCP quality values of the last QUALITY_WINDOWS windows

    def figure(self, name: str) -> float | None:
        """A TCP quality figure (analysers.tcp_quality METRICS), None without one."""
        return quality.metric(self.quality, name)

    @property
    def key(self) -> tuple:
        return (self.proto, self.port, self.direction)


@dataclass
class NicRates:
    """psutil's counters for one interface, as per-second rates since the last look."""

    name: str
    rx_bytes_s: float
    tx_bytes_s: float
    rx_packets_s: float
    tx_packets_s: float
    errors: int
    drops: int


_COLUMNS = COL.of("proto", "port", "in_packets", "in_bytes", "out_packets", "out_bytes")


def _named(rows: list) -> list[tuple]:
    """Port rows as (proto, port, in_packets, in_bytes, out_packets, out_bytes), read
    by column name."""
    return [tuple(row[c] for c in _COLUMNS) for row in rows]


def ephemeral_range(path: str = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """The system's ephemeral (client) port range, from ip_local_port_range; Linux's
    default 32768-60999 where it cannot be read or makes no sense."""
    try:
        with open(path) as fh:
            lo, hi = (int(word) for word in fh.read().split())
    except (OSError, ValueError):
        return EPHEMERAL_DEFAULT
    return (lo, hi) if 1 <= lo <= hi <= 65535 else EPHEMERAL_DEFAULT


def folded_port(port: int, span: tuple[int, int] | None, keep=()) -> int:
    """EPHEMERAL for a port in `span` (lo, hi: inclusive; None folds nothing) that is
    not in `keep`, else the port."""
    if span is not None and span[0] <= port <= span[1] and port not in keep:
        return EPHEMERAL
    return port


def kept_ports(text: str | None) -> frozenset:
    """The ports of a --ports spec (the hello's ports_selected): never folded."""
    if not text:
        return frozenset()
    from .config import PortSpec
    try:
        spec = PortSpec.parse(text)
    except EngineError:
        return frozenset()
    return frozenset(int(p) for p in spec.mask.nonzero()[0]) if spec else frozenset()


@dataclass
class TopModel:
    """Everything the screen shows, built from stream records only.

    `expire`: a row without traffic for this many windows leaves the table (None:
    a minute's worth of windows of the hello's interval; 0: never). Rows under an
    active alert stay. `ephemeral`: the port range `visible` folds.
    """

    interval_s: float = 1.0
    sources: list = field(default_factory=list)
    rows: dict = field(default_factory=dict)        # (proto, port, direction) -> Row
    window_ns: int | None = None
    window_totals: dict = field(default_factory=lambda: {"packets": 0, "bytes": 0})
    window_classes: dict = field(default_factory=dict)
    captured: dict = field(default_factory=dict)    # interface -> (packets, bytes) this window
    drops: int = 0
    alerts: set = field(default_factory=set)
    messages: list = field(default_factory=list)
    ended: bool = False
    windows: int = 0
    expire: int | None = None
    ephemeral: tuple[int, int] = field(default_factory=ephemeral_range)
    kept: frozenset = frozenset()                   # ports never folded (--ports)
    # (proto, port, direction) -> [(window start, quality values)], the recent ones
    recent_quality: dict = field(default_factory=dict)
    has_quality: bool = False                       # the stream carries tcp_quality
    # (proto, port) -> (window start, the talkers entry of the last window that had one)
    talkers: dict = field(default_factory=dict)
    talkers_policy: str | None = None               # None: the stream carries no talkers
    talkers_bound: int = 0

    @property
    def interval_ns(self) -> int:
        return round(self.interval_s * 1e9)

    @property
    def expire_windows(self) -> int:
        """Idle windows after which a row leaves (0: never)."""
        if self.expire is not None:
            return self.expire
        return max(1, round(60e9 / self.interval_ns))

    def feed(self, record: dict) -> bool:
        """Take one stream record; True if it changes what a window shows."""
        kind = record.get("type")
        if kind == "hello":
            self.interval_s = record["interval_ns"] / 1e9
            self.sources = record.get("sources", [])
            self.kept = kept_ports(record.get("ports_selected"))
        elif kind == "snapshot":
            for proto, port, ip, ib, op, ob in _named(record["ports"]):
                self._row(proto, port, "in").total_bytes += ib
                self._row(proto, port, "in").total_packets += ip
                self._row(proto, port, "out").total_bytes += ob
                self._row(proto, port, "out").total_packets += op
        elif kind == "window":
            self._window(record)
            return True
        elif kind == "alert":
            self.alerts.add((record.get("proto"), record.get("port"), record.get("direction")))
            self.messages.append(_alert_text(record))
        elif kind == "resolved":
            self.alerts.discard((record.get("proto"), record.get("port"), record.get("direction")))
            self.messages.append(_alert_text(record))
        elif kind == "event":
            self.messages.append(f"{record.get('kind')}: {record.get('message', '')}")
        elif kind == "summary":
            self.ended = True
            return True
        return False

    def _row(self, proto: str, port: int, direction: str) -> Row:
        key = (proto, port, direction)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = Row(proto, port, direction)
        return row

    def _window(self, record: dict) -> None:
        seconds = (record["end_ns"] - record["start_ns"]) / 1e9 or self.interval_s
        for row in self.rows.values():
            row.bytes_per_s = row.packets_per_s = 0.0
        for proto, port, ip, ib, op, ob in _named(record["ports"]):
            for direction, packets, nbytes in (("in", ip, ib), ("out", op, ob)):
                if not packets:
                    continue
                row = self._row(proto, port, direction)
                row.bytes_per_s = nbytes / seconds
                row.packets_per_s = packets / seconds
                row.total_bytes += nbytes
                row.total_packets += packets
                row.window_ns = record["start_ns"]
        self.window_ns = record["start_ns"]
        self._quality(record)
        self._talkers(record)
        self._expire(record["start_ns"])
        self.window_totals = record["totals"]
        self.window_classes = record["classes"]
        self.windows += 1
        if "interfaces" in record:
            self.captured = {i["name"]: (i["totals"]["packets"], i["totals"]["bytes"])
                             for i in record["interfaces"]}
        elif self.sources:
            self.captured = {self.sources[0]["name"]: (record["totals"]["packets"],
                                                       record["totals"]["bytes"])}
        self.drops = sum(s.get("dropped", 0) + s.get("if_dropped", 0)
                         + s.get("transport_dropped", 0) for s in record.get("sources", []))

    def _quality(self, record: dict) -> None:
        """Keep each row's quality values of the last QUALITY_WINDOWS windows and
        merge them into Row.quality."""
        start, recent = record["start_ns"], self.recent_quality
        if "tcp_quality" in record:
            self.has_quality = True
            for qrow in record["tcp_quality"]["rows"]:
                key = ("tcp", qrow[1], qrow[2])
                recent.setdefault(key, []).append((start, quality.row_values(qrow)))
        oldest = start - (QUALITY_WINDOWS - 1) * self.interval_ns
        for key in list(recent):
            kept = [(t, v) for t, v in recent[key] if t >= oldest]
            row = self.rows.get(key)
            if row is not None:
                row.quality = quality.merged([v for _, v in kept])
            if kept:
                recent[key] = kept
            else:
                del recent[key]

    def _talkers(self, record: dict) -> None:
        part = record.get("talkers")
        if part is None:
            return
        self.talkers_policy, self.talkers_bound = part["addresses"], part["bound"]
        for entry in part["ports"]:
            self.talkers[(entry["proto"], entry["port"])] = (record["start_ns"], entry)

    def _expire(self, start_ns: int) -> None:
        """Drop the rows idle for expire_windows windows up to the one at start_ns
        (by time: `read` writes no window for a quiet interval)."""
        limit = self.expire_windows
        gone = []
        for key, row in self.rows.items():
            if row.window_ns:
                row.seen_ns = row.window_ns
            elif row.seen_ns is None:      # from a snapshot: counted from now
                row.seen_ns = start_ns
            if limit and (start_ns - row.seen_ns) // self.interval_ns >= limit \
                    and not self._alerted(row):
                gone.append(key)
        for key in gone:
            del self.rows[key]
            self.recent_quality.pop(key, None)
        for key, (at, _) in list(self.talkers.items()):
            if limit and (start_ns - at) // self.interval_ns >= limit:
                del self.talkers[key]

    def _alerted(self, row: Row) -> bool:
        return (row.proto, row.port, row.direction) in self.alerts or \
            (row.proto, row.port, "both") in self.alerts

    def visible(self, sort: str, proto: str | None, port: int | None,
                fold: bool = False) -> list[Row]:
        """Rows to show, filtered and sorted (highest first for rate and total).

        `fold`: ports in the ephemeral range, except the --ports ones and the one
        `port` shows, are summed into one row per protocol and direction (port
        EPHEMERAL); the model keeps every port exact."""
        rows = [r for r in self.rows.values()
                if (proto is None or r.proto == proto) and (port is None or r.port == port)]
        for r in rows:
            r.alert = self._alerted(r)
        if fold and port is None:
            rows = self._folded(rows)
        if sort == "rate":
            rows.sort(key=lambda r: (-r.bytes_per_s, -r.total_bytes, r.proto, r.port))
        elif sort == "total":
            rows.sort(key=lambda r: (-r.total_bytes, r.proto, r.port, r.direction))
        elif sort in ("rtt", "retrans"):
            name = "rtt_p95_ms" if sort == "rtt" else "retrans_ratio"
            rows.sort(key=lambda r: (r.figure(name) is None, -(r.figure(name) or 0),
                                     -r.bytes_per_s, r.proto, r.port, r.direction))
        else:
            rows.sort(key=lambda r: (r.port, r.proto, r.direction))
        return rows

    def _folded(self, rows: list[Row]) -> list[Row]:
        out, folds = [], {}
        for r in rows:
            if folded_port(r.port, self.ephemeral, self.kept) != EPHEMERAL:
                out.append(r)
                continue
            f = folds.get((r.proto, r.direction))
            if f is None:
                f = folds[(r.proto, r.direction)] = Row(r.proto, EPHEMERAL, r.direction,
                                                        ports=0)
            f.bytes_per_s += r.bytes_per_s
            f.packets_per_s += r.packets_per_s
            f.total_bytes += r.total_bytes
            f.total_packets += r.total_packets
            f.window_ns = max(f.window_ns, r.window_ns)
            f.alert = f.alert or r.alert
            f.ports += 1
            if r.quality is not None:
                f.quality = quality.merged([v for v in (f.quality, r.quality) if v])
        return out + list(folds.values())


def _alert_text(record: dict) -> str:
    what = f"{record.get('proto')}/{record.get('port')} {record.get('direction')}"
    if record["type"] == "alert":
        return f"ALERT {record.get('rule', '')}: {what} {record.get('metric')} " \
               f"{record.get('value')} > {record.get('limit')}"
    return f"resolved {record.get('rule', '')}: {what}"


# --- port owners and NIC counters (psutil) -------------------------------------

class Owners:
    """Which process owns a local port (psutil connections), refreshed now and then:
    in this network namespace and in each one the stream's sources capture in
    (`sources`: returns the hello's source entries; NETNS or pid:PID in `netns`),
    each looked up from inside that namespace (root: entering one needs it)."""

    def __init__(self, every: float = 2.0, sources=lambda: []):
        self.every = every
        self.sources = sources
        self._at = 0.0
        self._map: dict[tuple[str, int], str] = {}

    def get(self, proto: str, port: int) -> str:
        """'pid/name' of the owner of (proto, local port), or '-' if unknown."""
        now = time.monotonic()
        if now - self._at >= self.every:
            self._at = now
            self._map = self._scan_all(netns_paths(self.sources()))
        return self._map.get((proto, port), "-")

    @classmethod
    def _scan_all(cls, paths: list[str]) -> dict:
        from .errors import CaptureError
        from .sources import netns_entered
        owners = cls._scan()
        for path in paths:
            try:
                with netns_entered(path):
                    found = cls._scan()      # /proc/net of the namespace entered
            except (CaptureError, OSError):
                continue                     # gone, or not ours to enter
            for key, owner in found.items():
                owners.setdefault(key, owner)
        return owners

    @staticmethod
    def _scan() -> dict:
        import psutil
        import socket
        owners: dict[tuple[str, int], str] = {}
        names: dict[int, str] = {}
        try:
            conns = psutil.net_connections(kind="inet")
        except (psutil.AccessDenied, OSError):
            return owners
        for c in conns:
            if not c.laddr or c.pid is None:
                continue
            proto = "tcp" if c.type == socket.SOCK_STREAM else "udp"
            if c.pid not in names:
                try:
                    names[c.pid] = psutil.Process(c.pid).name()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    names[c.pid] = "?"
            owners.setdefault((proto, c.laddr.port), f"{c.pid}/{names[c.pid]}")
        return owners


def netns_paths(sources: list[dict]) -> list[str]:
    """The namespace files of the sources captured in other network namespaces."""
    from .sources import NETNS_DIR
    paths: list[str] = []
    for source in sources:
        where = source.get("netns")
        if not where:
            continue
        path = (f"/proc/{where[4:]}/ns/net" if where.startswith("pid:")
                else os.path.join(NETNS_DIR, where))
        if path not in paths:
            paths.append(path)
    return paths


class Nics:
    """Per-NIC rates from psutil.net_io_counters(pernic=True)."""

    def __init__(self):
        self._last = None
        self._at = 0.0

    def rates(self, names: list[str]) -> list[NicRates]:
        """Rates since the previous call for the named interfaces."""
        import psutil
        if not names:
            return []
        now = time.monotonic()
        counters = psutil.net_io_counters(pernic=True)
        out = []
        if self._last is not None:
            dt = max(now - self._at, 1e-6)
            for name in names:
                cur, old = counters.get(name), self._last.get(name)
                if cur is None or old is None:
                    continue
                out.append(NicRates(name, (cur.bytes_recv - old.bytes_recv) / dt,
                                    (cur.bytes_sent - old.bytes_sent) / dt,
                                    (cur.packets_recv - old.packets_recv) / dt,
                                    (cur.packets_sent - old.packets_sent) / dt,
                                    cur.errin + cur.errout, cur.dropin + cur.dropout))
        self._last, self._at = counters, now
        return out


# --- rendering -------------------------------------------------------------------
# Pure functions of the model and a width: the plain face prints their lines, the
# terminal face draws them (screen_lines), so both can be tested without a terminal.

_BYTE_UNITS = ("B", "kB", "MB", "GB", "TB")
_BIT_UNITS = ("b", "kb", "Mb", "Gb", "Tb")


def _scaled(value: float, units: tuple[str, ...]) -> str:
    """`value` in the largest decimal unit (powers of 1000) that keeps it under 1000:
    whole numbers in the first unit, one decimal in the others."""
    i = 0
    while i < len(units) - 1 and round(value, 1 if i else 0) >= 1000:
        value /= 1000
        i += 1
    return f"{value:.0f} {units[0]}" if i == 0 else f"{value:.1f} {units[i]}"


def fmt_rate(bytes_per_s: float, bits: bool = False) -> str:
    """A rate in decimal units (1 kB = 1000 bytes): B/s, kB/s, MB/s, GB/s; with
    `bits` (-b) b/s, kb/s, Mb/s, Gb/s."""
    if bits:
        return _scaled(bytes_per_s * 8, _BIT_UNITS) + "/s"
    return _scaled(bytes_per_s, _BYTE_UNITS) + "/s"


def fmt_bytes(n: float) -> str:
    """A total in decimal units: B, kB, MB, GB (bytes also with -b, as iftop's totals)."""
    return _scaled(n, _BYTE_UNITS)


def fmt_time(ns: int | None) -> str:
    """HH:MM:SS (UTC) of a timestamp in ns."""
    if not ns:
        return "--:--:--"
    return time.strftime("%H:%M:%S", time.gmtime(ns / 1e9))


def _short(x: float) -> str:
    return f"{x:.1f}" if x < 10 else f"{x:.0f}"


def fmt_rtt_range(bounds: tuple[int, float] | None) -> str:
    """A histogram bucket [lo, hi) ns as '33-66ms', '64-128us', '<1us', '>1074s';
    '-' for none."""
    if bounds is None:
        return "-"
    lo, hi = bounds
    if lo == 0:
        return "<1us"
    if hi == float("inf"):
        return f">{lo / 1e9:.0f}s"
    scale, unit = (1e3, "us") if hi <= 1e6 else (1e6, "ms") if hi <= 1e9 else (1e9, "s")
    return f"{_short(lo / scale)}-{_short(hi / scale)}{unit}"


def fmt_ms(ms: float | None) -> str:
    """Milliseconds: '0.42ms', '3.1ms', '250ms'; '-' for none."""
    if ms is None:
        return "-"
    return f"{ms:.2f}ms" if ms < 1 else f"{_short(ms)}ms"


def quality_cells(row: Row) -> dict:
    """The TCP quality columns of a row: p50 and p95 as their histogram buckets,
    mean jitter, retransmitted % of data segments, gaps; '-' where the row has
    no figure (no TCP quality rows, no sample, no data segment)."""
    values = row.quality
    hist = values[quality.N_COUNTERS:] if values else None
    retrans = row.figure("retrans_ratio")
    return {"rtt50": fmt_rtt_range(hist and quality.percentile_range(hist, 0.5)),
            "rtt95": fmt_rtt_range(hist and quality.percentile_range(hist, 0.95)),
            "jitter": fmt_ms(row.figure("jitter_ms")),
            "retr": "-" if retrans is None else f"{retrans * 100:.1f}",
            "gaps": "-" if values is None or not values[quality.DATA_SEGMENTS]
            else str(values[quality.GAPS])}


@functools.lru_cache(maxsize=None)
def service_name(proto: str, port: int) -> str | None:
    """The name /etc/services gives `port` for tcp or udp (other protocols have
    none there), or None. Looked up once per (proto, port)."""
    if proto not in ("tcp", "udp") or not 0 <= port <= 65535:
        return None
    try:
        return socket.getservbyport(port, proto)
    except OSError:
        return None


def port_text(row: Row, names: bool = True) -> str:
    """'443/https' (names), '443' (-n, or a port without a name), 'ephemeral'."""
    if row.port == EPHEMERAL:
        return "ephemeral"
    name = service_name(row.proto, row.port) if names else None
    return f"{row.port}/{name}" if name else str(row.port)


def parse_port(text: str) -> int | None:
    """What the / prompt takes: a port number or a service name; None for all."""
    word = text.strip()
    if word.isascii() and word.isdigit():
        return int(word) if int(word) <= 65535 else None
    for proto in ("tcp", "udp"):
        try:
            return socket.getservbyname(word, proto)
        except OSError:
            continue
    return None


# The table's columns: key, title, width, right-aligned. OWNER takes what is left.
_TABLE = (("port", "PORT", 16, False), ("proto", "PROTO", 7, False),
            ("dir", "DIR", 3, False), ("rate", "RATE", 10, True), ("pkts", "PKT/S", 8, True),
            ("total", "TOTAL", 9, True), ("window", "WINDOW", 8, True))
# With TCP quality in the stream (the last QUALITY_WINDOWS windows).
_QUALITY = (("rtt50", "RTT P50", 9, True), ("rtt95", "RTT P95", 9, True),
            ("jitter", "JITTER", 7, True), ("retr", "RETR%", 5, True),
            ("gaps", "GAPS", 5, True))
OWNER_MIN = 8          # narrower than this, the owner column goes first
PORT_MIN = 9           # 'ephemeral'; longer service names are cut
# then these go, in this order
_DROP = ("window", "pkts", "gaps", "jitter", "rtt50", "retr", "rtt95", "total")


def columns(width: int | None, with_quality: bool = False) -> list[tuple[str, str, int, bool]]:
    """The columns that fit in `width` characters (None: all, OWNER unbounded, as
    width 0). Narrower than the full table, OWNER goes first, then PORT shrinks,
    then WINDOW and PKT/S go, then the quality columns (`with_quality`) but
    RTT P95 and RETR%, then those, then TOTAL."""
    cols = list(_TABLE) + (list(_QUALITY) if with_quality else [])
    if width is None:
        return cols + [("owner", "OWNER", 0, False)]

    def used() -> int:
        return sum(c[2] for c in cols) + len(cols) - 1

    if width - used() - 2 >= OWNER_MIN:
        return cols + [("owner", "OWNER", width - used() - 2, False)]
    key, title, full, right = cols[0]
    cols[0] = (key, title, max(PORT_MIN, full - (used() - width)), right)
    for drop in _DROP:
        if used() <= width:
            break
        cols = [c for c in cols if c[0] != drop]
    return cols


def _join(cells: dict, cols) -> str:
    out = []
    for key, _, width, right in cols:
        text = cells[key]
        if width:
            text = text[:width].rjust(width) if right else text[:width].ljust(width)
        out.append(("  " if key == "owner" else " ") + text if out else text)
    return "".join(out).rstrip()


def heading(cols) -> str:
    return _join({key: title for key, title, _, _ in cols}, cols)


def row_line(row: Row, cols, owners: Owners | None, names: bool = True,
             bits: bool = False) -> str:
    """One row of the table in `cols`; the owner is looked up only if shown."""
    owner = "-"
    if row.port == EPHEMERAL:
        owner = f"{row.ports} ports"
    elif owners is not None and any(c[0] == "owner" for c in cols):
        owner = owners.get(row.proto, row.port)
    cells = {"port": port_text(row, names), "proto": row.proto, "dir": row.direction,
             "rate": fmt_rate(row.bytes_per_s, bits), "pkts": f"{row.packets_per_s:.1f}",
             "total": fmt_bytes(row.total_bytes), "window": fmt_time(row.window_ns),
             "owner": owner}
    if any(c[0] == "rtt95" for c in cols):
        cells.update(quality_cells(row))
    return _join(cells, cols)


def fit(parts, width: int | None) -> str:
    """`parts` as (text, rank) joined by two spaces; while the line is wider than
    `width`, the part of the highest rank (the last of equals) goes. A part is
    never cut."""
    keep = list(parts)
    while width is not None and keep and len("  ".join(t for t, _ in keep)) > width:
        del keep[max(range(len(keep)), key=lambda i: (keep[i][1], i))]
    return "  ".join(t for t, _ in keep)


def legend(width: int | None) -> str:
    """The key legend: as many of its words as fit, whole, the first ones first."""
    return fit([(word, rank) for rank, word in enumerate(LEGEND)], width)


def help_lines() -> list[str]:
    """The help screen (h, ?): every key."""
    wide = max(len(keys) for keys, _ in KEYS)
    return (["pt-engine top: keys", ""]
            + [f"  {keys:<{wide}}  {what}" for keys, what in KEYS]
            + ["", "Rates are decimal: 1 kB = 1000 bytes (-b: bits, 1 kb = 1000 bits).",
               "Rows idle for --expire windows leave the table.",
               f"RTT, JITTER, RETR%, GAPS: TCP, last {QUALITY_WINDOWS} windows; - where none.",
               "", "Press any key to return to the table."])


def header_lines(model: TopModel, nics: list[NicRates], shown: int, state=(),
                 width: int | None = None, bits: bool = False) -> list[str]:
    """The title line (window, totals, drops, rows shown, `state` parts) and one
    line per NIC (psutil's counters beside what the engine captured there), each
    fitted to `width` by leaving out its least needed parts."""
    t, seconds = model.window_totals, model.interval_s
    title = [("pt-engine top", 3), (f"window {fmt_time(model.window_ns)} UTC", 0),
             (fmt_rate(t["bytes"] / seconds, bits), 0),
             (f"{t['packets'] / seconds:.0f} pkt/s", 1), (f"drops {model.drops}", 1),
             (f"rows {shown}", 2), *state]
    lines = [fit(title, width)]
    for nic in nics:
        cap_p, cap_b = model.captured.get(nic.name, (0, 0))
        lines.append(fit([
            (f"  {nic.name}", 0),
            (f"rx {fmt_rate(nic.rx_bytes_s, bits)} {nic.rx_packets_s:.0f} pkt/s", 0),
            (f"tx {fmt_rate(nic.tx_bytes_s, bits)} {nic.tx_packets_s:.0f} pkt/s", 0),
            (f"err {nic.errors} drop {nic.drops}", 1),
            (f"captured {fmt_rate(cap_b / seconds, bits)} {cap_p / seconds:.0f} pkt/s", 2)],
            width))
    return lines


def talker_lines(model: TopModel, row: Row | None, names: bool = True) -> list[str]:
    """The talkers pane (a): the remote addresses of the selected row's port, in
    (sending to it) and out (it sent to), from the last window that listed the
    port, with their exact counts; the addresses as the engine's --addresses
    policy left them."""
    if row is None:
        return ["talkers: no row selected"]
    what = f"{port_text(row, names)}/{row.proto}"
    if model.talkers_policy is None:
        return [f"talkers of {what}", "",
                "This stream has no talkers: the engine runs without --analyser talkers."]
    if row.port == EPHEMERAL:
        return [f"talkers of {what}", "",
                "The folded ephemeral row has none of its own: e unfolds it."]
    got = model.talkers.get((row.proto, row.port))
    if got is None:
        return [f"talkers of {what}", "",
                "None listed: a window lists the busiest ports and the --ports ones."]
    start, entry = got
    lines = [f"talkers of {what}  window {fmt_time(start)} UTC  addresses "
             f"{model.talkers_policy}  bound {model.talkers_bound} per direction"]
    for direction, whose in (("in", "sending to the port"), ("out", "the port sent to")):
        listed, err = entry[direction], entry[f"{direction}_error_bytes"]
        lines += ["", f"{direction.upper()}: {entry[f'{direction}_addresses']} addresses "
                      f"{whose}" + (f"; bytes over-counted by at most {err}" if err else ""),
                  f"  {'ADDRESS':<39} {'PACKETS':>10} {'BYTES':>14}"]
        lines += [f"  {t['address']:<39} {t['packets']:>10} {t['bytes']:>14}"
                  for t in listed] or ["  (none)"]
    return lines


def table_lines(model: TopModel, rows: list[Row], owners: Owners | None,
                nics: list[NicRates], state=(), limit: int | None = None,
                width: int | None = None, names: bool = True, bits: bool = False) -> list[str]:
    """The plain face's table: header, per-NIC lines, column titles, rows (an alert
    row ends with ALERT)."""
    cols = columns(width, model.has_quality)
    lines = header_lines(model, nics, len(rows), state, width, bits) + [heading(cols)]
    for row in rows[:limit]:
        lines.append(row_line(row, cols, owners, names, bits) + ("  ALERT" if row.alert else ""))
    return lines


# --- where records come from -------------------------------------------------------

class EngineFeed:
    """Stream records from a running engine (or one top starts), read in a thread."""

    def __init__(self, dest: str | None, run_args: list[str], tls=None):
        self.records: queue.Queue = queue.Queue()
        self._tls = tls
        self.error: EngineError | None = None   # the stream failed (no engine, cut off)
        self.logs: list[str] = []
        self._engine: subprocess.Popen | None = None
        self._tmp = None
        if dest is None:
            dest = self._start_engine(run_args)
        self.dest = dest
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _start_engine(self, run_args: list[str]) -> str:
        """`pt-engine run` on a private socket, with the talkers for the a key
        (addresses as top's --addresses says: pseudonymised by default)."""
        self._tmp = tempfile.TemporaryDirectory(prefix="pt-top-")
        path = os.path.join(self._tmp.name, "top.sock")
        self._engine = subprocess.Popen(
            [sys.executable, "-m", "pt_engine", "run", *run_args, "--output", f"unix:{path}",
             "--format", "msgpack", "--analyser", "talkers"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, start_new_session=True)
        threading.Thread(target=self._engine_log, daemon=True).start()
        deadline = time.monotonic() + 30
        while not os.path.exists(path):
            if self._engine.poll() is not None or time.monotonic() > deadline:
                self._engine.wait(5)
                time.sleep(0.1)   # let the log thread take the last lines
                detail = next((line for line in reversed(self.logs)
                               if line.startswith("pt-engine: error: ")), None)
                raise EngineError(detail[len("pt-engine: error: "):] if detail else
                                  "the capture engine did not start")
            time.sleep(0.05)
        return f"unix:{path}"

    def _engine_log(self) -> None:
        for line in self._engine.stderr:
            self.logs.append(line.decode(errors="replace").rstrip())

    def _read(self) -> None:
        from .client import iter_records
        try:
            for record in iter_records(self.dest, tls=self._tls):
                self.records.put(record)
        except EngineError as err:
            self.error = err       # main() reports it on stderr, exit 1
        self.records.put(None)

    def close(self) -> None:
        """Stop the engine top started (it writes its summary), and clean up."""
        if self._engine is not None and self._engine.poll() is None:
            self._engine.send_signal(2)
            try:
                self._engine.wait(10)
            except subprocess.TimeoutExpired:
                self._engine.kill()
                self._engine.wait()
        if self._tmp is not None:
            self._tmp.cleanup()


# --- the two faces -------------------------------------------------------------------

def _interfaces(model: TopModel) -> list[str]:
    return list(dict.fromkeys(s["name"] for s in model.sources if s.get("kind") == "live"))


@dataclass
class View:
    """What the user chose to see: sort, filters, display settings, the selection
    (followed by its row's key across re-sorts) and the first row shown."""

    sort: str = "rate"
    proto: str | None = None
    port: int | None = None
    paused: bool = False
    fold: bool = True          # ephemeral ports as one row per protocol and direction
    names: bool = True         # service names (not -n)
    bits: bool = False         # -b
    help: bool = False
    talkers: bool = False      # the talkers pane of the selected row (a)
    selected: int = 0
    offset: int = 0
    page: int = 1              # rows on the screen, from the last layout
    key: tuple | None = None   # the selected row's key

    def state(self, ended: bool = False) -> list[tuple[str, int]]:
        """The title line's parts for this view (text, rank: see fit)."""
        parts = [("PAUSED", 0)] if self.paused else []
        parts += [("ENDED", 0)] if ended else []
        parts += [(f"proto {self.proto}", 1)] if self.proto else []
        parts += [(f"port {self.port}", 1)] if self.port is not None else []
        parts.append((f"sort {self.sort}", 2))
        parts += [("unfolded", 2)] if not self.fold else []
        return parts

    def move(self, delta: int) -> None:
        self.selected, self.key = max(self.selected + delta, 0), None

    def follow(self, rows: list[Row], page: int) -> None:
        """Keep the selection on its row (or in range) and scroll to show it."""
        self.page = max(page, 1)
        if self.key is not None:
            where = next((i for i, r in enumerate(rows) if r.key == self.key), None)
            if where is not None:
                self.selected = where
        self.selected = min(max(self.selected, 0), max(len(rows) - 1, 0))
        if self.selected < self.offset:
            self.offset = self.selected
        elif self.selected >= self.offset + self.page:
            self.offset = self.selected - self.page + 1
        self.offset = min(max(self.offset, 0), max(len(rows) - self.page, 0))
        self.key = rows[self.selected].key if rows else None


def handle_key(view: View, key: int) -> str | None:
    """What a key (a curses getch code; -1: none) does to `view`: None (nothing),
    'redraw', 'port' (ask which port to show) or 'quit'. On the help screen any
    key leaves it."""
    import curses
    if key == -1:
        return None
    if view.help:
        view.help = False
        return "redraw"
    ch = chr(key) if 0 <= key < 256 else ""
    moves = {curses.KEY_DOWN: 1, curses.KEY_UP: -1, ord("j"): 1, ord("k"): -1,
             curses.KEY_NPAGE: view.page, curses.KEY_PPAGE: -view.page,
             curses.KEY_HOME: -sys.maxsize, curses.KEY_END: sys.maxsize}
    toggles = {"e": "fold", "n": "names", "b": "bits", " ": "paused", "a": "talkers"}
    if key in moves:
        view.move(moves[key])
    elif not ch:
        return None
    elif ch in "qQ":
        return "quit"
    elif ch in "h?":
        view.help = True
    elif ch == "s":
        view.sort = SORTS[(SORTS.index(view.sort) + 1) % len(SORTS)]
    elif ch in "rtplx":
        view.sort = {"r": "rate", "t": "total", "p": "port", "l": "rtt", "x": "retrans"}[ch]
    elif ch == "f":
        view.proto = PROTOS[(PROTOS.index(view.proto) + 1) % len(PROTOS)]
    elif ch == "c":
        view.proto = view.port = None
    elif ch in toggles:
        setattr(view, toggles[ch], not getattr(view, toggles[ch]))
    elif ch == "/":
        return "port"
    else:
        return None
    return "redraw"


def screen_lines(model: TopModel, view: View, owners: Owners | None,
                 nics: list[NicRates], width: int, height: int, note: str | None = None,
                 ended: bool = False) -> list[tuple[str, str]]:
    """The terminal at width x height: `height` lines as (text, style), none longer
    than width - 1 (curses cannot write the last cell). Styles: 'title',
    'heading', 'row' (with ' alert' and ' selected' added), 'note', 'legend',
    'help'. The header and the legend come first and last; the rows between scroll
    with the selection (view.follow)."""
    usable = max(width - 1, 0)
    if view.help:
        lines = [(text[:usable], "help") for text in help_lines()][:height]
        return lines + [("", "help")] * (height - len(lines))
    rows = model.visible(view.sort, view.proto, view.port, view.fold)
    head = [(text, "title") for text in header_lines(model, nics, len(rows),
                                                     view.state(ended), usable, view.bits)]
    if view.talkers:
        view.follow(rows, view.page)
        row = rows[view.selected] if rows else None
        foot = [(fit([("a table", 0), ("j/k another port", 1), ("q quit", 0)], usable),
                 "legend")][:max(height, 0)]
        body = (head + [(t[:usable], "row") for t in talker_lines(model, row, view.names)])
        body = body[:max(height - len(foot), 0)]
        return body + [("", "row")] * (height - len(foot) - len(body)) + foot
    cols = columns(usable, model.has_quality)
    head.append((heading(cols), "heading"))
    foot = ([(note[:usable], "note")] if note else []) + [(legend(usable), "legend")]
    foot = foot[-height:] if height > 0 else []
    body = max(height - len(foot), 0)
    view.follow(rows, body - len(head))
    lines = head[:body]
    for i in range(view.offset, min(view.offset + body - len(lines), len(rows))):
        row = rows[i]
        style = "row" + (" alert" if row.alert else "") + (" selected" if i == view.selected
                                                            else "")
        lines.append((row_line(row, cols, owners, view.names, view.bits), style))
    return lines + [("", "row")] * (body - len(lines)) + foot


def run_plain(feed: EngineFeed, rows: int, out=None, view: View | None = None,
              expire: int | None = None) -> None:
    """Not a terminal: one plain-text table per window, no escape codes."""
    out = out or sys.stdout
    view = view or View()
    model = TopModel(expire=expire)
    owners, nics = Owners(sources=lambda: model.sources), Nics()
    while True:
        record = feed.records.get()
        if record is None:
            return
        if model.feed(record) and record["type"] == "window":
            shown = model.visible(view.sort, None, None, view.fold)
            shown = [r for r in shown if r.bytes_per_s] or shown
            lines = table_lines(model, shown, owners, nics.rates(_interfaces(model)),
                                limit=rows, names=view.names, bits=view.bits)
            out.write("\n".join(lines) + "\n\n")
            out.flush()
        for message in model.messages:
            out.write(f"# {message}\n")
        model.messages.clear()


def run_curses(feed: EngineFeed, view: View | None = None, expire: int | None = None) -> None:
    """A terminal: the live table; keys sort, filter, scroll, pause, quit. Restores
    the terminal on q, Ctrl-C, or any error."""
    import curses
    view = view or View()

    def main(screen) -> None:
        curses.curs_set(0)
        screen.keypad(True)
        screen.timeout(200)
        if curses.has_colors():
            curses.use_default_colors()
            curses.init_pair(1, curses.COLOR_RED, -1)
        model = TopModel(expire=expire)
        owners, nics = Owners(sources=lambda: model.sources), Nics()
        nic_rates: list[NicRates] = []
        dirty, ended = True, False
        while True:
            while True:
                try:
                    record = feed.records.get_nowait()
                except queue.Empty:
                    break
                if record is None:
                    ended = True
                    dirty = True
                    break
                if model.feed(record) and record["type"] == "window":
                    nic_rates = nics.rates(_interfaces(model))
                    dirty = dirty or not view.paused
            if dirty:
                _draw(screen, curses, model, view, owners, nic_rates, feed, ended)
                dirty = False
            key = screen.getch()
            action = "redraw" if key == curses.KEY_RESIZE else handle_key(view, key)
            if action == "quit":
                return
            if action == "port":
                view.port, view.key = _ask_port(screen, curses), None
            dirty = dirty or action is not None

    try:
        curses.wrapper(main)
    except KeyboardInterrupt:
        pass


def _ask_port(screen, curses) -> int | None:
    height, _ = screen.getmaxyx()
    prompt = "port or service (empty = all): "
    screen.move(height - 1, 0)
    screen.clrtoeol()
    screen.addstr(height - 1, 0, prompt)
    curses.echo()
    screen.timeout(-1)
    try:
        text = screen.getstr(height - 1, len(prompt), 20).decode(errors="replace")
    finally:
        curses.noecho()
        screen.timeout(200)
    return parse_port(text)


def _attr(curses, style: str) -> int:
    attr = {"title": curses.A_BOLD, "heading": curses.A_BOLD, "note": curses.A_DIM,
            "legend": curses.A_DIM}.get(style, 0)
    if "alert" in style:
        attr |= curses.A_BOLD | (curses.color_pair(1) if curses.has_colors()
                                 else curses.A_UNDERLINE)
    if "selected" in style:
        attr |= curses.A_REVERSE
    return attr


def _draw(screen, curses, model, view, owners, nic_rates, feed, ended) -> None:
    height, width = screen.getmaxyx()
    notes = model.messages[-1:] + feed.logs[-1:]
    lines = screen_lines(model, view, owners, nic_rates, width, height,
                         note=notes[-1] if notes else None, ended=ended)
    screen.erase()
    for y, (text, style) in enumerate(lines):
        if text:
            screen.addnstr(y, 0, text, max(width - 1, 0), _attr(curses, style))
    screen.refresh()


def main(args, run_args: list[str]) -> int:
    """`pt-engine top`: see the module docstring. Raises EngineError for the user."""
    if args.connect is not None and run_args:
        raise ConfigError("--connect reads a running engine: capture options do not apply")
    if args.connect is not None and not args.connect.startswith(("unix:", "tls:")):
        raise ConfigError(f"--connect {args.connect!r}: give a socket as unix:/path or "
                          f"tls:HOST:PORT")
    if args.bits and args.bytes:
        raise ConfigError("-b shows bits and -B bytes: give one of them")
    if args.expire is not None and args.expire < 0:
        raise ConfigError(f"--expire {args.expire}: give a number of windows, 0 or more")
    if args.rows < 1:
        raise ConfigError(f"--rows {args.rows}: give a number of rows, 1 or more")
    view = View(sort=args.sort, fold=not args.no_fold, names=not args.numeric,
                bits=args.bits)
    from .client import ClientTls
    feed = EngineFeed(args.connect, run_args, ClientTls(args.tls_cert, args.tls_key,
                                                        args.tls_ca))
    try:
        if sys.stdout.isatty() and not args.plain:
            run_curses(feed, view, args.expire)
        else:
            run_plain(feed, args.rows, view=view, expire=args.expire)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        # the reader (head, less) went away: stop quietly, as other tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        feed.close()
    if feed.error is not None:
        raise feed.error
    return 0
