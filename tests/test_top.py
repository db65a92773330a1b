"""`pt-engine top`: the model, the plain-text face, and the terminal face driven in tmux."""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

import msgpack
import pytest

import netns
from pt_engine import cli, top
from pt_engine.top import (EPHEMERAL, KEYS, LEGEND, NicRates, TopModel, View, columns,
                           ephemeral_range, fmt_bytes, fmt_rate, handle_key, help_lines,
                           port_text, screen_lines, table_lines)
from frames import eth, ipv4, tcp, udp
from streams import CORPUS, quality_row as qrow

MANY = CORPUS / "ppp_many-protocols.pcap"


def window(start_s: int, ports, seconds: int = 1) -> dict:
    totals = {"packets": sum(r[2] + r[4] for r in ports), "bytes": sum(r[3] + r[5] for r in ports)}
    return {"type": "window", "start_ns": start_s * 10**9, "end_ns": (start_s + seconds) * 10**9,
            "totals": totals, "classes": {}, "ports": ports, "late_packets": 0}


def test_model_rates_totals_and_sorts():
    model = TopModel()
    model.feed({"type": "hello", "interval_ns": 2 * 10**9, "sources": []})
    model.feed({"type": "snapshot", "ports": [["tcp", 443, 1, 1000, 0, 0]]})
    model.feed(window(10, [["tcp", 443, 4, 8000, 2, 400], ["udp", 53, 1, 100, 1, 300]], 2))
    rows = {(r.proto, r.port, r.direction): r for r in model.visible("rate", None, None)}
    assert rows[("tcp", 443, "in")].bytes_per_s == 4000.0
    assert rows[("tcp", 443, "in")].packets_per_s == 2.0
    assert rows[("tcp", 443, "in")].total_bytes == 9000        # snapshot + window
    assert rows[("udp", 53, "out")].bytes_per_s == 150.0
    assert [r.port for r in model.visible("port", None, None)] == [53, 53, 443, 443]
    assert [r.direction for r in model.visible("rate", "tcp", None)] == ["in", "out"]
    assert [r.proto for r in model.visible("total", None, 53)] == ["udp", "udp"]
    # a port quiet in the next window keeps its total, its rate drops to 0
    model.feed(window(12, [["udp", 53, 1, 100, 0, 0]], 2))
    rows = {(r.proto, r.port, r.direction): r for r in model.visible("rate", None, None)}
    assert rows[("tcp", 443, "in")].bytes_per_s == 0 and rows[("tcp", 443, "in")].total_bytes == 9000
    assert model.visible("rate", None, None)[0].port == 53


def test_alert_rows_are_marked():
    model = TopModel()
    model.feed(window(1, [["tcp", 22, 5, 500, 0, 0]]))
    model.feed({"type": "alert", "rule": "ssh", "proto": "tcp", "port": 22, "direction": "in",
                "metric": "bytes_per_s", "value": 500, "limit": 100})
    lines = table_lines(model, model.visible("rate", None, None), None, [], names=False)
    assert lines[-1].endswith("ALERT") and re.match(r"22 +tcp ", lines[-1])
    model.feed({"type": "resolved", "rule": "ssh", "proto": "tcp", "port": 22, "direction": "in"})
    assert not table_lines(model, model.visible("rate", None, None), None, [])[-1].endswith("ALERT")


