"""The capture process's counting: PortWindows (native and its twin) and the
native msgpack encoder of port rows, against the plain definitions."""
from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stages
from pt_engine import _core, _reference
from pt_engine.analysers.ports import merge_rows, parse_delta
from pt_engine.records import RECORD_DTYPE, UINT64_MAX

BACKENDS = [_core, _reference]
SECOND = 10**9


def _deltas(backend, records: np.ndarray, interval: int, chunks) -> list[bytes]:
    windows = backend.PortWindows(interval)
    buf = memoryview(bytearray(records.tobytes()))
    out = []
    for lo, hi in chunks:
        pos = lo
        while pos < hi:
            pos = windows.count(buf, pos, hi)
            if pos < hi:
                delta = windows.advance(windows.next_ns)
                if delta is not None:
                    out.append(bytes(delta))
    last = windows.finish()
    return out + ([bytes(last)] if last is not None else [])


def _expected(records: np.ndarray, interval: int) -> list[tuple]:
    """(start, records, late, {row: [4 counters]}, classes) per window, by the
    definition: a record belongs to the window of the newest record so far."""
    out: dict[int, list] = {}
    newest = None
    for r in records.tolist():
        ts, wire, sport, dport, proto, cls = r[0], r[1], r[2], r[3], r[4], r[5]
        newest = ts if newest is None else max(newest, ts)
        start = newest - newest % interval
        w = out.setdefault(start, [start, 0, 0, {}, [[0, 0] for _ in range(4)]])
        w[1] += 1
        w[2] += ts < start
        w[4][cls][0] += 1
        w[4][cls][1] += wire
        if cls == 0:
            base = {6: 0, 17: 1, 132: 2, 136: 3, 33: 4}[proto] << 16
            for row, col in ((base | dport, 0), (base | sport, 2)):
                c = w[3].setdefault(row, [0, 0, 0, 0])
                c[col] += 1
                c[col + 1] += wire
    return [tuple(v) for _, v in sorted(out.items())]


def _decoded(delta: bytes) -> tuple:
    head = np.frombuffer(delta, "<u8", 16)
    rows, values, classes = parse_delta(delta)
    return (int(head[0]), int(head[2]), int(head[3]),
            dict(zip(rows.tolist(), values.tolist())), classes.tolist())


@pytest.mark.parametrize("backend", BACKENDS, ids=["native", "reference"])
def test_windows_count_by_the_definition(backend):
    records = stages.synthetic_records(6000)
    got = [_decoded(d) for d in _deltas(backend, records, SECOND // 2, [(0, len(records))])]
    assert got == _expected(records, SECOND // 2)
    assert sum(late for _, _, late, _, _ in got) > 0


def test_native_and_twin_write_the_same_bytes_whatever_the_pieces():
    records = stages.synthetic_records(6000, seed=5)
    rng = np.random.default_rng(1)
    cuts = np.unique(np.concatenate([[0, len(records)], rng.integers(0, len(records), 40)]))
    pieces = list(zip(cuts[:-1].tolist(), cuts[1:].tolist()))
    native = _deltas(_core, records, SECOND, pieces)
    assert native == _deltas(_reference, records, SECOND, [(0, len(records))])
    assert native == _deltas(_core, records, SECOND, [(0, len(records))])


def test_rows_come_in_stream_order_when_the_table_is_walked():
    """A window using more than 1/16 of the rows is written by a walk of the
    table rather than a sort: the same bytes as the twin."""
    n = 60_000
    records = np.zeros(n, RECORD_DTYPE)
    records["ts_ns"] = stages.T0
    records["wire_len"] = 100
    records["proto"] = np.where(np.arange(n) % 3 == 0, 17, np.where(np.arange(n) % 3 == 1, 6, 33))
    records["src_port"] = np.arange(n) % 65536
    records["dst_port"] = (np.arange(n) * 7) % 65536
    native = _deltas(_core, records, SECOND, [(0, n)])
    assert native == _deltas(_reference, records, SECOND, [(0, n)])
    rows, _, _ = parse_delta(native[0])
    assert len(rows) * 16 > 5 * 65536
    names = np.array(["tcp", "udp", "sctp", "udplite", "dccp"])[rows >> 16]
    keys = list(zip(names.tolist(), (rows & 0xFFFF).tolist()))
    assert keys == sorted(keys)


@pytest.mark.parametrize("backend", BACKENDS, ids=["native", "reference"])
def test_the_end_of_time_is_a_window_too(backend):
    records = np.zeros(3, RECORD_DTYPE)
    records["ts_ns"] = [UINT64_MAX - 5, UINT64_MAX, UINT64_MAX]
    records["pkt_class"] = 2
    records["wire_len"] = 60
    (delta,) = _deltas(backend, records, SECOND, [(0, 3)])
    head = np.frombuffer(delta, "<u8", 16)
    assert int(head[1]) == UINT64_MAX and int(head[2]) == 3


@pytest.mark.parametrize("backend", BACKENDS, ids=["native", "reference"])
def test_advance_closes_only_past_the_end(backend):
    windows = backend.PortWindows(SECOND)
    assert windows.start_ns is None and windows.advance(5 * SECOND + 3) is None
    assert windows.start_ns == 5 * SECOND
    records = stages.synthetic_records(10)
    records["ts_ns"] = 5 * SECOND + 10
    buf = memoryview(bytearray(records.tobytes()))
    assert windows.count(buf, 0, 10) == 10
    assert windows.advance(6 * SECOND - 1) is None
    delta = windows.advance(7 * SECOND)
    assert _decoded(bytes(delta))[:2] == (5 * SECOND, 10)
    assert windows.start_ns == 7 * SECOND and windows.finish() is None


@pytest.mark.parametrize("backend", BACKENDS, ids=["native", "reference"])
def test_a_record_no_parser_writes_is_refused(backend):
    records = stages.synthetic_records(4)
    records["pkt_class"][2] = 0
    records["proto"][2] = 1          # ICMP cannot be ported
    records["ts_ns"] = stages.T0
    windows = backend.PortWindows(SECOND)
    with pytest.raises(ValueError, match="record 2"):
        windows.count(memoryview(bytearray(records.tobytes())), 0, 4)


_EDGES = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1]
_values = st.one_of(st.sampled_from(_EDGES), st.integers(0, 2**64 - 1))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5 * 65536 - 1), st.tuples(*[_values] * 4)),
                max_size=40))
