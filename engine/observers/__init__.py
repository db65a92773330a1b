"""Observers: code that reads the stream's records as they are written and may
add records of its own (alerts are the first).

An observer:

* is made by ``create(options)`` (a classmethod) from the run's options
  (pt_engine.options), returning None when it has nothing to do in this
  run (no alert rules, say);
* ``observe(record)``: sees every record the aggregator writes, in order
  (hello first); returns the records to write right after it (built with
  pt_engine.stream), which the other observers do not see again;
* ``close()``: the stream has ended (after the summary).

``observe`` runs in the aggregator's loop: it must not block. Anything slow
(a hook command, a network call) belongs in a thread of the observer's own,
as pt_engine.alerts.Hooks does.

A new observer is one module and one line in ``BUILTIN``, or a plugin: an
entry point in the group ``pt_engine.observers``. Built-in observers run
whenever they are configured; plugins run when named with ``--observer
NAME`` (or ``observers = [...]`` in the config file).
"""
from __future__ import annotations

from typing import Any

BUILTIN = {
    "alerts": "pt_engine.alerts:Alerts",
}


class Observer:
    """Base of the observers; see the module docstring for the contract."""

    name = ""

    @classmethod
    def create(cls, options: Any) -> "Observer | None":
        """The observer for a run with `options`, or None if it has nothing to do."""
        return cls()

    def observe(self, record: dict) -> list[dict]:
        """The records `record` causes, to be written after it."""
        return []

    def close(self) -> None:
        """The stream has ended."""


def create(names: tuple[str, ...], options: Any) -> list[Observer]:
    """The run's observers: every built-in one that `options` configures, then the
    plugins named in `names`. Raises PluginError for one that cannot be loaded."""
    from ..plugins import load
    observers = []
    for name in dict.fromkeys((*BUILTIN, *names)):
        observer = load("observers", name).create(options)
        if observer is not None:
            observers.append(observer)
    return observers
