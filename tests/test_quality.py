"""TCP quality (docs/quality-rules.md): the corpus on both backends, windows,
and hand-built conversations for the rules and the bounds."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stages
from pt_engine.analysers import AnalyserContext
from pt_engine.analysers.tcp_quality import (
    BOUNDS,
    COLUMNS,
    N_COUNTERS,
    STATE_KEYS,
    Bounds,
    QualityCounter,
    TcpQuality,
    rtt_bucket,
)
from pt_engine.records import (
    TCPI_FRAGMENT,
    TCPI_HEADER,
    TCPI_IPV6,
    TCPI_NEGATIVE_PAYLOAD,
    TCPI_NO_TIMESTAMP,
)
from frames import IPPROTO_TCP, _pcapng_block, eth, ipv4, pcap_file, pcapng_file, tcp
from streams import HERE, read_stream

QUALITY_CORPUS = HERE / "quality-corpus"
CAPTURES = sorted(p for p in QUALITY_CORPUS.glob("*.pcap*") if not p.name.endswith(".json"))


# --- the corpus ------------------------------------------------------------------------------

def test_quality_fixtures_are_there():
    assert len(CAPTURES) >= 25, f"expected the quality corpus in {QUALITY_CORPUS}"
    for capture in CAPTURES:
        assert (capture.parent / (capture.name + ".quality.json")).exists(), capture


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_capture_matches_its_quality(capture, backend_env, tmp_path, capsys):
    expected = json.loads((capture.parent / (capture.name + ".quality.json")).read_text())
    status, records, _ = read_stream(tmp_path, str(capture), "--analyser", "tcp_quality",
                                     fmt="json")
    err = capsys.readouterr().err
    if not expected["supported"]:
        assert status == 1
        assert err.startswith("pt-engine: error: ") and err.count("\n") == 1, err
        return
    assert status == 0, err
    summary = records[-1]
    assert summary["type"] == "summary"
    assert summary["tcp_quality"]["state"] == expected["tcp_quality"]["state"]
    assert summary["tcp_quality"]["rows"] == expected["tcp_quality"]["rows"]
    state = summary["tcp_quality"]["state"]
    ported_tcp = sum(row[2] for row in summary["ports"] if row[0] == "tcp")   # in_packets
    assert state["analysed"] + state["not_analysed"] + state["rst"] == ported_tcp


def _merge_stream_rows(windows: list[dict]) -> list[list]:
    """The windows' rows added up as section 6 says (written out again here)."""
    total: dict = {}
    for w in windows:
        for _, port, side, *values, hist in w["tcp_quality"]["rows"]:
            if (port, side) not in total:
                total[(port, side)] = [list(values), list(hist)]
                continue
            mine, mine_hist = total[(port, side)]
            if values[0]:
                if mine[0]:
                    mine[2], mine[3] = min(mine[2], values[2]), max(mine[3], values[3])
                else:
                    mine[2], mine[3] = values[2], values[3]
            for i, v in enumerate(values):
                if i not in (2, 3):
                    mine[i] += v
            for i, v in enumerate(hist):
                mine_hist[i] += v
    side_rank = {"in": 0, "out": 1}
    return [["tcp", port, side, *values, hist]
            for (port, side), (values, hist) in sorted(total.items(),
                                                       key=lambda kv: (kv[0][0],
                                                                       side_rank[kv[0][1]]))]


@pytest.mark.parametrize("name", ["zeek_ssh.pcap", "zeek_rdp-proprietary-encryption.pcap"])
def test_windows_add_up_to_the_summary(name, tmp_path):
    status, records, _ = read_stream(tmp_path, str(QUALITY_CORPUS / name), "--analyser",
                                     "tcp_quality", "--interval", "0.5", fmt="json")
    assert status == 0
    windows = [r for r in records if r["type"] == "window"]
    assert len(windows) > 3
    assert all(set(w["tcp_quality"]) == {"rows"} for w in windows)
    summary = records[-1]["tcp_quality"]
    assert summary["rows"] and _merge_stream_rows(windows) == summary["rows"]


