"""`pt-engine top`: a live table of which ports carry the traffic, and who owns them.

top consumes stream records only (pt_engine.stream). Standalone, it starts
`pt-engine run` with a private UNIX socket and subscribes to it; with
`--connect unix:/path` it subscribes to a running engine and captures nothing
itself. On a terminal it draws with curses and answers keys; otherwise it
prints one plain-text table per window, for pipes and logs.
"""
from __future__ import annotations

import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from .errors import ConfigError, EngineError
from .stream import COL

SORTS = ("rate", "total", "port")
PROTOS = (None, "tcp", "udp", "sctp", "udplite", "dccp")
HELP = "q quit  s sort  r/t/p rate/total/port  f protocol  / port  c clear  space pause"


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


@dataclass
class TopModel:
    """Everything the screen shows, built from stream records only."""

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

    def feed(self, record: dict) -> bool:
        """Take one stream record; True if it changes what a window shows."""
        kind = record.get("type")
        if kind == "hello":
            self.interval_s = record["interval_ns"] / 1e9
            self.sources = record.get("sources", [])
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

    def visible(self, sort: str, proto: str | None, port: int | None) -> list[Row]:
        """Rows to show, filtered and sorted (highest first for rate and total)."""
        rows = [r for r in self.rows.values()
                if (proto is None or r.proto == proto) and (port is None or r.port == port)]
        for r in rows:
            r.alert = (r.proto, r.port, r.direction) in self.alerts or \
                (r.proto, r.port, "both") in self.alerts
        if sort == "rate":
            rows.sort(key=lambda r: (-r.bytes_per_s, -r.total_bytes, r.proto, r.port))
        elif sort == "total":
            rows.sort(key=lambda r: (-r.total_bytes, r.proto, r.port, r.direction))
        else:
            rows.sort(key=lambda r: (r.port, r.proto, r.direction))
        return rows


def _alert_text(record: dict) -> str:
    what = f"{record.get('proto')}/{record.get('port')} {record.get('direction')}"
    if record["type"] == "alert":
        return f"ALERT {record.get('rule', '')}: {what} {record.get('metric')} " \
               f"{record.get('value')} > {record.get('limit')}"
    return f"resolved {record.get('rule', '')}: {what}"


# --- port owners and NIC counters (psutil) -------------------------------------

class Owners:
    """Which process owns a local port (psutil connections), refreshed now and then."""

    def __init__(self, every: float = 2.0):
        self.every = every
        self._at = 0.0
        self._map: dict[tuple[str, int], str] = {}

    def get(self, proto: str, port: int) -> str:
        """'pid/name' of the owner of (proto, local port), or '-' if unknown."""
        now = time.monotonic()
        if now - self._at >= self.every:
            self._at = now
            self._map = self._scan()
        return self._map.get((proto, port), "-")

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

def fmt_rate(bytes_per_s: float) -> str:
    """KB/s with one decimal (1 KB = 1000 bytes)."""
    return f"{bytes_per_s / 1000:.1f}"


def fmt_time(ns: int | None) -> str:
    """HH:MM:SS (UTC) of a timestamp in ns."""
    if not ns:
        return "--:--:--"
    return time.strftime("%H:%M:%S", time.gmtime(ns / 1e9))


COLUMNS = f"{'PORT':>5} {'PROTO':<7} {'DIR':<3} {'KB/s':>10} {'PKT/s':>9} " \
          f"{'TOTAL MB':>10} {'WINDOW':>8}  OWNER"


def table_lines(model: TopModel, rows: list[Row], owners: Owners | None,
                nics: list[NicRates], state: str, limit: int | None = None) -> list[str]:
    """The screen as plain lines: header, per-NIC panel, column titles, rows."""
    t = model.window_totals
    lines = [f"pt-engine top  window {fmt_time(model.window_ns)} UTC  "
             f"{t['bytes'] / model.interval_s / 1000:.1f} KB/s  "
             f"{t['packets'] / model.interval_s:.0f} pkt/s  drops {model.drops}  "
             f"rows {len(rows)}  {state}"]
    for nic in nics:
        cap_p, cap_b = model.captured.get(nic.name, (0, 0))
        lines.append(f"  {nic.name:<10} rx {nic.rx_bytes_s / 1000:9.1f} KB/s "
                     f"{nic.rx_packets_s:8.0f} pkt/s  tx {nic.tx_bytes_s / 1000:9.1f} KB/s "
                     f"{nic.tx_packets_s:8.0f} pkt/s  err {nic.errors} drop {nic.drops}  "
                     f"captured {cap_b / model.interval_s / 1000:.1f} KB/s "
                     f"{cap_p / model.interval_s:.0f} pkt/s")
    lines.append(COLUMNS)
    for row in rows[:limit]:
        owner = owners.get(row.proto, row.port) if owners else "-"
        lines.append(f"{row.port:>5} {row.proto:<7} {row.direction:<3} "
                     f"{fmt_rate(row.bytes_per_s):>10} {row.packets_per_s:>9.1f} "
                     f"{row.total_bytes / 1e6:>10.3f} {fmt_time(row.window_ns):>8}  {owner}"
                     + ("  ALERT" if row.alert else ""))
    return lines


