# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
# (Bounds are checked by hand: wire.pxd for packet bytes, the def wrappers for buffers.)
"""pt-engine native core: frame parsing, per-port reduction and libpcap capture.

Sees only buffers and integers; the Python package (engine/) owns everything else.
"""
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memset, memcpy, strerror, strlen
from libc.errno cimport errno
from libc.stdio cimport FILE, fclose, ftell
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

from records cimport *
from wire cimport cur_has, cur_read_u16, cur_read_u32, cur_read_u32_le
from libpcap cimport *

include "parse.pyx"
include "reduce.pyx"
include "windows.pyx"
include "encode.pyx"
include "capture.pyx"

RECORD_SIZE = sizeof(pkt_record_t)
COUNTER_ROWS = N_COUNTER_ROWS
BACKEND = "native"
LIBPCAP_VERSION = pcap_lib_version().decode()


def _check_frames(Py_ssize_t nbytes, const uint32_t[::1] offsets, const uint32_t[::1] caplens,
                  const uint32_t[::1] orig_lens, const uint64_t[::1] ts_ns, Py_ssize_t out_records):
    cdef Py_ssize_t n = offsets.shape[0], i
    if caplens.shape[0] != n or orig_lens.shape[0] != n or ts_ns.shape[0] != n:
        raise ValueError(f"offsets ({n}), caplens ({caplens.shape[0]}), orig_lens "
                         f"({orig_lens.shape[0]}) and ts_ns ({ts_ns.shape[0]}) differ in length")
    if out_records < n:
        raise ValueError(f"out holds {out_records} records, {n} needed")
    for i in range(n):
        if <uint64_t>offsets[i] + caplens[i] > <uint64_t>nbytes:
            raise ValueError(f"frame {i} (offset {offsets[i]}, caplen {caplens[i]}) runs past "
                             f"the end of data ({nbytes} bytes)")
    return n


def parse_batch(int linktype, const unsigned char[::1] data, const uint32_t[::1] offsets,
                const uint32_t[::1] caplens, const uint32_t[::1] orig_lens,
                const uint64_t[::1] ts_ns, uint16_t iface, out):
    """Parse n frames laid out in `data` into records out[0:n] (RECORD_DTYPE array).

    Raises ValueError for an unsupported link type or buffers that do not fit.
    """
    cdef unsigned char[::1] out_bytes = out.view("u1").reshape(-1)
    cdef pkt_record_t* recs
    cdef const unsigned char* base
    cdef Py_ssize_t n, i
    if not linktype_supported(linktype):
        raise ValueError(f"unsupported link type {linktype}")
    if out.dtype.itemsize != sizeof(pkt_record_t):
        raise ValueError(f"out has records of {out.dtype.itemsize} bytes, not {sizeof(pkt_record_t)}")
    n = _check_frames(data.shape[0], offsets, caplens, orig_lens, ts_ns,
                      out_bytes.shape[0] // sizeof(pkt_record_t))
    if n == 0:
        return
    recs = <pkt_record_t*>&out_bytes[0]
    base = &data[0] if data.shape[0] else NULL
    with nogil:
        for i in range(n):
            parse_frame(linktype, base + offsets[i], caplens[i], orig_lens[i], recs + i)
            recs[i].ts_ns = ts_ns[i]
            recs[i].iface = iface


def reduce_records(records, Py_ssize_t start, Py_ssize_t stop, uint64_t win_end_ns,
                   uint64_t[:, ::1] counters, uint64_t[:, ::1] classes,
                   uint32_t[::1] touched, uint64_t[::1] state):
    """Count records[start:stop] until one with ts_ns >= win_end_ns; return its index.

    counters: uint64 (COUNTER_ROWS, 4); classes: uint64 (4, 2); touched: uint32
    (COUNTER_ROWS,); state: uint64 (>= 4,): [0] touched rows so far, [1] error
    flag (out), [2] window start ns (in), [3] late records, ts < window start (in/out).
    Raises ValueError for bad shapes, or for a record no parser writes.
    """
    cdef const unsigned char[::1] rec_bytes = records.view("u1").reshape(-1)
    cdef Py_ssize_t n_records = rec_bytes.shape[0] // sizeof(pkt_record_t)
    cdef Py_ssize_t stopped
    cdef const pkt_record_t* recs
    if records.dtype.itemsize != sizeof(pkt_record_t):
        raise ValueError(f"records of {records.dtype.itemsize} bytes, not {sizeof(pkt_record_t)}")
    if counters.shape[0] != N_COUNTER_ROWS or counters.shape[1] != 4:
        raise ValueError(f"counters must be ({N_COUNTER_ROWS}, 4), not "
                         f"({counters.shape[0]}, {counters.shape[1]})")
    if classes.shape[0] != N_CLASSES or classes.shape[1] != 2:
        raise ValueError(f"classes must be ({N_CLASSES}, 2)")
    if touched.shape[0] < N_COUNTER_ROWS or state.shape[0] < 4:
        raise ValueError(f"touched needs {N_COUNTER_ROWS} entries and state 4")
    if state[0] > N_COUNTER_ROWS:
        raise ValueError(f"state[0] = {state[0]} exceeds {N_COUNTER_ROWS}")
    if not (0 <= start <= stop <= n_records):
        raise ValueError(f"range [{start}, {stop}) outside {n_records} records")
    if start == stop:
        return start
    recs = <const pkt_record_t*>&rec_bytes[0]
    state[1] = 0
    with nogil:
        stopped = reduce_kernel(recs, start, stop, win_end_ns, &counters[0, 0],
                                &classes[0, 0], &touched[0], &state[0])
    if state[1]:
        raise ValueError(f"record {stopped} has class {recs[stopped].pkt_class} and "
                         f"protocol {recs[stopped].proto}, which no parser writes")
    return stopped
