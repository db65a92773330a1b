"""Pure-Python parser and reducer: the test oracle for ``pt_engine._core``.

Same signatures and byte-identical results as the native kernels, written for
obviousness rather than speed: every frame is decoded by plain slicing of a
``bytes`` object cut to its captured length, so nothing past the snap length
can ever be read. Used by the test suite and by ``PT_ENGINE_PUREPYTHON=1``.

The decoding rules are those of ``shared/spec/counting-rules.md``; the class
and reason numbers are those of ``ext/records.pxd`` (via ``pt_engine.records``).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .records import (
    UINT64_MAX,
    N_PORTS,
    N_PROTOS,
    PROTO_INDEX,
    PROTO_NAMES,
    REASON_NAMES,
    RECORD_DTYPE,
    SUPPORTED_LINKTYPES,
    TCPI_FRAGMENT,
    TCPI_HEADER,
    TCPI_IPV6,
    TCPI_NEGATIVE_PAYLOAD,
    PacketClass,
    linktype_name,
)

PORTED = int(PacketClass.PORTED)
IP_OTHER = int(PacketClass.IP_OTHER)
NON_IP = int(PacketClass.NON_IP)
TRUNCATED = int(PacketClass.TRUNCATED)

REASON_OK = REASON_NAMES.index("ok")
REASON_NON_IP_ETHERTYPE = REASON_NAMES.index("non_ip_ethertype")
REASON_LLC_FRAME = REASON_NAMES.index("llc_frame")
REASON_NON_IP_FAMILY = REASON_NAMES.index("non_ip_family")
REASON_MPLS_NON_IP = REASON_NAMES.index("mpls_non_ip")
REASON_PPP_NON_IP = REASON_NAMES.index("ppp_non_ip")
REASON_FRAGMENT = REASON_NAMES.index("fragment")
REASON_NO_PORTS_PROTO = REASON_NAMES.index("no_ports_protocol")
REASON_TRUNCATED_LINK = REASON_NAMES.index("truncated_link")
REASON_BAD_IP_VERSION = REASON_NAMES.index("bad_ip_version")
REASON_TRUNCATED_IP = REASON_NAMES.index("truncated_ip")
REASON_BAD_IHL = REASON_NAMES.index("bad_ihl")
REASON_TRUNCATED_IP_OPTIONS = REASON_NAMES.index("truncated_ip_options")
REASON_TRUNCATED_EXT_HEADER = REASON_NAMES.index("truncated_ext_header")
REASON_TRUNCATED_PORTS = REASON_NAMES.index("truncated_ports")

ZERO_ADDR = bytes(16)
_V4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"

# Link-layer protocol numbers.
_VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
_ETH_IPV4 = 0x0800
_ETH_IPV6 = 0x86DD
_ETH_MPLS = (0x8847, 0x8848)
_ETH_PPPOE_SESSION = 0x8864
_ETH_MIN_ETHERTYPE = 0x0600  # below: an 802.3 length field (LLC frame)
_PPP_IPV4 = 0x0021
_PPP_IPV6 = 0x0057
_AF_INET = 2
_AF_INET6 = (10, 24, 28, 30)  # Linux, NetBSD/OpenBSD, FreeBSD, macOS
_AF_IP = (_AF_INET, *_AF_INET6)

# IPv6 extension headers walked (counting-rules section 2).
_IP6_HOPOPTS, _IP6_ROUTING, _IP6_FRAGMENT, _IP6_AH, _IP6_DSTOPTS = 0, 43, 44, 51, 60
_IP6_EXT_HEADERS = (_IP6_HOPOPTS, _IP6_ROUTING, _IP6_FRAGMENT, _IP6_AH, _IP6_DSTOPTS)

_LINK_NULL, _LINK_EN10MB, _LINK_LOOP = 0, 1, 108
_LINK_LINUX_SLL, _LINK_LINUX_SLL2 = 113, 276
_LINK_IP = (12, 14, 101, 228, 229)  # RAW, IPV4, IPV6: start at the IP header

_COUNTER_ROWS = N_PROTOS * N_PORTS
_IPPROTO_TCP = 6


class ParsedFrame(NamedTuple):
    """The per-frame fields of a record that the parser decides."""

    pkt_class: int
    reason: int
    proto: int = 0
    src_port: int = 0
    dst_port: int = 0
    src_addr: bytes = ZERO_ADDR
    dst_addr: bytes = ZERO_ADDR
    # Ported TCP only (records.pxd; docs/quality-rules.md section 1).
    tcp_seq: int = 0
    tcp_ack: int = 0
    tcp_payload: int = 0
    tcp_win: int = 0
    tcp_flags: int = 0
    tcp_info: int = 0


def _be16(frame: bytes, at: int) -> int:
    return (frame[at] << 8) | frame[at + 1]


def check_linktype(linktype: int) -> None:
    """Refuse a link type the parser does not decode.

    Raises:
        ValueError: ``linktype`` is not in ``engine.records.SUPPORTED_LINKTYPES``;
            the message names its number and libpcap name.
    """
    if linktype not in SUPPORTED_LINKTYPES:
        supported = ", ".join(f"{n} ({name})" for n, name in SUPPORTED_LINKTYPES.items())
        raise ValueError(
            f"unsupported link type {linktype} ({linktype_name(linktype)}); "
            f"supported: {supported}")


def parse_frame(linktype: int, frame, wire_len: int | None = None) -> ParsedFrame:
    """Decode one captured frame (exactly its ``caplen`` bytes) whose wire
    length is ``wire_len`` (default: the captured length; it is never less).

    Never raises for packet content: a malformed or cut frame gets a class and
    a reason like any other.

    Raises:
        ValueError: unsupported ``linktype``.
    """
    check_linktype(linktype)
    frame = bytes(frame)
    size = len(frame)
    wire = size if wire_len is None else max(wire_len, size)
    if linktype == _LINK_EN10MB:
        if size < 14:
            return ParsedFrame(TRUNCATED, REASON_TRUNCATED_LINK)
        return _ethertype(frame, _be16(frame, 12), 14, wire)
    if linktype == _LINK_LINUX_SLL:
        if size < 16:
            return ParsedFrame(TRUNCATED, REASON_TRUNCATED_LINK)
        return _ethertype(frame, _be16(frame, 14), 16, wire)
    if linktype == _LINK_LINUX_SLL2:
        if size < 20:
            return ParsedFrame(TRUNCATED, REASON_TRUNCATED_LINK)
        return _ethertype(frame, _be16(frame, 0), 20, wire)
    if linktype in _LINK_IP:
        return _ip_version(frame, 0, wire)
    # NULL / LOOP: a 4-byte address family. NULL is in the capturing host's
    # byte order, which we do not know, so either order is accepted
    # (counting-rules section 5); LOOP is always network order.
    if size < 4:
        return ParsedFrame(TRUNCATED, REASON_TRUNCATED_LINK)
    little = int.from_bytes(frame[:4], "little")
    big = int.from_bytes(frame[:4], "big")
    if linktype == _LINK_NULL and little in _AF_IP:
        family = little
    elif big in _AF_IP:
        family = big
    else:
        return ParsedFrame(NON_IP, REASON_NON_IP_FAMILY)
    return _ipv4(frame, 4, wire) if family == _AF_INET else _ipv6(frame, 4, wire)


def _ethertype(frame: bytes, ethertype: int, cur: int, wire: int) -> ParsedFrame:
    """Dispatch on an EtherType whose payload starts at ``cur``."""
    size = len(frame)
    while ethertype in _VLAN_TPIDS:
        if cur + 4 > size:
            return ParsedFrame(TRUNCATED, REASON_TRUNCATED_LINK)
        ethertype = _be16(frame, cur + 2)
        cur += 4
    if ethertype < _ETH_MIN_ETHERTYPE:
        return ParsedFrame(NON_IP, REASON_LLC_FRAME)
    if ethertype == _ETH_IPV4:
        return _ipv4(frame, cur, wire)
    if ethertype == _ETH_IPV6:
        return _ipv6(frame, cur, wire)
    if ethertype in _ETH_MPLS:
        return _mpls(frame, cur, wire)
    if ethertype == _ETH_PPPOE_SESSION:
        return _pppoe(frame, cur, wire)
    return ParsedFrame(NON_IP, REASON_NON_IP_ETHERTYPE)


def _mpls(frame: bytes, cur: int, wire: int) -> ParsedFrame:
    """Skip an MPLS label stack (RFC 3032), then guess IP by the version nibble."""
    size = len(frame)
    while True:
        if cur + 4 > size:
            return ParsedFrame(TRUNCATED, REASON_TRUNCATED_LINK)
        bottom_of_stack = frame[cur + 2] & 1
        cur += 4
        if bottom_of_stack:
            break
    if cur + 1 > size:
        return ParsedFrame(TRUNCATED, REASON_TRUNCATED_LINK)
    version = frame[cur] >> 4
    if version == 4:
        return _ipv4(frame, cur, wire)
    if version == 6:
        return _ipv6(frame, cur, wire)
    return ParsedFrame(NON_IP, REASON_MPLS_NON_IP)


def _pppoe(frame: bytes, cur: int, wire: int) -> ParsedFrame:
    """PPPoE session header (RFC 2516, 6 bytes) plus the 2-byte PPP protocol."""
    if cur + 8 > len(frame):
        return ParsedFrame(TRUNCATED, REASON_TRUNCATED_LINK)
    ppp_proto = _be16(frame, cur + 6)
    if ppp_proto == _PPP_IPV4:
        return _ipv4(frame, cur + 8, wire)
    if ppp_proto == _PPP_IPV6:
        return _ipv6(frame, cur + 8, wire)
    return ParsedFrame(NON_IP, REASON_PPP_NON_IP)


def _ip_version(frame: bytes, cur: int, wire: int) -> ParsedFrame:
    """RAW / IPV4 / IPV6 link types: the version nibble decides."""
    if cur + 1 > len(frame):
        return ParsedFrame(TRUNCATED, REASON_TRUNCATED_IP)
    version = frame[cur] >> 4
    if version == 4:
        return _ipv4(frame, cur, wire)
    if version == 6:
        return _ipv6(frame, cur, wire)
    return ParsedFrame(TRUNCATED, REASON_BAD_IP_VERSION)


def _ipv4(frame: bytes, cur: int, wire: int) -> ParsedFrame:
    """IPv4 header at ``cur`` (RFC 791); the total-length field serves only
    the TCP payload length."""
    size = len(frame)
    if cur + 20 > size:
        return ParsedFrame(TRUNCATED, REASON_TRUNCATED_IP)
    if frame[cur] >> 4 != 4:
        return ParsedFrame(TRUNCATED, REASON_BAD_IP_VERSION)
    proto = frame[cur + 9]
    src = _V4_MAPPED_PREFIX + frame[cur + 12:cur + 16]
    dst = _V4_MAPPED_PREFIX + frame[cur + 16:cur + 20]
    header_len = (frame[cur] & 0x0F) * 4
    if header_len < 20:
        return ParsedFrame(TRUNCATED, REASON_BAD_IHL, proto, 0, 0, src, dst)
    if cur + header_len > size:
        return ParsedFrame(TRUNCATED, REASON_TRUNCATED_IP_OPTIONS, proto, 0, 0, src, dst)
    if _be16(frame, cur + 6) & 0x1FFF:
        return ParsedFrame(IP_OTHER, REASON_FRAGMENT, proto, 0, 0, src, dst)
    more_fragments = _be16(frame, cur + 6) & 0x2000
    tcp = _TcpContext(cur, _be16(frame, cur + 2), wire, TCPI_FRAGMENT if more_fragments else 0)
    return _transport(frame, cur + header_len, proto, src, dst, tcp)


def _ipv6(frame: bytes, cur: int, wire: int) -> ParsedFrame:
    """IPv6 header at ``cur`` (RFC 8200) and its extension-header chain."""
    size = len(frame)
    if cur + 40 > size:
        return ParsedFrame(TRUNCATED, REASON_TRUNCATED_IP)
    if frame[cur] >> 4 != 6:
        return ParsedFrame(TRUNCATED, REASON_BAD_IP_VERSION)
    src = frame[cur + 8:cur + 24]
    dst = frame[cur + 24:cur + 40]
    next_header = frame[cur + 6]
    payload_length = _be16(frame, cur + 4)
    ip_at, info = cur, TCPI_IPV6
    cur += 40
    while next_header in _IP6_EXT_HEADERS:
        if cur + 2 > size:
            return ParsedFrame(TRUNCATED, REASON_TRUNCATED_EXT_HEADER, next_header, 0, 0,
                               src, dst)
        if next_header == _IP6_FRAGMENT:
            header_len = 8
        elif next_header == _IP6_AH:
            header_len = (frame[cur + 1] + 2) * 4  # RFC 4302: 4-byte units, minus 2
        else:
            header_len = (frame[cur + 1] + 1) * 8  # 8-byte units, not counting the first
        if cur + header_len > size:
            return ParsedFrame(TRUNCATED, REASON_TRUNCATED_EXT_HEADER, next_header, 0, 0,
                               src, dst)
        if next_header == _IP6_FRAGMENT and _be16(frame, cur + 2) >> 3:
            return ParsedFrame(IP_OTHER, REASON_FRAGMENT, frame[cur], 0, 0, src, dst)
        if next_header == _IP6_FRAGMENT and frame[cur + 3] & 1:
            info |= TCPI_FRAGMENT       # the first fragment of several
        next_header = frame[cur]
        cur += header_len
    datagram = 40 + payload_length if payload_length else 0
    return _transport(frame, cur, next_header, src, dst,
                      _TcpContext(ip_at, datagram, wire, info))


class _TcpContext(NamedTuple):
    """What the IP layer tells the TCP fields (docs/quality-rules.md section 1)."""

    ip_at: int          # offset of the outermost IP header
    datagram: int       # its datagram length: IPv4 total length, 40 + IPv6 payload length; 0 if 0
    wire: int           # the frame's wire length
    info: int           # TCPI_IPV6, TCPI_FRAGMENT


def _transport(frame: bytes, cur: int, proto: int, src: bytes, dst: bytes,
               tcp: _TcpContext) -> ParsedFrame:
    """Ports of a port-bearing protocol (counting-rules section 3), and TCP's fields."""
    if proto not in PROTO_INDEX:
        return ParsedFrame(IP_OTHER, REASON_NO_PORTS_PROTO, proto, 0, 0, src, dst)
    if cur + 4 > len(frame):
        return ParsedFrame(TRUNCATED, REASON_TRUNCATED_PORTS, proto, 0, 0, src, dst)
    parsed = ParsedFrame(PORTED, REASON_OK, proto, _be16(frame, cur), _be16(frame, cur + 2),
                         src, dst)
    if proto != _IPPROTO_TCP:
        return parsed
    header = frame[cur:cur + 20]
    data_offset = (header[12] >> 4) * 4 if len(header) == 20 else 0
    if data_offset < 20 or cur + data_offset > len(frame):
        return parsed._replace(tcp_info=tcp.info)     # the TCP header is not all there
    datagram = tcp.datagram
    if datagram == 0 or tcp.ip_at + datagram > tcp.wire:
        datagram = tcp.wire - tcp.ip_at             # TSO / jumbogram / longer than the frame
    payload = datagram - (cur - tcp.ip_at) - data_offset
    info = tcp.info | TCPI_HEADER | (TCPI_NEGATIVE_PAYLOAD if payload < 0 else 0)
    return parsed._replace(
        tcp_seq=int.from_bytes(header[4:8], "big"), tcp_ack=int.from_bytes(header[8:12], "big"),
        tcp_payload=max(payload, 0), tcp_win=_be16(header, 14), tcp_flags=header[13],
        tcp_info=info)


