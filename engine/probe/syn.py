"""The half-open scan of `scan --syn`: SYNs from a raw socket, answers matched by cookie.

One ``SynSocket`` per address family serves every target of a run:

* a raw TCP socket (``SOCK_RAW``, ``IPPROTO_TCP``; root or CAP_NET_RAW) sends
  each SYN, its TCP header written here (checksum over the pseudo header,
  IPv4 and IPv6 alike; the kernel writes the IP header), and receives a copy
  of every TCP segment that reaches the host;
* a raw ICMP socket of the family receives the destination-unreachable
  messages that quote one of our SYNs;
* a TCP socket bound to an ephemeral port and never listening reserves the
  source port of every SYN, so that no connection of the host uses it: the
  kernel has no connection for that port and answers a SYN/ACK with its own
  reset, which closes the half-open connection at the target (as nmap -sS).

The sequence number of each SYN is a cookie, as masscan's: a keyed hash
(SipHash-2-4, as masscan's, under a key made for the run) of the target
address, its port, our port and the attempt, whose low 4 bits are the
attempt. An answer is ours when it
comes from a target and port we probed, to our port, and acknowledges the
cookie + 1 (a SYN/ACK: ``reply``, the port is open; a reset with ACK:
``refused``, closed); an ICMP unreachable is ours when the quoted segment
has our port and the cookie as its sequence number (``unreachable``). The
attempt is read back from the cookie, so that an answer to an earlier,
timed-out attempt is not taken as the answer to its retry.

The loop hands over the SYNs due in one turn as one batch (``send_batch``)
and takes the waiting answers of a socket in one call (``answers``): by
default ``pt_engine._syn.SynEngine`` (ext/syn.pyx) builds, sends, parses and
checks them in C; with PT_ENGINE_PUREPYTHON=1 the methods here do, with the
same cookies (``siphash24`` is the Python twin of the C one).
"""
from __future__ import annotations

import os
import socket
import struct

from ..backend import use_reference_backend
from ..errors import ProbeError
from .targets import split_zone

