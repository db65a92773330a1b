"""The capture process's part of the analysers: records -> per-window deltas.

Each capture process parses its frames into a private buffer of records
(ext/records.pxd) and hands them here. ``CaptureCounting`` cuts them into
windows of packet time (counting-rules section 6) and counts them:

* the per-port counters natively, in the same pass as the cut
  (``PortWindows``: ext/windows.pyx, or its twin in pt_engine._reference);
* the counters of other analysers (pt_engine.analysers: ``counter``) over
  the same slices: as a numpy view of the buffer, or the buffer itself for
  a counter that asks for it (``raw_records``: a native counter, which then
  needs no numpy in the capture process).

A window closes when a record of a later window arrives (files), when the
capture process's watermark passes its end (live: nothing older is still
to come, save late packets), or at the end. Its ``WindowDelta`` is what
travels to the aggregator (pt_engine.transport), never the records.

A source's windows only move forward. A record older than the open window
is counted in it and reported in ``late_packets``: with several files, each
is judged against its own open window, which is what the aggregator's merge
in time order gave before counting moved here.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .backend import core

_HEAD = struct.Struct("<4Q")      # start_ns, end_ns, records, late: PortWindows' header


@dataclass
class WindowDelta:
    """One closed window of one capture process."""

    ports: bytes                  # PortWindows' delta (its header says which window)
    extra: dict = field(default_factory=dict)   # analyser name -> its counter's delta

    def _head(index: int):    # noqa: N805 -- a property maker, used in the class body
        return property(lambda self: _HEAD.unpack_from(self.ports)[index])

    start_ns = _head(0)
    end_ns = _head(1)
    records = _head(2)           # packets in the window
    late = _head(3)              # of them, older than the window
    del _head


class CaptureCounting:
    """A capture process's windows: feed() it buffers of records, take the deltas."""

    def __init__(self, interval_ns: int, counters: dict | None = None):
        self._windows = core().PortWindows(interval_ns)
        self._counters = counters or {}     # analyser name -> Counter
        # (counter, whether it takes the raw buffer rather than a numpy view)
        self._feeds = [(c, bool(getattr(c, "raw_records", False)))
                       for c in self._counters.values()]
        self._view = None

    @classmethod
    def for_analysers(cls, ctx, names: tuple[str, ...]) -> CaptureCounting:
        """The counting of a run's analysers (`names` as given to analysers.create;
        only those with a counter run here; loading them may import numpy)."""
        counters = {}
        for name in names:
            if name == "ports":
                continue        # its counter is PortWindows, the windowing itself
            from . import plugins
            klass = plugins.load("analysers", name)
            if klass.counter is not None:
                counters[name] = klass.counter(ctx)
        return cls(ctx.interval_ns, counters)

    @property
    def frontier_ns(self) -> int | None:
        """Start of the open window: no later delta is for an earlier window
        (None before the first record or watermark)."""
        return self._windows.start_ns

    def feed(self, buf, n: int) -> list[WindowDelta]:
        """Count records buf[0:n] (a writable buffer of whole records); the
        windows they closed."""
        closed = []
        pos = 0
        windows = self._windows
        while pos < n:
            cut = windows.count(buf, pos, n)
            if cut > pos:
                for counter, raw in self._feeds:
                    counter.consume(buf if raw else self._records(buf), pos, cut)
            pos = cut
            if cut < n:
                delta = self._delta(windows.advance(windows.next_ns))
                if delta is not None:
                    closed.append(delta)
        return closed

    def advance(self, watermark_ns: int) -> WindowDelta | None:
        """Live: nothing older than the watermark is still to come on time."""
        return self._delta(self._windows.advance(watermark_ns))

    def finish(self) -> WindowDelta | None:
        """The end: close the open window."""
        return self._delta(self._windows.finish())

    def _delta(self, ports) -> WindowDelta | None:
        if ports is None:
            return None
        return WindowDelta(ports, {name: c.take() for name, c in self._counters.items()})

    def _records(self, buf):
        if self._view is None or self._view[0] is not buf:
            import numpy as np
            from .records import RECORD_DTYPE
            self._view = (buf, np.frombuffer(buf, dtype=RECORD_DTYPE))
        return self._view[1]
