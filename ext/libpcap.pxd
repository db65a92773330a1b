# The part of libpcap's API that the capture core drives directly.
from libc.stdio cimport FILE

cdef extern from "<sys/time.h>" nogil:
    ctypedef long time_t
    ctypedef long suseconds_t
    cdef struct timeval:
        time_t tv_sec
        suseconds_t tv_usec

cdef extern from "<pcap/pcap.h>" nogil:
    ctypedef struct pcap_t:
        pass
    ctypedef unsigned int bpf_u_int32
    cdef struct pcap_pkthdr:
        timeval ts
        bpf_u_int32 caplen
        bpf_u_int32 len
    cdef struct bpf_insn:
        pass
    cdef struct bpf_program:
        unsigned int bf_len
        bpf_insn* bf_insns
    cdef struct pcap_stat:
        unsigned int ps_recv
        unsigned int ps_drop
        unsigned int ps_ifdrop
    ctypedef void (*pcap_handler)(unsigned char*, const pcap_pkthdr*, const unsigned char*) noexcept nogil

    int PCAP_ERRBUF_SIZE
    int PCAP_TSTAMP_PRECISION_MICRO
    int PCAP_TSTAMP_PRECISION_NANO
    bpf_u_int32 PCAP_NETMASK_UNKNOWN
    int PCAP_ERROR
    int PCAP_ERROR_BREAK
    int PCAP_ERROR_NOT_ACTIVATED
    int PCAP_ERROR_ACTIVATED
    int PCAP_ERROR_NO_SUCH_DEVICE
    int PCAP_ERROR_RFMON_NOTSUP
    int PCAP_ERROR_NOT_RFMON
    int PCAP_ERROR_PERM_DENIED
    int PCAP_ERROR_IFACE_NOT_UP
    int PCAP_ERROR_CANTSET_TSTAMP_TYPE
    int PCAP_ERROR_PROMISC_PERM_DENIED
    int PCAP_ERROR_TSTAMP_PRECISION_NOTSUP
    int PCAP_WARNING
    int PCAP_WARNING_PROMISC_NOTSUP
    int PCAP_WARNING_TSTAMP_TYPE_NOTSUP

    pcap_t* pcap_open_offline_with_tstamp_precision(const char*, unsigned int, char*)
    pcap_t* pcap_fopen_offline_with_tstamp_precision(FILE*, unsigned int, char*)
    pcap_t* pcap_create(const char*, char*)
    int pcap_set_snaplen(pcap_t*, int)
    int pcap_set_promisc(pcap_t*, int)
    int pcap_set_timeout(pcap_t*, int)
    int pcap_set_buffer_size(pcap_t*, int)
    int pcap_set_immediate_mode(pcap_t*, int)
    int pcap_set_tstamp_precision(pcap_t*, int)
    int pcap_get_tstamp_precision(pcap_t*)
    int pcap_activate(pcap_t*)
    int pcap_dispatch(pcap_t*, int, pcap_handler, unsigned char*)
    void pcap_breakloop(pcap_t*)
    char* pcap_geterr(pcap_t*)
    const char* pcap_statustostr(int)
    int pcap_compile(pcap_t*, bpf_program*, const char*, int, bpf_u_int32)
    int pcap_setfilter(pcap_t*, bpf_program*)
    void pcap_freecode(bpf_program*)
    int pcap_offline_filter(const bpf_program*, const pcap_pkthdr*, const unsigned char*)
    int pcap_datalink(pcap_t*)
    int pcap_snapshot(pcap_t*)
    int pcap_stats(pcap_t*, pcap_stat*)
    int pcap_fileno(pcap_t*)
    int pcap_setnonblock(pcap_t*, int, char*)
    int pcap_get_selectable_fd(pcap_t*)
    FILE* pcap_file(pcap_t*)
    int pcap_major_version(pcap_t*)
    int pcap_minor_version(pcap_t*)
    void pcap_close(pcap_t*)
    const char* pcap_lib_version()
