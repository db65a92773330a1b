"""Sinks: where the stream's records go. Several at once (``--output`` repeated).

A sink receives records (dicts built by pt_engine.stream), encodes them
itself, and never blocks the aggregator:

* ``write(record)`` returns at once. A sink whose writes can block (a pipe
  whose reader is slow, a disk, a network) is a ``ThreadedSink``: it encodes
  the record, queues the bytes (bounded, ``--output-buffer``) and a thread of
  its own writes them. When the queue is full, a live run (``run``) drops
  the record and counts it; a file run (``read``), which has no clock to
  keep up with, waits for room, but gives up on a sink that makes no
  progress for ``stall_s`` seconds (its failure, below);
* ``poll()`` is called whenever the aggregator is idle (a socket accepts
  subscribers there);
* ``close()`` writes what is queued (bounded in time) and closes;
* ``failure`` is the EngineError that broke it, or None; ``written`` and
  ``dropped`` count records.

Each sink declares its failure policy, ``on_failure``: ``"stop"`` (the run
stops: the capture processes are asked to finish, the summary goes to the
other outputs, and the error is reported, as for a full disk) or
``"continue"`` (logged once; the run goes on without it, counting what it
did not write). What a sink dropped is logged at the end and listed in the
summary's ``outputs``.

Destinations (``--output``) are URL-like: ``-`` (stdout), a path, ``unix:/path``
(a socket for subscribers), or ``SCHEME:REST`` of a plugin sink. An encoding
prefix chooses the format per output: ``json:-``, ``msgpack:/tmp/s.msgpack``,
``json:unix:/run/pt.sock``; without one, ``--format`` applies.

A new sink is one module with one class (``__init__(dest, ctx)``) and one line
in ``BUILTIN``, or a plugin: an entry point in the group ``pt_engine.sinks``
whose name is its scheme (docs/architecture.md).
"""
from __future__ import annotations

import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, ClassVar

from .. import stream
from ..errors import ConfigError, EngineError, ReaderGone, SinkError
from ..log import log

# scheme -> "module:class". "stdout" and "file" have no scheme in --output
# ("-" and a path); "recording" is `pt-engine record`'s.
BUILTIN = {
    "stdout": "pt_engine.sinks.files:StdoutSink",
    "file": "pt_engine.sinks.files:FileSink",
    "unix": "pt_engine.sinks.unix:UnixSocketSink",
    "tls": "pt_engine.sinks.tls:TlsSink",
    "recording": "pt_engine.sinks.recording:RecordingSink",
    "clickhouse": "pt_engine.sinks.clickhouse:ClickHouseSink",
    "history": "pt_engine.sinks.clickhouse:HistorySink",
    "prometheus": "pt_engine.sinks.prometheus:PrometheusSink",
}
_SCHEME = re.compile(r"([a-z][a-z0-9+.-]+):(.*)", re.S)
DEFAULT_QUEUE_BYTES = 64 << 20
STALL_S = 60.0          # a file run gives up on a sink that takes nothing for this long
CLOSE_S = 10.0          # at the end, queued records get this long to be written


@dataclass(frozen=True)
class Destination:
    """One --output: the sink's scheme, what follows it, and the encoding."""

    scheme: str
    target: str | None
    format: str
    text: str                     # as the user wrote it, for messages
    max_bytes: int = 0            # recording: rotate past this size
    keep: int = 0                 # recording: rotated files kept
    encrypt_to: tuple[str, ...] = ()   # recording: age public keys (--encrypt-to)


def parse_destination(text: str, default_format: str) -> Destination:
    """A Destination from --output text; raises ConfigError (an unknown scheme, an
    empty socket path, an encoding the sink does not take)."""
    fmt, rest = default_format, text
    for name in stream.FORMATS:
        if text.startswith(name + ":"):
            fmt, rest = name, text[len(name) + 1:]
            break
    if rest in ("", "-"):
        return Destination("stdout", None, fmt, text)
    match = _SCHEME.fullmatch(rest)
    if match is None:
        return Destination("file", rest, fmt, text)
    scheme, target = match.groups()
    if scheme == "file":
        return Destination("file", target, fmt, text)
    if scheme == "unix" and not target:
        raise ConfigError("--output unix: needs a socket path, as in unix:/run/pt.sock")
    if scheme in BUILTIN and scheme not in ("stdout", "recording"):
        return Destination(scheme, target, fmt, text)
    from ..plugins import available
    if scheme not in available("sinks") or scheme in ("stdout", "recording"):
        known = sorted(set(available("sinks")) - {"stdout", "file", "recording"})
        raise ConfigError(f"--output {text!r}: no sink for the scheme {scheme!r} (known: "
                          f"{', '.join(known)}; a file whose name has a colon: ./{rest})")
    return Destination(scheme, target, fmt, text)


