# The record ABI: the single definition of what the parser writes per frame.
#
# Layout of pkt_record_t (72 bytes, little-endian host order, every field
# naturally aligned, no implicit padding; mirrored by engine.records.RECORD_DTYPE
# and checked at import):
#
#   offset size field      meaning
#   ------ ---- ---------- ------------------------------------------------------
#        0    8 ts_ns      packet timestamp, ns since the epoch
#        8    4 wire_len   bytes on the wire: max(original length, captured length)
#       12    2 src_port   source port (0 unless pkt_class == CLASS_PORTED)
#       14    2 dst_port   destination port (0 unless pkt_class == CLASS_PORTED)
#       16    1 proto      IP protocol number (0 when no IP header was read)
#       17    1 pkt_class  one of CLASS_* (counting-rules section 4)
#       18    2 iface      source index (capture process / file), set by the reader
#       20    1 reason     one of REASON_* (why the class was chosen)
#       21    3 pad        zero
#       24   16 src_addr   IPv6 address, or IPv4 as ::ffff:a.b.c.d; zero if unread
#       40   16 dst_addr   same for the destination
#       56    4 tcp_seq    TCP sequence number      } TCP records only (proto 6,
#       60    4 tcp_ack    TCP acknowledgment number} pkt_class CLASS_PORTED) whose
#       64    4 tcp_payload payload length P        } TCP header is captured
#       68    2 tcp_win    TCP window field         } (TCPI_HEADER); zero otherwise
#       70    1 tcp_flags  TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10, ...)
#       71    1 tcp_info   TCPI_* bits (TCP records only; zero otherwise)
#
# tcp_payload is docs/quality-rules.md section 1's P: the datagram length
# from the IP header (IPv4 total length, 40 + IPv6 payload length; the wire
# length minus the IP header's offset when that field is 0 or the datagram
# would reach past the wire length), minus the IP header (IPv6: with the
# extension headers walked), minus data offset * 4. Never the captured
# length. A negative P is written as 0 with TCPI_NEGATIVE_PAYLOAD.
#
# Records live in shared memory (engine.transport) and are read by another
# process, so the layout is part of the transport contract too.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from *:
    """
    #pragma pack(push, 1)
    typedef struct pkt_record_t {
        uint64_t ts_ns;
        uint32_t wire_len;
        uint16_t src_port;
        uint16_t dst_port;
        uint8_t  proto;
        uint8_t  pkt_class;
        uint16_t iface;
        uint8_t  reason;
        uint8_t  pad[3];
        uint8_t  src_addr[16];
        uint8_t  dst_addr[16];
        uint32_t tcp_seq;
        uint32_t tcp_ack;
        uint32_t tcp_payload;
        uint16_t tcp_win;
        uint8_t  tcp_flags;
        uint8_t  tcp_info;
    } pkt_record_t;
    #pragma pack(pop)
    """
    ctypedef struct pkt_record_t:
        uint64_t ts_ns
        uint32_t wire_len
        uint16_t src_port
        uint16_t dst_port
        uint8_t proto
        uint8_t pkt_class
        uint16_t iface
        uint8_t reason
        uint8_t pad[3]
        uint8_t src_addr[16]
        uint8_t dst_addr[16]
        uint32_t tcp_seq
        uint32_t tcp_ack
        uint32_t tcp_payload
        uint16_t tcp_win
        uint8_t tcp_flags
        uint8_t tcp_info

# tcp_info bits (docs/quality-rules.md section 1 decides from them whether a
# TCP packet is analysed; names in engine.records.TCPI_*).
cdef enum:
    TCPI_HEADER = 1             # >= 20 bytes, data offset >= 5, data offset * 4 bytes captured
    TCPI_FRAGMENT = 2           # IPv4 MF set, or an IPv6 fragment header with M set
    TCPI_NEGATIVE_PAYLOAD = 4   # P < 0 (tcp_payload is then 0)
    TCPI_NO_TIMESTAMP = 8       # the reader had no time for it (pcapng Simple Packet Block)
    TCPI_IPV6 = 16              # the outermost IP header is IPv6

# Packet classes (counting-rules section 4). Every frame gets exactly one.
cdef enum:
    CLASS_PORTED = 0
    CLASS_IP_OTHER = 1
    CLASS_NON_IP = 2
    CLASS_TRUNCATED = 3
    N_CLASSES = 4

# Detail reasons; names in engine.records.REASON_NAMES.
cdef enum:
    REASON_OK = 0                 # ported
    REASON_NON_IP_ETHERTYPE = 1   # non_ip: EtherType that is not IP (ARP, LLDP, ...)
    REASON_LLC_FRAME = 2          # non_ip: 802.3 length field (< 0x0600): LLC/SNAP
    REASON_NON_IP_FAMILY = 3      # non_ip: NULL/LOOP address family not IPv4/IPv6
    REASON_MPLS_NON_IP = 4        # non_ip: MPLS payload nibble neither 4 nor 6
    REASON_PPP_NON_IP = 5         # non_ip: PPPoE session, PPP protocol not IP
    REASON_FRAGMENT = 6           # ip_other: non-first fragment
    REASON_NO_PORTS_PROTO = 7     # ip_other: protocol without ports (ICMP, GRE, ...)
    REASON_TRUNCATED_LINK = 8     # truncated: link header, tag, label or PPPoE cut
    REASON_BAD_IP_VERSION = 9     # truncated: version nibble wrong for the dispatch
    REASON_TRUNCATED_IP = 10      # truncated: fixed IPv4 (20) / IPv6 (40) header cut
    REASON_BAD_IHL = 11           # truncated: IPv4 IHL < 5
    REASON_TRUNCATED_IP_OPTIONS = 12  # truncated: IHL*4 bytes not all captured
    REASON_TRUNCATED_EXT_HEADER = 13  # truncated: IPv6 extension header past caplen
    REASON_TRUNCATED_PORTS = 14   # truncated: fewer than 4 transport bytes captured

# Link types decoded (counting-rules section 1).
cdef enum:
    LINK_NULL = 0
    LINK_EN10MB = 1
    LINK_RAW_12 = 12
    LINK_RAW_14 = 14
    LINK_RAW = 101
    LINK_LOOP = 108
    LINK_LINUX_SLL = 113
    LINK_IPV4 = 228
    LINK_IPV6 = 229
    LINK_LINUX_SLL2 = 276

# Port-bearing protocols and their counter-table index (counting-rules section 3).
cdef enum:
    PROTO_TCP = 6
    PROTO_UDP = 17
    PROTO_DCCP = 33
    PROTO_SCTP = 132
    PROTO_UDPLITE = 136
