"""Sinks that write the encoded stream to a file object: stdout, or a file.

Both can block (a pipe whose reader is slow, a slow disk), so both are
ThreadedSinks. stdout carries the stream only; log lines go to stderr.
"""
from __future__ import annotations

import sys

from ..errors import ReaderGone, SinkError
from . import Destination, SinkContext, ThreadedSink


class _FileObjectSink(ThreadedSink):
    """Writes each record whole to a binary file object and flushes it."""

    def __init__(self, dest: Destination, ctx: SinkContext, fh, owns: bool):
        self._fh = fh
        self._owns = owns
        super().__init__(dest, ctx)

    def write_bytes(self, data: bytes, kind: str) -> None:
        """Raises ReaderGone if the reader closed the pipe, SinkError if it cannot
        be written (a full disk)."""
        try:
            self._fh.write(data)
            self._fh.flush()
        except BrokenPipeError:
            raise ReaderGone(f"{self.name} was closed by its reader") from None
        except OSError as err:
            raise SinkError(f"cannot write to {self.name}: {err.strerror}") from err

    def close_target(self) -> None:
        if not self._owns:
            return
        try:
            self._fh.close()
        except OSError as err:
            if self.failure is None:   # else: the write already said so; it is closed
                raise SinkError(f"cannot write to {self.name}: {err.strerror}") from err


class StdoutSink(_FileObjectSink):
    """`--output -` (the default): standard output. Its reader going away
    (`pt-engine read X | head`) stops the run quietly, as a Unix filter does."""

    on_failure = "stop"

    def __init__(self, dest: Destination, ctx: SinkContext):
        super().__init__(dest, ctx, sys.stdout.buffer, owns=False)
        self.name = "stdout"


class FileSink(_FileObjectSink):
    """`--output PATH`: a file, created or truncated."""

    on_failure = "stop"

    def __init__(self, dest: Destination, ctx: SinkContext):
        try:
            fh = open(dest.target, "wb")
        except OSError as err:
            raise SinkError(f"--output {dest.target}: {err.strerror}") from err
        super().__init__(dest, ctx, fh, owns=True)
        self.name = dest.target