@dataclass(frozen=True)
class SinkContext:
    """What a sink knows of the run."""

    live: bool                                   # run: drop rather than wait
    snapshot: Callable[[], dict] | None = None   # cumulative record for late subscribers
    socket_mode: int = 0o600
    socket_group: str | None = None
    subscriber_buffer: int = 16 << 20
    user: str | None = None                      # --user: who must remove a socket
    socket_uids: frozenset[int] | None = None    # --socket-users: SO_PEERCRED allow-list
    tls: object = None                           # tls: outputs (pt_engine.sinks.tls.ServerTls)
    queue_bytes: int = DEFAULT_QUEUE_BYTES
    stall_s: float = STALL_S
    options: object = None                       # the run's options (sinks with settings)


class Sink:
    """Base of the sinks; see the module docstring for the contract."""

    on_failure: ClassVar[str] = "stop"
    formats: ClassVar[tuple[str, ...]] = stream.FORMATS   # () : encodes in its own way

    def __init__(self, dest: Destination, ctx: SinkContext):
        if dest.text and dest.format not in self.formats and (self.formats or
                                                              _prefixed(dest.text)):
            raise ConfigError(f"--output {dest.text!r}: this output is written as "
                              f"{', '.join(self.formats) or 'its own format'}, not "
                              f"{dest.format}")
        self.dest = dest
        self.ctx = ctx
        self.name = dest.text or dest.target or dest.scheme
        self.encode = stream.encoder(dest.format if dest.format in stream.FORMATS
                                     else "msgpack")
        self.failure: EngineError | None = None
        self.written = 0
        self.dropped = 0

    def write(self, record: dict) -> None:
        raise NotImplementedError

    def poll(self) -> None:
        """Service the sink while the aggregator is idle (never blocks)."""

    def close(self) -> None:
        """Write what is queued (bounded in time) and close."""


def _prefixed(text: str) -> bool:
    return any(text.startswith(name + ":") for name in stream.FORMATS)


