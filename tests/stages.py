"""Stages for the contract tests: sinks that fail or block on purpose, and a
synthetic record stream."""
from __future__ import annotations

import threading

import numpy as np

from pt_engine.errors import SinkError
from pt_engine.records import RECORD_DTYPE
from pt_engine.sinks import ThreadedSink

T0 = 1_700_000_000 * 10**9


class FailingSink(ThreadedSink):
    """Takes `fail_after` records (default 2), then every write fails."""

    on_failure = "continue"
    fail_after = 2

    def __init__(self, dest, ctx):
        self.got: list[bytes] = []
        super().__init__(dest, ctx)

    def write_bytes(self, data: bytes, kind: str) -> None:
        if len(self.got) >= self.fail_after:
            raise SinkError(f"{self.name}: the test's sink failed on purpose")
        self.got.append(data)


class StoppingSink(FailingSink):
    """The same, with the policy that stops the run."""

    on_failure = "stop"


class BlockingSink(ThreadedSink):
    """Every write waits until `release` is set (a reader that stopped reading)."""

    on_failure = "continue"
    release = threading.Event()
    instances: list = []

    def __init__(self, dest, ctx):
        self.got: list[bytes] = []
        BlockingSink.instances.append(self)
        super().__init__(dest, ctx)

    def write_bytes(self, data: bytes, kind: str) -> None:
        self.release.wait()
        self.got.append(data)


