"""A userspace link emulator between network namespaces, for tests that need
known impairment (this kernel has no netem).

    client ns            middle ns                 server ns
    ┌────────┐ veth ┌──────────────────────┐ veth ┌────────┐
    │ c0     ├──────┤ ma ── emulator ── mb ├──────┤ s0     │
    └────────┘      └──────────────────────┘      └────────┘

The two ends share one subnet; the middle namespace has no addresses and
forwards whole Ethernet frames between its two veths with AF_PACKET sockets
(this file, run as a program there). IPv4 frames are delayed by D ± J
(uniform), dropped with probability P and sent twice with probability U
(the copy right after the frame), each direction on its own seeded
generator; everything else (ARP) passes at once, so that the hosts find each
other whatever the impairment. Offloads (TSO, GSO, GRO, transmit checksums)
are off on every veth: a frame is what the wire would carry, with its
checksum computed, so that the emulator can send it again as it is.

    with LinkBed(delay_ms=20, jitter_ms=0, loss=0.0, seed=1) as bed:
        bed.exec(bed.server_ns, [...])      # a Popen in a namespace
        bed.stats()                        # what the emulator forwarded and dropped

Run as a program (in the middle namespace):
    python linkemu.py A B DELAY_NS JITTER_NS LOSS SEED STATS_PATH [DUPLICATE]
It writes its counters as JSON to STATS_PATH on SIGUSR1 and when it ends
(SIGTERM).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

try:
    from . import netns
except ImportError:             # run as a program, or imported as a top-level module
    import netns

_HERE = os.path.abspath(__file__)


class LinkBed(netns.NamespaceBed):
    """Three namespaces joined through the emulator; see the module docstring."""

    def __init__(self, delay_ms: float = 0.0, jitter_ms: float = 0.0, loss: float = 0.0,
                 seed: int = 1, duplicate: float = 0.0):
        tag = uuid.uuid4().hex[:6]
        self.client_ns, self.middle_ns, self.server_ns = (f"pte{tag}{x}" for x in "cms")
        self.client_if, self.server_if = f"c0{tag}", f"s0{tag}"
        self._ma, self._mb = f"ma{tag}", f"mb{tag}"
        net = int(tag[:2], 16)
        self.prefix = f"10.231.{net}"
        self.client_addr, self.server_addr = f"{self.prefix}.1", f"{self.prefix}.2"
        self.delay_ns = int(delay_ms * 1e6)
        self.jitter_ns = int(jitter_ms * 1e6)
        self.loss = loss
        self.duplicate = duplicate
        self.seed = seed
        self._stats_path = f"/tmp/linkemu-{tag}.json"
        self._emulator: subprocess.Popen | None = None
        self.namespaces = (self.client_ns, self.middle_ns, self.server_ns)

    def _build(self) -> None:
        run = netns.run
        for end, mid, ns in ((self.client_if, self._ma, self.client_ns),
                             (self.server_if, self._mb, self.server_ns)):
            run("ip", "link", "add", end, "netns", ns, "type", "veth",
                "peer", "name", mid, "netns", self.middle_ns)
        for ns, dev in ((self.client_ns, self.client_if), (self.server_ns, self.server_if),
                        (self.middle_ns, self._ma), (self.middle_ns, self._mb)):
            run("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")
            netns.set_offloads(dev, False, ns, tx_checksum=True)
            if ns == self.middle_ns:
                run("ip", "-n", ns, "link", "set", dev, "promisc", "on")
            run("ip", "-n", ns, "link", "set", dev, "up")
        run("ip", "-n", self.client_ns, "addr", "add", f"{self.client_addr}/24",
            "dev", self.client_if)
        run("ip", "-n", self.server_ns, "addr", "add", f"{self.server_addr}/24",
            "dev", self.server_if)
        self._emulator = subprocess.Popen(
            ["ip", "netns", "exec", self.middle_ns, sys.executable, _HERE, self._ma, self._mb,
             str(self.delay_ns), str(self.jitter_ns), repr(self.loss), str(self.seed),
             self._stats_path, repr(self.duplicate)], stdout=subprocess.DEVNULL)
        self._wait_stats()              # the emulator is up once it has written them

    def exec(self, ns: str, argv: list[str], **popen_kw) -> subprocess.Popen:
        """Start argv in namespace `ns`."""
        return subprocess.Popen(["ip", "netns", "exec", ns, *argv], **popen_kw)

    def stats(self) -> dict:
        """The emulator's counters now: per direction ("a_to_b" is client to
        server), frames forwarded, frames dropped, and of them TCP frames with
        payload, frames delayed and of them sent twice."""
        os.unlink(self._stats_path)
        self._emulator.send_signal(signal.SIGUSR1)
        return self._wait_stats()

    def _wait_stats(self) -> dict:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._emulator.poll() is not None:
                raise RuntimeError(f"link emulator exited with {self._emulator.returncode}")
            try:
                with open(self._stats_path) as fh:
                    return json.load(fh)
            except (FileNotFoundError, json.JSONDecodeError):
                time.sleep(0.02)
        raise RuntimeError("link emulator gave no counters within 10 s")

    def _teardown(self) -> None:
        if self._emulator is not None and self._emulator.poll() is None:
            self._emulator.terminate()
            try:
                self._emulator.wait(5)
            except subprocess.TimeoutExpired:
                self._emulator.kill()
                self._emulator.wait()
        try:
            os.unlink(self._stats_path)
        except FileNotFoundError:
            pass


# --- the emulator (runs in the middle namespace) ------------------------------------------

def _tcp_payload(frame: bytes) -> bool:
    """An IPv4 TCP frame with payload (untagged Ethernet)."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:
        return False
    ihl = (frame[14] & 0x0F) * 4
    total = int.from_bytes(frame[16:18], "big")
    if len(frame) < 14 + ihl + 13:
        return False
    doff = (frame[14 + ihl + 12] >> 4) * 4
    return total - ihl - doff > 0


