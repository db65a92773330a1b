"""Property tests: random and mutated frames, a battery of nasty frames, argument checks.

The native parser must never crash, never look past a frame's captured
length, and write records byte-identical to the pure-Python reference; every
frame lands in exactly one class and the class totals add up.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pt_engine.records import (
    CLASS_NAMES,
    N_PORTS,
    N_PROTOS,
    PORT_PROTOCOLS,
    REASON_NAMES,
    RECORD_DTYPE,
    SUPPORTED_LINKTYPES,
    TCPI_HEADER,
    TCPI_NEGATIVE_PAYLOAD,
)
from frames import (
    AF_INET,
    AF_INET6_BSD,
    AF_INET6_DARWIN,
    AF_INET6_FREEBSD,
    AF_INET6_LINUX,
    DLT_EN10MB,
    DLT_LINUX_SLL,
    DLT_LINUX_SLL2,
    DLT_LOOP,
    DLT_NULL,
    DLT_RAW,
    ETH_ARP,
    ETH_IPV4,
    ETH_IPV6,
    ETH_MPLS,
    ETH_MPLS_MC,
    ETH_PPPOE,
    ETH_QINQ,
    ETH_VLAN,
    ETH_VLAN_9100,
    IPPROTO_AH,
    IPPROTO_DCCP,
    IPPROTO_DSTOPTS,
    IPPROTO_FRAGMENT,
    IPPROTO_HOPOPTS,
    IPPROTO_ICMP,
    IPPROTO_ROUTING,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPPROTO_UDPLITE,
    PPP_IPV4,
    PPP_IPV6,
    PPP_LCP,
    ah,
    arp,
    dccp,
    dstopts,
    eth,
    frag6,
    hbh,
    icmp,
    ipv4,
    ipv6,
    loop,
    mpls,
    null,
    pppoe,
    routing,
    sctp,
    sll,
    sll2,
    tcp,
    udp,
    udplite,
    vlan,
)

LINKTYPES = sorted(SUPPORTED_LINKTYPES)
REASON_CLASS = {
    "ok": "ported", "non_ip_ethertype": "non_ip", "llc_frame": "non_ip",
    "non_ip_family": "non_ip", "mpls_non_ip": "non_ip", "ppp_non_ip": "non_ip",
    "fragment": "ip_other", "no_ports_protocol": "ip_other",
}
COUNTER_ROWS = N_PROTOS * N_PORTS


# --- seed frames -------------------------------------------------------------

def _tcp_with_options(options: bytes, payload: bytes, flags: int) -> bytes:
    header = bytearray(tcp(40000, 443, b"", flags=flags, seq=0x80000000, ack=77))
    header[12] = (5 + len(options) // 4) << 4
    return bytes(header) + options + payload


def _ip_packets() -> list[tuple[int, bytes]]:
    """(IP version, packet) pairs covering every network/transport rule."""
    v4 = [
        ipv4(proto=IPPROTO_TCP, payload=tcp(40000, 443, b"GET /")),
        ipv4(proto=IPPROTO_UDP, payload=udp(53, 53, b"q")),
        ipv4(proto=IPPROTO_SCTP, payload=sctp(2905, 2905)),
        ipv4(proto=IPPROTO_UDPLITE, payload=udplite(1, 2)),
        ipv4(proto=IPPROTO_DCCP, payload=dccp(5004, 5005)),
        ipv4(proto=IPPROTO_ICMP, payload=icmp(8, 0, b"ping")),
        ipv4(proto=IPPROTO_UDP, payload=udp(1, 2), options=b"\x94\x04\x00\x00" * 3),
        ipv4(proto=IPPROTO_TCP, payload=bytes(16), frag_offset=185),
        ipv4(proto=IPPROTO_UDP, payload=udp(3, 4, bytes(24)), mf=True),
        # TCP fields (quality-rules section 1): options, first fragments, the
        # IP length fields (TSO's 0, too short, too long), flags and windows.
        ipv4(proto=IPPROTO_TCP, payload=_tcp_with_options(bytes(12), b"data", 0x12)),
        ipv4(proto=IPPROTO_TCP, payload=tcp(80, 51000, bytes(30), flags=0x11), mf=True),
        ipv4(proto=IPPROTO_TCP, payload=tcp(1, 2, bytes(9), seq=2**32 - 1), total_length=0),
        ipv4(proto=IPPROTO_TCP, payload=tcp(1, 2, bytes(9), window=0), total_length=44),
        ipv4(proto=IPPROTO_TCP, payload=tcp(1, 2, b"x", flags=0x04), total_length=9000),
    ]
    v6 = [
        ipv6(nh=IPPROTO_UDP, payload=udp(5353, 53, b"q")),
        ipv6(nh=IPPROTO_HOPOPTS, payload=hbh(IPPROTO_ROUTING)
             + routing(IPPROTO_DSTOPTS, ["2001:db8::7"]) + dstopts(IPPROTO_TCP) + tcp(1, 2)),
        ipv6(nh=IPPROTO_FRAGMENT, payload=frag6(IPPROTO_UDP, offset=0, more=True) + udp(7, 8)),
        ipv6(nh=IPPROTO_FRAGMENT, payload=frag6(IPPROTO_UDP, offset=20) + bytes(16)),
        ipv6(nh=IPPROTO_AH, payload=ah(IPPROTO_TCP) + tcp(179, 40000)),
        ipv6(nh=58, payload=bytes(8)),
        ipv6(nh=IPPROTO_TCP, payload=_tcp_with_options(bytes(4), bytes(20), 0x10)),
        ipv6(nh=IPPROTO_FRAGMENT, payload=frag6(IPPROTO_TCP, more=True) + tcp(5, 6, bytes(8))),
        ipv6(nh=IPPROTO_FRAGMENT, payload=frag6(IPPROTO_TCP) + tcp(5, 6, bytes(8))),
        ipv6(nh=IPPROTO_TCP, payload=tcp(7, 8, bytes(12)), payload_length=0),
    ]
    return [(4, p) for p in v4] + [(6, p) for p in v6]


def _ether_payloads() -> list[tuple[int, bytes]]:
    """(EtherType, payload) pairs: IP directly and under VLAN, MPLS and PPPoE, plus ARP."""
    stacks = [(ETH_ARP, arp()), (ETH_PPPOE, pppoe(PPP_LCP, bytes(4))), (0x002E, bytes(46))]
    for version, packet in _ip_packets():
        et = ETH_IPV4 if version == 4 else ETH_IPV6
        stacks += [
            (et, packet),
            (ETH_VLAN, vlan(et, vid=10) + packet),
            (ETH_QINQ, vlan(ETH_VLAN_9100) + vlan(ETH_VLAN) + vlan(et) + packet),
            (ETH_MPLS if version == 4 else ETH_MPLS_MC, mpls([16, 17]) + packet),
            (ETH_PPPOE, pppoe(PPP_IPV4 if version == 4 else PPP_IPV6, packet)),
        ]
    return stacks


def _seed_frames() -> dict[int, list[bytes]]:
    """Valid frames for each supported link type, the starting points of mutation."""
    ip = _ip_packets()
    ether = _ether_payloads()
    seeds = {
        DLT_EN10MB: [eth(et=et) + payload for et, payload in ether],
        DLT_LINUX_SLL: [sll(et) + payload for et, payload in ether],
        DLT_LINUX_SLL2: [sll2(et) + payload for et, payload in ether],
        DLT_NULL: [null(AF_INET if v == 4 else family, big_endian) + p
                   for v, p in ip for family in (AF_INET6_LINUX, AF_INET6_DARWIN)
                   for big_endian in (False, True)],
        DLT_LOOP: [loop(AF_INET if v == 4 else family) + p
                   for v, p in ip for family in (AF_INET6_BSD, AF_INET6_FREEBSD)],
    }
    for linktype in LINKTYPES:
        seeds.setdefault(linktype, [p for _, p in ip])
    return seeds


SEEDS = _seed_frames()


# --- strategies --------------------------------------------------------------

class Batch(NamedTuple):
    """One parse_batch call's inputs, plus the bytes lying after each frame."""

    linktype: int
    frames: list[bytes]
    tails: list[bytes]
    gap: bytes
    orig_lens: list[int]
    ts_ns: list[int]
    iface: int
    as_numpy: bool

    def arrays(self, tails=None):
        """(data, offsets, caplens, orig_lens, ts_ns) as parse_batch takes them."""
        data, offsets = bytearray(self.gap), []
        for frame, tail in zip(self.frames, self.tails if tails is None else tails,
                               strict=True):
            offsets.append(len(data))
            data += frame + tail
        data = np.frombuffer(bytes(data), np.uint8) if self.as_numpy else bytes(data)
        return (data, np.array(offsets, np.uint32),
                np.array([len(f) for f in self.frames], np.uint32),
                np.array(self.orig_lens, np.uint32), np.array(self.ts_ns, np.uint64))


