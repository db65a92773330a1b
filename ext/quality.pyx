# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
# (Bounds are checked by hand: the def wrappers check the buffers, the kernel's
# indices come from its own bounded tables.)
"""TCP quality per port in the capture process: docs/quality-rules.md, natively.

The extension ``pt_engine._quality``. Its ``QualityCounter`` is the native
counter of the ``tcp_quality`` analyser (engine/analysers/tcp_quality.py,
whose ``QualityCounter`` is the pure-Python twin: the same rules, the same
figures, byte for byte). It reads the raw record buffer (records.pxd) with
the GIL released and touches no Python object per packet.

State (section 7 of the rules bounds it; the worst case in bytes is worked
out in docs/quality-rules.md, "Implementation notes"):

* connections: a preallocated table of conn_t (calloc: pages become resident
  only when used), found by open addressing with linear probing (load <= 1/2,
  backward-shift deletion); least recently used by a stamp per connection and
  a FIFO of (connection, stamp) entries, stale entries skipped and compacted;
* records: chunks of 4 (72 bytes) from a slab pool, chained per half, so a
  half holding few records costs one chunk, not 1,024 slots;
* holes: a ring per half in a block of 4, 8, 16, ... holes (never more than
  the per-half bound) from one slab pool per size;
* the open window's rows: row_t per (port, side) touched, found through a
  65,536 x 2 index.

The delta of take() is bytes, little-endian (read by tcp_quality.unpack_delta,
written in Python by tcp_quality.pack_delta for the twin):

    uint64 head[12]: [0] DELTA_VERSION  [1] rows  [2] values  [3] 0
                     [4..11] the state counters, in STATE_KEYS order
    uint32 key[rows], zero-padded to a multiple of 8 bytes: port << 1 | side
           (side 0 = in, 1 = out), increasing
    uint64 mask[rows]: bit j set when column j (0..45: the 14 counters, then
           the 32 histogram buckets) is not 0
    uint64 value[values]: those columns, row by row, column by column
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from libc.stdlib cimport calloc, malloc, realloc, free, qsort
from libc.string cimport memcmp, memcpy, memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

from records cimport *

# --- constants --------------------------------------------------------------------------

cdef enum:
    N_COUNTERS = 14
    HIST_BUCKETS = 32
    ROW_WIDTH = 46
    N_STATE = 8
    N_ROW_KEYS = 131072          # 65536 ports x 2 sides
    DELTA_HEAD = 12
    D_VERSION = 1               # head[0] of a delta
    REC_PER_CHUNK = 4
    HOLE_MIN = 4                 # holes in the smallest ring block
    SLAB_SHIFT = 12              # items per slab: 4096
    MAX_HOLE_CLASSES = 16

# Where each figure is kept in row_t.c: the ones a data segment touches first,
# in one cache line; COLUMN_AT maps tcp_quality.COLUMNS order to these.
cdef enum:
    C_DATA_SEGMENTS = 0
    C_DATA_BYTES = 1
    C_GAPS = 2
    C_GAP_BYTES = 3
    C_RETRANS_SEGMENTS = 4
    C_RETRANS_BYTES = 5
    C_OOO_SEGMENTS = 6
    C_DUP_ACKS = 7
    C_RTT_SAMPLES = 8
    C_RTT_SUM = 9
    C_RTT_MIN = 10
    C_RTT_MAX = 11
    C_JITTER_SUM = 12
    C_JITTER_PAIRS = 13

cdef int COLUMN_AT[14]
COLUMN_AT[:] = [C_RTT_SAMPLES, C_RTT_SUM, C_RTT_MIN, C_RTT_MAX, C_JITTER_SUM, C_JITTER_PAIRS,
                C_DATA_SEGMENTS, C_DATA_BYTES, C_RETRANS_SEGMENTS, C_RETRANS_BYTES,
                C_OOO_SEGMENTS, C_GAPS, C_GAP_BYTES, C_DUP_ACKS]

# state counters (tcp_quality.STATE_KEYS)
cdef enum:
    S_ANALYSED = 0
    S_NOT_ANALYSED = 1
    S_RST = 2
    S_RST_CLOSED = 3
    S_CONNECTIONS = 4
    S_CONNECTIONS_EVICTED = 5
    S_RECORDS_SKIPPED = 6
    S_HOLES_FORGOTTEN = 7

# half_t.bits
cdef enum:
    H_HI = 1            # hi is set
    H_ACKED = 2         # acked is set
    H_SYN = 4           # syn_seq is set
    H_WIN = 8           # last_win is set
    H_RTT = 16          # last_rtt is set
    H_FLAG_NEXT = 32    # a segment was not recorded: flag the next record
    H_UNORDERED = 64    # record ends are not known to increase within 2^31 (see ack_records)

cdef enum:
    F_FIN = 0x01
    F_SYN = 0x02
    F_RST = 0x04
    F_ACK = 0x10
    ANALYSIS_BITS = TCPI_HEADER | TCPI_FRAGMENT | TCPI_NEGATIVE_PAYLOAD | TCPI_NO_TIMESTAMP

DELTA_VERSION = D_VERSION
DELTA_HEAD_WORDS = DELTA_HEAD

# --- structures -------------------------------------------------------------------------

ctypedef struct rec_t:          # a record of section 2: new bytes [start, end) sent at t
    uint32_t start
    uint32_t end
    uint64_t t

ctypedef struct chunk_t:        # 72 bytes; records at positions [lo, lo + n)
    uint32_t next               # pool index of the next chunk, 0 at the tail (free: next free)
    uint8_t lo
    uint8_t n
    uint8_t flags               # bit p: the record at position p is flagged
    uint8_t pad
    rec_t r[4]

ctypedef struct hole_t:         # [a, b)
    uint32_t a
    uint32_t b

ctypedef struct half_t:         # one direction, named by the data it carries
    uint64_t last_rtt
    uint32_t hi
    uint32_t acked
    uint32_t syn_seq
    uint32_t rec_head           # pool indices (0: none)
    uint32_t rec_tail
    uint32_t hole_blk           # ring block (0: none), of HOLE_MIN << hole_cls holes
    uint16_t n_recs
    uint16_t n_holes
    uint16_t hole_at            # ring position of the first (lowest) hole
    uint16_t last_win
    uint8_t bits
    uint8_t hole_cls
    uint32_t head_end           # the end of the first record (when n_recs > 0)
    # The figures every data segment adds, kept here until the window closes (or
    # the half is cleared) and then added to its two rows: the half's lines are
    # in the cache already, its rows most likely are not (flush_half).
    uint32_t acc_segments       # data segments
    uint32_t acc_gaps
    uint64_t acc_bytes          # data bytes
    uint64_t acc_gap_bytes

ctypedef struct conn_t:         # half[0] carries the data of endpoint 0
    uint64_t stamp              # LRU: the clock at its latest use
    half_t half[2]
    uint64_t key[4]             # endpoint 0's address (2 words), then endpoint 1's
    uint32_t ports              # endpoint 0's port | endpoint 1's port << 16
    uint32_t dirty              # the window (q_t.epoch) it was last listed in
    uint32_t tag                # its key's hash (the lookup's tag)
    uint8_t version
    uint8_t alive

ctypedef struct lru_t:          # an LRU entry: live while stamp is its connection's (low bits)
    uint32_t conn
    uint32_t stamp

ctypedef struct by_use_t:       # for building the LRU queue
    uint64_t stamp
    uint32_t conn

ctypedef struct row_t:          # 256 bytes, 64-aligned: the window's figures of one (port, side)
    uint64_t c[14]              # in the order of the C_* above
    uint32_t h[32]              # bucket counts; a wrap past 2^32 is kept in q_t.ovf
    uint64_t pad[2]

ctypedef struct pair_t:         # the two rows of one half's data, fetched at its first event
    uint32_t kin                # (pB, in)
    uint32_t kout               # (pA, out)
    row_t* a
    row_t* b

ctypedef struct pool_t:         # fixed-size items in slabs of 4096; index 0 is never used
    char** slabs
    uint32_t n_slabs
    uint32_t item               # bytes
    uint32_t carved             # items carved so far (index 0 included)
    uint32_t free_head          # 0: none
    uint64_t in_use

ctypedef struct q_t:
    # bounds (section 7)
    uint32_t max_conns
    uint32_t max_recs_half
    uint32_t max_holes_half
    uint64_t max_recs
    # connections
    conn_t* conns
    uint32_t* free_conns        # stack of free slots
    uint32_t n_free
    uint32_t n_conns
    uint64_t* hash              # (tag << 32) | (slot + 1); 0 empty; home = tag & hash_mask
    uint32_t hash_mask
    lru_t* lru                  # ring
    uint32_t lru_mask
    uint32_t lru_head
    uint32_t lru_len
    bint lru_on                 # the queue is kept (from the first eviction on)
    uint64_t clock
    # records and holes
    pool_t recs
    pool_t holes[16]
    uint32_t n_hole_classes
    uint64_t records_held
    hole_t* scratch             # 2 * max_holes_half + 2
    # the open window
    row_t* rows
    void* rows_raw              # what calloc gave (rows: aligned to 64 bytes)
    uint32_t* row_of            # key -> slot + 1
    uint32_t* touched           # slot -> key
    uint32_t n_rows
    uint32_t* ovf               # slot * 32 + bucket, one entry per 2^32 samples
    uint32_t n_ovf
    uint32_t cap_ovf
    uint32_t epoch              # the open window's number (from 1)
    uint32_t* dirty_list        # slots of the connections used in this window
    uint32_t n_dirty            # (each listed once: conn_t.dirty)
    uint64_t state[8]
    int failed                  # an allocation failed


cdef extern from *:
    """
    static inline uint64_t q_load64(const uint8_t* p) { uint64_t v; memcpy(&v, p, 8); return v; }
    static inline int q_bit_length(uint64_t v) { return v ? 64 - __builtin_clzll(v) : 0; }
    """
    uint64_t q_load64(const uint8_t* p) nogil
    int q_bit_length(uint64_t v) nogil


# --- sequence arithmetic (section "Conventions") ----------------------------------------

cdef inline bint seq_gt(uint32_t a, uint32_t b) noexcept nogil:
    cdef uint32_t d = a - b
    return d != 0 and d < 0x80000000u

cdef inline bint seq_ge(uint32_t a, uint32_t b) noexcept nogil:
    return (<uint32_t>(a - b)) < 0x80000000u

cdef inline bint seq_lt(uint32_t a, uint32_t b) noexcept nogil:
    return seq_gt(b, a)

cdef inline bint seq_le(uint32_t a, uint32_t b) noexcept nogil:
    return (<uint32_t>(b - a)) < 0x80000000u

cdef inline int64_t seq_diff(uint32_t a, uint32_t b) noexcept nogil:
    return <int64_t>(<int32_t>(a - b))

# --- pools ------------------------------------------------------------------------------

cdef void pool_init(pool_t* p, uint32_t item) noexcept nogil:
    memset(p, 0, sizeof(pool_t))
    p.item = item
    p.carved = 1

cdef void pool_release(pool_t* p) noexcept nogil:
    cdef uint32_t i
    for i in range(p.n_slabs):
        free(p.slabs[i])
    free(p.slabs)
    p.slabs = NULL
    p.n_slabs = 0

cdef inline char* pool_ptr(pool_t* p, uint32_t idx) noexcept nogil:
    return p.slabs[idx >> SLAB_SHIFT] + <size_t>(idx & ((1 << SLAB_SHIFT) - 1)) * p.item

cdef uint32_t pool_alloc(q_t* q, pool_t* p) noexcept nogil:
    """An item's index (0 and q.failed set if memory ran out)."""
    cdef uint32_t idx = p.free_head
    cdef char** slabs
    cdef char* slab
    if idx:
        p.free_head = (<uint32_t*>pool_ptr(p, idx))[0]
        p.in_use += 1
        return idx
    if (p.carved >> SLAB_SHIFT) >= p.n_slabs:
        slabs = <char**>realloc(p.slabs, (p.n_slabs + 1) * sizeof(char*))
        if slabs == NULL:
            q.failed = 1
            return 0
        p.slabs = slabs
        slab = <char*>malloc(<size_t>p.item << SLAB_SHIFT)
        if slab == NULL:
            q.failed = 1
            return 0
        p.slabs[p.n_slabs] = slab
        p.n_slabs += 1
    idx = p.carved
    p.carved += 1
    p.in_use += 1
    return idx

