# Link-layer dispatch, VLAN/MPLS/PPPoE, IPv4/IPv6 extension headers, ports.
# Included by _core.pyx. Every function here distrusts packet bytes only:
# it never reads past caplen, never raises, and gives each frame one class
# and one reason (counting-rules sections 1-5). engine/_reference.py is the
# pure-Python twin and must agree byte for byte.

cdef enum:
    ETH_IPV4 = 0x0800
    ETH_IPV6 = 0x86DD
    ETH_VLAN = 0x8100
    ETH_QINQ = 0x88A8
    ETH_VLAN_9100 = 0x9100
    ETH_MPLS_UC = 0x8847
    ETH_MPLS_MC = 0x8848
    ETH_PPPOE_SESSION = 0x8864
    PPP_IPV4 = 0x0021
    PPP_IPV6 = 0x0057


cdef inline void rec_mark(pkt_record_t* r, uint8_t cls, uint8_t reason) noexcept nogil:
    r.pkt_class = cls
    r.reason = reason


cdef inline bint is_port_proto(uint8_t proto) noexcept nogil:
    return (proto == PROTO_TCP or proto == PROTO_UDP or proto == PROTO_SCTP
            or proto == PROTO_UDPLITE or proto == PROTO_DCCP)


cdef inline bint is_inet6_family(uint32_t fam) noexcept nogil:
    # AF_INET6 is 10 on Linux, 24 on NetBSD/OpenBSD, 28 on FreeBSD, 30 on macOS.
    return fam == 10 or fam == 24 or fam == 28 or fam == 30


cdef inline void parse_tcp(const uint8_t* f, uint32_t c, uint32_t L, uint32_t ip_off,
                           uint32_t dgram, uint8_t info, pkt_record_t* r) noexcept nogil:
    # The TCP fields of a ported TCP record (records.pxd, docs/quality-rules.md
    # section 1). `c` is the TCP header's offset, `ip_off` the outermost IP
    # header's, `dgram` the datagram length its header gives (0: none given).
    cdef uint32_t doff
    cdef int64_t payload
    r.tcp_info = info
    if not cur_has(c, L, 20):
        return
    doff = (<uint32_t>f[c + 12] >> 4) * 4
    if doff < 20 or not cur_has(c, L, doff):
        return
    r.tcp_seq = cur_read_u32(f, c + 4)
    r.tcp_ack = cur_read_u32(f, c + 8)
    r.tcp_flags = f[c + 13]
    r.tcp_win = cur_read_u16(f, c + 14)
    # ip_off <= caplen <= wire_len: the fallback is never negative.
    if dgram == 0 or <uint64_t>ip_off + dgram > r.wire_len:
        dgram = r.wire_len - ip_off
    payload = <int64_t>dgram - <int64_t>(c - ip_off) - <int64_t>doff
    if payload < 0:
        r.tcp_info = info | TCPI_HEADER | TCPI_NEGATIVE_PAYLOAD
    else:
        r.tcp_payload = <uint32_t>payload
        r.tcp_info = info | TCPI_HEADER


cdef inline void parse_transport(const uint8_t* f, uint32_t c, uint32_t L,
                                 uint8_t proto, uint32_t ip_off, uint32_t dgram,
                                 uint8_t info, pkt_record_t* r) noexcept nogil:
    r.proto = proto
    if not is_port_proto(proto):
        rec_mark(r, CLASS_IP_OTHER, REASON_NO_PORTS_PROTO)
    elif not cur_has(c, L, 4):
        rec_mark(r, CLASS_TRUNCATED, REASON_TRUNCATED_PORTS)
    else:
        r.src_port = cur_read_u16(f, c)
        r.dst_port = cur_read_u16(f, c + 2)
        rec_mark(r, CLASS_PORTED, REASON_OK)
        if proto == PROTO_TCP:
            parse_tcp(f, c, L, ip_off, dgram, info, r)


cdef inline void set_v4_mapped(uint8_t* dst, const uint8_t* a) noexcept nogil:
    # ::ffff:a.b.c.d (RFC 4291 2.5.5.2); the record was zeroed beforehand.
    dst[10] = 0xFF
    dst[11] = 0xFF
    memcpy(dst + 12, a, 4)


