"""Analysers: what is computed from the records of each window, in two parts.

The records never leave the capture process that parsed them. There, the
windowing (pt_engine.counting) cuts them into windows of packet time and
each analyser's **counter** (its capture-side part) sees the records of the
open window; when the window closes, each counter hands over a **delta**.
The aggregator (pt_engine.aggregate) collects the deltas of every capture
process for a window and, once no capture process can add to it, gives
them to the analyser's **aggregator side**, which merges them, returns the
window's fields, and folds them into the run's totals.

An analyser class (the aggregator side):

* is created with an ``AnalyserContext`` (the counter groups, window length,
  the --ports selection, live or file run);
* ``counter``: what makes its capture-side part (below): a class, or a
  function of the context (tcp_quality picks its backend's), called in
  every capture process with the same context; or None;
* ``merge(delta, group)``: one capture process's delta for the window about
  to close; the process belongs to counter group `group`;
* ``window(start_ns, end_ns)``: the window ``[start_ns, end_ns)`` closed:
  return its fields for the window record (keys it declares in ``fields``)
  and fold it into the run's totals;
* ``summary()``: the cumulative fields of the closed windows.

A counter (the capture-side part, in the capture process, after the fork):

* ``consume(records, start, stop)``: records ``[start, stop)`` of a
  ``RECORD_DTYPE`` array belong to the open window (keep no view of them
  after returning: the buffer is reused);
* ``take()``: the open window closed: return its delta (anything pickle
  can carry, None for nothing) and start afresh;
* ``raw_records`` (a class attribute, false by default): when true,
  ``consume`` gets the record buffer itself instead of a numpy view: a
  writable buffer of whole 72-byte records (ext/records.pxd), records
  ``[start, stop)`` at byte offsets ``72 * start`` on. A native counter
  reads it directly, so the capture process need not import numpy.

Results must merge exactly whatever the number of capture processes and how
their records were split: count in integers, never floats (the contract
test checks both). The per-port counters are the exception that proves the
rule: their counter is native and is the windowing itself (PortWindows in
ext/windows.pyx), and their delta is its byte layout.

A new analyser is one module with one class and one line in ``BUILTIN``, or
a plugin: an entry point in the group ``pt_engine.analysers`` naming the
class (docs/architecture.md). Built-in ``ports`` always runs; others run
when named with ``--analyser NAME`` (or ``analysers = [...]`` in the config
file), except ``tcp_quality``, which runs unless ``--no-tcp-quality``
(``tcp_quality = false``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import numpy

    from ..config import PortSpec

# name -> "module:class"; the per-port counters come first and always run.
BUILTIN = {
    "ports": "pt_engine.analysers.ports:PortCounters",
    # On by default in read, run and record (the pipeline adds it unless
    # --no-tcp-quality); native in the capture processes.
    "tcp_quality": "pt_engine.analysers.tcp_quality:TcpQuality",
    # --analyser talkers (off by default: addresses are personal data; by
    # --addresses, pt_engine.addresses); native in capture processes (ext/talkers.pyx).
    "talkers": "pt_engine.analysers.talkers:Talkers",
}
ALWAYS = ("ports",)
# Keys of window and summary records that belong to the windowing itself.
RESERVED_FIELDS = frozenset({"type", "start_ns", "end_ns", "late_packets", "sources",
                             "windows", "interrupted", "outputs"})


@dataclass(frozen=True)
class AnalyserContext:
    """What an analyser knows of the run."""

    groups: tuple[str, ...]     # counter groups: interface names, or ("all",) for files
    interval_ns: int
    ports: PortSpec | None      # --ports: rows of other ports are left out of the stream
    live: bool
    addresses: str = "pseudonymise"   # --addresses: how addresses leave the engine
    state_dir: str | None = None      # where the pseudonymisation key lives (None: default)


class Counter:
    """Base of an analyser's capture-side part; see the module docstring."""

    raw_records: ClassVar[bool] = False     # consume() gets the buffer, not a numpy view

    def __init__(self, ctx: AnalyserContext):
        self.ctx = ctx

    def consume(self, records: numpy.ndarray, start: int, stop: int) -> None:
        """Take records[start:stop] of the open window."""
        raise NotImplementedError

    def take(self):
        """The open window's delta (None if it holds nothing); start the next."""
        raise NotImplementedError


class Analyser:
    """Base of the analysers' aggregator side; see the module docstring."""

    name: ClassVar[str] = ""
    fields: ClassVar[tuple[str, ...]] = ()     # keys it adds to window and summary records
    counter: ClassVar[type[Counter] | None] = None   # its capture-side part

    def __init__(self, ctx: AnalyserContext):
        self.ctx = ctx

    def merge(self, delta, group: int) -> None:
        """One capture process's delta for the window about to close."""
        raise NotImplementedError

    def window(self, start_ns: int, end_ns: int) -> dict:
        """The closed window's fields; fold it into the totals."""
        raise NotImplementedError

    def summary(self) -> dict:
        """Cumulative fields of the closed windows (summary and snapshot)."""
        raise NotImplementedError


def create(names: tuple[str, ...], ctx: AnalyserContext) -> list[Analyser]:
    """The analysers of a run: the ALWAYS ones, then `names` (built-in or plugins),
    each once. Raises PluginError for an unknown one, one that fails to load,
    or one whose fields clash with another's or the windowing's."""
    from ..errors import PluginError
    from ..plugins import load
    analysers: list[Analyser] = []
    taken = dict.fromkeys(RESERVED_FIELDS, "the windowing")
    for name in dict.fromkeys((*ALWAYS, *names)):
        cls = load("analysers", name)
        for key in cls.fields:
            if key in taken:
                raise PluginError(f"analyser {name!r} writes the field {key!r}, which "
                                  f"{taken[key]} writes already")
            taken[key] = f"analyser {name!r}"
        analysers.append(cls(ctx))
    return analysers
