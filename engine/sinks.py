"""Where encoded stream records go: stdout, a file, a UNIX socket with subscribers,
or a size-rotated recording (`pt-engine record`).

Sinks take whole encoded records (bytes). stdout carries data only; log
lines go to stderr through ``log``.
"""
from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import stat
import sys
import tempfile
import time
from collections import deque
from typing import Callable

import msgpack

from .config import Output
from .errors import ReaderGone, SinkError
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
        self._failed = False

    def write(self, data: bytes, kind: str) -> None:
        """Write one encoded record; raises ReaderGone if the reader closed the pipe,
        SinkError if it cannot be written (a full disk)."""
        try:
            self._fh.write(data)
            self._fh.flush()
        except BrokenPipeError:
            self._failed = True
            raise ReaderGone(f"{self.name} was closed by its reader") from None
        except OSError as err:
            self._failed = True
            raise SinkError(f"cannot write to {self.name}: {err.strerror}") from err

    def poll(self) -> None:
        """Nothing to service."""

    def close(self) -> None:
        """Close the file if this sink opened it; raises SinkError if what was
        still buffered cannot be written (unless a write already failed)."""
        if not self._owns:
            return
        try:
            self._fh.close()
        except OSError as err:
            if not self._failed:   # else: the write already said so; the file is closed
                raise SinkError(f"cannot write to {self.name}: {err.strerror}") from err


class _Subscriber:
    """One connection: its unsent bytes, and where the records in them end."""

    def __init__(self, conn: socket.socket, peer: str):
        self.conn = conn
        self.peer = peer
        self.buffer = bytearray()
        self.ends: deque[int] = deque()   # length of each queued record, oldest first
        self.head_sent = 0                # bytes of the oldest queued record already sent

    def queue(self, record: bytes) -> None:
        if record:
            self.buffer += record
            self.ends.append(len(record))

    def sent(self, n: int) -> None:
        del self.buffer[:n]
        self.head_sent += n
        while self.ends and self.head_sent >= self.ends[0]:
            self.head_sent -= self.ends.popleft()


class _LogLimit:
    """At most `burst` lines per `period` seconds; the rest are counted and the
    count is logged with the next line let through (or by flush())."""

    def __init__(self, burst: int = 5, period: float = 10.0):
        self.burst, self.period = burst, period
        self._start, self._lines, self.suppressed = 0.0, 0, 0

    def __call__(self, message: str) -> None:
        now = time.monotonic()
        if now - self._start >= self.period:
            self.flush()
            self._start, self._lines = now, 0
        if self._lines < self.burst:
            self._lines += 1
            log(message)
        else:
            self.suppressed += 1

    def flush(self) -> None:
        if self.suppressed:
            log(f"... and {self.suppressed} more such lines")
            self.suppressed = 0