def test_a_packet_without_a_timestamp_is_not_analysed(backend_env, tmp_path):
    """A pcapng Simple Packet Block has no time: counted, not analysed."""
    syn = eth() + ipv4("10.0.0.1", "10.0.0.2", IPPROTO_TCP, tcp(51000, 80, flags=0x02, seq=9))
    synack = eth() + ipv4("10.0.0.2", "10.0.0.1", IPPROTO_TCP,
                          tcp(80, 51000, flags=0x12, seq=70, ack=10))
    simple = _pcapng_block("<", 3, struct.pack("<I", len(synack)) + synack)
    path = tmp_path / "spb.pcapng"
    path.write_bytes(pcapng_file([(1, 65535)], [(0, 10**18, syn, None)]) + simple)
    status, records, _ = read_stream(tmp_path, str(path), "--analyser", "tcp_quality",
                                     fmt="json")
    assert status == 0
    assert records[-1]["totals"]["packets"] == 2
    state = records[-1]["tcp_quality"]["state"]
    assert (state["analysed"], state["not_analysed"]) == (1, 1)
    assert records[-1]["tcp_quality"]["rows"] == []      # the SYN-ACK never came


# --- hand-built conversations ----------------------------------------------------------------

CLIENT = bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 1])
SERVER = bytes(10) + b"\xff\xff" + bytes([10, 0, 0, 2])
FLAGS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10}
MS = 1_000_000


class Wire:
    """A client (port 51000) and a server (port 80) seen at the capture point,
    fed packet by packet to one QualityCounter."""

    def __init__(self, bounds: Bounds = BOUNDS, cport: int = 51000, sport: int = 80):
        self.counter = QualityCounter(None, bounds)
        self.ends = {"c": (CLIENT, cport), "s": (SERVER, sport)}
        self.ports = {"c": cport, "s": sport}
        self.analyser = TcpQuality(AnalyserContext(("all",), 10**9, None, False))

    def send(self, frm: str, t_ms: float, seq: int, ack: int = 0, payload: int = 0,
             flags: str = "A", win: int = 65535, info: int = TCPI_HEADER,
             to: tuple | None = None) -> None:
        src = self.ends[frm]
        dst = to or self.ends["s" if frm == "c" else "c"]
        bits = sum(FLAGS[f] for f in flags)
        self.counter.packet(int(t_ms * MS), src[0], src[1], dst[0], dst[1], seq % 2**32,
                            ack % 2**32, payload, win, bits, info)

    def summary(self) -> dict:
        self.analyser.merge(self.counter.take(), 0)
        self.analyser.window(0, 1)
        return self.analyser.summary()["tcp_quality"]

    def row(self, port: int, side: str) -> dict:
        for _, p, s, *values, hist in self.summary()["rows"]:
            if (p, s) == (port, side):
                return {**dict(zip(COLUMNS, values)), "hist": hist}
        return {**dict.fromkeys(COLUMNS, 0), "hist": [0] * 32}

    def data_of(self, frm: str) -> dict:
        """The row of the data `frm` sends, seen from its own port ("out")."""
        return self.row(self.ports[frm], "out")

    def state(self) -> dict:
        return self.summary()["state"]


def handshake(w: Wire, c_isn: int = 1000, s_isn: int = 5000, t0: float = 0.0) -> None:
    w.send("c", t0, c_isn, flags="S")
    w.send("s", t0 + 10, s_isn, c_isn + 1, flags="SA")
    w.send("c", t0 + 20, c_isn + 1, s_isn + 1)


