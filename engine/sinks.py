"""Where encoded stream records go: stdout, a file, or a UNIX socket with subscribers.

Sinks take whole encoded records (bytes). stdout carries data only; log
lines go to stderr through ``log``.
"""
from __future__ import annotations

import grp
import os
import socket
import sys
import time
from typing import Callable

from .config import Output
from .errors import SinkError


def log(message: str) -> None:
    """One line on stderr, prefixed with the program name."""
    print(f"pt-engine: {message}", file=sys.stderr, flush=True)


class StreamSink:
    """Writes records to a binary file object (stdout or a file)."""

    def __init__(self, fh, name: str, owns: bool):
        self._fh = fh
        self.name = name
        self._owns = owns

    def write(self, data: bytes, kind: str) -> None:
        """Write one encoded record; raises SinkError if the reader is gone."""
        try:
            self._fh.write(data)
            self._fh.flush()
        except BrokenPipeError:
            raise SinkError(f"{self.name} was closed by its reader (broken pipe)") from None
        except OSError as err:
            raise SinkError(f"cannot write to {self.name}: {err.strerror}") from err

    def poll(self) -> None:
        """Nothing to service."""

    def close(self) -> None:
        """Close the file if this sink opened it."""
        if self._owns:
            self._fh.close()


class _Subscriber:
    def __init__(self, conn: socket.socket, peer: str):
        self.conn = conn
        self.peer = peer
        self.buffer = bytearray()


class UnixSocketSink:
    """A listening UNIX socket; every subscriber gets hello, a snapshot, then each record.

    A subscriber whose unsent bytes exceed `max_buffer` is disconnected with a
    log line: a slow reader never slows the engine.
    """

    def __init__(self, path: str, mode: int = 0o600, group: str | None = None,
                 max_buffer: int = 16 << 20, snapshot: Callable[[], bytes] | None = None):
        self.name = f"unix:{path}"
        self.path = path
        self.max_buffer = max_buffer
        self._snapshot = snapshot
        self._hello = b""
        self._subs: list[_Subscriber] = []
        self._sock = self._listen(path, mode, group)

    def _listen(self, path: str, mode: int, group: str | None) -> socket.socket:
        if os.path.exists(path):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
            except ConnectionRefusedError:
                os.unlink(path)   # stale: nobody listens on it
            except OSError as err:
                raise SinkError(f"{path} exists and is not a usable socket ({err.strerror})") \
                    from err
            else:
                raise SinkError(f"{path}: another pt-engine is already serving this socket")
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o777 & ~mode)
        try:
            sock.bind(path)
        except OSError as err:
            sock.close()
            raise SinkError(f"cannot create socket {path}: {err.strerror}") from err
        finally:
            os.umask(old)
        os.chmod(path, mode)
        if group is not None:
            try:
                os.chown(path, -1, grp.getgrnam(group).gr_gid)
            except KeyError:
                sock.close()
                os.unlink(path)
                raise SinkError(f"--socket-group {group!r}: no such group") from None
        sock.listen(64)
        sock.setblocking(False)
        return sock

    @property
    def subscribers(self) -> int:
        """Connected subscribers."""
        return len(self._subs)

    def wait_for_subscriber(self, timeout: float | None) -> bool:
        """Block until one subscriber is connected (or timeout seconds pass)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._subs:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self._sock.settimeout(0.2)
            try:
                conn, _ = self._sock.accept()
            except (socket.timeout, BlockingIOError):
                continue
            finally:
                self._sock.setblocking(False)
            self._add(conn)
        return True

    def _add(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        sub = _Subscriber(conn, f"subscriber {conn.fileno()}")
        sub.buffer += self._hello
        if self._snapshot is not None and self._hello:
            sub.buffer += self._snapshot()
        self._subs.append(sub)
        self._flush(sub)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                log(f"{self.name}: accept failed: {err.strerror}")
                return
            self._add(conn)

    def _flush(self, sub: _Subscriber) -> bool:
        while sub.buffer:
            try:
                sent = sub.conn.send(sub.buffer)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._drop(sub, "disconnected")
                return False
            del sub.buffer[:sent]
        if len(sub.buffer) > self.max_buffer:
            self._drop(sub, f"too slow: {len(sub.buffer)} bytes unsent "
                            f"(limit {self.max_buffer}); disconnected")
            return False
        return True

    def _drop(self, sub: _Subscriber, why: str) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
            log(f"{self.name}: {sub.peer} {why}")
        sub.conn.close()

    def poll(self) -> None:
        """Accept new subscribers and push buffered bytes; never blocks."""
        self._accept()
        for sub in list(self._subs):
            self._flush(sub)

    def write(self, data: bytes, kind: str) -> None:
        """Queue one record for every subscriber (the hello is kept for late joiners)."""
        if kind == "hello":
            self._hello = data
        self._accept()
        for sub in list(self._subs):
            sub.buffer += data
            self._flush(sub)

    def close(self, linger: float = 2.0) -> None:
        """Give subscribers up to `linger` seconds to take what is queued, then close."""
        deadline = time.monotonic() + linger
        while any(s.buffer for s in self._subs) and time.monotonic() < deadline:
            for sub in list(self._subs):
                self._flush(sub)
            time.sleep(0.01)
        for sub in list(self._subs):
            sub.conn.close()
        self._subs.clear()
        self._sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def open_sink(output: Output, snapshot: Callable[[], bytes] | None = None,
              socket_mode: int = 0o600, socket_group: str | None = None,
              max_buffer: int = 16 << 20):
    """The sink for an Output; raises SinkError if it cannot be opened."""
    if output.kind == "stdout":
        return StreamSink(sys.stdout.buffer, "stdout", owns=False)
    if output.kind == "file":
        try:
            fh = open(output.path, "wb")
        except OSError as err:
            raise SinkError(f"--output {output.path}: {err.strerror}") from err
        return StreamSink(fh, output.path, owns=True)
    if output.kind == "unix":
        return UnixSocketSink(output.path, socket_mode, socket_group, max_buffer, snapshot)
    raise SinkError(f"unknown output kind {output.kind!r}")