_PROTO_ICMP = {socket.AF_INET: socket.IPPROTO_ICMP, socket.AF_INET6: socket.IPPROTO_ICMPV6}
_UNREACH = {socket.AF_INET: 3, socket.AF_INET6: 1}      # destination unreachable
_SYN, _RST, _ACK = 0x02, 0x04, 0x10
_WINDOW = 1024
_MSS = b"\x02\x04\x05\xb4"                # MSS 1460, as nmap's SYN carries
_HEADER = 20 + len(_MSS)
_OFFSET_FLAGS = (_HEADER // 4) << 12 | _SYN
ATTEMPT_MASK = 0xF


def fold(total: int) -> int:
    """The Internet checksum (RFC 1071) of words that sum to `total`."""
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


_M64 = (1 << 64) - 1


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M64


def siphash24(key: bytes, data: bytes) -> int:
    """SipHash-2-4 (Aumasson and Bernstein) of `data` under a 16-byte `key`."""
    k0, k1 = int.from_bytes(key[:8], "little"), int.from_bytes(key[8:16], "little")
    v = [0x736f6d6570736575 ^ k0, 0x646f72616e646f6d ^ k1,
         0x6c7967656e657261 ^ k0, 0x7465646279746573 ^ k1]

    def rounds(n: int) -> None:
        for _ in range(n):
            v[0] = (v[0] + v[1]) & _M64; v[1] = _rotl(v[1], 13) ^ v[0]      # noqa: E702
            v[0] = _rotl(v[0], 32)
            v[2] = (v[2] + v[3]) & _M64; v[3] = _rotl(v[3], 16) ^ v[2]      # noqa: E702
            v[0] = (v[0] + v[3]) & _M64; v[3] = _rotl(v[3], 21) ^ v[0]      # noqa: E702
            v[2] = (v[2] + v[1]) & _M64; v[1] = _rotl(v[1], 17) ^ v[2]      # noqa: E702
            v[2] = _rotl(v[2], 32)
    full = len(data) - len(data) % 8
    for i in range(0, full, 8):
        m = int.from_bytes(data[i:i + 8], "little")
        v[3] ^= m
        rounds(2)
        v[0] ^= m
    last = (len(data) & 0xFF) << 56 | int.from_bytes(data[full:], "little")
    v[3] ^= last
    rounds(2)
    v[0] ^= last
    v[2] ^= 0xFF
    rounds(4)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def _words(data: bytes) -> int:
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


class SynSocket:
    """The raw sockets of one family: ``send(probe)`` and ``answers(clock)``."""

    def __init__(self, family: int, key: bytes | None = None):
        self.family = family
        self.key = key or os.urandom(16)
        self.v6 = family == socket.AF_INET6
        self._packed: dict[str, bytes] = {}
        self._base: dict[bytes, int] = {}       # target -> checksum words but dport, seq
        self._socks: list[socket.socket] = []
        try:
            self.tcp = self._open(socket.SOCK_RAW, socket.IPPROTO_TCP)
            self.icmp = self._open(socket.SOCK_RAW, _PROTO_ICMP[family])
            self.reserve = self._open(socket.SOCK_STREAM, 0)
        except PermissionError:
            self.close()
            raise ProbeError("scan --syn needs root (raw sockets); without it, leave out "
                             "--syn for a connect scan") from None
        except OSError as err:
            self.close()
            raise ProbeError(f"cannot open the raw sockets of scan --syn "
                             f"({'IPv6' if self.v6 else 'IPv4'}): {err.strerror or err}") from None
        if self.v6:
            self.reserve.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        self.reserve.bind(("::" if self.v6 else "0.0.0.0", 0))
        self.port = self.reserve.getsockname()[1]
        for sock in (self.tcp, self.icmp):
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.fds = (self.tcp.fileno(), self.icmp.fileno())
        self.native = None
        if not use_reference_backend():
            from .._syn import SynEngine
            self.native = SynEngine(self.fds[0], self.fds[1], family, self.key, self.port)

    def _open(self, kind: int, proto: int) -> socket.socket:
        sock = socket.socket(self.family, kind, proto)
        self._socks.append(sock)
        return sock

    # --- sending ---------------------------------------------------------------------
    def packed(self, address: str) -> bytes:
        """The target's address as bytes (the key its answers are matched by)."""
        out = self._packed.get(address)
        if out is None:
            out = self._packed[address] = socket.inet_pton(self.family, address)
        return out

    def cookie(self, dst: bytes, dport: int, attempt: int) -> int:
        """The sequence number of the SYN to (dst, dport) of this attempt."""
        attempt &= ATTEMPT_MASK
        digest = siphash24(self.key, dst + struct.pack("!HHB", dport, self.port, attempt))
        return (digest & ~ATTEMPT_MASK & 0xFFFFFFFF) | attempt

    def _checksum_base(self, dst: bytes, zone: int = 0) -> int:
        base = self._base.get(dst)
        if base is None:
            src = self._source(dst, zone)
            pseudo = (src + dst + struct.pack("!IxxxB", _HEADER, socket.IPPROTO_TCP)
                      if self.v6 else
                      src + dst + struct.pack("!xBH", socket.IPPROTO_TCP, _HEADER))
            base = self._base[dst] = (_words(pseudo) + self.port + _OFFSET_FLAGS + _WINDOW
                                      + _words(_MSS))
        return base

    def _source(self, dst: bytes, zone: int) -> bytes:
        """The address the kernel sends from to `dst` (a route lookup: a UDP connect)."""
        text = socket.inet_ntop(self.family, dst)
        with socket.socket(self.family, socket.SOCK_DGRAM) as udp:
            udp.connect((text, 9, 0, zone) if self.v6 else (text, 9))
            return socket.inet_pton(self.family, udp.getsockname()[0].split("%")[0])

    def segment(self, dst: bytes, dport: int, attempt: int, zone: int = 0) -> bytes:
        """The SYN's TCP header (with its checksum) to (dst, dport) of this attempt;
        raises OSError when no route leads to dst."""
        seq = self.cookie(dst, dport, attempt)
        check = fold(self._checksum_base(dst, zone) + dport + (seq >> 16) + (seq & 0xFFFF))
        return struct.pack("!HHIIHHHH", self.port, dport, seq, 0, _OFFSET_FLAGS, _WINDOW,
                           check, 0) + _MSS

    def send_batch(self, batch: list, clock) -> list[tuple[tuple, int, int]]:
        """Send the SYNs of [(address, port, attempt)]: [(key, sent_ns, errno)] each,
        key the (target bytes, port) its answers come under, errno 0 when it left
        (else no route, a local filter: it did not)."""
        out: list = []
        native: list = []                 # (index in out, the engine's item)
        for address, port, attempt in batch:
            bare, zone = split_zone(address)
            dst = self.packed(bare)
            try:
                if self.native is not None:
                    native.append((len(out), (dst, port, attempt,
                                              self._checksum_base(dst, zone), zone)))
                    out.append(((dst, port), 0, 0))
                    continue
                segment = self.segment(dst, port, attempt, zone)
                sent = clock()
                self.tcp.sendto(segment, (bare, 0, 0, zone) if self.v6 else (bare, 0))
                out.append(((dst, port), sent, 0))
            except OSError as err:
                out.append(((dst, port), clock(), err.errno or 5))
        if native:
            for (index, _item), (sent, code) in zip(native, self.native.send(
                    [item for _index, item in native])):
                out[index] = (out[index][0], sent, code)
        return out

    # --- answers ---------------------------------------------------------------------
    def answers(self, fd: int, clock) -> list:
        """[((target bytes, port), attempt, outcome, time)] of the waiting answers that
        are ours, on socket `fd`; `clock()` read as soon as each recvfrom returned."""
        if self.native is not None:
            return self.native.answers(fd)
        return list(self._answers(fd, clock))

    def _answers(self, fd: int, clock):
        sock = self.tcp if fd == self.fds[0] else self.icmp
        parse = self._tcp_answer if sock is self.tcp else self._icmp_answer
        while True:
            try:
                data, sender = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            now = clock()
            got = parse(data, sender)
            if got is not None:
                yield (*got, now)

    def _tcp_answer(self, data: bytes, sender):
        if self.v6:
            src, tcp = socket.inet_pton(socket.AF_INET6, sender[0].split("%")[0]), data
        else:
            if len(data) < 20:
                return None
            src, tcp = data[12:16], data[(data[0] & 0x0F) * 4:]
        if len(tcp) < 14:
            return None
        sport, dport, _seq, ack, flags = struct.unpack_from("!HHIIxB", tcp)
        if dport != self.port or not flags & _ACK:
            return None
        if flags & (_SYN | _RST) == _SYN:
            outcome = "reply"
        elif flags & _RST:
            outcome = "refused"
        else:
            return None
        seq = (ack - 1) & 0xFFFFFFFF
        attempt = seq & ATTEMPT_MASK
        if seq != self.cookie(src, sport, attempt):
            return None
        return (src, sport), attempt, outcome

    def _icmp_answer(self, data: bytes, sender):
        if not self.v6:
            if len(data) < 20:
                return None
            data = data[(data[0] & 0x0F) * 4:]
        if len(data) < 8 or data[0] != _UNREACH[self.family]:
            return None
        inner = data[8:]
        if self.v6:
            if len(inner) < 48 or inner[6] != socket.IPPROTO_TCP:
                return None
            dst, tcp = inner[24:40], inner[40:]
        else:
            if len(inner) < 28 or inner[9] != socket.IPPROTO_TCP:
                return None
            dst, tcp = inner[16:20], inner[(inner[0] & 0x0F) * 4:]
        if len(tcp) < 8:
            return None
        sport, dport, seq = struct.unpack_from("!HHI", tcp)
        attempt = seq & ATTEMPT_MASK
        if sport != self.port or seq != self.cookie(dst, dport, attempt):
            return None
        return (dst, dport), attempt, "unreachable"

    def close(self) -> None:
        for sock in self._socks:
            sock.close()