def test_rtt_samples_are_attributed_to_the_data_direction():
    w = Wire()
    handshake(w)
    w.send("c", 30, 1001, 5001, payload=100, flags="PA")
    w.send("s", 45, 5001, 1101, payload=500, flags="PA")     # ACKs the request after 15 ms
    w.send("c", 52, 1101, 5501)                               # ACKs the answer after 7 ms
    client = w.row(80, "in")
    assert client == w.row(51000, "out")
    # the SYN (10 ms) and the request (15 ms): the client's data, in (80, in)
    assert (client["rtt_samples"], client["rtt_sum_ns"]) == (2, 25 * MS)
    assert (client["rtt_min_ns"], client["rtt_max_ns"]) == (10 * MS, 15 * MS)
    assert (client["jitter_sum_ns"], client["jitter_pairs"]) == (5 * MS, 1)
    assert (client["data_segments"], client["data_bytes"]) == (1, 100)
    assert rtt_bucket(10 * MS) == rtt_bucket(15 * MS) == 14      # [8.192, 16.384) ms
    assert client["hist"][14] == 2 and sum(client["hist"]) == 2
    server = w.row(80, "out")
    # the SYN-ACK (10 ms) and the answer (7 ms)
    assert (server["rtt_samples"], server["rtt_sum_ns"]) == (2, 17 * MS)
    assert (server["jitter_sum_ns"], server["jitter_pairs"]) == (3 * MS, 1)
    assert server == w.row(51000, "in")
    assert w.state() == {**dict.fromkeys(STATE_KEYS, 0), "analysed": 6, "connections": 1}


def test_histogram_buckets():
    assert [rtt_bucket(ns) for ns in (0, 999, 1000, 1999, 2000, 2**30 * 1000 - 1,
                                      2**30 * 1000, 10**15)] == [0, 0, 1, 1, 2, 30, 31, 31]


def test_sequence_numbers_wrap_around_at_2_to_the_32():
    w = Wire()
    isn = 2**32 - 50
    handshake(w, c_isn=isn)
    w.send("c", 30, isn + 1, 5001, payload=100)      # crosses 0
    w.send("s", 40, 5001, isn + 101)
    w.send("c", 50, isn + 101, 5001, payload=100)
    w.send("s", 60, 5001, isn + 201)
    row = w.data_of("c")
    assert (row["rtt_samples"], row["gaps"], row["retrans_segments"]) == (3, 0, 0)
    assert (row["data_segments"], row["data_bytes"]) == (2, 200)


def test_a_jump_beyond_2_to_the_31_is_not_a_gap():
    w = Wire()
    handshake(w)
    w.send("c", 30, 1001 + 2**31, 5001)              # neither above nor below hi
    w.send("c", 31, 1001 - 2**20, 5001)              # a pure ACK below hi: nothing
    assert w.data_of("c")["gaps"] == 0


def test_keep_alives_are_neither_data_nor_retransmissions():
    w = Wire()
    handshake(w)
    w.send("c", 30, 1001, 5001, payload=100)
    w.send("c", 40, 1100, 5001, payload=1)           # 1-byte keep-alive at hi - 1: flags
    w.send("c", 41, 1100, 5001, payload=0)           # 0-byte keep-alive
    w.send("s", 50, 5001, 1101)                      # no sample: the segment was flagged
    row = w.data_of("c")
    assert (row["data_segments"], row["data_bytes"]) == (1, 100)
    assert (row["retrans_segments"], row["gaps"]) == (0, 0)
    assert row["rtt_samples"] == 1                   # the SYN only


def test_a_syn_retransmission_is_a_retransmission_and_not_timed():
    w = Wire()
    w.send("c", 0, 1000, flags="S")
    w.send("c", 1000, 1000, flags="S")
    w.send("s", 1010, 5000, 1001, flags="SA")
    w.send("c", 1020, 1001, 5001)
    row = w.data_of("c")
    assert (row["retrans_segments"], row["retrans_bytes"], row["rtt_samples"]) == (1, 0, 0)
    assert w.data_of("s")["rtt_samples"] == 1
    assert w.state()["connections"] == 1


