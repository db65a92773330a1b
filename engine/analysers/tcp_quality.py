"""TCP quality per port, measured passively (docs/quality-rules.md): RTT,
jitter, retransmissions, out-of-order segments, sequence gaps, duplicate ACKs.

Two parts, as every analyser (pt_engine.analysers):

* the **counter** runs in each capture process, that is per source group
  (one file, or one live capture process): it keeps the connections and
  their halves, bounded as section 7 says, and for the open window the rows
  it touched and the state counters. It is native by default
  (``pt_engine._quality.QualityCounter``, ext/quality.pyx, fed the raw
  record buffer); under the reference backend (``PT_ENGINE_PUREPYTHON=1``)
  it is ``QualityCounter`` below, the contract in plain Python, written to
  be read next to docs/quality-rules.md rather than to be fast: one method
  per rule, one packet at a time, in file order. The two give the same
  figures, byte for byte (tests/test_quality_native.py).
* ``TcpQuality`` merges the deltas in the aggregator, exactly (sums; min and
  max over the parts that have samples), and writes ``"tcp_quality"``:
  ``{"rows": [...]}`` in each window, ``{"rows": [...], "state": {...}}`` in
  the summary (section 8).

A delta is the bytes of ext/quality.pyx's layout (``pack_delta`` writes it
in Python, ``unpack_delta`` reads it); the twin's ``take()`` gives the same
content as ``(rows, state)``: ``rows`` maps ``(port, side)`` (side 0 = "in",
1 = "out") to a list of the 14 counters of ``COLUMNS`` followed by the 32
histogram buckets; ``state`` is a tuple in the order of ``STATE_KEYS``.
``TcpQuality.merge`` takes either.

Every figure is an integer (uint64 from the counter on: a sum past 2^64
would need timestamps centuries apart); the two parts share no state, so
any split of the records among capture processes that keeps each source
group whole gives the same output.
"""
from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import asdict, dataclass

from .. import records as rec
from ..backend import core, use_reference_backend
from ..stream import NativeRows
from . import Analyser, AnalyserContext, Counter

# --- the contract's constants -------------------------------------------------------------

COLUMNS = ("rtt_samples", "rtt_sum_ns", "rtt_min_ns", "rtt_max_ns", "jitter_sum_ns",
           "jitter_pairs", "data_segments", "data_bytes", "retrans_segments", "retrans_bytes",
           "ooo_segments", "gaps", "gap_bytes", "dup_acks")
(RTT_SAMPLES, RTT_SUM, RTT_MIN, RTT_MAX, JITTER_SUM, JITTER_PAIRS, DATA_SEGMENTS, DATA_BYTES,
 RETRANS_SEGMENTS, RETRANS_BYTES, OOO_SEGMENTS, GAPS, GAP_BYTES, DUP_ACKS) = range(len(COLUMNS))
N_COUNTERS = len(COLUMNS)
HIST_BUCKETS = 32
ROW_WIDTH = N_COUNTERS + HIST_BUCKETS
SIDES = ("in", "out")
IN, OUT = 0, 1

STATE_KEYS = ("analysed", "not_analysed", "rst", "rst_closed", "connections",
              "connections_evicted", "records_skipped", "holes_forgotten")
(ANALYSED, NOT_ANALYSED, RST, RST_CLOSED, CONNECTIONS, CONNECTIONS_EVICTED, RECORDS_SKIPPED,
 HOLES_FORGOTTEN) = range(len(STATE_KEYS))


@dataclass(frozen=True)
class Bounds:
    """The state bounds of section 7, per source group."""

    connections: int = 65_536
    records_per_half: int = 1_024
    records: int = 4_194_304
    holes_per_half: int = 64


BOUNDS = Bounds()

_M32 = 0xFFFF_FFFF
_HALF = 1 << 31
_FIN, _SYN, _RST, _ACK = rec.TCP_FIN, rec.TCP_SYN, rec.TCP_RST, rec.TCP_ACK
# A packet is analysed when its record has exactly TCPI_HEADER of these.
_ANALYSIS_BITS = (rec.TCPI_HEADER | rec.TCPI_FRAGMENT | rec.TCPI_NEGATIVE_PAYLOAD
                  | rec.TCPI_NO_TIMESTAMP)


