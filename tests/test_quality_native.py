"""The native TCP quality counter (ext/quality.pyx) against its pure-Python twin
(engine/analysers/tcp_quality.py): the same deltas, byte for byte, on random
and mutated conversations and on small bounds; the aggregator's exact merge;
and the worst case of the real bounds in memory."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stages
from pt_engine._quality import QualityCounter as NativeQualityCounter
from pt_engine.analysers import AnalyserContext
from pt_engine.analysers.tcp_quality import (
    BOUNDS,
    N_COUNTERS,
    ROW_WIDTH,
    STATE_KEYS,
    Bounds,
    QualityCounter,
    TcpQuality,
    new_counter,
    pack_delta,
    unpack_delta,
)
from pt_engine.records import (
    TCPI_FRAGMENT,
    TCPI_HEADER,
    TCPI_IPV6,
    TCPI_NEGATIVE_PAYLOAD,
    TCPI_NO_TIMESTAMP,
)
from pt_engine import cli
from streams import read_stream
from test_quality import CAPTURES, QUALITY_CORPUS, mangled_conversations

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
CTX = AnalyserContext(("all",), 10**9, None, False)


def test_each_backend_counts_with_its_own_counter(backend_env):
    counter = new_counter(CTX)
    if backend_env == "native":
        assert isinstance(counter, NativeQualityCounter) and counter.raw_records
        assert counter.bounds == tuple(asdict(BOUNDS).values())
    else:
        assert isinstance(counter, QualityCounter) and not counter.raw_records


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_the_corpus_gives_the_same_windows_on_both_backends(capture, tmp_path, monkeypatch):
    """Not only the summary (test_quality.py checks it against the expected
    values on each backend): every window of 100 ms, byte for byte."""
    outputs = []
    for reference in (False, True):
        if reference:
            monkeypatch.setenv("PT_ENGINE_PUREPYTHON", "1")
        else:
            monkeypatch.delenv("PT_ENGINE_PUREPYTHON", raising=False)
        status, records, _ = read_stream(tmp_path, str(capture), "--analyser", "tcp_quality",
                                         "--interval", "0.1", fmt="json")
        outputs.append((status, [json.dumps(r.get("tcp_quality")) for r in records
                                 if r["type"] in ("window", "summary")]))
    assert outputs[0] == outputs[1]


# --- on by default ------------------------------------------------------------------------

SSH = QUALITY_CORPUS / "zeek_ssh.pcap"


def _quality_fields(records: list[dict]) -> list:
    return [r.get("tcp_quality") for r in records if r["type"] in ("window", "summary")]


def test_read_measures_tcp_quality_by_default_and_once(tmp_path):
    status, plain, _ = read_stream(tmp_path, str(SSH), fmt="json")
    assert status == 0
    assert all(q is not None for q in _quality_fields(plain))
    assert plain[-1]["tcp_quality"]["rows"] and plain[-1]["tcp_quality"]["state"]["analysed"]
    status, named, _ = read_stream(tmp_path, str(SSH), "--analyser", "tcp_quality", fmt="json")
    assert status == 0 and _quality_fields(named) == _quality_fields(plain)


def test_no_tcp_quality_turns_it_off(tmp_path):
    status, records, _ = read_stream(tmp_path, str(SSH), "--no-tcp-quality", fmt="json")
    assert status == 0
    assert _quality_fields(records) == [None] * (len(records) - 1)
    # the counters are the same either way
    _, plain, _ = read_stream(tmp_path, str(SSH), fmt="json")
    for with_q, without in zip(plain, records):
        with_q.pop("tcp_quality", None)
        assert with_q == without
    # ... and naming the analyser still runs it
    status, named, _ = read_stream(tmp_path, str(SSH), "--no-tcp-quality", "--analyser",
                                   "tcp_quality", fmt="json")
    assert status == 0 and named[-1]["tcp_quality"]["rows"]


def test_the_config_file_turns_it_off(tmp_path, monkeypatch):
    config = tmp_path / "config.toml"
    config.write_text("tcp_quality = false\n")
    monkeypatch.setenv("PT_ENGINE_CONFIG", str(config))
    status, records, _ = read_stream(tmp_path, str(SSH), fmt="json")
    assert status == 0 and "tcp_quality" not in records[-1]
    config.write_text("tcp_quality = 0\n")
    assert cli.main(["read", str(SSH), "--format", "json", "-o", str(tmp_path / "x")]) == 2


def test_top_passes_the_switch_on_to_its_engine():
    args = cli._parser(only="top").parse_args(["top", "--no-tcp-quality"])
    assert "--no-tcp-quality" in cli._capture_argv(args)
    args = cli._parser(only="top").parse_args(["top"])
    assert "--no-tcp-quality" not in cli._capture_argv(args)


# --- the two counters side by side -------------------------------------------------------

def run_both(records: np.ndarray, bounds: Bounds, cuts: list[int], takes: set[int]) -> list:
    """Feed `records` to both counters in the pieces that `cuts` make, taking a
    delta after the pieces ending at an index in `takes` and at the end;
    every delta and the held state must agree. Returns the native deltas."""
    native = NativeQualityCounter(**asdict(bounds))
    twin = QualityCounter(None, bounds)
    raw = memoryview(bytearray(records.tobytes()))
    deltas = []
    edges = sorted({0, len(records), *[c for c in cuts if 0 <= c <= len(records)]})
    for lo, hi in zip(edges[:-1], edges[1:]):
        native.consume(raw, lo, hi)
        twin.consume(records, lo, hi)
        if hi in takes or hi == len(records):
            mine, theirs = native.take(), twin.take()
            assert mine == (None if theirs is None else pack_delta(*theirs))
            deltas.append(mine)
        assert native.records_held == twin.records_held
        assert native.connections_held == len(twin.connections)
        held = native.holdings()     # chains given back whole keep the pool's count
        assert held["record_chunks"] == held["record_chunks_chained"]
    return deltas


def _endpoint(hosts: int, ports: tuple):
    return st.tuples(st.integers(0, hosts - 1), st.sampled_from(ports))


@st.composite
def tcp_packets(draw, max_packets: int = 150):
    """Packets among a few endpoints (IPv4 and IPv6, self-connections too), with
    sequence and ACK numbers around one base (near 2^32 or 2^31 for
    wraparound), overlapping, repeated, jumping and exactly 2^31 apart; every
    flag combination the rules tell apart; zero windows; time standing still,
    jumping, going back; some packets the analysis must skip."""
    hosts = draw(st.integers(1, 2))
    ports = tuple(draw(st.lists(st.sampled_from([0, 80, 443, 51000, 65535]), min_size=1,
                                max_size=2, unique=True)))
    base = draw(st.sampled_from([0, 5000, 2**31 - 400, 2**32 - 400, 2**32 - 1]))
    number = st.builds(lambda k, e: (base + 50 * k + e) % 2**32, st.integers(-2, 12),
                       st.sampled_from([0] * 8 + [1, -1, 2**31, 25]))
    packet = st.tuples(
        _endpoint(hosts, ports), _endpoint(hosts, ports),
        st.sampled_from([ACK] * 6 + [ACK | PSH] * 3 + [SYN, SYN | ACK, FIN | ACK, FIN, RST,
                                                      RST | ACK, 0, SYN | FIN, SYN | FIN | ACK]),
        number, number,
        st.sampled_from([0, 0, 0, 1, 50, 50, 100, 150, 2**31 + 7, 2**32 - 1]),
        st.sampled_from([0, 1000, 65535, 65535, 65535]),
        st.sampled_from([TCPI_HEADER] * 20 + [TCPI_HEADER | TCPI_IPV6, 0,
                                              TCPI_HEADER | TCPI_FRAGMENT,
                                              TCPI_HEADER | TCPI_NEGATIVE_PAYLOAD,
                                              TCPI_HEADER | TCPI_NO_TIMESTAMP]),
        st.sampled_from([0, 1, 1000, 10**6, 10**6, 3 * 10**9, -10**6]))
    rows = []
    t = stages.T0
    for (sh, sp), (dh, dp), flags, seq, ack, payload, win, info, dt in draw(
            st.lists(packet, min_size=draw(st.integers(1, 60)), max_size=max_packets)):
        t = max(0, t + dt)
        version = 6 if info & TCPI_IPV6 else 4
        rows.append((t, stages.addr(version, sh), sp, stages.addr(version, dh), dp, seq, ack,
                     payload, win, flags, info))
    return stages.tcp_records(rows)


@st.composite
def storms(draw):
    """SYN and RST storms over many connections: the connection bound at work."""
    n = draw(st.integers(1, 300))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ports = rng.integers(1, draw(st.integers(2, 80)), n).tolist()
    kinds = rng.choice([SYN, SYN, RST, ACK, SYN | ACK, ACK | PSH], n).tolist()
    seqs = rng.integers(0, 3, n).tolist()
    rows = [(stages.T0 + 1000 * i, stages.addr(4, 1), port, stages.addr(4, 2), 80,
             (2**32 - 1 + 100 * s) % 2**32, 7, 10 if flags & PSH else 0, 1000, flags, TCPI_HEADER)
            for i, (port, flags, s) in enumerate(zip(ports, kinds, seqs))]
    return stages.tcp_records(rows)


small_bounds = st.builds(Bounds, connections=st.integers(1, 6),
                         records_per_half=st.integers(0, 6), records=st.integers(0, 16),
                         holes_per_half=st.integers(0, 4))
any_bounds = st.one_of(st.just(BOUNDS), small_bounds)


def _pieces(draw, n: int):
    cuts = draw(st.lists(st.integers(0, n), max_size=8))
    takes = set(draw(st.lists(st.sampled_from(cuts), max_size=4))) if cuts else set()
    return cuts, takes


@settings(max_examples=300)
@given(data=st.data(), bounds=any_bounds)
def test_random_packets_give_the_twins_deltas(data, bounds):
    records = data.draw(tcp_packets())
    run_both(records, bounds, *_pieces(data.draw, len(records)))


@settings(max_examples=150)
@given(data=st.data(), bounds=any_bounds)
def test_mutated_conversations_give_the_twins_deltas(data, bounds):
    """stages' conversations (handshakes, data, losses, retransmissions, keep-alives,
    RSTs, ISNs near 2^32) with records dropped, repeated and moved."""
    records = data.draw(mangled_conversations())
    run_both(records, bounds, *_pieces(data.draw, len(records)))


@settings(max_examples=100)
@given(data=st.data(), bounds=small_bounds)
def test_syn_and_rst_storms_give_the_twins_deltas(data, bounds):
    records = data.draw(storms())
    run_both(records, bounds, *_pieces(data.draw, len(records)))


@pytest.mark.parametrize("bounds", [BOUNDS, Bounds(connections=40, records_per_half=4,
                                                   records=60, holes_per_half=2)],
                         ids=["real", "small"])
def test_many_conversations_at_once(bounds):
    """Thousands of interleaved conversations with impairments, in windows."""
    records = stages.synthetic_records(30_000, seed=5, conversations=2_000)
    n = len(records)
    deltas = run_both(records, bounds, list(range(0, n, 997)), set(range(0, n, 4985)))
    assert len(deltas) > 3 and all(d is not None for d in deltas)


def test_the_flagging_and_removal_paths_of_long_halves():
    """Halves with many records: ACKs inside, at and beyond them, reordered old
    ones, retransmissions over several chunks, holes filled across them."""
    rows = []
    t = stages.T0
    client, server = stages.addr(4, 1), stages.addr(4, 2)
    rng = np.random.default_rng(3)
    for k in range(3000):
        t += 1000
        seq = (2**32 - 20_000 + 100 * int(rng.integers(0, 300))) % 2**32
        if rng.random() < 0.7:
            rows.append((t, client, 5000, server, 80, seq, 9, 100, 500, ACK, TCPI_HEADER))
        else:
            ack = (2**32 - 20_000 + 100 * int(rng.integers(0, 300)) + int(rng.integers(0, 2)))
            rows.append((t, server, 80, client, 5000, 9, ack % 2**32, 0, 500, ACK, TCPI_HEADER))
    records = stages.tcp_records(rows)
    for bounds in (BOUNDS, Bounds(records_per_half=37, holes_per_half=5)):
        run_both(records, bounds, list(range(0, 3000, 101)), {1010, 2020})


def test_packed_deltas_read_back():
    records = stages.tcp_conversation_records(200, seed=9)
    twin = QualityCounter()
    twin.consume(records, 0, len(records))
    rows, state = twin.take()
    keys, values, got_state = unpack_delta(pack_delta(rows, state))
    assert got_state == state
    assert {(k >> 1, k & 1): v for k, v in zip(keys.tolist(), values.tolist())} == rows
    assert keys.tolist() == sorted(keys.tolist())
    with pytest.raises(ValueError):
        unpack_delta(pack_delta(rows, state)[:-8])


def test_bounds_out_of_range_are_refused():
    for bad in ({"connections": 0}, {"records_per_half": 65536}, {"holes_per_half": -1}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            NativeQualityCounter(**bad)


def test_a_numpy_array_or_a_buffer_of_whole_records():
    records = stages.tcp_conversation_records(5)
    a, b = NativeQualityCounter(), NativeQualityCounter()
    a.consume(records, 0, len(records))
    b.consume(memoryview(bytearray(records.tobytes())), 0, len(records))
    assert a.take() == b.take()
    with pytest.raises(ValueError, match="not whole"):
        a.consume(bytearray(71), 0, 0)
    with pytest.raises(ValueError, match="outside"):
        a.consume(records, 0, len(records) + 1)


# --- the aggregator's merge ----------------------------------------------------------------

def _plain_merge(into: dict, rows: dict) -> None:
    """Section 6's merge written out plainly (dicts of lists)."""
    for key, row in rows.items():
        mine = into.setdefault(key, [0] * ROW_WIDTH)
        if row[0]:
            if mine[0]:
                mine[2], mine[3] = min(mine[2], row[2]), max(mine[3], row[3])
            else:
                mine[2], mine[3] = row[2], row[3]
        for i, value in enumerate(row):
            if i not in (2, 3):
                mine[i] += value