class UnixSocketSink:
    """A listening UNIX socket; every subscriber gets hello, a snapshot, then each record.

    A subscriber whose unsent bytes exceed `max_buffer` is disconnected with a
    log line: a slow reader never slows the engine.
    """

    FINISH_S = 2.0

    def __init__(self, path: str, mode: int = 0o600, group: str | None = None,
                 max_buffer: int = 16 << 20, snapshot: Callable[[], bytes] | None = None,
                 owner: str | None = None):
        self.name = f"unix:{path}"
        self.path = path
        self.max_buffer = max_buffer
        self._snapshot = snapshot
        self._hello = b""
        self._subs: list[_Subscriber] = []
        self._log_drop = _LogLimit()      # a connect/disconnect storm is not 1000 lines
        self._sock = self._listen(path, mode, group, owner)

    def _listen(self, path: str, mode: int, group: str | None,
                owner: str | None) -> socket.socket:
        """Bind `path` safely: in a private directory, then renamed into place.

        Mode and group are set on the socket while only this process can reach
        it, so a symlink swapped in at `path` is never followed; a directory that
        others may write (without the sticky bit) is refused; only a stale socket
        at `path` is replaced. With `owner` (--user), the socket is given to that
        user, who must be able to remove it at the end of the run.
        """
        directory = os.path.dirname(os.path.abspath(path))
        gid = self._group_id(group)
        uid = _check_directory(path, directory, owner)
        self._remove_stale(path)
        private = None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            private = tempfile.mkdtemp(prefix=".pt-engine-", dir=directory)
            staged = os.path.join(private, "socket")
            old = os.umask(0o777 & ~mode)
            try:
                sock.bind(staged)
            finally:
                os.umask(old)
            os.chmod(staged, mode)
            if uid != -1 or gid != -1:
                os.chown(staged, uid, gid)
            sock.listen(64)      # before it appears: a client never finds it refusing
            os.rename(staged, path)
        except OSError as err:
            sock.close()
            raise SinkError(f"cannot create socket {path}: {err.strerror}") from err
        finally:
            if private is not None:
                shutil.rmtree(private, ignore_errors=True)
        sock.setblocking(False)
        self._inode = os.stat(path).st_ino
        return sock

    @staticmethod
    def _group_id(group: str | None) -> int:
        if group is None:
            return -1
        try:
            return grp.getgrnam(group).gr_gid
        except KeyError:
            raise SinkError(f"--socket-group {group!r}: no such group") from None

    @staticmethod
    def _remove_stale(path: str) -> None:
        """Unlink a socket nobody listens on; anything else at `path` is an error."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        except OSError as err:
            raise SinkError(f"{path}: {err.strerror}") from err
        if not stat.S_ISSOCK(st.st_mode):
            raise SinkError(f"{path} exists and is {_kind(st.st_mode)}, not a socket; "
                            "not replacing it")
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

    @property
    def subscribers(self) -> int:
        """Connected subscribers."""
        return len(self._subs)

    def wait_for_subscriber(self, timeout: float | None,
                            stop: Callable[[], bool] = lambda: False) -> bool:
        """Block until one subscriber is connected (or timeout seconds pass, or
        `stop()` says so, checked at least 5 times a second)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._subs:
            if stop() or (deadline is not None and time.monotonic() >= deadline):
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
        sub.queue(self._hello)
        if self._snapshot is not None and self._hello:
            sub.queue(self._snapshot())
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
            sub.sent(sent)
        if len(sub.buffer) > self.max_buffer:
            self._drop(sub, f"too slow: {len(sub.buffer)} bytes unsent "
                            f"(limit {self.max_buffer}); disconnected")
            return False
        return True

    def _drop(self, sub: _Subscriber, why: str) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
            self._log_drop(f"{self.name}: {sub.peer} {why}")
        sub.conn.close()

    @staticmethod
    def _finish_record(sub: _Subscriber, timeout: float) -> None:
        """Send the rest of the record `sub` is in the middle of, if any."""
        if not sub.head_sent or not sub.ends:
            return
        rest = sub.ends[0] - sub.head_sent
        try:
            sub.conn.settimeout(timeout)
            sub.conn.sendall(sub.buffer[:rest])
            sub.sent(rest)
        except OSError:
            pass     # gone, or stuck: it has half a record whatever we do

    def poll(self) -> None:
        """Accept new subscribers and push buffered bytes; never blocks."""
        self._accept()
        for sub in list(self._subs):
            self._flush(sub)

    def write(self, data: bytes, kind: str) -> None:
        """Queue one record for every subscriber (the hello is kept for late joiners)."""
        self._accept()     # before the hello is kept: a new subscriber gets it once
        if kind == "hello":
            self._hello = data
        for sub in list(self._subs):
            sub.queue(data)
            self._flush(sub)

    def close(self, linger: float = 2.0) -> None:
        """Give subscribers up to `linger` seconds to take what is queued, then close.

        A subscriber still behind then gets the rest of the record it is in the
        middle of (up to FINISH_S more seconds), so that it never sees half a
        record, and is closed with a log line saying how many it missed.
        """
        deadline = time.monotonic() + linger
        while any(s.buffer for s in self._subs) and time.monotonic() < deadline:
            for sub in list(self._subs):
                self._flush(sub)
            time.sleep(0.01)
        for sub in list(self._subs):
            if sub.buffer:
                self._finish_record(sub, self.FINISH_S)
                log(f"{self.name}: {sub.peer} was still {len(sub.ends)} records behind at "
                    "the end of the stream; closed after its last whole record")
            sub.conn.close()
        self._subs.clear()
        self._log_drop.flush()
        self._sock.close()
        try:
            if os.lstat(self.path).st_ino == self._inode:   # still ours
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as err:
            log(f"cannot remove socket {self.path}: {err.strerror}")


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