def parse_batch(linktype: int, data, offsets, caplens, orig_lens, ts_ns, iface: int,
                out) -> None:
    """Parse ``n = len(offsets)`` frames into ``out[0:n]``.

    Frame ``i`` is ``data[offsets[i]:offsets[i] + caplens[i]]``. Each record
    gets ``ts_ns[i]``, ``iface`` and ``wire_len = max(orig_lens[i], caplens[i])``
    plus the fields of :func:`parse_frame`; all other bytes are zero. Records
    past ``n`` are left alone. All arguments are checked before anything is
    written.

    Raises:
        ValueError: unsupported ``linktype``; ``caplens``, ``orig_lens`` or
            ``ts_ns`` not as long as ``offsets``; ``out`` shorter than ``n``;
            ``data`` not a 1-D byte buffer or a frame reaching past its end;
            ``iface`` outside 0..65535.
        TypeError: ``out`` is not an array of ``RECORD_DTYPE``.
    """
    check_linktype(linktype)
    count = len(offsets)
    for name, array in (("caplens", caplens), ("orig_lens", orig_lens), ("ts_ns", ts_ns)):
        if len(array) != count:
            raise ValueError(f"{name} has {len(array)} entries, offsets has {count}")
    if getattr(out, "dtype", None) != RECORD_DTYPE:
        raise TypeError(f"out must be an array of RECORD_DTYPE, not {getattr(out, 'dtype', out)!r}")
    if len(out) < count:
        raise ValueError(f"out has room for {len(out)} records, {count} frames given")
    if not 0 <= iface <= 0xFFFF:
        raise ValueError(f"iface {iface} does not fit in 16 bits")
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        raise ValueError(f"data must be a 1-D byte buffer, not ndim={view.ndim} "
                         f"itemsize={view.itemsize}")
    buf = view.tobytes()
    for i in range(count):
        end = int(offsets[i]) + int(caplens[i])
        if end > len(buf):
            raise ValueError(
                f"frame {i} (offset {int(offsets[i])}, caplen {int(caplens[i])}) ends at "
                f"{end}, past the end of data ({len(buf)} bytes)")
    rows = []
    for i in range(count):
        start, caplen = int(offsets[i]), int(caplens[i])
        wire_len = max(int(orig_lens[i]), caplen)
        parsed = parse_frame(linktype, buf[start:start + caplen], wire_len)
        rows.append((
            int(ts_ns[i]), wire_len, parsed.src_port, parsed.dst_port,
            parsed.proto, parsed.pkt_class, iface, parsed.reason, (0, 0, 0),
            tuple(parsed.src_addr), tuple(parsed.dst_addr), parsed.tcp_seq, parsed.tcp_ack,
            parsed.tcp_payload, parsed.tcp_win, parsed.tcp_flags, parsed.tcp_info))
    if count:
        out[:count] = np.array(rows, dtype=RECORD_DTYPE)


