# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
# (Bounds are checked by hand: consume() checks the buffer and the range; every
# other index comes from this module's own tables.)
"""Top talkers in the capture process, natively: the counter of the ``talkers``
analyser (engine/analysers/talkers.py, whose ``TalkersCounter`` is the
pure-Python twin: the same rule, the same counts).

The extension ``pt_engine._talkers``. It reads the raw record buffer
(records.pxd) with the GIL released and touches no Python object per packet.

A ported packet of protocol index I (records.PORT_PROTOCOLS) from (A, S) to
(B, D) adds one packet and its wire length to address A in row
``I << 17 | D << 1 | 0`` (port D, in) and to address B in row
``I << 17 | S << 1 | 1`` (port S, out). A row keeps at most ``bound``
addresses (Space-Saving): an address arriving at a full row takes the place
of the row's smallest entry, by (bytes, address), and inherits its counts; the
row's error is the largest byte count so replaced. So a row's entries always
add up to the row's exact packets and bytes, and with at most ``bound``
addresses every count is exact.

State, per window (all of it is dropped at take()):

* entries: one array of entry_t (40 bytes), found by open addressing on
  (row, address) with linear probing (load <= 1/2, backward-shift deletion),
  hashed with a key drawn at random per counter, so that addresses chosen
  by a sender cannot aim at one probe chain;
* rows: row_t per row touched, through a direct index of 5 x 65,536 x 2
  slots; each row lists its entries, and once full keeps them as a binary
  min-heap by (bytes, address), so that finding the one to replace costs
  O(log bound), not a scan.

The delta of take() is bytes, little-endian (talkers.unpack_delta reads it,
talkers.pack_delta writes it for the twin):

    uint64 head[4]: [0] DELTA_VERSION  [1] entries  [2] rows  [3] 0
    entries x {uint32 row, uint32 0, uint8 address[16], uint64 packets,
               uint64 bytes}                                     (40 bytes)
    rows    x {uint32 row, uint32 addresses, uint64 packets, uint64 bytes,
               uint64 error}                                     (32 bytes)

A row's packets and bytes are its entries added up (the row's exact traffic),
its error the largest byte count replaced (plus, for a counter that merged
deltas, theirs); the aggregator picks the busiest ports from the rows alone
and reads only their entries.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, malloc, realloc, free
from libc.string cimport memcmp, memcpy, memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

from records cimport *

cdef enum:
    N_ROW_KEYS = 655360          # 5 protocols x 65536 ports x 2 directions
    D_VERSION = 2
    D_HEAD = 4
    MIN_ENTRIES = 1024           # initial (and shrunk-to) capacity of the entry array

cdef uint32_t NONE = 0xFFFFFFFF
cdef uint32_t HEAPED = 0x80000000     # entry_t.pos: its row is full, a heap

DELTA_VERSION = D_VERSION

ctypedef struct entry_t:         # the delta's entry layout, but for pos
    uint32_t key
    uint32_t pos                 # position in its row's list, | HEAPED once the row is
                                 # a heap (0 in the delta)
    uint8_t addr[16]
    uint64_t packets
    uint64_t nbytes

ctypedef struct row_t:
    uint32_t key
    uint32_t n                   # entries
    uint32_t cap                 # of idx
    uint32_t* idx                # entry indices
    uint64_t error               # largest byte count replaced
    uint64_t carried             # errors of the deltas merged in (merge())

ctypedef struct t_t:
    uint32_t bound
    uint64_t seed
    entry_t* entries
    uint32_t n_entries
    uint32_t cap_entries
    uint32_t* hash               # entry index, NONE for empty
    uint32_t hash_mask
    uint32_t* row_of             # N_ROW_KEYS: row slot + 1, 0 for none
    row_t* rows
    uint32_t n_rows
    uint32_t cap_rows
    int failed


cdef inline int proto_index(uint8_t proto) noexcept nogil:
    # records.PORT_PROTOCOLS order
    if proto == 6:
        return 0
    if proto == 17:
        return 1
    if proto == 132:
        return 2
    if proto == 136:
        return 3
    if proto == 33:
        return 4
    return -1


cdef inline uint64_t mix(uint64_t x) noexcept nogil:
    x ^= x >> 33
    x *= 0xff51afd7ed558ccdULL
    x ^= x >> 33
    x *= 0xc4ceb9fe1a85ec53ULL
    x ^= x >> 33
    return x


cdef inline uint64_t entry_hash(const t_t* t, uint32_t key, const uint8_t* addr) noexcept nogil:
    cdef uint64_t lo, hi
    memcpy(&lo, addr, 8)
    memcpy(&hi, addr + 8, 8)
    return mix(mix(mix(t.seed ^ key) + lo) + hi)


cdef inline uint32_t find(const t_t* t, uint32_t key, const uint8_t* addr, uint64_t h,
                          uint32_t* slot) noexcept nogil:
    """The entry of (key, addr), whose entry_hash is h, or NONE; slot: where it
    is, or the empty slot where it would go."""
    cdef uint32_t i = <uint32_t>h & t.hash_mask, e
    while True:
        e = t.hash[i]
        if e == NONE:
            slot[0] = i
            return NONE
        if t.entries[e].key == key and memcmp(t.entries[e].addr, addr, 16) == 0:
            slot[0] = i
            return e
        i = (i + 1) & t.hash_mask


cdef void unhash(t_t* t, uint32_t i) noexcept nogil:
    """Empty hash slot i, shifting back the entries of its probe chain."""
    cdef uint32_t j = i, home, mask = t.hash_mask, e
    while True:
        j = (j + 1) & mask
        e = t.hash[j]
        if e == NONE:
            break
        home = <uint32_t>entry_hash(t, t.entries[e].key, t.entries[e].addr) & mask
        # e may move to i unless its home lies cyclically in (i, j]
        if (i <= j and (home <= i or home > j)) or (i > j and home <= i and home > j):
            t.hash[i] = e
            i = j
    t.hash[i] = NONE


cdef int rehash(t_t* t, uint32_t size) noexcept nogil:
    cdef uint32_t* table = <uint32_t*>malloc(size * sizeof(uint32_t))
    cdef uint32_t e, i
    if table == NULL:
        return -1
    free(t.hash)
    t.hash = table
    t.hash_mask = size - 1
    memset(table, 0xFF, size * sizeof(uint32_t))
    for e in range(t.n_entries):
        i = <uint32_t>entry_hash(t, t.entries[e].key, t.entries[e].addr) & t.hash_mask
        while table[i] != NONE:
            i = (i + 1) & t.hash_mask
        table[i] = e
    return 0


cdef inline bint less(const entry_t* a, const entry_t* b) noexcept nogil:
    if a.nbytes != b.nbytes:
        return a.nbytes < b.nbytes
    return memcmp(a.addr, b.addr, 16) < 0


cdef void sift_down(t_t* t, row_t* row, uint32_t pos) noexcept nogil:
    cdef uint32_t n = row.n, child, e = row.idx[pos]
    cdef entry_t* ents = t.entries
    while True:
        child = 2 * pos + 1
        if child >= n:
            break
        if child + 1 < n and less(&ents[row.idx[child + 1]], &ents[row.idx[child]]):
            child += 1
        if not less(&ents[row.idx[child]], &ents[e]):
            break
        row.idx[pos] = row.idx[child]
        ents[row.idx[pos]].pos = pos | HEAPED
        pos = child
    row.idx[pos] = e
    ents[e].pos = pos | HEAPED


cdef row_t* row_for(t_t* t, uint32_t key) noexcept nogil:
    cdef uint32_t r = t.row_of[key]
    cdef row_t* grown
    cdef row_t* row
    cdef uint32_t cap
    if r:
        return &t.rows[r - 1]
    if t.n_rows == t.cap_rows:
        cap = t.cap_rows * 2 if t.cap_rows else 64
        grown = <row_t*>realloc(t.rows, cap * sizeof(row_t))
        if grown == NULL:
            return NULL
        t.rows, t.cap_rows = grown, cap
    row = &t.rows[t.n_rows]
    memset(row, 0, sizeof(row_t))
    row.key = key
    t.n_rows += 1
    t.row_of[key] = t.n_rows
    return row


cdef int add(t_t* t, uint32_t key, const uint8_t* addr, uint64_t packets,
             uint64_t nbytes, uint64_t h) noexcept nogil:
    """Count (packets, nbytes) for addr in row key; h: entry_hash(t, key, addr)."""
    cdef uint32_t slot, e, cap, i
    cdef entry_t* ent
    cdef entry_t* grown
    cdef uint32_t* idx
    cdef row_t* row
    e = find(t, key, addr, h, &slot)
    if e != NONE:
        ent = &t.entries[e]
        ent.packets += packets
        ent.nbytes += nbytes
        if ent.pos & HEAPED:       # the row only when it is a heap: one load less
            sift_down(t, &t.rows[t.row_of[key] - 1], ent.pos & ~HEAPED)
        return 0
    row = row_for(t, key)
    if row == NULL:
        return -1
    if row.n >= t.bound:
        # Space-Saving: the smallest entry makes room and hands over its counts
        e = row.idx[0]
        ent = &t.entries[e]
        if ent.nbytes > row.error:
            row.error = ent.nbytes
        find(t, ent.key, ent.addr, entry_hash(t, ent.key, ent.addr), &i)
        unhash(t, i)
        memcpy(ent.addr, addr, 16)
        ent.packets += packets
        ent.nbytes += nbytes
        sift_down(t, row, 0)
        find(t, key, addr, h, &slot)
        t.hash[slot] = e
        return 0
    if t.n_entries == t.cap_entries:
        cap = t.cap_entries * 2
        grown = <entry_t*>realloc(t.entries, cap * sizeof(entry_t))
        if grown == NULL:
            return -1
        t.entries, t.cap_entries = grown, cap
    if 2 * (t.n_entries + 1) > t.hash_mask + 1:
        if rehash(t, 2 * (t.hash_mask + 1)) < 0:
            return -1
        find(t, key, addr, h, &slot)
    if row.n == row.cap:
        cap = row.cap * 2 if row.cap else 4
        if cap > t.bound:
            cap = t.bound
        idx = <uint32_t*>realloc(row.idx, cap * sizeof(uint32_t))
        if idx == NULL:
            return -1
        row.idx, row.cap = idx, cap
    e = t.n_entries
    t.n_entries += 1
    ent = &t.entries[e]
    ent.key = key
    ent.pos = row.n
    memcpy(ent.addr, addr, 16)
    ent.packets = packets
    ent.nbytes = nbytes
    row.idx[row.n] = e
    row.n += 1
    t.hash[slot] = e
    if row.n == t.bound:
        for i in range(row.n):
            t.entries[row.idx[i]].pos = i | HEAPED
        i = row.n // 2
        while i > 0:
            i -= 1
            sift_down(t, row, i)
    return 0


cdef extern from *:
    void __builtin_prefetch(const void* addr) nogil


ctypedef struct pending_t:       # a record on its way through consume_kernel
    uint64_t h[2]                # entry_hash of its two (row, address)
    uint32_t key[2]              # its rows: in (destination port), out (source port)
    int counted                  # a ported packet of a protocol with ports


cdef enum:
    PF_RING = 32                 # > PF_FAR
    PF_FAR = 16                  # records ahead: hash the keys, fetch hash slots and row_of
    PF_NEAR = 8                  # records ahead: fetch the entries and rows those point to


cdef void consume_kernel(t_t* t, const pkt_record_t* recs, Py_ssize_t start,
                         Py_ssize_t stop) noexcept nogil:
    """Every packet costs dependent loads from tables larger than the cache
    (hash slot -> entry; the row only for a new address or a full row): they
    are started PF_FAR and PF_NEAR records ahead, so that the loads of several
    packets overlap."""
    cdef pending_t ring[PF_RING]
    cdef pending_t* p
    cdef const pkt_record_t* r
    cdef Py_ssize_t k, j
    cdef int pi, d
    cdef uint32_t base, e
    for k in range(start, stop + PF_FAR):
        if k < stop:
            r = &recs[k]
            p = &ring[k % PF_RING]
            pi = proto_index(r.proto) if r.pkt_class == CLASS_PORTED else -1
            p.counted = pi >= 0
            if p.counted:
                base = (<uint32_t>pi) << 17
                p.key[0] = base | (<uint32_t>r.dst_port << 1)
                p.key[1] = base | (<uint32_t>r.src_port << 1) | 1
                p.h[0] = entry_hash(t, p.key[0], r.src_addr)
                p.h[1] = entry_hash(t, p.key[1], r.dst_addr)
                for d in range(2):
                    __builtin_prefetch(&t.hash[<uint32_t>p.h[d] & t.hash_mask])
        j = k - (PF_FAR - PF_NEAR)
        if start <= j < stop and ring[j % PF_RING].counted:
            p = &ring[j % PF_RING]
            for d in range(2):
                e = t.hash[<uint32_t>p.h[d] & t.hash_mask]
                if e != NONE:
                    __builtin_prefetch(&t.entries[e])
        j = k - PF_FAR
        if j >= start and ring[j % PF_RING].counted:
            p = &ring[j % PF_RING]
            r = &recs[j]
            if (add(t, p.key[0], r.src_addr, 1, r.wire_len, p.h[0]) < 0
                    or add(t, p.key[1], r.dst_addr, 1, r.wire_len, p.h[1]) < 0):
                t.failed = 1
                return


cdef void write_rows(const t_t* t, uint64_t* out) noexcept nogil:
    """The rows part of a delta; a row's packets and bytes are its entries'."""
    cdef uint32_t r, j
    cdef const row_t* row
    cdef uint64_t p, b
    for r in range(t.n_rows):
        row = &t.rows[r]
        p = b = 0
        for j in range(row.n):
            p += t.entries[row.idx[j]].packets
            b += t.entries[row.idx[j]].nbytes
        out[0] = row.key | (<uint64_t>row.n << 32)
        out[1] = p
        out[2] = b
        out[3] = row.error + row.carried
        out += 4


cdef class TalkersCounter:
    """The talkers counter of one capture process, native.

    TalkersCounter(bound=1024): addresses kept per row and window (1 to
    2^24); raises ValueError out of that range, MemoryError if the tables
    cannot be allocated.
    """
    cdef t_t t
    # The counting hands this counter the raw record buffer (pt_engine.analysers).
    raw_records = True

    def __cinit__(self, bound=1024):
        import os
        if not isinstance(bound, int) or not 1 <= bound <= 1 << 24:
            raise ValueError(f"bound must be an integer from 1 to {1 << 24}, not {bound!r}")
        memset(&self.t, 0, sizeof(t_t))
        self.t.bound = bound
        self.t.seed = int.from_bytes(os.urandom(8), "little")
        self.t.row_of = <uint32_t*>calloc(N_ROW_KEYS, sizeof(uint32_t))
        if self.t.row_of == NULL or self._fresh() < 0:
            raise MemoryError()

    cdef int _fresh(self) except? -1:
        free(self.t.entries)
        free(self.t.hash)
        self.t.hash = NULL
        self.t.entries = <entry_t*>malloc(MIN_ENTRIES * sizeof(entry_t))
        self.t.cap_entries = MIN_ENTRIES
        self.t.n_entries = 0
        if self.t.entries == NULL or rehash(&self.t, 2 * MIN_ENTRIES) < 0:
            return -1
        return 0

    def __dealloc__(self):
        cdef uint32_t r
        for r in range(self.t.n_rows):
            free(self.t.rows[r].idx)
        free(self.t.rows)
        free(self.t.row_of)
        free(self.t.entries)
        free(self.t.hash)

    @property
    def bound(self):
        return self.t.bound

    def consume(self, records, Py_ssize_t start, Py_ssize_t stop):
        """Count records[start:stop] of a buffer of whole pkt_record_t (a numpy
        RECORD_DTYPE array is taken as its bytes); keeps no view of it. Raises
        ValueError for a bad range, MemoryError if the state cannot grow (the
        packets before are counted)."""
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
            consume_kernel(&self.t, <const pkt_record_t*>&rec_bytes[0], start, stop)
        if self.t.failed:
            self.t.failed = 0
            raise MemoryError("the talkers state could not grow")

    def take(self, reset=True):
        """The open window's delta (bytes, the layout of this module's docstring),
        or None when it holds nothing; the next window starts empty (unless not
        `reset`: then it goes on, as the run's totals do)."""
        cdef t_t* t = &self.t
        cdef uint32_t e
        cdef uint64_t* head
        cdef entry_t* out
        cdef char* base
        if t.n_entries == 0:
            return None
        delta = PyBytes_FromStringAndSize(
            NULL, D_HEAD * 8 + t.n_entries * sizeof(entry_t) + t.n_rows * 32)
        base = PyBytes_AS_STRING(delta)
        head = <uint64_t*>base
        head[0] = D_VERSION
        head[1] = t.n_entries
        head[2] = t.n_rows
        head[3] = 0
        out = <entry_t*>(base + D_HEAD * 8)
        memcpy(out, t.entries, t.n_entries * sizeof(entry_t))
        for e in range(t.n_entries):
            out[e].pos = 0
        write_rows(t, <uint64_t*>(base + D_HEAD * 8 + t.n_entries * sizeof(entry_t)))
        if reset:
            self._reset()
        return delta

    cdef int _reset(self) except -1:
        cdef t_t* t = &self.t
        cdef uint32_t r
        for r in range(t.n_rows):
            t.row_of[t.rows[r].key] = 0
            free(t.rows[r].idx)
        t.n_rows = 0
        if t.cap_entries > MIN_ENTRIES and 4 * t.n_entries < t.cap_entries:
            if self._fresh() < 0:      # give back what a burst took
                raise MemoryError()
        else:
            t.n_entries = 0
            memset(t.hash, 0xFF, (t.hash_mask + 1) * sizeof(uint32_t))
        return 0

    def merge(self, delta):
        """Add every entry of a delta (weighted: its packets and bytes at once,
        by the same rule as a packet) and carry its errors into its rows' errors:
        the aggregator's sum of the capture processes' deltas of a window (with
        a bound no row of theirs can reach: exact) and the run's totals (with
        the real bound). Raises ValueError for bytes of another layout,
        MemoryError if the state cannot grow."""
        cdef const unsigned char[::1] data = delta
        cdef const uint64_t* head
        cdef const entry_t* ents
        cdef const uint64_t* rows
        cdef uint64_t n, n_rows, k
        cdef row_t* row
        cdef int failed = 0
        if data.shape[0] < D_HEAD * 8:
            raise ValueError(f"not a talkers delta: {data.shape[0]} bytes")
        head = <const uint64_t*>&data[0]
        n, n_rows = head[1], head[2]
        if (head[0] != D_VERSION or n > data.shape[0] or n_rows > data.shape[0]
                or <uint64_t>data.shape[0] != D_HEAD * 8 + n * sizeof(entry_t) + n_rows * 32):
            raise ValueError(f"not a talkers delta: version {head[0]}, {data.shape[0]} bytes "
                             f"for {n} entries and {n_rows} rows")
        ents = <const entry_t*>(&data[0] + D_HEAD * 8)
        rows = <const uint64_t*>(&data[0] + D_HEAD * 8 + n * sizeof(entry_t))
        for k in range(n):
            if ents[k].key >= N_ROW_KEYS:
                raise ValueError(f"not a talkers delta: row {ents[k].key}")
        for k in range(n_rows):
            if <uint32_t>rows[4 * k] >= N_ROW_KEYS:
                raise ValueError(f"not a talkers delta: row {<uint32_t>rows[4 * k]}")
        with nogil:
            for k in range(n):
                if add(&self.t, ents[k].key, ents[k].addr, ents[k].packets, ents[k].nbytes,
                       entry_hash(&self.t, ents[k].key, ents[k].addr)) < 0:
                    failed = 1
                    break
            for k in range(n_rows):
                if failed:
                    break
                row = row_for(&self.t, <uint32_t>rows[4 * k])
                if row == NULL:
                    failed = 1
                else:
                    row.carried += rows[4 * k + 3]
        if failed:
            raise MemoryError("the talkers state could not grow")

    def rows(self):
        """Every row's summary, as the rows part of a delta (bytes)."""
        data = PyBytes_FromStringAndSize(NULL, self.t.n_rows * 32)
        write_rows(&self.t, <uint64_t*>PyBytes_AS_STRING(data))
        return data

    def entries_of(self, keys):
        """A delta holding only the entries of these rows (a sequence of row
        numbers), and no rows part."""
        cdef t_t* t = &self.t
        cdef uint32_t r, j, n = 0
        cdef uint64_t* head
        cdef entry_t* out
        cdef row_t* row
        wanted = [k for k in keys if 0 <= k < N_ROW_KEYS and t.row_of[k]]
        for k in wanted:
            n += t.rows[t.row_of[k] - 1].n
        data = PyBytes_FromStringAndSize(NULL, D_HEAD * 8 + n * sizeof(entry_t))
        head = <uint64_t*>PyBytes_AS_STRING(data)
        head[0] = D_VERSION
        head[1] = n
        head[2] = 0
        head[3] = 0
        out = <entry_t*>(PyBytes_AS_STRING(data) + D_HEAD * 8)
        for k in wanted:
            row = &t.rows[t.row_of[k] - 1]
            for j in range(row.n):
                out[0] = t.entries[row.idx[j]]
                out[0].pos = 0
                out += 1
        return data
