# Bounds-checked big-endian loads over a captured frame.
#
# Contract: callers hold a cursor `c` with c <= caplen (every helper keeps
# that invariant) and ask `cur_has(c, caplen, n)` before touching n bytes at c.
# Written as `caplen - c < n` so that no addition can overflow.
from libc.stdint cimport uint8_t, uint16_t, uint32_t

cdef inline bint cur_has(uint32_t c, uint32_t caplen, uint32_t n) noexcept nogil:
    return caplen - c >= n

cdef inline uint16_t cur_read_u16(const uint8_t* f, uint32_t c) noexcept nogil:
    return (<uint16_t>f[c] << 8) | f[c + 1]

cdef inline uint32_t cur_read_u32(const uint8_t* f, uint32_t c) noexcept nogil:
    return ((<uint32_t>f[c] << 24) | (<uint32_t>f[c + 1] << 16)
            | (<uint32_t>f[c + 2] << 8) | f[c + 3])

cdef inline uint32_t cur_read_u32_le(const uint8_t* f, uint32_t c) noexcept nogil:
    return ((<uint32_t>f[c + 3] << 24) | (<uint32_t>f[c + 2] << 16)
            | (<uint32_t>f[c + 1] << 8) | f[c])
