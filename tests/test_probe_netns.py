"""`ping` and `scan` against hosts made here: namespaces joined by a veth pair
(tests/probebed.py) for the scan and the sweep, and the userspace link
emulator (tests/linkemu.py) for latency, loss and jitter of known size."""
from __future__ import annotations

import math
import shutil
import subprocess

import pytest

from netns import why_not
from probebed import ProbeBed, why_not_nft

REASON = why_not()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

OPEN, DROPPED = [2201, 2205, 2209], [2203, 2207]


def _ports(record: dict) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {"open": set(), "closed": set(), "filtered": set()}
    for entry in record["ports"]:
        out[entry["state"]].add(entry["port"])
    return out


@pytest.mark.skipif(why_not_nft() is not None, reason=why_not_nft() or "")
def test_scan_finds_exactly_the_open_closed_and_filtered_ports_v4_and_v6():
    with ProbeBed(open_ports=OPEN, dropped_ports=DROPPED) as bed:
        status, records, err = bed.run_engine(
            ["scan", bed.server_addr, bed.server_addr6, "--ports", "2200-2210",
             "--timeout", "0.3", "--retries", "1", "--rate", "0"])
    assert status == 0, err
    assert [r["type"] for r in records] == ["hello", "scan", "scan"]
    for record, target in zip(records[1:], ("198.18.0.2", "2001:db8::2")):
        assert record["target"] == target
        states = _ports(record)
        assert states["open"] == set(OPEN)
        assert states["filtered"] == set(DROPPED)
        assert states["closed"] == set(range(2200, 2211)) - set(OPEN) - set(DROPPED)
        assert (record["open"], record["closed"], record["filtered"]) == (3, 6, 2)
        for entry in record["ports"]:
            assert entry["proto"] == "tcp"
            assert (entry["rtt_ns"] is None) == (entry["state"] == "filtered")
            assert entry["rtt_ns"] is None or 0 < entry["rtt_ns"] < 300_000_000


REJECTED = [2204]


@pytest.mark.skipif(why_not_nft() is not None, reason=why_not_nft() or "")
def test_syn_scan_gives_the_connect_scans_states_v4_and_v6():
    # dropped: no answer after the retry; rejected: an ICMP administratively-
    # prohibited answer, matched to its SYN by the quoted cookie (not retried)
    expected = {"open": set(OPEN), "filtered": set(DROPPED) | set(REJECTED),
                "closed": set(range(2200, 2211)) - set(OPEN) - set(DROPPED) - set(REJECTED)}
    with ProbeBed(open_ports=OPEN, dropped_ports=DROPPED, rejected_ports=REJECTED) as bed:
        runs = {}
        # the connect scan, the SYN scan, and the SYN scan's pure-Python twin
        for mode in ((), ("--syn",), ("--syn", "reference")):
            runs[mode] = bed.run_engine(
                ["scan", bed.server_addr, bed.server_addr6, "--ports", "2200-2210",
                 "--timeout", "0.3", "--retries", "1", "--rate", "0", *mode[:1]],
                env={"PT_ENGINE_PUREPYTHON": "1" if "reference" in mode else "0"})
        # the server has no half-open connection left: the kernel's reset closed each
        ss = subprocess.run(["ip", "netns", "exec", bed.server_ns, "ss", "-Htn",
                             "state", "syn-recv"], capture_output=True, text=True)
    for mode, (status, records, err) in runs.items():
        assert status == 0, err
        assert [r["type"] for r in records] == ["hello", "scan", "scan"]
        assert records[0]["method"] == ("tcp-syn" if mode else "tcp-connect")
        for record, target in zip(records[1:], ("198.18.0.2", "2001:db8::2")):
            assert record["target"] == target
            assert _ports(record) == expected, (mode, target)
            for entry in record["ports"]:
                assert (entry["rtt_ns"] is None) == (entry["state"] == "filtered")
    connect = runs[()][1]
    for syn in (runs[("--syn",)][1], runs[("--syn", "reference")][1]):
        assert [r["ports"] for r in syn[1:]] == [[{**p, "rtt_ns": q["rtt_ns"]} for p, q in
                                                  zip(r["ports"], s["ports"])]
                                                 for r, s in zip(connect[1:], syn[1:])]
    assert ss.returncode == 0 and ss.stdout.strip() == "", ss.stdout


