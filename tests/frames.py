"""Frame and capture-file builders for the tests.

Every builder returns ``bytes``. Headers are stacked by concatenation, outer
first; each header carries the type field that names what follows it, as on
the wire::

    eth(et=ETH_QINQ) + vlan(ETH_VLAN, vid=100) + vlan(ETH_IPV6, vid=7)
        + ipv6("2001:db8::1", "2001:db8::2", IPPROTO_UDP, udp(5353, 53, b"q"))

so a VLAN tag's own type (0x8100, 0x88a8, 0x9100) is the ``et`` of the header
before it. Builders of headers with a length field (PPPoE, IPv4, IPv6, UDP, ...)
take their payload and fill the length in; the others are header-only.
Knobs for malformed frames (``ihl=``, ``version=``, ``length=``) write the
field as given, whatever the bytes around it say.

Addresses are strings (``"10.0.0.1"``, ``"2001:db8::1"``, ``"02:00:00:00:00:01"``)
or raw bytes.
"""
from __future__ import annotations

import ipaddress
import struct

# EtherTypes.
ETH_IPV4 = 0x0800
ETH_ARP = 0x0806
ETH_VLAN = 0x8100
ETH_IPV6 = 0x86DD
ETH_MPLS = 0x8847
ETH_MPLS_MC = 0x8848
ETH_PPPOE_DISC = 0x8863
ETH_PPPOE = 0x8864
ETH_QINQ = 0x88A8
ETH_LLDP = 0x88CC
ETH_VLAN_9100 = 0x9100

# PPP protocols.
PPP_IPV4 = 0x0021
PPP_IPV6 = 0x0057
PPP_LCP = 0xC021

# IP protocol numbers.
IPPROTO_HOPOPTS = 0
IPPROTO_ICMP = 1
IPPROTO_IPIP = 4
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_DCCP = 33
IPPROTO_IPV6 = 41
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_GRE = 47
IPPROTO_ESP = 50
IPPROTO_AH = 51
IPPROTO_ICMPV6 = 58
IPPROTO_NONE = 59
IPPROTO_DSTOPTS = 60
IPPROTO_SCTP = 132
IPPROTO_UDPLITE = 136

# NULL / LOOP address families.
AF_INET = 2
AF_INET6_LINUX = 10
AF_INET6_BSD = 24
AF_INET6_FREEBSD = 28
AF_INET6_DARWIN = 30

# Link types (pcap-linktype(7)).
DLT_NULL = 0
DLT_EN10MB = 1
DLT_RAW_12 = 12
DLT_RAW_14 = 14
DLT_RAW = 101
DLT_LOOP = 108
DLT_LINUX_SLL = 113
DLT_IPV4 = 228
DLT_IPV6 = 229
DLT_LINUX_SLL2 = 276

MAC_A = "02:00:00:00:00:0a"
MAC_B = "02:00:00:00:00:0b"


def _mac(mac: str | bytes) -> bytes:
    raw = bytes.fromhex(mac.replace(":", "")) if isinstance(mac, str) else bytes(mac)
    if len(raw) != 6:
        raise ValueError(f"MAC address {mac!r} is not 6 bytes")
    return raw


def _ip(addr: str | bytes, version: int) -> bytes:
    raw = ipaddress.ip_address(addr).packed if isinstance(addr, str) else bytes(addr)
    if len(raw) != (4 if version == 4 else 16):
        raise ValueError(f"{addr!r} is not an IPv{version} address")
    return raw


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# --- link layers -------------------------------------------------------------

def eth(dst: str | bytes = MAC_B, src: str | bytes = MAC_A, et: int = ETH_IPV4) -> bytes:
    """Ethernet II header (14 bytes); ``et`` below 0x0600 makes it an 802.3 length."""
    return _mac(dst) + _mac(src) + struct.pack("!H", et)


def vlan(et: int, vid: int = 1, pcp: int = 0, dei: bool = False) -> bytes:
    """The 4 bytes after a VLAN TPID: the tag control information, then ``et``."""
    return struct.pack("!HH", (pcp << 13) | (dei << 12) | (vid & 0x0FFF), et)


def mpls(labels, tc: int = 0, ttl: int = 64, bottom: bool = True) -> bytes:
    """An MPLS label stack (RFC 3032); bottom-of-stack set on the last label if ``bottom``."""
    labels = list(labels)
    stack = b""
    for i, label in enumerate(labels):
        bos = bottom and i == len(labels) - 1
        stack += struct.pack("!I", (label << 12) | (tc << 9) | (bos << 8) | ttl)
    return stack


def pppoe(ppp_proto: int, payload: bytes = b"", session: int = 1,
          length: int | None = None) -> bytes:
    """PPPoE session header (RFC 2516) + PPP protocol field + ``payload``."""
    if length is None:
        length = 2 + len(payload)
    return struct.pack("!BBHHH", 0x11, 0x00, session, length, ppp_proto) + payload


