"""Analysers: what the aggregator computes from the records of each window.

The aggregator (pt_engine.aggregate) merges the capture processes' record
batches in time order and cuts windows; it hands every record of the open
window to each analyser, tells it when the window closes, and puts what the
analyser returns into the ``window`` record, and its cumulative part into
``summary`` and ``snapshot`` (built by pt_engine.stream).

An analyser:

* is created with an ``AnalyserContext`` (the counter groups, window length,
  the --ports selection, live or file run);
* ``consume(records, start, stop, group)``: records ``[start, stop)`` of a
  batch (``RECORD_DTYPE``, in shared memory: read them, keep no view of them
  after returning) belong to the open window and come from a capture process
  of counter group `group`;
* ``window(start_ns, end_ns)``: the window ``[start_ns, end_ns)`` closed:
  return its fields for the window record (keys it declares in ``fields``)
  and fold the window into the run's totals;
* ``summary()``: the cumulative fields of the closed windows.

Results must merge exactly whatever the number of capture processes and the
order their batches arrive in within a window: count in integers, never
floats (the contract test checks both). Work that must scale with the
capture processes will get a native part running there (issue "Faster than
libpcap itself"); this interface is its aggregator side.

A new analyser is one module with one class and one line in ``BUILTIN``, or
a plugin: an entry point in the group ``pt_engine.analysers`` naming the
class (docs/architecture.md). Built-in ``ports`` always runs; others run
when named with ``--analyser NAME`` (or ``analysers = [...]`` in the config
file).
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


class Analyser:
    """Base of the analysers; see the module docstring for the contract."""

    name: ClassVar[str] = ""
    fields: ClassVar[tuple[str, ...]] = ()     # keys it adds to window and summary records

    def __init__(self, ctx: AnalyserContext):
        self.ctx = ctx

    def consume(self, records: numpy.ndarray, start: int, stop: int, group: int) -> None:
        """Take records[start:stop] of the open window (counter group `group`)."""
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
