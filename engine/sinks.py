"""Where encoded stream records go: stdout, a file, a UNIX socket with subscribers,
or a size-rotated recording (`pt-engine record`).

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

import msgpack

from .config import Output
from .errors import SinkError
from .stream import FORMAT_NAME


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


class RotatingFileSink:
    """A recording: msgpack records appended to PATH, rotated by size.

    An existing PATH is appended to, after a check that it is a pt-engine
    msgpack stream; a partial record at its end (a recorder killed in the
    middle of a write) is cut off with a log line, so the new records follow
    whole ones. When a record would take PATH past `max_bytes`, PATH becomes
    PATH.1 (PATH.1 becomes PATH.2, ... PATH.keep is the oldest, and what was
    PATH.keep goes) and a new PATH starts with a copy of the last hello, so
    that every file reads on its own. A record is never split between files:
    one larger than `max_bytes` gets a file to itself. Raises SinkError when
    PATH cannot be opened, is not a recording, or cannot be written or rotated.
    """

    def __init__(self, path: str, max_bytes: int, keep: int):
        self.name = path
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.rotations = 0
        self._hello = b""
        self._check_existing()
        self._fh, self._size = self._open()

    def _check_existing(self) -> None:
        """Refuse to append to what is not a recording; cut a partial last record."""
        try:
            fh = open(self.path, "rb")
        except FileNotFoundError:
            return
        except OSError as err:
            raise SinkError(f"{self.path}: {err.strerror}") from err
        with fh:
            unpacker = msgpack.Unpacker(fh, raw=False)
            records, end = 0, 0
            try:
                first = unpacker.unpack()
                records, end = 1, unpacker.tell()
                while True:
                    unpacker.skip()
                    records, end = records + 1, unpacker.tell()
            except msgpack.OutOfData:
                pass
            except (msgpack.UnpackException, ValueError):
                raise SinkError(f"{self.path} is not a pt-engine msgpack recording (corrupt "
                                f"after {records} records); not appending to it") from None
            size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return
        if (records == 0 or not isinstance(first, dict) or first.get("type") != "hello"
                or first.get("format") != FORMAT_NAME):
            raise SinkError(f"{self.path} is not a pt-engine msgpack recording (it does not "
                            f"begin with a hello record); not appending to it")
        if end < size:
            log(f"{self.path} ended in the middle of a record (an interrupted recording?); "
                f"cutting the {size - end} bytes after its {records} whole records")
            try:
                os.truncate(self.path, end)
            except OSError as err:
                raise SinkError(f"cannot cut {self.path}: {err.strerror}") from err

    def _open(self):
        try:
            fh = open(self.path, "ab", buffering=0)
        except OSError as err:
            raise SinkError(f"{self.path}: {err.strerror}") from err
        return fh, os.fstat(fh.fileno()).st_size

    def _rotate(self) -> None:
        self._fh.close()
        try:
            if self.keep == 0:
                os.unlink(self.path)
            else:
                for i in range(self.keep - 1, 0, -1):
                    if os.path.exists(f"{self.path}.{i}"):
                        os.replace(f"{self.path}.{i}", f"{self.path}.{i + 1}")
                os.replace(self.path, f"{self.path}.1")
        except OSError as err:
            raise SinkError(f"cannot rotate {self.path}: {err.strerror}") from err
        self._fh, self._size = self._open()
        self.rotations += 1

    def _append(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[self._fh.write(view):]
        except OSError as err:
            # A full disk: take back the part of the record that reached the file.
            try:
                os.ftruncate(self._fh.fileno(), self._size)
            except OSError:
                pass
            raise SinkError(f"cannot write to {self.path}: {err.strerror}") from err
        self._size += len(data)

    def write(self, data: bytes, kind: str) -> None:
        """Append one encoded record, rotating first if it would not fit; raises SinkError."""
        if kind == "hello":
            self._hello = data
        if self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
            if kind != "hello" and self._hello:
                self._append(self._hello)
        self._append(data)

    def poll(self) -> None:
        """Nothing to service."""

    def close(self) -> None:
        """Close the current file."""
        self._fh.close()


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
    if output.kind == "rotating":
        return RotatingFileSink(output.path, output.max_bytes, output.keep)
    raise SinkError(f"unknown output kind {output.kind!r}")


