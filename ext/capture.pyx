# The capture core: drives libpcap's pcap_dispatch with a C callback that
# parses each frame straight into a caller-owned record buffer (normally a
# shared-memory slot). Included by _core.pyx. No Python object is touched per
# packet; the GIL is released for the whole dispatch loop.
#
# BaseCapture holds what every libpcap handle shares (the handle, the fill
# context and its callback, the filter, the counters); SavefileCapture and
# LiveCapture each open their own kind of handle and own their fill loop.
# A mapped classic pcap file is walked by SavefileCapture itself
# (classic_fill): libpcap only opens it and compiles its filter.

cdef struct fill_ctx_t:
    pkt_record_t* out
    Py_ssize_t n            # records written so far in this fill()
    Py_ssize_t cap          # capacity of out
    uint64_t ts_mult        # 1 for ns timestamps, 1000 for us
    uint64_t caplen_sum     # captured bytes seen (record offsets in a pcap file)
    bint sec32              # classic pcap: seconds and fraction are unsigned 32-bit fields
    bint pcapng             # a pcapng file: a record at time 0 has no time (below)
    int frac_unit           # classic pcap: 1000 for a microsecond file, 1 for ns, 0 unknown
    int linktype
    uint16_t iface


cdef inline uint64_t ts_to_ns(uint64_t sec, uint64_t frac, uint64_t mult) noexcept nogil:
    """sec * 1e9 + frac * mult, saturated at 2^64 - 1 ns (year 2554) instead of wrapping."""
    cdef uint64_t top = 0xFFFFFFFFFFFFFFFFULL
    if frac > top // mult:
        return top
    frac *= mult
    if sec > (top - frac) // 1000000000ULL:
        return top
    return sec * 1000000000ULL + frac


