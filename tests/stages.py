"""Stages for the contract tests: sinks that fail or block on purpose, and a
synthetic record stream."""
from __future__ import annotations

import threading

import numpy as np

from pt_engine.errors import SinkError
from pt_engine.records import RECORD_DTYPE
from pt_engine.sinks import ThreadedSink

T0 = 1_700_000_000 * 10**9


class FailingSink(ThreadedSink):
    """Takes `fail_after` records (default 2), then every write fails."""

    on_failure = "continue"
    fail_after = 2

    def __init__(self, dest, ctx):
        self.got: list[bytes] = []
        super().__init__(dest, ctx)

    def write_bytes(self, data: bytes, kind: str) -> None:
        if len(self.got) >= self.fail_after:
            raise SinkError(f"{self.name}: the test's sink failed on purpose")
        self.got.append(data)


class StoppingSink(FailingSink):
    """The same, with the policy that stops the run."""

    on_failure = "stop"


class BlockingSink(ThreadedSink):
    """Every write waits until `release` is set (a reader that stopped reading)."""

    on_failure = "continue"
    release = threading.Event()
    instances: list = []

    def __init__(self, dest, ctx):
        self.got: list[bytes] = []
        BlockingSink.instances.append(self)
        super().__init__(dest, ctx)

    def write_bytes(self, data: bytes, kind: str) -> None:
        self.release.wait()
        self.got.append(data)


def synthetic_records(n: int, seed: int = 1) -> np.ndarray:
    """n records over 3 s: TCP and UDP with random ports, some of other classes,
    a few late (timestamps that step back)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(n, dtype=RECORD_DTYPE)
    out["ts_ns"] = np.sort(T0 + rng.integers(0, 3 * 10**9, n)).astype(np.uint64)
    late = rng.random(n) < 0.02
    out["ts_ns"][late] -= np.uint64(10**9 // 3)
    out["wire_len"] = rng.integers(60, 1515, n)
    cls = rng.choice([0, 0, 0, 0, 1, 2, 3], n)
    out["pkt_class"] = cls
    out["proto"] = np.where(cls == 0, rng.choice([6, 17], n), np.where(cls == 1, 1, 0))
    ported = cls == 0
    out["src_port"] = np.where(ported, rng.integers(0, 65536, n), 0)
    out["dst_port"] = np.where(ported, rng.choice([22, 53, 80, 443, 8080], n), 0)
    return out
