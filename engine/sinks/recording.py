"""`pt-engine record FILE`: the msgpack stream appended to a file, rotated by size.

``RotatingFile`` moves encoded records (see its docstring for appending and
rotation); ``RecordingSink`` is the sink around it, writing in a thread of
its own like any sink whose writes can block.
"""
from __future__ import annotations

import os

import msgpack

from ..errors import SinkError
from ..log import log
from ..stream import FORMAT_NAME
from . import Destination, SinkContext, ThreadedSink


class RotatingFile:
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

    With `recipients` (age public keys, pt_engine.agefile) every file is one
    age stream, written as records come: an existing PATH cannot be appended
    to, so it is rotated away first (it becomes PATH.1).
    """

    def __init__(self, path: str, max_bytes: int, keep: int, recipients: list | None = None):
        self.name = path
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.rotations = 0
        self._hello = b""
        self._recipients = recipients
        if recipients:
            if os.path.lexists(path):
                log(f"{path} exists; an encrypted recording is not appended to, so it "
                    f"becomes {path}.1")
                self._shift()
        else:
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
        if self._recipients:
            from ..agefile import AgeWriter
            return AgeWriter(self.path, self._recipients), 0
        try:
            fh = open(self.path, "ab", buffering=0)
        except OSError as err:
            raise SinkError(f"{self.path}: {err.strerror}") from err
        return fh, os.fstat(fh.fileno()).st_size

    def _rotate(self) -> None:
        self._fh.close()
        self._shift()
        self._fh, self._size = self._open()
        self.rotations += 1

    def _shift(self) -> None:
        """PATH -> PATH.1 -> ... PATH.keep (the oldest goes)."""
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

    def _append(self, data: bytes) -> None:
        if self._recipients:
            self._fh.write(data)
            self._size += len(data)
            return
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


class RecordingSink(ThreadedSink):
    """The sink of `pt-engine record`: msgpack, rotated past dest.max_bytes,
    keeping dest.keep old files. A recording that cannot be written stops the
    run (after the summary to any other output)."""

    on_failure = "stop"
    formats = ("msgpack",)

    def __init__(self, dest: Destination, ctx: SinkContext):
        recipients = None
        if dest.encrypt_to:
            from ..agefile import recipient
            recipients = [recipient(text) for text in dest.encrypt_to]
        self.file = RotatingFile(dest.target, dest.max_bytes, dest.keep, recipients)
        super().__init__(dest, ctx)
        self.name = dest.target

    def write_bytes(self, data: bytes, kind: str) -> None:
        self.file.write(data, kind)

    def close_target(self) -> None:
        self.file.close()