def _stream(rows: dict) -> list:
    return [["tcp", port, ("in", "out")[side], *rows[(port, side)][:N_COUNTERS],
             rows[(port, side)][N_COUNTERS:]] for port, side in sorted(rows)]


@settings(max_examples=100)
@given(parts=st.lists(st.lists(st.tuples(
    st.integers(0, 5), st.integers(0, 1), st.integers(0, 3), st.integers(0, 10**12),
    st.integers(0, 10**12), st.integers(0, 2**40)), max_size=8), max_size=6),
    windows=st.integers(1, 3))
def test_the_merge_of_windows_and_processes_is_exact(parts, windows):
    """Random deltas merged per window and into the summary give what the plain
    merge gives: sums, and min and max over the parts with samples only."""
    analyser = TcpQuality(CTX)
    total: dict = {}
    state_total = [0] * len(STATE_KEYS)
    for w in range(windows):
        window: dict = {}
        for p, part in enumerate(parts):
            rows = {}
            for port, side, samples, lo, extra, big in part:
                row = [0] * ROW_WIDTH
                row[0], row[1] = samples, samples * (lo + extra)
                if samples:
                    row[2], row[3] = lo, lo + extra
                row[7], row[N_COUNTERS + (big % 32)] = big + 1, samples
                rows[(port * 1000 + w, side)] = row
            state = tuple(range(p, p + len(STATE_KEYS)))
            analyser.merge((rows, state) if rows else None, 0)
            _plain_merge(window, rows)
            if rows:
                state_total = [a + b for a, b in zip(state_total, state)]
        assert analyser.window(0, 1)["tcp_quality"]["rows"] == _stream(window)
        _plain_merge(total, window)
    summary = analyser.summary()["tcp_quality"]
    assert summary["rows"] == _stream(total)
    assert summary["state"] == dict(zip(STATE_KEYS, state_total))


