"""--analyser talkers: exact per-address counts on a crafted capture, and the
--addresses policies (pseudonymise: stable per key, different across keys,
prefix-preserving; truncate; hash; clear: the capture's addresses); the native
counter against its twin, the Space-Saving error bound past BOUND addresses,
the aggregator's exact merge and its choice of ports."""
import ipaddress
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frames import DLT_EN10MB, IPPROTO_UDP, eth, ipv4, pcap_file, udp
from pt_engine._talkers import TalkersCounter as NativeTalkersCounter
from pt_engine.analysers import AnalyserContext
from pt_engine.analysers.talkers import (
    BOUND, Talkers, TalkersCounter, new_counter, pack_delta, row_key, unpack_delta)
from pt_engine.records import PROTO_INDEX, RECORD_DTYPE

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


# --- the counter: native against its twin, exact counts, the Space-Saving bound ----------

CTX = AnalyserContext(("all",), 10**9, None, False, addresses="clear")


def records_of(packets) -> np.ndarray:
    """Records of (proto, src host, sport, dst host, dport, wire, class) rows;
    host h is ::ffff:10.0.h>>8.h&255, or 2001:db8::h when h >= 60000."""
    out = np.zeros(len(packets), dtype=RECORD_DTYPE)
    for i, (proto, sh, sp, dh, dp, wire, cls) in enumerate(packets):
        out[i]["proto"], out[i]["pkt_class"], out[i]["wire_len"] = proto, cls, wire
        out[i]["src_port"], out[i]["dst_port"] = sp, dp
        out[i]["src_addr"] = np.frombuffer(host(sh), np.uint8)
        out[i]["dst_addr"] = np.frombuffer(host(dh), np.uint8)
    return out


def host(h: int) -> bytes:
    if h >= 60000:
        return b"\x20\x01\x0d\xb8" + bytes(10) + h.to_bytes(2, "big")
    return bytes(10) + b"\xff\xff" + bytes([10, 0, h >> 8, h & 0xFF])


def content(delta) -> tuple:
    """A delta as sorted (row, address, packets, bytes) and (row, addresses,
    packets, bytes, error) lists."""
    if delta is None:
        return [], []
    entries, rows = unpack_delta(delta)
    return (sorted(zip(entries["key"].tolist(), entries["hi"].tolist(),
                       entries["lo"].tolist(), entries["packets"].tolist(),
                       entries["bytes"].tolist())),
            sorted(zip(*(rows[name].tolist() for name in rows.dtype.names))))


def truth(recs: np.ndarray) -> dict:
    """{row: {address: [packets, bytes]}}, counted without any bound."""
    rows: dict = {}
    for r in recs:
        index = PROTO_INDEX.get(int(r["proto"]))
        if int(r["pkt_class"]) != 0 or index is None:
            continue
        for key, addr in ((row_key(index, int(r["dst_port"]), 0), bytes(r["src_addr"])),
                          (row_key(index, int(r["src_port"]), 1), bytes(r["dst_addr"]))):
            counts = rows.setdefault(key, {}).setdefault(addr, [0, 0])
            counts[0] += 1
            counts[1] += int(r["wire_len"])
    return rows


def test_each_backend_counts_with_its_own_counter(backend_env):
    counter = new_counter(CTX)
    if backend_env == "native":
        assert isinstance(counter, NativeTalkersCounter) and counter.raw_records
        assert counter.bound == BOUND
    else:
        assert isinstance(counter, TalkersCounter) and not counter.raw_records


packet = st.tuples(st.sampled_from([6, 17, 132, 136, 33, 6, 17, 1]),
                   st.integers(0, 12) | st.integers(0, 65535),
                   st.sampled_from([53, 80, 40000, 0, 65535]),
                   st.integers(0, 12) | st.integers(60000, 60010),
                   st.sampled_from([53, 443, 40001, 65535]),
                   st.integers(0, 2**32 - 1) | st.integers(60, 1514),
                   st.sampled_from([0, 0, 0, 0, 1, 2, 3]))


@settings(max_examples=300, deadline=None)
@given(packets=st.lists(packet, min_size=0, max_size=200),
       bound=st.sampled_from([1, 2, 3, 5, 8, BOUND]),
       cuts=st.lists(st.integers(0, 200), max_size=6))