cdef inline void pool_free(pool_t* p, uint32_t idx) noexcept nogil:
    (<uint32_t*>pool_ptr(p, idx))[0] = p.free_head
    p.free_head = idx
    p.in_use -= 1


# --- rows (section 6: attribution) --------------------------------------------------------

cdef inline row_t* row_at(q_t* q, uint32_t key) noexcept nogil:
    cdef uint32_t s = q.row_of[key]
    if s == 0:
        q.touched[q.n_rows] = key
        q.n_rows += 1
        s = q.n_rows
        q.row_of[key] = s
    return &q.rows[s - 1]

cdef inline void fetch(q_t* q, pair_t* p) noexcept nogil:
    if p.a == NULL:
        p.a = row_at(q, p.kin)
        p.b = row_at(q, p.kout)

cdef inline void bump(q_t* q, pair_t* p, int col, uint64_t v) noexcept nogil:
    """Add v to column col of both rows of a half's data: (pB, in) and (pA, out)."""
    fetch(q, p)
    p.a.c[col] += v
    p.b.c[col] += v

cdef void hist_wrapped(q_t* q, row_t* row, int bucket) noexcept nogil:
    cdef uint32_t* grown
    cdef uint32_t cap
    if q.n_ovf == q.cap_ovf:
        cap = q.cap_ovf * 2 + 16
        grown = <uint32_t*>realloc(q.ovf, cap * sizeof(uint32_t))
        if grown == NULL:
            q.failed = 1
            return
        q.ovf = grown
        q.cap_ovf = cap
    q.ovf[q.n_ovf] = <uint32_t>(row - q.rows) * HIST_BUCKETS + bucket
    q.n_ovf += 1

cdef inline void sample_row(q_t* q, row_t* row, uint64_t rtt, int bucket) noexcept nogil:
    if row.c[C_RTT_SAMPLES]:
        if rtt < row.c[C_RTT_MIN]:
            row.c[C_RTT_MIN] = rtt
        if rtt > row.c[C_RTT_MAX]:
            row.c[C_RTT_MAX] = rtt
    else:
        row.c[C_RTT_MIN] = rtt
        row.c[C_RTT_MAX] = rtt
    row.c[C_RTT_SAMPLES] += 1
    row.c[C_RTT_SUM] += rtt
    row.h[bucket] += 1
    if row.h[bucket] == 0:
        hist_wrapped(q, row, bucket)