def test_native_port_rows_are_msgpack_pythons_bytes(rows):
    counter_rows = np.array([r for r, _ in rows], dtype=np.uint32)
    values = np.array([v for _, v in rows], dtype=np.uint64).reshape(-1, 4)
    want = msgpack.packb([[("tcp", "udp", "sctp", "udplite", "dccp")[r >> 16], r & 0xFFFF,
                           *v] for r, v in rows], use_bin_type=True)
    assert _core.encode_port_rows(counter_rows, values) == want
    assert _reference.encode_port_rows(counter_rows, values) == want


def test_port_rows_of_any_length():
    for n in (0, 15, 16, 65535, 65536, 70000):
        rows = (np.arange(n) % (5 * 65536)).astype(np.uint32)
        values = np.ones((n, 4), dtype=np.uint64)
        assert msgpack.unpackb(_core.encode_port_rows(rows, values)) == \
            [[("tcp", "udp", "sctp", "udplite", "dccp")[r >> 16], r & 0xFFFF, 1, 1, 1, 1]
             for r in rows.tolist()]
    with pytest.raises(ValueError):
        _core.encode_port_rows(np.array([5 << 16], np.uint32), np.zeros((1, 4), np.uint64))


def test_merging_rows_is_exact_and_ordered():
    a = (np.array([2 << 16 | 5, 0 << 16 | 80]), np.array([[1, 2, 3, 2**63], [1, 1, 1, 1]],
                                                       dtype=np.uint64))
    b = (np.array([4 << 16 | 9, 0 << 16 | 80]), np.array([[0, 0, 1, 1], [1, 1, 1, 2**63 - 1]],
                                                       dtype=np.uint64))
    rows, values = merge_rows([a, b])
    assert rows.tolist() == [4 << 16 | 9, 2 << 16 | 5, 80]      # dccp, sctp, tcp
    assert values.tolist() == [[0, 0, 1, 1], [1, 2, 3, 2**63], [2, 2, 2, 2**63]]


@pytest.mark.parametrize("backend", BACKENDS, ids=["native", "reference"])
def test_add_rows_adds_every_row_even_twice(backend):
    table = np.zeros((8, 4), dtype=np.uint64)
    table[3] = 2**63
    rows = np.array([3, 5, 3], dtype=np.uint32)
    values = np.arange(12, dtype=np.uint64).reshape(3, 4)
    backend.add_rows(table, rows, values)
    assert table[3].tolist() == [2**63 + 8, 2**63 + 10, 2**63 + 12, 2**63 + 14]
    assert table[5].tolist() == [4, 5, 6, 7] and int(table.sum(axis=1)[[0, 1, 2, 4, 6, 7]].sum()) == 0
    with pytest.raises(ValueError):
        backend.add_rows(table, np.array([8], dtype=np.uint32), np.zeros((1, 4), np.uint64))