def test_random_packets_give_the_twins_deltas(packets, bound, cuts):
    """Any protocol mix, IPv4 and IPv6, wire lengths up to 2^32 - 1, bounds that
    overflow at once; consumed in pieces, taken at some of the cuts."""
    recs = records_of(packets)
    native, twin = NativeTalkersCounter(bound), TalkersCounter(None, bound)
    points = sorted({0, len(recs), *[min(c, len(recs)) for c in cuts]})
    for i, (a, b) in enumerate(zip(points, points[1:])):
        native.consume(recs, a, b)
        twin.consume(recs, a, b)
        if i % 2:
            assert content(native.take()) == content(twin.take())
    assert content(native.take()) == content(twin.take())
    assert native.take() is None and twin.take() is None


def zipf_stream(n: int, addresses: int, seed: int) -> np.ndarray:
    """n UDP packets to port 53 from `addresses` sources, Zipf-like weights."""
    rng = np.random.default_rng(seed)
    weights = 1 / np.arange(1, addresses + 1) ** 1.1
    sources = rng.choice(addresses, n, p=weights / weights.sum())
    wires = rng.integers(60, 1515, n)
    return records_of([(17, 100 + int(s), 40000 + int(s) % 7, 1, 53, int(w), 0)
                       for s, w in zip(sources, wires)])


@pytest.mark.parametrize("bound, addresses", [(BOUND, 600), (BOUND, 3000), (16, 200)])
def test_counts_exact_under_the_bound_and_within_error_bytes_past_it(bound, addresses):
    recs = zipf_stream(20_000, addresses, seed=addresses)
    counter = NativeTalkersCounter(bound)
    counter.consume(recs, 0, len(recs))
    (entries, rows) = content(counter.take())
    real = truth(recs)
    rows = {key: (n, p, b, e) for key, n, p, b, e in rows}
    assert set(rows) == set(real)
    for key, row in real.items():
        listed = {(hi, lo): (p, b) for k, hi, lo, p, b in entries if k == key}
        n, packets, nbytes, err = rows[key]
        # a row's entries add up to its exact packets and bytes, as its summary says
        assert sum(p for p, _ in listed.values()) == sum(p for p, _ in row.values()) == packets
        assert sum(b for _, b in listed.values()) == sum(b for _, b in row.values()) == nbytes
        assert len(listed) == min(len(row), bound) == n
        names = {(int.from_bytes(a[:8], "big"), int.from_bytes(a[8:], "big")): c
                 for a, c in row.items()}
        if len(row) <= bound:
            assert err == 0 and listed == {a: tuple(c) for a, c in names.items()}
            continue
        assert err > 0
        for a, (p, b) in listed.items():
            true_bytes = names[a][1] if a in names else 0
            assert true_bytes <= b <= true_bytes + err
        for a, (_, b) in names.items():
            if b > err:
                assert a in listed      # an address past the error is never missing
    assert any(len(row) > bound for row in real.values()) == (addresses > bound)


def _aggregate(parts, ports=None):
    talkers = Talkers(AnalyserContext(("all",), 10**9, ports, False, addresses="clear",
                                      state_dir=None))
    for delta in parts:
        talkers.merge(delta, 0)
    return talkers, talkers.window(0, 10**9)["talkers"]


def test_the_aggregator_merges_capture_processes_exactly():
    """The same records split among three counters, or in one: the same window."""
    recs = records_of([(17, s % 40, 1000 + s % 3, 200 + s % 5, 53 + s % 4, 60 + s, 0)
                       for s in range(900)])
    whole = NativeTalkersCounter()
    whole.consume(recs, 0, len(recs))
    parts = []
    for k in range(3):
        counter = NativeTalkersCounter()
        mine = np.ascontiguousarray(recs[k::3])
        counter.consume(mine, 0, len(mine))
        parts.append(counter.take())
    _, one = _aggregate([whole.take()])
    _, three = _aggregate(parts)
    assert one == three
    real = truth(recs)
    for entry in one["ports"]:
        index = PROTO_INDEX[17]
        for direction, name in ((0, "in"), (1, "out")):
            row = real.get(row_key(index, entry["port"], direction), {})
            best = sorted(row.values(), key=lambda c: -c[1])[:5]
            assert [(t["packets"], t["bytes"]) for t in entry[name]] == [tuple(c) for c in best]
            assert entry[f"{name}_addresses"] == len(row)


def test_the_busiest_ports_and_every_selected_port():
    from pt_engine.config import PortSpec
    # ports 1..14, port p with p packets of 100 bytes: the 10 busiest are 5..14
    recs = records_of([(6, 7, 40000, 8, p, 100, 0) for p in range(1, 15) for _ in range(p)])
    counter = NativeTalkersCounter()
    counter.consume(recs, 0, len(recs))
    delta = counter.take()
    _, window = _aggregate([delta])
    assert [e["port"] for e in window["ports"]][:10] == [40000] + list(range(14, 5, -1))
    _, chosen = _aggregate([delta], ports=PortSpec.parse("2,13"))
    assert [e["port"] for e in chosen["ports"]] == [13, 2]


