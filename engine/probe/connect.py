"""TCP connect probes in batches: the connector of the probe loop.

``connector()`` gives the native ``pt_engine._connect.Connector`` (ext/connect.pyx,
whose docstring says the calls), or with PT_ENGINE_PUREPYTHON=1 the
``Connector`` of this module, its pure-Python twin: the same calls, the same
results, with Python sockets. Each connect is made on a non-blocking socket
with SO_LINGER 0 (closed with a reset, no TIME_WAIT, as nmap -sT); an answer
already there when connect returns is read at once (SO_ERROR), the others
wait in the connector's epoll.
"""
from __future__ import annotations

import errno
import select
import socket
import struct
import time

from ..backend import use_reference_backend

_LINGER0 = struct.pack("ii", 1, 0)


class Connector:
    """The pure-Python twin of pt_engine._connect.Connector."""

    def __init__(self):
        self.epoll = select.epoll()
        self._socks: dict[int, socket.socket] = {}

    def fileno(self) -> int:
        return self.epoll.fileno()

    def start(self, batch: list) -> list[tuple[int, int, int, int]]:
        out = []
        for family, address, port, zone in batch:
            sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
            where = (address, port) if family == socket.AF_INET else (address, port, 0, zone)
            sent = time.monotonic_ns()
            code = sock.connect_ex(where)
            if code == errno.EINPROGRESS:
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or code
            if code == errno.EINPROGRESS:
                fd = sock.fileno()
                self._socks[fd] = sock
                self.epoll.register(fd, select.EPOLLOUT)
                out.append((fd, code, sent, 0))
                continue
            end = time.monotonic_ns()
            sock.close()
            out.append((-1, code, sent, end))
        return out

    def wait(self) -> list[tuple[int, int, int]]:
        out = []
        for fd, _events in self.epoll.poll(0):
            sock = self._socks.pop(fd)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            end = time.monotonic_ns()
            sock.close()
            out.append((fd, code, end))
        return out

    def drop(self, fd: int) -> None:
        sock = self._socks.pop(fd, None)
        if sock is not None:
            sock.close()

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()
        self.epoll.close()


def connector():
    """The backend's connector (native unless PT_ENGINE_PUREPYTHON=1)."""
    if use_reference_backend():
        return Connector()
    from .._connect import Connector as Native
    return Native()