def plain_top(tmp_path, *flags: str) -> str:
    """`pt-engine top --plain` (not a terminal) on a running engine reading MANY."""
    path = tmp_path / f"engine{len(list(tmp_path.iterdir()))}.sock"
    engine = subprocess.Popen([sys.executable, "-m", "pt_engine", "read", str(MANY),
                               "--output", f"unix:{path}"], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc = subprocess.run([sys.executable, "-m", "pt_engine", "top", "--connect", f"unix:{path}",
                           *flags], capture_output=True, timeout=60)
    engine.wait(30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode()


def test_plain_tables_when_not_a_terminal(tmp_path):
    out = plain_top(tmp_path, "--rows", "3")
    assert "\x1b" not in out, "no escape codes when stdout is not a terminal"
    tables = [t for t in out.split("\n\n") if t.startswith("pt-engine top")]
    assert len(tables) == 52                       # one per window of the capture
    assert re.search(r"^80/http +tcp ", out, re.M), "service names by default"
    assert re.search(r"^ephemeral +tcp +(in|out) .* \d+ ports$", out, re.M), "folded"
    assert re.search(r" [\d.]+ [kMG]?B/s ", out) and not re.search(r"[kMG]?b/s", out)


def test_plain_tables_with_numbers_bits_and_every_port(tmp_path):
    out = plain_top(tmp_path, "--rows", "400", "-n", "-b", "--no-fold", "--expire", "0")
    assert re.search(r"^80 +tcp ", out, re.M) and "/http" not in out
    assert "ephemeral" not in out and re.search(r"^55181 +tcp ", out, re.M)
    assert re.search(r" [\d.]+ [kMG]?b/s ", out) and not re.search(r" [kMG]?B/s", out)


@pytest.mark.parametrize("flags, message", [(["-b", "-B"], b"give one of them"),
                                            (["--expire", "-1"], b"--expire -1: give"),
                                            (["--rows", "-3"], b"--rows -3: give"),
                                            (["--rows", "0"], b"--rows 0: give")])
def test_top_option_errors(flags, message):
    proc = subprocess.run([sys.executable, "-m", "pt_engine", "top", *flags, "--plain",
                           "--connect", "unix:/nonexistent"], capture_output=True, timeout=30)
    assert proc.returncode == 2 and message in proc.stderr


def test_connect_and_capture_options_do_not_mix():
    proc = subprocess.run([sys.executable, "-m", "pt_engine", "top", "--connect", "unix:/x",
                           "-i", "lo"], capture_output=True, timeout=30)
    assert proc.returncode == 2 and b"capture options do not apply" in proc.stderr


# --- service names, units ---------------------------------------------------------------

def test_ports_show_service_names_per_protocol_looked_up_once(monkeypatch):
    calls = []

    def getservbyport(port, proto):
        calls.append((port, proto))
        if port == 7777:
            raise OSError("port/proto not found")
        return {"tcp": "alpha", "udp": "beta"}[proto]

    top.service_name.cache_clear()
    monkeypatch.setattr(top.socket, "getservbyport", getservbyport)
    try:
        row = top.Row("tcp", 7, "in")
        assert [port_text(row) for _ in range(3)] == ["7/alpha"] * 3
        assert port_text(top.Row("udp", 7, "out")) == "7/beta"
        assert port_text(top.Row("sctp", 7, "in")) == "7"          # not in /etc/services
        assert port_text(top.Row("tcp", 7777, "in")) == "7777"     # no name
        assert port_text(row, names=False) == "7"                  # -n
        assert port_text(top.Row("tcp", EPHEMERAL, "in")) == "ephemeral"
        assert calls == [(7, "tcp"), (7, "udp"), (7777, "tcp")]    # cached
    finally:
        top.service_name.cache_clear()


def test_service_names_come_from_the_system():
    try:
        name = socket.getservbyport(443, "tcp")
    except OSError:
        pytest.skip("no /etc/services entry for 443/tcp")
    assert port_text(top.Row("tcp", 443, "in")) == f"443/{name}"
    assert top.parse_port("443") == 443 and top.parse_port(name) == 443
    assert top.parse_port("") is None and top.parse_port("70000") is None


@pytest.mark.parametrize("rate, text, bits", [
    (0, "0 B/s", "0 b/s"), (999, "999 B/s", "8.0 kb/s"), (999.6, "1.0 kB/s", "8.0 kb/s"),
    (1500, "1.5 kB/s", "12.0 kb/s"), (125, "125 B/s", "1.0 kb/s"), (2.5e6, "2.5 MB/s", "20.0 Mb/s"),
    (3e9, "3.0 GB/s", "24.0 Gb/s"), (999_960, "1.0 MB/s", "8.0 Mb/s")])
def test_rates_scale_in_decimal_units(rate, text, bits):
    assert fmt_rate(rate) == text
    assert fmt_rate(rate, bits=True) == bits


def test_totals_scale_in_bytes():
    assert [fmt_bytes(n) for n in (0, 999, 1000, 1_234_567, 5e9, 7e12)] == \
        ["0 B", "999 B", "1.0 kB", "1.2 MB", "5.0 GB", "7.0 TB"]


def test_top_options_are_in_the_table():
    parse = cli._parser(only="top").parse_args
    args = parse(["top"])
    assert (args.numeric, args.bits, args.bytes, args.no_fold, args.expire) == \
        (False, False, False, False, None)
    args = parse(["top", "-n", "-b", "--no-fold", "--expire", "0"])
    assert (args.numeric, args.bits, args.no_fold, args.expire) == (True, True, True, 0)
    assert parse(["top", "-B"]).bytes
    assert cli._parser(only="plot").parse_args(["plot", "x", "-o", "x.png",
                                                "--no-fold"]).no_fold


# --- row expiry ------------------------------------------------------------------------

def hello(interval_s: float = 1, ports_selected=None) -> dict:
    return {"type": "hello", "interval_ns": int(interval_s * 10**9), "sources": [],
            "ports_selected": ports_selected}


def keys_of(model, **kw) -> set:
    return {(r.proto, r.port, r.direction) for r in model.visible("port", None, None, **kw)}


def test_rows_expire_after_n_idle_windows():
    model = TopModel(expire=3)
    model.feed(hello())
    model.feed(window(1, [["tcp", 22, 1, 100, 0, 0], ["udp", 53, 1, 60, 0, 0]]))
    for t in (2, 3):
        model.feed(window(t, [["udp", 53, 1, 60, 0, 0]]))
    assert ("tcp", 22, "in") in keys_of(model)         # idle for 2 windows
    model.feed(window(4, [["udp", 53, 1, 60, 0, 0]]))
    assert keys_of(model) == {("udp", 53, "in")}      # idle for 3: gone
    model.feed(window(5, [["tcp", 22, 1, 100, 0, 0]]))
    assert model.rows[("tcp", 22, "in")].total_bytes == 100     # back, counted anew
    # time, not records, counts: `read` writes no window for a quiet interval
    model.feed(window(8, [["udp", 53, 1, 60, 0, 0]]))
    assert ("tcp", 22, "in") not in keys_of(model)


def test_expiry_default_is_a_minute_and_zero_keeps_rows():
    assert TopModel().expire_windows == 60
    model = TopModel()
    model.feed(hello(2))
    assert model.expire_windows == 30
    model.feed(hello(0.5))
    assert model.expire_windows == 120
    model = TopModel(expire=0)
    model.feed(hello())
    model.feed(window(1, [["tcp", 22, 1, 100, 0, 0]]))
    model.feed(window(100_000, [["udp", 53, 1, 60, 0, 0]]))
    assert ("tcp", 22, "in") in keys_of(model)


def test_alerted_and_snapshot_rows_and_expiry():
    model = TopModel(expire=2)
    model.feed(hello())
    model.feed({"type": "snapshot", "ports": [["tcp", 80, 1, 10, 1, 10]]})
    model.feed(window(1, [["tcp", 22, 1, 100, 0, 0]]))
    model.feed({"type": "alert", "rule": "quiet", "proto": "tcp", "port": 22,
                "direction": "in", "metric": "bytes_per_s", "value": 0, "limit": 1})
    model.feed(window(2, []))
    assert ("tcp", 80, "in") in keys_of(model)        # a snapshot's rows count from then
    model.feed(window(3, []))
    model.feed(window(9, []))
    assert keys_of(model) == {("tcp", 22, "in")}       # under an alert: stays


# --- ephemeral folding -----------------------------------------------------------------

def test_ephemeral_range_from_the_system_or_the_default(tmp_path):
    path = tmp_path / "range"
    path.write_text("1024\t5000\n")
    assert ephemeral_range(str(path)) == (1024, 5000)
    for bad in ("", "5000 1024", "a b", "0 70000"):
        path.write_text(bad)
        assert ephemeral_range(str(path)) == (32768, 60999)
    assert ephemeral_range(str(tmp_path / "none")) == (32768, 60999)


def test_ephemeral_ports_fold_into_one_row_per_protocol_and_direction():
    model = TopModel(ephemeral=(32768, 60999))
    model.feed(hello(ports_selected="443,40001"))
    model.feed(window(1, [["tcp", 443, 2, 200, 3, 3000], ["tcp", 40000, 3, 1500, 2, 100],
                          ["tcp", 40001, 1, 50, 1, 50], ["tcp", 50000, 3, 1500, 0, 0],
                          ["udp", 32768, 1, 10, 1, 20], ["udp", 60999, 1, 30, 0, 0],
                          ["udp", 61000, 1, 5, 0, 0]]))
    rows = {(r.proto, r.port, r.direction): r for r in model.visible("port", None, None,
                                                                     fold=True)}
    assert set(rows) == {("tcp", 443, "in"), ("tcp", 443, "out"), ("tcp", 40001, "in"),
                         ("tcp", 40001, "out"), ("tcp", EPHEMERAL, "in"),
                         ("tcp", EPHEMERAL, "out"), ("udp", EPHEMERAL, "in"),
                         ("udp", EPHEMERAL, "out"), ("udp", 61000, "in")}
    tcp_in = rows[("tcp", EPHEMERAL, "in")]
    assert (tcp_in.total_bytes, tcp_in.bytes_per_s, tcp_in.total_packets, tcp_in.ports) == \
        (3000, 3000.0, 6, 2)
    assert (rows[("udp", EPHEMERAL, "in")].total_bytes, rows[("udp", EPHEMERAL, "in")].ports) \
        == (40, 2)
    # the model stays exact; unfolded and one port's view show every port
    assert len(keys_of(model)) == 11 and ("tcp", 50000, "in") in keys_of(model)
    assert {r.port for r in model.visible("rate", None, 40000, fold=True)} == {40000}
    lines = table_lines(model, model.visible("rate", None, None, fold=True), None, [])
    assert any(line.startswith("ephemeral") and line.endswith("2 ports") for line in lines)


def test_the_e_key_unfolds():
    view = View()
    assert view.fold and handle_key(view, ord("e")) == "redraw" and not view.fold
    assert ("unfolded", 2) in view.state()
    handle_key(view, ord("e"))
    assert view.fold


# --- the terminal's layout, keys, scrolling and help -------------------------------------

NIC = NicRates("eth0", 123.4e6, 98.7e6, 12345, 9876, 0, 0)


def busy_model(n: int = 40) -> TopModel:
    model = TopModel(ephemeral=(32768, 60999))
    model.feed({"type": "hello", "interval_ns": 10**9, "ports_selected": None,
                "sources": [{"name": "eth0", "kind": "live"}]})
    ports = [["tcp", 1000 + i, i + 1, (i + 1) * 1000, 0, 0] for i in range(n)]
    model.feed(window(1_700_000_000, ports))
    return model


@pytest.mark.parametrize("width, height", [(80, 24), (120, 40)])
def test_layout_fits_the_terminal(width, height):
    model, view = busy_model(), View()
    lines = screen_lines(model, view, None, [NIC], width, height, note="ALERT busy: tcp/22")
    assert len(lines) == height
    assert all(len(text) < width for text, _ in lines), "no line wraps"
    title, nic, head = (text for text, _ in lines[:3])
    assert "window 22:13:20 UTC" in title and "820.0 kB/s" in title and "820 pkt/s" in title
    assert "drops 0" in title and "rows 40" in title
    assert "rx 123.4 MB/s 12345 pkt/s" in nic and "tx 98.7 MB/s 9876 pkt/s" in nic
    assert "err 0 drop 0" in nic
    assert head.split() == ["PORT", "PROTO", "DIR", "RATE", "PKT/S", "TOTAL", "WINDOW", "OWNER"]
    assert lines[-2] == ("ALERT busy: tcp/22", "note")
    text, style = lines[-1]
    words = text.split("  ")
    assert style == "legend" and set(words) <= set(LEGEND) and "h help" in words
    assert words == list(LEGEND[:len(words)]), "whole words, the first ones first"
    if width >= 120:
        assert words == list(LEGEND)
    rows = [(t, s) for t, s in lines if s.startswith("row") and t]
    assert len(rows) == height - 5           # title, NIC, column titles; note, legend
    assert rows[0][0].startswith("1039 ") and rows[0][1] == "row selected"


def test_narrow_columns_drop_the_owner_first():
    assert [c[0] for c in columns(79)][-1] == "owner"
    assert [c[0] for c in columns(70)] == ["port", "proto", "dir", "rate", "pkts", "total",
                                           "window"]
    narrow = columns(55)
    assert [c[0] for c in narrow] == ["port", "proto", "dir", "rate", "pkts", "total"]
    assert narrow[0][2] == 9, "the port column shrinks before a column goes"
    assert [c[0] for c in columns(45)] == ["port", "proto", "dir", "rate", "total"]
    assert [c[0] for c in columns(40)] == ["port", "proto", "dir", "rate"]
    for width in (40, 50, 60, 79):
        lines = screen_lines(busy_model(), View(), None, [NIC], width, 24)
        assert all(len(text) < width for text, _ in lines if not text.startswith("  eth0"))


def selected(lines) -> int:
    """The port of the selected row."""
    return int(re.match(r"\d+", next(text for text, style in lines if "selected" in style))[0])


def test_keys_scroll_and_the_view_follows_the_selection():
    import curses
    model, view = busy_model(), View(sort="port")
    draw = lambda: screen_lines(model, view, None, [NIC], 80, 24)   # noqa: E731
    rows = [t for t, s in draw() if s.startswith("row")]
    assert view.page == len(rows) == 24 - 4         # title, NIC, column titles, legend
    assert selected(draw()) == 1000
    for key in (ord("j"), curses.KEY_DOWN, ord("j")):
        assert handle_key(view, key) == "redraw"
    assert selected(draw()) == 1003
    handle_key(view, ord("k"))
    assert selected(draw()) == 1002
    handle_key(view, curses.KEY_NPAGE)
    lines = draw()
    assert selected(lines) == 1002 + view.page
    handle_key(view, curses.KEY_END)
    lines = draw()
    shown = [t for t, s in lines if s.startswith("row") and t]
    assert selected(lines) == 1039 and re.match(r"1039 ", shown[-1])
    assert view.offset == 40 - view.page
    handle_key(view, curses.KEY_PPAGE)
    assert selected(draw()) == 1039 - view.page
    handle_key(view, curses.KEY_HOME)
    lines = draw()
    assert selected(lines) == 1000 and view.offset == 0
    handle_key(view, curses.KEY_UP)                       # stays on the first row
    assert selected(draw()) == 1000


def test_the_selection_stays_on_its_row_when_the_order_changes():
    model, view = busy_model(), View()                     # by rate: 1039 first
    screen_lines(model, view, None, [], 80, 24)
    for _ in range(3):
        handle_key(view, ord("j"))
    assert selected(screen_lines(model, view, None, [], 80, 24)) == 1036
    model.feed(window(1_700_000_001, [["tcp", 1036, 1, 10**6, 0, 0]]))
    lines = screen_lines(model, view, None, [], 80, 24)
    assert selected(lines) == 1036 and view.selected == 0


def test_other_keys():
    view = View()
    assert handle_key(view, -1) is None and handle_key(view, ord("z")) is None
    assert handle_key(view, ord("q")) == "quit" and handle_key(view, ord("/")) == "port"
    handle_key(view, ord("p"))
    handle_key(view, ord("f"))
    assert (view.sort, view.proto) == ("port", "tcp")
    handle_key(view, ord("s"))
    assert view.sort == "rtt"
    for ch, sort in (("s", "retrans"), ("s", "rate"), ("l", "rtt"), ("x", "retrans"),
                     ("r", "rate")):
        handle_key(view, ord(ch))
        assert view.sort == sort
    handle_key(view, ord("c"))
    assert view.proto is None
    for key, attr in (("n", "names"), ("b", "bits"), (" ", "paused")):
        before = getattr(view, attr)
        handle_key(view, ord(key))
        assert getattr(view, attr) is not before


@pytest.mark.parametrize("key", ["h", "?"])
def test_help_screen_lists_every_key_and_any_key_leaves_it(key):
    model, view = busy_model(), View()
    assert handle_key(view, ord(key)) == "redraw" and view.help
    lines = screen_lines(model, view, None, [NIC], 80, 24)
    text = "\n".join(t for t, _ in lines)
    assert len(lines) == 24 and all(len(t) < 80 for t, _ in lines)
    for keys, what in KEYS:
        assert f"{keys}" in text and what in text
    assert text.count("\n") == 23 and "Press any key" in text
    assert help_lines()[0] in text
    assert handle_key(view, ord("q")) == "redraw", "the key leaves help, it does not quit"
    assert not view.help and any(s == "legend" for _, s in screen_lines(model, view, None,
                                                                        [], 80, 24))


# --- the terminal face, in tmux, on traffic replayed into a namespace ----------------

REASON = netns.why_not() or (None if shutil.which("tmux") else "needs tmux")
live = pytest.mark.skipif(REASON is not None, reason=REASON or "")

ROW = re.compile(r"^(\d+)(?:/\S+)? +(\w+) +(in|out) +([\d.]+ \w?B/s) +([\d.]+) +([\d.]+ \w?B) "
                 r"(\d\d:\d\d:\d\d)")


class Tmux:
    """A detached tmux session running a shell, 160 x 45."""

    def __init__(self):
        self.name = f"pttop{int(time.time() * 1000) % 10**8}"
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", "160", "-y", "45",
                        "bash --norc --noprofile"], check=True)

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def screen(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-t", self.name, "-p"], check=True,
                              capture_output=True).stdout.decode()

    def alternate_screen(self) -> bool:
        return subprocess.run(["tmux", "display", "-t", self.name, "-p", "#{alternate_on}"],
                              capture_output=True).stdout.strip() == b"1"

    def wait_for(self, predicate, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.screen()
            if predicate(text):
                return text
            time.sleep(0.2)
        raise AssertionError(f"screen never matched:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def rows_on(screen: str) -> list[tuple]:
    """(port, proto, direction, rate in B/s as shown, last window) of each table row."""
    scale = {"B/s": 1, "kB/s": 1e3, "MB/s": 1e6, "GB/s": 1e9}
    return [(int(m[1]), m[2], m[3], float(m[4].split()[0]) * scale[m[4].split()[1]], m[7])
            for m in map(ROW.match, screen.splitlines()) if m]


def traffic(seconds: float) -> list[bytes]:
    """Frames for a steady load: udp 5001 > tcp 8080 > udp 53, sent over `seconds`."""
    unit = [eth() + ipv4("192.0.2.1", "192.0.2.2", 17, udp(40000, 5001, b"x" * 900)),
            eth() + ipv4("192.0.2.1", "192.0.2.2", 6, tcp(40001, 8080, b"y" * 400)),
            eth() + ipv4("192.0.2.1", "192.0.2.2", 17, udp(40002, 53, b"z" * 40))]
    return unit * int(seconds * 200)


def _collect(path, got: list) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    unpacker = msgpack.Unpacker(raw=False)
    while data := sock.recv(1 << 16):
        unpacker.feed(data)
        got.extend(unpacker)


@live
def test_top_in_a_terminal_matches_the_stream(tmp_path):
    with netns.VethPair() as veth:
        path = tmp_path / "engine.sock"
        engine = subprocess.Popen([sys.executable, "-m", "pt_engine", "run", "-i", veth.host,
                                   "--output", f"unix:{path}"], stderr=subprocess.PIPE)
        while b"capturing on" not in (line := engine.stderr.readline()):   # after warnings
            assert line, "the engine ended before capturing"
        got: list = []
        collector = threading.Thread(target=_collect, args=(path, got), daemon=True)
        collector.start()
        term = Tmux()
        try:
            term.keys(f"{sys.executable} -m engine top --no-fold --connect unix:{path}; "
                      f"echo TOP-EXITED", "Enter")
            term.wait_for(lambda s: re.search(r"PORT +PROTO", s))
            frames = traffic(4.0)
            sender = threading.Thread(target=veth.send, args=(frames, 4.0 / (len(frames) / 100)))
            sender.start()
            screen = term.wait_for(lambda s: len(rows_on(s)) >= 6)
            time.sleep(1.2)
            screen = term.screen()
            sender.join(60)
            assert term.alternate_screen()
            # the rows and rates shown are those of the window the header names
            shown_at = re.search(r"window (\d\d:\d\d:\d\d) UTC", screen)[1]
            windows = {time.strftime("%H:%M:%S", time.gmtime(w["start_ns"] / 1e9)): w
                       for w in got if w["type"] == "window"}
            record = windows[shown_at]
            seconds = (record["end_ns"] - record["start_ns"]) / 1e9
            expected = {}
            for proto, port, ip, ib, op, ob in record["ports"]:
                if ip:
                    expected[(port, proto, "in")] = fmt_rate(ib / seconds)
                if op:
                    expected[(port, proto, "out")] = fmt_rate(ob / seconds)
            current = [r for r in rows_on(screen) if r[4] == shown_at]
            assert current and {(p, pr, d): fmt_rate(rate) for p, pr, d, rate, _ in current} \
                == expected
            rates = [r[3] for r in rows_on(screen)]
            assert rates == sorted(rates, reverse=True), "sorted by current rate"
            assert rows_on(screen)[0][:3] == (5001, "udp", "in")
            term.keys("p")
            screen = term.wait_for(lambda s: "sort port" in s)
            ports = [r[0] for r in rows_on(screen)]
            assert ports == sorted(ports)
            term.keys("f")
            screen = term.wait_for(lambda s: "proto tcp" in s)
            assert {r[1] for r in rows_on(screen)} == {"tcp"}
            term.keys("q")
            screen = term.wait_for(lambda s: "TOP-EXITED" in s)
            assert not term.alternate_screen(), "q restores the terminal"
        finally:
            term.close()
            engine.send_signal(2)
            engine.wait(30)


@live
def test_top_standalone_runs_its_own_capture():
    with netns.VethPair() as veth:
        term = Tmux()
        try:
            term.keys(f"{sys.executable} -m engine top -i {veth.host}; echo TOP-EXITED", "Enter")
            term.wait_for(lambda s: re.search(r"PORT +PROTO", s))
            veth.send(traffic(2.0), 0.005)
            screen = term.wait_for(lambda s: {(5001, "udp", "in"), (8080, "tcp", "in")}
                                   <= {r[:3] for r in rows_on(s)})
            assert veth.host in screen, "per-NIC panel for the captured interface"
            term.keys("C-c")
            term.wait_for(lambda s: "TOP-EXITED" in s)
            assert not term.alternate_screen()
        finally:
            term.close()


def test_connect_to_a_missing_socket_is_an_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pt_engine", "top", "--plain", "--connect",
                           f"unix:{tmp_path}/none.sock"], capture_output=True, timeout=60,
                          env={**os.environ, "PT_ENGINE_CONFIG": "/dev/null"})
    assert proc.returncode == 1
    assert proc.stdout == b""
    err = proc.stderr.decode()
    assert err.startswith("pt-engine: error: ") and "none.sock" in err and err.count("\n") == 1


