# msgpack encoding of port rows, natively. Included by _core.pyx.
#
# A window's `ports` value is an array of rows [proto, port, in_packets,
# in_bytes, out_packets, out_bytes] (pt_engine.stream.PORT_ROW). Built here
# without a Python object per row, with exactly the bytes msgpack-python's
# Packer(use_bin_type=True) writes for the same lists (the smallest integer
# form; names as fixstr), so that a stream does not depend on who encoded it.

cdef const char* BLOCK_NAME[5]
BLOCK_NAME[0] = b"tcp"
BLOCK_NAME[1] = b"udp"
BLOCK_NAME[2] = b"sctp"
BLOCK_NAME[3] = b"udplite"
BLOCK_NAME[4] = b"dccp"


cdef inline uint8_t* put_be(uint8_t* p, uint64_t v, int nbytes) noexcept nogil:
    cdef int i
    for i in range(nbytes):
        p[i] = <uint8_t>(v >> (8 * (nbytes - 1 - i)))
    return p + nbytes


cdef inline uint8_t* put_uint(uint8_t* p, uint64_t v) noexcept nogil:
    if v < 128:
        p[0] = <uint8_t>v
        return p + 1
    if v <= 0xFF:
        p[0] = 0xCC
        return put_be(p + 1, v, 1)
    if v <= 0xFFFF:
        p[0] = 0xCD
        return put_be(p + 1, v, 2)
    if v <= 0xFFFFFFFFULL:
        p[0] = 0xCE
        return put_be(p + 1, v, 4)
    p[0] = 0xCF
    return put_be(p + 1, v, 8)


cdef inline uint8_t* put_array_header(uint8_t* p, uint64_t n) noexcept nogil:
    if n <= 15:
        p[0] = <uint8_t>(0x90 | n)
        return p + 1
    if n <= 0xFFFF:
        p[0] = 0xDC
        return put_be(p + 1, n, 2)
    p[0] = 0xDD
    return put_be(p + 1, n, 4)


def encode_port_rows(const uint32_t[::1] rows, const uint64_t[:, ::1] values):
    """msgpack bytes of the port rows: counter rows (proto_row << 16 | port, in
    the order given) and their (in_packets, in_bytes, out_packets, out_bytes)."""
    cdef Py_ssize_t n = rows.shape[0], k
    cdef bytearray out
    cdef uint8_t* start
    cdef uint8_t* p
    cdef uint32_t block
    cdef const char* name
    cdef size_t name_len
    cdef int j
    if values.shape[0] != n or (n and values.shape[1] != 4):
        raise ValueError(f"{n} rows need ({n}, 4) values, not "
                         f"({values.shape[0]}, {values.shape[1]})")
    for k in range(n):
        if (rows[k] >> 16) >= 5:
            raise ValueError(f"counter row {rows[k]} is past the {5 * 65536} rows")
    # Worst case per row: fixarray 1, name 8, port 3, four uint64 of 9.
    out = bytearray(5 + n * 48)
    start = <uint8_t*><char*>out
    with nogil:
        p = put_array_header(start, <uint64_t>n)
        for k in range(n):
            block = rows[k] >> 16
            name = BLOCK_NAME[block]
            name_len = strlen(name)
            p[0] = 0x96                        # fixarray of 6
            p[1] = <uint8_t>(0xA0 | name_len)  # fixstr
            memcpy(p + 2, name, name_len)
            p = put_uint(p + 2 + name_len, rows[k] & 0xFFFF)
            for j in range(4):
                p = put_uint(p, values[k, j])
    del out[p - start:]
    return bytes(out)


cdef enum:
    Q_COUNTERS = 14             # tcp_quality.N_COUNTERS
    Q_WIDTH = 46                # tcp_quality.ROW_WIDTH: the counters, then 32 buckets


cdef inline size_t uint_size(uint64_t v) noexcept nogil:
    """The bytes put_uint writes for v."""
    if v < 128:
        return 1
    if v <= 0xFF:
        return 2
    if v <= 0xFFFF:
        return 3
    if v <= 0xFFFFFFFFULL:
        return 5
    return 9


cdef inline size_t array_header_size(uint64_t n) noexcept nogil:
    return 1 if n <= 15 else (3 if n <= 0xFFFF else 5)


def encode_quality_rows(const uint32_t[::1] keys, const uint64_t[:, ::1] values):
    """msgpack bytes of tcp_quality rows: row keys (port << 1 | side, 0 = in,
    1 = out) and their 46 values (the 14 counters in stream order, then the 32
    histogram buckets), each written ["tcp", port, side, *counters, buckets]
    with exactly msgpack-python's bytes for those lists.

    The exact size is counted first and the bytes written in place: a buffer
    for the worst case (431 bytes a row, 56 MB for every port and side) costs
    more in fresh pages than the encoding itself."""
    cdef Py_ssize_t n = keys.shape[0], k
    cdef size_t size
    cdef bytes out
    cdef uint8_t* start
    cdef uint8_t* p
    cdef int j
    if values.shape[0] != n or (n and values.shape[1] != Q_WIDTH):
        raise ValueError(f"{n} rows need ({n}, {Q_WIDTH}) values, not "
                         f"({values.shape[0]}, {values.shape[1]})")
    for k in range(n):
        if keys[k] >= 131072:
            raise ValueError(f"quality row key {keys[k]} is past the 131072 keys")
    with nogil:
        # per row: array16 3, "tcp" 4, the port, the side (3 or 4), array16 3
        size = array_header_size(<uint64_t>n)
        for k in range(n):
            size += 3 + 4 + uint_size(keys[k] >> 1) + (4 if keys[k] & 1 else 3) + 3
            for j in range(Q_WIDTH):
                size += uint_size(values[k, j])
    out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>size)
    start = p = <uint8_t*>PyBytes_AS_STRING(out)
    with nogil:
        p = put_array_header(p, <uint64_t>n)
        for k in range(n):
            p = put_array_header(p, 3 + Q_COUNTERS + 1)
            p[0] = 0xA3                            # fixstr "tcp"
            memcpy(p + 1, b"tcp", 3)
            p = put_uint(p + 4, keys[k] >> 1)
            if keys[k] & 1:
                p[0] = 0xA3
                memcpy(p + 1, b"out", 3)
                p += 4
            else:
                p[0] = 0xA2
                memcpy(p + 1, b"in", 2)
                p += 3
            for j in range(Q_COUNTERS):
                p = put_uint(p, values[k, j])
            p = put_array_header(p, Q_WIDTH - Q_COUNTERS)
            for j in range(Q_COUNTERS, Q_WIDTH):
                p = put_uint(p, values[k, j])
    if <size_t>(p - start) != size:       # uint_size and put_uint disagree: a bug
        raise RuntimeError(f"encode_quality_rows wrote {p - start} bytes, counted {size}")
    return out