def reduce_records(records, start: int, stop: int, win_end_ns: int, counters, classes,
                   touched, state) -> int:
    """Add ``records[start:stop]`` that fall before ``win_end_ns`` to the counters.

    Consumes records in order while ``ts_ns < win_end_ns``; a window that ends
    at ``UINT64_MAX`` (the last one time can have) also takes ``ts_ns == UINT64_MAX``. Each one adds 1 and
    its ``wire_len`` to ``classes[pkt_class]``; a ported one also adds to the
    ``in`` columns of the row ``(proto, dst_port)`` and the ``out`` columns of
    ``(proto, src_port)`` (counting-rules section 4). A row that was all zero
    before the update (no packets either way) is appended to ``touched``, ``state[0]`` counting them, so
    a row shared by both ports (equal ports) is appended once.

    Args:
        records: array of ``RECORD_DTYPE``.
        counters: ``uint64[N_PROTOS * 65536, 4]``, columns ``COUNTER_COLUMNS``;
            row ``PROTO_INDEX[proto] * 65536 + port``.
        classes: ``uint64[4, 2]``: packets, bytes per class.
        touched: ``uint32[N_PROTOS * 65536]`` row numbers, ``state[0]`` of them used.
        state: ``uint64[4]``: [0] rows in ``touched``; [1] unused here (the
            native error flag); [2] the window start (in): records before it
            are late, counted all the same and added up in [3].

    Returns:
        The index of the first record not consumed (``stop`` if all were).

    Raises:
        ValueError: a table of the wrong shape, ``state[0]`` beyond ``touched``,
            ``start``/``stop`` not a range of ``records``, or a record that no
            parser writes (class out of range, ported with a protocol that
            has no ports); the records before that one are counted.
    """
    shapes = (("counters", counters, (_COUNTER_ROWS, 4)), ("classes", classes, (4, 2)),
              ("touched", touched, (_COUNTER_ROWS,)), ("state", state, (4,)))
    for name, table, shape in shapes:
        if table.shape != shape:
            raise ValueError(f"{name} has shape {table.shape}, expected {shape}")
    if state[0] > _COUNTER_ROWS:
        raise ValueError(f"state[0] = {int(state[0])} exceeds {_COUNTER_ROWS} rows")
    if not 0 <= start <= stop <= len(records):
        raise ValueError(f"range [{start}, {stop}) outside {len(records)} records")
    i = start
    while i < stop:
        record = records[i]
        if int(record["ts_ns"]) >= win_end_ns and win_end_ns != UINT64_MAX:
            break
        wire_len = int(record["wire_len"])
        pkt_class = int(record["pkt_class"])
        proto = int(record["proto"])
        if pkt_class >= len(classes) or (pkt_class == PORTED and proto not in PROTO_INDEX):
            raise ValueError(f"record {i} has class {pkt_class} and protocol {proto}, "
                             "which no parser writes")
        if int(record["ts_ns"]) < int(state[2]):
            state[3] += 1
        classes[pkt_class, 0] += 1
        classes[pkt_class, 1] += wire_len
        if pkt_class == PORTED:
            base = PROTO_INDEX[proto] * N_PORTS
            for row, columns in ((base + int(record["dst_port"]), (0, 1)),
                                 (base + int(record["src_port"]), (2, 3))):
                if counters[row, 0] == 0 and counters[row, 2] == 0:
                    touched[int(state[0])] = row
                    state[0] += 1
                counters[row, columns[0]] += 1
                counters[row, columns[1]] += wire_len
        i += 1
    return i