def test_syn_scan_as_root_sends_syns_and_sees_the_answers_in_tcpdump():
    if shutil.which("tcpdump") is None:
        pytest.skip("needs tcpdump")
    with ProbeBed(open_ports=[2201]) as bed:
        dump = subprocess.Popen(["ip", "netns", "exec", bed.server_ns, "tcpdump", "-l", "-n",
                                 "-i", bed._sif, "-c", "7", "tcp portrange 2200-2202"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _wait_listening(dump)
            status, records, err = bed.run_engine(
                ["scan", bed.server_addr, "--ports", "2200-2202", "--syn", "--rate", "0",
                 "--timeout", "0.5"])
            out, _ = dump.communicate(timeout=10)
        finally:
            if dump.poll() is None:
                dump.kill()
                dump.wait()
    assert status == 0, err
    assert {p["port"]: p["state"] for p in records[1]["ports"]} == {
        2200: "closed", 2201: "open", 2202: "closed"}
    lines = out.splitlines()
    syns = [line for line in lines if "> 198.18.0.2.220" in line and "Flags [S]," in line]
    assert len(syns) == 3, out                 # one SYN per port, no handshake completed
    assert not [line for line in lines if "Flags [.]" in line or "Flags [P" in line], out
    # 3 SYNs, 2 resets of the closed ports, the open port's SYN/ACK answered by
    # the client kernel's reset by the client kernel's reset
    assert any("198.18.0.2.2201 >" in line and "Flags [S.]" in line for line in lines), out
    assert any("> 198.18.0.2.2201" in line and "Flags [R]" in line for line in lines), out


def test_scans_of_a_link_local_address_with_its_zone():
    import re
    with ProbeBed(open_ports=[2201]) as bed:
        shown = subprocess.run(["ip", "-n", bed.server_ns, "-o", "-6", "addr", "show", "dev",
                                bed._sif, "scope", "link"], capture_output=True, text=True,
                               check=True).stdout
        link_local = re.search(r"inet6 (fe80:[0-9a-f:]+)/", shown).group(1)
        target = f"{link_local}%{bed._cif}"          # the zone: the client's interface
        runs = [bed.run_engine(["scan", target, "--ports", "2200-2202", "--rate", "0",
                                "--timeout", "0.5", *mode],
                               env={"PT_ENGINE_PUREPYTHON": backend})
                for mode in ((), ("--syn",)) for backend in ("0", "1")]
    for status, records, err in runs:
        assert status == 0, err
        assert records[1]["target"] == target
        assert {p["port"]: p["state"] for p in records[1]["ports"]} == {
            2200: "closed", 2201: "open", 2202: "closed"}


def _wait_listening(dump: subprocess.Popen) -> None:
    """Until tcpdump says it listens (on stderr)."""
    for line in dump.stderr:
        if "listening" in line:
            return
    raise AssertionError("tcpdump did not start")


def test_sweep_finds_exactly_the_live_addresses():
    extra = [10, 11, 12, 20]
    with ProbeBed(extra=extra) as bed:
        status, records, err = bed.run_engine(
            ["ping", "198.18.0.0/27", "--timeout", "0.5", "--rate", "0"])
        assert status == 0, err
        finals = [r for r in records if r["type"] == "ping" and r.get("final")]
        windows = [r for r in records if r["type"] == "ping" and not r.get("final")]
        up = {r["target"] for r in finals if r["up"]}
        # the client's own address answers too (it is local to that namespace)
        assert up == {bed.client_addr, bed.server_addr, *bed.extra}
        assert len(finals) == len(windows) == 30          # a /27's hosts, one round
        for r in finals:
            assert r["sent"] == 1 and r["received"] == (1 if r["up"] else 0)
        assert "198.18.0.0/27" in err and "30 target(s)" in err


def test_tcp_ping_counts_a_reset_as_an_answer_and_a_filter_as_loss():
    if why_not_nft() is not None:
        pytest.skip(why_not_nft())
    with ProbeBed(open_ports=[2201], dropped_ports=[2203]) as bed:
        status, records, err = bed.run_engine(
            ["ping", bed.server_addr, "--tcp", "2201,2202,2203", "--count", "3",
             "--interval", "0.05", "--timeout", "0.3"])
    assert status == 0, err
    finals = {r["port"]: r for r in records if r["type"] == "ping" and r.get("final")}
    assert {p: (r["sent"], r["received"], r["up"]) for p, r in finals.items()} == {
        2201: (3, 3, True), 2202: (3, 3, True), 2203: (3, 0, False)}
    assert finals[2203]["loss_ratio"] == 1.0 and finals[2203]["rtt_avg_ns"] is None


def test_icmp_datagram_socket_where_ping_group_range_allows_it():
    with ProbeBed() as bed:
        import subprocess
        subprocess.run(["ip", "netns", "exec", bed.client_ns, "sysctl", "-qw",
                        "net.ipv4.ping_group_range=0 2147483647"], check=True)
        status, records, err = bed.run_engine(["ping", bed.server_addr, bed.server_addr6,
                                               "--count", "2", "--interval", "0.05"])
    assert status == 0, err
    assert records[0]["method"] == "icmp-dgram+icmp-dgram"
    finals = [r for r in records if r.get("final")]
    assert [(r["target"], r["received"]) for r in finals] == [("198.18.0.2", 2),
                                                             ("2001:db8::2", 2)]


# --- known impairment: the link emulator ------------------------------------------------

def _ping_across(bed, *extra) -> tuple[list[dict], dict]:
    import json
    import subprocess
    import sys
    proc = bed.exec(bed.client_ns, [sys.executable, "-m", "pt_engine", "ping",
                                    bed.server_addr, "--format", "json", *extra],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    final = next(r for r in records if r.get("final"))
    return records, final


def _binomial_interval(n: int, p: float, level: float = 0.99) -> tuple[int, int]:
    """The central `level` interval of Binomial(n, p), from its exact CDF."""
    pmf = [math.comb(n, k) * p ** k * (1 - p) ** (n - k) for k in range(n + 1)]
    tail = (1 - level) / 2
    lo = hi = 0
    total = 0.0
    for k, mass in enumerate(pmf):
        total += mass
        if total < tail:
            lo = k + 1
        if total < 1 - tail:
            hi = k + 1
    return lo, hi


def test_rtt_p50_is_twice_the_one_way_delay_and_jitter_near_zero_without_jitter():
    from linkemu import LinkBed
    with LinkBed(delay_ms=20, jitter_ms=0, loss=0.0, seed=1) as bed:
        records, final = _ping_across(bed, "--count", "100", "--interval", "0.02",
                                      "--window", "10")
    assert final["sent"] == 100 and final["received"] == 100
    assert abs(final["rtt_p50_ns"] - 40_000_000) <= 2_000_000, final
    windows = [r for r in records if r["type"] == "ping" and not r.get("final")]
    assert len(windows) == 10 and all(w["sent"] == 10 for w in windows)
    # near zero: the median window's (a window when the loaded machine held the
    # emulator back a few ms is not the link's jitter; with J = 5 ms it is ~4.6 ms)
    jitters = sorted(w["jitter_ns"] for w in windows)
    assert jitters[len(jitters) // 2] < 1_000_000, jitters


def test_jitter_shows_with_a_jittered_link():
    from linkemu import LinkBed
    with LinkBed(delay_ms=20, jitter_ms=5, loss=0.0, seed=2) as bed:
        _, final = _ping_across(bed, "--count", "100", "--interval", "0.02")
    assert final["received"] == 100
    # RTT = two independent uniform(-5, 5) ms delays: E|difference| is about 4.6 ms
    assert final["jitter_ns"] > 2_000_000 and final["jitter_rfc3550_ns"] > 2_000_000, final
    assert final["rtt_max_ns"] - final["rtt_min_ns"] > 5_000_000


def test_loss_ratio_is_within_the_binomial_interval():
    from linkemu import LinkBed
    n, p = 500, 1 - 0.9 ** 2             # 10 % dropped each way
    with LinkBed(delay_ms=1, jitter_ms=0, loss=0.1, seed=3) as bed:
        _, final = _ping_across(bed, "--count", str(n), "--interval", "0", "--rate", "250",
                                "--timeout", "0.5")
    lo, hi = _binomial_interval(n, p)
    lost = final["sent"] - final["received"]
    assert final["sent"] == n
    assert lo <= lost <= hi, (lost, lo, hi)
    assert final["loss_ratio"] == lost / n
    assert final["late"] == 0 and final["duplicates"] == 0


def test_duplicated_replies_are_counted_never_samples():
    from linkemu import LinkBed
    # every IPv4 frame sent twice each way: each request arrives twice and each
    # reply twice, so 4 replies per echo: 1 sample and 3 duplicates
    with LinkBed(delay_ms=2, jitter_ms=0, loss=0.0, seed=5, duplicate=1.0) as bed:
        records, final = _ping_across(bed, "--count", "20", "--interval", "0.05",
                                      "--timeout", "0.5")
        stats = bed.stats()
    assert stats["a_to_b"]["duplicated"] >= 20 and stats["b_to_a"]["duplicated"] >= 40
    assert (final["sent"], final["received"], final["loss_ratio"]) == (20, 20, 0.0)
    assert final["duplicates"] == 60 and final["late"] == 0, final
    # a window is written at its probe's first reply; the copies come right after
    # it, 50 ms before the next probe, so they are counted in the next window
    # (those of the last probe in the totals only)
    windows = [r for r in records if r["type"] == "ping" and not r.get("final")]
    assert [w["duplicates"] for w in windows] == [0] + [3] * 19
    assert all(w["received"] == 1 for w in windows)


def test_replies_after_the_timeout_are_late_never_samples():
    from linkemu import LinkBed
    with LinkBed(delay_ms=150, jitter_ms=0, loss=0.0, seed=4) as bed:
        records, final = _ping_across(bed, "--count", "5", "--interval", "0.1",
                                      "--timeout", "0.2")
    # RTT 300 ms > 200 ms: every probe is lost; the replies that come while the
    # run still waits for later probes (those of the first three at least) are late
    assert (final["sent"], final["received"], final["loss_ratio"]) == (5, 0, 1.0)
    assert 3 <= final["late"] <= 5 and final["rtt_avg_ns"] is None and not final["up"]
    windows = [r for r in records if r["type"] == "ping" and not r.get("final")]
    assert sum(w["late"] for w in windows) == final["late"]


@pytest.mark.parametrize("backend", ["0", "1"])
def test_tcp_answers_after_the_timeout_are_late_never_samples(backend, monkeypatch):
    from linkemu import LinkBed
    # RTT 300 ms, timeout 200 ms: each connect times out, its socket is kept one
    # more timeout and sees the reset come (a closed port answers), counted late
    monkeypatch.setenv("PT_ENGINE_PUREPYTHON", backend)
    with LinkBed(delay_ms=150, jitter_ms=0, loss=0.0, seed=6) as bed:
        records, final = _ping_across(bed, "--tcp", "2299", "--count", "3",
                                      "--interval", "0.1", "--timeout", "0.2")
    assert records[0]["backend"] == ("reference" if backend == "1" else "native")
    assert (final["port"], final["sent"], final["received"], final["late"]) == (2299, 3, 0, 3)
    assert final["rtt_avg_ns"] is None and not final["up"]
