"""--analyser talkers: exact per-address counts on a crafted capture, and the
--addresses policies (pseudonymise: stable per key, different across keys,
prefix-preserving; truncate; hash; clear: the capture's addresses)."""
import ipaddress
import json
import os
import subprocess
import sys

import pytest

from frames import DLT_EN10MB, IPPROTO_UDP, eth, ipv4, pcap_file, udp

T0 = 1_700_000_000
# (source address, source port, destination address, destination port, wire length, count)
FLOWS = [("192.0.2.10", 40000, "10.0.0.1", 53, 100, 7),
         ("192.0.2.77", 40001, "10.0.0.1", 53, 300, 3),
         ("198.51.100.5", 40002, "10.0.0.1", 53, 1000, 1),
         ("10.0.0.1", 53, "192.0.2.10", 40000, 200, 2)]


def capture(tmp_path):
    recs, ts = [], T0 * 10**9
    for src, sport, dst, dport, wire, count in FLOWS:
        frame = eth() + ipv4(src, dst, IPPROTO_UDP, udp(sport, dport))
        for _ in range(count):
            ts += 1000
            recs.append((ts, frame, wire))
    path = tmp_path / "talk.pcap"
    path.write_bytes(pcap_file(recs, DLT_EN10MB, nano=True))
    return path


def talkers(tmp_path, *extra, state="state"):
    proc = subprocess.run([sys.executable, "-m", "pt_engine", "read", str(capture(tmp_path)),
                           "--analyser", "talkers", "--format", "json", "--state-dir",
                           str(tmp_path / state), *extra], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    windows = [r for r in records if r["type"] == "window"]
    assert len(windows) == 1
    return windows[0]["talkers"], records[-1]["talkers"]


def port(entries, proto, number):
    return next(e for e in entries["ports"] if e["proto"] == proto and e["port"] == number)


def test_clear_gives_exact_counts_and_the_capture_addresses(tmp_path):
    window, summary = talkers(tmp_path, "--addresses", "clear")
    assert window["addresses"] == "clear" and window["bound"] > 0
    dns = port(window, "udp", 53)
    assert dns["in"] == [{"address": "198.51.100.5", "packets": 1, "bytes": 1000},
                         {"address": "192.0.2.77", "packets": 3, "bytes": 900},
                         {"address": "192.0.2.10", "packets": 7, "bytes": 700}]
    assert dns["out"] == [{"address": "192.0.2.10", "packets": 2, "bytes": 400}]
    assert dns["in_addresses"] == 3 and dns["in_error_bytes"] == 0
    client = port(window, "udp", 40000)
    assert client["out"] == [{"address": "10.0.0.1", "packets": 7, "bytes": 700}]
    assert client["in"] == [{"address": "10.0.0.1", "packets": 2, "bytes": 400}]
    assert port(summary, "udp", 53)["in"] == dns["in"]


def _in_addresses(window):
    return [t["address"] for t in port(window, "udp", 53)["in"]]


def test_pseudonyms_stable_per_key_different_across_keys_prefix_preserving(tmp_path):
    one, _ = talkers(tmp_path)
    assert one["addresses"] == "pseudonymise"
    key = tmp_path / "state" / "address-key"
    assert key.stat().st_mode & 0o777 == 0o600 and len(key.read_bytes()) == 32
    again, _ = talkers(tmp_path)
    other, _ = talkers(tmp_path, state="other-state")
    a, b, c = _in_addresses(one)          # 198.51.100.5, 192.0.2.77, 192.0.2.10
    assert _in_addresses(again) == [a, b, c]
    assert _in_addresses(other) != [a, b, c]
    real = {"198.51.100.5", "192.0.2.77", "192.0.2.10", "10.0.0.1"}
    assert not set(_in_addresses(one)) & real
    net = lambda text: ipaddress.ip_network(f"{text}/24", strict=False)   # noqa: E731
    assert net(b) == net(c)               # 192.0.2.77 and .10 share their /24
    assert net(a) != net(b)
    # the key never goes into the stream
    proc = subprocess.run([sys.executable, "-m", "pt_engine", "read", str(capture(tmp_path)),
                           "--analyser", "talkers", "--state-dir", str(tmp_path / "state")],
                          capture_output=True, timeout=60)
    assert key.read_bytes() not in proc.stdout


def test_truncate_and_hash(tmp_path):
    window, _ = talkers(tmp_path, "--addresses", "truncate:24,48")
    assert window["addresses"] == "truncate:24,48"
    assert _in_addresses(window) == ["198.51.100.0", "192.0.2.0", "192.0.2.0"]
    hashed, _ = talkers(tmp_path, "--addresses", "hash")
    names = _in_addresses(hashed)
    assert len(set(names)) == 3 and all(len(n) == 16 for n in names)
    assert not any("." in n for n in names)


def test_bad_policy_is_a_usage_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pt_engine", "read", str(capture(tmp_path)),
                           "--analyser", "talkers", "--addresses", "truncate:40,48"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("pt-engine: error: --addresses")
    assert "Traceback" not in proc.stderr