cdef void sample(q_t* q, half_t* r, pair_t* p, uint64_t rtt) noexcept nogil:
    """An RTT sample of half r's data (section 5), and its jitter pair."""
    cdef int bucket = q_bit_length(rtt // 1000)
    cdef uint64_t jitter
    if bucket > HIST_BUCKETS - 1:
        bucket = HIST_BUCKETS - 1
    fetch(q, p)
    sample_row(q, p.a, rtt, bucket)
    sample_row(q, p.b, rtt, bucket)
    if r.bits & H_RTT:
        jitter = rtt - r.last_rtt if rtt >= r.last_rtt else r.last_rtt - rtt
        bump(q, p, C_JITTER_SUM, jitter)
        bump(q, p, C_JITTER_PAIRS, 1)
    r.last_rtt = rtt
    r.bits |= H_RTT


# --- records of a half ----------------------------------------------------------------------

cdef inline chunk_t* chunk(q_t* q, uint32_t idx) noexcept nogil:
    return <chunk_t*>pool_ptr(&q.recs, idx)

cdef void free_records(q_t* q, half_t* h) noexcept nogil:
    """Give the half's chain of chunks back in one splice: chunk_t.next is also
    the pool's free link. Only the head chunk is read: every chunk but the head
    and the tail is full, and the head's records end at the chunk's end unless
    it is the tail too (record() and the ACK paths keep it so)."""
    cdef chunk_t* head
    cdef uint32_t chunks = 1
    if h.rec_head == 0:
        return
    head = chunk(q, h.rec_head)
    if h.rec_tail != h.rec_head:
        chunks += (h.n_recs - head.n + REC_PER_CHUNK - 1) // REC_PER_CHUNK
    chunk(q, h.rec_tail).next = q.recs.free_head
    q.recs.free_head = h.rec_head
    q.recs.in_use -= chunks
    q.records_held -= h.n_recs
    h.rec_head = 0
    h.rec_tail = 0
    h.n_recs = 0

cdef uint32_t new_chunk(q_t* q) noexcept nogil:
    """An empty chunk at the end of no chain (0 if memory ran out)."""
    cdef uint32_t idx = pool_alloc(q, &q.recs)
    cdef chunk_t* c
    if idx:
        c = chunk(q, idx)
        c.next = 0
        c.lo = 0
        c.n = 0
        c.flags = 0
    return idx

cdef void record(q_t* q, half_t* h, uint32_t start, uint32_t end, uint64_t t) noexcept nogil:
    """Append the record (start, end, t), within the bounds of section 7."""
    cdef chunk_t* tail
    cdef uint32_t idx, step, tail_end
    cdef uint64_t span
    cdef int pos
    if h.n_recs >= q.max_recs_half or q.records_held >= q.max_recs:
        q.state[S_RECORDS_SKIPPED] += 1
        h.bits |= H_FLAG_NEXT
        return
    if h.n_recs == 0:
        idx = new_chunk(q)
        if idx == 0:
            return
        tail = chunk(q, idx)
        h.rec_head = idx
        h.rec_tail = idx
        h.head_end = end
        h.bits &= ~H_UNORDERED
    else:
        tail = chunk(q, h.rec_tail)
        if not (h.bits & H_UNORDERED):
            tail_end = tail.r[tail.lo + tail.n - 1].end
            step = end - tail_end
            span = <uint64_t>(<uint32_t>(tail_end - h.head_end)) + step
            if step == 0 or step >= 0x80000000u or span >= 0x80000000u:
                h.bits |= H_UNORDERED
        if tail.lo + tail.n == REC_PER_CHUNK:
            idx = new_chunk(q)
            if idx == 0:
                return
            tail.next = idx
            tail = chunk(q, idx)
            h.rec_tail = idx
    pos = tail.lo + tail.n
    tail.r[pos].start = start
    tail.r[pos].end = end
    tail.r[pos].t = t
    if h.bits & H_FLAG_NEXT:
        tail.flags |= <uint8_t>(1 << pos)
        h.bits &= ~H_FLAG_NEXT
    tail.n += 1
    h.n_recs += 1
    q.records_held += 1

cdef void flag_range(q_t* q, half_t* h, uint32_t lo, uint32_t hi) noexcept nogil:
    """Flag every record overlapping [lo, hi)."""
    cdef uint32_t idx = h.rec_head
    cdef chunk_t* c
    cdef int p
    while idx:
        c = chunk(q, idx)
        for p in range(c.lo, c.lo + c.n):
            if seq_gt(c.r[p].end, lo) and seq_lt(c.r[p].start, hi):
                c.flags |= <uint8_t>(1 << p)
        idx = c.next

cdef void flag_first_beyond(q_t* q, half_t* h, uint32_t s) noexcept nogil:
    """Flag the first record whose end is above s."""
    cdef uint32_t idx = h.rec_head
    cdef chunk_t* c
    cdef int p
    while idx:
        c = chunk(q, idx)
        for p in range(c.lo, c.lo + c.n):
            if seq_gt(c.r[p].end, s):
                c.flags |= <uint8_t>(1 << p)
                return
        idx = c.next

cdef void check_order(q_t* q, half_t* h) noexcept nogil:
    """Set H_UNORDERED unless the record ends increase along the list within 2^31."""
    cdef uint32_t idx = h.rec_head, prev = 0, step
    cdef uint64_t span = 0
    cdef bint first = True
    cdef chunk_t* c
    cdef int p
    h.bits &= ~H_UNORDERED
    if idx:
        c = chunk(q, idx)
        h.head_end = c.r[c.lo].end
    while idx:
        c = chunk(q, idx)
        for p in range(c.lo, c.lo + c.n):
            if not first:
                step = c.r[p].end - prev
                span += step
                if step == 0 or step >= 0x80000000u or span >= 0x80000000u:
                    h.bits |= H_UNORDERED
                    return
            first = False
            prev = c.r[p].end
        idx = c.next

cdef void remove_all_matching(q_t* q, half_t* h, uint32_t n, rec_t* last, bint* any_removed,
                              bint* clean) noexcept nogil:
    """Remove every record whose end is at or below n, in one pass that keeps the
    others in order (the general case of section 5)."""
    cdef uint32_t ridx = h.rec_head, widx = h.rec_head, nxt
    cdef chunk_t* rc
    cdef chunk_t* wc = NULL
    cdef int p, wp = 0
    cdef uint32_t kept = 0
    cdef uint8_t f
    cdef rec_t r
    if widx:
        wc = chunk(q, widx)
        wp = wc.lo
    while ridx:
        rc = chunk(q, ridx)
        for p in range(rc.lo, rc.lo + rc.n):
            r = rc.r[p]
            f = (rc.flags >> p) & 1
            if seq_le(r.end, n):
                last[0] = r
                any_removed[0] = True
                if f:
                    clean[0] = False
                continue
            if wp == REC_PER_CHUNK:
                wc.n = <uint8_t>(REC_PER_CHUNK - wc.lo)
                widx = wc.next
                wc = chunk(q, widx)
                wc.lo = 0
                wp = 0
            wc.r[wp] = r
            wc.flags = <uint8_t>((wc.flags & ~(1 << wp)) | (f << wp))
            wp += 1
            kept += 1
        ridx = rc.next
    q.records_held -= h.n_recs - kept
    h.n_recs = <uint16_t>kept
    if kept == 0:
        ridx = h.rec_head
        h.rec_head = 0
        h.rec_tail = 0
    else:
        wc.n = <uint8_t>(wp - wc.lo)
        wc.flags &= <uint8_t>(((1 << wp) - 1) & ~((1 << wc.lo) - 1))
        ridx = wc.next
        wc.next = 0
        h.rec_tail = widx
    while ridx:
        nxt = chunk(q, ridx).next
        pool_free(&q.recs, ridx)
        ridx = nxt
    check_order(q, h)

cdef void ack_records(q_t* q, half_t* h, uint32_t n, rec_t* last, bint* any_removed,
                      bint* clean) noexcept nogil:
    """Section 5's new ACK on the records: remove those ending at or below n; the
    last one removed (in list order) and whether none was flagged.

    While the ends increase along the list and span less than 2^31 (no
    H_UNORDERED), those at or below n are a prefix when the first one is, and
    else a suffix: the prefix is taken from the head, and only a non-empty
    suffix (or an unordered list) takes the general pass."""
    cdef chunk_t* c
    cdef chunk_t* t
    cdef uint32_t nxt
    cdef int p
    if h.n_recs == 0:
        return
    c = chunk(q, h.rec_head)
    if not (h.bits & H_UNORDERED):
        if seq_le(c.r[c.lo].end, n):
            while True:
                p = c.lo
                last[0] = c.r[p]
                any_removed[0] = True
                if (c.flags >> p) & 1:
                    clean[0] = False
                    c.flags &= <uint8_t>~(1 << p)
                c.lo += 1
                c.n -= 1
                h.n_recs -= 1
                q.records_held -= 1
                if c.n == 0:
                    nxt = c.next
                    pool_free(&q.recs, h.rec_head)
                    h.rec_head = nxt
                    if nxt == 0:
                        h.rec_tail = 0
                        return
                    c = chunk(q, nxt)
                if not seq_le(c.r[c.lo].end, n):
                    h.head_end = c.r[c.lo].end
                    return
        t = chunk(q, h.rec_tail)
        if not seq_le(t.r[t.lo + t.n - 1].end, n):
            return
    remove_all_matching(q, h, n, last, any_removed, clean)


# --- holes of a half (a ring) ------------------------------------------------------------

cdef inline hole_t* hole_base(q_t* q, half_t* h) noexcept nogil:
    return <hole_t*>pool_ptr(&q.holes[h.hole_cls], h.hole_blk)

cdef void free_holes(q_t* q, half_t* h) noexcept nogil:
    if h.hole_blk:
        pool_free(&q.holes[h.hole_cls], h.hole_blk)
    h.hole_blk = 0
    h.hole_cls = 0
    h.n_holes = 0
    h.hole_at = 0

cdef void write_holes(q_t* q, half_t* h, hole_t* src, uint32_t n) noexcept nogil:
    """Make h's holes src[0:n] (a copy), in the smallest block that holds them."""
    cdef uint32_t cls = 0, idx
    free_holes(q, h)
    if n == 0:
        return
    while (<uint32_t>HOLE_MIN << cls) < n:
        cls += 1
    idx = pool_alloc(q, &q.holes[cls])
    if idx == 0:
        return
    h.hole_blk = idx
    h.hole_cls = <uint8_t>cls
    memcpy(hole_base(q, h), src, n * sizeof(hole_t))
    h.n_holes = <uint16_t>n
    h.hole_at = 0

cdef void copy_holes(q_t* q, half_t* h, hole_t* dst) noexcept nogil:
    cdef hole_t* base = hole_base(q, h)
    cdef uint32_t mask = (<uint32_t>HOLE_MIN << h.hole_cls) - 1, i
    for i in range(h.n_holes):
        dst[i] = base[(h.hole_at + i) & mask]

cdef void add_hole(q_t* q, half_t* h, uint32_t a, uint32_t b) noexcept nogil:
    """Append the hole [a, b); past the bound, the lowest is forgotten."""
    cdef uint32_t mask, n
    if q.max_holes_half == 0:
        q.state[S_HOLES_FORGOTTEN] += 1
        return
    if h.n_holes >= q.max_holes_half:      # appending makes one too many
        mask = (<uint32_t>HOLE_MIN << h.hole_cls) - 1
        h.hole_at = <uint16_t>((h.hole_at + 1) & mask)
        h.n_holes -= 1
        q.state[S_HOLES_FORGOTTEN] += 1
    n = h.n_holes
    if h.hole_blk == 0 or n == (<uint32_t>HOLE_MIN << h.hole_cls):
        if h.hole_blk:
            copy_holes(q, h, q.scratch)
        q.scratch[n].a = a
        q.scratch[n].b = b
        write_holes(q, h, q.scratch, n + 1)
        return
    mask = (<uint32_t>HOLE_MIN << h.hole_cls) - 1
    hole_base(q, h)[(h.hole_at + n) & mask] = hole_t(a, b)
    h.n_holes += 1

cdef bint fill_holes(q_t* q, half_t* h, uint32_t s, uint32_t top) noexcept nogil:
    """Take [s, top) out of the holes; True if it overlapped one (section 4)."""
    cdef hole_t* tmp = q.scratch
    cdef hole_t* base
    cdef uint32_t mask, i, m = 0, first = 0
    cdef hole_t x
    cdef bint filled = False
    if h.n_holes == 0:
        return False
    base = hole_base(q, h)
    mask = (<uint32_t>HOLE_MIN << h.hole_cls) - 1
    for i in range(h.n_holes):
        x = base[(h.hole_at + i) & mask]
        if seq_gt(x.b, s) and seq_lt(x.a, top):
            filled = True
            if seq_lt(x.a, s):
                tmp[m] = hole_t(x.a, s)
                m += 1
            if seq_lt(top, x.b):
                tmp[m] = hole_t(top, x.b)
                m += 1
        else:
            tmp[m] = x
            m += 1
    if not filled:
        return False
    while m - first > q.max_holes_half:
        first += 1
        q.state[S_HOLES_FORGOTTEN] += 1
    write_holes(q, h, tmp + first, m - first)
    return True

cdef void clip_holes(q_t* q, half_t* h, uint32_t n) noexcept nogil:
    """A new ACK n: holes ending at or below n go, those starting below n start at n."""
    cdef hole_t* base
    cdef uint32_t mask, i, w = 0
    cdef hole_t x
    if h.n_holes == 0:
        return
    base = hole_base(q, h)
    mask = (<uint32_t>HOLE_MIN << h.hole_cls) - 1
    for i in range(h.n_holes):
        x = base[(h.hole_at + i) & mask]
        if seq_gt(x.b, n):
            if not seq_ge(x.a, n):
                x.a = n
            base[(h.hole_at + w) & mask] = x
            w += 1
    if w == 0:
        free_holes(q, h)
    else:
        h.n_holes = <uint16_t>w


# --- halves and connections -----------------------------------------------------------------

cdef void flush_half(q_t* q, conn_t* c, int d) noexcept nogil:
    """Add what half d holds for the open window to its rows: its data counts
    for (the receiver's port, in) and (the sender's port, out), section 6."""
    cdef half_t* h = &c.half[d]
    cdef uint32_t sender, receiver
    cdef pair_t p
    if h.acc_segments == 0 and h.acc_gaps == 0:
        return
    sender = (c.ports >> (16 * d)) & 0xFFFF
    receiver = (c.ports >> (16 * (1 - d))) & 0xFFFF
    p = pair_t(receiver << 1, (sender << 1) | 1, NULL, NULL)
    fetch(q, &p)
    p.a.c[C_DATA_SEGMENTS] += h.acc_segments
    p.b.c[C_DATA_SEGMENTS] += h.acc_segments
    p.a.c[C_DATA_BYTES] += h.acc_bytes
    p.b.c[C_DATA_BYTES] += h.acc_bytes
    p.a.c[C_GAPS] += h.acc_gaps
    p.b.c[C_GAPS] += h.acc_gaps
    p.a.c[C_GAP_BYTES] += h.acc_gap_bytes
    p.b.c[C_GAP_BYTES] += h.acc_gap_bytes
    h.acc_segments = 0
    h.acc_gaps = 0
    h.acc_bytes = 0
    h.acc_gap_bytes = 0

cdef inline void clear_half(q_t* q, conn_t* c, int d) noexcept nogil:
    cdef half_t* h = &c.half[d]
    flush_half(q, c, d)
    free_records(q, h)
    free_holes(q, h)
    memset(h, 0, sizeof(half_t))

ctypedef struct key_t:          # a connection's endpoints, in a fixed order
    uint64_t w[4]
    uint32_t ports
    uint8_t version

cdef inline uint64_t key_hash(const key_t* k) noexcept nogil:
    cdef uint64_t x = (k.w[0] ^ (k.w[1] * 0x9E3779B97F4A7C15ULL)
                       ^ (k.w[2] * 0xC2B2AE3D27D4EB4FULL) ^ (k.w[3] * 0x165667B19E3779F9ULL)
                       ^ ((<uint64_t>k.ports << 8 | k.version) * 0xBF58476D1CE4E5B9ULL))
    x ^= x >> 29
    x *= 0x94D049BB133111EBULL
    return x ^ (x >> 32)

cdef inline bint key_eq(const conn_t* c, const key_t* k) noexcept nogil:
    return (c.ports == k.ports and c.key[0] == k.w[0] and c.key[1] == k.w[1]
            and c.key[2] == k.w[2] and c.key[3] == k.w[3] and c.version == k.version)

cdef uint32_t find(q_t* q, const key_t* k, uint32_t tag, uint32_t* pos) noexcept nogil:
    """The connection's slot + 1 (0 if none); pos: its table position, or the empty
    one where it would go."""
    cdef uint32_t i = tag & q.hash_mask
    cdef uint64_t e
    while True:
        e = q.hash[i]
        if e == 0:
            pos[0] = i
            return 0
        if <uint32_t>(e >> 32) == tag and key_eq(&q.conns[<uint32_t>e - 1], k):
            pos[0] = i
            return <uint32_t>e
        i = (i + 1) & q.hash_mask

cdef void unhash(q_t* q, uint32_t i) noexcept nogil:
    """Empty table position i (backward-shift deletion: no tombstones)."""
    cdef uint32_t j = i, k, mask = q.hash_mask
    while True:
        j = (j + 1) & mask
        if q.hash[j] == 0:
            q.hash[i] = 0
            return
        k = <uint32_t>(q.hash[j] >> 32) & mask
        # the entry at j may move to i unless its home k lies cyclically in (i, j]
        if (i <= j and i < k and k <= j) or (i > j and (i < k or k <= j)):
            continue
        q.hash[i] = q.hash[j]
        i = j

cdef void lru_push(q_t* q, uint32_t slot) noexcept nogil:
    """A new entry for slot, now the most recently used (the queue is on)."""
    cdef uint32_t i, w, n
    cdef lru_t e
    if q.lru_len > q.lru_mask:      # full: keep the live entries only
        n = q.lru_len
        w = 0
        for i in range(n):
            e = q.lru[(q.lru_head + i) & q.lru_mask]
            if q.conns[e.conn].alive and <uint32_t>q.conns[e.conn].stamp == e.stamp:
                q.lru[(q.lru_head + w) & q.lru_mask] = e
                w += 1
        q.lru_len = w
    q.lru[(q.lru_head + q.lru_len) & q.lru_mask] = lru_t(slot, <uint32_t>q.conns[slot].stamp)
    q.lru_len += 1

cdef inline void touch(q_t* q, uint32_t slot) noexcept nogil:
    """A use of slot (its latest analysed packet). Until the first eviction only
    the stamp is kept; the queue then starts from the stamps (lru_start)."""
    cdef conn_t* c = &q.conns[slot]
    cdef lru_t* last
    if q.lru_on:
        last = &q.lru[(q.lru_head + q.lru_len - 1) & q.lru_mask]
        if last.conn == slot and last.stamp == <uint32_t>c.stamp:
            return          # already the most recent
        q.clock += 1
        c.stamp = q.clock
        lru_push(q, slot)
    else:
        q.clock += 1
        c.stamp = q.clock

cdef int by_stamp(const void* a, const void* b) noexcept nogil:
    cdef uint64_t x = (<const by_use_t*>a).stamp, y = (<const by_use_t*>b).stamp
    return (x > y) - (x < y)

cdef void lru_start(q_t* q) noexcept nogil:
    """The LRU queue, from the live connections' stamps (oldest first)."""
    cdef by_use_t* order = <by_use_t*>malloc((<size_t>q.n_conns + 1) * sizeof(by_use_t))
    cdef uint32_t slot, n = 0
    if order == NULL:
        q.failed = 1
        return
    for slot in range(q.max_conns):
        if q.conns[slot].alive:
            order[n].stamp = q.conns[slot].stamp
            order[n].conn = slot
            n += 1
    qsort(order, n, sizeof(by_use_t), by_stamp)
    for slot in range(n):
        q.lru[slot] = lru_t(order[slot].conn, <uint32_t>order[slot].stamp)
    q.lru_head = 0
    q.lru_len = n
    q.lru_on = True
    free(order)

cdef inline void key_of(const conn_t* c, key_t* k) noexcept nogil:
    memcpy(k.w, c.key, sizeof(k.w))
    k.ports = c.ports
    k.version = c.version

cdef void drop(q_t* q, uint32_t slot, uint32_t pos) noexcept nogil:
    """Discard a connection (both halves) at table position pos."""
    cdef conn_t* c = &q.conns[slot]
    clear_half(q, c, 0)
    clear_half(q, c, 1)
    c.alive = 0
    unhash(q, pos)
    q.free_conns[q.n_free] = slot
    q.n_free += 1
    q.n_conns -= 1

cdef void evict_oldest(q_t* q) noexcept nogil:
    cdef lru_t e
    cdef conn_t* c
    cdef key_t k
    cdef uint32_t pos, slot
    if not q.lru_on:
        lru_start(q)
    while q.lru_len:
        e = q.lru[q.lru_head]
        q.lru_head = (q.lru_head + 1) & q.lru_mask
        q.lru_len -= 1
        c = &q.conns[e.conn]
        if c.alive and <uint32_t>c.stamp == e.stamp:
            key_of(c, &k)
            slot = find(q, &k, c.tag, &pos)
            drop(q, slot - 1, pos)
            q.state[S_CONNECTIONS_EVICTED] += 1
            return

cdef uint32_t create(q_t* q, const key_t* k, uint32_t tag) noexcept nogil:
    """A new connection with two empty halves (section 3, step 2; section 7): its slot."""
    cdef uint32_t slot, pos, listed
    cdef conn_t* c
    if q.n_conns >= q.max_conns:
        evict_oldest(q)
        if q.failed:
            return 0
    find(q, k, tag, &pos)       # the empty position (after the eviction)
    q.n_free -= 1
    slot = q.free_conns[q.n_free]
    c = &q.conns[slot]
    listed = c.dirty                # kept: the slot is listed at most once a window
    memset(c, 0, sizeof(conn_t))
    c.dirty = listed
    memcpy(c.key, k.w, sizeof(c.key))
    c.ports = k.ports
    c.version = k.version
    c.tag = tag
    c.alive = 1
    q.hash[pos] = (<uint64_t>tag << 32) | (slot + 1)
    q.clock += 1
    c.stamp = q.clock
    if q.lru_on:
        lru_push(q, slot)
    q.n_conns += 1
    q.state[S_CONNECTIONS] += 1
    return slot


# --- section 4: the sequence side -----------------------------------------------------------

cdef void below_hi(q_t* q, half_t* h, pair_t* p, uint64_t t, uint32_t s,
                   uint32_t e, uint32_t payload, uint8_t flags) noexcept nogil:
    cdef uint32_t hi = h.hi
    cdef bint beyond = seq_gt(e, hi)
    cdef uint32_t top = hi if beyond else e
    cdef int64_t resent
    flag_range(q, h, s, top)
    if fill_holes(q, h, s, top):
        flag_first_beyond(q, h, s)
        bump(q, p, C_OOO_SEGMENTS, 1)
    else:
        bump(q, p, C_RETRANS_SEGMENTS, 1)
        if beyond:
            resent = seq_diff(hi, s + (1 if flags & F_SYN else 0))
            if resent < 0:
                resent = 0
        else:
            resent = payload
        bump(q, p, C_RETRANS_BYTES, <uint64_t>resent)
    if beyond:
        record(q, h, hi, e, t)
        h.hi = e

cdef inline void gap(q_t* q, half_t* h, pair_t* p, uint32_t hi,
                     uint32_t s) noexcept nogil:
    h.acc_gaps += 1
    if h.acc_gaps == 0:                     # 2^32 in one window: carried to the rows
        bump(q, p, C_GAPS, 1ULL << 32)
    h.acc_gap_bytes += <uint32_t>(s - hi)
    add_hole(q, h, hi, s)

cdef void sequence(q_t* q, half_t* h, pair_t* p, uint64_t t, uint32_t s,
                   uint32_t payload, uint64_t length, uint8_t flags) noexcept nogil:
    cdef uint32_t e = <uint32_t>(s + length)
    cdef uint32_t hi = h.hi
    cdef bint keep_alive = False
    if not (h.bits & H_HI):
        h.hi = e
        h.bits |= H_HI
        if length > 0:
            record(q, h, s, e, t)
    elif not (flags & (F_SYN | F_FIN)) and payload <= 1 and s == <uint32_t>(hi - 1):
        keep_alive = True
        if payload == 1:
            flag_range(q, h, s, e)
    elif length == 0:
        if seq_gt(s, hi):
            gap(q, h, p, hi, s)
            h.hi = s
    elif seq_ge(s, hi):
        if s != hi:
            gap(q, h, p, hi, s)
        record(q, h, s, e, t)
        h.hi = e
    elif seq_lt(s, hi):
        below_hi(q, h, p, t, s, e, payload, flags)
    if payload > 0 and not keep_alive:
        h.acc_segments += 1
        if h.acc_segments == 0:             # 2^32 in one window: carried to the rows
            bump(q, p, C_DATA_SEGMENTS, 1ULL << 32)
        h.acc_bytes += payload


# --- section 5: the acknowledgment side -----------------------------------------------------

cdef void acknowledge(q_t* q, half_t* r, half_t* h, pair_t* p, uint64_t t,
                      uint32_t s, uint32_t n, uint64_t length, uint16_t win) noexcept nogil:
    """ACK number n, in a packet of half h, for the data of half r (rows p)."""
    cdef rec_t last
    cdef bint any_removed = False, clean = True
    if not (r.bits & H_ACKED) or seq_gt(n, r.acked):
        r.acked = n
        r.bits |= H_ACKED
        ack_records(q, r, n, &last, &any_removed, &clean)
        clip_holes(q, r, n)
        if any_removed and last.end == n and clean and t >= last.t:
            sample(q, r, p, t - last.t)
    elif n == r.acked:
        if (length == 0 and win != 0 and (h.bits & H_WIN) and win == h.last_win
                and s == h.hi and (r.bits & H_HI) and seq_gt(r.hi, n)):
            bump(q, p, C_DUP_ACKS, 1)


# --- one packet (sections 1 and 3) -------------------------------------------------------

cdef inline int key_for(const pkt_record_t* rec, key_t* key) noexcept nogil:
    """The packet's connection key: the two endpoints (address, port) in a fixed
    order (any order that is the same both ways will do). Returns d, the half
    that carries this packet's data."""
    cdef uint16_t sport = rec.src_port, dport = rec.dst_port
    cdef uint64_t s0 = q_load64(rec.src_addr), s1 = q_load64(rec.src_addr + 8)
    cdef uint64_t d0 = q_load64(rec.dst_addr), d1 = q_load64(rec.dst_addr + 8)
    cdef int d
    if s0 != d0:
        d = s0 > d0
    elif s1 != d1:
        d = s1 > d1
    else:
        d = sport > dport
    if d == 0:
        key.w[0], key.w[1], key.w[2], key.w[3] = s0, s1, d0, d1
        key.ports = sport | (<uint32_t>dport << 16)
    else:
        key.w[0], key.w[1], key.w[2], key.w[3] = d0, d1, s0, s1
        key.ports = dport | (<uint32_t>sport << 16)
    key.version = 6 if rec.tcp_info & TCPI_IPV6 else 4
    return d

cdef void packet(q_t* q, const pkt_record_t* rec, const key_t* kp, int d,
                 uint32_t tag) noexcept nogil:
    """An analysed packet (section 1 passed) of connection key kp (key_for)."""
    cdef uint8_t flags = rec.tcp_flags
    cdef key_t key = kp[0]
    cdef uint32_t pos, found, slot
    cdef uint16_t sport = rec.src_port, dport = rec.dst_port
    cdef uint32_t seq = rec.tcp_seq, payload = rec.tcp_payload
    cdef uint64_t length
    cdef conn_t* c
    cdef half_t* h
    cdef half_t* peer
    cdef pair_t data, acked
    found = find(q, &key, tag, &pos)
    if flags & F_RST:
        q.state[S_RST] += 1
        if found:
            drop(q, found - 1, pos)
            q.state[S_RST_CLOSED] += 1
        return
    q.state[S_ANALYSED] += 1
    if found:
        slot = found - 1
        touch(q, slot)
    else:
        slot = create(q, &key, tag)
        if q.failed:
            return
    c = &q.conns[slot]
    if c.dirty != q.epoch:
        c.dirty = q.epoch
        q.dirty_list[q.n_dirty] = slot
        q.n_dirty += 1
    h = &c.half[d]
    if (flags & F_SYN) and (h.bits & H_HI) and not ((h.bits & H_SYN) and h.syn_seq == seq):
        if flags & F_ACK:
            clear_half(q, c, d)              # a SYN-ACK: only this half starts afresh
        else:
            clear_half(q, c, 0)              # a SYN: a new connection on the same ports
            clear_half(q, c, 1)
            q.state[S_CONNECTIONS] += 1
    # A connection of an endpoint with itself has one direction: one half.
    peer = (h if (key.w[0] == key.w[2] and key.w[1] == key.w[3] and sport == dport)
            else &c.half[1 - d])
    if flags & F_SYN:
        h.syn_seq = seq
        h.bits |= H_SYN
    length = <uint64_t>payload + (1 if flags & F_SYN else 0) + (1 if flags & F_FIN else 0)
    # Rows: the data of h counts for (dport, in) and (sport, out), that of peer for
    # (sport, in) and (dport, out).
    data = pair_t(<uint32_t>dport << 1, (<uint32_t>sport << 1) | 1, NULL, NULL)
    sequence(q, h, &data, rec.ts_ns, seq, payload, length, flags)
    if flags & F_ACK:
        acked = pair_t(<uint32_t>sport << 1, (<uint32_t>dport << 1) | 1, NULL, NULL)
        acknowledge(q, peer, h, &acked, rec.ts_ns, seq, rec.tcp_ack, length, rec.tcp_win)
        h.last_win = rec.tcp_win
        h.bits |= H_WIN

cdef extern from *:
    """
    #define q_prefetch(p) __builtin_prefetch((const void*)(p), 1, 3)
    """
    void q_prefetch(const void* p) nogil

cdef enum:
    BLOCK = 16      # packets whose state is fetched together (consume_kernel)

cdef inline void prefetch_conn(conn_t* c) noexcept nogil:
    q_prefetch(c)                       # its lines (200 bytes: 4 at most)
    q_prefetch(<char*>c + 64)
    q_prefetch(<char*>c + 128)
    q_prefetch(<char*>c + sizeof(conn_t) - 1)

cdef void consume_kernel(q_t* q, const pkt_record_t* recs, Py_ssize_t start,
                         Py_ssize_t stop) noexcept nogil:
    """Records [start, stop), BLOCK analysed packets at a time. The state of a
    packet is mostly out of the cache (a lookup slot, a connection, its records
    and holes), so a block first asks for all of it (prefetches, which change
    nothing) and only then analyses its packets, in order: the misses of a
    block overlap instead of following one another."""
    cdef key_t keys[BLOCK]
    cdef uint32_t tags[BLOCK]
    cdef int halves[BLOCK]
    cdef const pkt_record_t* pick[BLOCK]
    cdef Py_ssize_t i = start
    cdef int n, j, fresh
    cdef uint32_t v, victims
    cdef uint64_t e
    cdef conn_t* c
    cdef half_t* h
    while i < stop:
        n = 0
        while i < stop and n < BLOCK:
            if recs[i].pkt_class == CLASS_PORTED and recs[i].proto == PROTO_TCP:
                if (recs[i].tcp_info & ANALYSIS_BITS) != TCPI_HEADER:
                    q.state[S_NOT_ANALYSED] += 1
                else:
                    pick[n] = recs + i
                    halves[n] = key_for(recs + i, &keys[n])
                    tags[n] = <uint32_t>key_hash(&keys[n])
                    q_prefetch(&q.hash[tags[n] & q.hash_mask])
                    n += 1
            i += 1
        fresh = 0
        for j in range(n):
            e = q.hash[tags[j] & q.hash_mask]
            if e:
                prefetch_conn(&q.conns[<uint32_t>e - 1])
            else:
                fresh += 1                          # surely a new connection
        # With the table full, each new connection evicts the least recently
        # used: its entry, and (below) what dropping it reads.
        victims = 0
        if q.lru_on and q.n_conns + fresh > q.max_conns:
            victims = min(<uint32_t>fresh, q.lru_len)
            for v in range(victims):
                prefetch_conn(&q.conns[q.lru[(q.lru_head + v) & q.lru_mask].conn])
        for j in range(n):
            e = q.hash[tags[j] & q.hash_mask]
            if e:
                h = &q.conns[<uint32_t>e - 1].half[halves[j]]
                if h.rec_tail:
                    q_prefetch(chunk(q, h.rec_tail))
                if h.hole_blk:
                    q_prefetch(hole_base(q, h) + ((h.hole_at + h.n_holes)
                                                  & ((<uint32_t>HOLE_MIN << h.hole_cls) - 1)))
        for v in range(victims):
            c = &q.conns[q.lru[(q.lru_head + v) & q.lru_mask].conn]
            if c.alive:
                q_prefetch(&q.hash[c.tag & q.hash_mask])
                for j in range(2):
                    if c.half[j].rec_head:
                        q_prefetch(chunk(q, c.half[j].rec_head))
                    if c.half[j].acc_segments or c.half[j].acc_gaps:
                        q_prefetch(&q.row_of[((c.ports >> (16 * (1 - j))) & 0xFFFF) << 1])
                        q_prefetch(&q.row_of[(((c.ports >> (16 * j)) & 0xFFFF) << 1) | 1])
        for j in range(n):
            packet(q, pick[j], &keys[j], halves[j], tags[j])
            if q.failed:
                return


# --- the delta ------------------------------------------------------------------------------

cdef int by_key(const void* a, const void* b) noexcept nogil:
    cdef uint32_t x = (<const uint32_t*>a)[0], y = (<const uint32_t*>b)[0]
    return (x > y) - (x < y)

cdef inline bint row_used(row_t* row) noexcept nogil:
    cdef int j
    for j in range(N_COUNTERS):
        if row.c[j]:
            return True
    return False

cdef inline uint64_t row_value(q_t* q, uint64_t* wraps, uint32_t slot, int j) noexcept nogil:
    cdef row_t* row = &q.rows[slot]
    if j < N_COUNTERS:
        return row.c[COLUMN_AT[j]]
    if wraps != NULL:
        return row.h[j - N_COUNTERS] + wraps[<size_t>slot * HIST_BUCKETS + j - N_COUNTERS]
    return row.h[j - N_COUNTERS]


cdef uint64_t _check_bound(object value, str name, uint64_t least,
                           uint64_t most) except? 0:
    if value < least or value > most:
        raise ValueError(f"the bound {name} must lie in [{least}, {most}], not {value}")
    return value


cdef class QualityCounter:
    """The tcp_quality counter of one source group (docs/quality-rules.md), native.

    QualityCounter(connections=65536, records_per_half=1024, records=4194304,
    holes_per_half=64): the bounds of section 7 (tcp_quality.Bounds). Raises
    ValueError for a bound out of range, MemoryError if the tables cannot be
    allocated.
    """
    cdef q_t q
    # The counting hands this counter the raw record buffer (pt_engine.analysers).
    raw_records = True

    def __cinit__(self, connections=65536, records_per_half=1024, records=4194304,
                  holes_per_half=64):
        cdef uint32_t size = 16, k
        memset(&self.q, 0, sizeof(q_t))
        self.q.max_conns = _check_bound(connections, "connections", 1, 1 << 24)
        self.q.max_recs_half = _check_bound(records_per_half, "records_per_half", 0, 65535)
        self.q.max_recs = _check_bound(records, "records", 0, 1 << 40)
        self.q.max_holes_half = _check_bound(holes_per_half, "holes_per_half", 0, 16384)
        while size < 2 * self.q.max_conns:
            size <<= 1
        self.q.hash_mask = size - 1
        size = 16
        while size < 4 * self.q.max_conns:
            size <<= 1
        self.q.lru_mask = size - 1
        self.q.conns = <conn_t*>calloc(self.q.max_conns + 1, sizeof(conn_t))
        self.q.free_conns = <uint32_t*>malloc((self.q.max_conns + 1) * sizeof(uint32_t))
        self.q.hash = <uint64_t*>calloc(self.q.hash_mask + 1, sizeof(uint64_t))
        self.q.lru = <lru_t*>malloc((self.q.lru_mask + 1) * sizeof(lru_t))
        self.q.scratch = <hole_t*>malloc((2 * self.q.max_holes_half + 2) * sizeof(hole_t))
        # calloc: pages are mapped as rows are used; aligned by hand to a cache line
        self.q.rows_raw = calloc(N_ROW_KEYS * sizeof(row_t) + 64, 1)
        self.q.rows = <row_t*>((<size_t>self.q.rows_raw + 63) & ~(<size_t>63))
        self.q.row_of = <uint32_t*>calloc(N_ROW_KEYS, sizeof(uint32_t))
        self.q.touched = <uint32_t*>malloc(N_ROW_KEYS * sizeof(uint32_t))
        self.q.dirty_list = <uint32_t*>malloc((self.q.max_conns + 1) * sizeof(uint32_t))
        self.q.epoch = 1
        if (self.q.conns == NULL or self.q.free_conns == NULL or self.q.hash == NULL
                or self.q.lru == NULL or self.q.scratch == NULL or self.q.rows_raw == NULL
                or self.q.row_of == NULL or self.q.touched == NULL
                or self.q.dirty_list == NULL):
            raise MemoryError()
        for k in range(self.q.max_conns):
            self.q.free_conns[k] = self.q.max_conns - 1 - k     # slot 0 first
        self.q.n_free = self.q.max_conns
        pool_init(&self.q.recs, sizeof(chunk_t))
        k = 0
        while True:
            pool_init(&self.q.holes[k], (<uint32_t>HOLE_MIN << k) * sizeof(hole_t))
            k += 1
            if (<uint32_t>HOLE_MIN << (k - 1)) >= self.q.max_holes_half or k == MAX_HOLE_CLASSES:
                break
        self.q.n_hole_classes = k

    def __dealloc__(self):
        cdef uint32_t k
        free(self.q.conns)
        free(self.q.free_conns)
        free(self.q.hash)
        free(self.q.lru)
        free(self.q.scratch)
        free(self.q.rows_raw)
        free(self.q.row_of)
        free(self.q.touched)
        free(self.q.dirty_list)
        free(self.q.ovf)
        pool_release(&self.q.recs)
        for k in range(self.q.n_hole_classes):
            pool_release(&self.q.holes[k])

    def consume(self, records, Py_ssize_t start, Py_ssize_t stop):
        """Analyse records[start:stop] of a buffer of whole pkt_record_t (a numpy
        RECORD_DTYPE array is taken as its bytes); keeps no view of it. Raises
        ValueError for a bad range, MemoryError if the state cannot grow (the
        packets before are analysed)."""
        cdef const unsigned char[::1] rec_bytes
        cdef Py_ssize_t n_records
        if getattr(records, "dtype", None) is not None:
            records = records.view("u1").reshape(-1)
        rec_bytes = records
        n_records = rec_bytes.shape[0] // sizeof(pkt_record_t)
        if rec_bytes.shape[0] % sizeof(pkt_record_t):
            raise ValueError(f"a buffer of {rec_bytes.shape[0]} bytes is not whole "
                             f"{sizeof(pkt_record_t)}-byte records")
        if not (0 <= start <= stop <= n_records):
            raise ValueError(f"range [{start}, {stop}) outside {n_records} records")
        if start == stop:
            return
        with nogil:
            consume_kernel(&self.q, <const pkt_record_t*>&rec_bytes[0], start, stop)
        if self.q.failed:
            raise MemoryError("the TCP quality state could not grow")

    def take(self):
        """The open window's delta (bytes, the layout of this module's docstring),
        or None when it holds nothing; the next window starts empty."""
        cdef q_t* q = &self.q
        cdef uint32_t n = q.n_rows, i, k, slot, nrows = 0, key
        cdef uint64_t nvalues = 0, mask
        cdef uint64_t* wraps = NULL
        cdef uint64_t* head
        cdef uint32_t* keys
        cdef uint64_t* masks
        cdef uint64_t* values
        cdef uint64_t v
        cdef Py_ssize_t keys_bytes
        cdef bytes out
        cdef int j
        cdef bint any_state = False
        cdef uint32_t* order
        with nogil:
            # what the connections used in this window hold, into its rows
            for i in range(q.n_dirty):
                slot = q.dirty_list[i]
                if q.conns[slot].alive:
                    flush_half(q, &q.conns[slot], 0)
                    flush_half(q, &q.conns[slot], 1)
            q.n_dirty = 0
            q.epoch += 1
            if q.epoch == 0:        # after 2^32 windows: no connection may look listed
                for slot in range(q.max_conns):
                    q.conns[slot].dirty = 0
                q.epoch = 1
        n = q.n_rows
        order = <uint32_t*>malloc((n + 1) * sizeof(uint32_t))
        if order == NULL:
            raise MemoryError()
        if q.n_ovf:
            wraps = <uint64_t*>calloc(<size_t>n * HIST_BUCKETS, sizeof(uint64_t))
            if wraps == NULL:
                free(order)
                raise MemoryError()
            for i in range(q.n_ovf):
                wraps[q.ovf[i]] += 1ULL << 32
        with nogil:
            # the used rows' keys, increasing
            if <uint64_t>n * 16 > N_ROW_KEYS:
                for key in range(N_ROW_KEYS):
                    if q.row_of[key] and row_used(&q.rows[q.row_of[key] - 1]):
                        order[nrows] = key
                        nrows += 1
            else:
                for slot in range(n):
                    if row_used(&q.rows[slot]):
                        order[nrows] = q.touched[slot]
                        nrows += 1
                qsort(order, nrows, sizeof(uint32_t), by_key)
            for i in range(nrows):
                slot = q.row_of[order[i]] - 1
                for j in range(ROW_WIDTH):
                    if row_value(q, wraps, slot, j):
                        nvalues += 1
        for j in range(N_STATE):
            if q.state[j]:
                any_state = True
        if nrows == 0 and not any_state:
            result = None
        else:
            keys_bytes = (nrows * 4 + 7) & ~7
            # written in place: a new bytes object no one else holds yet
            out = PyBytes_FromStringAndSize(NULL, DELTA_HEAD * 8 + keys_bytes + nrows * 8
                                            + nvalues * 8)
            memset(PyBytes_AS_STRING(out), 0, DELTA_HEAD * 8 + keys_bytes)
            head = <uint64_t*>PyBytes_AS_STRING(out)
            keys = <uint32_t*>(PyBytes_AS_STRING(out) + DELTA_HEAD * 8)
            masks = <uint64_t*>(PyBytes_AS_STRING(out) + DELTA_HEAD * 8 + keys_bytes)
            values = masks + nrows
            with nogil:
                head[0] = D_VERSION
                head[1] = nrows
                head[2] = nvalues
                memcpy(head + 4, q.state, sizeof(q.state))
                k = 0
                for i in range(nrows):
                    keys[i] = order[i]
                    slot = q.row_of[order[i]] - 1
                    mask = 0
                    for j in range(ROW_WIDTH):
                        v = row_value(q, wraps, slot, j)
                        if v:
                            mask |= 1ULL << j
                            values[k] = v
                            k += 1
                    masks[i] = mask
            result = out
        with nogil:
            for slot in range(n):
                q.row_of[q.touched[slot]] = 0
            memset(q.rows, 0, <size_t>n * sizeof(row_t))
            q.n_rows = 0
            q.n_ovf = 0
            memset(q.state, 0, sizeof(q.state))
        free(order)
        free(wraps)
        return result

    # Introspection, for the tests and the benchmarks.

    @property
    def bounds(self):
        """(connections, records_per_half, records, holes_per_half)."""
        return (self.q.max_conns, self.q.max_recs_half, self.q.max_recs, self.q.max_holes_half)

    @property
    def connections_held(self):
        return self.q.n_conns

    @property
    def records_held(self):
        return self.q.records_held

    def holdings(self):
        """What the state holds now: a dict of connections, records, holes, the most
        records and holes in one half, and the bytes allocated (tables and pools)."""
        cdef uint32_t slot, k
        cdef uint64_t holes = 0, most_recs = 0, most_holes = 0, pooled = 0, walked = 0
        cdef uint32_t idx
        cdef conn_t* c
        cdef int d
        for slot in range(self.q.max_conns):
            c = &self.q.conns[slot]
            if not c.alive:
                continue
            for d in range(2):
                idx = c.half[d].rec_head
                while idx:
                    walked += 1
                    idx = chunk(&self.q, idx).next
                holes += c.half[d].n_holes
                most_recs = max(most_recs, c.half[d].n_recs)
                most_holes = max(most_holes, c.half[d].n_holes)
        pooled = <uint64_t>self.q.recs.n_slabs * (self.q.recs.item << SLAB_SHIFT)
        for k in range(self.q.n_hole_classes):
            pooled += <uint64_t>self.q.holes[k].n_slabs * (self.q.holes[k].item << SLAB_SHIFT)
        tables = ((self.q.max_conns + 1) * (sizeof(conn_t) + 4) + (self.q.hash_mask + 1) * 8
                  + (self.q.lru_mask + 1) * sizeof(lru_t) + N_ROW_KEYS * (sizeof(row_t) + 8)
                  + (2 * self.q.max_holes_half + 2) * sizeof(hole_t))
        return {"connections": self.q.n_conns, "records": self.q.records_held, "holes": holes,
                "most_records_in_a_half": most_recs, "most_holes_in_a_half": most_holes,
                "record_chunks": self.q.recs.in_use, "record_chunks_chained": walked,
                "pooled_bytes": pooled,
                "table_bytes": tables}


SIZES = {"conn": sizeof(conn_t), "half": sizeof(half_t), "chunk": sizeof(chunk_t),
         "row": sizeof(row_t), "lru": sizeof(lru_t), "hole": sizeof(hole_t)}