def sll(proto: int, pkttype: int = 0, hatype: int = 1, addr: str | bytes = MAC_A) -> bytes:
    """Linux cooked-mode header v1 (16 bytes); ``proto`` is an EtherType."""
    raw = _mac(addr)
    return struct.pack("!HHH8sH", pkttype, hatype, len(raw), raw, proto)


def sll2(proto: int, ifindex: int = 1, hatype: int = 1, pkttype: int = 0,
         addr: str | bytes = MAC_A) -> bytes:
    """Linux cooked-mode header v2 (20 bytes); ``proto`` is an EtherType."""
    raw = _mac(addr)
    return struct.pack("!HHIHBB8s", proto, 0, ifindex, hatype, pkttype, len(raw), raw)


def null(family: int, big_endian: bool = False) -> bytes:
    """BSD loopback (DLT_NULL) header: the address family in host byte order."""
    return struct.pack(">I" if big_endian else "<I", family)


def loop(family: int) -> bytes:
    """OpenBSD loopback (DLT_LOOP) header: the address family in network order."""
    return struct.pack(">I", family)


def arp(op: int = 1, sender_ip: str = "10.0.0.1", target_ip: str = "10.0.0.2",
        sender_mac: str | bytes = MAC_A, target_mac: str | bytes = "00:00:00:00:00:00") -> bytes:
    """An ARP packet for Ethernet/IPv4 (RFC 826), 28 bytes."""
    return (struct.pack("!HHBBH", 1, ETH_IPV4, 6, 4, op) + _mac(sender_mac)
            + _ip(sender_ip, 4) + _mac(target_mac) + _ip(target_ip, 4))


# --- network layer -----------------------------------------------------------

def ipv4(src: str | bytes = "10.0.0.1", dst: str | bytes = "10.0.0.2",
         proto: int = IPPROTO_UDP, payload: bytes = b"", ihl: int | None = None,
         options: bytes = b"", frag_offset: int = 0, mf: bool = False, df: bool = False,
         ttl: int = 64, ident: int = 1, version: int = 4,
         total_length: int | None = None) -> bytes:
    """IPv4 header (RFC 791) + ``payload``, header checksum filled in.

    ``options`` are zero-padded to a multiple of 4. ``ihl`` defaults to the
    real header length in 32-bit words; ``frag_offset`` is the field value,
    in 8-byte units.
    """
    options += b"\0" * (-len(options) % 4)
    if ihl is None:
        ihl = 5 + len(options) // 4
    if total_length is None:
        total_length = 20 + len(options) + len(payload)
    flags_frag = (df << 14) | (mf << 13) | (frag_offset & 0x1FFF)
    header = struct.pack("!BBHHHBBH4s4s", (version << 4) | (ihl & 0x0F), 0,
                         total_length & 0xFFFF, ident, flags_frag, ttl, proto, 0,
                         _ip(src, 4), _ip(dst, 4)) + options
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + payload


def ipv6(src: str | bytes = "2001:db8::1", dst: str | bytes = "2001:db8::2",
         nh: int = IPPROTO_UDP, payload: bytes = b"", hlim: int = 64, flow: int = 0,
         version: int = 6, payload_length: int | None = None) -> bytes:
    """IPv6 header (RFC 8200) + ``payload`` (extension headers included)."""
    if payload_length is None:
        payload_length = len(payload)
    return struct.pack("!IHBB16s16s", (version << 28) | (flow & 0xFFFFF),
                       payload_length & 0xFFFF, nh, hlim, _ip(src, 6),
                       _ip(dst, 6)) + payload