# --- the worst case of the real bounds -------------------------------------------------------

# A process holding one native counter at the real bounds, as a capture process
# does, fed records on stdin: b"R" + uint32 n + n records, b"M" + a name and a
# newline (note what the state holds), b"E" (take the delta, print the figures).
HOLDER = r"""
import json, sys
from pt_engine._quality import QualityCounter
counter = QualityCounter()
buf = memoryview(bytearray(72 << 16))
stdin = sys.stdin.buffer
notes = {}
while (kind := stdin.read(1)) != b"E":
    if kind == b"M":
        notes[stdin.readline().decode().strip()] = counter.holdings()
        continue
    n = int.from_bytes(stdin.read(4), "little")
    got = 0
    while got < 72 * n:
        got += stdin.readinto(buf[got:72 * n])
    counter.consume(buf, 0, n)
delta = counter.take()
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"notes": notes, "delta": delta.hex(), "numpy": "numpy" in sys.modules,
                  "vm_hwm_kib": int(status["VmHWM"].split()[0])}))
"""


def _hostile_mix(send) -> None:
    """Every bound of section 7 at once, as records: `send(records)`, `send(name)`."""
    def segments(host, cport, sport, count, step, both=True):
        # `count` segments of 10 bytes per half, `step` apart (a gap before each
        # after the first when step > 10), each ACKing the peer's first byte only:
        # nothing is ever acknowledged.
        rows, pairs = [], len(host)
        for side in ((0, 1) if both else (0,)):
            seq = (np.tile(np.arange(count) * step, pairs) + (side + 1) * 10**6) % 2**32
            rows.append((np.repeat(host, count), np.repeat(cport, count),
                         np.repeat(sport, count), np.full(pairs * count, side), seq,
                         np.full(pairs * count, (2 - side) * 10**6), 10, ACK | PSH))
        return rows

    clock = [stages.T0]

    def feed(rows):
        for host, cport, sport, side, seq, ack, payload, flags in rows:
            n = len(host)
            out = np.zeros(n, dtype=stages.RECORD_DTYPE)
            client = np.stack([np.full(n, 10), host >> 16 & 255, host >> 8 & 255, host & 255], 1)
            server = np.tile(np.array([10, 200, 0, 1]), (n, 1))
            out["src_addr"][:, 10:12] = out["dst_addr"][:, 10:12] = 0xFF   # ::ffff:a.b.c.d
            out["src_addr"][:, 12:] = np.where(side[:, None] == 0, client, server)
            out["dst_addr"][:, 12:] = np.where(side[:, None] == 0, server, client)
            out["src_port"] = np.where(side == 0, cport, sport)
            out["dst_port"] = np.where(side == 0, sport, cport)
            out["ts_ns"] = clock[0] + 1000 * np.arange(n)
            clock[0] += 1000 * n
            out["tcp_seq"], out["tcp_ack"], out["tcp_payload"] = seq, ack, payload
            out["tcp_flags"], out["tcp_info"], out["tcp_win"], out["proto"] = flags, 1, 1000, 6
            send(out)

    # 1. halves with more than 1,024 outstanding records (in order: no holes)
    feed(segments(np.arange(8) + 70_000, np.arange(8), np.full(8, 9), 1_100, 10, both=False))
    send("long halves")
    # 2. 65,536 connections, one per port pair (p, 65535 - p), both halves sending
    #    100 segments with a gap before each: 13.1M records for the 4,194,304 of the
    #    bound, 99 holes for the 64 of each half, and the rows of all 65,536 ports on
    #    both sides in one window
    for lo in range(0, 65_536, 512):
        p = np.arange(lo, lo + 512)
        feed(segments(p, p, 65_535 - p, 100, 20))
    send("every bound")
    # 3. more connections than the bound: SYNs from 3,000 new clients
    extra = np.arange(3_000)
    feed([(extra + 100_000, extra, np.full(3_000, 22), np.zeros(3_000, np.int64), extra,
           0, 0, SYN)])