# --- sequence arithmetic (modulo 2^32) ----------------------------------------------------

def seq_gt(a: int, b: int) -> bool:
    """a > b: (a - b) mod 2^32 lies in [1, 2^31 - 1]."""
    return 0 < ((a - b) & _M32) < _HALF


def seq_ge(a: int, b: int) -> bool:
    return a == b or seq_gt(a, b)


def seq_lt(a: int, b: int) -> bool:
    return seq_gt(b, a)


def seq_le(a: int, b: int) -> bool:
    return a == b or seq_gt(b, a)


def seq_diff(a: int, b: int) -> int:
    """a - b read as a signed 32-bit integer."""
    d = (a - b) & _M32
    return d - (1 << 32) if d >= _HALF else d


def rtt_bucket(rtt_ns: int) -> int:
    """The histogram bucket of an RTT sample (section 6)."""
    return min(HIST_BUCKETS - 1, (rtt_ns // 1000).bit_length())


# --- the state ------------------------------------------------------------------------------

class Segment:
    """A record of section 2: new bytes [start, end) sent at time t."""

    __slots__ = ("start", "end", "t", "flagged")

    def __init__(self, start: int, end: int, t: int, flagged: bool):
        self.start, self.end, self.t, self.flagged = start, end, t, flagged


class Half:
    """One direction of a connection, named by the data it carries (A -> B)."""

    __slots__ = ("rows", "hi", "acked", "segments", "holes", "last_rtt", "last_win",
                 "syn_seq", "flag_next")

    def __init__(self, rows: tuple):
        self.rows = rows            # ((pB, IN), (pA, OUT)): where its figures go
        self.hi: int | None = None
        self.acked: int | None = None
        self.segments: list[Segment] = []     # increasing end
        self.holes: list[list[int]] = []      # [a, b), increasing
        self.last_rtt: int | None = None
        self.last_win: int | None = None
        self.syn_seq: int | None = None
        self.flag_next = False      # a segment was not recorded: flag the next one


class Connection:
    """Two halves: halves[0] carries the data of the key's first endpoint."""

    __slots__ = ("halves",)

    def __init__(self, first_port: int, second_port: int):
        self.halves = [Half(((second_port, IN), (first_port, OUT))),
                       Half(((first_port, IN), (second_port, OUT)))]


# --- the capture side ---------------------------------------------------------------------

class QualityCounter(Counter):
    """The contract over one source group's packets, in the order they come."""

    def __init__(self, ctx: AnalyserContext | None = None, bounds: Bounds = BOUNDS):
        super().__init__(ctx)
        self.bounds = bounds
        self.connections: OrderedDict[tuple, Connection] = OrderedDict()   # LRU first
        self.records_held = 0       # segments in all halves
        self._rows: dict[tuple[int, int], list[int]] = {}
        self._state = [0] * len(STATE_KEYS)

    # Counter interface

    def consume(self, records, start: int, stop: int) -> None:
        batch = records[start:stop]
        tcp = batch[(batch["pkt_class"] == rec.PacketClass.PORTED) & (batch["proto"] == 6)]
        if not len(tcp):
            return
        src, dst = tcp["src_addr"].tobytes(), tcp["dst_addr"].tobytes()
        columns = zip(tcp["ts_ns"].tolist(), tcp["src_port"].tolist(),
                      tcp["dst_port"].tolist(), tcp["tcp_seq"].tolist(),
                      tcp["tcp_ack"].tolist(), tcp["tcp_payload"].tolist(),
                      tcp["tcp_win"].tolist(), tcp["tcp_flags"].tolist(),
                      tcp["tcp_info"].tolist())
        for i, (t, sport, dport, seq, ack, payload, win, flags, info) in enumerate(columns):
            self.packet(t, src[16 * i:16 * i + 16], sport, dst[16 * i:16 * i + 16], dport,
                        seq, ack, payload, win, flags, info)

    def take(self):
        rows = {key: row for key, row in self._rows.items() if any(row[:N_COUNTERS])}
        state = tuple(self._state)
        self._rows = {}
        self._state = [0] * len(STATE_KEYS)
        if not rows and not any(state):
            return None
        return rows, state

    # One packet (section 1 and 3)

    def packet(self, t: int, src: bytes, sport: int, dst: bytes, dport: int, seq: int,
               ack: int, payload: int, win: int, flags: int, info: int) -> None:
        """One ported TCP packet, as its record gives it (records.pxd)."""
        state = self._state
        if info & _ANALYSIS_BITS != rec.TCPI_HEADER:
            state[NOT_ANALYSED] += 1
            return
        a, b = (src, sport), (dst, dport)
        version = 6 if info & rec.TCPI_IPV6 else 4
        if a <= b:
            key, d = (version, a, b), 0
        else:
            key, d = (version, b, a), 1
        if flags & _RST:
            state[RST] += 1
            conn = self.connections.pop(key, None)
            if conn is not None:
                self._release(conn)
                state[RST_CLOSED] += 1
            return
        state[ANALYSED] += 1
        conn = self.connections.get(key)
        if conn is None:
            conn = self._create(key)
        else:
            self.connections.move_to_end(key)
        half = conn.halves[d]
        if flags & _SYN and half.hi is not None and half.syn_seq != seq:
            if flags & _ACK:
                self._free(half)
                half = conn.halves[d] = Half(half.rows)
            else:
                del self.connections[key]
                self._release(conn)
                conn = self._create(key)
                half = conn.halves[d]
        # A connection of an endpoint with itself has one direction: one half.
        peer = half if a == b else conn.halves[1 - d]
        if flags & _SYN:
            half.syn_seq = seq
        length = payload + (1 if flags & _SYN else 0) + (1 if flags & _FIN else 0)
        self._sequence(half, t, seq, payload, length, flags)
        if flags & _ACK:
            self._acknowledge(peer, half, t, seq, ack, length, win)
            half.last_win = win

    # Section 4: the sequence side

    def _sequence(self, h: Half, t: int, s: int, payload: int, length: int,
                  flags: int) -> None:
        e = (s + length) & _M32
        hi = h.hi
        keep_alive = False
        if hi is None:
            h.hi = e
            if length > 0:
                self._record(h, s, e, t)
        elif (not flags & (_SYN | _FIN) and payload <= 1 and s == (hi - 1) & _M32):
            keep_alive = True
            if payload == 1:
                self._flag(h, s, e)
        elif length == 0:
            if seq_gt(s, hi):
                self._gap(h, hi, s)
                h.hi = s
        elif seq_ge(s, hi):
            if s != hi:
                self._gap(h, hi, s)
            self._record(h, s, e, t)
            h.hi = e
        elif seq_lt(s, hi):
            self._below_hi(h, t, s, e, payload, flags)
        if payload > 0 and not keep_alive:
            self._add(h, DATA_SEGMENTS, 1)
            self._add(h, DATA_BYTES, payload)

    def _below_hi(self, h: Half, t: int, s: int, e: int, payload: int, flags: int) -> None:
        hi = h.hi
        beyond = seq_gt(e, hi)
        top = hi if beyond else e
        self._flag(h, s, top)
        if self._fill(h, s, top):
            for seg in h.segments:
                if seq_gt(seg.end, s):
                    seg.flagged = True
                    break
            self._add(h, OOO_SEGMENTS, 1)
        else:
            self._add(h, RETRANS_SEGMENTS, 1)
            if beyond:
                resent = max(0, seq_diff(hi, (s + (1 if flags & _SYN else 0)) & _M32))
            else:
                resent = payload
            self._add(h, RETRANS_BYTES, resent)
        if beyond:
            self._record(h, hi, e, t)
            h.hi = e

    def _gap(self, h: Half, hi: int, s: int) -> None:
        self._add(h, GAPS, 1)
        self._add(h, GAP_BYTES, (s - hi) & _M32)
        h.holes.append([hi, s])
        self._bound_holes(h)

    def _fill(self, h: Half, s: int, top: int) -> bool:
        """Take [s, top) out of the holes; True if it overlapped one."""
        filled = False
        holes = []
        for lo, hi in h.holes:
            if seq_gt(hi, s) and seq_lt(lo, top):
                filled = True
                if seq_lt(lo, s):
                    holes.append([lo, s])
                if seq_lt(top, hi):
                    holes.append([top, hi])
            else:
                holes.append([lo, hi])
        h.holes = holes
        self._bound_holes(h)
        return filled

    def _bound_holes(self, h: Half) -> None:
        while len(h.holes) > self.bounds.holes_per_half:
            del h.holes[0]          # the lowest: treated as seen
            self._state[HOLES_FORGOTTEN] += 1

    def _flag(self, h: Half, lo: int, hi: int) -> None:
        """Flag every segment overlapping [lo, hi)."""
        for seg in h.segments:
            if seq_gt(seg.end, lo) and seq_lt(seg.start, hi):
                seg.flagged = True

    def _record(self, h: Half, start: int, end: int, t: int) -> None:
        bounds = self.bounds
        if len(h.segments) >= bounds.records_per_half or self.records_held >= bounds.records:
            self._state[RECORDS_SKIPPED] += 1
            h.flag_next = True
            return
        h.segments.append(Segment(start, end, t, h.flag_next))
        h.flag_next = False
        self.records_held += 1

    # Section 5: the acknowledgment side

    def _acknowledge(self, r: Half, h: Half, t: int, s: int, n: int, length: int,
                     win: int) -> None:
        """ACK number n, from the packet of half h, for the data of half r."""
        if r.acked is None or seq_gt(n, r.acked):
            r.acked = n
            kept, last, clean = [], None, True
            for seg in r.segments:
                if seq_le(seg.end, n):
                    last = seg
                    clean = clean and not seg.flagged
                else:
                    kept.append(seg)
            if len(kept) != len(r.segments):
                self.records_held -= len(r.segments) - len(kept)
                r.segments = kept
            r.holes = [[lo if seq_ge(lo, n) else n, hi] for lo, hi in r.holes if seq_gt(hi, n)]
            if last is not None and last.end == n and clean and t >= last.t:
                self._sample(r, t - last.t)
        elif n == r.acked:
            if (length == 0 and win != 0 and win == h.last_win and s == h.hi
                    and r.hi is not None and seq_gt(r.hi, n)):
                self._add(r, DUP_ACKS, 1)

    def _sample(self, r: Half, rtt: int) -> None:
        for key in r.rows:
            row = self._row(key)
            if row[RTT_SAMPLES]:
                row[RTT_MIN] = min(row[RTT_MIN], rtt)
                row[RTT_MAX] = max(row[RTT_MAX], rtt)
            else:
                row[RTT_MIN] = row[RTT_MAX] = rtt
            row[RTT_SAMPLES] += 1
            row[RTT_SUM] += rtt
            row[N_COUNTERS + rtt_bucket(rtt)] += 1
        if r.last_rtt is not None:
            self._add(r, JITTER_SUM, abs(rtt - r.last_rtt))
            self._add(r, JITTER_PAIRS, 1)
        r.last_rtt = rtt

    # Connections and their bounds (sections 3 and 7)

    def _create(self, key: tuple) -> Connection:
        if len(self.connections) >= self.bounds.connections:
            _, oldest = self.connections.popitem(last=False)
            self._release(oldest)
            self._state[CONNECTIONS_EVICTED] += 1
        conn = self.connections[key] = Connection(key[1][1], key[2][1])
        self._state[CONNECTIONS] += 1
        return conn

    def _release(self, conn: Connection) -> None:
        for half in conn.halves:
            self._free(half)

    def _free(self, half: Half) -> None:
        self.records_held -= len(half.segments)
        half.segments = []

    # Attribution (section 6): data of A -> B counts for (pB, in) and (pA, out).

    def _row(self, key: tuple[int, int]) -> list[int]:
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = [0] * ROW_WIDTH
        return row

    def _add(self, h: Half, column: int, value: int) -> None:
        for key in h.rows:
            self._row(key)[column] += value


# --- the counter of the backend -------------------------------------------------------------

def new_counter(ctx: AnalyserContext | None = None, bounds: Bounds = BOUNDS):
    """The capture-side counter of the backend in use: the native one
    (ext/quality.pyx), or the twin under the reference backend."""
    if use_reference_backend():
        return QualityCounter(ctx, bounds)
    from .._quality import QualityCounter as NativeQualityCounter
    return NativeQualityCounter(**asdict(bounds))


# --- deltas (the layout of ext/quality.pyx) --------------------------------------------------

DELTA_VERSION = 1
_DELTA_HEAD = struct.Struct("<12Q")     # version, rows, values, 0, the 8 state counters
N_ROW_KEYS = 2 * rec.N_PORTS            # row key: port << 1 | side


def pack_delta(rows: dict, state) -> bytes:
    """The delta bytes of the twin's (rows, state), as ext/quality.pyx writes them."""
    keys = sorted(port << 1 | side for (port, side), row in rows.items()
                  if any(row[:N_COUNTERS]))
    masks, values = [], []
    for key in keys:
        mask = 0
        for j, value in enumerate(rows[(key >> 1, key & 1)]):
            if value:
                mask |= 1 << j
                values.append(value)
        masks.append(mask)
    n = len(keys)
    return (_DELTA_HEAD.pack(DELTA_VERSION, n, len(values), 0, *state)
            + struct.pack(f"<{n}I", *keys) + bytes(-4 * n % 8)
            + struct.pack(f"<{n + len(values)}Q", *masks, *values))


def unpack_delta(delta):
    """(keys, values, state) of delta bytes: row keys (uint32, increasing), their
    (n, ROW_WIDTH) uint64 values, and the state counters (a tuple). Raises
    ValueError for bytes of another layout."""
    import numpy as np
    head = _DELTA_HEAD.unpack_from(delta)
    version, n, n_values = head[:3]
    at = _DELTA_HEAD.size
    size = at + (4 * n + 7) // 8 * 8 + 8 * n + 8 * n_values
    if version != DELTA_VERSION or len(delta) != size:
        raise ValueError(f"not a tcp_quality delta: version {version}, {len(delta)} bytes "
                         f"for {n} rows and {n_values} values")
    keys = np.frombuffer(delta, "<u4", n, at)
    at += (4 * n + 7) // 8 * 8
    masks = np.frombuffer(delta, "<u8", n, at)
    bits = np.unpackbits(masks.view(np.uint8).reshape(n, 8), axis=1,
                         bitorder="little")[:, :ROW_WIDTH].astype(bool)
    values = np.zeros((n, ROW_WIDTH), dtype=np.uint64)
    values[bits] = np.frombuffer(delta, "<u8", n_values, at + 8 * n)
    return keys, values, head[4:]


# --- the aggregator side ------------------------------------------------------------------

def merge_parts(parts: list):
    """The sum of several (keys, values) row sets, keys increasing; exact: sums,
    and min and max over the parts that have samples."""
    import numpy as np
    parts = [part for part in parts if len(part[0])]
    if not parts:
        return np.zeros(0, dtype=np.uint32), np.zeros((0, ROW_WIDTH), dtype=np.uint64)
    if len(parts) == 1:
        return parts[0]
    keys = np.concatenate([k for k, _ in parts])
    values = np.concatenate([v for _, v in parts])
    order = np.argsort(keys, kind="stable")
    keys, values = keys[order], values[order]
    first = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    out = np.add.reduceat(values, first, axis=0)
    sampled = values[:, RTT_SAMPLES] > 0
    out[:, RTT_MIN] = np.minimum.reduceat(
        np.where(sampled, values[:, RTT_MIN], np.uint64((1 << 64) - 1)), first)
    out[:, RTT_MIN][out[:, RTT_SAMPLES] == 0] = 0
    out[:, RTT_MAX] = np.maximum.reduceat(values[:, RTT_MAX], first)
    return keys[first], out


class _Totals:
    """The run's cumulative rows: a table of every row key (131072 x 46 uint64,
    48 MB of address space, resident only where rows were added), merged into
    natively (add_quality_rows), and which keys were seen."""

    def __init__(self):
        import numpy as np
        self._table = np.zeros((N_ROW_KEYS, ROW_WIDTH), dtype=np.uint64)
        self._seen = np.zeros(N_ROW_KEYS, dtype=bool)

    def add(self, keys, values) -> None:
        import numpy as np
        if not len(keys):
            return
        core().add_quality_rows(self._table, np.ascontiguousarray(keys, dtype=np.uint32),
                                np.ascontiguousarray(values, dtype=np.uint64))
        self._seen[keys] = True

    def rows(self):
        """(keys, values), keys increasing."""
        import numpy as np
        keys = np.flatnonzero(self._seen).astype(np.uint32)
        return keys, self._table[keys]


class QualityRows(NativeRows):
    """The ``rows`` of a window's or summary's ``tcp_quality``: row keys (port << 1
    | side) in increasing order and their ROW_WIDTH values; section 8's rows
    ``["tcp", port, side, *counters, buckets]`` to Python code."""

    __slots__ = ("keys", "values")

    def __init__(self, keys, values):
        super().__init__()
        self.keys = keys
        self.values = values

    def _rows(self) -> list[list]:
        return [["tcp", key >> 1, SIDES[key & 1], *counters, hist] for key, counters, hist
                in zip(self.keys.tolist(), self.values[:, :N_COUNTERS].tolist(),
                       self.values[:, N_COUNTERS:].tolist())]

    def msgpack(self) -> bytes:
        import numpy as np
        return core().encode_quality_rows(
            np.ascontiguousarray(self.keys, dtype=np.uint32),
            np.ascontiguousarray(self.values, dtype=np.uint64).reshape(-1, ROW_WIDTH))

    def __len__(self) -> int:
        return len(self.keys)


class TcpQuality(Analyser):
    """Per-port TCP quality: the rows of section 8, per window and in the summary."""

    name = "tcp_quality"
    fields = ("tcp_quality",)
    counter = staticmethod(new_counter)

    def __init__(self, ctx: AnalyserContext):
        super().__init__(ctx)
        self._parts: list = []          # the open window's (keys, values), per delta
        self._window_state = [0] * len(STATE_KEYS)
        self._total = _Totals()
        self._state = [0] * len(STATE_KEYS)

    def merge(self, delta, group: int) -> None:
        if delta is None:
            return
        if isinstance(delta, tuple):       # the twin's (rows, state)
            delta = pack_delta(*delta)
        keys, values, state = unpack_delta(delta)
        if len(keys):
            self._parts.append((keys, values))
        for i, value in enumerate(state):
            self._window_state[i] += value

    def window(self, start_ns: int, end_ns: int) -> dict:
        keys, values = merge_parts(self._parts)
        fields = {"tcp_quality": {"rows": self._stream_rows(keys, values)}}
        self._total.add(keys, values)
        for i, value in enumerate(self._window_state):
            self._state[i] += value
        self._parts = []
        self._window_state = [0] * len(STATE_KEYS)
        return fields

    def summary(self) -> dict:
        return {"tcp_quality": {"rows": self._stream_rows(*self._total.rows()),
                                "state": dict(zip(STATE_KEYS, self._state))}}

    def _stream_rows(self, keys, values) -> QualityRows:
        """Section 8's rows of row keys in increasing order (by port, then side),
        the ports that --ports leaves out omitted (the counters leave out the
        all-zero rows)."""
        ports = self.ctx.ports
        if ports is not None:
            keep = ports.mask[keys >> 1]
            keys, values = keys[keep], values[keep]
        return QualityRows(keys, values)


# --- figures from the stream's rows (for top, alerts and plot) ----------------------------

def bucket_range_ns(k: int) -> tuple[int, float]:
    """The RTTs bucket k holds, [lo, hi) in ns (the last one has no end)."""
    lo = 0 if k == 0 else 1000 << (k - 1)
    return lo, float("inf") if k == HIST_BUCKETS - 1 else 1000 << k


def percentile_range(hist: list[int], fraction: float) -> tuple[int, float] | None:
    """The bucket's range [lo, hi) ns that holds the RTT below which `fraction`
    of the samples lie (the p50 for 0.5); None without samples. The histogram
    knows no more than that range."""
    total = sum(hist)
    if not total:
        return None
    k, _, _ = _rank_bucket(hist, fraction)
    return bucket_range_ns(k)


def _rank_bucket(hist: list[int], fraction: float) -> tuple[int, int, float]:
    """(bucket, samples below it, rank) of the sample at `fraction` of them."""
    rank = max(1.0, fraction * sum(hist))
    seen = 0
    for k, n in enumerate(hist):
        if n and seen + n >= rank:
            return k, seen, rank
        seen += n
    raise AssertionError("unreachable: the ranks add up to the total")


def percentile_ns(hist: list[int], fraction: float) -> float | None:
    """An estimate of that RTT: linear within its bucket, as Prometheus'
    histogram_quantile does (the open last bucket gives its lower end)."""
    if not sum(hist):
        return None
    k, below, rank = _rank_bucket(hist, fraction)
    lo, hi = bucket_range_ns(k)
    if hi == float("inf"):
        return float(lo)
    return lo + (hi - lo) * (rank - below) / hist[k]



# name -> what it is: the figures a consumer derives from a row, None where the
# row has nothing to derive it from (no RTT sample, no jitter pair, no data).
METRICS = {
    "rtt_p50_ms": "RTT p50, ms (estimated within its histogram bucket)",
    "rtt_p95_ms": "RTT p95, ms (estimated within its histogram bucket)",
    "rtt_avg_ms": "mean RTT, ms (exact)",
    "jitter_ms": "mean |rtt_i - rtt_(i-1)|, ms",
    "retrans_ratio": "retransmitted data segments / data segments",
    "gap_ratio": "sequence gaps / data segments",
}


def row_values(stream_row: list) -> list[int]:
    """A section 8 row of the stream (["tcp", port, side, 14 counters, [32
    buckets]]) as the 46 integers merge_rows adds."""
    return [*stream_row[3:3 + N_COUNTERS], *stream_row[3 + N_COUNTERS]]


def merged(values: list[list[int]]) -> list[int] | None:
    """Several rows' values merged exactly (None for none)."""
    if not values:
        return None
    out = [sum(column) for column in zip(*values)]
    sampled = [v for v in values if v[RTT_SAMPLES]]
    out[RTT_MIN] = min((v[RTT_MIN] for v in sampled), default=0)
    out[RTT_MAX] = max((v[RTT_MAX] for v in sampled), default=0)
    return out


def metric(values: list[int] | None, name: str) -> float | None:
    """Figure `name` (METRICS) of a row's values."""
    if values is None:
        return None
    if name in ("rtt_p50_ms", "rtt_p95_ms"):
        ns = percentile_ns(values[N_COUNTERS:], 0.5 if name == "rtt_p50_ms" else 0.95)
        return None if ns is None else ns / 1e6
    over, under, scale = {"rtt_avg_ms": (RTT_SUM, RTT_SAMPLES, 1e6),
                          "jitter_ms": (JITTER_SUM, JITTER_PAIRS, 1e6),
                          "retrans_ratio": (RETRANS_SEGMENTS, DATA_SEGMENTS, 1),
                          "gap_ratio": (GAPS, DATA_SEGMENTS, 1)}[name]
    if not values[under]:
        return None
    return values[over] / values[under] / scale
