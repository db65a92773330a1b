# Per-window counting in the capture process. Included by _core.pyx.
#
# A capture process cuts its own records into windows of packet time
# (counting-rules section 6) and counts each window into a per-port table
# with the reducer of reduce.pyx; when a window closes, the table's used rows
# leave as one delta (the layout below), in the stream's row order, and the
# table is cleared. The aggregator merges the deltas of every capture
# process per window (pt_engine.aggregate). The pure-Python twin is
# engine._reference.PortWindows.
#
# A source's windows only move forward: a record older than its open window
# (a clock stepping back, a live packet delivered late) is counted in the
# open window and reported as late.
#
# Delta layout (little-endian; DELTA_HEADER uint64 words, then the rows):
#   [0] start_ns  [1] end_ns  [2] records  [3] late records
#   [4..11] class totals: (packets, bytes) for each of the 4 classes
#   [12] nrows    [13..15] zero
#   uint32 row[nrows], zero-padded to a multiple of 8 bytes: counter rows
#       (proto_row << 16 | port) in stream order (protocol name, then port)
#   uint64 value[nrows][4]: in_packets, in_bytes, out_packets, out_bytes

from libc.stdlib cimport calloc, free, qsort

cdef enum:
    DELTA_HEADER = 16

DELTA_HEADER_WORDS = DELTA_HEADER

# Row blocks (PROTO_ROW) in the order of their protocol names: dccp, sctp, tcp, udp, udplite.
cdef uint32_t BLOCK_BY_NAME[5]
BLOCK_BY_NAME[:] = [4, 2, 0, 1, 3]
cdef uint32_t NAME_RANK[5]      # block -> rank of its name
NAME_RANK[:] = [2, 3, 1, 4, 0]


cdef inline uint32_t stream_key(uint32_t row) noexcept nogil:
    return (NAME_RANK[row >> 16] << 16) | (row & 0xFFFF)


cdef int by_stream_key(const void* a, const void* b) noexcept nogil:
    cdef uint32_t ka = stream_key((<const uint32_t*>a)[0])
    cdef uint32_t kb = stream_key((<const uint32_t*>b)[0])
    return (ka > kb) - (ka < kb)


cdef inline uint64_t window_start(uint64_t ts, uint64_t interval) noexcept nogil:
    return ts - ts % interval


cdef inline uint64_t window_end(uint64_t start, uint64_t interval) noexcept nogil:
    if start > 0xFFFFFFFFFFFFFFFFULL - interval:
        return 0xFFFFFFFFFFFFFFFFULL      # the end of time: takes 2^64 - 1 too
    return start + interval