def test_a_hostile_mix_at_the_real_bounds_stays_under_256_mib():
    """Every bound of section 7 hit at once, at the contract's values, in a process
    that holds the native counter as a capture process does (no numpy): its
    peak resident memory, the interpreter included, stays under 256 MiB."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def send(item):
        if isinstance(item, str):
            proc.stdin.write(b"M" + item.encode() + b"\n")
            return
        for lo in range(0, len(item), 1 << 16):
            part = item[lo:lo + (1 << 16)]
            proc.stdin.write(b"R" + len(part).to_bytes(4, "little") + part.tobytes())

    try:
        _hostile_mix(send)
        out, err = proc.communicate(b"E", timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, err.decode()
    got = json.loads(out)
    long, peak = got["notes"]["long halves"], got["notes"]["every bound"]
    _, _, state = unpack_delta(bytes.fromhex(got["delta"]))
    state = dict(zip(STATE_KEYS, state))
    keys, _, _ = unpack_delta(bytes.fromhex(got["delta"]))
    for held in got["notes"].values():
        assert held["record_chunks"] == held["record_chunks_chained"]
    assert long["most_records_in_a_half"] == BOUNDS.records_per_half
    assert peak["records"] == BOUNDS.records
    assert peak["most_holes_in_a_half"] == BOUNDS.holes_per_half
    assert peak["holes"] == 2 * BOUNDS.connections * BOUNDS.holes_per_half
    assert peak["connections"] == BOUNDS.connections
    assert len(keys) == 2 * 65_536          # every port, both sides, in the window
    assert state["records_skipped"] == 8 * 76 + 2 * 65_536 * 100 - BOUNDS.records
    assert state["holes_forgotten"] == 2 * 65_536 * (99 - BOUNDS.holes_per_half)
    assert state["connections"] == 8 + 65_536 + 3_000
    assert state["connections_evicted"] == 8 + 3_000
    assert not got["numpy"]
    assert got["vm_hwm_kib"] < 256 * 1024, got["vm_hwm_kib"]


# --- the rows in the stream: written natively, the bytes of msgpack-python ---------------

_WORDS = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2 * 65536 - 1),
                          st.lists(st.one_of(st.sampled_from(_WORDS), st.integers(0, 2**64 - 1)),
                                   min_size=ROW_WIDTH, max_size=ROW_WIDTH)),
                max_size=20, unique_by=lambda r: r[0]))
def test_quality_rows_are_written_as_msgpack_python_writes_their_lists(rows):
    import msgpack
    from pt_engine import _core, _reference, stream
    from pt_engine.analysers.tcp_quality import QualityRows
    rows.sort()
    keys = np.array([k for k, _ in rows], dtype=np.uint32)
    values = np.array([v for _, v in rows], dtype=np.uint64).reshape(-1, ROW_WIDTH)
    lists = [["tcp", k >> 1, ("in", "out")[k & 1], *v[:N_COUNTERS], v[N_COUNTERS:]]
             for k, v in rows]
    want = msgpack.packb(lists, use_bin_type=True)
    assert _core.encode_quality_rows(keys, values) == want
    assert _reference.encode_quality_rows(keys, values) == want
    held = QualityRows(keys, values)
    assert held == lists and len(held) == len(lists)
    record = {"type": "window", "tcp_quality": {"rows": held}}
    assert stream.encoder("msgpack")(record) == msgpack.packb(
        {"type": "window", "tcp_quality": {"rows": lists}}, use_bin_type=True)
    assert json.loads(stream.encoder("json")(record))["tcp_quality"]["rows"] == lists


def test_a_quality_row_key_past_every_port_and_side_is_refused():
    from pt_engine import _core
    with pytest.raises(ValueError, match="past the 131072 keys"):
        _core.encode_quality_rows(np.array([131072], np.uint32), np.zeros((1, ROW_WIDTH), np.uint64))
    with pytest.raises(ValueError, match="values"):
        _core.encode_quality_rows(np.array([1], np.uint32), np.zeros((1, 4), np.uint64))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.tuples(st.integers(0, 40),
                                   st.lists(st.one_of(st.sampled_from([0, 1, 2**63, 2**64 - 1]),
                                                      st.integers(0, 10**12)),
                                            min_size=ROW_WIDTH, max_size=ROW_WIDTH)),
                         max_size=12, unique_by=lambda r: r[0]), max_size=4))
def test_the_totals_merge_rows_as_the_windows_do(parts):
    """add_quality_rows (native and twin) into a table of every key gives what
    merge_parts gives for the same row sets: exact sums (modulo 2^64, as numpy),
    rtt_min_ns the least over rows with samples, rtt_max_ns the greatest."""
    from pt_engine import _core, _reference
    from pt_engine.analysers.tcp_quality import merge_parts
    arrays = []
    for rows in parts:
        rows = sorted(rows)
        values = np.array([v for _, v in rows], dtype=np.uint64).reshape(-1, ROW_WIDTH)
        values[:, 0] %= np.uint64(2**40)      # sample counts never wrap to 0 in a sum
        values[values[:, 0] == 0, 2:4] = 0      # a row without samples has no min or max
        arrays.append((np.array([k for k, _ in rows], dtype=np.uint32), values))
    want_keys, want = merge_parts(arrays)
    for module in (_core, _reference):
        table = np.zeros((64, ROW_WIDTH), dtype=np.uint64)
        for keys, values in arrays:
            module.add_quality_rows(table, keys, values)
        assert np.array_equal(table[want_keys.astype(np.int64)], want)
        others = np.setdiff1d(np.arange(64), want_keys)
        assert not table[others].any()
    with pytest.raises(ValueError, match="past the table"):
        _core.add_quality_rows(np.zeros((4, ROW_WIDTH), np.uint64), np.array([4], np.uint32),
                               np.zeros((1, ROW_WIDTH), np.uint64))