cdef inline uint64_t classic_fraction(long value, int unit) noexcept nogil:
    """The unsigned 32-bit fraction field of a classic pcap record, in ns."""
    if value >= 0:
        return <uint64_t>value
    if unit == 0:   # a pipe: a signed ns field lies in [-2^31, 0), a scaled us one below
        unit = 1 if value >= -2147483648 else 1000
    return <uint64_t>(<uint32_t>(value // unit)) * <uint64_t>unit


cdef void on_packet(unsigned char* user, const pcap_pkthdr* h,
                    const unsigned char* data) noexcept nogil:
    cdef fill_ctx_t* ctx = <fill_ctx_t*>user
    cdef pkt_record_t* r = ctx.out + ctx.n
    cdef uint64_t sec, frac
    parse_frame(ctx.linktype, data, h.caplen, h.len, r)
    if ctx.sec32:
        # libpcap reads pcap's unsigned 32-bit fields into signed ones (from
        # 2038-01-19 on, tv_sec would be negative), and multiplies a
        # microsecond fraction by 1000 after that. Take the bits back.
        sec = <uint32_t>h.ts.tv_sec
        frac = classic_fraction(h.ts.tv_usec, ctx.frac_unit)
    else:
        sec = <uint64_t>h.ts.tv_sec
        frac = <uint64_t>h.ts.tv_usec
    r.ts_ns = ts_to_ns(sec, frac, ctx.ts_mult)
    r.iface = ctx.iface
    if ctx.pcapng and r.ts_ns == 0 and r.proto == PROTO_TCP and r.pkt_class == CLASS_PORTED:
        # libpcap gives a Simple Packet Block (which has no timestamp) the
        # time 0; an Enhanced Packet Block stamped at the epoch itself looks
        # the same through libpcap and is taken as timeless too.
        r.tcp_info |= TCPI_NO_TIMESTAMP
    ctx.caplen_sum += h.caplen
    ctx.n += 1


# A classic pcap file read straight from its mapping: each 16-byte record
# header is read in place (no stdio, no copy) and its frame parsed where it
# lies. The checks and their messages are libpcap's (sf-pcap.c,
# pcap_next_packet), with one rule of our own (docs/counting-rules.md): a
# record whose captured length exceeds the file's snapshot length keeps it,
# where libpcap would cut the frame to the snapshot length. In a file of the
# other byte order libpcap also swaps a few pseudo-headers in place (the CAN
# ID behind a Linux cooked header, USB, NFLOG, PFLOG); the mapping is read
# only and left as it is: bytes no counting rule reads, though a BPF filter
# looking at them would see the file's byte order.

cdef extern from *:
    uint32_t bswap32 "__builtin_bswap32"(uint32_t) nogil

cdef enum:
    CLASSIC_SHORT_HEADER = 1    # a record header cut off by the end of the file
    CLASSIC_HUGE_CAPLEN = 2     # a captured length above libpcap's maximum for the link type
    CLASSIC_SHORT_DATA = 3      # a record's captured bytes cut off by the end of the file

cdef struct classic_t:
    const unsigned char* base   # the mapped file
    size_t size
    size_t pos                  # offset of the next record header (libpcap's file position)
    uint32_t max_caplen         # libpcap's sanity maximum for the link type
    uint32_t snapshot           # the file's snapshot length as libpcap adjusts it
    uint64_t frac_mult          # 1000 for a microsecond file, 1 for nanoseconds
    bint swapped                # written in the other byte order
    bint filtered               # prog holds a compiled BPF filter
    bpf_program prog
    int err                     # CLASSIC_*: why classic_fill last returned -1
    uint64_t err_want           # the captured length, or the bytes wanted
    uint64_t err_got            # the bytes there were


cdef uint32_t libpcap_max_caplen(int linktype) noexcept nogil:
    """The largest captured length libpcap reads for `linktype` (max_snaplen_for_dlt)."""
    if linktype == 231:         # DLT_DBUS
        return 128 * 1024 * 1024
    if linktype == 279:         # DLT_EBHSCR
        return 8 * 1024 * 1024
    if linktype == 249:         # DLT_USBPCAP
        return 1024 * 1024
    return 262144               # MAXIMUM_SNAPLEN


cdef inline uint32_t classic_u32(const unsigned char* p, bint swapped) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)            # records are not aligned
    return bswap32(v) if swapped else v


cdef int classic_fill(classic_t* rd, fill_ctx_t* ctx) noexcept nogil:
    """Parse the records from rd.pos on into ctx's buffer until it is full or
    the file ends (0), or a record is bad (-1; rd.err says why). rd.pos then
    stands where libpcap's file position would: past a bad record header,
    at the end of the file after a cut one."""
    cdef const unsigned char* h
    cdef size_t left
    cdef uint32_t sec, frac, caplen, origlen
    cdef pcap_pkthdr ph
    cdef pkt_record_t* r
    memset(&ph, 0, sizeof(ph))
    while ctx.n < ctx.cap:
        left = rd.size - rd.pos
        if left == 0:
            return 0
        if left < 16:
            rd.err, rd.err_want, rd.err_got = CLASSIC_SHORT_HEADER, 16, left
            rd.pos = rd.size
            return -1
        h = rd.base + rd.pos
        sec = classic_u32(h, rd.swapped)
        frac = classic_u32(h + 4, rd.swapped)
        caplen = classic_u32(h + 8, rd.swapped)
        origlen = classic_u32(h + 12, rd.swapped)
        rd.pos += 16
        if caplen > rd.max_caplen:
            rd.err, rd.err_want = CLASSIC_HUGE_CAPLEN, caplen
            return -1
        if caplen > left - 16:
            rd.err, rd.err_want, rd.err_got = CLASSIC_SHORT_DATA, caplen, left - 16
            rd.pos = rd.size
            return -1
        rd.pos += caplen
        if rd.filtered:
            ph.caplen = caplen
            ph.len = origlen
            if pcap_offline_filter(&rd.prog, &ph, h + 16) == 0:
                continue
        r = ctx.out + ctx.n
        parse_frame(ctx.linktype, h + 16, caplen, origlen, r)
        r.ts_ns = ts_to_ns(sec, frac, rd.frac_mult)
        r.iface = ctx.iface
        ctx.caplen_sum += caplen
        ctx.n += 1
    return 0


cdef extern from "<poll.h>" nogil:
    cdef struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd*, unsigned long, int)
    short POLLIN

cdef extern from "<time.h>" nogil:
    cdef struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(int, timespec*)
    int CLOCK_MONOTONIC

cdef inline long long monotonic_ms() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <long long>ts.tv_sec * 1000 + ts.tv_nsec // 1000000

