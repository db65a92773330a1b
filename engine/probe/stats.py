"""Per-target statistics of `ping`: windows of samples into the fields of a ``ping`` record.

A window holds the probes of its rounds; a probe is answered (an RTT in ns),
lost (no answer within ``--timeout``), or still pending. Figures, all integer
ns except the ratio:

* ``loss_ratio`` = (sent - received) / sent; a reply after the timeout is
  ``late`` (counted in the window being filled when it comes, never a
  sample), a second reply to one probe a ``duplicate``;
* RTT min / avg (integer division) / max, and p50 / p95 by nearest rank
  (the smallest sample with at least that share of samples at or below it);
* ``jitter_ns``: the mean absolute difference of consecutive RTTs, in probe
  order (the first sample of a window is paired with the last one before
  it, so a window of one reply has a jitter as soon as there was an earlier
  one); ``jitter_rfc3550_ns``: RFC 3550 section 6.4.1's smoothed estimate,
  J += (|D| - J) / 16, with D the same difference, carried over the run.

A window without replies has null RTT and jitter fields.
"""
from __future__ import annotations

import math


def nearest_rank(ordered: list[int], share: float) -> int:
    """The nearest-rank percentile of a sorted, non-empty list (share in (0, 1])."""
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


class Sample:
    """The RTT figures of a set of samples (in probe order), with their jitter."""

    @staticmethod
    def fields(rtts: list[int], diffs: list[int]) -> dict:
        if not rtts:
            return {"rtt_min_ns": None, "rtt_avg_ns": None, "rtt_max_ns": None,
                    "rtt_p50_ns": None, "rtt_p95_ns": None, "jitter_ns": None}
        ordered = sorted(rtts)
        return {"rtt_min_ns": ordered[0], "rtt_avg_ns": sum(rtts) // len(rtts),
                "rtt_max_ns": ordered[-1], "rtt_p50_ns": nearest_rank(ordered, 0.5),
                "rtt_p95_ns": nearest_rank(ordered, 0.95),
                "jitter_ns": sum(diffs) // len(diffs) if diffs else 0}


class Series:
    """One target's (and port's) run: windows folded in order, and the totals."""

    def __init__(self):
        self._prev: int | None = None       # the last RTT, for the next difference
        self._rfc = 0.0
        self._late = 0                      # late replies since the last window
        self._dups = 0
        self.sent = self.received = self.late = self.duplicates = 0
        self.rtts: list[int] = []
        self.diffs: list[int] = []

    def late_reply(self) -> None:
        self._late += 1
        self.late += 1

    def duplicate(self) -> None:
        self._dups += 1
        self.duplicates += 1

    def window(self, outcomes: list[int | None]) -> dict:
        """The counts and figures of one window: `outcomes` are its probes in
        order, an RTT in ns or None (lost)."""
        rtts = [rtt for rtt in outcomes if rtt is not None]
        diffs = []
        for rtt in rtts:
            if self._prev is not None:
                diff = abs(rtt - self._prev)
                diffs.append(diff)
                self._rfc += (diff - self._rfc) / 16
            self._prev = rtt
        sent, received = len(outcomes), len(rtts)
        self.sent += sent
        self.received += received
        self.rtts += rtts
        self.diffs += diffs
        late, dups, self._late, self._dups = self._late, self._dups, 0, 0
        return {**_counts(sent, received, late, dups), **Sample.fields(rtts, diffs),
                "jitter_rfc3550_ns": self._rfc_ns() if rtts else None}

    def totals(self) -> dict:
        """The counts and figures of the whole run."""
        return {**_counts(self.sent, self.received, self.late, self.duplicates),
                **Sample.fields(self.rtts, self.diffs),
                "jitter_rfc3550_ns": self._rfc_ns() if self.rtts else None}

    def _rfc_ns(self) -> int:
        return int(round(self._rfc))


def _counts(sent: int, received: int, late: int, duplicates: int) -> dict:
    return {"sent": sent, "received": received, "late": late, "duplicates": duplicates,
            "loss_ratio": (sent - received) / sent if sent else 0.0}