cdef class PortWindows:
    """One capture process's open window: its per-port table and class totals.

    count() takes records up to the first that belongs to a later window;
    advance() and finish() close the window and return its delta (bytes in
    the layout of this file's header), or None when it counted nothing.
    """
    cdef uint64_t* table        # N_COUNTER_ROWS x 4
    cdef uint32_t* touched      # rows used this window, state[0] of them
    cdef uint64_t classes[8]
    cdef uint64_t state[4]      # reduce_kernel's: touched, error, window start, late
    cdef uint64_t records
    cdef readonly uint64_t interval_ns
    cdef uint64_t start
    cdef uint64_t end
    cdef bint is_open
    cdef readonly uint64_t next_ns   # timestamp of the record count() stopped at

    def __cinit__(self, uint64_t interval_ns):
        if interval_ns == 0:
            raise ValueError("the window length must be positive")
        self.interval_ns = interval_ns
        self.table = <uint64_t*>calloc(<size_t>N_COUNTER_ROWS * 4, sizeof(uint64_t))
        self.touched = <uint32_t*>calloc(N_COUNTER_ROWS, sizeof(uint32_t))
        if self.table == NULL or self.touched == NULL:
            raise MemoryError()
        self.is_open = False

    def __dealloc__(self):
        free(self.table)
        free(self.touched)

    @property
    def start_ns(self):
        """Start of the open window (no later record goes into an earlier one),
        or None before the first record or advance()."""
        return self.start if self.is_open else None

    cdef void _open(self, uint64_t ts) noexcept nogil:
        self.start = window_start(ts, self.interval_ns)
        self.end = window_end(self.start, self.interval_ns)
        self.state[2] = self.start
        self.is_open = True

    def count(self, records, Py_ssize_t start, Py_ssize_t stop):
        """Count records[start:stop] (a buffer of whole pkt_record_t) into the
        open window, opening one at the first record if none is; stop at the
        first record of a later window and return its index (stop if none;
        its timestamp is then in next_ns). Raises ValueError for a bad range
        or a record no parser writes (the records before it are counted)."""
        cdef const unsigned char[::1] rec_bytes = records
        cdef Py_ssize_t n_records = rec_bytes.shape[0] // sizeof(pkt_record_t)
        cdef const pkt_record_t* recs
        cdef Py_ssize_t i
        if rec_bytes.shape[0] % sizeof(pkt_record_t):
            raise ValueError(f"a buffer of {rec_bytes.shape[0]} bytes is not whole "
                             f"{sizeof(pkt_record_t)}-byte records")
        if not (0 <= start <= stop <= n_records):
            raise ValueError(f"range [{start}, {stop}) outside {n_records} records")
        if start == stop:
            return stop
        recs = <const pkt_record_t*>&rec_bytes[0]
        if not self.is_open:
            self._open(recs[start].ts_ns)
        self.state[1] = 0
        with nogil:
            i = reduce_kernel(recs, start, stop, self.end, self.table, self.classes,
                              self.touched, self.state)
        self.records += <uint64_t>(i - start)
        if self.state[1]:
            raise ValueError(f"record {i} has class {recs[i].pkt_class} and protocol "
                             f"{recs[i].proto}, which no parser writes")
        if i < stop:
            self.next_ns = recs[i].ts_ns
        return i

    def advance(self, uint64_t ts_ns):
        """Nothing older than ts_ns will follow on time: if it lies past the open
        window, close that window (its delta, or None if it is empty) and open
        the one holding ts_ns. Returns None when the window stays open."""
        cdef object delta = None
        if self.is_open and ts_ns < self.end:
            return None
        if self.is_open and self.end == 0xFFFFFFFFFFFFFFFFULL:
            return None          # the last window there is
        if self.is_open:
            delta = self._take()
        self._open(ts_ns)
        return delta

    def finish(self):
        """Close the open window for good: its delta, or None if it counted nothing."""
        cdef object delta = None
        if self.is_open:
            delta = self._take()
        self.is_open = False
        return delta

    cdef object _take(self):
        """The open window's delta, then a cleared table (None if it is empty)."""
        cdef Py_ssize_t nrows = <Py_ssize_t>self.state[0]
        cdef Py_ssize_t rows_bytes = (nrows * 4 + 7) & ~7
        cdef bytearray out
        cdef uint64_t* head
        cdef uint32_t* rows
        cdef uint64_t* values
        cdef Py_ssize_t k
        cdef uint32_t b, port, row
        cdef uint64_t* c
        if self.records == 0:
            return None
        out = bytearray(DELTA_HEADER * 8 + rows_bytes + nrows * 32)
        head = <uint64_t*><char*>out
        rows = <uint32_t*>(<char*>out + DELTA_HEADER * 8)
        values = <uint64_t*>(<char*>out + DELTA_HEADER * 8 + rows_bytes)
        with nogil:
            head[0] = self.start
            head[1] = self.end
            head[2] = self.records
            head[3] = self.state[3]
            memcpy(head + 4, self.classes, sizeof(self.classes))
            head[12] = <uint64_t>nrows
            if nrows * 16 > N_COUNTER_ROWS:
                # Many rows: a walk of the table in stream order beats a sort.
                k = 0
                for b in range(5):
                    for port in range(65536):
                        row = (BLOCK_BY_NAME[b] << 16) | port
                        c = self.table + <size_t>row * 4
                        if c[0] or c[2]:
                            rows[k] = row
                            k += 1
            else:
                memcpy(rows, self.touched, nrows * sizeof(uint32_t))
                qsort(rows, nrows, sizeof(uint32_t), by_stream_key)
            for k in range(nrows):
                c = self.table + <size_t>rows[k] * 4
                memcpy(values + k * 4, c, 32)
                memset(c, 0, 32)
        memset(self.classes, 0, sizeof(self.classes))
        self.state[0] = 0
        self.state[3] = 0
        self.records = 0
        return bytes(out)


def add_rows(uint64_t[:, ::1] table, const uint32_t[::1] rows, const uint64_t[:, ::1] values):
    """table[rows[k]] += values[k] for every k (the aggregator's running totals;
    rows need not be unique). Raises ValueError for bad shapes or rows."""
    cdef Py_ssize_t n = rows.shape[0], k
    cdef int j
    if values.shape[0] != n or (n and values.shape[1] != 4) or table.shape[1] != 4:
        raise ValueError(f"{n} rows need ({n}, 4) values and a (rows, 4) table")
    for k in range(n):
        if rows[k] >= table.shape[0]:
            raise ValueError(f"row {rows[k]} is past the table's {table.shape[0]} rows")
    with nogil:
        for k in range(n):
            for j in range(4):
                table[rows[k], j] += values[k, j]


def add_quality_rows(uint64_t[:, ::1] table, const uint32_t[::1] keys,
                     const uint64_t[:, ::1] values):
    """Merge tcp_quality rows into a table of every row key (131072 x 46, the
    run's totals; keys need not be unique), exactly as section 9 of the rules
    merges: every figure and bucket summed, but rtt_min_ns the least of the
    rows that have samples (column 0, rtt_samples) and rtt_max_ns the
    greatest. A table row without samples has rtt_min_ns 0. Raises ValueError
    for bad shapes or keys."""
    cdef Py_ssize_t n = keys.shape[0], k
    cdef uint64_t* t
    cdef const uint64_t* v
    cdef int j
    if (values.shape[0] != n or (n and values.shape[1] != 46) or table.shape[1] != 46):
        raise ValueError(f"{n} rows need ({n}, 46) values and a (keys, 46) table")
    for k in range(n):
        if keys[k] >= table.shape[0]:
            raise ValueError(f"row key {keys[k]} is past the table's {table.shape[0]} keys")
    with nogil:
        for k in range(n):
            t = &table[keys[k], 0]
            v = &values[k, 0]
            if v[0]:                    # samples: the least and greatest RTT
                if t[0] == 0 or v[2] < t[2]:
                    t[2] = v[2]
                if v[3] > t[3]:
                    t[3] = v[3]
            t[0] += v[0]
            t[1] += v[1]
            for j in range(4, 46):
                t[j] += v[j]
