"""Shared-memory hand-off of parsed records from capture processes to the aggregator.

Layout. Each capture process gets one segment (an anonymous shared mapping)
holding ``slots`` slots of ``slot_records`` records each; a record is a
RECORD_DTYPE / pkt_record_t of 56 bytes (ext/records.pxd), so slot k starts
at byte ``k * slot_records * 56``. No header: the slot protocol travels on a
pipe, one small message per batch, never packet data:

    capture -> aggregator   READY  description             (source opened; first message)
                            BATCH  slot, records           (slot now owned by the aggregator)
                            PROGRESS watermark, stats      (live: no record older than the
                                                            watermark will follow; counters)
                            DONE   kind, stats, message    (end of source or its error)
    aggregator -> capture   FREE   slot                    (slot owned by the capture again)

A capture process fills slots in round-robin order and never has more than
``slots`` batches in flight, so the two sides never touch the same slot.

Lifetime. The pipeline (the creator) maps every segment before it forks the
capture processes, which inherit the mapping across fork. The segment has
no name: nothing can leak in /dev/shm even if every process is killed with
SIGKILL, and no resource-tracker process is needed (multiprocessing's
shared_memory would start one, which would outlive a privilege drop as
root). Children only ever close() their view.
"""
from __future__ import annotations

import json
import mmap
import struct
from dataclasses import dataclass

from .errors import TransportError
from . import records as _records
from .records import RECORD_SIZE

MSG_BATCH = 1
MSG_DONE = 2
MSG_READY = 3
MSG_PROGRESS = 4
_BATCH = struct.Struct("<BII")       # type, slot, records
_PROGRESS = struct.Struct("<BQQQQQ")  # type, watermark_ns, received, dropped, if_dropped, transport_dropped
_FREE = struct.Struct("<I")          # slot


class Ring:
    """One capture process's slots in a shared-memory segment (see module doc)."""

    def __init__(self, slots: int, slot_records: int):
        if slots < 2 or slot_records < 1:
            raise ValueError(f"a ring needs >= 2 slots of >= 1 record, not {slots} x {slot_records}")
        self.slots = slots
        self.slot_records = slot_records
        size = slots * slot_records * RECORD_SIZE
        try:
            self._map = mmap.mmap(-1, size, flags=mmap.MAP_SHARED)
        except OSError as err:
            raise TransportError(f"cannot map a {size >> 20} MiB shared-memory segment "
                                 f"({err.strerror})") from err
        self._buf = memoryview(self._map)
        self._records = None

    @property
    def records(self):
        """The slots as a (slots, slot_records) RECORD_DTYPE array (the aggregator's
        view; numpy is imported on first use, never by a capture process)."""
        if self._records is None:
            import numpy as np
            self._records = np.ndarray((self.slots, self.slot_records),
                                       dtype=_records.RECORD_DTYPE, buffer=self._buf)
        return self._records

    def slot_bytes(self, slot: int) -> memoryview:
        """Writable bytes of one slot, for Capture.fill()."""
        return self._buf[slot * self.slot_records * RECORD_SIZE:
                             (slot + 1) * self.slot_records * RECORD_SIZE]

    def close(self) -> None:
        """Drop this process's mapping; arrays built on it must be gone first."""
        self._records = None
        try:
            self._buf.release()
            self._map.close()
        except BufferError:
            pass   # a caller still holds a view; the mapping goes with the process


@dataclass
class Progress:
    """A live source's heartbeat: its watermark and its cumulative counters."""

    watermark_ns: int
    stats: dict


@dataclass
class Done:
    """A source's last word: 'eof' or 'error' (with the error's class and message)."""

    kind: str
    stats: dict
    error_class: str | None = None
    message: str | None = None


class Producer:
    """The capture-process end: hands slots over and takes them back."""

    def __init__(self, ring: Ring, conn):
        self.ring = ring
        self.conn = conn
        self._next = 0
        self._in_flight = 0

    def acquire(self, stopping=()) -> int | None:
        """The next slot to fill, waiting for the aggregator to free one if needed;
        None once `stopping` (a list a signal handler appends to) is non-empty."""
        while self._in_flight >= self.ring.slots:
            if stopping:
                return None
            if self.conn.poll(0.1):
                self._take_free()
        return self._next

    def _take_free(self) -> None:
        try:
            self.conn.recv_bytes()
        except (EOFError, OSError) as err:
            raise TransportError("the aggregator went away") from err
        self._in_flight -= 1

    def try_acquire(self) -> int | None:
        """The next slot to fill if one is free now, else None (never blocks)."""
        while self._in_flight >= self.ring.slots and self.conn.poll(0):
            self._take_free()
        return self._next if self._in_flight < self.ring.slots else None

    def progress(self, watermark_ns: int, stats) -> None:
        """Report the watermark and the source's counters (a SourceStats)."""
        self.conn.send_bytes(_PROGRESS.pack(MSG_PROGRESS, watermark_ns, stats.received,
                                            stats.dropped, stats.if_dropped,
                                            stats.transport_dropped))

    def publish(self, slot: int, n: int) -> None:
        """Hand `n` records in `slot` to the aggregator."""
        self.conn.send_bytes(_BATCH.pack(MSG_BATCH, slot, n))
        self._in_flight += 1
        self._next = (slot + 1) % self.ring.slots

    def ready(self, description: dict) -> None:
        """Tell the aggregator the source is open, and what it is."""
        self.conn.send_bytes(bytes([MSG_READY]) + json.dumps(description).encode())

    def finish(self, done: Done) -> None:
        """Tell the aggregator this source is over."""
        self.conn.send_bytes(bytes([MSG_DONE]) + json.dumps(done.__dict__).encode())


class Consumer:
    """The aggregator end of one capture process's ring."""

    def __init__(self, ring: Ring, conn):
        self.ring = ring
        self.conn = conn

    def receive(self):
        """Block for the next message: (slot, n) for a batch, a Progress, a Done, or
        a dict (READY).

        Raises TransportError if the capture process died without a word.
        """
        try:
            msg = self.conn.recv_bytes()
        except (EOFError, OSError) as err:
            raise TransportError("capture process ended without finishing its source") from err
        if msg[0] == MSG_BATCH:
            _, slot, n = _BATCH.unpack(msg)
            return slot, n
        if msg[0] == MSG_DONE:
            return Done(**json.loads(msg[1:]))
        if msg[0] == MSG_READY:
            return json.loads(msg[1:])
        if msg[0] == MSG_PROGRESS:
            _, watermark, received, dropped, if_dropped, transport_dropped = _PROGRESS.unpack(msg)
            return Progress(watermark, {"received": received, "dropped": dropped,
                                        "if_dropped": if_dropped,
                                        "transport_dropped": transport_dropped})
        raise TransportError(f"unknown message type {msg[0]} from a capture process")

    def release(self, slot: int) -> None:
        """Give a consumed slot back to its capture process."""
        try:
            self.conn.send_bytes(_FREE.pack(slot))
        except (BrokenPipeError, OSError):
            pass   # the producer is gone; its remaining batches are still ours to read