cdef extern from "<sys/mman.h>" nogil:
    void* mmap(void*, size_t, int, int, int, long)
    int munmap(void*, size_t)
    int madvise(void*, size_t, int)
    void* MAP_FAILED
    int PROT_READ
    int MAP_PRIVATE
    int MADV_SEQUENTIAL
    int MADV_DONTNEED

cdef extern from "<sys/stat.h>" nogil:
    cdef struct stat_t "stat":
        long st_size
        unsigned int st_mode
        unsigned long st_ino
    int fstat(int, stat_t*)
    bint S_ISREG(unsigned int)

cdef extern from "<fcntl.h>" nogil:
    int c_open "open"(const char*, int)
    int O_RDONLY
    int O_CLOEXEC

cdef extern from "<unistd.h>" nogil:
    int c_close "close"(int)

cdef extern from "<stdio.h>" nogil:
    FILE* fmemopen(void*, size_t, const char*)

cdef extern from "<sys/socket.h>" nogil:
    int setsockopt(int, int, int, const void*, unsigned int)

cdef extern from "<linux/if_packet.h>" nogil:
    int SOL_PACKET
    int PACKET_FANOUT
    int PACKET_FANOUT_HASH
    int PACKET_FANOUT_FLAG_DEFRAG

FANOUT_HASH = PACKET_FANOUT_HASH


class PcapError(Exception):
    """libpcap said no. args are (message, status): the message is libpcap's,
    prefixed with what we asked; status is libpcap's status code (a PcapStatus
    value) where libpcap gives one, else None."""

    def __init__(self, message, status=None):
        super().__init__(message, status)

    @property
    def status(self):
        return self.args[1]

    def __str__(self):
        return str(self.args[0])


class PcapStatus:
    """libpcap's status codes (<pcap/pcap.h>), as PcapError.status carries them."""
    ERROR = PCAP_ERROR
    NO_SUCH_DEVICE = PCAP_ERROR_NO_SUCH_DEVICE
    PERM_DENIED = PCAP_ERROR_PERM_DENIED
    PROMISC_PERM_DENIED = PCAP_ERROR_PROMISC_PERM_DENIED
    IFACE_NOT_UP = PCAP_ERROR_IFACE_NOT_UP
    RFMON_NOTSUP = PCAP_ERROR_RFMON_NOTSUP
    TSTAMP_PRECISION_NOTSUP = PCAP_ERROR_TSTAMP_PRECISION_NOTSUP
    WARNING_PROMISC_NOTSUP = PCAP_WARNING_PROMISC_NOTSUP


# fill() outcomes
FILL_FULL = 0       # the buffer is full; call again
FILL_EOF = 1        # end of a savefile
FILL_TIMEOUT = 2    # live: the read timeout expired (possibly with packets)
FILL_BREAK = 3      # pcap_breakloop() ended the read (kept for an exhaustive switch)
FILL_ERROR = 4      # libpcap error; see .error


cdef inline int dispatch_some(pcap_t* p, fill_ctx_t* ctx) noexcept nogil:
    """One pcap_dispatch into the room left in ctx's buffer; libpcap's return."""
    return pcap_dispatch(p, <int>min(ctx.cap - ctx.n, 0x7FFFFFFF), on_packet,
                         <unsigned char*>ctx)