def _kind(mode: int) -> str:
    for test, what in ((stat.S_ISDIR, "a directory"), (stat.S_ISREG, "a regular file"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISLNK, "a symbolic link"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return what
    return "not a socket"


def _check_directory(path: str, directory: str, owner: str | None) -> int:
    """Refuse a socket directory that others may write without the sticky bit, or
    one that `owner` (the --user of the run) could not remove the socket from.
    Returns owner's uid, or -1 without one."""
    try:
        st = os.stat(directory)
    except OSError as err:
        raise SinkError(f"cannot create socket {path}: {directory}: {err.strerror}") from err
    others_write = st.st_mode & stat.S_IWOTH or (st.st_mode & stat.S_IWGRP
                                                 and st.st_gid != os.getegid())
    if others_write and not st.st_mode & stat.S_ISVTX:
        raise SinkError(f"cannot create socket {path}: {directory} is writable by other "
                        "users and has no sticky bit, so the socket could be swapped; "
                        "use a directory only its owner can write")
    if owner is None:
        return -1
    try:
        entry = pwd.getpwnam(owner)
    except KeyError:
        raise SinkError(f"--user {owner!r}: no such user") from None
    if entry.pw_uid == 0:
        return -1
    reachable = all(_user_may(os.stat(d), entry, stat.S_IXUSR)
                    for d in _ancestors(directory))
    if not (reachable and _user_may(st, entry, stat.S_IWUSR)):
        raise SinkError(f"--user {owner}: {owner} could not remove the socket {path} at the "
                        f"end of the run, as {directory} is not writable by it; put the socket "
                        f"in a directory of its own (install -d -o {owner} -m 0755 DIR)")
    return entry.pw_uid


def _user_may(st: os.stat_result, entry: pwd.struct_passwd, owner_bit: int) -> bool:
    """Whether the user of `entry` (no supplementary groups, as after --user) has
    the permission `owner_bit` (S_IWUSR, S_IXUSR) on a file with status `st`."""
    if entry.pw_uid == st.st_uid:
        return bool(st.st_mode & owner_bit)
    if entry.pw_gid == st.st_gid:
        return bool(st.st_mode & (owner_bit >> 3))
    return bool(st.st_mode & (owner_bit >> 6))


def _ancestors(directory: str) -> list[str]:
    parts, d = [], directory
    while True:
        parts.append(d)
        parent = os.path.dirname(d)
        if parent == d:
            return parts
        d = parent


def open_sink(output: Output, snapshot: Callable[[], bytes] | None = None,
              socket_mode: int = 0o600, socket_group: str | None = None,
              max_buffer: int = 16 << 20, owner: str | None = None):
    """The sink for an Output; raises SinkError if it cannot be opened. `owner`
    is the user the run drops to (--user), who must be able to remove a socket."""
    if output.kind == "stdout":
        return StreamSink(sys.stdout.buffer, "stdout", owns=False)
    if output.kind == "file":
        try:
            fh = open(output.path, "wb")
        except OSError as err:
            raise SinkError(f"--output {output.path}: {err.strerror}") from err
        return StreamSink(fh, output.path, owns=True)
    if output.kind == "unix":
        return UnixSocketSink(output.path, socket_mode, socket_group, max_buffer, snapshot,
                              owner)
    if output.kind == "rotating":
        return RotatingFileSink(output.path, output.max_bytes, output.keep)
    raise SinkError(f"unknown output kind {output.kind!r}")


