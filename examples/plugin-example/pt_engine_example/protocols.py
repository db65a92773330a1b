"""`--analyser ip_protocols`: packets and bytes per IP protocol number.

Counts every frame by the record's ``proto`` (0 when the frame has no IP
header), in integers, so that it merges exactly whatever the number of
capture processes.
"""
from __future__ import annotations

import numpy as np

from pt_engine.analysers import Analyser, AnalyserContext


class IpProtocols(Analyser):
    name = "ip_protocols"
    fields = ("ip_protocols",)

    def __init__(self, ctx: AnalyserContext):
        super().__init__(ctx)
        self._window = np.zeros((256, 2), dtype=np.uint64)
        self._total = np.zeros((256, 2), dtype=np.uint64)

    def consume(self, records, start: int, stop: int, group: int) -> None:
        batch = records[start:stop]
        protos = batch["proto"]
        self._window[:, 0] += np.bincount(protos, minlength=256).astype(np.uint64)
        # A batch's bytes stay far below 2**53: the float weights are exact.
        self._window[:, 1] += np.bincount(protos, weights=batch["wire_len"],
                                          minlength=256).astype(np.uint64)

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
