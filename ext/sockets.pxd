# The socket, address and clock declarations of the probe extensions
# (ext/connect.pyx, ext/syn.pyx), and their monotonic clock.

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    cdef struct sockaddr:
        pass
    cdef struct sockaddr_storage:
        pass
    int socket(int, int, int)
    int connect(int, const sockaddr *, socklen_t)
    int setsockopt(int, int, int, const void *, socklen_t)
    int getsockopt(int, int, int, void *, socklen_t *)
    ssize_t sendto(int, const void *, size_t, int, const sockaddr *, socklen_t)
    ssize_t recvfrom(int, void *, size_t, int, sockaddr *, socklen_t *)
    int AF_INET, AF_INET6, AF_UNSPEC, SOCK_STREAM, SOCK_NONBLOCK, SOCK_CLOEXEC, SOL_SOCKET
    int SO_LINGER, SO_ERROR, MSG_DONTWAIT
    cdef struct linger:
        int l_onoff
        int l_linger

cdef extern from "<netinet/in.h>" nogil:
    cdef struct in_addr:
        pass
    cdef struct in6_addr:
        unsigned char s6_addr[16]
    cdef struct sockaddr_in:
        unsigned short sin_family
        unsigned short sin_port
        in_addr sin_addr
    cdef struct sockaddr_in6:
        unsigned short sin6_family
        unsigned short sin6_port
        in6_addr sin6_addr
        unsigned int sin6_scope_id
    unsigned short htons(unsigned short)

cdef extern from "<time.h>" nogil:
    cdef struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(int, timespec *)
    int CLOCK_MONOTONIC


cdef inline long long monotonic_ns() noexcept nogil:
    """CLOCK_MONOTONIC in ns: the clock of time.monotonic_ns()."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <long long>ts.tv_sec * 1000000000 + ts.tv_nsec
