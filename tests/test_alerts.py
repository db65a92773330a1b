"""Threshold alerts: the windows they fire and resolve in, scopes, hooks, timeouts.

File-mode tests read crafted captures with one UDP packet per 1 s window whose
wire length is the rate wanted (bytes/s into udp/5000), so every expected
record can be worked out by hand.
"""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import netns
from pt_engine import stream
from pt_engine.alerts import Alerts, Hooks
from pt_engine.config import parse_alert
from frames import eth, ipv4, pcap_file, udp
from streams import quality_row as qrow, read_stream, run_cli

S = 1_000_000_000
T0 = 1_700_000_000 * S        # a multiple of every interval used here
RULE = "udp:5000:in:bytes_per_s>1000:for=2"     # clear level 800 bytes/s


def frame(dport: int, sport: int = 40000) -> bytes:
    return eth() + ipv4("10.0.0.1", "10.0.0.2", 17, udp(sport, dport, b"x"))


def capture(tmp_path: Path, rates: dict[int, int], port: int = 5000,
            extra: tuple = ()) -> str:
    """One packet of `rates[w]` wire bytes to `port` in window w (T0 + w s);
    `extra`: more (window, port, bytes) packets."""
    packets = [(w, port, n) for w, n in rates.items()] + list(extra)
    records = [(T0 + w * S + 1000 + i, frame(p), n)
               for i, (w, p, n) in enumerate(sorted(packets))]
    path = tmp_path / f"alerts-{len(list(tmp_path.iterdir()))}.pcap"
    path.write_bytes(pcap_file(records, linktype=1, nano=True))
    return str(path)


def window_of(ns: int) -> int:
    return (ns - T0) // S


def alerts_in(records: list[dict]) -> list[tuple]:
    """(type, window, port, value) of each alert/resolved record, in stream order."""
    return [(r["type"], window_of(r["window_start_ns"]), r["port"], r["value"])
            for r in records if r["type"] in ("alert", "resolved")]


def read(tmp_path, path, *args):
    status, records, _ = read_stream(tmp_path, path, *args, fmt="json")
    assert status == 0
    return records


# --- file mode, through the command line ------------------------------------------

def test_fires_after_the_hold_and_resolves_with_hysteresis(tmp_path):
    rates = dict(enumerate([500, 1500, 1500, 1500, 900, 700, 900, 700, 700, 500]))
    records = read(tmp_path, capture(tmp_path, rates), "--alert", RULE)
    assert alerts_in(records) == [("alert", 2, 5000, 1500.0), ("resolved", 8, 5000, 700.0)]
    alert = next(r for r in records if r["type"] == "alert")
    assert alert == {"type": "alert", "rule": RULE, "scope": "port", "proto": "udp",
                     "port": 5000, "direction": "in", "metric": "bytes_per_s",
                     "op": ">", "value": 1500.0, "limit": 1000.0, "window_start_ns": T0 + 2 * S,
                     "window_end_ns": T0 + 3 * S, "since_ns": T0 + S, "windows_over": 2}
    resolved = next(r for r in records if r["type"] == "resolved")
    assert resolved["clear_below"] == 800.0
    assert resolved["fired_ns"] == T0 + 2 * S and resolved["duration_ns"] == 6 * S
    assert resolved["since_ns"] == T0 + S and resolved["peak"] == 1500.0
    # each record follows the window that caused it
    types = [r["type"] if r["type"] != "window" else window_of(r["start_ns"]) for r in records]
    assert types[types.index(2) + 1] == "alert" and types[types.index(8) + 1] == "resolved"
    assert records[-1]["type"] == "summary"


def test_a_single_spike_does_not_outlast_the_hold(tmp_path):
    path = capture(tmp_path, {0: 500, 1: 1500, 2: 500, 3: 1500, 4: 1001, 5: 100})
    assert alerts_in(read(tmp_path, path, "--alert", RULE)) == [("alert", 4, 5000, 1001.0)]
    assert alerts_in(read(tmp_path, path, "--alert", "udp:5000:in:bytes_per_s>1000")) == [
        ("alert", 1, 5000, 1500.0), ("resolved", 2, 5000, 500.0),
        ("alert", 3, 5000, 1500.0), ("resolved", 5, 5000, 100.0)]


def test_value_at_the_limit_is_not_over_it(tmp_path):
    path = capture(tmp_path, {0: 1000, 1: 1000, 2: 1000})
    assert alerts_in(read(tmp_path, path, "--alert", "udp:5000:in:bytes_per_s>1k")) == []