DELTA_HEADER_WORDS = 16
# Row blocks in the order of their protocol names (dccp, sctp, tcp, udp, udplite).
_NAME_RANK = np.argsort(np.argsort(np.array(PROTO_NAMES)))


def _window_start(ts: int, interval: int) -> int:
    return ts - ts % interval


def _window_end(start: int, interval: int) -> int:
    return min(start + interval, UINT64_MAX)


class PortWindows:
    """Twin of the native ``PortWindows`` (ext/windows.pyx, which documents the
    delta layout): a capture process's open window, counted with
    :func:`reduce_records` and handed over as a delta when it closes."""

    def __init__(self, interval_ns: int):
        if interval_ns <= 0:
            raise ValueError("the window length must be positive")
        self.interval_ns = interval_ns
        self._table = np.zeros((_COUNTER_ROWS, 4), dtype=np.uint64)
        self._classes = np.zeros((4, 2), dtype=np.uint64)
        self._touched = np.zeros(_COUNTER_ROWS, dtype=np.uint32)
        self._state = np.zeros(4, dtype=np.uint64)
        self._records = 0
        self._start = self._end = None
        self.next_ns = 0

    @property
    def start_ns(self) -> int | None:
        return self._start

    def _open(self, ts: int) -> None:
        self._start = _window_start(ts, self.interval_ns)
        self._end = _window_end(self._start, self.interval_ns)
        self._state[2] = self._start

    def count(self, records, start: int, stop: int) -> int:
        view = memoryview(records).cast("B")
        if view.nbytes % RECORD_DTYPE.itemsize:
            raise ValueError(f"a buffer of {view.nbytes} bytes is not whole "
                             f"{RECORD_DTYPE.itemsize}-byte records")
        recs = np.frombuffer(view, dtype=RECORD_DTYPE)
        if not 0 <= start <= stop <= len(recs):
            raise ValueError(f"range [{start}, {stop}) outside {len(recs)} records")
        if start == stop:
            return stop
        if self._start is None:
            self._open(int(recs[start]["ts_ns"]))
        i = reduce_records(recs, start, stop, self._end, self._table, self._classes,
                           self._touched, self._state)
        self._records += i - start
        if i < stop:
            self.next_ns = int(recs[i]["ts_ns"])
        return i

    def advance(self, ts_ns: int):
        if self._start is not None and (ts_ns < self._end or self._end == UINT64_MAX):
            return None
        delta = self._take() if self._start is not None else None
        self._open(ts_ns)
        return delta

    def finish(self):
        delta = self._take() if self._start is not None else None
        self._start = self._end = None
        return delta

    def _take(self):
        if self._records == 0:
            return None
        rows = self._touched[:int(self._state[0])].astype(np.int64)
        rows = rows[np.argsort(_NAME_RANK[rows >> 16] * N_PORTS + (rows & 0xFFFF))]
        head = np.zeros(DELTA_HEADER_WORDS, dtype="<u8")
        head[:4] = (self._start, self._end, self._records, int(self._state[3]))
        head[4:12] = self._classes.reshape(-1)
        head[12] = len(rows)
        row_bytes = rows.astype("<u4").tobytes()
        row_bytes += bytes(-len(row_bytes) % 8)
        delta = head.tobytes() + row_bytes + self._table[rows].astype("<u8").tobytes()
        self._table[rows] = 0
        self._classes[:] = 0
        self._state[0] = self._state[3] = 0
        self._records = 0
        return delta


