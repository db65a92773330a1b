"""Hand-off from capture processes to the aggregator: per-window deltas on a pipe.

Records never leave the capture process that parsed them (pt_engine.counting
counts them there); what travels is one message per closed window and a few
control messages, each a pipe message of its own:

    capture -> aggregator   READY    description           (source opened; first message)
                            DELTA    frontier, window delta (a closed window of this source)
                            PROGRESS frontier, stats       (live heartbeat: counters, and
                                                            no later delta is for a window
                                                            before the frontier)
                            DONE     kind, stats, message  (end of source or its error)

Flow control (files): a capture process has at most CREDITS deltas whose
window the aggregator has not yet emitted, so that a fast file cannot pile
windows up in the aggregator while a slower one lags behind. The aggregator
counts the emitted ones in a shared 8-byte counter (``Credits``, an
anonymous shared mapping made before the fork), never on the pipe: a
message back could fill the pipe while the capture process is blocked
sending a large delta, and both would wait for ever. Live capture processes
never wait (their windows close with the clock).

A DELTA carries PortWindows' byte layout (ext/windows.pyx) as it is, and
the other analysers' deltas pickled; the largest, a window with every one
of the 327,680 rows in use, is about 12 MB.
"""
from __future__ import annotations

import ctypes
import json
import mmap
import pickle
import struct
import time
from dataclasses import dataclass

from .counting import WindowDelta
from .errors import TransportError

MSG_DELTA = 1
MSG_DONE = 2
MSG_READY = 3
MSG_PROGRESS = 4
NO_FRONTIER = (1 << 64) - 1      # PROGRESS before the source's first window
_DELTA = struct.Struct("<BQQ")    # type, frontier_ns, length of the ports delta
_PROGRESS = struct.Struct("<BQQQQQ")  # type, frontier_ns, received, dropped, if_dropped, transport_dropped
CREDITS = 8                      # unacknowledged deltas a file capture process may have


@dataclass
class Delta:
    """A closed window of one capture process, and its new frontier."""

    frontier_ns: int
    window: WindowDelta


@dataclass
class Progress:
    """A live source's heartbeat: its frontier (None before its first window)
    and its cumulative counters."""

    frontier_ns: int | None
    stats: dict


@dataclass
class Done:
    """A source's last word: 'eof' or 'error' (with the error's class and message)."""

    kind: str
    stats: dict
    error_class: str | None = None
    message: str | None = None


class Credits:
    """Deltas of one file capture process that the aggregator has emitted: a
    counter in an anonymous shared mapping, written by the aggregator only."""

    def __init__(self):
        self._map = mmap.mmap(-1, 8, flags=mmap.MAP_SHARED)
        self._count = ctypes.c_uint64.from_buffer(self._map)   # an aligned 8-byte word

    @property
    def emitted(self) -> int:
        return self._count.value

    def add(self) -> None:
        self._count.value += 1


class Producer:
    """The capture-process end. `credits`: the shared count of emitted deltas
    (file sources), or None: never wait (live sources)."""

    def __init__(self, conn, credits: Credits | None = None):
        self.conn = conn
        self.credits = credits
        self._sent = 0

    def delta(self, window: WindowDelta, frontier_ns: int | None, stopping=()) -> None:
        """Hand over a closed window; with credits, first wait until fewer than
        CREDITS are not yet emitted (not once `stopping`, a list a signal
        handler appends to, is non-empty: a stopping source sends what it has)."""
        if self.credits is not None:
            # 1 ms naps while the aggregator keeps up; after 100 ms of waiting (no
            # subscriber yet, a stalled sink) they lengthen to 50 ms, so a long
            # wait costs 20 wake-ups a second, not 1,000.
            naps = 0
            while self._sent - self.credits.emitted >= CREDITS and not stopping:
                time.sleep(0.001 if naps < 100 else 0.05)
                naps += 1
            self._sent += 1
        extra = pickle.dumps(window.extra) if window.extra else b""
        self.conn.send_bytes(_DELTA.pack(MSG_DELTA, _frontier(frontier_ns), len(window.ports))
                             + window.ports + extra)

    def progress(self, frontier_ns: int | None, stats) -> None:
        """Report the frontier and the source's counters (a SourceStats)."""
        self.conn.send_bytes(_PROGRESS.pack(MSG_PROGRESS, _frontier(frontier_ns),
                                            stats.received, stats.dropped, stats.if_dropped,
                                            stats.transport_dropped))

    def ready(self, description: dict) -> None:
        """Tell the aggregator the source is open, and what it is."""
        self.conn.send_bytes(bytes([MSG_READY]) + json.dumps(description).encode())

    def finish(self, done: Done) -> None:
        """Tell the aggregator this source is over."""
        self.conn.send_bytes(bytes([MSG_DONE]) + json.dumps(done.__dict__).encode())


def _frontier(ns: int | None) -> int:
    return NO_FRONTIER if ns is None else ns


class Consumer:
    """The aggregator end of one capture process's pipe (and its Credits, if any)."""

    def __init__(self, conn, credits: Credits | None = None):
        self.conn = conn
        self.credits = credits

    def receive(self):
        """Block for the next message: a Delta, a Progress, a Done, or a dict (READY).

        Raises TransportError if the capture process died without a word.
        """
        try:
            msg = self.conn.recv_bytes()
        except (EOFError, OSError) as err:
            raise TransportError("capture process ended without finishing its source") from err
        if msg[0] == MSG_DELTA:
            _, frontier, length = _DELTA.unpack_from(msg)
            at = _DELTA.size
            extra = pickle.loads(msg[at + length:]) if len(msg) > at + length else {}
            return Delta(frontier, WindowDelta(memoryview(msg)[at:at + length], extra))
        if msg[0] == MSG_DONE:
            return Done(**json.loads(msg[1:]))
        if msg[0] == MSG_READY:
            return json.loads(msg[1:])
        if msg[0] == MSG_PROGRESS:
            _, frontier, received, dropped, if_dropped, transport_dropped = _PROGRESS.unpack(msg)
            return Progress(None if frontier == NO_FRONTIER else frontier,
                            {"received": received, "dropped": dropped,
                             "if_dropped": if_dropped, "transport_dropped": transport_dropped})
        raise TransportError(f"unknown message type {msg[0]} from a capture process")

    def ack(self) -> None:
        """A delta's window was emitted: the capture process may send another."""
        if self.credits is not None:
            self.credits.add()
