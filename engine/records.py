"""The per-frame record, mirrored from ``ext/records.pxd`` (the layout doc lives there).

Also the packet classes, detail reasons, link-type names and the port-bearing
protocols with their row index in the counter tables.
"""
from __future__ import annotations

import enum

RECORD_SIZE = 72
# The last nanosecond a record can carry; a window reaching it includes it.
UINT64_MAX = (1 << 64) - 1


def _record_dtype():
    import numpy as np
    return np.dtype(
        {
            "names": ["ts_ns", "wire_len", "src_port", "dst_port", "proto", "pkt_class",
                      "iface", "reason", "pad", "src_addr", "dst_addr",
                      "tcp_seq", "tcp_ack", "tcp_payload", "tcp_win", "tcp_flags", "tcp_info"],
            "formats": ["<u8", "<u4", "<u2", "<u2", "u1", "u1", "<u2", "u1", ("u1", 3),
                        ("u1", 16), ("u1", 16), "<u4", "<u4", "<u4", "<u2", "u1", "u1"],
            "offsets": [0, 8, 12, 14, 16, 17, 18, 20, 21, 24, 40, 56, 60, 64, 68, 70, 71],
            "itemsize": RECORD_SIZE,
        }
    )


def __getattr__(name: str):
    # RECORD_DTYPE is built on first use: a capture process never imports
    # numpy, so it can start reading while the aggregator still imports it.
    if name == "RECORD_DTYPE":
        globals()["RECORD_DTYPE"] = dtype = _record_dtype()
        return dtype
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# tcp_info bits (TCPI_* in records.pxd): what decides whether a ported TCP
# packet is analysed (docs/quality-rules.md section 1).
TCPI_HEADER = 1             # the whole TCP header is captured; tcp_* fields are set
TCPI_FRAGMENT = 2           # a first fragment (IPv4 MF, IPv6 fragment header with M)
TCPI_NEGATIVE_PAYLOAD = 4   # the IP length fields give a negative payload
TCPI_NO_TIMESTAMP = 8       # the reader had no time for it (pcapng Simple Packet Block)
TCPI_IPV6 = 16              # the outermost IP header is IPv6

# TCP flag bits of tcp_flags.
TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10


class PacketClass(enum.IntEnum):
    """Counting-rules section 4: every frame lands in exactly one class."""

    PORTED = 0
    IP_OTHER = 1
    NON_IP = 2
    TRUNCATED = 3


CLASS_NAMES = ("ported", "ip_other", "non_ip", "truncated")

# Index = REASON_* value in records.pxd.
REASON_NAMES = (
    "ok",
    "non_ip_ethertype",
    "llc_frame",
    "non_ip_family",
    "mpls_non_ip",
    "ppp_non_ip",
    "fragment",
    "no_ports_protocol",
    "truncated_link",
    "bad_ip_version",
    "truncated_ip",
    "bad_ihl",
    "truncated_ip_options",
    "truncated_ext_header",
    "truncated_ports",
)

# Link types of counting-rules section 1, with libpcap's names.
SUPPORTED_LINKTYPES = {
    0: "NULL",
    1: "EN10MB",
    12: "RAW",
    14: "RAW",
    101: "RAW",
    108: "LOOP",
    113: "LINUX_SLL",
    228: "IPV4",
    229: "IPV6",
    276: "LINUX_SLL2",
}

# Names for link types we refuse, so errors can name them (pcap-linktype(7)).
OTHER_LINKTYPE_NAMES = {
    9: "PPP", 10: "FDDI", 50: "PPP_HDLC", 104: "C_HDLC", 105: "IEEE802_11",
    119: "PRISM_HEADER", 127: "IEEE802_11_RADIOTAP", 147: "USER0", 192: "PPI",
    195: "IEEE802_15_4_WITHFCS", 197: "ERF", 201: "BLUETOOTH_HCI_H4_WITH_PHDR",
    215: "IEEE802_15_4_NONASK_PHY", 220: "USB_LINUX_MMAPPED", 227: "CAN_SOCKETCAN",
    230: "IEEE802_15_4_NOFCS", 231: "DBUS", 249: "NFLOG", 253: "NETLINK",
    254: "BLUETOOTH_LINUX_MONITOR", 263: "WATTSTOPPER_DLM", 274: "ETHERNET_MPACKET",
}


def linktype_name(linktype: int) -> str:
    """libpcap's name for a link type number, or ``LINKTYPE_<n>`` if unknown."""
    return SUPPORTED_LINKTYPES.get(linktype) or OTHER_LINKTYPE_NAMES.get(
        linktype, f"LINKTYPE_{linktype}")


# Port-bearing protocols (counting-rules section 3): IP number -> stream name.
# The row index in counter tables is the position in this tuple.
PORT_PROTOCOLS = ((6, "tcp"), (17, "udp"), (132, "sctp"), (136, "udplite"), (33, "dccp"))
PROTO_NAMES = tuple(name for _, name in PORT_PROTOCOLS)
PROTO_INDEX = {number: i for i, (number, _) in enumerate(PORT_PROTOCOLS)}
N_PROTOS = len(PORT_PROTOCOLS)
N_PORTS = 65536
# Counter table columns.
COUNTER_COLUMNS = ("in_packets", "in_bytes", "out_packets", "out_bytes")


def _check_native_layout() -> None:
    """The record layout is written once (records.pxd) and checked here at import."""
    try:
        from . import _core
    except ImportError:
        return   # pt_engine.sources raises the clear error when the core is needed
    if _core.RECORD_SIZE != RECORD_SIZE:
        raise ImportError(f"pt_engine._core was built with {_core.RECORD_SIZE}-byte records, "
                          f"engine.records expects {RECORD_SIZE}: rebuild (pip install .)")


_check_native_layout()