def test_windows_missing_from_a_file_count_as_quiet(tmp_path):
    # File mode skips windows without packets: windows 2..9 are a gap, so the
    # rate is zero there and the alert resolves in window 3 (for=2), written
    # with window 10, the next record.
    path = capture(tmp_path, {0: 1500, 1: 1500}, extra=[(10, 6000, 100)])
    records = read(tmp_path, path, "--alert", RULE)
    assert alerts_in(records) == [("alert", 1, 5000, 1500.0), ("resolved", 3, 5000, 0.0)]
    kinds = [r["type"] for r in records]
    assert kinds == ["hello", "window", "window", "alert", "window", "resolved", "summary"]


def test_a_port_without_a_row_in_a_window_counts_as_zero(tmp_path):
    path = capture(tmp_path, {0: 1500, 1: 1500},
                   extra=[(2, 6000, 100), (3, 6000, 100), (4, 6000, 100)])
    assert alerts_in(read(tmp_path, path, "--alert", RULE)) == [
        ("alert", 1, 5000, 1500.0), ("resolved", 3, 5000, 0.0)]


def test_port_scope_checks_each_port_and_sum_scope_their_sum(tmp_path):
    # ports 8000..8002 each get 400 bytes/s: no single port is over 1000, the sum is
    extra = [(w, port, 400) for w in range(3) for port in (8000, 8001, 8002)]
    path = capture(tmp_path, {}, extra=extra)
    per_port = "udp:8000-8100:in:bytes_per_s>1000"
    summed = "udp:8000-8100:in:bytes_per_s>1000:scope=sum:name=web"
    records = read(tmp_path, path, "--alert", per_port, "--alert", summed)
    alerts = [r for r in records if r["type"] == "alert"]
    assert [(a["rule"], a["proto"], a["port"], a["value"]) for a in alerts] == [
        ("web", "udp", "8000-8100", 1200.0)]
    each = read(tmp_path, path, "--alert", "*:*:in:bytes_per_s>300")
    assert sorted((a["proto"], a["port"]) for a in each if a["type"] == "alert") == [
        ("udp", 8000), ("udp", 8001), ("udp", 8002)]


def test_both_directions_and_packet_rates_over_a_short_interval(tmp_path):
    # Two packets 5000 -> 7000 and one 7000 -> 5000 in each 0.5 s window:
    # udp/5000 sees 1 in + 2 out = 3 packets per 0.5 s = 6 packets/s.
    records_in = []
    for w in range(3):
        ts = T0 + w * S // 2
        records_in += [(ts + 10, frame(7000, sport=5000), 100),
                       (ts + 20, frame(7000, sport=5000), 100),
                       (ts + 30, frame(5000, sport=7000), 100)]
    path = tmp_path / "both.pcap"
    path.write_bytes(pcap_file(records_in, linktype=1, nano=True))
    records = read(tmp_path, str(path), "--interval", "0.5",
                   "--alert", "udp:5000:both:packets_per_s>5.5:for=3",
                   "--alert", "udp:5000:out:packets_per_s>5.5")
    alerts = [(r["rule"], r["window_start_ns"], r["value"]) for r in records
              if r["type"] == "alert"]
    assert alerts == [("udp:5000:both:packets_per_s>5.5:for=3", T0 + S, 6.0)]


def test_ports_outside_the_selection_are_not_seen(tmp_path):
    path = capture(tmp_path, {0: 5000, 1: 5000})
    assert alerts_in(read(tmp_path, path, "--ports", "22", "--alert", RULE)) == []


# --- hooks ------------------------------------------------------------------------

def test_hook_gets_each_record_as_json_on_stdin(tmp_path):
    out = tmp_path / "hook.jsonl"
    path = capture(tmp_path, {0: 1500, 1: 1500, 2: 100, 3: 100})
    records = read(tmp_path, path, "--alert", RULE, "--on-alert", f"cat >> {out}")
    sent = [json.loads(line) for line in out.read_text().splitlines()]
    expected = [r for r in records if r["type"] in ("alert", "resolved")]
    assert len(expected) == 2
    assert sorted(sent, key=lambda r: r["type"]) == expected


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def test_hanging_hook_is_killed_at_its_timeout(tmp_path):
    pids = tmp_path / "pids"
    path = capture(tmp_path, dict(enumerate([1500, 1500, 1500, 100, 100])))
    proc = run_cli("read", path, "--format", "json", "--alert", RULE,
                   "--on-alert", f"echo $$ >> {pids}; sleep 60", "--alert-timeout", "1",
                   timeout=30)
    assert proc.returncode == 0, proc.stderr
    records = stream.decode(proc.stdout, "json")
    assert [r["type"] for r in records if r["type"] in ("alert", "resolved", "summary")] == [
        "alert", "resolved", "summary"]
    err = proc.stderr.decode()
    assert err.count("killed after its 1 s timeout") == 2, err
    groups = [int(line) for line in pids.read_text().split()]
    assert len(groups) == 2
    assert not any(_group_alive(pgid) for pgid in groups)