cdef class BaseCapture:
    """One libpcap handle feeding record buffers: what a savefile and a live
    device share (the handle, the fill context, the filter, the counters).

    Not opened itself: SavefileCapture.open() and LiveCapture.open() make
    one; the handle is closed by close() or when the object is collected.
    """
    cdef pcap_t* p
    cdef fill_ctx_t ctx
    cdef readonly str name
    cdef readonly int linktype
    cdef readonly int snaplen
    cdef readonly str error
    cdef readonly unsigned long long packets
    cdef readonly unsigned long long caplen_bytes

    def __cinit__(self):
        self.p = NULL
        self.error = None

    def __dealloc__(self):
        self._release()

    cdef void _release(self) noexcept:
        if self.p != NULL:
            pcap_close(self.p)       # also fcloses a FILE we gave it
            self.p = NULL

    cdef _init_handle(self, str name, int iface, uint64_t ts_mult):
        self.name = name
        self.linktype = pcap_datalink(self.p)
        self.snaplen = pcap_snapshot(self.p)
        memset(&self.ctx, 0, sizeof(fill_ctx_t))
        self.ctx.linktype = self.linktype
        self.ctx.iface = <uint16_t>iface
        self.ctx.ts_mult = ts_mult

    cdef _compile(self, str expression, bpf_program* prog):
        """Compile a BPF filter for this handle's link type and snap length into
        prog (the caller frees it); raises PcapError with libpcap's reason."""
        cdef bytes bexpr = expression.encode()
        cdef int rc
        self._check_open()
        rc = pcap_compile(self.p, prog, bexpr, 1, PCAP_NETMASK_UNKNOWN)
        if rc != 0:
            raise PcapError(pcap_geterr(self.p).decode(errors="replace"), rc)

    def set_filter(self, str expression):
        """Compile and install a BPF filter; raises PcapError with libpcap's reason."""
        cdef bpf_program prog
        cdef int rc
        self._compile(expression, &prog)
        rc = pcap_setfilter(self.p, &prog)
        pcap_freecode(&prog)
        if rc != 0:
            raise PcapError(pcap_geterr(self.p).decode(errors="replace"), rc)

    cdef int _begin_fill(self, unsigned char[::1] buf, Py_ssize_t start) except -1:
        """Point the fill context at records buf[start:]; 0 if there is no room."""
        cdef Py_ssize_t cap_records
        self._check_open()
        if buf.shape[0] % sizeof(pkt_record_t):
            raise ValueError(f"buffer of {buf.shape[0]} bytes is not a whole number of "
                             f"{sizeof(pkt_record_t)}-byte records")
        cap_records = buf.shape[0] // sizeof(pkt_record_t)
        if start < 0 or start > cap_records:
            raise ValueError(f"start {start} outside a buffer of {cap_records} records")
        if start == cap_records:
            return 0
        self.ctx.out = <pkt_record_t*>&buf[0]
        self.ctx.n = start
        self.ctx.cap = cap_records
        return 1

    cdef tuple _end_fill(self, Py_ssize_t start, int rc, int paused):
        """Count what the dispatch loop wrote and say why it stopped; `paused`
        is the status when it stopped with room left and no error."""
        cdef Py_ssize_t n = self.ctx.n - start
        cdef int status
        self.packets += n
        self.caplen_bytes = self.ctx.caplen_sum
        self.ctx.out = NULL
        if rc == PCAP_ERROR_BREAK:
            status = FILL_BREAK
        elif rc < 0:
            self.error = self._read_error()
            status = FILL_ERROR
        elif self.ctx.n == self.ctx.cap:
            status = FILL_FULL
        else:
            status = paused
        return n, status

    cdef str _read_error(self):
        """Why the last read failed, in libpcap's words."""
        return pcap_geterr(self.p).decode(errors="replace")

    def close(self):
        """Release the libpcap handle and anything it reads from (idempotent)."""
        self._release()

    cdef _check_open(self):
        if self.p == NULL:
            raise ValueError("capture handle is closed")