# --- TCP quality columns ----------------------------------------------------------------

def quality_window(start_s: int, qrows: list) -> dict:
    ports = sorted({r[1] for r in qrows})
    record = window(start_s, [["tcp", p, 10, 1000 * p, 10, 1000] for p in ports])
    record["tcp_quality"] = {"rows": qrows}
    return record


def quality_model() -> TopModel:
    model = TopModel(ephemeral=(32768, 60999))
    model.feed({"type": "hello", "interval_ns": 10**9, "sources": []})
    model.feed(quality_window(100, [
        qrow(443, "in", samples=4, rtt_ns=40_000_000, data=50, retrans=5, gaps=2,
             jitter_pairs=3, jitter_ns=2_000_000),
        qrow(22, "in", samples=2, rtt_ns=300_000, data=10),
        qrow(80, "in", data=20, retrans=4)]))          # data, no RTT sample
    return model


def test_quality_columns_show_buckets_jitter_retransmissions_and_gaps():
    model = quality_model()
    lines = table_lines(model, model.visible("rate", None, None), None, [])
    heading = lines[1]
    for title in ("RTT P50", "RTT P95", "JITTER", "RETR%", "GAPS"):
        assert title in heading
    cells = {(line.split()[0], line.split()[2]): line.split()[-6:-1] for line in lines[2:]}
    assert cells["443/https", "in"] == ["33-66ms", "33-66ms", "2.0ms", "10.0", "2"]
    assert cells["22/ssh", "in"] == ["256-512us", "256-512us", "-", "0.0", "0"]
    assert cells["80/http", "in"] == ["-", "-", "-", "20.0", "0"]
    # rows of udp, or tcp rows without quality rows, show '-' everywhere
    out_rows = [line.split() for line in lines[2:] if " out " in line]
    assert out_rows and all(cells[-6:-1] == ["-"] * 5 for cells in out_rows)


