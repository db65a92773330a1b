# Records -> per-port uint64 counters and class totals. Included by _core.pyx.
#
# Counter table: uint64[N_PROTOS * 65536][4], row = proto_row << 16 | port,
# columns in_packets, in_bytes, out_packets, out_bytes (pt_engine.records order).
# Class table: uint64[4][2], columns packets, bytes.
# `touched` lists each row the first time it leaves all-zero, so a window can
# be emitted and cleared without scanning the whole table.

cdef uint8_t PROTO_ROW[256]     # IP protocol -> row block; 255 = not port-bearing

cdef void init_proto_rows() noexcept nogil:
    memset(PROTO_ROW, 255, sizeof(PROTO_ROW))
    PROTO_ROW[PROTO_TCP] = 0
    PROTO_ROW[PROTO_UDP] = 1
    PROTO_ROW[PROTO_SCTP] = 2
    PROTO_ROW[PROTO_UDPLITE] = 3
    PROTO_ROW[PROTO_DCCP] = 4

init_proto_rows()

cdef enum:
    N_PROTO_ROWS = 5
    N_COUNTER_ROWS = N_PROTO_ROWS * 65536


cdef inline void count_port(uint64_t* counters, uint32_t row, int side, uint32_t wire_len,
                            uint32_t* touched, uint64_t* ntouched) noexcept nogil:
    cdef uint64_t* c = counters + <size_t>row * 4
    if c[0] == 0 and c[2] == 0:
        touched[ntouched[0]] = row
        ntouched[0] += 1
    c[side] += 1
    c[side + 1] += wire_len


cdef Py_ssize_t reduce_kernel(const pkt_record_t* recs, Py_ssize_t i, Py_ssize_t stop,
                              uint64_t win_end_ns, uint64_t* counters, uint64_t* classes,
                              uint32_t* touched, uint64_t* state) noexcept nogil:
    """Count records [i, stop) until one has ts_ns >= win_end_ns; return its index.
    A window ending at 2^64 - 1 (the end of time) also takes records at 2^64 - 1.

    state[0] is the number of touched rows; state[1] is set to 1 when a record
    is not one the parser can write (bad class or protocol): counting stops at it;
    state[2] is the window start: records before it are late, counted in this
    window all the same, and added up in state[3].
    """
    cdef const pkt_record_t* r
    cdef uint32_t base
    while i < stop:
        r = recs + i
        if r.ts_ns >= win_end_ns and win_end_ns != 0xFFFFFFFFFFFFFFFFULL:
            break
        if r.pkt_class >= N_CLASSES or (r.pkt_class == CLASS_PORTED and PROTO_ROW[r.proto] == 255):
            state[1] = 1
            break
        if r.ts_ns < state[2]:
            state[3] += 1
        classes[r.pkt_class * 2] += 1
        classes[r.pkt_class * 2 + 1] += r.wire_len
        if r.pkt_class == CLASS_PORTED:
            base = <uint32_t>PROTO_ROW[r.proto] << 16
            count_port(counters, base | r.dst_port, 0, r.wire_len, touched, state)
            count_port(counters, base | r.src_port, 2, r.wire_len, touched, state)
        i += 1
    return i

