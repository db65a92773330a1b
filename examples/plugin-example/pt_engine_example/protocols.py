"""`--analyser ip_protocols`: packets and bytes per IP protocol number.

Counts every frame by the record's ``proto`` (0 when the frame has no IP
header), in integers, so that it merges exactly whatever the number of
capture processes. Two parts, as every analyser: ``ProtocolCounter`` runs
in each capture process, next to the records, and hands over a small
(256, 2) table per window; ``IpProtocols`` sums those tables in the
aggregator.
"""
from __future__ import annotations

import numpy as np

from pt_engine.analysers import Analyser, AnalyserContext, Counter


class ProtocolCounter(Counter):
    """The capture side: this process's packets and bytes per protocol."""

    def __init__(self, ctx: AnalyserContext):
        super().__init__(ctx)
        self._table = np.zeros((256, 2), dtype=np.uint64)

    def consume(self, records, start: int, stop: int) -> None:
        batch = records[start:stop]
        protos = batch["proto"]
        self._table[:, 0] += np.bincount(protos, minlength=256).astype(np.uint64)
        # np.add.at keeps the byte sums in exact uint64 arithmetic.
        np.add.at(self._table[:, 1], protos, batch["wire_len"].astype(np.uint64))

    def take(self):
        table, self._table = self._table, np.zeros((256, 2), dtype=np.uint64)
        return table


class IpProtocols(Analyser):
    name = "ip_protocols"
    fields = ("ip_protocols",)
    counter = ProtocolCounter

    def __init__(self, ctx: AnalyserContext):
        super().__init__(ctx)
        self._window = np.zeros((256, 2), dtype=np.uint64)
        self._total = np.zeros((256, 2), dtype=np.uint64)

    def merge(self, delta, group: int) -> None:
        self._window += delta

    def window(self, start_ns: int, end_ns: int) -> dict:
        fields = {"ip_protocols": _rows(self._window)}
        self._total += self._window
        self._window[:] = 0
        return fields

    def summary(self) -> dict:
        return {"ip_protocols": _rows(self._total)}


def _rows(table: np.ndarray) -> list[list[int]]:
    used = np.flatnonzero(table[:, 0])
    return [[int(p), int(table[p, 0]), int(table[p, 1])] for p in used]