def test_without_tcp_quality_in_the_stream_the_table_has_no_quality_columns():
    lines = table_lines(busy_model(), busy_model().visible("rate", None, None), None, [])
    assert "RTT" not in lines[1] and "RETR%" not in lines[1]


def test_sort_by_rtt_and_by_retransmissions_rows_without_figures_last():
    model = quality_model()
    by = lambda sort: [(r.port, r.direction) for r in model.visible(sort, "tcp", None)][:3]  # noqa: E731
    assert by("rtt") == [(443, "in"), (22, "in"), (80, "in")]      # 80 has no RTT: after
    assert by("retrans")[:2] == [(80, "in"), (443, "in")]            # 20 % before 10 %
    assert by("retrans")[2] == (22, "in")


def test_quality_columns_cover_the_last_ten_windows():
    model = quality_model()
    model.feed(quality_window(105, [qrow(443, "in", samples=4, rtt_ns=2_000_000, data=50)]))
    row = next(r for r in model.visible("rate", None, None) if r.key == ("tcp", 443, "in"))
    assert row.figure("retrans_ratio") == 5 / 100         # both windows, merged exactly
    assert row.figure("rtt_avg_ms") == (4 * 40 + 4 * 2) / 8
    model.feed(quality_window(110, [qrow(443, "in", data=10)]))    # window 100 falls out
    assert row.figure("retrans_ratio") == 0 and row.figure("rtt_avg_ms") == 2.0
    model.feed(quality_window(120, [qrow(22, "in", data=1)]))
    assert row.quality is None and ("tcp", 443, "in") not in model.recent_quality