def test_hooks_beyond_the_limit_are_dropped_and_counted(tmp_path):
    marks = tmp_path / "marks"
    path = capture(tmp_path, dict(enumerate([1500, 1500, 100, 100])))
    proc = run_cli("read", path, "--format", "json", "--alert", RULE, "--alert-hooks", "1",
                   "--alert-timeout", "2", "--on-alert", f"echo x >> {marks}; sleep 60",
                   timeout=30)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr.decode()
    assert "1 commands still running; not run for resolved" in err, err
    assert "1 alert(s) not given to the command" in err
    assert marks.read_text() == "x\n"


def test_failing_hook_is_logged_and_the_run_goes_on(tmp_path):
    path = capture(tmp_path, {0: 1500, 1: 1500})
    proc = run_cli("read", path, "--format", "json", "--alert", RULE,
                   "--on-alert", "cat > /dev/null; exit 3")
    assert proc.returncode == 0
    assert "command for alert 'udp:5000:in:bytes_per_s>1000:for=2' exited with 3" in \
        proc.stderr.decode()


@pytest.mark.skipif(netns.why_not() is not None, reason=netns.why_not() or "")
def test_live_capture_goes_on_while_a_hook_hangs(tmp_path):
    """A hook that hangs blocks nothing: a second alert is written while the
    first hook still runs, and both are killed at their timeout."""
    out = tmp_path / "stream.jsonl"
    marks = tmp_path / "marks"
    with netns.VethPair() as veth:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pt_engine", "run", "-i", veth.host, "--interval", "0.2",
             "--format", "json", "--output", str(out),
             "--alert", "udp:*:in:packets_per_s>10",
             "--on-alert", f"grep -q '\"type\":\"alert\"' && echo $$ >> {marks} && exec sleep 60",
             "--alert-timeout", "8"],
            stderr=subprocess.PIPE)
        try:
            while b"capturing on" not in (line := proc.stderr.readline()):   # after warnings
                assert line, "the engine ended before capturing"
            time.sleep(0.3)
            veth.send([frame(5001)] * 200, pause=0.01)
            first = _wait_for(lambda: marks.exists() and marks.read_text().strip())
            hook_pid = int(first.split()[0])
            veth.send([frame(5002)] * 200, pause=0.01)
            second = _wait_for(lambda: [r for r in _records(out) if r["type"] == "alert"
                                        and r["port"] == 5002])
            assert second and _group_alive(hook_pid), "the first hook was still running"
        finally:
            proc.send_signal(signal.SIGINT)
            err = proc.communicate(timeout=60)[1].decode()
    assert proc.returncode == 0, err
    assert err.count("killed after its 8 s timeout") == 2, err
    records = _records(out)
    assert records[-1]["type"] == "summary"
    assert {r["port"] for r in records if r["type"] == "alert"} == {5001, 5002}


def _records(path: Path) -> list[dict]:
    data = path.read_bytes() if path.exists() else b""
    return stream.decode(data[:data.rfind(b"\n") + 1], "json")