def test_a_new_syn_on_the_same_ports_starts_a_new_connection():
    w = Wire()
    handshake(w)
    w.send("c", 30, 1001, 5001, payload=100)
    w.send("c", 40, 90_000, flags="S")               # another SYN: state discarded
    w.send("s", 50, 5001, 1101)                      # ACKs data the new state never saw
    w.send("s", 51, 7000, 90_001, flags="SA")
    w.send("c", 60, 90_001, 7001)
    state = w.state()
    assert state["connections"] == 2
    row = w.data_of("c")
    assert row["rtt_samples"] == 2 and row["retrans_segments"] == 0   # two SYNs, 10 ms each
    assert row["rtt_sum_ns"] == 10 * MS + 11 * MS


def test_a_new_syn_ack_replaces_only_its_half():
    w = Wire()
    handshake(w)
    w.send("c", 30, 1001, 5001, payload=100)
    w.send("s", 35, 8000, 1001, flags="SA")          # a SYN-ACK of another sequence
    w.send("s", 40, 8001, 1101)                      # the client's half was kept: a sample
    assert w.state()["connections"] == 1
    assert w.data_of("c")["rtt_samples"] == 2
    assert w.data_of("s")["retrans_segments"] == 0


def test_an_rst_ends_the_connection_and_is_not_analysed():
    w = Wire()
    handshake(w)
    w.send("c", 30, 1001, 5001, payload=100)
    w.send("s", 35, 5001, 1001, flags="RA")
    w.send("s", 40, 5001, 1101)                      # a new connection: no record to time
    w.send("c", 41, 9, flags="R")                    # closes that one
    w.send("c", 42, 9, flags="R")                    # nothing left to close
    state = w.state()
    assert (state["rst"], state["rst_closed"], state["connections"]) == (3, 2, 2)
    assert state["analysed"] == 5
    assert w.data_of("c")["rtt_samples"] == 1        # the SYN only


def _with_outstanding_data(w: Wire) -> None:
    handshake(w)
    w.send("s", 30, 5001, 1001, payload=100)
    w.send("c", 31, 1001, 5101)                      # acked: last_win of the client 65535
    w.send("s", 32, 5101, 1001, payload=100)         # outstanding: hi 5201 > acked 5101


@pytest.mark.parametrize("change, counted", [
    ({}, 1),
    ({"win": 0}, 0),                # a zero window is flow control
    ({"win": 1000}, 0),             # the window changed
    ({"payload": 10}, 0),           # carries data
    ({"seq": 1000}, 0),             # S != hi: an old, reordered ACK (or a keep-alive)
    ({"flags": "FA"}, 0),           # L = 1
])
def test_duplicate_ack_conditions(change, counted):
    w = Wire()
    _with_outstanding_data(w)
    args = {"seq": 1001, "payload": 0, "win": 65535, "flags": "A", **change}
    w.send("c", 40, args["seq"], 5101, payload=args["payload"], flags=args["flags"],
           win=args["win"])
    assert w.data_of("s")["dup_acks"] == counted
    assert w.row(51000, "in")["dup_acks"] == counted


def test_no_duplicate_ack_without_outstanding_data():
    w = Wire()
    handshake(w)
    w.send("s", 30, 5001, 1001, payload=100)
    w.send("c", 31, 1001, 5101)
    w.send("c", 32, 1001, 5101)                      # same ACK, nothing outstanding
    assert w.data_of("s")["dup_acks"] == 0


def test_a_filled_hole_is_out_of_order_and_flags_what_follows():
    w = Wire()
    handshake(w)
    w.send("c", 30, 1001, 5001, payload=100)
    w.send("c", 31, 1201, 5001, payload=100)         # gap: [1101, 1201) never seen
    w.send("c", 32, 1101, 5001, payload=100)         # fills it
    w.send("s", 40, 5001, 1101)                      # a sample for the first segment
    w.send("s", 41, 5001, 1301)                      # none: the segment after the hole is flagged
    row = w.data_of("c")
    assert (row["gaps"], row["gap_bytes"], row["ooo_segments"]) == (1, 100, 1)
    assert (row["retrans_segments"], row["data_segments"], row["data_bytes"]) == (0, 3, 300)
    assert row["rtt_samples"] == 2                   # SYN and the first segment