# --- where records come from -------------------------------------------------------

class EngineFeed:
    """Stream records from a running engine (or one top starts), read in a thread."""

    def __init__(self, dest: str | None, run_args: list[str]):
        self.records: queue.Queue = queue.Queue()
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
        self._tmp = tempfile.TemporaryDirectory(prefix="pt-top-")
        path = os.path.join(self._tmp.name, "top.sock")
        self._engine = subprocess.Popen(
            [sys.executable, "-m", "pt_engine", "run", *run_args, "--output", f"unix:{path}",
             "--format", "msgpack"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
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
            for record in iter_records(self.dest):
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


def run_plain(feed: EngineFeed, rows: int, out=None) -> None:
    """Not a terminal: one plain-text table per window, no escape codes."""
    out = out or sys.stdout
    model, owners, nics = TopModel(), Owners(), Nics()
    while True:
        record = feed.records.get()
        if record is None:
            return
        if model.feed(record) and record["type"] == "window":
            shown = model.visible("rate", None, None)
            shown = [r for r in shown if r.bytes_per_s] or shown
            lines = table_lines(model, shown, owners, nics.rates(_interfaces(model)), "",
                                limit=rows)
            out.write("\n".join(lines) + "\n\n")
            out.flush()
        for message in model.messages:
            out.write(f"# {message}\n")
        model.messages.clear()


@dataclass
class _View:
    sort: str = "rate"
    proto: str | None = None
    port: int | None = None
    paused: bool = False


def run_curses(feed: EngineFeed) -> None:
    """A terminal: the live table; keys sort, filter, pause, quit. Restores the
    terminal on q, Ctrl-C, or any error."""
    import curses

    def main(screen) -> None:
        curses.curs_set(0)
        screen.timeout(200)
        if curses.has_colors():
            curses.use_default_colors()
            curses.init_pair(1, curses.COLOR_RED, -1)
        model, owners, nics, view = TopModel(), Owners(), Nics(), _View()
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
            if key in (ord("q"), ord("Q")):
                return
            dirty = _key(screen, curses, key, view) or dirty

    try:
        curses.wrapper(main)
    except KeyboardInterrupt:
        pass


def _key(screen, curses, key: int, view: _View) -> bool:
    if key == -1:
        return False
    ch = chr(key) if 0 <= key < 256 else ""
    if ch == "s":
        view.sort = SORTS[(SORTS.index(view.sort) + 1) % len(SORTS)]
    elif ch in "rtp" and ch:
        view.sort = {"r": "rate", "t": "total", "p": "port"}[ch]
    elif ch == "f":
        view.proto = PROTOS[(PROTOS.index(view.proto) + 1) % len(PROTOS)]
    elif ch == "c":
        view.proto = view.port = None
    elif ch == " ":
        view.paused = not view.paused
    elif ch == "/":
        view.port = _ask_port(screen, curses)
    else:
        return False
    return True


def _ask_port(screen, curses) -> int | None:
    height, _ = screen.getmaxyx()
    screen.move(height - 1, 0)
    screen.clrtoeol()
    screen.addstr(height - 1, 0, "port (empty = all): ")
    curses.echo()
    screen.timeout(-1)
    try:
        text = screen.getstr(height - 1, 20, 5).decode(errors="replace").strip()
    finally:
        curses.noecho()
        screen.timeout(200)
    return int(text) if text.isdigit() and int(text) <= 65535 else None


def _draw(screen, curses, model, view, owners, nic_rates, feed, ended) -> None:
    height, width = screen.getmaxyx()
    rows = model.visible(view.sort, view.proto, view.port)
    state = (f"sort {view.sort}"
             + (f"  proto {view.proto}" if view.proto else "")
             + (f"  port {view.port}" if view.port is not None else "")
             + ("  PAUSED" if view.paused else "") + ("  ENDED" if ended else ""))
    lines = table_lines(model, rows, owners, nic_rates, state,
                        limit=max(height - 4 - len(nic_rates), 0))
    screen.erase()
    header = 2 + len(nic_rates)
    for y, line in enumerate(lines[:height - 2]):
        attr = curses.A_BOLD if y == 0 or y == header - 1 else 0
        if y >= header and line.endswith("ALERT"):
            attr = curses.A_REVERSE | (curses.color_pair(1) if curses.has_colors() else 0)
        screen.addnstr(y, 0, line, width - 1, attr)
    notes = model.messages[-1:] + feed.logs[-1:]
    footer = notes[-1] if notes else HELP
    screen.addnstr(height - 1, 0, footer if not notes else f"{footer}   [{HELP}]", width - 1,
                   curses.A_DIM)
    screen.refresh()


def main(args, run_args: list[str]) -> int:
    """`pt-engine top`: see the module docstring. Raises EngineError for the user."""
    if args.connect is not None and run_args:
        raise ConfigError("--connect reads a running engine: capture options do not apply")
    if args.connect is not None and not args.connect.startswith("unix:"):
        raise ConfigError(f"--connect {args.connect!r}: give a socket as unix:/path")
    feed = EngineFeed(args.connect, run_args)
    try:
        if sys.stdout.isatty() and not args.plain:
            run_curses(feed)
        else:
            run_plain(feed, args.rows)
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
