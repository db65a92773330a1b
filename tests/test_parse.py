"""Hand-built frames for every encapsulation and edge of counting-rules.md.

Each test runs on both backends (the ``backend`` fixture); test names spell
the stack, outer header first.
"""
from __future__ import annotations

import ipaddress

import numpy as np
import pytest

from pt_engine.records import (
    CLASS_NAMES,
    N_PORTS,
    N_PROTOS,
    PROTO_INDEX,
    REASON_NAMES,
    RECORD_DTYPE,
    TCPI_FRAGMENT,
    TCPI_HEADER,
    TCPI_IPV6,
    TCPI_NEGATIVE_PAYLOAD,
)
from frames import (
    AF_INET,
    AF_INET6_BSD,
    AF_INET6_DARWIN,
    AF_INET6_FREEBSD,
    AF_INET6_LINUX,
    DLT_EN10MB,
    DLT_IPV4,
    DLT_IPV6,
    DLT_LINUX_SLL,
    DLT_LINUX_SLL2,
    DLT_LOOP,
    DLT_NULL,
    DLT_RAW,
    DLT_RAW_12,
    DLT_RAW_14,
    ETH_ARP,
    ETH_IPV4,
    ETH_IPV6,
    ETH_LLDP,
    ETH_MPLS,
    ETH_MPLS_MC,
    ETH_PPPOE,
    ETH_PPPOE_DISC,
    ETH_QINQ,
    ETH_VLAN,
    ETH_VLAN_9100,
    IPPROTO_AH,
    IPPROTO_DCCP,
    IPPROTO_DSTOPTS,
    IPPROTO_ESP,
    IPPROTO_FRAGMENT,
    IPPROTO_GRE,
    IPPROTO_HOPOPTS,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_IPIP,
    IPPROTO_IPV6,
    IPPROTO_NONE,
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

V4 = ("192.0.2.1", "198.51.100.7")
V6 = ("2001:db8::1", "2001:db8:ffff::2")
RAW_LINKTYPES = (DLT_RAW_12, DLT_RAW_14, DLT_RAW, DLT_IPV4, DLT_IPV6)
INET6_FAMILIES = (AF_INET6_LINUX, AF_INET6_BSD, AF_INET6_FREEBSD, AF_INET6_DARWIN)
PORT_BUILDERS = {IPPROTO_TCP: tcp, IPPROTO_UDP: udp, IPPROTO_SCTP: sctp,
                 IPPROTO_UDPLITE: udplite, IPPROTO_DCCP: dccp}


def tcp4(sport=40000, dport=443, payload=b"hello"):
    """IPv4 (V4) + TCP."""
    return ipv4(*V4, IPPROTO_TCP, tcp(sport, dport, payload))


def udp4(sport=40000, dport=53, payload=b"query"):
    """IPv4 (V4) + UDP."""
    return ipv4(*V4, IPPROTO_UDP, udp(sport, dport, payload))


def tcp6(sport=40000, dport=443, payload=b"hello"):
    """IPv6 (V6) + TCP."""
    return ipv6(*V6, IPPROTO_TCP, tcp(sport, dport, payload))


def udp6(sport=40000, dport=53, payload=b"query"):
    """IPv6 (V6) + UDP."""
    return ipv6(*V6, IPPROTO_UDP, udp(sport, dport, payload))


def parse(backend, linktype, frame, *, caplen=None, orig_len=None, ts_ns=1_000, iface=0):
    """Parse one frame with ``backend.parse_batch``; return its record."""
    frame = bytes(frame)
    caplen = len(frame) if caplen is None else caplen
    orig_len = len(frame) if orig_len is None else orig_len
    out = np.zeros(1, RECORD_DTYPE)
    backend.parse_batch(linktype, frame, np.array([0], np.uint32),
                        np.array([caplen], np.uint32), np.array([orig_len], np.uint32),
                        np.array([ts_ns], np.uint64), iface, out)
    return out[0]


def _addr(raw) -> str | None:
    """A record address as text: None if zero, dotted quad if v4-mapped."""
    ip = ipaddress.IPv6Address(bytes(raw))
    if ip.packed == bytes(16):
        return None
    return str(ip.ipv4_mapped or ip)


def fields(record) -> dict:
    """The parser-decided fields of a record, readable."""
    return {
        "class": CLASS_NAMES[record["pkt_class"]],
        "reason": REASON_NAMES[record["reason"]],
        "proto": int(record["proto"]),
        "ports": (int(record["src_port"]), int(record["dst_port"])),
        "addrs": (_addr(record["src_addr"]), _addr(record["dst_addr"])),
        "wire_len": int(record["wire_len"]),
        "pad": bytes(record["pad"]),
    }


def check(backend, linktype, frame, pkt_class, reason, *, proto=0, ports=(0, 0),
          addrs=(None, None), caplen=None, orig_len=None, wire_len=None):
    """Parse ``frame`` and compare every field with the expected values."""
    record = parse(backend, linktype, frame, caplen=caplen, orig_len=orig_len)
    if wire_len is None:
        wire_len = len(frame)
    assert fields(record) == {
        "class": pkt_class, "reason": reason, "proto": proto, "ports": ports,
        "addrs": addrs, "wire_len": wire_len, "pad": bytes(3),
    }
    return record


# --- Ethernet ----------------------------------------------------------------

def test_eth_ipv4_tcp(backend):
    check(backend, DLT_EN10MB, eth() + tcp4(51000, 443), "ported", "ok",
          proto=IPPROTO_TCP, ports=(51000, 443), addrs=V4)


def test_eth_ipv4_udp(backend):
    check(backend, DLT_EN10MB, eth() + udp4(5353, 53), "ported", "ok",
          proto=IPPROTO_UDP, ports=(5353, 53), addrs=V4)


@pytest.mark.parametrize("proto", sorted(PORT_BUILDERS))
def test_eth_ipv4_port_protocol(backend, proto):
    frame = eth() + ipv4(*V4, proto, PORT_BUILDERS[proto](1234, 4321, b"x" * 20))
    check(backend, DLT_EN10MB, frame, "ported", "ok", proto=proto, ports=(1234, 4321),
          addrs=V4)


@pytest.mark.parametrize("proto", sorted(PORT_BUILDERS))
def test_eth_ipv6_port_protocol(backend, proto):
    frame = eth(et=ETH_IPV6) + ipv6(*V6, proto, PORT_BUILDERS[proto](65535, 1, b"x"))
    check(backend, DLT_EN10MB, frame, "ported", "ok", proto=proto, ports=(65535, 1),
          addrs=V6)


def test_eth_ipv6_tcp(backend):
    check(backend, DLT_EN10MB, eth(et=ETH_IPV6) + tcp6(443, 50000), "ported", "ok",
          proto=IPPROTO_TCP, ports=(443, 50000), addrs=V6)


def test_eth_vlan_ipv4_udp(backend):
    frame = eth(et=ETH_VLAN) + vlan(ETH_IPV4, vid=10) + udp4(1000, 2000)
    check(backend, DLT_EN10MB, frame, "ported", "ok", proto=IPPROTO_UDP,
          ports=(1000, 2000), addrs=V4)


def test_eth_qinq_ipv6_udp(backend):
    frame = (eth(et=ETH_QINQ) + vlan(ETH_VLAN, vid=100) + vlan(ETH_IPV6, vid=7)
             + udp6(5353, 53))
    check(backend, DLT_EN10MB, frame, "ported", "ok", proto=IPPROTO_UDP, ports=(5353, 53),
          addrs=V6)


def test_eth_vlan_9100_ipv4_tcp(backend):
    frame = eth(et=ETH_VLAN_9100) + vlan(ETH_VLAN, vid=5) + vlan(ETH_IPV4, vid=6) + tcp4()
    check(backend, DLT_EN10MB, frame, "ported", "ok", proto=IPPROTO_TCP,
          ports=(40000, 443), addrs=V4)


def test_eth_fifty_vlan_tags_ipv4_udp(backend):
    tpids = [ETH_VLAN, ETH_QINQ, ETH_VLAN_9100] * 17
    tags = b"".join(vlan(et, vid=i) for i, et in enumerate(tpids[1:50] + [ETH_IPV4]))
    frame = eth(et=tpids[0]) + tags + udp4()
    check(backend, DLT_EN10MB, frame, "ported", "ok", proto=IPPROTO_UDP,
          ports=(40000, 53), addrs=V4)


@pytest.mark.parametrize("cut", [0, 1, 3])
def test_eth_vlan_tag_cut_is_truncated_link(backend, cut):
    frame = eth(et=ETH_VLAN) + vlan(ETH_IPV4)[:cut]
    check(backend, DLT_EN10MB, frame, "truncated", "truncated_link")


def test_eth_vlan_tag_then_nothing_is_truncated_ip(backend):
    check(backend, DLT_EN10MB, eth(et=ETH_VLAN) + vlan(ETH_IPV4), "truncated", "truncated_ip")


def test_eth_vlan_arp_is_non_ip(backend):
    frame = eth(et=ETH_VLAN) + vlan(ETH_ARP) + arp()
    check(backend, DLT_EN10MB, frame, "non_ip", "non_ip_ethertype")


def test_eth_vlan_llc_is_llc_frame(backend):
    frame = eth(et=ETH_VLAN) + vlan(38) + b"\x42\x42\x03" + bytes(35)
    check(backend, DLT_EN10MB, frame, "non_ip", "llc_frame")


def test_eth_arp_is_non_ip(backend):
    check(backend, DLT_EN10MB, eth(et=ETH_ARP) + arp(), "non_ip", "non_ip_ethertype")


def test_eth_lldp_is_non_ip(backend):
    check(backend, DLT_EN10MB, eth(et=ETH_LLDP) + bytes(46), "non_ip", "non_ip_ethertype")


def test_eth_pppoe_discovery_is_non_ip(backend):
    check(backend, DLT_EN10MB, eth(et=ETH_PPPOE_DISC) + bytes(20), "non_ip",
          "non_ip_ethertype")


def test_eth_8023_llc_stp_is_llc_frame(backend):
    bpdu = b"\x42\x42\x03" + bytes(35)
    check(backend, DLT_EN10MB, eth(dst="01:80:c2:00:00:00", et=len(bpdu)) + bpdu,
          "non_ip", "llc_frame")


@pytest.mark.parametrize("ethertype, reason", [
    (0x0000, "llc_frame"), (0x05FF, "llc_frame"), (0x0600, "non_ip_ethertype"),
    (0xFFFF, "non_ip_ethertype")])
def test_eth_ethertype_llc_boundary(backend, ethertype, reason):
    check(backend, DLT_EN10MB, eth(et=ethertype) + udp4(), "non_ip", reason)


@pytest.mark.parametrize("length", [0, 1, 12, 13])
def test_eth_header_cut_is_truncated_link(backend, length):
    frame = (eth() + udp4())[:length]
    check(backend, DLT_EN10MB, frame, "truncated", "truncated_link")


def test_eth_header_only_is_truncated_ip(backend):
    check(backend, DLT_EN10MB, eth(), "truncated", "truncated_ip")


def test_eth_ipv4_header_cut_is_truncated_ip(backend):
    frame = (eth() + udp4())[:14 + 19]
    check(backend, DLT_EN10MB, frame, "truncated", "truncated_ip")


def test_eth_ipv4_ethertype_carrying_ipv6_is_bad_ip_version(backend):
    check(backend, DLT_EN10MB, eth(et=ETH_IPV4) + udp6(), "truncated", "bad_ip_version")


def test_eth_ipv6_ethertype_carrying_ipv4_is_bad_ip_version(backend):
    frame = eth(et=ETH_IPV6) + udp4(payload=bytes(40))
    check(backend, DLT_EN10MB, frame, "truncated", "bad_ip_version")


def test_eth_ipv6_ethertype_carrying_short_ipv4_is_truncated_ip(backend):
    frame = eth(et=ETH_IPV6) + udp4(payload=b"")
    check(backend, DLT_EN10MB, frame, "truncated", "truncated_ip")


# --- MPLS --------------------------------------------------------------------

def test_eth_mpls_ipv4_udp(backend):
    frame = eth(et=ETH_MPLS) + mpls([16]) + udp4(1, 2)
    check(backend, DLT_EN10MB, frame, "ported", "ok", proto=IPPROTO_UDP, ports=(1, 2),
          addrs=V4)


def test_eth_mpls_multicast_ipv6_tcp(backend):
    frame = eth(et=ETH_MPLS_MC) + mpls([100]) + tcp6(22, 60000)
    check(backend, DLT_EN10MB, frame, "ported", "ok", proto=IPPROTO_TCP,
          ports=(22, 60000), addrs=V6)


def test_eth_mpls_three_labels_ipv4_tcp(backend):
    frame = eth(et=ETH_MPLS) + mpls([16, 17, 1048575]) + tcp4(1, 80)
    check(backend, DLT_EN10MB, frame, "ported", "ok", proto=IPPROTO_TCP, ports=(1, 80),
          addrs=V4)


def test_eth_vlan_mpls_ipv6_udp(backend):
    frame = eth(et=ETH_VLAN) + vlan(ETH_MPLS) + mpls([16, 32]) + udp6(7, 8)
    check(backend, DLT_EN10MB, frame, "ported", "ok", proto=IPPROTO_UDP, ports=(7, 8),
          addrs=V6)


def test_eth_mpls_without_bottom_of_stack_is_truncated_link(backend):
    frame = eth(et=ETH_MPLS) + mpls([16, 17, 18], bottom=False)
    check(backend, DLT_EN10MB, frame, "truncated", "truncated_link")


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_eth_mpls_label_cut_is_truncated_link(backend, cut):
    frame = eth(et=ETH_MPLS) + mpls([16, 17])[:4 + cut]
    check(backend, DLT_EN10MB, frame, "truncated", "truncated_link")


def test_eth_mpls_nothing_after_stack_is_truncated_link(backend):
    check(backend, DLT_EN10MB, eth(et=ETH_MPLS) + mpls([16]), "truncated", "truncated_link")


def test_eth_mpls_ethernet_pseudowire_is_mpls_non_ip(backend):
    control_word = bytes(4)
    frame = eth(et=ETH_MPLS) + mpls([16]) + control_word + eth() + udp4()
    check(backend, DLT_EN10MB, frame, "non_ip", "mpls_non_ip")


def test_eth_mpls_ipv4_nibble_header_cut_is_truncated_ip(backend):
    frame = eth(et=ETH_MPLS) + mpls([16]) + udp4()[:10]
    check(backend, DLT_EN10MB, frame, "truncated", "truncated_ip")


def test_eth_mpls_ipv6_nibble_one_byte_is_truncated_ip(backend):
    frame = eth(et=ETH_MPLS) + mpls([16]) + b"\x60"
    check(backend, DLT_EN10MB, frame, "truncated", "truncated_ip")


# --- PPPoE -------------------------------------------------------------------

def test_eth_pppoe_ipv4_tcp(backend):
    frame = eth(et=ETH_PPPOE) + pppoe(PPP_IPV4, tcp4(33000, 80))
    check(backend, DLT_EN10MB, frame, "ported", "ok", proto=IPPROTO_TCP,
          ports=(33000, 80), addrs=V4)


def test_eth_pppoe_ipv6_udp(backend):
    frame = eth(et=ETH_PPPOE) + pppoe(PPP_IPV6, udp6(546, 547))
    check(backend, DLT_EN10MB, frame, "ported", "ok", proto=IPPROTO_UDP,
          ports=(546, 547), addrs=V6)


def test_eth_vlan_pppoe_ipv4_udp(backend):
    frame = eth(et=ETH_VLAN) + vlan(ETH_PPPOE) + pppoe(PPP_IPV4, udp4(68, 67))
    check(backend, DLT_EN10MB, frame, "ported", "ok", proto=IPPROTO_UDP, ports=(68, 67),
          addrs=V4)


def test_eth_pppoe_lcp_is_ppp_non_ip(backend):
    frame = eth(et=ETH_PPPOE) + pppoe(PPP_LCP, b"\x01\x01\x00\x04")
    check(backend, DLT_EN10MB, frame, "non_ip", "ppp_non_ip")


@pytest.mark.parametrize("cut", [0, 6, 7])
def test_eth_pppoe_header_cut_is_truncated_link(backend, cut):
    frame = eth(et=ETH_PPPOE) + pppoe(PPP_IPV4, udp4())[:cut]
    check(backend, DLT_EN10MB, frame, "truncated", "truncated_link")


def test_eth_pppoe_ipv4_carrying_ipv6_is_bad_ip_version(backend):
    frame = eth(et=ETH_PPPOE) + pppoe(PPP_IPV4, udp6())
    check(backend, DLT_EN10MB, frame, "truncated", "bad_ip_version")


def test_eth_pppoe_ignores_length_field(backend):
    frame = eth(et=ETH_PPPOE) + pppoe(PPP_IPV4, udp4(1, 2), length=0)
    check(backend, DLT_EN10MB, frame, "ported", "ok", proto=IPPROTO_UDP, ports=(1, 2),
          addrs=V4)


# --- Linux cooked capture ----------------------------------------------------

def test_sll_ipv4_udp(backend):
    check(backend, DLT_LINUX_SLL, sll(ETH_IPV4) + udp4(123, 123), "ported", "ok",
          proto=IPPROTO_UDP, ports=(123, 123), addrs=V4)


def test_sll_ipv6_tcp(backend):
    check(backend, DLT_LINUX_SLL, sll(ETH_IPV6, pkttype=4) + tcp6(8080, 40000), "ported",
          "ok", proto=IPPROTO_TCP, ports=(8080, 40000), addrs=V6)


def test_sll_vlan_ipv4_tcp(backend):
    frame = sll(ETH_VLAN) + vlan(ETH_IPV4, vid=300) + tcp4(1, 2)
    check(backend, DLT_LINUX_SLL, frame, "ported", "ok", proto=IPPROTO_TCP, ports=(1, 2),
          addrs=V4)


def test_sll_vlan_mpls_ipv4_tcp(backend):
    frame = sll(ETH_VLAN) + vlan(ETH_MPLS) + mpls([18]) + tcp4(80, 32828)
    check(backend, DLT_LINUX_SLL, frame, "ported", "ok", proto=IPPROTO_TCP,
          ports=(80, 32828), addrs=V4)


def test_sll_pppoe_ipv6_udp(backend):
    frame = sll(ETH_PPPOE) + pppoe(PPP_IPV6, udp6(1, 2))
    check(backend, DLT_LINUX_SLL, frame, "ported", "ok", proto=IPPROTO_UDP, ports=(1, 2),
          addrs=V6)


def test_sll_arp_is_non_ip(backend):
    check(backend, DLT_LINUX_SLL, sll(ETH_ARP) + arp(), "non_ip", "non_ip_ethertype")


def test_sll_llc_protocol_is_llc_frame(backend):
    check(backend, DLT_LINUX_SLL, sll(0x0004) + bytes(30), "non_ip", "llc_frame")


@pytest.mark.parametrize("length", [0, 14, 15])
def test_sll_header_cut_is_truncated_link(backend, length):
    frame = (sll(ETH_IPV4) + udp4())[:length]
    check(backend, DLT_LINUX_SLL, frame, "truncated", "truncated_link")


def test_sll2_ipv6_udp(backend):
    check(backend, DLT_LINUX_SLL2, sll2(ETH_IPV6) + udp6(53, 5353), "ported", "ok",
          proto=IPPROTO_UDP, ports=(53, 5353), addrs=V6)


def test_sll2_ipv4_tcp(backend):
    check(backend, DLT_LINUX_SLL2, sll2(ETH_IPV4, ifindex=3) + tcp4(), "ported", "ok",
          proto=IPPROTO_TCP, ports=(40000, 443), addrs=V4)


def test_sll2_vlan_pppoe_ipv4_tcp(backend):
    frame = sll2(ETH_VLAN) + vlan(ETH_PPPOE) + pppoe(PPP_IPV4, tcp4(80, 1025))
    check(backend, DLT_LINUX_SLL2, frame, "ported", "ok", proto=IPPROTO_TCP,
          ports=(80, 1025), addrs=V4)


def test_sll2_qinq_mpls_ipv6_tcp(backend):
    frame = (sll2(ETH_QINQ) + vlan(ETH_VLAN) + vlan(ETH_MPLS_MC) + mpls([20, 21])
             + tcp6(179, 50000))
    check(backend, DLT_LINUX_SLL2, frame, "ported", "ok", proto=IPPROTO_TCP,
          ports=(179, 50000), addrs=V6)


def test_sll2_arp_is_non_ip(backend):
    check(backend, DLT_LINUX_SLL2, sll2(ETH_ARP) + arp(), "non_ip", "non_ip_ethertype")


@pytest.mark.parametrize("length", [0, 1, 2, 19])
def test_sll2_header_cut_is_truncated_link(backend, length):
    frame = (sll2(ETH_IPV4) + udp4())[:length]
    check(backend, DLT_LINUX_SLL2, frame, "truncated", "truncated_link")


# --- RAW / IPV4 / IPV6 link types --------------------------------------------

@pytest.mark.parametrize("linktype", RAW_LINKTYPES)
def test_raw_ipv4_udp(backend, linktype):
    check(backend, linktype, udp4(1, 2), "ported", "ok", proto=IPPROTO_UDP, ports=(1, 2),
          addrs=V4)


@pytest.mark.parametrize("linktype", RAW_LINKTYPES)
def test_raw_ipv6_tcp(backend, linktype):
    check(backend, linktype, tcp6(3, 4), "ported", "ok", proto=IPPROTO_TCP, ports=(3, 4),
          addrs=V6)


@pytest.mark.parametrize("linktype", RAW_LINKTYPES)
@pytest.mark.parametrize("version", [0, 5, 15])
def test_raw_bad_version_is_bad_ip_version(backend, linktype, version):
    frame = bytes([version << 4 | 5]) + udp4()[1:]
    check(backend, linktype, frame, "truncated", "bad_ip_version")


@pytest.mark.parametrize("linktype", RAW_LINKTYPES)
def test_raw_empty_is_truncated_ip(backend, linktype):
    check(backend, linktype, b"", "truncated", "truncated_ip")


@pytest.mark.parametrize("frame", [b"\x45", udp4()[:19], b"\x60", tcp6()[:39]])
def test_raw_ip_header_cut_is_truncated_ip(backend, frame):
    check(backend, DLT_RAW, frame, "truncated", "truncated_ip")


# --- NULL / LOOP -------------------------------------------------------------

def test_null_ipv4_udp(backend):
    check(backend, DLT_NULL, null(AF_INET) + udp4(9, 10), "ported", "ok",
          proto=IPPROTO_UDP, ports=(9, 10), addrs=V4)


def test_null_swapped_family(backend):
    check(backend, DLT_NULL, null(AF_INET, big_endian=True) + udp4(9, 10), "ported", "ok",
          proto=IPPROTO_UDP, ports=(9, 10), addrs=V4)


@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("family", INET6_FAMILIES)
def test_null_ipv6_families(backend, family, big_endian):
    check(backend, DLT_NULL, null(family, big_endian) + tcp6(1, 2), "ported", "ok",
          proto=IPPROTO_TCP, ports=(1, 2), addrs=V6)


@pytest.mark.parametrize("family", [0, 1, 7, 17, 0x02000002, 0xFFFFFFFF])
def test_null_unknown_family_is_non_ip(backend, family):
    check(backend, DLT_NULL, null(family) + udp4(), "non_ip", "non_ip_family")


@pytest.mark.parametrize("length", [0, 1, 3])
def test_null_header_cut_is_truncated_link(backend, length):
    check(backend, DLT_NULL, (null(AF_INET) + udp4())[:length], "truncated", "truncated_link")


def test_null_family_decides_not_version_nibble(backend):
    check(backend, DLT_NULL, null(AF_INET) + udp6(), "truncated", "bad_ip_version")
    check(backend, DLT_NULL, null(AF_INET6_LINUX) + udp4(payload=bytes(20)), "truncated",
          "bad_ip_version")


def test_loop_ipv4_tcp(backend):
    check(backend, DLT_LOOP, loop(AF_INET) + tcp4(6000, 22), "ported", "ok",
          proto=IPPROTO_TCP, ports=(6000, 22), addrs=V4)


@pytest.mark.parametrize("family", INET6_FAMILIES)
def test_loop_ipv6_udp(backend, family):
    check(backend, DLT_LOOP, loop(family) + udp6(1, 2), "ported", "ok", proto=IPPROTO_UDP,
          ports=(1, 2), addrs=V6)


@pytest.mark.parametrize("family", [AF_INET, *INET6_FAMILIES])
def test_loop_family_little_endian_is_non_ip(backend, family):
    frame = null(family, big_endian=False) + udp4()
    check(backend, DLT_LOOP, frame, "non_ip", "non_ip_family")


@pytest.mark.parametrize("length", [0, 3])
def test_loop_header_cut_is_truncated_link(backend, length):
    check(backend, DLT_LOOP, (loop(AF_INET) + udp4())[:length], "truncated",
          "truncated_link")


# --- IPv4 --------------------------------------------------------------------

@pytest.mark.parametrize("options", [b"\x01" * 4, b"\x94\x04\x00\x00", b"\x01" * 40])
def test_ipv4_options_udp(backend, options):
    frame = ipv4(*V4, IPPROTO_UDP, udp(700, 800), options=options)
    check(backend, DLT_RAW, frame, "ported", "ok", proto=IPPROTO_UDP, ports=(700, 800),
          addrs=V4)


@pytest.mark.parametrize("ihl", [0, 1, 4])
def test_ipv4_ihl_below_5_is_bad_ihl(backend, ihl):
    frame = eth() + ipv4(*V4, IPPROTO_TCP, tcp(1, 2), ihl=ihl)
    check(backend, DLT_EN10MB, frame, "truncated", "bad_ihl", proto=IPPROTO_TCP, addrs=V4)


def test_ipv4_ihl_past_caplen_is_truncated_ip_options(backend):
    frame = eth() + ipv4(*V4, IPPROTO_UDP, udp(1, 2), ihl=15)
    check(backend, DLT_EN10MB, frame, "truncated", "truncated_ip_options",
          proto=IPPROTO_UDP, addrs=V4)


def test_ipv4_options_cut_by_snaplen_is_truncated_ip_options(backend):
    frame = eth() + ipv4(*V4, IPPROTO_TCP, tcp(1, 2), options=bytes(20))
    check(backend, DLT_EN10MB, frame[:14 + 30], "truncated", "truncated_ip_options",
          proto=IPPROTO_TCP, addrs=V4, orig_len=len(frame), wire_len=len(frame))


def test_ipv4_ihl_past_caplen_nonfirst_fragment_is_truncated(backend):
    frame = eth() + ipv4(*V4, IPPROTO_UDP, b"data", ihl=8, frag_offset=100)
    check(backend, DLT_EN10MB, frame, "truncated", "truncated_ip_options",
          proto=IPPROTO_UDP, addrs=V4)


def test_ipv4_first_fragment_has_ports(backend):
    frame = eth() + ipv4(*V4, IPPROTO_UDP, udp(4000, 4001, bytes(100)), mf=True)
    check(backend, DLT_EN10MB, frame, "ported", "ok", proto=IPPROTO_UDP,
          ports=(4000, 4001), addrs=V4)


@pytest.mark.parametrize("mf", [False, True])
@pytest.mark.parametrize("frag_offset", [1, 185, 0x1FFF])
def test_ipv4_nonfirst_fragment_is_fragment(backend, frag_offset, mf):
    frame = eth() + ipv4(*V4, IPPROTO_TCP, tcp(1, 2), frag_offset=frag_offset, mf=mf)
    check(backend, DLT_EN10MB, frame, "ip_other", "fragment", proto=IPPROTO_TCP, addrs=V4)


def test_ipv4_dont_fragment_and_reserved_flags_have_ports(backend):
    frame = bytearray(eth() + ipv4(*V4, IPPROTO_TCP, tcp(1, 2), df=True))
    frame[14 + 6] |= 0x80
    check(backend, DLT_EN10MB, bytes(frame), "ported", "ok", proto=IPPROTO_TCP,
          ports=(1, 2), addrs=V4)


@pytest.mark.parametrize("proto, payload", [
    (IPPROTO_ICMP, icmp(8, 0, b"ping")), (IPPROTO_GRE, bytes(8)), (IPPROTO_ESP, bytes(16)),
    (IPPROTO_IPIP, udp4()), (IPPROTO_IPV6, udp6()), (IPPROTO_AH, ah(IPPROTO_TCP) + tcp(1, 2)),
    (IPPROTO_ICMPV6, bytes(8)), (255, bytes(8))])
def test_ipv4_no_ports_protocol(backend, proto, payload):
    check(backend, DLT_EN10MB, eth() + ipv4(*V4, proto, payload), "ip_other",
          "no_ports_protocol", proto=proto, addrs=V4)


def test_ipv4_no_ports_protocol_with_no_payload(backend):
    check(backend, DLT_RAW, ipv4(*V4, IPPROTO_ICMP), "ip_other", "no_ports_protocol",
          proto=IPPROTO_ICMP, addrs=V4)


def test_ipv4_udp_vxlan_counts_outer_ports_only(backend):
    vxlan = b"\x08\x00\x00\x00\x00\x00\x64\x00" + eth() + udp4(1111, 2222)
    frame = eth() + ipv4(*V4, IPPROTO_UDP, udp(49152, 4789, vxlan))
    check(backend, DLT_EN10MB, frame, "ported", "ok", proto=IPPROTO_UDP,
          ports=(49152, 4789), addrs=V4)


@pytest.mark.parametrize("proto", sorted(PORT_BUILDERS))
@pytest.mark.parametrize("port_bytes", [0, 1, 3])
def test_ipv4_ports_cut_is_truncated_ports(backend, proto, port_bytes):
    frame = eth() + ipv4(*V4, proto, PORT_BUILDERS[proto](1, 2))[:20 + port_bytes]
    check(backend, DLT_EN10MB, frame, "truncated", "truncated_ports", proto=proto, addrs=V4)


def test_ipv4_exactly_four_port_bytes_is_ported(backend):
    frame = eth() + ipv4(*V4, IPPROTO_TCP, tcp(1, 2))[:24]
    check(backend, DLT_EN10MB, frame, "ported", "ok", proto=IPPROTO_TCP, ports=(1, 2),
          addrs=V4)


def test_ipv4_ports_cut_by_snaplen_after_options(backend):
    frame = ipv4(*V4, IPPROTO_UDP, udp(1, 2), options=bytes(8))
    check(backend, DLT_RAW, frame[:30], "truncated", "truncated_ports", proto=IPPROTO_UDP,
          addrs=V4, orig_len=len(frame), wire_len=len(frame))


@pytest.mark.parametrize("total_length", [0, 20, 21, 65535])
def test_ipv4_total_length_is_ignored(backend, total_length):
    frame = ipv4(*V4, IPPROTO_UDP, udp(5, 6), total_length=total_length)
    check(backend, DLT_RAW, frame, "ported", "ok", proto=IPPROTO_UDP, ports=(5, 6),
          addrs=V4)


def test_ipv4_addresses_are_v4_mapped(backend):
    record = parse(backend, DLT_RAW, ipv4("1.2.3.4", "255.254.253.252", IPPROTO_UDP,
                                          udp(1, 2)))
    assert bytes(record["src_addr"]) == bytes(10) + b"\xff\xff\x01\x02\x03\x04"
    assert bytes(record["dst_addr"]) == bytes(10) + b"\xff\xff\xff\xfe\xfd\xfc"


# --- IPv6 --------------------------------------------------------------------

def test_ipv6_hbh_udp(backend):
    frame = ipv6(*V6, IPPROTO_HOPOPTS, hbh(IPPROTO_UDP) + udp(546, 547))
    check(backend, DLT_RAW, frame, "ported", "ok", proto=IPPROTO_UDP, ports=(546, 547),
          addrs=V6)


def test_ipv6_routing_tcp(backend):
    frame = ipv6(*V6, IPPROTO_ROUTING, routing(IPPROTO_TCP, ["2001:db8::9"] * 2) + tcp(1, 2))
    check(backend, DLT_RAW, frame, "ported", "ok", proto=IPPROTO_TCP, ports=(1, 2),
          addrs=V6)


def test_ipv6_dstopts_sctp(backend):
    frame = ipv6(*V6, IPPROTO_DSTOPTS, dstopts(IPPROTO_SCTP, length=24) + sctp(36412, 36412))
    check(backend, DLT_RAW, frame, "ported", "ok", proto=IPPROTO_SCTP,
          ports=(36412, 36412), addrs=V6)


def test_eth_ipv6_hbh_dstopts_routing_frag_ah_dstopts_udp(backend):
    chain = (hbh(IPPROTO_DSTOPTS, length=16) + dstopts(IPPROTO_ROUTING)
             + routing(IPPROTO_FRAGMENT, ["2001:db8::5"]) + frag6(IPPROTO_AH, more=True)
             + ah(IPPROTO_DSTOPTS, icv=bytes(20)) + dstopts(IPPROTO_UDP, length=40)
             + udp(1, 65535))
    frame = eth(et=ETH_IPV6) + ipv6(*V6, IPPROTO_HOPOPTS, chain)
    check(backend, DLT_EN10MB, frame, "ported", "ok", proto=IPPROTO_UDP, ports=(1, 65535),
          addrs=V6)


def test_ipv6_fragment_first_has_ports(backend):
    frame = ipv6(*V6, IPPROTO_FRAGMENT, frag6(IPPROTO_UDP, offset=0, more=True)
                 + udp(1000, 2000, bytes(64)))
    check(backend, DLT_RAW, frame, "ported", "ok", proto=IPPROTO_UDP, ports=(1000, 2000),
          addrs=V6)


@pytest.mark.parametrize("more", [False, True])
@pytest.mark.parametrize("offset", [1, 0x1FFF])
def test_ipv6_fragment_nonzero_offset(backend, offset, more):
    frame = ipv6(*V6, IPPROTO_FRAGMENT, frag6(IPPROTO_UDP, offset=offset, more=more)
                 + bytes(16))
    check(backend, DLT_RAW, frame, "ip_other", "fragment", proto=IPPROTO_UDP, addrs=V6)


def test_ipv6_hbh_fragment_nonzero_offset_without_payload(backend):
    frame = ipv6(*V6, IPPROTO_HOPOPTS, hbh(IPPROTO_FRAGMENT) + frag6(IPPROTO_TCP, offset=9))
    check(backend, DLT_RAW, frame, "ip_other", "fragment", proto=IPPROTO_TCP, addrs=V6)


def test_ipv6_fragment_reserved_bits_are_not_offset(backend):
    frame = bytearray(ipv6(*V6, IPPROTO_FRAGMENT, frag6(IPPROTO_UDP) + udp(1, 2)))
    frame[40 + 3] |= 0x06
    check(backend, DLT_RAW, bytes(frame), "ported", "ok", proto=IPPROTO_UDP, ports=(1, 2),
          addrs=V6)


def test_ipv6_ah_then_tcp(backend):
    frame = ipv6(*V6, IPPROTO_AH, ah(IPPROTO_TCP) + tcp(179, 33000))
    check(backend, DLT_RAW, frame, "ported", "ok", proto=IPPROTO_TCP, ports=(179, 33000),
          addrs=V6)


def test_ipv6_ah_length_in_4_byte_units(backend):
    frame = ipv6(*V6, IPPROTO_AH, ah(IPPROTO_UDP, icv=bytes(16)) + udp(11, 12))
    check(backend, DLT_RAW, frame, "ported", "ok", proto=IPPROTO_UDP, ports=(11, 12),
          addrs=V6)


@pytest.mark.parametrize("nh, header", [
    (IPPROTO_HOPOPTS, hbh(IPPROTO_UDP)), (IPPROTO_ROUTING, routing(IPPROTO_UDP)),
    (IPPROTO_DSTOPTS, dstopts(IPPROTO_UDP)), (IPPROTO_FRAGMENT, frag6(IPPROTO_UDP)),
    (IPPROTO_AH, ah(IPPROTO_UDP))])
@pytest.mark.parametrize("cut", [0, 1, 2, 7])
def test_ipv6_ext_header_cut_is_truncated_ext_header(backend, nh, header, cut):
    frame = ipv6(*V6, nh, header + udp(1, 2))[:40 + cut]
    check(backend, DLT_RAW, frame, "truncated", "truncated_ext_header", proto=nh, addrs=V6)


def test_ipv6_ext_header_length_past_caplen(backend):
    frame = ipv6(*V6, IPPROTO_HOPOPTS, hbh(IPPROTO_UDP, length=2048)[:100])
    check(backend, DLT_RAW, frame, "truncated", "truncated_ext_header",
          proto=IPPROTO_HOPOPTS, addrs=V6)


def test_ipv6_routing_cut_after_hbh_reports_routing(backend):
    frame = ipv6(*V6, IPPROTO_HOPOPTS, hbh(IPPROTO_ROUTING) + routing(IPPROTO_TCP)[:5])
    check(backend, DLT_RAW, frame, "truncated", "truncated_ext_header",
          proto=IPPROTO_ROUTING, addrs=V6)


def test_ipv6_chain_ending_at_caplen_is_truncated_ext_header(backend):
    frame = ipv6(*V6, IPPROTO_HOPOPTS, hbh(IPPROTO_DSTOPTS) + dstopts(IPPROTO_HOPOPTS))
    check(backend, DLT_RAW, frame, "truncated", "truncated_ext_header",
          proto=IPPROTO_HOPOPTS, addrs=V6)


def test_ipv6_chain_ending_at_caplen_with_tcp_is_truncated_ports(backend):
    frame = ipv6(*V6, IPPROTO_HOPOPTS, hbh(IPPROTO_DSTOPTS) + dstopts(IPPROTO_TCP))
    check(backend, DLT_RAW, frame, "truncated", "truncated_ports", proto=IPPROTO_TCP,
          addrs=V6)


@pytest.mark.parametrize("nh", [IPPROTO_NONE, IPPROTO_ICMPV6, IPPROTO_ESP, IPPROTO_GRE,
                                IPPROTO_IPV6, 135, 139, 253])
def test_ipv6_no_ports_protocol(backend, nh):
    frame = ipv6(*V6, nh, bytes(24))
    check(backend, DLT_RAW, frame, "ip_other", "no_ports_protocol", proto=nh, addrs=V6)


def test_ipv6_hbh_then_icmpv6_is_no_ports_protocol(backend):
    frame = ipv6(*V6, IPPROTO_HOPOPTS, hbh(IPPROTO_ICMPV6) + bytes(8))
    check(backend, DLT_RAW, frame, "ip_other", "no_ports_protocol", proto=IPPROTO_ICMPV6,
          addrs=V6)


@pytest.mark.parametrize("port_bytes", [0, 3])
def test_ipv6_ports_cut_is_truncated_ports(backend, port_bytes):
    frame = ipv6(*V6, IPPROTO_UDP, udp(1, 2))[:40 + port_bytes]
    check(backend, DLT_RAW, frame, "truncated", "truncated_ports", proto=IPPROTO_UDP,
          addrs=V6)


def test_ipv6_payload_length_is_ignored(backend):
    frame = ipv6(*V6, IPPROTO_TCP, tcp(1, 2), payload_length=0)
    check(backend, DLT_RAW, frame, "ported", "ok", proto=IPPROTO_TCP, ports=(1, 2),
          addrs=V6)


def test_ipv6_addresses_are_copied(backend):
    src, dst = "fe80::1:2:3:4", "ff02::1:ff00:1"
    record = parse(backend, DLT_RAW, ipv6(src, dst, IPPROTO_UDP, udp(1, 2)))
    assert bytes(record["src_addr"]) == ipaddress.IPv6Address(src).packed
    assert bytes(record["dst_addr"]) == ipaddress.IPv6Address(dst).packed


# --- record fields -----------------------------------------------------------

@pytest.mark.parametrize("orig_len", [0, 10, 46])
def test_caplen_gt_origlen_uses_caplen(backend, orig_len):
    frame = eth() + udp4(1, 2)
    check(backend, DLT_EN10MB, frame, "ported", "ok", proto=IPPROTO_UDP, ports=(1, 2),
          addrs=V4, orig_len=orig_len, wire_len=len(frame))


def test_origlen_gt_caplen_uses_origlen(backend):
    frame = (eth() + udp4(1, 2, bytes(1000)))[:64]
    check(backend, DLT_EN10MB, frame, "ported", "ok", proto=IPPROTO_UDP, ports=(1, 2),
          addrs=V4, orig_len=1042, wire_len=1042)


def test_origlen_max_uint32(backend):
    check(backend, DLT_RAW, udp4(1, 2), "ported", "ok", proto=IPPROTO_UDP, ports=(1, 2),
          addrs=V4, orig_len=2**32 - 1, wire_len=2**32 - 1)


def test_src_eq_dst_port(backend):
    check(backend, DLT_EN10MB, eth() + udp4(123, 123), "ported", "ok", proto=IPPROTO_UDP,
          ports=(123, 123), addrs=V4)


@pytest.mark.parametrize("ts_ns, iface", [(0, 0), (2**64 - 1, 65535),
                                          (1_700_000_000_123_456_789, 7)])
def test_ts_ns_and_iface_are_copied(backend, ts_ns, iface):
    record = parse(backend, DLT_EN10MB, eth(et=ETH_ARP) + arp(), ts_ns=ts_ns, iface=iface)
    assert (int(record["ts_ns"]), int(record["iface"])) == (ts_ns, iface)


def test_non_ip_record_has_zero_proto_ports_and_addresses(backend):
    record = parse(backend, DLT_EN10MB, eth(et=ETH_ARP) + arp())
    assert int(record["proto"]) == 0
    assert bytes(record["src_addr"]) == bytes(record["dst_addr"]) == bytes(16)


def test_batch_with_gaps_fills_only_n_records(backend):
    frames = [eth() + udp4(1, 2), eth(et=ETH_ARP) + arp(), (eth() + tcp4(3, 4))[:14 + 22],
              b""]
    data, offsets = bytearray(b"\xee" * 5), []
    for frame in frames:
        offsets.append(len(data))
        data += frame + b"\xee" * 3
    caplens = [len(frame) for frame in frames]
    out = np.zeros(len(frames) + 2, RECORD_DTYPE)
    out["ts_ns"][-2:] = 99
    backend.parse_batch(DLT_EN10MB, np.frombuffer(bytes(data), np.uint8),
                        np.array(offsets, np.uint32), np.array(caplens, np.uint32),
                        np.array([c + 100 for c in caplens], np.uint32),
                        np.arange(len(frames), dtype=np.uint64), 3, out)
    got = [(CLASS_NAMES[r["pkt_class"]], REASON_NAMES[r["reason"]], int(r["wire_len"]),
            int(r["ts_ns"]), int(r["iface"])) for r in out[:len(frames)]]
    assert got == [("ported", "ok", caplens[0] + 100, 0, 3),
                   ("non_ip", "non_ip_ethertype", caplens[1] + 100, 1, 3),
                   ("truncated", "truncated_ports", 136, 2, 3),
                   ("truncated", "truncated_link", 100, 3, 3)]
    assert out["ts_ns"][-2:].tolist() == [99, 99]
    assert not out[-2:]["pkt_class"].any()


def test_empty_batch(backend):
    out = np.zeros(1, RECORD_DTYPE)
    out["ts_ns"] = 5
    empty32 = np.zeros(0, np.uint32)
    backend.parse_batch(DLT_EN10MB, b"", empty32, empty32, empty32, np.zeros(0, np.uint64),
                        0, out)
    assert int(out[0]["ts_ns"]) == 5


@pytest.mark.parametrize("linktype", [9, 105, 127, 274, 1000])
def test_unsupported_linktype_raises(backend, linktype):
    frame = udp4()
    with pytest.raises(ValueError, match=str(linktype)):
        backend.parse_batch(linktype, frame, np.array([0], np.uint32),
                            np.array([len(frame)], np.uint32),
                            np.array([len(frame)], np.uint32), np.array([0], np.uint64), 0,
                            np.zeros(1, RECORD_DTYPE))


# --- reduce on parsed frames --------------------------------------------------

def _tables():
    rows = N_PROTOS * N_PORTS
    return (np.zeros((rows, 4), np.uint64), np.zeros((4, 2), np.uint64),
            np.zeros(rows, np.uint32), np.zeros(4, np.uint64))


def _parse_many(backend, linktype, frames, ts_list):
    data = b"".join(frames)
    offsets = np.cumsum([0] + [len(f) for f in frames[:-1]]).astype(np.uint32)
    caplens = np.array([len(f) for f in frames], np.uint32)
    out = np.zeros(len(frames), RECORD_DTYPE)
    backend.parse_batch(linktype, data, offsets, caplens, caplens,
                        np.array(ts_list, np.uint64), 0, out)
    return out


def _row(proto, port):
    return PROTO_INDEX[proto] * N_PORTS + port


def test_reduce_counts_in_out_and_classes(backend):
    frames = [eth() + udp4(40000, 53), eth() + udp4(53, 40000), eth() + tcp4(40000, 443),
              eth(et=ETH_ARP) + arp(), eth() + ipv4(*V4, IPPROTO_ICMP, icmp())]
    records = _parse_many(backend, DLT_EN10MB, frames, [10, 20, 30, 40, 50])
    counters, classes, touched, state = _tables()
    stopped = backend.reduce_records(records, 0, len(records), 1000, counters, classes,
                                     touched, state)
    assert stopped == len(records)
    sizes = [len(f) for f in frames]
    assert counters[_row(IPPROTO_UDP, 53)].tolist() == [1, sizes[0], 1, sizes[1]]
    assert counters[_row(IPPROTO_UDP, 40000)].tolist() == [1, sizes[1], 1, sizes[0]]
    assert counters[_row(IPPROTO_TCP, 443)].tolist() == [1, sizes[2], 0, 0]
    assert counters[_row(IPPROTO_TCP, 40000)].tolist() == [0, 0, 1, sizes[2]]
    assert classes.tolist() == [[3, sum(sizes[:3])], [1, sizes[4]], [1, sizes[3]], [0, 0]]
    assert int(state[0]) == 4
    assert touched[:4].tolist() == [_row(IPPROTO_UDP, 53), _row(IPPROTO_UDP, 40000),
                                    _row(IPPROTO_TCP, 443), _row(IPPROTO_TCP, 40000)]


def test_reduce_src_eq_dst_port_touches_row_once(backend):
    frame = eth() + udp4(123, 123)
    records = _parse_many(backend, DLT_EN10MB, [frame, frame], [1, 2])
    counters, classes, touched, state = _tables()
    backend.reduce_records(records, 0, 2, 10, counters, classes, touched, state)
    assert int(state[0]) == 1
    assert int(touched[0]) == _row(IPPROTO_UDP, 123)
    assert counters[_row(IPPROTO_UDP, 123)].tolist() == [2, 2 * len(frame), 2, 2 * len(frame)]


def test_reduce_stops_at_window_end(backend):
    frames = [eth() + udp4(1, 2)] * 4
    records = _parse_many(backend, DLT_EN10MB, frames, [5, 9, 10, 11])
    counters, classes, touched, state = _tables()
    assert backend.reduce_records(records, 1, 4, 10, counters, classes, touched, state) == 2
    assert classes[0].tolist() == [1, len(frames[0])]
    assert backend.reduce_records(records, 2, 4, 100, counters, classes, touched, state) == 4
    assert classes[0].tolist() == [3, 3 * len(frames[0])]
    assert int(state[0]) == 2


def test_reduce_counts_wire_len_not_caplen(backend):
    frame = (eth() + udp4(1, 2, bytes(1400)))[:60]
    out = np.zeros(1, RECORD_DTYPE)
    backend.parse_batch(DLT_EN10MB, frame, np.array([0], np.uint32),
                        np.array([60], np.uint32), np.array([1442], np.uint32),
                        np.array([0], np.uint64), 0, out)
    counters, classes, touched, state = _tables()
    backend.reduce_records(out, 0, 1, 1, counters, classes, touched, state)
    assert counters[_row(IPPROTO_UDP, 2)].tolist() == [1, 1442, 0, 0]
    assert classes[0].tolist() == [1, 1442]


# --- TCP fields (docs/quality-rules.md section 1) ------------------------------

def tcp_fields(record) -> dict:
    return {name: int(record[f"tcp_{name}"])
            for name in ("seq", "ack", "payload", "win", "flags", "info")}


def tcp_options(sport=51000, dport=443, payload=b"", options=bytes(8), **kw):
    """TCP with ``options`` (a multiple of 4 bytes) after the fixed header."""
    fixed = bytearray(tcp(sport, dport, b"", **kw))
    fixed[12] = (5 + len(options) // 4) << 4
    return bytes(fixed) + options + payload


NO_TCP = {"seq": 0, "ack": 0, "payload": 0, "win": 0, "flags": 0, "info": 0}


def test_tcp_fields_of_an_ipv4_segment(backend):
    frame = eth() + ipv4(*V4, IPPROTO_TCP, tcp(51000, 443, bytes(10), flags=0x18,
                                                 seq=0xFEDCBA98, ack=123456789, window=4321))
    assert tcp_fields(parse(backend, DLT_EN10MB, frame)) == {
        "seq": 0xFEDCBA98, "ack": 123456789, "payload": 10, "win": 4321, "flags": 0x18,
        "info": TCPI_HEADER}


def test_tcp_payload_excludes_options_and_ethernet_padding(backend):
    packet = ipv4(*V4, IPPROTO_TCP, tcp_options(payload=bytes(7), options=bytes(12)),
                  options=bytes(4))
    record = parse(backend, DLT_EN10MB, eth() + packet + bytes(9))
    assert tcp_fields(record)["payload"] == 7


def test_tcp_payload_of_a_snap_length_cut_frame_comes_from_the_ip_header(backend):
    frame = eth() + ipv4(*V4, IPPROTO_TCP, tcp(1, 2, bytes(1000)))
    record = parse(backend, DLT_EN10MB, frame, caplen=14 + 20 + 20 + 3)
    assert tcp_fields(record)["payload"] == 1000
    assert tcp_fields(record)["info"] == TCPI_HEADER


@pytest.mark.parametrize("total_length", [0, 5000])
def test_tcp_payload_falls_back_to_the_wire_length(backend, total_length):
    """IPv4 total length 0 (TSO) or beyond the wire: wire length minus the IP offset."""
    frame = eth() + ipv4(*V4, IPPROTO_TCP, tcp(1, 2, bytes(100)), total_length=total_length)
    record = parse(backend, DLT_EN10MB, frame, caplen=60, orig_len=len(frame) + 40)
    assert tcp_fields(record)["payload"] == 140


def test_tcp_negative_payload_is_flagged(backend):
    frame = ipv4(*V4, IPPROTO_TCP, tcp(1, 2, bytes(10)), total_length=30)
    fields_ = tcp_fields(parse(backend, DLT_RAW, frame))
    assert (fields_["payload"], fields_["info"]) == (0, TCPI_HEADER | TCPI_NEGATIVE_PAYLOAD)


def test_tcp_fields_of_an_ipv6_segment_behind_extension_headers(backend):
    frame = ipv6(*V6, IPPROTO_HOPOPTS, hbh(IPPROTO_DSTOPTS) + dstopts(IPPROTO_TCP, length=16)
                 + tcp(443, 51000, bytes(33), flags=0x11, seq=7, ack=9, window=0))
    assert tcp_fields(parse(backend, DLT_RAW, frame + bytes(4))) == {
        "seq": 7, "ack": 9, "payload": 33, "win": 0, "flags": 0x11,
        "info": TCPI_HEADER | TCPI_IPV6}


def test_tcp_ipv6_payload_length_0_falls_back_to_the_wire_length(backend):
    frame = ipv6(*V6, IPPROTO_TCP, tcp(1, 2, bytes(50)), payload_length=0)
    assert tcp_fields(parse(backend, DLT_RAW, frame))["payload"] == 50


def test_tcp_first_fragment_is_ported_but_marked(backend):
    frame = eth() + ipv4(*V4, IPPROTO_TCP, tcp(1, 2, bytes(40)), mf=True)
    record = check(backend, DLT_EN10MB, frame, "ported", "ok", proto=IPPROTO_TCP,
                   ports=(1, 2), addrs=V4)
    assert tcp_fields(record)["info"] == TCPI_HEADER | TCPI_FRAGMENT


@pytest.mark.parametrize("more, info", [(True, TCPI_HEADER | TCPI_IPV6 | TCPI_FRAGMENT),
                                        (False, TCPI_HEADER | TCPI_IPV6)])
def test_tcp_ipv6_fragment_header_marks_only_with_more_fragments(backend, more, info):
    """An atomic fragment (offset 0, M 0) is a whole segment."""
    frame = ipv6(*V6, IPPROTO_FRAGMENT, frag6(IPPROTO_TCP, more=more) + tcp(1, 2, bytes(8)))
    record = parse(backend, DLT_RAW, frame)
    assert tcp_fields(record)["info"] == info
    assert tcp_fields(record)["payload"] == 8


@pytest.mark.parametrize("cut", [4, 19])
def test_tcp_header_cut_leaves_the_fields_zero(backend, cut):
    frame = ipv4(*V4, IPPROTO_TCP, tcp(1, 2, bytes(10), seq=5))
    record = parse(backend, DLT_RAW, frame, caplen=20 + cut, orig_len=len(frame))
    assert CLASS_NAMES[record["pkt_class"]] == "ported"
    assert tcp_fields(record) == NO_TCP


@pytest.mark.parametrize("offset_words", [0, 4])
def test_tcp_data_offset_below_5_is_not_a_header(backend, offset_words):
    segment = bytearray(tcp(1, 2, bytes(10), seq=5))
    segment[12] = offset_words << 4
    record = parse(backend, DLT_RAW, ipv4(*V4, IPPROTO_TCP, bytes(segment)))
    assert tcp_fields(record) == NO_TCP


def test_tcp_options_not_all_captured_is_not_a_header(backend):
    frame = ipv6(*V6, IPPROTO_TCP, tcp_options(options=bytes(20), payload=bytes(5)))
    record = parse(backend, DLT_RAW, frame, caplen=40 + 30, orig_len=len(frame))
    assert tcp_fields(record) == {**NO_TCP, "info": TCPI_IPV6}


@pytest.mark.parametrize("frame", [udp4(), ipv4(*V4, IPPROTO_SCTP, sctp(1, 2, bytes(20)))])
def test_other_protocols_leave_the_tcp_fields_zero(backend, frame):
    assert tcp_fields(parse(backend, DLT_RAW, frame)) == NO_TCP