def test_folded_ephemeral_rows_merge_their_quality():
    model = TopModel(ephemeral=(32768, 60999))
    model.feed({"type": "hello", "interval_ns": 10**9, "sources": []})
    model.feed(quality_window(1, [qrow(40000, "out", samples=1, rtt_ns=1_000_000, data=4),
                                  qrow(40001, "out", samples=1, rtt_ns=3_000_000, data=4,
                                       retrans=2)]))
    folded = next(r for r in model.visible("rate", None, None, fold=True)
                  if r.port == EPHEMERAL and r.direction == "out")
    assert folded.figure("rtt_avg_ms") == 2.0 and folded.figure("retrans_ratio") == 0.25


@pytest.mark.parametrize("width", [80, 100, 160])
def test_quality_columns_fit_the_terminal_rtt_p95_and_retransmissions_first(width):
    lines = screen_lines(quality_model(), View(), None, [NIC], width, 24)
    assert all(len(t) < width for t, _ in lines)
    heading = next(t for t, style in lines if style == "heading")
    assert "RTT P95" in heading and "RETR%" in heading
    if width >= 160:
        assert all(t in heading for t in ("RTT P50", "JITTER", "GAPS", "PKT/S", "WINDOW"))


def test_top_sorts_a_real_capture_by_rtt(tmp_path):
    """A quality-corpus capture through a running engine: --sort rtt puts the rows
    with RTT samples first, highest p95 first."""
    capture = CORPUS.parent / "quality-corpus" / "zeek_mapi.pcap"
    path = tmp_path / "engine.sock"
    engine = subprocess.Popen([sys.executable, "-m", "pt_engine", "read", str(capture),
                               "--analyser", "tcp_quality", "--output", f"unix:{path}"],
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc = subprocess.run([sys.executable, "-m", "pt_engine", "top", "--connect", f"unix:{path}",
                           "--sort", "rtt", "--rows", "50", "-n", "--no-fold"],
                          capture_output=True,
                          timeout=60)
    engine.wait(30)
    assert proc.returncode == 0, proc.stderr
    last = [t for t in proc.stdout.decode().split("\n\n") if t.startswith("pt-engine top")][-1]
    lines = last.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("PORT"))
    assert "RTT P95" in lines[at]
    end = lines[at].index("RTT P95") + len("RTT P95")       # right-aligned under it
    figures = [line[end - 9:end].strip() for line in lines[at + 1:]]
    with_rtt = [f for f in figures if f != "-"]
    assert with_rtt and figures[:len(with_rtt)] == with_rtt and len(figures) > len(with_rtt)
    lows = [float(f.split("-")[0]) * (1e-3 if f.endswith("us") else 1) for f in with_rtt]
    assert lows == sorted(lows, reverse=True)        # highest p95 bucket first