def _ext_options(nh: int, length: int) -> bytes:
    """A TLV-options extension header of ``length`` bytes, padded with PadN."""
    if length < 8 or length % 8:
        raise ValueError(f"extension header length {length} is not a multiple of 8 >= 8")
    if length > 2048:
        raise ValueError(f"extension header length {length} is over 2048")
    options, left = b"", length - 2
    while left:
        if left == 1:
            options += b"\0"  # Pad1
            break
        chunk = min(left, 257)  # one PadN option carries at most 255 bytes
        options += struct.pack("!BB", 1, chunk - 2) + bytes(chunk - 2)
        left -= chunk
    return struct.pack("!BB", nh, length // 8 - 1) + options


def hbh(nh: int, length: int = 8) -> bytes:
    """IPv6 hop-by-hop options header of ``length`` bytes (a multiple of 8)."""
    return _ext_options(nh, length)


def dstopts(nh: int, length: int = 8) -> bytes:
    """IPv6 destination options header of ``length`` bytes (a multiple of 8)."""
    return _ext_options(nh, length)


def routing(nh: int, addresses=(), routing_type: int = 0, segments_left: int = 0) -> bytes:
    """IPv6 routing header carrying ``addresses`` (8 + 16 * n bytes)."""
    body = b"".join(_ip(a, 6) for a in addresses)
    return struct.pack("!BBBBI", nh, 2 * len(body) // 16, routing_type, segments_left,
                       0) + body


def frag6(nh: int, offset: int = 0, more: bool = False, ident: int = 1) -> bytes:
    """IPv6 fragment header (8 bytes); ``offset`` in 8-byte units."""
    return struct.pack("!BBHI", nh, 0, (offset << 3) | more, ident)


def ah(nh: int, icv: bytes = bytes(12), spi: int = 0x100, seq: int = 1) -> bytes:
    """Authentication header (RFC 4302): 12 bytes + ``icv``, length in 4-byte units - 2."""
    total = 12 + len(icv)
    if total % 4:
        raise ValueError(f"AH length {total} is not a multiple of 4")
    return struct.pack("!BBHII", nh, total // 4 - 2, 0, spi, seq) + icv


# --- transport layer ---------------------------------------------------------

def tcp(sport: int, dport: int, payload: bytes = b"", flags: int = 0x18, seq: int = 1,
        ack: int = 1, window: int = 65535) -> bytes:
    """TCP header without options (20 bytes) + ``payload``; checksum left zero."""
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, window, 0,
                       0) + payload


def udp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    """UDP header (8 bytes) + ``payload``; checksum zero (none)."""
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def udplite(sport: int, dport: int, payload: bytes = b"", coverage: int = 0) -> bytes:
    """UDP-Lite header (RFC 3828, 8 bytes) + ``payload``."""
    return struct.pack("!HHHH", sport, dport, coverage, 0) + payload


def sctp(sport: int, dport: int, payload: bytes = b"", vtag: int = 1) -> bytes:
    """SCTP common header (RFC 9260, 12 bytes) + ``payload`` (chunks)."""
    return struct.pack("!HHII", sport, dport, vtag, 0) + payload


def dccp(sport: int, dport: int, payload: bytes = b"", packet_type: int = 2,
         seq: int = 1) -> bytes:
    """DCCP generic header with 48-bit sequence number (RFC 4340, 16 bytes) + ``payload``."""
    return struct.pack("!HHBBHBBHI", sport, dport, 4, 0, 0, (packet_type << 1) | 1, 0,
                       seq >> 32, seq & 0xFFFFFFFF) + payload


def icmp(icmp_type: int = 8, code: int = 0, payload: bytes = b"") -> bytes:
    """ICMP message (RFC 792) + ``payload``, checksum filled in."""
    header = struct.pack("!BBHI", icmp_type, code, 0, 0)
    return struct.pack("!BBHI", icmp_type, code, checksum(header + payload), 0) + payload


# --- capture files -----------------------------------------------------------

def pcap_file(records, linktype: int, nano: bool = False, big_endian: bool = False,
              snaplen: int = 65535) -> bytes:
    """A classic pcap file.

    Args:
        records: ``(ts_ns, frame, orig_len)`` tuples; ``orig_len`` None means
            ``len(frame)``. A frame longer than ``snaplen`` is cut to it and
            keeps its original length.
        nano: nanosecond timestamps (magic 0xa1b23c4d) instead of microseconds
            (truncated).
    """
    order = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(f"{order}IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for ts_ns, frame, orig_len in records:
        if orig_len is None:
            orig_len = len(frame)
        captured = frame[:snaplen]
        sec, frac_ns = divmod(ts_ns, 1_000_000_000)
        frac = frac_ns if nano else frac_ns // 1000
        out.append(struct.pack(f"{order}IIII", sec, frac, len(captured), orig_len))
        out.append(captured)
    return b"".join(out)


def _pcapng_block(order: str, block_type: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    total = 12 + len(body)
    return struct.pack(f"{order}II", block_type, total) + body + struct.pack(f"{order}I", total)


def pcapng_file(interfaces, packets, big_endian: bool = False) -> bytes:
    """A one-section pcapng file with nanosecond timestamps.

    Args:
        interfaces: ``(linktype, snaplen)`` per Interface Description Block,
            each with ``if_tsresol`` = 9 (nanoseconds).
        packets: ``(iface_idx, ts_ns, frame, orig_len)`` per Enhanced Packet
            Block; ``orig_len`` None means ``len(frame)``. A frame longer than a
            non-zero snaplen of its interface is cut to it.
    """
    order = ">" if big_endian else "<"
    blocks = [_pcapng_block(order, 0x0A0D0D0A,
                            struct.pack(f"{order}IHHq", 0x1A2B3C4D, 1, 0, -1))]
    for linktype, snaplen in interfaces:
        tsresol = struct.pack(f"{order}HHB3x", 9, 1, 9)
        end_of_options = struct.pack(f"{order}HH", 0, 0)
        blocks.append(_pcapng_block(order, 0x00000001,
                                    struct.pack(f"{order}HHI", linktype, 0, snaplen)
                                    + tsresol + end_of_options))
    for iface_idx, ts_ns, frame, orig_len in packets:
        if orig_len is None:
            orig_len = len(frame)
        snaplen = interfaces[iface_idx][1]
        captured = frame[:snaplen] if snaplen else frame
        body = struct.pack(f"{order}IIIII", iface_idx, ts_ns >> 32, ts_ns & 0xFFFFFFFF,
                           len(captured), orig_len) + captured
        blocks.append(_pcapng_block(order, 0x00000006, body))
    return b"".join(blocks)