cdef class SavefileCapture(BaseCapture):
    """A pcap or pcapng file (or a pipe carrying one) read with nanosecond timestamps.

    A mapped classic pcap file (version 2.4, either byte order, µs or ns) is
    read by our own walk over the mapping (classic_fill; own_reader is True);
    anything else by libpcap's pcap_dispatch.
    """
    cdef void* map_base          # a mapped savefile (libpcap reads it through fmemopen)
    cdef size_t map_len
    cdef size_t map_dropped      # bytes at the start of the mapping already let go
    cdef readonly bint own_reader
    cdef classic_t rd            # the own reader's state

    def __cinit__(self):
        self.map_base = NULL
        self.map_len = 0
        self.map_dropped = 0
        self.own_reader = False
        memset(&self.rd, 0, sizeof(classic_t))

    cdef void _release(self) noexcept:
        BaseCapture._release(self)
        if self.rd.filtered:
            pcap_freecode(&self.rd.prog)
            self.rd.filtered = False
        if self.map_base != NULL:
            munmap(self.map_base, self.map_len)
            self.map_base = NULL
            self.rd.base = NULL

    @staticmethod
    def open(str path, int iface=0, bint own_reader=True):
        """Open a pcap or pcapng file with nanosecond timestamps.

        A regular file is mapped into memory and opened by libpcap as a memory
        stream (pcap_fopen_offline), which checks its file header. A classic
        pcap file is then read by our own walk over the mapping: no stdio, no
        copy per record, and a record longer than the snapshot length keeps
        its captured length (libpcap would cut it). With own_reader=False, or
        for a pcapng file, libpcap reads every record, without a read()
        system call and its copy per 4 KiB. Pipes and other files go through
        pcap_open_offline as usual.
        Raises PcapError with libpcap's reason (no such file, unknown format...);
        libpcap gives no status code for these.
        """
        cdef char errbuf[512]
        cdef bytes bpath = path.encode()
        cdef SavefileCapture cap = SavefileCapture.__new__(SavefileCapture)
        cdef FILE* fp = NULL
        errbuf[0] = 0
        cap._map(bpath)
        if cap.map_base != NULL:
            fp = fmemopen(cap.map_base, cap.map_len, "rb")
        if fp != NULL:
            cap.p = pcap_fopen_offline_with_tstamp_precision(fp, PCAP_TSTAMP_PRECISION_NANO,
                                                             errbuf)
            if cap.p == NULL:
                fclose(fp)
        else:
            cap.p = pcap_open_offline_with_tstamp_precision(bpath, PCAP_TSTAMP_PRECISION_NANO,
                                                            errbuf)
        if cap.p == NULL:
            cap._release()
            raise PcapError(errbuf.decode(errors="replace"))
        cap._init_handle(path, iface, 1)
        cap.ctx.sec32 = pcap_major_version(cap.p) == 2    # pcapng files say 1
        cap.ctx.pcapng = not cap.ctx.sec32
        cap.ctx.frac_unit = cap._fraction_unit()
        if own_reader and fp != NULL and cap.ctx.frac_unit != 0 and \
                pcap_major_version(cap.p) == 2 and pcap_minor_version(cap.p) == 4:
            cap._start_classic()
        return cap

    cdef void _start_classic(self) noexcept:
        """Read the records of this mapped classic pcap (version 2.4) ourselves,
        from just after its 24-byte file header, which libpcap has checked."""
        cdef uint32_t magic
        memcpy(&magic, self.map_base, 4)
        self.own_reader = True
        self.rd.base = <const unsigned char*>self.map_base
        self.rd.size = self.map_len
        self.rd.pos = 24
        self.rd.swapped = magic != 0xA1B2C3D4 and magic != 0xA1B23C4D
        self.rd.frac_mult = <uint64_t>self.ctx.frac_unit
        self.rd.snapshot = <uint32_t>self.snaplen
        self.rd.max_caplen = libpcap_max_caplen(self.linktype)

    cdef int _fraction_unit(self) noexcept:
        """1000 for a mapped microsecond pcap, 1 for a nanosecond one, 0 unknown."""
        cdef const unsigned char* m = <const unsigned char*>self.map_base
        if m == NULL or self.map_len < 4:
            return 0
        if (m[0] == 0xD4 and m[1] == 0xC3) or (m[2] == 0xC3 and m[3] == 0xD4):
            return 1000      # a1b2c3d4, either byte order
        if (m[0] == 0x4D and m[1] == 0x3C) or (m[2] == 0x3C and m[3] == 0x4D):
            return 1         # a1b23c4d
        return 0

    def set_filter(self, str expression):
        """Compile and install a BPF filter; raises PcapError with libpcap's reason.

        The own reader runs it on each frame (pcap_offline_filter, with the
        record's captured and original lengths); otherwise libpcap does."""
        cdef bpf_program prog
        if not self.own_reader:
            return BaseCapture.set_filter(self, expression)
        self._compile(expression, &prog)
        if self.rd.filtered:
            pcap_freecode(&self.rd.prog)
        self.rd.prog = prog
        self.rd.filtered = True

    cdef long _position(self) noexcept:
        """The byte offset reached in the savefile (-1 if libpcap cannot tell)."""
        if self.own_reader:
            return <long>self.rd.pos
        return ftell(pcap_file(self.p))

    cdef void _drop_read_pages(self) noexcept:
        """Unmap the pages read past, so that resident memory stays flat
        whatever the file size (the page cache keeps them, shared)."""
        cdef long pos
        cdef size_t upto
        if self.map_base == NULL:
            return
        pos = self._position()
        if pos <= 0:
            return
        upto = (<size_t>pos) & ~(<size_t>0xFFFFF)    # whole MiB below the read position
        if upto > self.map_dropped:
            madvise(<char*>self.map_base + self.map_dropped, upto - self.map_dropped,
                    MADV_DONTNEED)
            self.map_dropped = upto

    cdef void _map(self, const char* path) noexcept:
        """Map a non-empty regular file read-only; leaves map_base NULL otherwise."""
        cdef stat_t st
        cdef void* base
        cdef int fd = c_open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0:
            return
        if fstat(fd, &st) == 0 and S_ISREG(st.st_mode) and st.st_size > 0:
            base = mmap(NULL, <size_t>st.st_size, PROT_READ, MAP_PRIVATE, fd, 0)
            if base != MAP_FAILED:
                madvise(base, <size_t>st.st_size, MADV_SEQUENTIAL)
                self.map_base = base
                self.map_len = <size_t>st.st_size
        c_close(fd)

    def fill(self, unsigned char[::1] buf, Py_ssize_t start=0):
        """Read frames into records buf[start:] until it is full or the file ends.

        buf holds whole pkt_record_t records (len(buf) % RECORD_SIZE == 0).
        Returns (records written, FILL_FULL, FILL_EOF or FILL_ERROR); on
        FILL_ERROR the message is in .error and the records written before the
        error are still valid.
        """
        cdef int rc = 0
        if not self._begin_fill(buf, start):
            return 0, FILL_FULL
        with nogil:
            if self.own_reader:
                rc = classic_fill(&self.rd, &self.ctx)
            else:
                while self.ctx.n < self.ctx.cap:
                    rc = dispatch_some(self.p, &self.ctx)
                    if rc <= 0:
                        break
        self._drop_read_pages()
        return self._end_fill(start, rc, FILL_EOF)

    cdef str _read_error(self):
        """Why the last read failed: libpcap's message, or the own reader's in
        libpcap's words (sf-pcap.c)."""
        if not self.own_reader:
            return BaseCapture._read_error(self)
        if self.rd.err == CLASSIC_SHORT_HEADER:
            return (f"truncated dump file; tried to read {self.rd.err_want} header bytes, "
                    f"only got {self.rd.err_got}")
        if self.rd.err == CLASSIC_SHORT_DATA:
            return (f"truncated dump file; tried to read {self.rd.err_want} captured bytes, "
                    f"only got {self.rd.err_got}")
        if self.rd.err_want > self.rd.snapshot:
            return (f"invalid packet capture length {self.rd.err_want}, bigger than "
                    f"snaplen of {self.rd.snapshot}")
        return (f"invalid packet capture length {self.rd.err_want}, bigger than "
                f"maximum of {self.rd.max_caplen}")

    def file_offset(self):
        """Byte offset that the reader (ours or libpcap's) has reached in the savefile."""
        self._check_open()
        return self._position()