def synthetic_records(n: int, seed: int = 1, conversations: int = 0) -> np.ndarray:
    """n records over 3 s: TCP and UDP with random ports, some of other classes,
    a few late (timestamps that step back; none among the first 200); plus, mixed in by time, the
    records of `conversations` TCP conversations (tcp_conversation_records)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(n, dtype=RECORD_DTYPE)
    out["ts_ns"] = np.sort(T0 + rng.integers(0, 3 * 10**9, n)).astype(np.uint64)
    place = out["ts_ns"].copy()     # where each record comes in the stream
    late = rng.random(n) < 0.02
    late[:200] = False      # so that every capture process of a split starts on time
    out["ts_ns"][late] -= np.uint64(10**9 // 3)
    out["wire_len"] = rng.integers(60, 1515, n)
    cls = rng.choice([0, 0, 0, 0, 1, 2, 3], n)
    out["pkt_class"] = cls
    out["proto"] = np.where(cls == 0, rng.choice([6, 17], n), np.where(cls == 1, 1, 0))
    ported = cls == 0
    out["src_port"] = np.where(ported, rng.integers(0, 65536, n), 0)
    out["dst_port"] = np.where(ported, rng.choice([22, 53, 80, 443, 8080], n), 0)
    if conversations:
        # Mixed in by time; the late records stay late.
        tcp = tcp_conversation_records(conversations, seed)
        place = np.concatenate([place, tcp["ts_ns"]])
        out = np.concatenate([out, tcp])[np.argsort(place, kind="stable")]
    return out


_TCP_FIN, _TCP_SYN, _TCP_RST, _TCP_ACK = 0x01, 0x02, 0x04, 0x10


def addr(version: int, host: int) -> bytes:
    if version == 4:
        return bytes(10) + b"\xff\xff" + bytes([10, 0, host >> 8, host & 0xFF])
    return b"\x20\x01\x0d\xb8" + bytes(10) + bytes([host >> 8, host & 0xFF])


def tcp_conversation_records(count: int, seed: int = 1, span_ns: int = 3 * 10**9) -> np.ndarray:
    """Records of `count` TCP conversations over `span_ns` from T0, as the parser
    would write them (TCPI_HEADER and the tcp_* fields set): handshakes,
    data both ways with cumulative ACKs, and impairments drawn at random:
    segments lost before the capture point (gaps, later filled out of
    order), retransmitted, reordered, duplicated; 1-byte keep-alives,
    duplicate ACKs, SYN retransmissions, RSTs, initial sequence numbers
    near 2^32 (wraparound), IPv4 and IPv6, and a few packets the analysis
    must skip (fragments, cut headers). Each conversation's records are
    in increasing time."""
    rng = np.random.default_rng(seed + 1000)
    rows = []   # (ts, src, sport, dst, dport, seq, ack, payload, win, flags, info)
    for k in range(count):
        version = 6 if rng.random() < 0.3 else 4
        client, server = addr(version, 1 + k % 4000), addr(version, 9000 + k % 7)
        cport = int(rng.integers(1024, 65536))
        sport = int(rng.choice([22, 80, 443, 8080]))
        info = 1 | (16 if version == 6 else 0)
        t = T0 + int(rng.integers(0, span_ns * 3 // 4))
        rtt = int(rng.integers(20_000, 80_000_000))
        near_wrap = rng.random() < 0.3
        isn = [int(2**32 - rng.integers(1, 5000)) if near_wrap else int(rng.integers(0, 2**32)),
               int(rng.integers(0, 2**32))]
        nxt = [isn[0], isn[1]]          # next sequence number of client (0) / server (1)
        ends = [(client, cport), (server, sport)]

        def emit(side, seq, ack, payload, flags, win=65535, when=None, bits=None):
            (src, sp), (dst, dp) = ends[side], ends[1 - side]
            rows.append((t if when is None else when, src, sp, dst, dp, seq & 0xFFFFFFFF,
                         ack & 0xFFFFFFFF, payload, win, flags, info if bits is None else bits))

        emit(0, nxt[0], 0, 0, _TCP_SYN)
        if rng.random() < 0.2:              # SYN retransmitted
            t += rtt * 3
            emit(0, nxt[0], 0, 0, _TCP_SYN)
        nxt[0] += 1
        t += rtt // 2
        emit(1, nxt[1], nxt[0], 0, _TCP_SYN | _TCP_ACK)
        nxt[1] += 1
        t += rtt // 2
        emit(0, nxt[0], nxt[1], 0, _TCP_ACK)
        for _ in range(int(rng.integers(2, 30))):
            side = int(rng.random() < 0.4)
            size = int(rng.choice([1, 100, 536, 1460]))
            seq = nxt[side]
            nxt[side] += size
            roll = rng.random()
            t += int(rng.integers(1000, 3_000_000))
            if roll < 0.08:                 # lost before the capture point, resent later
                t += rtt
                emit(side, seq + size, nxt[1 - side], 0, _TCP_ACK)  # a pure ACK beyond hi
                t += 1000
                emit(side, seq, nxt[1 - side], size, _TCP_ACK)
            elif roll < 0.16:               # sent, lost after the capture point, resent
                emit(side, seq, nxt[1 - side], size, _TCP_ACK)
                t += rtt
                emit(side, seq, nxt[1 - side], size, _TCP_ACK)
            elif roll < 0.20:               # a duplicate ACK from the peer first
                emit(side, seq, nxt[1 - side], size, _TCP_ACK)
                emit(1 - side, nxt[1 - side], seq, 0, _TCP_ACK, when=t + 10)
                emit(1 - side, nxt[1 - side], seq, 0, _TCP_ACK, when=t + 20)
            elif roll < 0.23:               # a keep-alive
                emit(side, seq - 1, nxt[1 - side], 1 if rng.random() < 0.5 else 0, _TCP_ACK)
                nxt[side] -= size
                continue
            elif roll < 0.26:               # a fragment or a cut header: not analysed
                # (a first fragment: TCPI_FRAGMENT; a cut header: no TCPI_HEADER)
                emit(side, seq, nxt[1 - side], size, _TCP_ACK,
                     bits=info | 2 if rng.random() < 0.5 else info & ~1)
                nxt[side] -= size
                continue
            else:
                emit(side, seq, nxt[1 - side], size, _TCP_ACK | (0x08 if size > 1 else 0))
            t += rtt
            emit(1 - side, nxt[1 - side], nxt[side], 0, _TCP_ACK,
                 win=0 if rng.random() < 0.05 else 65535)
        end = rng.random()
        if end < 0.15:
            emit(0, nxt[0], nxt[1], 0, _TCP_RST | _TCP_ACK)
        elif end < 0.25:                     # the client starts over on the same ports
            t += rtt
            emit(0, nxt[0] + 100_000, 0, 0, _TCP_SYN)
        else:
            emit(0, nxt[0], nxt[1], 0, _TCP_FIN | _TCP_ACK)
            t += rtt // 2
            emit(1, nxt[1], nxt[0] + 1, 0, _TCP_FIN | _TCP_ACK)
            t += rtt // 2
            emit(0, nxt[0] + 1, nxt[1] + 1, 0, _TCP_ACK)
    rows.sort(key=lambda r: r[0])
    return tcp_records(rows)


def tcp_records(rows: list[tuple]) -> np.ndarray:
    """Records of ported TCP packets, as the parser writes them, from rows of
    (ts_ns, src_addr, sport, dst_addr, dport, seq, ack, payload, win, flags,
    tcp_info), addresses as 16 bytes; in the order given."""
    out = np.zeros(len(rows), dtype=RECORD_DTYPE)
    if not rows:
        return out
    cols = list(zip(*rows))
    out["ts_ns"] = np.array(cols[0], dtype=np.uint64)
    out["src_addr"] = np.frombuffer(b"".join(cols[1]), np.uint8).reshape(-1, 16)
    out["src_port"] = cols[2]
    out["dst_addr"] = np.frombuffer(b"".join(cols[3]), np.uint8).reshape(-1, 16)
    out["dst_port"] = cols[4]
    out["tcp_seq"] = np.array(cols[5], dtype=np.uint32)
    out["tcp_ack"] = np.array(cols[6], dtype=np.uint32)
    out["tcp_payload"] = cols[7]
    out["tcp_win"] = cols[8]
    out["tcp_flags"] = cols[9]
    out["tcp_info"] = cols[10]
    out["proto"] = 6
    out["pkt_class"] = 0
    out["wire_len"] = 54 + np.array(cols[7])
    return out


def flow_owner(records: np.ndarray, processes: int) -> np.ndarray:
    """The capture process (0..processes-1) of each TCP record, by a hash of its
    connection that is the same both ways (as PACKET_FANOUT_HASH); -1 for
    other records."""
    owner = np.full(len(records), -1, dtype=np.int64)
    tcp = np.flatnonzero((records["pkt_class"] == 0) & (records["proto"] == 6))
    for i in tcp.tolist():
        r = records[i]
        a = (bytes(r["src_addr"]), int(r["src_port"]))
        b = (bytes(r["dst_addr"]), int(r["dst_port"]))
        key = repr(sorted([a, b])).encode()
        owner[i] = sum(key) % processes
    return owner