# --- the talkers pane (a) ------------------------------------------------------------------

def talkers_window(start_s: int, entries: list, policy: str = "pseudonymise") -> dict:
    record = window(start_s, [["udp", 53, 12, 2600, 2, 400], ["tcp", 443, 1, 60, 0, 0]])
    record["talkers"] = {"addresses": policy, "bound": 1024, "ports": entries}
    return record


DNS_TALKERS = {"proto": "udp", "port": 53,
               "in": [{"address": "203.0.113.9", "packets": 10, "bytes": 2000},
                      {"address": "203.0.113.7", "packets": 2, "bytes": 600}],
               "in_addresses": 2, "in_error_bytes": 0,
               "out": [{"address": "203.0.113.9", "packets": 2, "bytes": 400}],
               "out_addresses": 1, "out_error_bytes": 0}


def test_the_a_key_shows_the_talkers_of_the_selected_port():
    model, view = TopModel(), View()
    model.feed(hello())
    model.feed(talkers_window(1_700_000_000, [DNS_TALKERS], policy="truncate:24,48"))
    assert handle_key(view, ord("a")) == "redraw" and view.talkers
    lines = screen_lines(model, view, None, [], 100, 24)
    text = "\n".join(t for t, _ in lines)
    assert len(lines) == 24 and all(len(t) < 100 for t, _ in lines)
    assert "talkers of 53/domain/udp" in text and "addresses truncate:24,48" in text
    at = text.index("IN: 2 addresses")
    assert text.index("203.0.113.9", at) < text.index("203.0.113.7", at) < text.index("OUT: 1")
    assert re.search(r"203\.0\.113\.9 +10 +2000\n", text)
    assert re.search(r"OUT: 1 addresses.*\n.*\n +203\.0\.113\.9 +2 +400\n", text)
    assert lines[-1][1] == "legend" and "a table" in lines[-1][0]
    handle_key(view, ord("j"))      # udp/53 out: the same port, the same talkers
    text = "\n".join(t for t, _ in screen_lines(model, view, None, [], 100, 24))
    assert "talkers of 53/domain/udp" in text
    handle_key(view, ord("j"))      # tcp/443 has no talkers listed
    text = "\n".join(t for t, _ in screen_lines(model, view, None, [], 100, 24))
    assert "talkers of 443/https/tcp" in text and "None listed" in text
    handle_key(view, ord("a"))
    assert not view.talkers and any(s == "heading" for _, s in screen_lines(
        model, view, None, [], 100, 24))