def test_an_unfilled_hole_does_not_stop_samples():
    w = Wire()
    handshake(w)
    w.send("c", 30, 1001, 5001, payload=100)
    w.send("c", 31, 1201, 5001, payload=100)         # [1101, 1201) lost before the capture
    w.send("s", 40, 5001, 1301)
    row = w.data_of("c")
    assert (row["gaps"], row["ooo_segments"], row["rtt_samples"]) == (1, 0, 2)


def test_a_pure_ack_beyond_hi_is_a_gap():
    w = Wire()
    handshake(w)
    w.send("c", 30, 1051, 5001)
    row = w.data_of("c")
    assert (row["gaps"], row["gap_bytes"], row["data_segments"]) == (1, 50, 0)


@pytest.mark.parametrize("seq, payload, resent, flagged", [
    (1001, 100, 100, True),         # the first segment again
    (1051, 100, 100, True),         # repacketized across both: flags both
    (1151, 100, 50, True),          # half old, half new: 50 bytes re-sent, [1201, 1251) new
])
def test_retransmissions_and_karns_rule(seq, payload, resent, flagged):
    w = Wire()
    handshake(w)
    w.send("c", 30, 1001, 5001, payload=100)
    w.send("c", 31, 1101, 5001, payload=100)
    w.send("c", 40, seq, 5001, payload=payload)
    w.send("s", 50, 5001, 1201)                      # covers a flagged segment: no sample
    row = w.data_of("c")
    assert (row["retrans_segments"], row["retrans_bytes"]) == (1, resent)
    assert row["data_segments"] == 3 and row["data_bytes"] == 300
    assert row["rtt_samples"] == 1                   # the SYN only


def test_an_ack_inside_a_segment_or_of_several_segments():
    w = Wire()
    handshake(w)
    w.send("c", 30, 1001, 5001, payload=100)
    w.send("c", 31, 1101, 5001, payload=100)
    w.send("s", 40, 5001, 1050)                      # inside the first: no sample
    w.send("s", 45, 5001, 1201)                      # ends the second: 14 ms sample
    row = w.data_of("c")
    assert row["rtt_samples"] == 2 and row["rtt_sum_ns"] == 10 * MS + 14 * MS


def test_time_going_backwards_gives_no_sample():
    w = Wire()
    handshake(w)
    w.send("c", 30, 1001, 5001, payload=100)
    w.send("s", 25, 5001, 1101)
    assert w.data_of("c")["rtt_samples"] == 1


def test_a_syn_ack_number_without_ack_is_ignored():
    w = Wire()
    w.send("s", 0, 5000, 77, flags="S")              # a SYN with a junk ACK field
    w.send("c", 5, 1000, 5001, flags="SA")
    assert w.data_of("s")["rtt_samples"] == 1 and w.data_of("c")["rtt_samples"] == 0


def test_equal_ports_fill_both_sides_of_one_row():
    w = Wire(cport=80, sport=80)
    handshake(w)
    assert w.row(80, "in")["rtt_samples"] == 2 and w.row(80, "out")["rtt_samples"] == 2


@pytest.mark.parametrize("info", [0, TCPI_HEADER | TCPI_FRAGMENT,
                                  TCPI_HEADER | TCPI_NEGATIVE_PAYLOAD,
                                  TCPI_HEADER | TCPI_NO_TIMESTAMP])
def test_packets_that_are_not_analysed(info):
    w = Wire()
    w.send("c", 0, 1000, flags="S", info=info)
    w.send("c", 0, 1000, flags="R", info=info)
    state = w.state()
    assert (state["not_analysed"], state["analysed"], state["rst"]) == (2, 0, 0)
    assert w.summary()["rows"] == []


def test_ipv4_and_ipv6_with_the_same_address_bytes_are_two_connections():
    w = Wire()
    w.send("c", 0, 1000, flags="S")
    w.send("c", 0, 1000, flags="S", info=TCPI_HEADER | TCPI_IPV6)
    assert w.state()["connections"] == 2