def emulate(a: str, b: str, delay_ns: int, jitter_ns: int, loss: float, seed: int,
            stats_path: str, duplicate: float = 0.0) -> None:
    import heapq
    import random
    import select
    import socket

    socks = []
    for dev in (a, b):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.bind((dev, 0))
        s.setblocking(False)
        socks.append(s)
    names = ("a_to_b", "b_to_a")
    rngs = [random.Random(seed * 2 + i) for i in range(2)]
    stats = {n: {"forwarded": 0, "dropped": 0, "dropped_data": 0, "delayed": 0,
                 "duplicated": 0} for n in names}
    queue: list = []            # (due_ns, order, out socket index, frame)
    order = 0
    state = {"dump": True, "stop": False}

    def dump() -> None:
        tmp = stats_path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(stats, fh)
        os.replace(tmp, stats_path)

    signal.signal(signal.SIGUSR1, lambda *_: state.__setitem__("dump", True))
    signal.signal(signal.SIGTERM, lambda *_: state.__setitem__("stop", True))
    outgoing = socket.PACKET_OUTGOING
    while not state["stop"]:
        if state["dump"]:
            state["dump"] = False
            dump()
        now = time.monotonic_ns()
        while queue and queue[0][0] <= now:
            _, _, out, frame = heapq.heappop(queue)
            try:
                socks[out].send(frame)
            except OSError:
                pass            # a full queue on the veth: lost, as on a wire
            stats[names[1 - out]]["forwarded"] += 1
        timeout = max(0.0, (queue[0][0] - now) / 1e9) if queue else 0.2
        try:
            ready, _, _ = select.select(socks, [], [], timeout)
        except InterruptedError:
            continue
        for s in ready:
            i = socks.index(s)
            d = stats[names[i]]
            while True:
                try:
                    frame, addr = s.recvfrom(65536)
                except BlockingIOError:
                    break
                if addr[2] == outgoing:
                    continue    # our own sends, seen again on that device
                if frame[12:14] != b"\x08\x00":
                    socks[1 - i].send(frame)
                    d["forwarded"] += 1
                    continue
                rng = rngs[i]
                if loss and rng.random() < loss:
                    d["dropped"] += 1
                    d["dropped_data"] += _tcp_payload(frame)
                    continue
                wait = delay_ns + (rng.randint(-jitter_ns, jitter_ns) if jitter_ns else 0)
                d["delayed"] += 1
                due = time.monotonic_ns() + max(0, wait)
                for _copy in range(2 if duplicate and rng.random() < duplicate else 1):
                    d["duplicated"] += _copy
                    order += 1
                    heapq.heappush(queue, (due, order, 1 - i, frame))
    dump()


if __name__ == "__main__":
    a, b, delay, jitter, loss, seed, path = sys.argv[1:8]
    emulate(a, b, int(delay), int(jitter), float(loss), int(seed), path,
            float(sys.argv[8]) if len(sys.argv) > 8 else 0.0)
