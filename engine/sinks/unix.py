"""`--output unix:PATH`: a UNIX socket that any number of subscribers read.

``SubscriberSocket`` moves encoded records: every subscriber gets the hello,
a snapshot of the counters so far, then each record; one that falls more
than ``max_buffer`` bytes behind is disconnected with a log line, so a slow
reader never slows the engine. Nothing here blocks: the socket and its
connections are non-blocking, serviced on each write and poll.
``UnixSocketSink`` is the sink around it.
"""
from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import stat
import struct
import tempfile
import time
from collections import deque
from typing import Callable

from ..errors import SinkError
from ..log import LogLimit, log
from . import Destination, Sink, SinkContext


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


class SubscriberServer:
    """A listening socket; every subscriber gets hello, a snapshot, then each record.

    A subscriber whose unsent bytes exceed `max_buffer` is disconnected with a
    log line: a slow reader never slows the engine. Subclasses own the
    listening socket (``self._sock``, non-blocking) and may override the hooks
    ``_admit(conn)`` (a new connection: return it to serve, or None when it was
    refused or is not ready yet; ``_ready(conn)`` serves one later),
    ``_progress()`` (called on every poll), ``_send(conn, data)`` (raise
    BlockingIOError when it would block) and ``_closed()`` (after close).
    """

    FINISH_S = 2.0

    def __init__(self, name: str, max_buffer: int = 16 << 20,
                 snapshot: Callable[[], bytes] | None = None):
        self.name = name
        self.max_buffer = max_buffer
        self._snapshot = snapshot
        self._hello = b""
        self._subs: list[_Subscriber] = []
        self._log_drop = LogLimit()      # a connect/disconnect storm is not 1000 lines
        self._sock: socket.socket | None = None

    # --- hooks -------------------------------------------------------------------------
    def _admit(self, conn: socket.socket) -> socket.socket | None:
        return conn

    def _progress(self) -> None:
        """Move connections that are not subscribers yet along (TLS handshakes)."""

    def unreachable(self) -> str | None:
        """Why no new subscriber can reach this server any more, or None."""
        return None

    @staticmethod
    def _send(conn: socket.socket, data) -> int:
        return conn.send(data)

    def _closed(self) -> None:
        """After the listening socket closed."""

    @property
    def subscribers(self) -> int:
        """Connected subscribers."""
        return len(self._subs)

    def wait_for_subscriber(self, timeout: float | None,
                            stop: Callable[[], bool] = lambda: False) -> bool:
        """Block until one subscriber is connected (or timeout seconds pass, or
        `stop()` says so, checked at least 5 times a second)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        checked = time.monotonic()
        while not self._subs:
            now = time.monotonic()
            if stop() or (deadline is not None and now >= deadline):
                return False
            if now - checked >= 1.0:
                checked = now
                why = self.unreachable()
                if why is not None:
                    raise SinkError(f"{self.name}: {why}; no subscriber can connect")
            self._progress()
            self._sock.settimeout(0.05)
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
        ready = self._admit(conn)
        if ready is not None:
            self._ready(ready)

    def _ready(self, conn: socket.socket, peer: str | None = None) -> None:
        """Serve `conn` from now on: the hello, a snapshot, then each record."""
        sub = _Subscriber(conn, peer or f"subscriber {conn.fileno()}")
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
                sent = self._send(sub.conn, memoryview(sub.buffer)[:1 << 20])
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
        self._progress()
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
        self._closed()


class SubscriberSocket(SubscriberServer):
    """``SubscriberServer`` on a UNIX socket at `path`, with its mode, group and
    owner; with `uids`, only those user ids may subscribe (SO_PEERCRED, checked
    on every connection, each refusal logged)."""

    def __init__(self, path: str, mode: int = 0o600, group: str | None = None,
                 max_buffer: int = 16 << 20, snapshot: Callable[[], bytes] | None = None,
                 owner: str | None = None, uids: frozenset[int] | None = None):
        super().__init__(f"unix:{path}", max_buffer, snapshot)
        self.path = path
        self._uids = uids
        self._sock = self._listen(path, mode, group, owner)

    def _admit(self, conn: socket.socket) -> socket.socket | None:
        if self._uids is None:
            return conn
        pid, uid, _ = struct.unpack("3i", conn.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        if uid in self._uids:
            return conn
        self._log_drop(f"{self.name}: refused a subscriber of uid {uid} (pid {pid}): not in "
                       f"--socket-users")
        conn.close()
        return None

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

    def unreachable(self) -> str | None:
        try:
            if os.lstat(self.path).st_ino == self._inode:
                return None
        except FileNotFoundError:
            return f"{self.path} was removed"
        except OSError as err:
            return f"{self.path}: {err.strerror}"
        return f"{self.path} was replaced by another socket or file"

    def _closed(self) -> None:
        try:
            if os.lstat(self.path).st_ino == self._inode:   # still ours
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as err:
            log(f"cannot remove socket {self.path}: {err.strerror}")


class SubscriberSink(Sink):
    """A sink around a SubscriberServer (``open_server``). Subscribers come and
    go; the socket itself does not fail once it listens, so the run goes on
    whatever they do."""

    on_failure = "continue"

    def __init__(self, dest: Destination, ctx: SinkContext):
        super().__init__(dest, ctx)
        snapshot = None
        if ctx.snapshot is not None:
            snapshot = lambda: self.encode(ctx.snapshot())     # noqa: E731
        self.socket = self.open_server(dest, ctx, snapshot)
        self.name = self.socket.name
        self._unreachable_said = False

    def open_server(self, dest: Destination, ctx: SinkContext,
                    snapshot: Callable[[], bytes] | None) -> SubscriberServer:
        raise NotImplementedError

    def write(self, record: dict) -> None:
        self.socket.write(self.encode(record), record["type"])
        self.written += 1
        if record["type"] == "window" and not self._unreachable_said:
            why = self.socket.unreachable()
            if why is not None:          # said once: the subscribers connected go on
                self._unreachable_said = True
                log(f"{self.name}: {why}; the subscribers connected still get the "
                    f"stream, new ones cannot connect")

    def poll(self) -> None:
        self.socket.poll()

    def wait_for_subscriber(self, timeout: float | None,
                            stop: Callable[[], bool] = lambda: False) -> bool:
        """Block until a subscriber is connected (see SubscriberSocket)."""
        return self.socket.wait_for_subscriber(timeout, stop)

    def close(self) -> None:
        self.socket.close()


class UnixSocketSink(SubscriberSink):
    """The sink of `--output unix:PATH`."""

    def open_server(self, dest, ctx, snapshot) -> SubscriberSocket:
        return SubscriberSocket(dest.target, ctx.socket_mode, ctx.socket_group,
                                ctx.subscriber_buffer, snapshot, ctx.user, ctx.socket_uids)


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