def test_jitter_is_the_sum_of_rtt_differences_of_one_half():
    w = Wire()
    handshake(w)                                     # the SYN: 10 ms
    seq = 1001
    for t, rtt in ((30, 4), (50, 9), (70, 1)):
        w.send("c", t, seq, 5001, payload=10)
        seq += 10
        w.send("s", t + rtt, 5001, seq)
    row = w.data_of("c")
    assert row["rtt_samples"] == 4 and row["jitter_pairs"] == 3
    assert row["jitter_sum_ns"] == (6 + 5 + 8) * MS


# --- the bounds ------------------------------------------------------------------------------

def test_the_bounds_are_the_contracts():
    assert BOUNDS == Bounds(connections=65_536, records_per_half=1_024, records=4_194_304,
                            holes_per_half=64)


def test_connections_bound_evicts_the_least_recently_used():
    w = Wire(Bounds(connections=2))
    for k, port in enumerate((1001, 1002)):
        w.send("c", k, 100, flags="S", to=(SERVER, port))
    w.send("c", 5, 100, flags="S", to=(SERVER, 1001))      # refreshes 1001 (a SYN retransmission)
    w.send("c", 6, 100, flags="R", to=(SERVER, 1002))      # an RST does not refresh: 1002 closed
    w.send("c", 7, 100, flags="S", to=(SERVER, 1003))
    w.send("c", 8, 100, flags="S", to=(SERVER, 1004))      # evicts 1001, the oldest
    assert sorted(key[2][1] for key in w.counter.connections) == [1003, 1004]
    state = w.state()
    assert (state["connections"], state["connections_evicted"], state["rst_closed"]) == (4, 1, 1)


def test_records_bounds_skip_and_flag_the_next_record():
    w = Wire(Bounds(records_per_half=2))
    handshake(w)                                     # the SYN's record is acknowledged
    for k in range(3):                               # the third is not recorded
        w.send("c", 30 + k, 1001 + 100 * k, 5001, payload=100)
    w.send("s", 40, 5001, 1201)                      # frees both: a sample (9 ms after 31)
    w.send("c", 41, 1301, 5001, payload=100)         # recorded, flagged
    w.send("s", 50, 5001, 1401)                      # no sample
    state = w.state()
    assert state["records_skipped"] == 1
    row = w.data_of("c")
    assert row["rtt_samples"] == 2 and row["rtt_sum_ns"] == 10 * MS + 9 * MS


def test_the_total_records_bound_spans_every_half():
    w = Wire(Bounds(records=3))
    for port in (1001, 1002, 1003, 1004):
        w.send("c", 0, 100, flags="S", to=(SERVER, port))
    assert w.state()["records_skipped"] == 1
    assert w.counter.records_held == 3


def test_holes_bound_forgets_the_lowest():
    w = Wire(Bounds(holes_per_half=2))
    handshake(w)
    for k in range(4):                               # holes [1001+200k+100, 1001+200k+200)
        w.send("c", 30 + k, 1001 + 200 * k, 5001, payload=100)
    w.send("c", 40, 1101, 5001, payload=100)         # the lowest hole is forgotten: a retransmission
    w.send("c", 41, 1501, 5001, payload=100)         # a remembered hole: out of order
    row = w.data_of("c")
    assert w.state()["holes_forgotten"] == 1
    assert (row["gaps"], row["retrans_segments"], row["ooo_segments"]) == (3, 1, 1)


def test_a_split_hole_counts_against_the_bound():
    w = Wire(Bounds(holes_per_half=1))
    handshake(w)
    w.send("c", 30, 1301, 5001, payload=100)         # hole [1001, 1301)
    w.send("c", 31, 1101, 5001, payload=100)         # splits it in two: the lower is forgotten
    w.send("c", 32, 1001, 5001, payload=100)         # treated as seen: a retransmission
    w.send("c", 33, 1201, 5001, payload=100)         # the upper one: out of order
    row = w.data_of("c")
    assert w.state()["holes_forgotten"] == 1
    assert (row["ooo_segments"], row["retrans_segments"]) == (2, 1)