def encode_port_rows(rows, values) -> bytes:
    """Twin of the native encoder: msgpack of the port rows (msgpack-python's bytes)."""
    import msgpack
    return msgpack.packb([[PROTO_NAMES[int(r) >> 16], int(r) & 0xFFFF, *map(int, v)]
                          for r, v in zip(rows, values)], use_bin_type=True)


def encode_quality_rows(keys, values) -> bytes:
    """Twin of the native encoder: msgpack of tcp_quality rows (msgpack-python's bytes)."""
    import msgpack
    return msgpack.packb([["tcp", int(k) >> 1, "out" if int(k) & 1 else "in",
                           *map(int, v[:14]), list(map(int, v[14:]))]
                          for k, v in zip(keys, values)], use_bin_type=True)


def add_quality_rows(table, keys, values) -> None:
    """Twin of the native add_quality_rows: the exact merge of tcp_quality rows
    into a table of every row key."""
    if len(values) != len(keys) or (len(keys) and values.shape[1] != 46) or \
            table.shape[1] != 46:
        raise ValueError(f"{len(keys)} rows need ({len(keys)}, 46) values and a (keys, 46) table")
    if len(keys) and int(np.max(keys)) >= len(table):
        raise ValueError(f"row key {int(np.max(keys))} is past the table's {len(table)} keys")
    for key, v in zip(keys.tolist(), values.tolist()):
        t = table[key]
        if v[0]:
            if t[0] == 0 or v[2] < t[2]:
                t[2] = v[2]
            t[3] = max(int(t[3]), v[3])
        t[0] += np.uint64(v[0])
        t[1] += np.uint64(v[1])
        t[4:] += np.array(v[4:], dtype=np.uint64)


def add_rows(table, rows, values) -> None:
    """Twin of the native add_rows: table[rows[k]] += values[k] for every k."""
    if len(values) != len(rows) or (len(rows) and values.shape[1] != 4):
        raise ValueError(f"{len(rows)} rows need ({len(rows)}, 4) values")
    if len(rows) and int(np.max(rows)) >= len(table):
        raise ValueError(f"row {int(np.max(rows))} is past the table's {len(table)} rows")
    np.add.at(table, np.asarray(rows, dtype=np.int64), values)