def test_the_talkers_pane_says_when_the_stream_has_none():
    model, view = TopModel(), View(talkers=True)
    model.feed(hello())
    model.feed(window(1_700_000_000, [["udp", 53, 1, 100, 0, 0]]))
    text = "\n".join(t for t, _ in screen_lines(model, view, None, [], 80, 24))
    assert "no talkers" in text and "--analyser talkers" in text


def test_talkers_of_a_port_stay_with_their_window_and_expire():
    model = TopModel(expire=2)
    model.feed(hello())
    model.feed(talkers_window(1_700_000_000, [DNS_TALKERS]))
    model.feed(talkers_window(1_700_000_001, []))
    assert model.talkers[("udp", 53)][0] == 1_700_000_000 * 10**9
    model.feed(talkers_window(1_700_000_002, []))
    assert ("udp", 53) not in model.talkers


tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


@tmux
def test_top_in_a_terminal_shows_the_talkers_of_the_selected_port(tmp_path):
    """An engine reads a crafted capture with --analyser talkers; top, in tmux,
    shows udp/53 (/ 53), and a shows its talkers as the stream has them."""
    from test_talkers import capture
    path = tmp_path / "engine.sock"
    engine = subprocess.Popen([sys.executable, "-m", "pt_engine", "read", str(capture(tmp_path)),
                               "--analyser", "talkers", "--addresses", "clear",
                               "--output", f"unix:{path}"], stderr=subprocess.DEVNULL)
    term = Tmux()
    try:
        deadline = time.monotonic() + 20
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        term.keys(f"{sys.executable} -m engine top --no-fold -n --connect unix:{path}; "
                  f"echo TOP-EXITED", "Enter")
        term.wait_for(lambda s: "ENDED" in s and re.search(r"PORT +PROTO", s))
        term.keys("/")
        term.keys("53", "Enter")
        term.wait_for(lambda s: "port 53" in s)
        term.keys("a")
        screen = term.wait_for(lambda s: "talkers of 53/udp" in s)
        assert "addresses clear" in screen
        inbound = screen[screen.index("IN: 3 addresses"):screen.index("OUT:")]
        assert [re.split(r" +", line.strip())[:3] for line in inbound.splitlines()[2:5]] == [
            ["198.51.100.5", "1", "1000"], ["192.0.2.77", "3", "900"], ["192.0.2.10", "7", "700"]]
        assert re.search(r"OUT: 1 addresses.*\n.*\n +192\.0\.2\.10 +2 +400\n", screen)
        term.keys("a")
        term.wait_for(lambda s: re.search(r"PORT +PROTO", s))
        term.keys("q")
        term.wait_for(lambda s: "TOP-EXITED" in s)
    finally:
        term.close()
        engine.wait(30)


def test_the_owner_column_names_processes_never_users(monkeypatch):
    """The port-owner column shows pid/process name; no user name, whatever
    --addresses says (docs/security.md, question 3)."""
    import psutil
    from collections import namedtuple
    Conn = namedtuple("Conn", "laddr pid type")
    Addr = namedtuple("Addr", "ip port")

    class Proc:
        def __init__(self, pid):
            self.pid = pid

        def name(self):
            return "nginx"

        def username(self):
            return "alice"

    monkeypatch.setattr(psutil, "net_connections", lambda kind: [
        Conn(Addr("0.0.0.0", 8080), 4242, socket.SOCK_STREAM)])
    monkeypatch.setattr(psutil, "Process", Proc)
    owners = top.Owners._scan()
    assert owners == {("tcp", 8080): "4242/nginx"}
