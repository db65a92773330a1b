"""The probe loop: one thread, one epoll, every probe through one token bucket.

A ``Schedule`` hands out probes (``Probe``: target, port or None for ICMP,
attempt) when they are due; the loop sends each as soon as it is due, a
token is in the bucket (pt_engine.probe.ratelimit) and fewer than
``concurrency`` probes are in flight. A TCP probe is a connect, or with
``syn`` a SYN from a raw socket (pt_engine.probe.syn). A probe ends in one of:

* ``reply``: an ICMP echo reply, or a TCP handshake completed (SYN/ACK),
* ``refused``: TCP reset (ECONNREFUSED, or the reset to a SYN): the host
  answered, the port is closed,
* ``unreachable``: the kernel reported the destination unreachable (ICMP
  unreachable, no route, no neighbour, a local filter),
* ``timeout``: nothing within the timeout.

Each outcome goes to ``schedule.done(probe, outcome, rtt_ns, end_ns)``. An
answer after the timeout is given to ``schedule.late(probe)``, a second
answer to one ICMP probe to ``schedule.duplicate(probe)``; neither is a
sample. A timed-out TCP probe keeps its socket one more timeout to see a
late handshake, then closes.

The connects due in one turn of the loop are made as one batch by the
connector (pt_engine.probe.connect: native, or its Python twin), and its
answers collected with one call per turn.

Times are ``time.monotonic_ns()`` (CLOCK_MONOTONIC, in C for the native
connector), read right before the send (or connect) call and right after
the answer's recvfrom (or SO_ERROR) returns.
"""
from __future__ import annotations

import errno
import resource
import select
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from ..errors import ProbeError
from .connect import connector
from .icmp import IcmpSocket
from .ratelimit import TokenBucket
from .syn import ATTEMPT_MASK, SynSocket
from .targets import split_zone

clock = time.monotonic_ns
_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES, errno.EPERM,
                errno.EHOSTDOWN, errno.ENETDOWN, errno.ETIMEDOUT}
_RECENT = 4096        # answered or expired ICMP probes remembered per target


@dataclass(eq=False)
class Probe:
    """One probe: to `target` (index) at `address`, TCP `port` or ICMP (None)."""

    target: int
    address: str
    family: int
    port: int | None = None
    attempt: int = 0
    tag: object = None          # the schedule's own (round, window, ...)
    seq: int = 0
    key: object = None          # what its answer is matched by (ICMP, SYN)
    sent_ns: int = 0
    fd: int = field(default=-1, repr=False)     # a TCP connect's socket, while open
    state: str = "new"          # new, flying, done, expired


class Schedule:
    """What to probe and when; the loop asks and reports (see the module docstring)."""

    def next(self, now: int) -> Probe | int | None:
        """A probe due now, or the monotonic time the next one is due, or None
        (nothing more)."""
        raise NotImplementedError

    def done(self, probe: Probe, outcome: str, rtt_ns: int | None, end_ns: int) -> None:
        raise NotImplementedError

    def late(self, probe: Probe) -> None:
        """An answer came after the probe's timeout."""

    def duplicate(self, probe: Probe) -> None:
        """A second answer to one probe."""

    def idle(self, now: int) -> None:
        """Called on each turn of the loop (records that are due get written)."""


