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
from pt_engine.top import TopModel, table_lines
from frames import eth, ipv4, tcp, udp
from streams import CORPUS

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
    lines = table_lines(model, model.visible("rate", None, None), None, [], "")
    assert lines[-1].endswith("ALERT") and " 22 tcp" in lines[-1]
    model.feed({"type": "resolved", "rule": "ssh", "proto": "tcp", "port": 22, "direction": "in"})
    assert not table_lines(model, model.visible("rate", None, None), None, [], "")[-1].endswith("ALERT")


def test_plain_tables_when_not_a_terminal(tmp_path):
    path = tmp_path / "engine.sock"
    engine = subprocess.Popen([sys.executable, "-m", "pt_engine", "read", str(MANY),
                               "--output", f"unix:{path}"], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    top = subprocess.run([sys.executable, "-m", "pt_engine", "top", "--connect", f"unix:{path}",
                          "--rows", "3"], capture_output=True, timeout=60)
    engine.wait(30)
    assert top.returncode == 0, top.stderr
    out = top.stdout.decode()
    assert "\x1b" not in out, "no escape codes when stdout is not a terminal"
    tables = [t for t in out.split("\n\n") if t.startswith("pt-engine top")]
    assert len(tables) == 52                       # one per window of the capture
    assert "80 tcp" in out


def test_connect_and_capture_options_do_not_mix():
    proc = subprocess.run([sys.executable, "-m", "pt_engine", "top", "--connect", "unix:/x",
                           "-i", "lo"], capture_output=True, timeout=30)
    assert proc.returncode == 2 and b"capture options do not apply" in proc.stderr


# --- the terminal face, in tmux, on traffic replayed into a namespace ----------------

REASON = netns.why_not() or (None if shutil.which("tmux") else "needs tmux")
live = pytest.mark.skipif(REASON is not None, reason=REASON or "")

ROW = re.compile(r"^\s*(\d+) (\w+)\s+(in|out)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+) (\d\d:\d\d:\d\d)")


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
    return [(int(m[1]), m[2], m[3], float(m[4]), m[7]) for m in map(ROW.match, screen.splitlines())
            if m]


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
            term.keys(f"{sys.executable} -m engine top --connect unix:{path}; echo TOP-EXITED",
                      "Enter")
            term.wait_for(lambda s: "PORT PROTO" in s)
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
                    expected[(port, proto, "in")] = round(ib / seconds / 1000, 1)
                if op:
                    expected[(port, proto, "out")] = round(ob / seconds / 1000, 1)
            current = [r for r in rows_on(screen) if r[4] == shown_at]
            assert current and {(p, pr, d): rate for p, pr, d, rate, _ in current} == expected
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
            term.wait_for(lambda s: "PORT PROTO" in s)
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