def test_a_hostile_mix_hits_every_bound_and_stays_bounded():
    """SYN floods, data never acknowledged and sequence jumps, on small bounds:
    every bound acts, and the state never grows past them."""
    bounds = Bounds(connections=50, records_per_half=8, records=200, holes_per_half=4)
    counter = QualityCounter(None, bounds)
    rng = np.random.default_rng(11)
    for i in range(20_000):
        port = int(rng.integers(1, 56))          # a few more connections than the bound
        seq = int(rng.integers(0, 2**32))
        kind = rng.random()
        flags = 0x02 if kind < 0.03 else (0x04 if kind < 0.05 else 0x10)
        payload = int(rng.integers(0, 1400)) if flags == 0x10 else 0
        counter.packet(i * 1000, CLIENT, port, SERVER, 80, seq, int(rng.integers(0, 2**32)),
                       payload, 1000, flags, TCPI_HEADER)
        assert len(counter.connections) <= bounds.connections
        assert counter.records_held <= bounds.records
    halves = [h for c in counter.connections.values() for h in c.halves]
    assert all(len(h.segments) <= bounds.records_per_half for h in halves)
    assert all(len(h.holes) <= bounds.holes_per_half for h in halves)
    assert counter.records_held == sum(len(h.segments) for h in halves)
    _, state = counter.take()
    named = dict(zip(STATE_KEYS, state))
    for key in ("connections_evicted", "records_skipped", "holes_forgotten", "rst_closed"):
        assert named[key] > 0, key


# --- the synthetic conversations of the contract test ---------------------------------------

def test_synthetic_conversations_exercise_every_counter():
    """tests/stages.py's TCP conversations (used by the merge contract test)
    reach every counter and state counter the bounds leave alone."""
    records = stages.tcp_conversation_records(300)
    counter = QualityCounter()
    counter.consume(records, 0, len(records))
    rows, state = counter.take()
    totals = [sum(row[i] for row in rows.values()) for i in range(N_COUNTERS)]
    for name, value in zip(COLUMNS, totals):
        assert value > 0, name
    named = dict(zip(STATE_KEYS, state))
    for key in ("analysed", "not_analysed", "rst", "rst_closed", "connections"):
        assert named[key] > 0, key


# --- properties of any packet sequence -------------------------------------------------------

@st.composite
def mangled_conversations(draw):
    """Synthetic conversations with records dropped, repeated and moved."""
    records = stages.tcp_conversation_records(draw(st.integers(1, 6)),
                                              seed=draw(st.integers(0, 10**6)))
    order = list(range(len(records)))
    for _ in range(draw(st.integers(0, 12))):
        if not order:
            break
        at = draw(st.integers(0, len(order) - 1))
        op = draw(st.sampled_from(["drop", "repeat", "move"]))
        if op == "drop":
            del order[at]
        elif op == "repeat":
            order.insert(draw(st.integers(at, len(order))), order[at])
        else:
            order.insert(draw(st.integers(0, len(order))), order.pop(at))
    return records[np.array(order, dtype=np.int64)] if order else records[:0]