def check_concurrency(concurrency: int) -> None:
    """Refuse a concurrency the file-descriptor limit cannot take (one socket each)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = concurrency * 2 + 64        # timed-out TCP probes keep a socket a while
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard == resource.RLIM_INFINITY or hard >= need:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
        else:
            raise ProbeError(f"--concurrency {concurrency} needs {need} file descriptors; "
                             f"the limit is {hard} (ulimit -n)")


class Loop:
    """Runs a Schedule to its end; `rate` probes/s (0: no limit), at most
    `concurrency` in flight, each given `timeout_ns`."""

    def __init__(self, schedule: Schedule, rate: float, concurrency: int, timeout_ns: int,
                 size: int, syn: bool = False):
        check_concurrency(concurrency)
        self.schedule = schedule
        self.bucket = TokenBucket(rate)
        self.concurrency = concurrency
        self.timeout_ns = timeout_ns
        self.size = size
        self.syn = syn
        self.epoll = select.epoll()
        self.flying = 0
        self.stopping = False
        # (deadline, probe) in time order, as every probe has the one timeout: the
        # probes in flight, and the timed-out connects that wait for a late handshake
        self._flights: deque[tuple[int, Probe]] = deque()
        self._lingers: deque[tuple[int, Probe]] = deque()
        self._tcp: dict[int, Probe] = {}                 # fd -> probe
        self._batch: list[Probe] = []                    # TCP probes of this turn
        self._connector = None
        self._icmp: dict[int, IcmpSocket] = {}           # family -> socket
        self._icmp_fds: dict[int, IcmpSocket] = {}
        self._syn: dict[int, SynSocket] = {}             # family -> raw sockets
        self._syn_fds: dict[int, SynSocket] = {}
        self._seq: dict[int, int] = {}                   # target -> next sequence
        self._waiting: dict[tuple, Probe] = {}   # ICMP (address, seq), SYN (address, port)
        # the oldest forgotten first: an OrderedDict pops it in O(1) (a dict's
        # first key is found past every slot deleted before it)
        self._recent: OrderedDict[tuple, Probe] = OrderedDict()

    @property
    def methods(self) -> list[str]:
        return [s.method for s in self._icmp.values()]

    def open_icmp(self, family: int) -> IcmpSocket:
        """The ICMP socket of `family`, opened on first use (raises ProbeError)."""
        sock = self._icmp.get(family)
        if sock is None:
            sock = self._icmp[family] = IcmpSocket(family, self.size)
            self._icmp_fds[sock.fd] = sock
            self.epoll.register(sock.fd, select.EPOLLIN)
        return sock

    def open_syn(self, family: int) -> SynSocket:
        """The raw sockets of `family` for SYNs, opened on first use (raises ProbeError)."""
        sock = self._syn.get(family)
        if sock is None:
            sock = self._syn[family] = SynSocket(family)
            for fd in sock.fds:
                self._syn_fds[fd] = sock
                self.epoll.register(fd, select.EPOLLIN)
        return sock

    def stop(self) -> None:
        """Send nothing more; the probes in flight still get their answer or timeout."""
        self.stopping = True

    def run(self) -> None:
        pending: Probe | None = None
        try:
            while True:
                now = clock()
                self._expire(now)
                wait_until = None
                full = False            # stopped sending only for the concurrency
                while not self.stopping:
                    if self.flying >= self.concurrency:
                        full = True
                        break
                    if pending is None:
                        got = self.schedule.next(now)
                        if not isinstance(got, Probe):
                            wait_until = got
                            break
                        pending = got
                    if not self.bucket.take(now):
                        wait_until = now + self.bucket.wait_ns(now)
                        break
                    self._send(pending)
                    pending = None
                    now = clock()
                if self._batch:          # answers decided at once free their places
                    self._send_syns() if self.syn else self._connect()
                    now = clock()
                self.schedule.idle(now)
                room = full and self.flying < self.concurrency
                if self.flying == 0 and (self.stopping or (pending is None and wait_until
                                                           is None)):
                    if not self._tcp and not room:
                        return
                timer = self._next_timer()
                deadlines = [t for t in (wait_until, timer) if t is not None]
                if self.flying >= self.concurrency and timer is not None:
                    deadlines = [timer]
                timeout = 0.0 if room else max(0.0, (min(deadlines) - clock()) / 1e9) \
                    if deadlines else 1.0
                for fd, events in self.epoll.poll(timeout):
                    self._event(fd)
        finally:
            for probe in list(self._tcp.values()):
                self._close(probe)
            for sock in (*self._icmp.values(), *self._syn.values()):
                sock.close()
            if self._connector is not None:
                self._connector.close()
            self.epoll.close()

    # --- sending ---------------------------------------------------------------------
    def _send(self, probe: Probe) -> None:
        self.flying += 1
        probe.state = "flying"
        if probe.port is None:
            self._send_icmp(probe)
        else:
            self._batch.append(probe)        # TCP: sent as a batch (_send_syns, _connect)

    def _timer(self, probe: Probe, at: int) -> None:
        self._flights.append((at, probe))

    def _next_timer(self) -> int | None:
        heads = [q[0][0] for q in (self._flights, self._lingers) if q]
        return min(heads) if heads else None

    def _send_icmp(self, probe: Probe) -> None:
        sock = self.open_icmp(probe.family)
        seq = self._seq.get(probe.target, 0)
        self._seq[probe.target] = (seq + 1) & 0xFFFF
        probe.seq = seq
        sent_ns = clock()
        try:
            sock.send(probe.address, seq)
            code = 0
        except OSError as err:
            code = err.errno
        self._sent(probe, (probe.address, seq), sent_ns, code)

    def _send_syns(self) -> None:
        """Send the SYNs of this turn's batch, a batch per address family."""
        batch, self._batch = self._batch, []
        families: dict[int, list[Probe]] = {}
        for probe in batch:
            families.setdefault(probe.family, []).append(probe)
        for family, probes in families.items():
            sent = self.open_syn(family).send_batch(
                [(p.address, p.port, p.attempt) for p in probes], clock)
            for probe, (key, sent_ns, code) in zip(probes, sent):
                self._sent(probe, key, sent_ns, code)

    def _sent(self, probe: Probe, key: tuple, sent_ns: int, code: int) -> None:
        """An ICMP echo or a SYN went out (`code` 0) or could not (an errno); its
        answer is awaited under `key`."""
        probe.key = key
        probe.sent_ns = sent_ns
        self._recent.pop(key, None)
        if code:
            self._finish(probe, "unreachable" if code in _UNREACHABLE else "timeout",
                         None, clock())
            return
        self._waiting[key] = probe
        self._timer(probe, probe.sent_ns + self.timeout_ns)

    def _connect(self) -> None:
        """Make the connects of this turn's batch."""
        batch, self._batch = self._batch, []
        if self._connector is None:
            self._connector = connector()
            self.epoll.register(self._connector.fileno(), select.EPOLLIN)
        try:
            started = self._connector.start([(p.family, *_where(p.address, p.port))
                                             for p in batch])
        except OSError as err:
            raise ProbeError(f"cannot open a TCP socket: {err.strerror}") from None
        for probe, (fd, code, sent, end) in zip(batch, started):
            probe.sent_ns = sent
            if fd >= 0:
                probe.fd = fd
                self._tcp[fd] = probe
                self._timer(probe, sent + self.timeout_ns)
            else:
                self._finish(probe, _outcome(code), end - sent, end)

    # --- answers ---------------------------------------------------------------------
    def _event(self, fd: int) -> None:
        icmp = self._icmp_fds.get(fd)
        if icmp is not None:
            for address, seq, now in icmp.replies(clock):
                if ":" in address:
                    address = _normal6(address)
                self._answer((address, seq), "reply", now)
            return
        syn = self._syn_fds.get(fd)
        if syn is not None:
            for key, attempt, outcome, now in syn.answers(fd, clock):
                self._answer(key, outcome, now, attempt)
            return
        if self._connector is None or fd != self._connector.fileno():
            return
        for fd, code, end in self._connector.wait():
            probe = self._tcp.pop(fd)
            probe.fd = -1
            if probe.state == "expired":
                if code == 0 or code == errno.ECONNREFUSED:
                    self.schedule.late(probe)
                continue
            self._finish(probe, _outcome(code), end - probe.sent_ns, end)

    def _answer(self, key: tuple, outcome: str, now: int, attempt: int | None = None) -> None:
        """An ICMP reply or an answer to a SYN (of `attempt`, low bits) under `key`."""
        probe = self._waiting.get(key)
        if probe is not None:
            if attempt is not None and attempt != probe.attempt & ATTEMPT_MASK:
                self.schedule.late(probe)     # to an earlier attempt, timed out
                return
            del self._waiting[key]
            self._finish(probe, outcome, now - probe.sent_ns, now)
            self._remember(key, probe)
            return
        old = self._recent.get(key)
        if old is None:
            return                     # not ours (another run, a forgotten probe)
        if old.state == "expired":
            old.state = "late"
            self.schedule.late(old)
        else:
            self.schedule.duplicate(old)

    def _remember(self, key, probe: Probe) -> None:
        self._recent[key] = probe
        if len(self._recent) > _RECENT * max(1, len(self._seq)):
            self._recent.popitem(last=False)

    def _finish(self, probe: Probe, outcome: str, rtt_ns: int | None, end_ns: int) -> None:
        probe.state = "done" if outcome != "timeout" else "expired"
        self.flying -= 1
        self.schedule.done(probe, outcome, rtt_ns if outcome != "timeout" else None, end_ns)

    def _expire(self, now: int) -> None:
        flights, lingers = self._flights, self._lingers
        while flights and flights[0][0] <= now:
            at, probe = flights.popleft()
            if probe.state != "flying":
                continue                         # answered in time
            if probe.key is not None:
                self._waiting.pop(probe.key, None)
                self._finish(probe, "timeout", None, at)
                self._remember(probe.key, probe)
            else:
                self._finish(probe, "timeout", None, at)
                lingers.append((at + self.timeout_ns, probe))     # a late handshake
        while lingers and lingers[0][0] <= now:
            _, probe = lingers.popleft()
            if probe.state == "expired" and probe.fd >= 0:
                self._close(probe)

    def _close(self, probe: Probe) -> None:
        if probe.fd >= 0:
            del self._tcp[probe.fd]
            self._connector.drop(probe.fd)
            probe.fd = -1


def _where(address: str, port: int) -> tuple[str, int, int]:
    """(address without its IPv6 zone, port, the zone's interface index or 0)."""
    bare, zone = split_zone(address)
    return bare, port, zone


def _outcome(code: int) -> str:
    if code == 0:
        return "reply"
    if code == errno.ECONNREFUSED:
        return "refused"
    if code in _UNREACHABLE:
        return "unreachable"
    return "unreachable"


def _normal6(text: str) -> str:
    import ipaddress
    return str(ipaddress.IPv6Address(text))