class ThreadedSink(Sink):
    """A sink whose writes can block: a bounded queue of encoded records and a
    writer thread. Subclasses implement ``write_bytes(data, kind)`` (may block,
    raises SinkError) and ``close_target()``; they open their target in
    ``__init__`` before calling this one, so that a bad target fails the run
    before any output."""

    def __init__(self, dest: Destination, ctx: SinkContext):
        super().__init__(dest, ctx)
        self._queue: deque[tuple[bytes, str]] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._closing = False
        self._busy = False
        self._progress = time.monotonic()
        self._warned_full = False
        self._thread = threading.Thread(target=self._writer, daemon=True,
                                        name=f"pt-engine sink {self.name}")
        self._thread.start()

    # --- the aggregator's side -----------------------------------------------------
    def write(self, record: dict) -> None:
        data = self.encode(record)
        with self._cond:
            if self.failure is not None:
                self.dropped += 1
                return
            if self._queue and self._queued + len(data) > self.ctx.queue_bytes:
                if self.ctx.live or not self._wait_for_room(len(data)):
                    self._drop_full()
                    return
            self._queue.append((data, record["type"]))
            self._queued += len(data)
            self._cond.notify()

    def _wait_for_room(self, size: int) -> bool:
        """File runs: wait until the record fits; False if the sink stalled
        (failed, then) or failed meanwhile. Called with the lock held."""
        while self._queue and self._queued + size > self.ctx.queue_bytes:
            if self.failure is not None:
                return False
            if time.monotonic() - self._progress > self.ctx.stall_s:
                self.failure = SinkError(f"{self.name}: took nothing for "
                                         f"{self.ctx.stall_s:g} s (a reader that stopped "
                                         "reading?)")
                self._discard()
                return False
            self._cond.wait(0.1)
        return self.failure is None

    def _drop_full(self) -> None:
        self.dropped += 1
        if not self._warned_full:
            self._warned_full = True
            log(f"output {self.name}: falling behind ({self._queued} bytes queued, limit "
                f"{self.ctx.queue_bytes}); dropping records until it catches up "
                "(counted in the summary)")

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify()
        # A live run ends within CLOSE_S; a file run waits while the sink makes
        # progress, and gives up on one that took nothing for stall_s.
        deadline = time.monotonic() + CLOSE_S
        while self._thread.is_alive():
            self._thread.join(0.1)
            now = time.monotonic()
            if now > deadline and (self.ctx.live or now - self._progress > self.ctx.stall_s):
                break
        if self._thread.is_alive():
            with self._cond:
                left = len(self._queue) + self._busy
                self.dropped += left
                self._queue.clear()
            log(f"output {self.name}: stuck in a write at the end of the run; "
                f"{left} record(s) not written")
            return          # leave the writer where it is stuck (a daemon thread)
        if self.failure is None or isinstance(self.failure, ReaderGone):
            try:
                self.close_target()
            except SinkError as err:
                self.failure = self.failure or err

    # --- the writer thread -----------------------------------------------------------
    def _writer(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                data, kind = self._queue.popleft()
                self._busy = True
            try:
                self.write_bytes(data, kind)
            except EngineError as err:
                with self._cond:
                    self._busy = False
                    self.failure = err
                    self.dropped += 1
                    self._discard()
                    self._cond.notify_all()
                return
            with self._cond:
                self._busy = False
                self._queued -= len(data)
                self.written += 1
                self._progress = time.monotonic()
                self._cond.notify_all()

    def _discard(self) -> None:
        """After a failure: what is queued will not be written (lock held)."""
        self.dropped += len(self._queue)
        self._queue.clear()
        self._queued = 0

    def backlog(self) -> int:
        """Records queued and not yet given to write_bytes (a batching sink asks)."""
        with self._cond:
            return len(self._queue)

    # --- subclasses ------------------------------------------------------------------
    def write_bytes(self, data: bytes, kind: str) -> None:
        raise NotImplementedError

    def close_target(self) -> None:
        """Close what __init__ opened; raises SinkError if buffered data is lost."""


class Outputs:
    """The run's sinks behind one write(): failures handled by each sink's policy.

    ``fatal`` is the failure of a "stop" sink (the first), for the pipeline to
    stop the run on; "continue" sinks that fail are logged once and kept,
    counting what they no longer write.
    """

    def __init__(self, sinks: list[Sink]):
        self.sinks = sinks
        self.fatal: EngineError | None = None
        self._seen: set[int] = set()

    def write(self, record: dict) -> None:
        for sink in self.sinks:
            sink.write(record)
        self._check()

    def poll(self) -> None:
        for sink in self.sinks:
            sink.poll()
        self._check()

    def _check(self) -> None:
        for sink in self.sinks:
            if sink.failure is None or id(sink) in self._seen:
                continue
            self._seen.add(id(sink))
            if sink.on_failure == "stop":
                self.fatal = self.fatal or sink.failure
            elif not isinstance(sink.failure, ReaderGone):
                log(f"output {sink.name} failed: {sink.failure}; the run goes on without it")

    def report(self) -> list[dict]:
        """The summary's `outputs`: the sinks that dropped records or failed."""
        out = []
        for sink in self.sinks:
            if sink.dropped or sink.failure is not None:
                entry = {"output": sink.name, "written": sink.written, "dropped": sink.dropped}
                if sink.failure is not None:
                    entry["error"] = str(sink.failure)
                out.append(entry)
        return out

    def close(self) -> None:
        """Close every sink; log what each dropped. Raises the first failure of a
        "stop" sink found while closing (a buffered write that failed)."""
        for sink in self.sinks:
            try:
                sink.close()
            except SinkError as err:
                sink.failure = sink.failure or err
            # A "stop" sink's failure is the run's error, reported on its own.
            if sink.dropped and (sink.failure is None or sink.on_failure != "stop"):
                log(f"output {sink.name}: {sink.dropped} record(s) not written "
                    f"({sink.written} written)")
        self._check()


def open_outputs(destinations, ctx: SinkContext) -> Outputs:
    """The sinks for `destinations`, opened in order; raises SinkError/ConfigError
    (after closing those already open) if one cannot be opened."""
    from ..plugins import load
    sinks: list[Sink] = []
    try:
        for dest in destinations:
            sinks.append(load("sinks", dest.scheme)(dest, ctx))
        for sink in sinks:
            if hasattr(sink, "peers"):       # a sink that reports on the others (prometheus)
                sink.peers = list(sinks)
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return Outputs(sinks)
