"""ICMP echo for `ping`: the socket, the request and the matching of replies.

One socket per address family serves every target. An unprivileged ICMP
datagram socket (``SOCK_DGRAM``, ``IPPROTO_ICMP``; Linux allows it to the
groups of ``net.ipv4.ping_group_range``) is tried first: the kernel then
sets the identifier (the socket's bound "port") and the checksum, and hands
this socket only the replies to its own requests. Otherwise, as root or with
CAP_NET_RAW, a raw socket: this module writes the checksum (IPv4; the
kernel does it for ICMPv6, RFC 3542 section 3.1), and the socket sees every
ICMP message of the host, so replies are filtered by type, identifier and
the run's nonce in the payload.

A reply is matched to its probe by (source address, sequence number): the
sequence number counts per target, so it is unique among a target's
outstanding probes while fewer than 65536 are in flight.
"""
from __future__ import annotations

import os
import socket
import struct

from ..errors import ProbeError

ECHO_REQUEST = {socket.AF_INET: 8, socket.AF_INET6: 128}
ECHO_REPLY = {socket.AF_INET: 0, socket.AF_INET6: 129}
_PROTO = {socket.AF_INET: socket.IPPROTO_ICMP, socket.AF_INET6: socket.IPPROTO_ICMPV6}
NONCE_BYTES = 8
DEFAULT_SIZE = 56             # payload bytes, as ping's default


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of `data`."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(family: int, ident: int, seq: int, payload: bytes) -> bytes:
    """An echo request with its checksum (the kernel replaces it where it computes one)."""
    head = struct.pack("!BBHHH", ECHO_REQUEST[family], 0, 0, ident, seq)
    if family == socket.AF_INET6:
        return head + payload
    return struct.pack("!BBHHH", ECHO_REQUEST[family], 0,
                       checksum(head + payload), ident, seq) + payload


def parse_reply(family: int, raw: bool, data: bytes) -> tuple[int, int, bytes] | None:
    """(identifier, sequence, payload) of an echo reply, or None for anything else.
    A raw IPv4 socket's data starts with the IP header."""
    if raw and family == socket.AF_INET:
        if len(data) < 20:
            return None
        data = data[(data[0] & 0x0F) * 4:]
    if len(data) < 8 or data[0] != ECHO_REPLY[family] or data[1] != 0:
        return None
    _type, _code, _sum, ident, seq = struct.unpack_from("!BBHHH", data)
    return ident, seq, data[8:]


class IcmpSocket:
    """The run's ICMP socket for one family: `fd`, `ident`, ``send`` and ``replies``."""

    def __init__(self, family: int, size: int = DEFAULT_SIZE):
        self.family = family
        self.nonce = os.urandom(NONCE_BYTES)
        self.payload = (self.nonce + bytes(range(256)) * (size // 256 + 1))[:size] \
            if size >= NONCE_BYTES else self.nonce[:size]
        self.raw = False
        try:
            self.sock = socket.socket(family, socket.SOCK_DGRAM, _PROTO[family])
            self.sock.bind(("0.0.0.0" if family == socket.AF_INET else "::", 0))
            self.ident = self.sock.getsockname()[1]
        except PermissionError:
            try:
                self.sock = socket.socket(family, socket.SOCK_RAW, _PROTO[family])
            except PermissionError:
                raise ProbeError("ICMP echo needs root, CAP_NET_RAW or a group in "
                                 "net.ipv4.ping_group_range; or probe a TCP port "
                                 "with --tcp PORT") from None
            self.raw = True
            self.ident = (os.getpid() ^ int.from_bytes(self.nonce[:2], "big")) & 0xFFFF
        except OSError as err:
            raise ProbeError(f"cannot open an ICMP socket "
                             f"({'IPv4' if family == socket.AF_INET else 'IPv6'}): "
                             f"{err.strerror}") from None
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.fd = self.sock.fileno()
        self.method = "icmp-raw" if self.raw else "icmp-dgram"

    def send(self, address: str, seq: int) -> None:
        """Send one echo request; raises OSError (no route, filtered)."""
        self.sock.sendto(echo_request(self.family, self.ident, seq, self.payload),
                         (address, 0))

    def replies(self, clock):
        """(source address text, sequence, time) of each waiting reply that is ours,
        `clock()` read as soon as its recvfrom returned."""
        while True:
            try:
                data, sender = self.sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            now = clock()
            echo = parse_reply(self.family, self.raw, data)
            if echo is None:
                continue
            ident, seq, payload = echo
            if ident != self.ident or (self.raw and payload[:NONCE_BYTES]
                                       != self.nonce[:len(payload[:NONCE_BYTES])]):
                continue
            yield sender[0].split("%")[0], seq, now

    def close(self) -> None:
        self.sock.close()