cdef class LiveCapture(BaseCapture):
    """A live device, read non-blocking with our own poll()."""

    @staticmethod
    def open(str device, int snaplen, bint promisc=True, int timeout_ms=100,
             int buffer_bytes=0, bint immediate=False, int iface=0):
        """Create and activate a live handle on `device`.

        Raises PcapError with libpcap's status code (.status: the return of
        pcap_activate, or PcapStatus.ERROR) and its message on failure.
        Returns (capture, warning or None).
        """
        cdef char errbuf[512]
        cdef bytes bdev = device.encode()
        cdef LiveCapture cap = LiveCapture.__new__(LiveCapture)
        cdef int rc
        cdef uint64_t mult = 1
        errbuf[0] = 0
        cap.p = pcap_create(bdev, errbuf)
        if cap.p == NULL:
            raise PcapError(errbuf.decode(errors="replace"), PCAP_ERROR)
        pcap_set_snaplen(cap.p, snaplen)
        pcap_set_promisc(cap.p, promisc)
        pcap_set_timeout(cap.p, timeout_ms)
        if buffer_bytes > 0:
            pcap_set_buffer_size(cap.p, buffer_bytes)
        if immediate:
            pcap_set_immediate_mode(cap.p, 1)
        if pcap_set_tstamp_precision(cap.p, PCAP_TSTAMP_PRECISION_NANO) != 0:
            mult = 1000
        rc = pcap_activate(cap.p)
        warning = None
        if rc < 0:
            msg = pcap_statustostr(rc).decode(errors="replace")
            detail = pcap_geterr(cap.p).decode(errors="replace")
            cap._release()
            raise PcapError(f"{msg}: {detail}" if detail and detail != msg else msg, rc)
        elif rc > 0:
            warning = pcap_statustostr(rc).decode(errors="replace")
        if pcap_get_tstamp_precision(cap.p) != PCAP_TSTAMP_PRECISION_NANO:
            mult = 1000
        # Non-blocking reads plus our own poll(): with TPACKET_V3 a blocking
        # read waits for the first packet however long that takes, so an idle
        # interface would never let fill() return.
        rc = pcap_setnonblock(cap.p, 1, errbuf)
        if rc != 0:
            cap._release()
            raise PcapError(errbuf.decode(errors="replace"), rc)
        cap._init_handle(device, iface, mult)
        return cap, warning

    def fill(self, unsigned char[::1] buf, Py_ssize_t start=0, int wait_ms=100):
        """Collect packets into records buf[start:] for up to wait_ms, returning
        early when buf is full.

        buf holds whole pkt_record_t records (len(buf) % RECORD_SIZE == 0).
        Returns (records written, FILL_FULL, FILL_TIMEOUT, FILL_BREAK or
        FILL_ERROR); on FILL_ERROR the message is in .error and the records
        written before the error are still valid.
        """
        cdef int rc = 0
        cdef long long deadline, left
        cdef pollfd pfd
        if not self._begin_fill(buf, start):
            return 0, FILL_FULL
        pfd.fd = pcap_get_selectable_fd(self.p)
        pfd.events = POLLIN
        deadline = monotonic_ms() + wait_ms
        with nogil:
            while self.ctx.n < self.ctx.cap:
                rc = dispatch_some(self.p, &self.ctx)
                if rc < 0:
                    break
                left = deadline - monotonic_ms()
                if left <= 0:
                    break
                if rc == 0:
                    pfd.revents = 0
                    if poll(&pfd, 1, <int>left) == 0:
                        break
        return self._end_fill(start, rc, FILL_TIMEOUT)

    def set_fanout(self, int group_id, int mode=PACKET_FANOUT_HASH, bint defrag=False):
        """Join a Linux PACKET_FANOUT group: the kernel splits the traffic of the
        device among the group's sockets (hash mode keeps a flow on one socket).
        defrag would make the kernel reassemble IP fragments before fanning out,
        so the sockets would see one packet where the wire carried several: it
        stays off, as per-packet counts must not depend on the worker count.

        Raises PcapError if the handle is not a Linux packet socket.
        """
        cdef int value = (group_id & 0xFFFF) | (mode << 16)
        self._check_open()
        if defrag:
            value |= PACKET_FANOUT_FLAG_DEFRAG << 16
        if setsockopt(pcap_fileno(self.p), SOL_PACKET, PACKET_FANOUT, &value, sizeof(value)) != 0:
            raise PcapError(f"cannot join fanout group {group_id} on {self.name}: "
                            f"{strerror(errno).decode()}")

    def stats(self):
        """(received, dropped, if_dropped) from libpcap."""
        cdef pcap_stat st
        cdef int rc
        self._check_open()
        rc = pcap_stats(self.p, &st)
        if rc != 0:
            raise PcapError(pcap_geterr(self.p).decode(errors="replace"), rc)
        return st.ps_recv, st.ps_drop, st.ps_ifdrop

    def forget(self):
        """Drop this process's hold on the handle's packet socket without
        libpcap's cleanup, which would tear down the kernel ring that another
        process (which inherited the handle across fork) still reads: unmap the
        ring here (a mapping keeps the socket, and its fanout membership,
        alive) and close the descriptor. The rest of the handle's memory is
        left as it is; the object is closed."""
        cdef int fd
        cdef stat_t st
        cdef size_t lo, hi
        if self.p == NULL:
            return
        fd = pcap_fileno(self.p)
        if fstat(fd, &st) == 0:
            tag = f"socket:[{st.st_ino}]"
            with open("/proc/self/maps") as maps:
                ranges = [line.split()[0] for line in maps if line.rstrip().endswith(tag)]
            for text in ranges:
                start, end = text.split("-")
                lo, hi = int(start, 16), int(end, 16)
                munmap(<void*>lo, hi - lo)
        c_close(fd)
        self.p = NULL
