# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The SYNs of `scan --syn` and the matching of their answers, natively: ``pt_engine._syn``.

Its ``SynEngine`` does the per-probe work of pt_engine.probe.syn.SynSocket
(which opens the sockets, reserves the source port and works out each
target's checksum base; its Python methods are the twin under
PT_ENGINE_PUREPYTHON=1, with the same cookies): the segments of a batch
built and sent in one call, the waiting answers of a socket read, parsed
and checked in one call. The cookie is SipHash-2-4 (the run's 16-byte key)
of the target address, its port, our port (big-endian) and the attempt, its
low 32 bits with the attempt in the low 4 (pt_engine.probe.syn says why).
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.errno cimport errno, EINTR
from libc.string cimport memcpy, memset

from sockets cimport *

DEF HEADER = 24             # TCP header with the MSS option
DEF OFFSET_FLAGS = 0x6002   # 6 words, SYN
DEF WINDOW = 1024
DEF ATTEMPT_MASK = 0xF


cdef inline uint64_t _rotl(uint64_t x, int b) nogil:
    return (x << b) | (x >> (64 - b))


cdef inline uint64_t _le64(const uint8_t *p) nogil:
    cdef uint64_t out = 0
    cdef int i
    for i in range(8):
        out |= (<uint64_t>p[i]) << (8 * i)
    return out


cdef inline void _rounds(uint64_t *v, int n) nogil:
    """n SipRounds over the state v[0..3]."""
    cdef int r
    for r in range(n):
        v[0] += v[1]; v[1] = _rotl(v[1], 13); v[1] ^= v[0]; v[0] = _rotl(v[0], 32)
        v[2] += v[3]; v[3] = _rotl(v[3], 16); v[3] ^= v[2]
        v[0] += v[3]; v[3] = _rotl(v[3], 21); v[3] ^= v[0]
        v[2] += v[1]; v[1] = _rotl(v[1], 17); v[1] ^= v[2]; v[2] = _rotl(v[2], 32)


cdef uint64_t siphash24(const uint8_t *key, const uint8_t *data, int size) nogil:
    """SipHash-2-4 of `size` bytes (Aumasson and Bernstein's reference)."""
    cdef uint64_t k0 = _le64(key), k1 = _le64(key + 8)
    cdef uint64_t v[4]
    cdef uint64_t m, last = (<uint64_t>size) << 56
    cdef int i, full = size - size % 8
    v[0], v[1] = 0x736f6d6570736575ULL ^ k0, 0x646f72616e646f6dULL ^ k1
    v[2], v[3] = 0x6c7967656e657261ULL ^ k0, 0x7465646279746573ULL ^ k1
    for i in range(0, full, 8):
        m = _le64(data + i)
        v[3] ^= m
        _rounds(v, 2)
        v[0] ^= m
    for i in range(full, size):
        last |= (<uint64_t>data[i]) << (8 * (i - full))
    v[3] ^= last
    _rounds(v, 2)
    v[0] ^= last
    v[2] ^= 0xff
    _rounds(v, 4)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


cdef inline uint16_t _be16(const uint8_t *p) nogil:
    return (<uint16_t>p[0] << 8) | p[1]


cdef inline uint32_t _be32(const uint8_t *p) nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline void _put16(uint8_t *p, uint32_t v) nogil:
    p[0] = (v >> 8) & 0xFF
    p[1] = v & 0xFF


cdef class SynEngine:
    """SYNs out and answers in for one family; see the module docstring."""

    cdef int tcp_fd, icmp_fd, family, alen, port
    cdef uint8_t key[16]
    cdef uint8_t buf[65536]

    def __cinit__(self, int tcp_fd, int icmp_fd, int family, bytes key, int port):
        if len(key) != 16:
            raise ValueError("the cookie key is 16 bytes")
        self.tcp_fd, self.icmp_fd, self.family, self.port = tcp_fd, icmp_fd, family, port
        self.alen = 4 if family == AF_INET else 16
        memcpy(self.key, <const char *>key, 16)

    cdef uint32_t _cookie(self, const uint8_t *dst, uint32_t dport, uint32_t attempt) nogil:
        cdef uint8_t data[21]
        attempt &= ATTEMPT_MASK
        memcpy(data, dst, self.alen)
        _put16(data + self.alen, dport)
        _put16(data + self.alen + 2, self.port)
        data[self.alen + 4] = attempt
        return (<uint32_t>siphash24(self.key, data, self.alen + 5) & ~(<uint32_t>ATTEMPT_MASK)) \
            | attempt

    def cookie(self, bytes dst, int dport, int attempt):
        """The sequence number of the SYN to (dst, dport) of this attempt."""
        if len(dst) != self.alen:
            raise ValueError("an address of the engine's family")
        return self._cookie(<const uint8_t *><const char *>dst, dport, attempt)

    def send(self, list batch):
        """[(sent_ns, errno)] for [(dst bytes, dport, attempt, checksum base, IPv6
        zone index or 0)]: each
        SYN built and sent (errno 0: sent)."""
        cdef list out = []
        cdef uint8_t seg[HEADER]
        cdef sockaddr_storage addr
        cdef sockaddr_in *v4 = <sockaddr_in *>&addr
        cdef sockaddr_in6 *v6 = <sockaddr_in6 *>&addr
        cdef socklen_t size = sizeof(sockaddr_in) if self.family == AF_INET \
            else sizeof(sockaddr_in6)
        cdef const uint8_t *dst
        cdef uint32_t seq, dport, attempt, zone
        cdef uint64_t total
        cdef long long sent
        cdef ssize_t rc
        memset(&addr, 0, sizeof(addr))
        for item in batch:
            dst_bytes, dport, attempt, total, zone = item
            if len(dst_bytes) != self.alen:
                raise ValueError("an address of the engine's family")
            dst = <const uint8_t *><const char *>dst_bytes
            if self.family == AF_INET:
                v4.sin_family = AF_INET
                memcpy(&v4.sin_addr, dst, 4)
            else:
                v6.sin6_family = AF_INET6
                v6.sin6_scope_id = zone
                memcpy(&v6.sin6_addr, dst, 16)
            seq = self._cookie(dst, dport, attempt)
            total += dport + (seq >> 16) + (seq & 0xFFFF)
            while total >> 16:
                total = (total & 0xFFFF) + (total >> 16)
            memset(seg, 0, HEADER)
            _put16(seg, self.port)
            _put16(seg + 2, dport)
            _put16(seg + 4, seq >> 16)
            _put16(seg + 6, seq & 0xFFFF)
            _put16(seg + 12, OFFSET_FLAGS)
            _put16(seg + 14, WINDOW)
            _put16(seg + 16, ~total & 0xFFFF)
            seg[20], seg[21], seg[22], seg[23] = 2, 4, 0x05, 0xb4    # MSS 1460
            sent = monotonic_ns()
            rc = sendto(self.tcp_fd, seg, HEADER, 0, <sockaddr *>&addr, size)
            out.append((sent, 0 if rc >= 0 else errno))
        return out

    def answers(self, int fd):
        """[((target bytes, port), attempt, outcome, time)] of the waiting answers
        on `fd` (the TCP or the ICMP socket) that are ours."""
        cdef list out = []
        cdef sockaddr_storage sender
        cdef sockaddr_in6 *s6 = <sockaddr_in6 *>&sender
        cdef socklen_t slen
        cdef ssize_t n
        cdef const uint8_t *p
        cdef const uint8_t *src
        cdef const uint8_t *tcp
        cdef int left, ihl, outcome
        cdef uint32_t seq, attempt, sport, dport
        cdef long long now
        cdef bint icmp = fd == self.icmp_fd
        while True:
            slen = sizeof(sender)
            with nogil:
                n = recvfrom(fd, self.buf, sizeof(self.buf), MSG_DONTWAIT,
                             <sockaddr *>&sender, &slen)
            if n < 0:
                if errno == EINTR:
                    continue
                return out
            now = monotonic_ns()
            p, left = self.buf, n
            if self.family == AF_INET:          # raw IPv4 data starts with the IP header
                if left < 20:
                    continue
                ihl = (p[0] & 0x0F) * 4
                src = p + 12
                p, left = p + ihl, left - ihl
            else:
                src = s6.sin6_addr.s6_addr
            if icmp:
                outcome = self._unreachable(p, left, &src, &sport, &seq)
                if outcome < 0:
                    continue
                dport = sport      # the quoted SYN's destination port
            else:
                if left < 14:
                    continue
                tcp = p
                if _be16(tcp + 2) != self.port or not tcp[13] & 0x10:    # ACK
                    continue
                if tcp[13] & 0x06 == 0x02:
                    outcome = 0                  # SYN/ACK
                elif tcp[13] & 0x04:
                    outcome = 1                  # reset
                else:
                    continue
                dport = _be16(tcp)
                seq = _be32(tcp + 8) - 1
            attempt = seq & ATTEMPT_MASK
            if seq != self._cookie(src, dport, attempt):
                continue
            out.append((((<const char *>src)[:self.alen], dport), attempt,
                        ("reply", "refused", "unreachable")[outcome], now))

    cdef int _unreachable(self, const uint8_t *p, int left, const uint8_t **dst,
                          uint32_t *dport, uint32_t *seq) nogil:
        """2 when p is an ICMP unreachable quoting a SYN from our port (dst, dport and
        seq of the quoted SYN set), else -1."""
        cdef const uint8_t *inner = p + 8
        cdef const uint8_t *tcp
        cdef int rest = left - 8
        if left < 8 or p[0] != (3 if self.family == AF_INET else 1):
            return -1
        if self.family == AF_INET:
            if rest < 28 or inner[9] != 6:
                return -1
            dst[0] = inner + 16
            tcp = inner + (inner[0] & 0x0F) * 4
            if tcp + 8 > inner + rest:
                return -1
        else:
            if rest < 48 or inner[6] != 6:
                return -1
            dst[0] = inner + 24
            tcp = inner + 40
        if _be16(tcp) != self.port:
            return -1
        dport[0] = _be16(tcp + 2)
        seq[0] = _be32(tcp + 4)
        return 2
