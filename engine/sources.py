"""Packet sources: where frames come from (capture files, standard input, live devices).

A source fills record buffers (RECORD_DTYPE bytes: the capture process's
own buffer, counted there by pt_engine.counting) and classifies its own failures into EngineError subclasses. Every
source keeps one contract, the ``Source`` protocol:

* ``kind``: the key it is registered under in ``SOURCES`` ("file", "stdin",
  "live"); ``name``: what messages call it (a path, '-', a device).
* ``describe() -> dict``: the source's entry in the stream's hello record. Every
  kind gives ``iface``, ``kind``, ``name``, ``linktype``, ``linktype_name`` and
  ``snaplen``; a file adds ``format`` (pcap, pcapng, or stream for a pipe), a
  live device ``worker`` and, when libpcap warned, ``warning``. Standard input
  describes itself as a file named '-' (the hello has no "stdin" kind).
* ``fill(buf, start=0, wait_ms=...) -> (records, FILL_*)``: parse frames into
  the records buf[start:]. A file reads until buf is full or the file ends
  (FILL_FULL, FILL_EOF) and ignores wait_ms; a live device collects for up to
  wait_ms (FILL_FULL, FILL_TIMEOUT). FILL_ERROR: see ``failure()``.
* ``stats() -> SourceStats``: received, dropped, if_dropped, transport_dropped;
  non-negative and monotonic.
* ``failure() -> EngineError``: the error behind the last FILL_ERROR, classified.
* ``close()``: release the handle; safe to call again.

``open_source(kind, *args, **kw)`` opens one by kind; ``register_source`` adds
a kind. ``open_file``, ``LiveSource`` and the source classes stay callable as
they are.

Two backends read files through one interface:

* native (default): ``pt_engine._core.SavefileCapture`` (and ``LiveCapture``
  for devices) parses in C, no Python per packet: it walks a classic pcap
  file's records itself, and drives libpcap's pcap_dispatch for pcapng
  files and pipes.
* reference (``PT_ENGINE_PUREPYTHON=1``): the same split (``ClassicWalk`` for
  a classic pcap file, pcapy-ng's ``next()`` for the rest) and the
  pure-Python parser in ``pt_engine._reference``; slow, for cross-checking.
  Live devices are always read by the native core.

This is the only module that imports pcapy. Bytes are always wire lengths
(the record's original length), never captured lengths. It imports no numpy
at module level: capture processes never do.
"""
from __future__ import annotations

import mmap
import os
import re
import socket
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from . import records
from .backend import use_reference_backend
from .errors import (CaptureError, ConfigError, EngineError, TruncatedCapture,
                     UnsupportedLinkType)

try:
    from . import _core
except ImportError as err:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "pt-engine's native core (pt_engine._core) is not built: run `pip install .` "
        "(needs a C compiler and libpcap-dev)") from err

