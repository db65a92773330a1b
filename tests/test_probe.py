"""ping and scan without namespaces: targets and refusals, the dry run, the token
bucket, the figures of a window, ping alert rules, the tables, and runs on
loopback (TCP needs no privileges; ICMP needs root or ping_group_range)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from pt_engine import stream
from pt_engine.alerts import Alerts
from pt_engine.cli import main
from pt_engine.config import parse_alerts
from pt_engine.errors import ConfigError
from pt_engine.probe.ratelimit import TokenBucket
from pt_engine.probe.stats import Series, nearest_rank
from pt_engine.probe.table import TableSink
from pt_engine.probe.targets import parse_targets


def _engine(*argv, timeout=120, env=None) -> subprocess.CompletedProcess:
    """pt-engine ARGV; the records show the real targets (--addresses clear), which
    these tests check (test_probe_addresses.py: the policy itself)."""
    return subprocess.run([sys.executable, "-m", "pt_engine", *argv, "--addresses", "clear"],
                          capture_output=True,
                          text=True, timeout=timeout,
                          env=None if env is None else {**os.environ, **env})


# --- refusals: one line, exit 2 -----------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["ping", "10.0.0.0/8"], "16777216 addresses, more than 1024"),
    (["ping", "224.0.0.1"], "multicast"),
    (["ping", "255.255.255.255"], "broadcast"),
    (["ping", "0.0.0.0"], "unspecified"),
    (["ping", "240.0.0.1"], "reserved"),
    (["ping", "ff02::1"], "multicast"),
    (["scan", "127.0.0.1", "--ports", "1-70000"], "--ports"),
    (["scan", "127.0.0.1", "--ports", "0-10"], "port 0"),
    (["scan", "127.0.0.1"], "needs --ports"),
    (["ping", "127.0.0.1", "--tcp", "http,nosuchservice"], "--tcp"),
    (["ping", "no-such-host.invalid"], "cannot resolve"),
    (["ping", "127.0.0.1", "--rate", "-1"], "--rate"),
    (["ping", "127.0.0.1", "--timeout", "0"], "--timeout"),
    (["ping", "127.0.0.1", "--alert", "ping:*:rtt>5"], "metric"),
])
def test_a_refused_or_bad_request_is_one_line_and_exit_2(argv, message):
    proc = _engine(*argv, "--format", "json")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pt-engine: error: "), proc.stderr
    assert message in lines[0]
    assert proc.stdout == ""


def test_max_targets_allows_a_larger_range_in_the_dry_run():
    proc = _engine("ping", "10.0.0.0/21", "--max-targets", "2048", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2046 + 1
    assert lines[0] == "10.0.0.1  (10.0.0.0/21)" and lines[-2] == "10.0.7.254  (10.0.0.0/21)"
    assert lines[-1] == "2046 target(s): 2046 probes (1 round(s) of 2046), ICMP echo"


def test_the_dry_run_lists_every_address_a_name_resolves_to(monkeypatch, capsys):
    def fake(host, port, family=0, type=0, *rest):
        assert host == "two.example"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.7", 0)),
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::7", 0, 0, 0)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.7", 0))]
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    assert main(["scan", "two.example", "--ports", "22,80", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["192.0.2.7  (two.example)", "2001:db8::7  (two.example)",
                   "2 target(s), 2 port(s) each: 4 probes (up to 8 with retries), "
                   "TCP connect"]


def test_targets_are_deduplicated_and_ranges_give_their_hosts():
    targets = parse_targets(["192.0.2.0/30", "192.0.2.1", "192.0.2.9/32", "2001:db8::/127"])
    assert [t.text for t in targets] == ["192.0.2.1", "192.0.2.2", "192.0.2.9",
                                         "2001:db8::", "2001:db8::1"]
    with pytest.raises(ConfigError, match="more than 3"):
        parse_targets(["192.0.2.0/30", "192.0.2.9", "192.0.2.10"], max_targets=3)
    assert [t.text for t in parse_targets(["::1", "127.0.0.1"])] == ["::1", "127.0.0.1"]


# --- the token bucket -----------------------------------------------------------------

def test_the_bucket_never_lets_more_than_burst_plus_rate_times_time():
    now = [0]
    bucket = TokenBucket(200, clock=lambda: now[0])
    sent = []
    for step in range(0, 3_000_000_000, 700_000):       # a caller asking every 0.7 ms
        now[0] = step
        while bucket.take(step):
            sent.append(step)
    assert abs(len(sent) - 600) <= bucket.burst + 1
    for i in range(len(sent)):                           # every stretch of time
        for j in range(i, min(len(sent), i + 50)):
            assert j - i + 1 <= bucket.burst + (sent[j] - sent[i]) * 200 / 1e9 + 1e-9
    assert TokenBucket(0).take() and TokenBucket(0).wait_ns() == 0


def test_rate_200_sends_1000_probes_in_5_s():
    # TCP to a closed loopback port: each probe is answered at once by a reset
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _engine("ping", "127.0.0.1", "--tcp", str(port), "--count", "1000",
                   "--interval", "0", "--rate", "200", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    windows = [r for r in records if r["type"] == "ping" and not r.get("final")]
    assert len(windows) == 1000 and all(w["received"] == 1 for w in windows)
    took = (windows[-1]["window_start_ns"] - windows[0]["window_start_ns"]) / 1e9
    assert 4.5 <= took <= 5.5, took
    assert "at most 200 probes/s" in proc.stderr


# --- figures --------------------------------------------------------------------------

def test_window_figures_percentiles_and_both_jitters():
    series = Series()
    first = series.window([10, None, 30, 20])
    assert (first["sent"], first["received"], first["loss_ratio"]) == (4, 3, 0.25)
    assert (first["rtt_min_ns"], first["rtt_avg_ns"], first["rtt_max_ns"]) == (10, 20, 30)
    assert (first["rtt_p50_ns"], first["rtt_p95_ns"]) == (20, 30)
    assert first["jitter_ns"] == (20 + 10) // 2              # |30-10|, |20-30|
    assert first["jitter_rfc3550_ns"] == round((20 / 16) + (10 - 20 / 16) / 16)
    series.late_reply()
    series.duplicate()
    second = series.window([None])
    assert second["rtt_avg_ns"] is None and second["jitter_ns"] is None
    assert (second["late"], second["duplicates"], second["loss_ratio"]) == (1, 1, 1.0)
    third = series.window([26])                  # paired with the last sample, 20
    assert third["jitter_ns"] == 6
    totals = series.totals()
    assert (totals["sent"], totals["received"], totals["late"]) == (6, 4, 1)
    assert nearest_rank(list(range(1, 101)), 0.95) == 95


# --- ping alert rules -----------------------------------------------------------------

def _window(target: str, rtt_ms: float | None, loss: float, start: int) -> dict:
    rtt = None if rtt_ms is None else int(rtt_ms * 1e6)
    return stream.ping(target, None, {"sent": 1, "received": int(rtt is not None),
                                      "late": 0, "duplicates": 0, "loss_ratio": loss,
                                      "rtt_min_ns": rtt, "rtt_avg_ns": rtt,
                                      "rtt_max_ns": rtt, "rtt_p50_ns": rtt,
                                      "rtt_p95_ns": rtt, "jitter_ns": rtt and 0,
                                      "jitter_rfc3550_ns": rtt and 0}, start, start + 10)


def test_ping_rules_fire_after_for_windows_and_resolve(capsys):
    alerts = Alerts(parse_alerts(["ping:*:rtt_ms>50:for=3",
                                  "ping:192.0.2.0/24:loss_ratio>0:name=lossy"]))
    alerts.observe(stream.probe_hello("ping", "icmp-raw", [], None, 0, 10**9, 10**9, 100,
                                      256, "native"))
    fired = []
    rtts = [60, 70, None, 80, 10, 10, 10]     # the no-reply window leaves the state
    for i, rtt in enumerate(rtts):
        fired += alerts.observe(_window("198.51.100.1", rtt, 0.0 if rtt else 1.0, i * 100))
    assert [(r["type"], r["window_start_ns"]) for r in fired] == [("alert", 300),
                                                                  ("resolved", 600)]
    assert fired[0]["target"] == "198.51.100.1" and fired[0]["windows_over"] == 3
    assert fired[0]["since_ns"] == 0 and fired[1]["peak"] == 80.0
    lossy = alerts.observe(_window("192.0.2.5", None, 1.0, 0))
    assert [(r["rule"], r["value"]) for r in lossy] == [("lossy", 1.0)]
    assert alerts.observe(_window("198.51.100.9", None, 1.0, 0)) == []   # not in range
    assert alerts.observe(_window("192.0.2.5", 1.0, 0.0, 0) | {"final": True}) == []
    assert "alert 'lossy': 192.0.2.5" in capsys.readouterr().err


# --- tables ---------------------------------------------------------------------------

def test_tables_for_a_terminal(tmp_path):
    import io
    out = io.StringIO()
    table = TableSink(out)
    table.write(stream.probe_hello("ping", "icmp-raw", [], None, 3, 1, 1, 100, 1, "native"))
    table.write(_window("192.0.2.5", 1.5, 0.0, 0))
    table.write(_window("192.0.2.5", 2.5, 0.0, 0) | {"final": True, "up": True})
    table.write(stream.scan("192.0.2.5", [{"port": p, "proto": "tcp",
                                           "state": "open" if p == 22 else "closed",
                                           "rtt_ns": 1000} for p in range(1, 101)], 0, 1))
    table.close()
    text = out.getvalue().splitlines()
    assert text[0].startswith("192.0.2.5") and "rtt min/avg/max 1.500/1.500/1.500" in text[0]
    assert text[1] == "scan of 192.0.2.5: 1 open, 99 closed, 0 filtered (100 ports)"
    assert text[2] == "not shown: 99 closed"
    assert text[4].startswith("22/tcp      open") and text[4].endswith("ssh")
    assert text[-2].split()[:4] == ["192.0.2.5", "1", "1", "0.0%"] and text[-2].endswith("up")
    assert text[-1] == "1 of 1 up (RTT and jitter in ms)"


# --- loopback ---------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["native", "reference"])
def test_scan_of_loopback_finds_a_listening_socket(backend):
    # the native connector (ext/connect.pyx) and its Python twin; 200 ports with
    # --concurrency 7: batches, reused sockets and places freed at once
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        ports = range(max(1, port - 100), min(65535, port + 100))
        proc = _engine("scan", "127.0.0.1", "--ports", f"{ports[0]}-{ports[-1]}", "--rate",
                       "0", "--concurrency", "7", "--format", "json",
                       env={"PT_ENGINE_PUREPYTHON": "1" if backend == "reference" else "0"})
    assert proc.returncode == 0, proc.stderr
    hello, record = [json.loads(line) for line in proc.stdout.splitlines()]
    assert hello["command"] == "scan" and hello["ports"] == list(ports)
    assert hello["backend"] == backend
    # another run's listener may sit in the range: the kernel's list is the truth
    listening = {port}
    for line in subprocess.run(["ss", "-Htln"], capture_output=True, text=True).stdout \
            .splitlines():
        address, _, number = line.split()[3].rpartition(":")
        if address in ("0.0.0.0", "127.0.0.1", "*", "[::]", "[::ffff:127.0.0.1]"):
            listening.add(int(number))
    assert {p["port"]: p["state"] for p in record["ports"]} == {
        p: ("open" if p in listening else "closed") for p in ports}


ICMP = os.geteuid() == 0 or open("/proc/sys/net/ipv4/ping_group_range").read().split()[0] \
    == "0"


@pytest.mark.skipif(not ICMP, reason="ICMP echo needs root or net.ipv4.ping_group_range")
def test_icmp_ping_of_loopback_v4_and_v6_counts_every_reply():
    proc = _engine("ping", "127.0.0.1", "::1", "--count", "5", "--interval", "0.01",
                   "--window", "5", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["type"] for r in records] == ["hello"] + ["ping"] * 4
    for r in records[1:]:
        assert (r["sent"], r["received"], r["loss_ratio"], r["late"]) == (5, 5, 0.0, 0)
        assert 0 < r["rtt_min_ns"] <= r["rtt_p50_ns"] <= r["rtt_p95_ns"] <= r["rtt_max_ns"]
    assert [r.get("final", False) for r in records[1:]] == [False, False, True, True]


# --- scan --syn -------------------------------------------------------------------------

ROOT = os.geteuid() == 0


def test_syn_scan_without_root_is_one_line_and_exit_2(monkeypatch, capsys):
    from pt_engine.probe import command
    monkeypatch.setattr(command.os, "geteuid", lambda: 1000)
    assert main(["scan", "127.0.0.1", "--ports", "22", "--syn", "--format", "json"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "scan --syn needs root" in lines[0], captured.err
    assert captured.out == ""
    # the dry run sends nothing: it needs no root
    assert main(["scan", "127.0.0.1", "--ports", "22", "--syn", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == \
        "1 target(s), 1 port(s) each: 1 probes (up to 2 with retries), TCP SYN (half-open)"


def _ipv4(src: bytes, dst: bytes, proto: int, payload: bytes) -> bytes:
    import struct
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0,
                       src, dst) + payload


@pytest.mark.skipif(not ROOT, reason="raw sockets need root")
def test_syn_cookies_match_only_answers_to_their_own_syn():
    import struct
    from pt_engine.probe.syn import SynSocket, _words, fold
    sock = SynSocket(socket.AF_INET)
    try:
        lo, target = socket.inet_aton("127.0.0.1"), socket.inet_aton("127.0.0.1")
        syn = sock.segment(target, 80, 1)
        sport, dport, seq, ack, offset_flags = struct.unpack_from("!HHIIH", syn)
        assert (sport, dport, ack, offset_flags & 0x3F) == (sock.port, 80, 0, 0x02)
        assert seq & 0xF == 1 and seq == sock.cookie(target, 80, 1)
        assert sock.cookie(target, 81, 1) != seq and sock.cookie(target, 80, 2) != seq
        for port, attempt in ((1, 0), (80, 1), (65535, 15)):        # the C twin's cookies
            assert sock.native.cookie(target, port, attempt) == sock.cookie(target, port,
                                                                            attempt)
        pseudo = lo + target + struct.pack("!xBH", 6, len(syn))
        assert fold(_words(pseudo + syn)) == 0          # the checksum is right

        def answer(flags, ack_no, port=80, to=sock.port):
            tcp = struct.pack("!HHIIBBHHH", port, to, 12345, ack_no, 5 << 4, flags, 1024, 0, 0)
            return _ipv4(target, lo, 6, tcp)
        parse = sock._tcp_answer
        assert parse(answer(0x12, seq + 1), None) == ((target, 80), 1, "reply")
        assert parse(answer(0x14, seq + 1), None) == ((target, 80), 1, "refused")
        assert parse(answer(0x12, seq + 2), None) is None             # not our cookie
        assert parse(answer(0x12, seq + 1, port=81), None) is None    # another port's
        assert parse(answer(0x12, seq + 1, to=sock.port ^ 1), None) is None
        assert parse(answer(0x02, seq + 1), None) is None             # no ACK: not an answer
        quoted = _ipv4(lo, target, 6, syn[:8])
        unreachable = struct.pack("!BBHI", 3, 13, 0, 0) + quoted
        assert sock._icmp_answer(_ipv4(target, lo, 1, unreachable), None) == \
            ((target, 80), 1, "unreachable")
        forged = struct.pack("!BBHI", 3, 13, 0, 0) + _ipv4(lo, target, 6, syn[:4] +
                                                            struct.pack("!I", seq ^ 0x100))
        assert sock._icmp_answer(_ipv4(target, lo, 1, forged), None) is None
    finally:
        sock.close()


def test_siphash_is_the_reference_one():
    from pt_engine.probe.syn import siphash24
    key = bytes(range(16))         # the paper's test vector, and the empty message's
    assert siphash24(key, bytes(range(15))) == 0xa129ca6149be45e5
    assert siphash24(key, b"") == 0x726fdb47dd0e0e31


@pytest.mark.skipif(not ROOT, reason="scan --syn needs root")
@pytest.mark.parametrize("backend", ["native", "reference"])
def test_syn_scan_of_loopback_v4_and_v6(backend):
    with socket.socket(socket.AF_INET6) as server:
        server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        server.bind(("::", 0))
        server.listen()
        port = server.getsockname()[1]
        proc = _engine("scan", "127.0.0.1", "::1", "--ports", f"{port - 2}-{port + 2}",
                       "--syn", "--rate", "0", "--format", "json",
                       env={"PT_ENGINE_PUREPYTHON": "1" if backend == "reference" else "0"})
    assert proc.returncode == 0, proc.stderr
    hello, *records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert hello["method"] == "tcp-syn" and [r["target"] for r in records] == ["127.0.0.1",
                                                                               "::1"]
    assert hello["backend"] == backend
    for record in records:
        assert {p["port"]: p["state"] for p in record["ports"]} == {
            p: ("open" if p == port else "closed") for p in range(port - 2, port + 3)}
        assert all(p["rtt_ns"] > 0 for p in record["ports"])