def test_packed_deltas_read_back_and_others_are_refused():
    rows = {row_key(1, 53, 0): {host(1): [2, 300], host(60001): [1, 2**40]}}
    entries, summaries = content(pack_delta(rows, {row_key(1, 53, 0): 7}))
    assert [e[3:] for e in entries] == [(2, 300), (1, 2**40)]
    assert summaries == [(row_key(1, 53, 0), 2, 3, 300 + 2**40, 7)]
    with pytest.raises(ValueError, match="not a talkers delta"):
        unpack_delta(pack_delta(rows, {})[:-1])
    with pytest.raises(ValueError, match="not a talkers delta"):
        NativeTalkersCounter().merge(pack_delta(rows, {})[:-1])
    with pytest.raises(ValueError, match="bound must be"):
        NativeTalkersCounter(0)
    with pytest.raises(ValueError, match="not whole"):
        NativeTalkersCounter().consume(b"x" * 71, 0, 1)


def test_a_port_with_more_addresses_than_the_bound(tmp_path, backend_env):
    """1,100 one-packet sources and three heavy ones to udp/53: the row keeps
    BOUND addresses, says so and its error; the heavy ones are listed, within
    their error bound, in the window and the summary; on both backends."""
    heavy = {"203.0.113.1": 60, "203.0.113.2": 40, "203.0.113.3": 30}
    recs, ts, k = [], T0 * 10**9, 0
    for i in range(1100):
        src = f"198.18.{i >> 8}.{i & 255}"
        order = [(src, 100)] + [(h, 1000) for h, n in heavy.items() if i % (1100 // n) == 0]
        for address, wire in order:
            ts += 1000
            k += 1
            recs.append((ts, eth() + ipv4(address, "10.0.0.1", IPPROTO_UDP,
                                          udp(40000, 53)), wire))
    path = tmp_path / "many.pcap"
    path.write_bytes(pcap_file(recs, DLT_EN10MB, nano=True))
    true_bytes = {h: 1000 * len([i for i in range(1100) if i % (1100 // n) == 0])
                  for h, n in heavy.items()}
    proc = subprocess.run([sys.executable, "-m", "pt_engine", "read", str(path), "--analyser",
                           "talkers", "--addresses", "clear", "--format", "json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    for record in (out[1], out[-1]):      # the one window, the summary
        dns = port(record["talkers"], "udp", 53)
        assert dns["in_addresses"] == BOUND
        err = dns["in_error_bytes"]
        assert 0 < err < 1000
        assert [t["address"] for t in dns["in"][:3]] == list(heavy)
        for t in dns["in"][:3]:
            assert true_bytes[t["address"]] <= t["bytes"] <= true_bytes[t["address"]] + err


def test_the_summary_keeps_the_bound_over_windows_and_processes():
    """Three windows of 20,000 packets from 3,000 sources to udp/53, each split
    between two capture processes: the summary's listed addresses are within
    its error_bytes of their true totals, and the true top five are listed."""
    talkers = Talkers(AnalyserContext(("all",), 10**9, None, False, addresses="clear"))
    real: dict = {}
    for w in range(3):
        recs = zipf_stream(20_000, 3000, seed=10 + w)
        for k in range(2):
            counter = NativeTalkersCounter()
            mine = np.ascontiguousarray(recs[k::2])
            counter.consume(mine, 0, len(mine))
            talkers.merge(counter.take(), 0)
        talkers.window(w * 10**9, (w + 1) * 10**9)
        for addr, (_, b) in truth(recs)[row_key(PROTO_INDEX[17], 53, 0)].items():
            real[addr] = real.get(addr, 0) + b
    dns = port(talkers.summary()["talkers"], "udp", 53)
    err = dns["in_error_bytes"]
    assert dns["in_addresses"] == BOUND and 0 < err
    names = {str(ipaddress.ip_address(a).ipv4_mapped): b for a, b in real.items()}
    best = sorted(names, key=lambda a: -names[a])[:5]
    assert names[best[-1]] > err, "the test's top five stand above the error"
    assert [t["address"] for t in dns["in"]] == best
    for t in dns["in"]:
        assert abs(t["bytes"] - names[t["address"]]) <= err