cdef void parse_ipv4(const uint8_t* f, uint32_t c, uint32_t L, pkt_record_t* r) noexcept nogil:
    cdef uint32_t hlen
    if not cur_has(c, L, 20):
        rec_mark(r, CLASS_TRUNCATED, REASON_TRUNCATED_IP)
        return
    if (f[c] >> 4) != 4:
        rec_mark(r, CLASS_TRUNCATED, REASON_BAD_IP_VERSION)
        return
    set_v4_mapped(r.src_addr, f + c + 12)
    set_v4_mapped(r.dst_addr, f + c + 16)
    r.proto = f[c + 9]
    hlen = (f[c] & 0x0F) * 4
    if hlen < 20:
        rec_mark(r, CLASS_TRUNCATED, REASON_BAD_IHL)
    elif not cur_has(c, L, hlen):
        # Section 5: a header cut inside its options is truncated, even when
        # the fragment offset says there would be no ports anyway.
        rec_mark(r, CLASS_TRUNCATED, REASON_TRUNCATED_IP_OPTIONS)
    elif cur_read_u16(f, c + 6) & 0x1FFF:
        rec_mark(r, CLASS_IP_OTHER, REASON_FRAGMENT)
    else:
        # A first fragment has ports (counted) but is no whole segment (MF).
        parse_transport(f, c + hlen, L, r.proto, c, cur_read_u16(f, c + 2),
                        TCPI_FRAGMENT if cur_read_u16(f, c + 6) & 0x2000 else 0, r)


cdef void parse_ipv6(const uint8_t* f, uint32_t c, uint32_t L, pkt_record_t* r) noexcept nogil:
    cdef uint8_t nh
    cdef uint32_t hlen, dgram
    cdef uint32_t ip_off = c
    cdef uint8_t info = TCPI_IPV6
    if not cur_has(c, L, 40):
        rec_mark(r, CLASS_TRUNCATED, REASON_TRUNCATED_IP)
        return
    if (f[c] >> 4) != 6:
        rec_mark(r, CLASS_TRUNCATED, REASON_BAD_IP_VERSION)
        return
    memcpy(r.src_addr, f + c + 8, 16)
    memcpy(r.dst_addr, f + c + 24, 16)
    nh = f[c + 6]
    r.proto = nh
    dgram = cur_read_u16(f, c + 4)
    if dgram != 0:
        dgram += 40
    c += 40
    # Section 2: walk hop-by-hop, routing, destination options, fragment and
    # AH; stop at the first other value. Each step advances >= 8 bytes, so the
    # loop is bounded by caplen.
    while nh == 0 or nh == 43 or nh == 60 or nh == 44 or nh == 51:
        if not cur_has(c, L, 2):
            rec_mark(r, CLASS_TRUNCATED, REASON_TRUNCATED_EXT_HEADER)
            return
        if nh == 51:
            hlen = (<uint32_t>f[c + 1] + 2) * 4    # RFC 4302: 32-bit words minus 2
        elif nh == 44:
            hlen = 8
        else:
            hlen = (<uint32_t>f[c + 1] + 1) * 8    # RFC 8200: 8-octet units minus 1
        if not cur_has(c, L, hlen):
            rec_mark(r, CLASS_TRUNCATED, REASON_TRUNCATED_EXT_HEADER)
            return
        if nh == 44 and (cur_read_u16(f, c + 2) >> 3) != 0:
            r.proto = f[c]
            rec_mark(r, CLASS_IP_OTHER, REASON_FRAGMENT)
            return
        if nh == 44 and (f[c + 3] & 1):
            info |= TCPI_FRAGMENT       # a first fragment, more to come
        nh = f[c]
        r.proto = nh
        c += hlen
    parse_transport(f, c, L, nh, ip_off, dgram, info, r)


cdef inline void parse_by_version(const uint8_t* f, uint32_t c, uint32_t L,
                                  pkt_record_t* r) noexcept nogil:
    # RAW / IPV4 / IPV6 link types: section 5, dispatch on the version nibble.
    if not cur_has(c, L, 1):
        rec_mark(r, CLASS_TRUNCATED, REASON_TRUNCATED_IP)
    elif (f[c] >> 4) == 4:
        parse_ipv4(f, c, L, r)
    elif (f[c] >> 4) == 6:
        parse_ipv6(f, c, L, r)
    else:
        rec_mark(r, CLASS_TRUNCATED, REASON_BAD_IP_VERSION)


