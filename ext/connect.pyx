# cython: language_level=3, boundscheck=False, wraparound=False
"""TCP connect probes in batches, natively: the extension ``pt_engine._connect``.

Its ``Connector`` is the native twin of pt_engine.probe.connect.Connector
(the pure-Python one, PT_ENGINE_PUREPYTHON=1): the same calls, the same
results. The probe loop (pt_engine.probe.loop) hands it the connects due in
one turn as one batch, and collects the answers of a turn with one call, so
that a probe costs its system calls and little Python:

* ``start(batch)``: for each (family, address text, port, IPv6 zone index
  or 0) a non-blocking
  socket (SO_LINGER 0: closed with a reset, no TIME_WAIT, as nmap -sT), the
  monotonic clock read, connect(); an answer already there when connect
  returns (a reset from a host near by comes in during the call) is read at
  once with SO_ERROR and the socket closed (a refused one is disconnected
  with connect(AF_UNSPEC) and kept, up to 32 per family, for the next
  connects: no socket made and freed per closed port); otherwise it waits in
  the connector's epoll. Returns per probe (fd, code, sent_ns, end_ns): fd
  -1 and the errno (0: connected) when decided, else the socket's fd and
  EINPROGRESS (end_ns 0).
* ``wait()``: the sockets whose connect ended since (epoll_wait, timeout 0,
  the GIL released): (fd, code, end_ns) each, the socket closed.
* ``drop(fd)``: close a socket that waits (its probe timed out).

``fileno()`` is the epoll descriptor, readable when an answer waits: the
loop watches it in its own epoll.
"""
from cpython.unicode cimport PyUnicode_AsUTF8
from libc.errno cimport errno, EINPROGRESS, EINTR, ECONNREFUSED
from libc.string cimport memset
from posix.unistd cimport close

from sockets cimport *

cdef extern from "<arpa/inet.h>" nogil:
    int inet_pton(int, const char *, void *)

cdef extern from "<sys/epoll.h>" nogil:
    cdef union epoll_data_t:
        int fd
    cdef struct epoll_event:
        unsigned int events
        epoll_data_t data
    int epoll_create1(int)
    int epoll_ctl(int, int, int, epoll_event *)
    int epoll_wait(int, epoll_event *, int, int)
    int EPOLL_CTL_ADD, EPOLLOUT, EPOLL_CLOEXEC

DEF EVENTS = 512
DEF SPARE = 64              # refused sockets kept for the next connects


cdef class Connector:
    """Batches of TCP connects; see the module docstring."""

    cdef int epfd
    cdef epoll_event events[EVENTS]
    cdef int spare[SPARE]
    cdef int spares[2]              # per family (0: IPv4, 1: IPv6)

    def __cinit__(self):
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise OSError(errno, "epoll_create1 failed")

    def fileno(self):
        return self.epfd

    def start(self, list batch):
        """[(fd, code, sent_ns, end_ns)] for [(family, address, port, zone)]; OSError when
        no socket can be had (the descriptor limit)."""
        cdef list out = []
        cdef sockaddr_storage addr
        cdef sockaddr_in *v4 = <sockaddr_in *>&addr
        cdef sockaddr_in6 *v6 = <sockaddr_in6 *>&addr
        cdef socklen_t size, optlen
        cdef linger off
        cdef epoll_event ev
        cdef int family, port, fd, rc, code, slot
        cdef unsigned int zone
        cdef long long sent, end
        cdef const char *text
        off.l_onoff, off.l_linger = 1, 0
        for family, address, port, zone in batch:
            text = PyUnicode_AsUTF8(address)
            memset(&addr, 0, sizeof(addr))
            if family == AF_INET:
                v4.sin_family, v4.sin_port = AF_INET, htons(port)
                rc = inet_pton(AF_INET, text, &v4.sin_addr)
                size = sizeof(sockaddr_in)
            else:
                v6.sin6_family, v6.sin6_port = AF_INET6, htons(port)
                v6.sin6_scope_id = zone
                rc = inet_pton(AF_INET6, text, &v6.sin6_addr)
                size = sizeof(sockaddr_in6)
            if rc != 1:
                raise ValueError(f"not an address: {address!r}")
            slot = 0 if family == AF_INET else 1
            if self.spares[slot]:
                self.spares[slot] -= 1
                fd = self.spare[slot * SPARE // 2 + self.spares[slot]]
            else:
                fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
                if fd < 0:
                    raise OSError(errno, "cannot open a TCP socket")
                setsockopt(fd, SOL_SOCKET, SO_LINGER, &off, sizeof(off))
            sent = monotonic_ns()
            rc = connect(fd, <sockaddr *>&addr, size)
            code = 0 if rc == 0 else errno
            if code == EINPROGRESS:
                optlen = sizeof(code)
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &optlen)
                if code == 0:
                    code = EINPROGRESS
            if code == EINPROGRESS:
                ev.events = EPOLLOUT
                ev.data.fd = fd
                if epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &ev) == 0:
                    out.append((fd, code, sent, 0))
                    continue
                code = errno
            end = monotonic_ns()
            if code == ECONNREFUSED and self.spares[slot] < SPARE // 2:
                # reset, the socket is as new (AF_UNSPEC disconnects): kept for reuse
                memset(&addr, 0, sizeof(addr))
                v4.sin_family = AF_UNSPEC
                if connect(fd, <sockaddr *>&addr, sizeof(sockaddr_in)) == 0:
                    self.spare[slot * SPARE // 2 + self.spares[slot]] = fd
                    self.spares[slot] += 1
                    out.append((-1, code, sent, end))
                    continue
            close(fd)
            out.append((-1, code, sent, end))
        return out

    def wait(self):
        """[(fd, code, end_ns)] of the sockets whose connect ended; each is closed."""
        cdef list out = []
        cdef int n, i, fd, code
        cdef socklen_t optlen
        cdef long long end
        while True:
            with nogil:
                n = epoll_wait(self.epfd, self.events, EVENTS, 0)
            if n < 0 and errno == EINTR:
                continue
            if n <= 0:
                return out
            for i in range(n):
                fd = self.events[i].data.fd
                code = 0
                optlen = sizeof(code)
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &optlen)
                end = monotonic_ns()
                close(fd)
                out.append((fd, code, end))
            if n < EVENTS:
                return out

    def drop(self, int fd):
        """Close a waiting socket (its probe timed out; it leaves the epoll)."""
        close(fd)

    cdef void _release(self):
        cdef int slot, i
        for slot in range(2):
            for i in range(self.spares[slot]):
                close(self.spare[slot * SPARE // 2 + i])
            self.spares[slot] = 0
        if self.epfd >= 0:
            close(self.epfd)
            self.epfd = -1

    def close(self):
        """Close the epoll and the kept sockets (those that wait: see drop)."""
        self._release()

    def __dealloc__(self):
        self._release()