# fill() outcomes, shared by both backends.
FILL_FULL, FILL_EOF, FILL_TIMEOUT, FILL_BREAK, FILL_ERROR = (
    _core.FILL_FULL, _core.FILL_EOF, _core.FILL_TIMEOUT, _core.FILL_BREAK, _core.FILL_ERROR)

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("pcap", "<"), b"\xa1\xb2\xc3\xd4": ("pcap", ">"),
    b"\x4d\x3c\xb2\xa1": ("pcap", "<"), b"\xa1\xb2\x3c\x4d": ("pcap", ">"),
}
NANO_MAGICS = {b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"}
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
PCAP_FILE_HEADER = 24
PCAP_RECORD_HEADER = 16


@dataclass(frozen=True)
class SourceStats:
    """Counters a source keeps; all monotonic over the source's life."""

    received: int = 0           # libpcap ps_recv (live); frames read (files)
    dropped: int = 0            # libpcap ps_drop: no room in the kernel buffer
    if_dropped: int = 0         # libpcap ps_ifdrop: dropped by the interface
    # Frames read but not handed on. Always 0 since each capture process counts
    # its own records (pt_engine.counting); kept so that consumers of the
    # stream's `sources` keep working.
    transport_dropped: int = 0


class Source(Protocol):
    """What every packet source does (see the module docstring)."""

    kind: str
    name: str

    def describe(self) -> dict: ...

    def fill(self, buf, start: int = 0, wait_ms: int = 0) -> tuple[int, int]: ...

    def stats(self) -> SourceStats: ...

    def failure(self) -> EngineError: ...

    def close(self) -> None: ...


def _magic(path: str) -> bytes:
    """The first 4 bytes of a regular file (b"" for a pipe or an unreadable file)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return b""
        with open(path, "rb") as fh:
            return fh.read(4)
    except OSError:
        return b""


def sniff_format(path: str) -> str:
    """'pcap' or 'pcapng' from the magic number, 'stream' for a pipe (libpcap will
    tell); raises CaptureError for anything that is not a capture."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode) and not os.path.isdir(path):
            return "stream"
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except FileNotFoundError:
        raise CaptureError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CaptureError(f"{path}: is a directory, not a capture file") from None
    except PermissionError:
        raise CaptureError(f"{path}: permission denied") from None
    except OSError as err:
        raise CaptureError(f"{path}: cannot read ({err.strerror})") from err
    if magic in PCAP_MAGICS:
        return "pcap"
    if magic == PCAPNG_MAGIC:
        return "pcapng"
    if len(magic) < 4:
        raise CaptureError(f"{path}: not a capture file ({len(magic)} bytes, too short "
                           "for a pcap or pcapng header)")
    raise CaptureError(f"{path}: not a pcap or pcapng capture (magic number {magic.hex()})")


def pcapng_interfaces(path: str) -> list[tuple[int, int]]:
    """(link type, snapshot length) of every interface description block, in file
    order, up to the first block whose length is impossible (every step moves
    forward, so a corrupt length can neither loop nor grow the list without end)."""
    found = []
    with open(path, "rb") as fh:
        order = "<"
        pos = 0
        while True:
            fh.seek(pos)
            head = fh.read(16)
            if len(head) < 12:
                return found
            btype = struct.unpack(order + "I", head[:4])[0]
            if btype == 0x0A0D0D0A:
                order = "<" if head[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
            blen = struct.unpack(order + "I", head[4:8])[0]
            if blen < 12 or blen % 4:
                return found
            if btype == 1:
                if blen < 20 or len(head) < 16:
                    return found
                linktype, = struct.unpack(order + "H", head[8:10])
                snaplen, = struct.unpack(order + "I", head[12:16])
                found.append((linktype, snaplen))
            pos += blen


def _describe(linktypes) -> str:
    return ", ".join(f"{lt} ({records.linktype_name(lt)})" for lt in linktypes)


def check_linktype(path: str, linktype: int) -> None:
    """Raise UnsupportedLinkType unless counting-rules section 1 decodes `linktype`."""
    if linktype not in records.SUPPORTED_LINKTYPES:
        raise UnsupportedLinkType(
            f"{path}: unsupported link type {linktype} ({records.linktype_name(linktype)}); "
            f"pt-engine decodes {_describe(sorted(set(records.SUPPORTED_LINKTYPES)))}")


_TRUNC = re.compile(r"truncated dump file|truncated (pcapng|block)|block .* past end of file", re.I)


def classify_read_error(path: str, name: str, fmt: str, message: str, packets: int,
                        caplen_sum: int, file_offset: int | None) -> CaptureError:
    """Turn libpcap's message about a failed read of `path` (called `name`) into a
    clear CaptureError.

    By the message's text: reading a savefile, libpcap returns a bare
    PCAP_ERROR whatever went wrong, so its message is all there is to go by."""
    if fmt != "stream" and (
            "different from the type of the first interface" in message or
            "different from the snapshot length of the first interface" in message):
        ifaces = pcapng_interfaces(path)
        linktypes = list(dict.fromkeys(lt for lt, _ in ifaces))
        if len(linktypes) > 1:
            bad = [lt for lt in linktypes if lt not in records.SUPPORTED_LINKTYPES]
            extra = f"; unsupported: {_describe(bad)}" if bad else ""
            return UnsupportedLinkType(
                f"{name}: pcapng interfaces of differing link types {_describe(linktypes)}"
                f"{extra}; pt-engine reads files whose interfaces share one link type "
                f"(refused after {packets} packets)")
        snaps = sorted(set(s for _, s in ifaces))
        return UnsupportedLinkType(
            f"{name}: pcapng interfaces with differing snapshot lengths "
            f"{', '.join(map(str, snaps))}; libpcap reads files whose interfaces share one "
            f"(refused after {packets} packets)")
    if _TRUNC.search(message):
        if fmt == "pcap":
            where = PCAP_FILE_HEADER + PCAP_RECORD_HEADER * packets + caplen_sum
            return TruncatedCapture(
                f"{name}: capture cut off in record {packets + 1} starting at byte {where} "
                f"({message}); {packets} packets before it were counted")
        near = f" near byte {file_offset}" if file_offset is not None and file_offset >= 0 else ""
        return TruncatedCapture(
            f"{name}: capture cut off{near} after {packets} packets "
            f"({message}); those packets were counted")
    return CaptureError(f"{name}: read failed after {packets} packets: {message}")


class FileSource:
    """A capture file read by the native core. Opening validates everything.

    Raises CaptureError (missing, unreadable, not a capture), UnsupportedLinkType,
    or ConfigError for a BPF expression libpcap rejects.
    """

    kind = "file"

    def __init__(self, path: str, iface: int = 0, bpf: str | None = None,
                 name: str | None = None):
        self.path = path
        self.name = name or path   # what messages call it ('-' for standard input)
        self.iface = iface
        self.format = sniff_format(path)
        self._cap = self._open(path, iface)
        self.linktype = self._cap.linktype
        self.snaplen = self._cap.snaplen
        check_linktype(self.name, self.linktype)
        if bpf:
            self._set_filter(bpf)

    def _open(self, path, iface):
        try:
            return _core.SavefileCapture.open(path, iface)
        except _core.PcapError as err:
            raise self._open_error(str(err)) from None

    def _open_error(self, message: str) -> CaptureError:
        # By the message's text: libpcap gives no status code when it cannot
        # open a savefile, only its message (errbuf).
        if "unknown file format" in message:
            return CaptureError(f"{self.name}: not a pcap or pcapng capture ({message})")
        if "truncated" in message.lower():
            return TruncatedCapture(f"{self.name}: capture file header cut off ({message})")
        return CaptureError(f"{self.name}: cannot open capture: {message}")

    def _set_filter(self, bpf: str) -> None:
        try:
            self._cap.set_filter(bpf)
        except _core.PcapError as err:
            raise ConfigError(f"--filter {bpf!r}: {err}") from None

    def describe(self) -> dict:
        """The source as the stream's hello record lists it."""
        return {"iface": self.iface, "kind": self.kind, "name": self.name,
                "format": self.format, "linktype": self.linktype,
                "linktype_name": records.linktype_name(self.linktype),
                "snaplen": self.snaplen}

    def fill(self, buf, start: int = 0, wait_ms: int = 0) -> tuple[int, int]:
        """Parse frames into the records buf[start:] until it is full or the file
        ends (wait_ms is for live sources); returns (records, FILL_*)."""
        return self._cap.fill(buf, start)

    def failure(self) -> CaptureError:
        """The error behind the last FILL_ERROR, classified."""
        offset = self._cap.file_offset()
        return classify_read_error(self.path, self.name, self.format, self._cap.error or "",
                                   self._cap.packets, self._cap.caplen_bytes, offset)

    def stats(self) -> SourceStats:
        """Frames read so far (files have no kernel drop counters)."""
        return SourceStats(received=self._cap.packets)

    def close(self) -> None:
        """Release the libpcap handle."""
        self._cap.close()


# libpcap's largest captured length per link type (max_snaplen_for_dlt):
# D-Bus, EBHSCR, USBPcap; MAXIMUM_SNAPLEN for every other one.
_LIBPCAP_MAX_CAPLEN = {231: 128 << 20, 279: 8 << 20, 249: 1 << 20}
_MAXIMUM_SNAPLEN = 262144


class _ReadError(Exception):
    """A record libpcap would refuse; the message is libpcap's."""


class ClassicWalk:
    """The records of a classic pcap file (version 2.4) read from a mapping of
    it: the reference twin of the native core's own reader (ext/capture.pyx,
    classic_fill), with libpcap's checks and messages. A record longer than
    the snapshot length keeps its captured length (docs/counting-rules.md)."""

    def __init__(self, path: str, linktype: int):
        with open(path, "rb") as fh:
            self._data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        magic = self._data[:4]
        order = PCAP_MAGICS[magic][1]
        self._header = struct.Struct(order + "IIII")
        self._frac_mult = 1 if magic in NANO_MAGICS else 1000
        snaplen, = struct.unpack_from(order + "I", self._data, 16)
        self.max_caplen = _LIBPCAP_MAX_CAPLEN.get(linktype, _MAXIMUM_SNAPLEN)
        # libpcap (1.10) takes the field as a signed int: 0 or negative means its maximum.
        self.snaplen = snaplen if 0 < snaplen < 1 << 31 else self.max_caplen
        self.pos = PCAP_FILE_HEADER
        self._filter = None

    @staticmethod
    def applies(path: str) -> bool:
        """Whether `path` is a regular file holding a classic pcap of version 2.4."""
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                return False
            with open(path, "rb") as fh:
                head = fh.read(8)
        except OSError:
            return False
        if head[:4] not in PCAP_MAGICS:
            return False
        return struct.unpack(PCAP_MAGICS[head[:4]][1] + "HH", head[4:8]) == (2, 4)

    def set_filter(self, linktype: int, bpf: str) -> None:
        """Run `bpf` on every frame as libpcap's savefile reader does: compiled by
        pcapy, run by libpcap's bpf_filter with the record's original length as
        the wire length (pcapy's BPFProgram.filter gives the captured length for
        both, which changes what `greater`, `less` and `len` see)."""
        import ctypes

        import pcapy
        program = pcapy.compile(linktype, self.snaplen, bpf, 1, 0xFFFF_FFFF)
        code = b"".join(struct.pack("=HBBI", *insn) for insn in program.get_bpf())
        run = ctypes.CDLL(pcapy.__file__).bpf_filter     # the libpcap pcapy links
        run.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint]
        run.restype = ctypes.c_uint
        self._filter = lambda frame, origlen: run(code, frame, origlen, len(frame)) != 0

    def next(self):
        """(ts_ns, caplen, origlen, frame) of the next record the filter passes,
        None at the end of the file; raises _ReadError for a bad record."""
        data = self._data
        while True:
            left = len(data) - self.pos
            if left == 0:
                return None
            if left < PCAP_RECORD_HEADER:
                self.pos = len(data)
                raise _ReadError(f"truncated dump file; tried to read {PCAP_RECORD_HEADER} "
                                 f"header bytes, only got {left}")
            sec, frac, caplen, origlen = self._header.unpack_from(data, self.pos)
            self.pos += PCAP_RECORD_HEADER
            if caplen > self.max_caplen:
                limit = (f"snaplen of {self.snaplen}" if caplen > self.snaplen
                         else f"maximum of {self.max_caplen}")
                raise _ReadError(f"invalid packet capture length {caplen}, bigger than {limit}")
            if caplen > left - PCAP_RECORD_HEADER:
                self.pos = len(data)
                raise _ReadError(f"truncated dump file; tried to read {caplen} captured "
                                 f"bytes, only got {left - PCAP_RECORD_HEADER}")
            frame = data[self.pos:self.pos + caplen]
            self.pos += caplen
            if self._filter is None or self._filter(frame, origlen):
                ts_ns = min(sec * 1_000_000_000 + frac * self._frac_mult, records.UINT64_MAX)
                return ts_ns, caplen, origlen, frame

    def close(self) -> None:
        self._data.close()


def _mark_timeless(one) -> None:
    """A pcapng record at time 0: libpcap gives a Simple Packet Block (which has
    no timestamp) that time, and an Enhanced Packet Block stamped at the epoch
    itself looks the same; as the native reader (ext/capture.pyx, on_packet),
    a ported TCP one is marked as having no time (docs/quality-rules.md section 1)."""
    tcp = (one["proto"] == 6) & (one["pkt_class"] == records.PacketClass.PORTED)
    one["tcp_info"][tcp] |= records.TCPI_NO_TIMESTAMP


class ReferenceFileSource(FileSource):
    """The same file read through pcapy-ng ``next()`` and engine._reference (slow).

    pcapy opens every file (its header checks); a classic pcap file's records
    are then read by ClassicWalk, as the native core reads them itself."""

    def __init__(self, path: str, iface: int = 0, bpf: str | None = None,
                 name: str | None = None):
        import pcapy
        from . import _reference
        self._pcapy = pcapy
        self._parse = _reference.parse_batch
        self._packets = 0
        self._caplen_sum = 0
        self._error = None
        self._walk = None
        super().__init__(path, iface, bpf, name)

    def _open(self, path, iface):
        try:
            reader = self._pcapy.open_offline(path)
        except self._pcapy.PcapError as err:
            raise self._open_error(str(err)) from None
        self._reader = reader
        self._classic = self.format != "pcapng"   # a pipe: most likely classic
        self._nano = _magic(path) in NANO_MAGICS
        linktype = reader.datalink()
        if ClassicWalk.applies(path):
            self._walk = ClassicWalk(path, linktype)
            return _PcapyInfo(linktype, self._walk.snaplen)
        return _PcapyInfo(linktype, reader.snapshot() if hasattr(reader, "snapshot") else 0)

    def _set_filter(self, bpf: str) -> None:
        try:
            self._reader.setfilter(bpf)
            if self._walk is not None:
                self._walk.set_filter(self.linktype, bpf)
        except self._pcapy.PcapError as err:
            raise ConfigError(f"--filter {bpf!r}: {err}") from None

    def _next(self):
        """(ts_ns, caplen, origlen, frame) of the next frame, None at the end;
        raises _ReadError with libpcap's message."""
        if self._walk is not None:
            return self._walk.next()
        try:
            hdr, data = self._reader.next()
        except self._pcapy.PcapError as err:
            raise _ReadError(str(err)) from None
        if hdr is None:
            return None
        sec, usec = hdr.getts()
        frac_ns = usec * 1000
        if self._classic:
            # Unsigned 32-bit fields that libpcap reads as signed (and, for a
            # ns file, divides by 1000 after that): take the bits back.
            sec &= 0xFFFF_FFFF
            if usec < 0:
                frac_ns = frac_ns + (1 << 32) if self._nano else (usec + (1 << 32)) * 1000
        ts_ns = min(sec * 1_000_000_000 + frac_ns, records.UINT64_MAX)
        return ts_ns, hdr.getcaplen(), hdr.getlen(), data

    def fill(self, buf, start: int = 0, wait_ms: int = 0) -> tuple[int, int]:
        import numpy as np
        out = np.frombuffer(buf, dtype=records.RECORD_DTYPE)
        if not 0 <= start <= len(out):
            raise ValueError(f"start {start} outside a buffer of {len(out)} records")
        one = np.zeros(1, np.uint32)
        for i in range(start, len(out)):
            try:
                frame = self._next()
            except _ReadError as err:
                self._error = str(err)
                return i - start, FILL_ERROR
            if frame is None:
                return i - start, FILL_EOF
            ts_ns, caplen, origlen, data = frame
            self._parse(self.linktype, data, one * 0, one + caplen, one + origlen,
                        np.array([ts_ns], np.uint64),
                        self.iface, out[i:i + 1])
            if ts_ns == 0 and not self._classic:
                _mark_timeless(out[i:i + 1])
            self._packets += 1
            self._caplen_sum += caplen
        return len(out) - start, FILL_FULL

    def failure(self) -> CaptureError:
        return classify_read_error(self.path, self.name, self.format, self._error or "", self._packets,
                                   self._caplen_sum, None)

    def stats(self) -> SourceStats:
        return SourceStats(received=self._packets)

    def close(self) -> None:
        self._reader.close()
        if self._walk is not None:
            self._walk.close()


@dataclass(frozen=True)
class _PcapyInfo:
    linktype: int
    snaplen: int


# Enough for the deepest encapsulation of the counting rules in practice
# (Ethernet + several VLAN tags + an MPLS stack or PPPoE + IPv6 with extension
# headers + 4 port bytes); bytes counted stay wire lengths whatever the snap.
DEFAULT_SNAPLEN = 256


def interfaces() -> list[str]:
    """Capture devices libpcap knows, in its order."""
    import pcapy
    try:
        return list(pcapy.findalldevs())
    except pcapy.PcapError as err:
        raise CaptureError(f"cannot list capture interfaces: {err}") from None


def default_interface() -> str:
    """The first device that is up and not a loopback (as tcpdump picks), else 'lo'."""
    import psutil
    stats = psutil.net_if_stats()
    for name in interfaces():
        st = stats.get(name)
        if st is not None and st.isup and name != "lo" and not name.startswith(
                ("any", "nf", "dbus", "bluetooth", "usbmon")):
            return name
    return "lo"


LIVE_TIMEOUT_MS = 50
_SIOCETHTOOL = 0x8946
# ethtool's legacy get commands (<linux/ethtool.h>), each an ethtool_value.
_OFFLOAD_GETS = (("tso", 0x1E), ("gso", 0x23), ("gro", 0x2B))
_ETHTOOL_GFLAGS, _ETH_FLAG_LRO = 0x25, 1 << 15


def _ethtool_value(sock, device: str, cmd: int) -> int | None:
    import ctypes
    import fcntl
    value = ctypes.create_string_buffer(struct.pack("II", cmd, 0), 8)
    ifreq = bytearray(struct.pack("16sP", device.encode()[:15], ctypes.addressof(value))
                      .ljust(40, b"\0"))
    try:
        fcntl.ioctl(sock.fileno(), _SIOCETHTOOL, ifreq)
    except OSError:
        return None       # not supported by the driver, or no such device
    return struct.unpack("II", value.raw)[1]


def offloads(device: str) -> list[str]:
    """The segmentation and receive offloads enabled on `device` (tso, gso, gro,
    lro), read with the ethtool ioctl in this process's network namespace."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        found = [name for name, cmd in _OFFLOAD_GETS if _ethtool_value(sock, device, cmd)]
        flags = _ethtool_value(sock, device, _ETHTOOL_GFLAGS)
    if flags and flags & _ETH_FLAG_LRO:
        found.append("lro")
    return found


def offload_warning(device: str) -> str | None:
    """What a user must know when offloads merge packets before capture, or None."""
    found = offloads(device)
    if not found:
        return None
    return (f"{', '.join(f.upper() for f in found)} enabled: packet counts are of merged "
            f"super-packets and bytes per packet may exceed the MTU; for packet-exact counts "
            f"run: ethtool -K {device} {' '.join(f'{f} off' for f in found)}")


NETNS_DIR = "/var/run/netns"    # where `ip netns add NAME` puts its namespaces
_CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class InterfaceSpec:
    """An interface as -i names it: IFACE, NETNS/IFACE (a name from `ip netns`) or
    pid:PID/IFACE (the network namespace of a process, e.g. a container's)."""

    device: str
    netns: str | None   # the namespace's name (NETNS or pid:PID), None for this one
    netns_path: str | None

    @classmethod
    def parse(cls, text: str) -> InterfaceSpec:
        """Raises ConfigError for a namespace that does not exist."""
        where, sep, device = text.rpartition("/")
        if not sep:
            return cls(text, None, None)
        if not device or not where:
            raise ConfigError(f"-i {text!r}: write IFACE, NETNS/IFACE or pid:PID/IFACE")
        if where.startswith("pid:"):
            pid = where[4:]
            if not (pid.isascii() and pid.isdigit()):
                raise ConfigError(f"-i {text!r}: {pid!r} is not a process id")
            path = f"/proc/{pid}/ns/net"
            missing = f"-i {text!r}: no process {pid}"
        else:
            path = os.path.join(NETNS_DIR, where)
            missing = (f"-i {text!r}: no network namespace {where!r} "
                       f"(`ip netns list` shows those there are)")
        if "/" in where or not os.path.exists(path):    # a name, not a path
            raise ConfigError(missing)
        return cls(device, where, path)


def named_netns_interfaces() -> list[str]:
    """NETNS/IFACE for every interface that is up, loopback aside, in every named
    network namespace (NETNS_DIR, as `ip netns` keeps them), in name order.
    Raises CaptureError when a namespace cannot be entered (needs root)."""
    import psutil
    try:
        names = sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        with netns_entered(os.path.join(NETNS_DIR, name)):
            # Both ask the kernel through sockets, which live in the namespace entered.
            stats = psutil.net_if_stats()
            devices = [dev for _, dev in socket.if_nameindex()]
        found += [f"{name}/{dev}" for dev in devices
                  if dev != "lo" and stats.get(dev) is not None and stats[dev].isup]
    return found


def container_of(pid: str, proc: str = "/proc") -> str | None:
    """The container a process runs in, from its cgroup path alone (no daemon is
    asked): 'docker:ID12', 'podman:ID12', 'containerd:ID12' or 'lxc:NAME', else None."""
    try:
        with open(f"{proc}/{pid}/cgroup", encoding="utf-8", errors="replace") as fh:
            paths = [line.rstrip("\n").split(":", 2)[-1] for line in fh]
    except OSError:
        return None
    for path in paths:
        for part in reversed(path.split("/")):
            for prefix, kind in (("docker-", "docker"), ("libpod-", "podman"),
                                 ("cri-containerd-", "containerd")):
                if part.startswith(prefix) and part.endswith(".scope"):
                    return f"{kind}:{part[len(prefix):-len('.scope')][:12]}"
        bits = path.split("/")
        for i, bit in enumerate(bits[:-1]):
            if bit in ("docker", "lxc") and bits[i + 1]:
                ident = bits[i + 1]
                return f"{bit}:{ident[:12] if bit == 'docker' else ident}"
    return None


def enter_netns(path: str) -> None:
    """Move this process (thread) into the network namespace at `path`, as the
    capture process does before it opens its handle; raises CaptureError."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise CaptureError(f"cannot open network namespace {path}: {err.strerror}") from None
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise CaptureError(f"cannot enter network namespace {path}: {os.strerror(errno)}")
    finally:
        os.close(fd)


class netns_entered:
    """Context manager: inside, this process is in the namespace at `path` (None:
    where it is); afterwards back where it was. Sockets opened inside stay there."""

    def __init__(self, path: str | None):
        self.path = path
        self._home = None

    def __enter__(self):
        if self.path is not None:
            self._home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                enter_netns(self.path)
            except BaseException:
                os.close(self._home)
                raise
        return self

    def __exit__(self, *exc) -> None:
        if self._home is not None:
            try:
                enter_netns(f"/proc/self/fd/{self._home}")
            finally:
                os.close(self._home)


# What a failed pcap_create/pcap_activate means, by libpcap's status code.
_OPEN_FAILURES = {
    _core.PcapStatus.NO_SUCH_DEVICE: "no such device",
    _core.PcapStatus.PERM_DENIED: "permission denied (needs root or CAP_NET_RAW)",
    _core.PcapStatus.PROMISC_PERM_DENIED:
        "permission denied for promiscuous mode (needs root or CAP_NET_RAW)",
    _core.PcapStatus.IFACE_NOT_UP: "is down",
}


def classify_open_error(device: str, err: _core.PcapError) -> CaptureError:
    """A clear CaptureError naming `device` for a live handle libpcap would not
    open: by its status code, with libpcap's own words for the other codes."""
    reason = _OPEN_FAILURES.get(err.status)
    return CaptureError(f"interface {device}: {reason or err}")


def open_live_handle(device: str, snaplen: int, buffer_bytes: int,
                     timeout_ms: int = LIVE_TIMEOUT_MS, iface: int = 0):
    """An activated libpcap handle on `device` and libpcap's warning (or None);
    raises CaptureError."""
    try:
        return _core.LiveCapture.open(device, snaplen or 262144, True, timeout_ms,
                                      buffer_bytes, False, iface)
    except _core.PcapError as err:
        raise classify_open_error(device, err) from None


def spare_handle(device: str, snaplen: int, buffer_bytes: int, iface: int = 0):
    """A handle opened now, while the process may still open one, for a capture
    process that is restarted after the privileges are dropped (--user). Until
    a LiveSource takes it, its filter accepts no packet, so the kernel queues
    nothing for it. Raises CaptureError."""
    cap, _ = open_live_handle(device, snaplen, buffer_bytes, LIVE_TIMEOUT_MS, iface)
    try:
        cap.set_filter("less 0")
    except _core.PcapError as err:
        cap.close()
        raise CaptureError(f"interface {device}: {err}") from None
    return cap


class LiveSource:
    """A live device read by the native core, optionally one of a fanout group.

    Raises CaptureError (no such device, no permission, device down),
    UnsupportedLinkType, or ConfigError for a BPF expression libpcap rejects.
    """

    kind = "live"

    def __init__(self, device: str, iface: int, bpf: str | None = None,
                 snaplen: int = DEFAULT_SNAPLEN, buffer_bytes: int = 0,
                 fanout_group: int | None = None, worker: int = 0,
                 timeout_ms: int = LIVE_TIMEOUT_MS, handle=None):
        self.name = device
        self.iface = iface
        self.worker = worker
        self.timeout_ms = timeout_ms
        if handle is None:
            self._cap, self.warning = open_live_handle(device, snaplen, buffer_bytes,
                                                       timeout_ms, iface)
        else:     # opened before a privilege drop (spare_handle): now take packets
            self._cap, self.warning = handle, None
            bpf = bpf or ""          # the empty expression accepts every packet
        self.linktype = self._cap.linktype
        self.snaplen = self._cap.snaplen
        check_linktype(f"interface {device}", self.linktype)
        if bpf is not None:
            try:
                self._cap.set_filter(bpf)
            except _core.PcapError as err:
                raise ConfigError(f"--filter {bpf!r}: {err}") from None
        if fanout_group is not None:
            try:
                self._cap.set_fanout(fanout_group)
            except _core.PcapError as err:
                raise CaptureError(str(err)) from None

    def describe(self) -> dict:
        """The source as the stream's hello record lists it."""
        described = {"iface": self.iface, "kind": self.kind, "name": self.name,
                     "worker": self.worker, "linktype": self.linktype,
                     "linktype_name": records.linktype_name(self.linktype),
                     "snaplen": self.snaplen}
        if self.warning:
            described["warning"] = self.warning    # libpcap's, e.g. no promiscuous mode
        return described

    def fill(self, buf, start: int = 0, wait_ms: int = 50) -> tuple[int, int]:
        """Collect packets into buf[start:] for up to wait_ms; (records, FILL_*)."""
        return self._cap.fill(buf, start, wait_ms)

    def failure(self) -> CaptureError:
        """The error behind the last FILL_ERROR, classified."""
        message = self._cap.error or "unknown error"
        # By the message's text: pcap_dispatch returns a bare PCAP_ERROR for a
        # device that went down or vanished mid-capture (libpcap's comments say
        # it "should really return PCAP_ERROR_IFACE_NOT_UP" but may not).
        if re.search(r"went down|disappeared|No such device|ENETDOWN|ENXIO", message, re.I):
            return CaptureError(f"interface {self.name} went down or disappeared ({message})")
        return CaptureError(f"interface {self.name}: capture failed: {message}")

    def stats(self) -> SourceStats:
        """libpcap's counters for this handle, plus transport drops."""
        try:
            received, dropped, if_dropped = self._cap.stats()
        except _core.PcapError:
            received = dropped = if_dropped = 0
        return SourceStats(received, dropped, if_dropped)

    def close(self) -> None:
        """Release the handle."""
        self._cap.close()


def open_file(path: str, iface: int = 0, bpf: str | None = None,
              name: str | None = None) -> FileSource:
    """Open a capture file with the active backend (see module docstring)."""
    cls = ReferenceFileSource if use_reference_backend() else FileSource
    return cls(path, iface, bpf, name)


class StdinSource:
    """Standard input ('-', as tcpdump -r -): a capture file on a pipe or a
    redirect, read with the active backend.

    `fd` is the descriptor to read: 0, or a duplicate of it that survives
    multiprocessing's fork (which closes standard input in the child). The
    hello lists it exactly as a file named '-': kind "file", and format
    "stream" for a pipe (what libpcap finds there).
    """

    kind = "stdin"
    name = "-"

    def __init__(self, iface: int = 0, bpf: str | None = None, fd: int = 0):
        self._file = open_file(f"/dev/fd/{fd}", iface, bpf, self.name)

    def describe(self) -> dict:
        """The source as the stream's hello record lists it (a file named '-')."""
        return self._file.describe()

    def fill(self, buf, start: int = 0, wait_ms: int = 0) -> tuple[int, int]:
        """As a file: until buf is full or the stream ends."""
        return self._file.fill(buf, start, wait_ms)

    def failure(self) -> CaptureError:
        """The error behind the last FILL_ERROR, classified."""
        return self._file.failure()

    def stats(self) -> SourceStats:
        """Frames read so far."""
        return self._file.stats()

    def close(self) -> None:
        """Release the handle."""
        self._file.close()


# Source kinds by name: each factory opens one Source (raising EngineError).
SOURCES: dict[str, Callable[..., Source]] = {}


def register_source(kind: str, factory: Callable[..., Source]) -> None:
    """Make `kind` openable by open_source; a kind is registered once."""
    if kind in SOURCES:
        raise ValueError(f"source kind {kind!r} is already registered")
    SOURCES[kind] = factory


def open_source(kind: str, *args, **kw) -> Source:
    """Open a source of a registered kind; the arguments are its factory's."""
    factory = SOURCES.get(kind)
    if factory is None:      # a plugin's kind (entry point group pt_engine.sources)
        from .plugins import available, load
        if kind not in available("sources"):
            raise ConfigError(f"unknown source kind {kind!r} (known: "
                              f"{', '.join(sorted(available('sources')))})")
        factory = load("sources", kind)
    return factory(*args, **kw)


register_source("file", open_file)           # a capture file: FileSource or ReferenceFileSource
register_source("stdin", StdinSource)
register_source("live", LiveSource)