cdef void parse_ethertype(const uint8_t* f, uint32_t c, uint32_t L, uint16_t et,
                          pkt_record_t* r) noexcept nogil:
    cdef uint8_t nibble
    cdef uint16_t ppp
    while et == ETH_VLAN or et == ETH_QINQ or et == ETH_VLAN_9100:
        if not cur_has(c, L, 4):
            rec_mark(r, CLASS_TRUNCATED, REASON_TRUNCATED_LINK)
            return
        et = cur_read_u16(f, c + 2)
        c += 4
    if et < 0x0600:
        rec_mark(r, CLASS_NON_IP, REASON_LLC_FRAME)
    elif et == ETH_IPV4:
        parse_ipv4(f, c, L, r)
    elif et == ETH_IPV6:
        parse_ipv6(f, c, L, r)
    elif et == ETH_MPLS_UC or et == ETH_MPLS_MC:
        while True:
            if not cur_has(c, L, 4):
                rec_mark(r, CLASS_TRUNCATED, REASON_TRUNCATED_LINK)
                return
            c += 4
            if f[c - 2] & 1:     # bottom of stack (RFC 3032)
                break
        if not cur_has(c, L, 1):
            rec_mark(r, CLASS_TRUNCATED, REASON_TRUNCATED_LINK)
            return
        nibble = f[c] >> 4
        if nibble == 4:
            parse_ipv4(f, c, L, r)
        elif nibble == 6:
            parse_ipv6(f, c, L, r)
        else:
            rec_mark(r, CLASS_NON_IP, REASON_MPLS_NON_IP)
    elif et == ETH_PPPOE_SESSION:
        # RFC 2516: 6-byte PPPoE header, then the 2-byte PPP protocol.
        if not cur_has(c, L, 8):
            rec_mark(r, CLASS_TRUNCATED, REASON_TRUNCATED_LINK)
            return
        ppp = cur_read_u16(f, c + 6)
        c += 8
        if ppp == PPP_IPV4:
            parse_ipv4(f, c, L, r)
        elif ppp == PPP_IPV6:
            parse_ipv6(f, c, L, r)
        else:
            rec_mark(r, CLASS_NON_IP, REASON_PPP_NON_IP)
    else:
        rec_mark(r, CLASS_NON_IP, REASON_NON_IP_ETHERTYPE)


cdef void parse_family(const uint8_t* f, uint32_t L, uint32_t fam, pkt_record_t* r) noexcept nogil:
    if fam == 2:
        parse_ipv4(f, 4, L, r)
    elif is_inet6_family(fam):
        parse_ipv6(f, 4, L, r)
    else:
        rec_mark(r, CLASS_NON_IP, REASON_NON_IP_FAMILY)


cdef void parse_frame(int linktype, const uint8_t* f, uint32_t caplen, uint32_t origlen,
                      pkt_record_t* r) noexcept nogil:
    """Fill *r (zeroed here) from one frame; linktype must be supported."""
    cdef uint32_t fam
    memset(r, 0, sizeof(pkt_record_t))
    r.wire_len = origlen if origlen > caplen else caplen   # section 5
    if linktype == LINK_EN10MB:
        if not cur_has(0, caplen, 14):
            rec_mark(r, CLASS_TRUNCATED, REASON_TRUNCATED_LINK)
        else:
            parse_ethertype(f, 14, caplen, cur_read_u16(f, 12), r)
    elif linktype == LINK_LINUX_SLL:
        if not cur_has(0, caplen, 16):
            rec_mark(r, CLASS_TRUNCATED, REASON_TRUNCATED_LINK)
        else:
            parse_ethertype(f, 16, caplen, cur_read_u16(f, 14), r)
    elif linktype == LINK_LINUX_SLL2:
        if not cur_has(0, caplen, 20):
            rec_mark(r, CLASS_TRUNCATED, REASON_TRUNCATED_LINK)
        else:
            parse_ethertype(f, 20, caplen, cur_read_u16(f, 0), r)
    elif linktype == LINK_NULL or linktype == LINK_LOOP:
        if not cur_has(0, caplen, 4):
            rec_mark(r, CLASS_TRUNCATED, REASON_TRUNCATED_LINK)
            return
        # Section 5: LOOP is network order only; NULL is the capturing host's
        # order, accepted either way (little-endian reading first).
        if linktype == LINK_LOOP:
            fam = cur_read_u32(f, 0)
        else:
            fam = cur_read_u32_le(f, 0)
            if fam != 2 and not is_inet6_family(fam):
                fam = cur_read_u32(f, 0)
        parse_family(f, caplen, fam, r)
    else:
        # RAW (12, 14, 101), IPV4 (228), IPV6 (229).
        parse_by_version(f, 0, caplen, r)


cdef bint linktype_supported(int linktype) noexcept nogil:
    return (linktype == LINK_NULL or linktype == LINK_EN10MB or linktype == LINK_RAW_12
            or linktype == LINK_RAW_14 or linktype == LINK_RAW or linktype == LINK_LOOP
            or linktype == LINK_LINUX_SLL or linktype == LINK_IPV4 or linktype == LINK_IPV6
            or linktype == LINK_LINUX_SLL2)