def _wait_for(probe, limit: float = 20.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    return probe()


# --- Alerts.observe on synthetic records ---------------------------------------------

def hello(interval_ns: int = S) -> dict:
    return {"type": "hello", "interval_ns": interval_ns}


def window(w: int, *rows, interval_ns: int = S) -> dict:
    return {"type": "window", "start_ns": T0 + w * interval_ns,
            "end_ns": T0 + (w + 1) * interval_ns, "ports": [list(r) for r in rows]}


def feed(alerts: Alerts, *records) -> list[tuple]:
    out = []
    for record in records:
        out += [(r["type"], window_of(r["window_start_ns"]), r["proto"], r["port"])
                for r in alerts.observe(record)]
    return out


def test_observe_needs_the_hello_and_ignores_other_records():
    alerts = Alerts([parse_alert("tcp:443:in:packets_per_s>1")])
    assert alerts.observe(window(0, ["tcp", 443, 5, 0, 0, 0])) == []
    assert alerts.observe(hello()) == []
    assert alerts.observe({"type": "event", "kind": "capture_failed"}) == []
    assert alerts.observe({"type": "summary", "ports": [["tcp", 443, 99, 0, 0, 0]]}) == []
    assert feed(alerts, window(1, ["tcp", 443, 5, 0, 0, 0])) == [("alert", 1, "tcp", 443)]


def test_observe_any_protocol_keeps_protocols_apart():
    alerts = Alerts([parse_alert("*:53:both:packets_per_s>2:for=2:clear=0.5")])
    rows = [["tcp", 53, 1, 0, 2, 0], ["udp", 53, 3, 0, 0, 0], ["udp", 54, 9, 0, 9, 0]]
    assert feed(alerts, hello(), window(0, *rows), window(1, *rows)) == [
        ("alert", 1, "tcp", 53), ("alert", 1, "udp", 53)]
    # 1.5 packets/s is under the limit but not under the clear level (1): no change
    half = [["tcp", 53, 1, 0, 0, 0], ["udp", 53, 1, 0, 0, 0]]
    assert feed(alerts, window(2, *half), window(3, *half),
                window(4, ["tcp", 53, 1, 0, 0, 0], ["udp", 53, 1, 0, 1, 0])) == []
    assert feed(alerts, window(5), window(6)) == [("resolved", 6, "tcp", 53),
                                                  ("resolved", 6, "udp", 53)]


def test_observe_live_windows_without_traffic_resolve():
    alerts = Alerts([parse_alert("udp:*:out:bytes_per_s>100:for=3")])
    busy = ["udp", 9, 0, 0, 1, 500]
    assert feed(alerts, hello(), window(0, busy), window(1, busy), window(2, busy),
                window(3), window(4)) == [("alert", 2, "udp", 9)]
    assert feed(alerts, window(5)) == [("resolved", 5, "udp", 9)]


def test_observe_a_gap_shorter_than_the_hold_does_not_resolve():
    alerts = Alerts([parse_alert("udp:9:in:bytes_per_s>100:for=3")])
    busy = ["udp", 9, 1, 500, 0, 0]
    assert feed(alerts, hello(), window(0, busy), window(1, busy), window(2, busy)) == [
        ("alert", 2, "udp", 9)]
    # windows 3 and 4 missing (2 quiet windows), then busy again: still active
    assert feed(alerts, window(5, busy), window(6, busy)) == []
    # a long gap: resolved in its third window
    assert feed(alerts, window(20, ["udp", 1, 1, 1, 0, 0])) == [("resolved", 9, "udp", 9)]


def test_observe_rates_follow_the_interval():
    alerts = Alerts([parse_alert("tcp:80:in:bytes_per_s>1M")])
    ms = 1_000_000
    # 1001 bytes in 1 ms = 1.001 MB/s
    assert feed(alerts, hello(ms), window(0, ["tcp", 80, 1, 1001, 0, 0], interval_ns=ms)) == [
        ("alert", 0, "tcp", 80)]
    assert alerts.observe(window(1, interval_ns=ms))[0]["duration_ns"] == ms


def test_hooks_limit_and_timeout(tmp_path):
    hooks = Hooks(f"cat >> {tmp_path / 'got'}; sleep 30", timeout=0.5, limit=1)
    record = {"type": "alert", "rule": "r", "value": 1.0}
    hooks.run(record)
    hooks.run(record)
    assert hooks.dropped == 1
    hooks.close()
    assert json.loads((tmp_path / "got").read_text()) == record
    hooks.run(record)        # the slot is free again once the first was killed
    assert hooks.dropped == 1
    hooks.close()


# --- '<': a service that goes quiet ---------------------------------------------------

QUIET = "udp:5000:in:bytes_per_s<1000:for=2"        # clear level 1250 bytes/s


def test_below_fires_when_a_port_goes_quiet_and_resolves_above_the_clear_level(tmp_path):
    # 6000 bytes to another port keep windows coming while port 5000 is quiet.
    rates = {0: 1500, 1: 900, 2: 500, 3: 1100, 4: 1300, 5: 1300}
    path = capture(tmp_path, rates, extra=((2, 6000, 900), (6, 6000, 900), (7, 6000, 900)))
    records = read(tmp_path, path, "--alert", QUIET)
    # windows 6 and 7 carry only port 6000's traffic: port 5000 is at zero again
    assert alerts_in(records) == [("alert", 2, 5000, 500.0), ("resolved", 5, 5000, 1300.0),
                                  ("alert", 7, 5000, 0.0)]
    alert = next(r for r in records if r["type"] == "alert")
    assert alert["op"] == "<" and alert["since_ns"] == T0 + S and alert["windows_over"] == 2
    resolved = next(r for r in records if r["type"] == "resolved")
    assert resolved["clear_above"] == 1250.0 and resolved["peak"] == 500.0   # the lowest


def test_below_counts_windows_without_traffic_and_gaps(tmp_path):
    """No row for the port at all (only another port's traffic), and a gap in the
    stream (file mode writes no empty windows): both are zero, past the limit."""
    path = capture(tmp_path, {0: 1500}, extra=((1, 6000, 100), (9, 6000, 100)))
    records = read(tmp_path, path, "--alert", QUIET)
    assert alerts_in(records) == [("alert", 2, 5000, 0.0)]
    path = capture(tmp_path, {0: 1500, 8: 1500})
    assert alerts_in(read(tmp_path, path, "--alert", QUIET)) == [("alert", 2, 5000, 0.0)]


def test_below_with_scope_sum_and_in_the_config_file(tmp_path):
    path = capture(tmp_path, {0: 600, 1: 100}, extra=((0, 5001, 600), (1, 5001, 100)))
    rule = "udp:5000-5001:in:bytes_per_s<1000:scope=sum"
    assert alerts_in(read(tmp_path, path, "--alert", rule)) == [("alert", 1, "5000-5001", 200.0)]
    config = tmp_path / "c.toml"
    config.write_text('[[alert]]\nports = "5000-5001"\nproto = "udp"\ndirection = "in"\n'
                      'metric = "bytes_per_s"\nlimit = 1000\nop = "<"\nscope = "sum"\n')
    records = read(tmp_path, path, "--config", str(config))
    assert alerts_in(records) == [("alert", 1, "5000-5001", 200.0)]
    assert next(r for r in records if r["type"] == "alert")["rule"] == \
        "udp:5000-5001:in:bytes_per_s<1k:scope=sum"


@pytest.mark.parametrize("rule", ["*:443:in:bytes_per_s<1k", "tcp:*:in:bytes_per_s<1k",
                                  "tcp:1000-3000:in:bytes_per_s<1k"])
def test_below_with_too_many_ports_is_refused(rule):
    proc = run_cli("read", "x.pcap", "--alert", rule, env={"PT_ENGINE_CONFIG": "/dev/null"})
    assert proc.returncode == 2
    assert b"at most 1024 ports, or scope=sum" in proc.stderr


# --- TCP quality figures ------------------------------------------------------------------

def quality_window(w: int, *qrows) -> dict:
    record = window(w)
    record["tcp_quality"] = {"rows": [list(r) for r in qrows]}
    return record


def values(alerts: Alerts, *records) -> list[tuple]:
    return [(r["type"], window_of(r["window_start_ns"]), r["port"], round(r["value"], 6))
            for record in records for r in alerts.observe(record)]


def test_rtt_p95_fires_after_the_hold_and_resolves_under_the_clear_level():
    alerts = Alerts([parse_alert("tcp:443:in:rtt_p95_ms>200:for=2")])
    slow = qrow(443, "in", samples=20, rtt_ns=300_000_000, data=20)      # bucket 262-524 ms
    fast = qrow(443, "in", samples=20, rtt_ns=40_000_000, data=20)
    # p95 of 20 samples in [262.144, 524.288) ms: rank 19 of 20, linear within the bucket
    # (as Prometheus' histogram_quantile); 40 ms lies in [32.768, 65.536)
    p95 = 262.144 + (524.288 - 262.144) * 19 / 20
    assert values(alerts, hello(), quality_window(0, slow), quality_window(1, slow),
                  quality_window(2, fast), quality_window(3, fast)) == [
        ("alert", 1, 443, round(p95, 6)),
        ("resolved", 3, 443, round(32.768 + (65.536 - 32.768) * 19 / 20, 6))]


def test_quality_rules_merge_directions_and_ports_exactly():
    both = Alerts([parse_alert("tcp:443:both:retrans_ratio>0.1")])
    rows = (qrow(443, "in", data=10, retrans=1), qrow(443, "out", data=10, retrans=2))
    assert values(both, hello(), quality_window(0, *rows)) == [("alert", 0, 443, 0.15)]
    per_side = Alerts([parse_alert("tcp:443:in:retrans_ratio>0.1")])
    assert values(per_side, hello(), quality_window(0, *rows)) == []
    summed = Alerts([parse_alert("tcp:8000-8001:in:rtt_avg_ms>10:scope=sum")])
    rows = (qrow(8000, "in", samples=1, rtt_ns=4_000_000), qrow(8001, "in", samples=3,
                                                                 rtt_ns=20_000_000),
            qrow(8002, "in", samples=9, rtt_ns=90_000_000))          # not in the range
    assert values(summed, hello(), quality_window(0, *rows)) == [("alert", 0, "8000-8001", 16.0)]


def test_jitter_and_gap_ratio():
    alerts = Alerts([parse_alert("tcp:*:in:jitter_ms>5:name=j"),
                     parse_alert("tcp:*:in:gap_ratio>0.01:name=g")])
    rows = (qrow(22, "in", jitter_pairs=4, jitter_ns=6_000_000, data=100, gaps=1),
            qrow(25, "in", jitter_pairs=4, jitter_ns=1_000_000, data=100, gaps=2))
    out = [(r["rule"], r["port"], round(r["value"], 6))
           for r in (alerts.observe(hello()) + alerts.observe(quality_window(0, *rows)))]
    assert out == [("j", 22, 6.0), ("g", 25, 0.02)]


def test_a_window_without_figures_counts_as_zero():
    """No RTT sample (the port only sent data), no tcp_quality row, or a window
    without tcp_quality: the figure is zero, under any '>' limit."""
    alerts = Alerts([parse_alert("tcp:443:in:rtt_avg_ms>10:for=1:clear=0.5")])
    slow = qrow(443, "in", samples=1, rtt_ns=50_000_000)
    assert values(alerts, hello(), quality_window(0, slow)) == [("alert", 0, 443, 50.0)]
    assert values(alerts, quality_window(1, qrow(443, "in", data=5))) == [
        ("resolved", 1, 443, 0.0)]
    assert values(alerts, quality_window(2, slow), window(3)) == [
        ("alert", 2, 443, 50.0), ("resolved", 3, 443, 0.0)]


@pytest.mark.parametrize("rule, message", [
    ("udp:53:in:rtt_avg_ms>5", b"rtt_avg_ms is a TCP figure"),
    ("tcp:443:in:jitter_ms<5", b"jitter_ms is a TCP figure"),
    ("tcp:443:in:retrans_ratio>0", b"is not a positive number")])
def test_bad_quality_rules_are_refused(rule, message):
    proc = run_cli("read", "x.pcap", "--alert", rule, env={"PT_ENGINE_CONFIG": "/dev/null"})
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_quality_alerts_on_a_real_capture_carry_the_windows_figures(tmp_path):
    """Every alert's value is the figure of its window's tcp_quality row."""
    from pt_engine.analysers import tcp_quality as q
    capture_file = Path(__file__).parent / "quality-corpus" / "zeek_mapi.pcap"
    records = read(tmp_path, str(capture_file), "--analyser", "tcp_quality", "--interval", "0.5",
                   "--alert", "tcp:*:both:rtt_avg_ms>0.001:name=rtt")
    windows = {r["start_ns"]: r for r in records if r["type"] == "window"}
    fired = [r for r in records if r["type"] == "alert"]
    assert fired
    for alert in fired:
        rows = [q.row_values(row) for row in windows[alert["window_start_ns"]]["tcp_quality"]["rows"]
                if row[1] == alert["port"]]
        assert alert["value"] == pytest.approx(q.metric(q.merged(rows), "rtt_avg_ms"))


def test_a_quality_rule_without_the_quality_analysis_is_refused(tmp_path):
    capture_file = Path(__file__).parent / "quality-corpus" / "zeek_mapi.pcap"
    proc = run_cli("read", str(capture_file), "--no-tcp-quality", "--alert",
                   "tcp:*:in:rtt_p95_ms>1", env={"PT_ENGINE_CONFIG": "/dev/null"})
    assert proc.returncode == 2
    assert b"comes from the TCP quality analysis, which --no-tcp-quality turns off" in proc.stderr