@settings(max_examples=60)
@given(records=mangled_conversations())
def test_any_sequence_keeps_the_books_balanced(records):
    counter = QualityCounter()
    counter.consume(records, 0, len(records))
    delta = counter.take()
    if delta is None:
        assert len(records) == 0
        return
    rows, state = delta
    named = dict(zip(STATE_KEYS, state))
    assert named["analysed"] + named["not_analysed"] + named["rst"] == len(records)
    assert named["rst_closed"] <= named["rst"]
    # every event is in one "in" row and one "out" row
    totals = [[sum(row[i] for (_, s), row in rows.items() if s == side)
               for i in range(N_COUNTERS)] for side in (0, 1)]
    for i, name in enumerate(COLUMNS):
        if name not in ("rtt_min_ns", "rtt_max_ns"):
            assert totals[0][i] == totals[1][i], name
    for row in rows.values():
        assert min(row) >= 0
        assert sum(row[N_COUNTERS:]) == row[0]                  # the histogram holds every sample
        assert row[5] <= row[0]                                 # pairs <= samples
        if row[0]:
            assert row[2] <= row[3] and row[2] * row[0] <= row[1] <= row[3] * row[0]
        else:
            assert row[1] == row[2] == row[3] == row[4] == 0
    assert counter.records_held == sum(len(h.segments) for c in counter.connections.values()
                                       for h in c.halves)


# --- windows on a crafted capture ------------------------------------------------------------

def test_events_belong_to_the_window_of_the_packet_that_caused_them(backend_env, tmp_path):
    """Samples, jitter and duplicate ACKs in the window of the ACK; data,
    retransmissions and gaps in the window of the segment (1 s windows)."""
    def frame(frm, seq, ack, flags, payload=0):
        ends = (("10.0.0.1", 51000), ("10.0.0.2", 80))
        (src, sport), (dst, dport) = ends if frm == "c" else ends[::-1]
        return eth() + ipv4(src, dst, IPPROTO_TCP,
                            tcp(sport, dport, bytes(payload), flags=flags, seq=seq, ack=ack))
    s = 10**9
    t0 = 1_700_000_000 * s
    packets = [
        (t0 + s // 10, frame("c", 1000, 0, 0x02)),                 # SYN           window 0
        (t0 + 9 * s // 10, frame("s", 5000, 1001, 0x12)),          # SYN-ACK: 0.8 s sample, w0
        (t0 + 12 * s // 10, frame("c", 1001, 5001, 0x10)),         # ACK: 0.3 s sample, w1
        (t0 + 13 * s // 10, frame("c", 1001, 5001, 0x18, 100)),    # data           w1
        (t0 + 21 * s // 10, frame("c", 1201, 5001, 0x18, 100)),    # gap of 100     w2
        (t0 + 22 * s // 10, frame("c", 1001, 5001, 0x18, 100)),    # retransmission w2
        (t0 + 35 * s // 10, frame("s", 5001, 1101, 0x10)),         # ACK: flagged, no sample, w3
        (t0 + 36 * s // 10, frame("s", 5001, 1101, 0x10)),         # duplicate ACK  w3
    ]
    path = tmp_path / "windows.pcap"
    path.write_bytes(pcap_file([(t, f, None) for t, f in packets], 1, nano=True))
    status, records, _ = read_stream(tmp_path, str(path), "--analyser", "tcp_quality",
                                     "--interval", "1", fmt="json")
    assert status == 0
    windows = {(w["start_ns"] - t0) // s: {(r[1], r[2]): dict(zip(COLUMNS, r[3:3 + N_COUNTERS]))
                                           for r in w["tcp_quality"]["rows"]}
               for w in records if w["type"] == "window"}
    assert sorted(windows) == [0, 1, 2, 3]
    assert windows[0][(80, "in")]["rtt_samples"] == 1
    assert windows[0][(80, "in")]["rtt_sum_ns"] == 8 * s // 10
    assert set(windows[0]) == {(80, "in"), (51000, "out")}
    assert windows[1][(80, "out")]["rtt_sum_ns"] == 3 * s // 10
    assert windows[1][(80, "in")]["data_bytes"] == 100
    assert windows[1][(80, "in")]["rtt_samples"] == 0
    assert (windows[2][(80, "in")]["gaps"], windows[2][(80, "in")]["retrans_segments"]) == (1, 1)
    assert windows[3][(80, "in")]["dup_acks"] == 1
    assert windows[3][(80, "in")]["rtt_samples"] == 0
    assert _merge_stream_rows([w for w in records if w["type"] == "window"]) == \
        records[-1]["tcp_quality"]["rows"]