@st.composite
def mutated_frame(draw, linktype):
    """A seed frame with bytes flipped, overwritten, inserted, deleted or cut off.

    Returns ``(frame, tail)``: a frame cut off keeps its lost bytes as the
    tail that follows it in ``data``, past its captured length.
    """
    frame = bytearray(draw(st.sampled_from(SEEDS[linktype])))
    tail = b""
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "cut"]))
        at = draw(st.integers(0, len(frame)))
        if op == "insert":
            frame[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "cut":
            tail = bytes(frame[at:]) + tail
            del frame[at:]
        elif at < len(frame):
            if op == "flip":
                frame[at] ^= 1 << draw(st.integers(0, 7))
            elif op == "set":
                frame[at] = draw(st.sampled_from([0x00, 0x01, 0x04, 0x06, 0x2C, 0x3C, 0x45,
                                                  0x60, 0x81, 0xFF]))
            else:
                del frame[at:at + draw(st.integers(1, 8))]
    return bytes(frame), tail


@st.composite
def random_frame(draw):
    """Random bytes with a random tail."""
    return draw(st.binary(max_size=96)), draw(st.binary(max_size=8))


@st.composite
def batches(draw, linktypes=LINKTYPES):
    """A batch of 1-8 random or mutated frames of one link type."""
    linktype = draw(st.sampled_from(linktypes))
    pairs = draw(st.lists(st.one_of(mutated_frame(linktype), random_frame()),
                          min_size=1, max_size=8))
    frames = [f for f, _ in pairs]
    orig_lens = [draw(st.one_of(st.just(len(f)), st.integers(0, 2**32 - 1),
                                st.integers(0, len(f)))) for f in frames]
    return Batch(linktype, frames, [t for _, t in pairs], draw(st.binary(max_size=5)),
                 orig_lens, draw(st.lists(st.integers(0, 2**64 - 2), min_size=len(frames),
                                          max_size=len(frames))),
                 draw(st.integers(0, 0xFFFF)), draw(st.booleans()))


# --- helpers -----------------------------------------------------------------

def _run(backend, batch: Batch, tails=None) -> np.ndarray:
    """Parse ``batch`` into a fresh array pre-filled with junk (one spare record)."""
    n = len(batch.frames)
    out = np.frombuffer(b"\xa5" * ((n + 1) * RECORD_DTYPE.itemsize), RECORD_DTYPE).copy()
    data, offsets, caplens, orig_lens, ts_ns = batch.arrays(tails)
    backend.parse_batch(batch.linktype, data, offsets, caplens, orig_lens, ts_ns,
                        batch.iface, out)
    return out


def _field_text(record, name):
    value = record[name]
    return bytes(value).hex() if np.ndim(value) else int(value)


def assert_same_records(native_out, reference_out, batch: Batch):
    """Fail with frame hex, field, native and reference values for each difference."""
    if native_out.tobytes() == reference_out.tobytes():
        return
    lines = []
    for i in range(len(native_out)):
        if native_out[i].tobytes() == reference_out[i].tobytes():
            continue
        frame = batch.frames[i] if i < len(batch.frames) else b""
        for name in RECORD_DTYPE.names:
            got, want = _field_text(native_out[i], name), _field_text(reference_out[i], name)
            if got != want:
                lines.append(f"linktype {batch.linktype} record {i} frame {frame.hex()} "
                             f"(orig_len {batch.orig_lens[i] if i < len(batch.frames) else '-'}):"
                             f" {name} native={got} reference={want}")
    raise AssertionError("native and reference records differ:\n" + "\n".join(lines))


def assert_records_valid(out, batch: Batch):
    """Per-record invariants that hold for any input."""
    for i, frame in enumerate(batch.frames):
        record = out[i]
        pkt_class, reason = int(record["pkt_class"]), int(record["reason"])
        assert 0 <= pkt_class < len(CLASS_NAMES)
        assert 0 <= reason < len(REASON_NAMES)
        assert REASON_CLASS.get(REASON_NAMES[reason], "truncated") == CLASS_NAMES[pkt_class]
        assert int(record["wire_len"]) == max(batch.orig_lens[i], len(frame))
        assert int(record["ts_ns"]) == batch.ts_ns[i]
        assert int(record["iface"]) == batch.iface
        assert bytes(record["pad"]) == bytes(3)
        if CLASS_NAMES[pkt_class] == "ported":
            assert int(record["proto"]) in {number for number, _ in PORT_PROTOCOLS}
        else:
            assert int(record["src_port"]) == int(record["dst_port"]) == 0
        tcp_fields = [int(record[f"tcp_{name}"])
                      for name in ("seq", "ack", "payload", "win", "flags", "info")]
        if CLASS_NAMES[pkt_class] != "ported" or int(record["proto"]) != IPPROTO_TCP:
            assert tcp_fields == [0] * 6, "TCP fields on a record that is not ported TCP"
        elif not tcp_fields[-1] & TCPI_HEADER:
            assert tcp_fields[:5] == [0] * 5, "TCP fields without a whole TCP header"
        if tcp_fields[-1] & TCPI_NEGATIVE_PAYLOAD:
            assert tcp_fields[2] == 0


def _tables():
    return (np.zeros((COUNTER_ROWS, 4), np.uint64), np.zeros((4, 2), np.uint64),
            np.zeros(COUNTER_ROWS, np.uint32), np.zeros(4, np.uint64))


def assert_totals_add_up(backend, out, n):
    """Reducing the records: classes add up to the totals, ports to the ported class."""
    records = out[:n]
    counters, classes, touched, state = _tables()
    assert backend.reduce_records(records, 0, n, 2**64 - 1, counters, classes, touched,
                                  state) == n, "a record at or after the end of time"
    total_bytes = sum(int(w) for w in records["wire_len"])
    assert int(classes[:, 0].sum()) == n
    assert int(classes[:, 1].sum()) == total_bytes
    ported = records[records["pkt_class"] == 0]
    ported_bytes = sum(int(w) for w in ported["wire_len"])
    used = touched[:int(state[0])]
    assert len(set(used.tolist())) == len(used)
    assert int(np.count_nonzero(counters.any(axis=1))) == len(used)
    for column, expected in enumerate([len(ported), ported_bytes] * 2):
        assert int(counters[used, column].sum()) == expected


# --- properties --------------------------------------------------------------

@given(batch=batches())
def test_native_matches_reference(native, reference, batch):
    assert_same_records(_run(native, batch), _run(reference, batch), batch)


@given(batch=batches())
def test_records_valid_and_totals_add_up(backend, batch):
    out = _run(backend, batch)
    assert_records_valid(out, batch)
    assert out[-1].tobytes() == b"\xa5" * RECORD_DTYPE.itemsize
    assert_totals_add_up(backend, out, len(batch.frames))


@given(batch=batches())
def test_bytes_past_caplen_are_never_read(backend, batch):
    other_tails = [bytes(b ^ 0xFF for b in tail) for tail in batch.tails]
    assert _run(backend, batch).tobytes() == _run(backend, batch, other_tails).tobytes()


# --- reduce: native vs reference ---------------------------------------------

@st.composite
def reduce_inputs(draw):
    """Random parser-like records, a range, a window end and pre-filled tables."""
    protos = [number for number, _ in PORT_PROTOCOLS]
    ports = st.one_of(st.sampled_from([0, 53, 80, 65535]), st.integers(0, 65535))
    n = draw(st.integers(0, 40))
    records = np.zeros(n, RECORD_DTYPE)
    for i in range(n):
        pkt_class = draw(st.integers(0, 3))
        records[i]["ts_ns"] = draw(st.integers(0, 120))
        records[i]["wire_len"] = draw(st.integers(0, 2**32 - 1))
        records[i]["pkt_class"] = pkt_class
        if pkt_class == 0:
            records[i]["proto"] = draw(st.sampled_from(protos))
            records[i]["src_port"] = draw(ports)
            records[i]["dst_port"] = draw(ports)
        else:
            records[i]["proto"] = draw(st.integers(0, 255))
    start = draw(st.integers(0, n))
    stop = draw(st.integers(start, n))
    counters, classes, touched, state = _tables()
    for row in draw(st.lists(st.integers(0, COUNTER_ROWS - 1), max_size=5, unique=True)):
        counters[row] = draw(st.sampled_from([(1, 60, 0, 0), (0, 0, 2, 3000), (4, 4, 4, 4)]))
        touched[int(state[0])] = row
        state[0] += 1
    classes[:] = draw(st.integers(0, 1000))
    state[2] = draw(st.integers(0, 120))     # window start: earlier records are late
    state[3] = draw(st.integers(0, 5))
    return records, start, stop, draw(st.integers(0, 130)), (counters, classes, touched,
                                                             state)


@given(inputs=reduce_inputs())
def test_reduce_native_matches_reference(native, reference, inputs):
    records, start, stop, win_end_ns, tables = inputs
    results = []
    for backend in (native, reference):
        counters, classes, touched, state = (t.copy() for t in tables)
        stopped = backend.reduce_records(records, start, stop, win_end_ns, counters,
                                         classes, touched, state)
        results.append((stopped, counters, classes, touched[:int(state[0])],
                        (int(state[0]), int(state[3]))))
    (n_stop, n_counters, n_classes, n_touched, n_state), (r_stop, r_counters, r_classes,
                                                          r_touched, r_state) = results
    assert n_stop == r_stop
    assert n_state == r_state
    assert n_touched.tolist() == r_touched.tolist()
    assert np.array_equal(n_classes, r_classes)
    assert np.array_equal(n_counters, r_counters)


# --- battery of nasty frames -------------------------------------------------

def _nasty_frames():
    """(id, linktype, frame, expected class, expected reason)."""
    cases = []
    for linktype in LINKTYPES:
        is_ip = linktype in (12, 14, 101, 228, 229)
        cut = "truncated_ip" if is_ip else "truncated_link"
        cases += [(f"empty-{linktype}", linktype, b"", "truncated", cut),
                  (f"one-byte-{linktype}", linktype, b"\x45", "truncated", cut)]
    many_tags = eth(et=ETH_VLAN) + vlan(ETH_VLAN) * 65535
    cases += [
        ("65535-vlan-tags-unterminated", DLT_EN10MB, many_tags, "truncated", "truncated_link"),
        ("65535-vlan-tags-cut-at-64k", DLT_EN10MB, many_tags[:65535], "truncated",
         "truncated_link"),
        ("65535-vlan-tags-then-udp", DLT_EN10MB,
         many_tags[:-4] + vlan(ETH_IPV4) + ipv4(payload=udp(1, 2)), "ported", "ok"),
        ("sll2-16k-qinq-tags-then-pppoe-lcp", DLT_LINUX_SLL2,
         sll2(ETH_QINQ) + vlan(ETH_QINQ) * 16383 + vlan(ETH_PPPOE) + pppoe(PPP_LCP),
         "non_ip", "ppp_non_ip"),
        ("mpls-16k-labels-no-bottom", DLT_EN10MB,
         eth(et=ETH_MPLS) + mpls(range(16384), bottom=False), "truncated", "truncated_link"),
        ("mpls-16k-labels-then-ipv6-udp", DLT_EN10MB,
         eth(et=ETH_MPLS) + mpls(range(16384)) + ipv6(payload=udp(1, 2)), "ported", "ok"),
        ("ipv6-hbh-chain-to-the-end", DLT_RAW,
         ipv6(nh=IPPROTO_HOPOPTS, payload=hbh(IPPROTO_HOPOPTS) * 8000), "truncated",
         "truncated_ext_header"),
        ("ipv6-max-hbh-chain-cut", DLT_RAW,
         ipv6(nh=IPPROTO_HOPOPTS, payload=hbh(IPPROTO_HOPOPTS, length=2048) * 32)[:65535],
         "truncated", "truncated_ext_header"),
        ("ipv6-ah-zero-length-chain-then-tcp", DLT_RAW,
         ipv6(nh=IPPROTO_AH, payload=ah(IPPROTO_AH, icv=b"") * 4000
              + ah(IPPROTO_TCP, icv=b"") + tcp(1, 2)), "ported", "ok"),
        ("ipv6-fragment-chain-offset-zero", DLT_RAW,
         ipv6(nh=IPPROTO_FRAGMENT, payload=frag6(IPPROTO_FRAGMENT) * 1000 + frag6(IPPROTO_UDP)),
         "truncated", "truncated_ports"),
        ("ipv4-ihl15-exactly-60-bytes", DLT_RAW,
         ipv4(proto=IPPROTO_UDP, options=bytes(40)), "truncated", "truncated_ports"),
        ("ipv4-ihl15-59-bytes", DLT_RAW,
         ipv4(proto=IPPROTO_UDP, options=bytes(40))[:59], "truncated", "truncated_ip_options"),
        ("null-inet-header-only", DLT_NULL, null(AF_INET), "truncated", "truncated_ip"),
        ("loop-inet6-header-only", DLT_LOOP, loop(AF_INET6_LINUX), "truncated", "truncated_ip"),
        ("pppoe-ipv6-header-only", DLT_EN10MB, eth(et=ETH_PPPOE) + pppoe(PPP_IPV6),
         "truncated", "truncated_ip"),
        ("eth-1514-zeros", DLT_EN10MB, bytes(1514), "non_ip", "llc_frame"),
        ("eth-1514-ff", DLT_EN10MB, b"\xff" * 1514, "non_ip", "non_ip_ethertype"),
        ("raw-1514-ff", DLT_RAW, b"\xff" * 1514, "truncated", "bad_ip_version"),
        ("sll-1514-zeros", DLT_LINUX_SLL, bytes(1514), "non_ip", "llc_frame"),
        ("null-1514-ff", DLT_NULL, b"\xff" * 1514, "non_ip", "non_ip_family"),
        ("raw-ipv6-routing-65495-ff", DLT_RAW,
         ipv6(nh=IPPROTO_ROUTING, payload=b"\xff" * (65535 - 40)), "ip_other",
         "no_ports_protocol"),
        ("raw-ipv6-hbh-65495-zeros", DLT_RAW,
         ipv6(nh=IPPROTO_HOPOPTS, payload=bytes(65535 - 40)), "truncated",
         "truncated_ext_header"),
    ]
    return cases


NASTY = _nasty_frames()


def _single(frame, linktype, tail=b""):
    return Batch(linktype, [frame], [tail], b"", [len(frame)], [7], 1, False)


@pytest.mark.parametrize("linktype, frame, pkt_class, reason",
                         [case[1:] for case in NASTY], ids=[case[0] for case in NASTY])
def test_nasty_frame(backend, linktype, frame, pkt_class, reason):
    batch = _single(frame, linktype, tail=b"\x45\x00" * 40)
    out = _run(backend, batch)
    assert (CLASS_NAMES[out[0]["pkt_class"]], REASON_NAMES[out[0]["reason"]]) == (
        pkt_class, reason)
    assert_records_valid(out, batch)


@pytest.mark.parametrize("linktype, frame", [case[1:3] for case in NASTY],
                         ids=[case[0] for case in NASTY])
def test_nasty_frame_native_matches_reference(native, reference, linktype, frame):
    batch = _single(frame, linktype)
    assert_same_records(_run(native, batch), _run(reference, batch), batch)


def test_nasty_frames_in_one_batch_add_up(backend):
    for linktype in LINKTYPES:
        frames = [frame for _, lt, frame, _, _ in NASTY if lt == linktype]
        batch = Batch(linktype, frames, [b""] * len(frames), b"\x00", [0] * len(frames),
                      list(range(len(frames))), 2, True)
        out = _run(backend, batch)
        assert_records_valid(out, batch)
        assert_totals_add_up(backend, out, len(frames))


# --- argument checks ---------------------------------------------------------

def _arguments(n=2, size=64):
    """Valid parse_batch arguments for n frames of ``size`` bytes in one buffer."""
    return {
        "linktype": DLT_RAW,
        "data": ipv4(payload=udp(1, 2, bytes(size - 28))) * n,
        "offsets": np.arange(n, dtype=np.uint32) * size,
        "caplens": np.full(n, size, np.uint32),
        "orig_lens": np.full(n, size, np.uint32),
        "ts_ns": np.zeros(n, np.uint64),
        "iface": 0,
        "out": np.zeros(n, RECORD_DTYPE),
    }


def _call(backend, args):
    backend.parse_batch(args["linktype"], args["data"], args["offsets"], args["caplens"],
                        args["orig_lens"], args["ts_ns"], args["iface"], args["out"])


def test_valid_arguments_are_accepted(backend):
    args = _arguments()
    _call(backend, args)
    assert args["out"]["pkt_class"].tolist() == [0, 0]


@pytest.mark.parametrize("name, length", [("caplens", 1), ("orig_lens", 3), ("ts_ns", 0),
                                          ("caplens", 0)])
def test_mismatched_lengths_raise(backend, name, length):
    args = _arguments()
    args[name] = np.resize(args[name], length)
    with pytest.raises(ValueError, match=name):
        _call(backend, args)
    assert not args["out"].view(np.uint8).any()


@pytest.mark.parametrize("offset, caplen", [(65, 64), (128, 1), (0, 129), (0xFFFFFFF0, 0x20),
                                            (0xFFFFFFFF, 0xFFFFFFFF)])
def test_frame_past_end_of_data_raises(backend, offset, caplen):
    args = _arguments()
    args["offsets"][1], args["caplens"][1] = offset, caplen
    with pytest.raises(ValueError, match="data"):
        _call(backend, args)
    assert not args["out"].view(np.uint8).any()


def test_frame_ending_at_end_of_data_is_accepted(backend):
    args = _arguments()
    args["offsets"][1], args["caplens"][1] = 128, 0
    _call(backend, args)
    assert REASON_NAMES[args["out"][1]["reason"]] == "truncated_ip"


@pytest.mark.parametrize("room", [0, 1])
def test_out_too_small_raises(backend, room):
    args = _arguments()
    args["out"] = np.zeros(room, RECORD_DTYPE)
    with pytest.raises(ValueError, match="out"):
        _call(backend, args)


@pytest.mark.parametrize("iface", [-1, 0x10000])
def test_iface_out_of_range_raises(backend, iface):
    args = _arguments()
    args["iface"] = iface
    with pytest.raises((ValueError, OverflowError)):
        _call(backend, args)


@pytest.mark.parametrize("pkt_class, proto", [(4, 6), (255, 0), (0, 1), (0, 0)])
def test_reduce_rejects_records_no_parser_writes(backend, pkt_class, proto):
    records = np.zeros(3, RECORD_DTYPE)
    records["pkt_class"] = [2, pkt_class, 2]
    records["proto"][1] = proto
    records["wire_len"] = 100
    counters, classes, touched, state = _tables()
    with pytest.raises(ValueError, match="record 1"):
        backend.reduce_records(records, 0, 3, 10, counters, classes, touched, state)
    assert classes[2].tolist() == [1, 100]
    assert int(classes.sum()) == 101


@pytest.mark.parametrize("start, stop", [(-1, 2), (0, 4), (2, 1)])
def test_reduce_rejects_range_outside_records(backend, start, stop):
    records = np.zeros(3, RECORD_DTYPE)
    with pytest.raises(ValueError):
        backend.reduce_records(records, start, stop, 10, *_tables())


@pytest.mark.parametrize("name, shape", [("counters", (COUNTER_ROWS - 1, 4)),
                                         ("classes", (3, 2)), ("touched", (10,))])
def test_reduce_rejects_tables_of_wrong_shape(backend, name, shape):
    tables = dict(zip(("counters", "classes", "touched", "state"), _tables(), strict=True))
    tables[name] = np.zeros(shape, tables[name].dtype)
    with pytest.raises(ValueError, match=name):
        backend.reduce_records(np.zeros(1, RECORD_DTYPE), 0, 1, 10, *tables.values())
