"""`pt-engine ping` and `pt-engine scan`: options in, records out.

The run: targets parsed and checked (pt_engine.probe.targets), the plan
logged on stderr (what, how, how fast) before the first probe, the sockets
opened (an ICMP socket that cannot be had fails the run before any output),
the ``hello``, then the loop (pt_engine.probe.loop) with the schedule of the
command, its records written to every output and given to the alert rules.
The first SIGINT or SIGTERM stops sending: the probes in flight get their
answer or timeout, and the records and totals are written; a second one
stops at once (exit 130). ``--dry-run`` prints the targets and the probe
count on stdout and sends nothing.
"""
from __future__ import annotations

import os
import signal
import time

from .. import options, stream
from ..config import port_list
from ..errors import ConfigError
from ..log import log
from .loop import Loop
from .ping import PingSchedule
from .scan import ScanSchedule
from .shown import Shown
from .targets import parse_targets


def _plan(command: str, opts) -> tuple[list, list, int]:
    """(targets, ports, rounds); ports [None] for ICMP. Raises ConfigError."""
    targets = parse_targets(opts.targets, opts.max_targets)
    if command == "scan":
        if opts.scan_ports is None:
            raise ConfigError("scan needs --ports, e.g. --ports 22,80,443 or 1-65535")
        return targets, port_list(opts.scan_ports, "--ports"), 1
    ports = port_list(opts.tcp, "--tcp") if opts.tcp is not None else [None]
    count = opts.count if opts.count is not None else (0 if opts.probe_duration else 1)
    return targets, ports, count


def _describe(command: str, opts, targets, ports, rounds: int) -> tuple[str, str]:
    """The probe count (text) and what one probe is, for the dry run and the log."""
    per_round = len(targets) * len(ports)
    if command == "scan":
        most = per_round * (1 + opts.retries)
        count = f"{per_round} probes" + (f" (up to {most} with retries)" if opts.retries
                                          else "")
        return count, "TCP SYN (half-open)" if opts.syn else "TCP connect"
    what = f"TCP connect to port {', '.join(map(str, ports))}" if ports != [None] \
        else "ICMP echo"
    if rounds:
        return f"{per_round * rounds} probes ({rounds} round(s) of {per_round})", what
    seconds = opts.probe_duration / 1e9 if opts.probe_duration else None
    return (f"{per_round} probes per round, for {seconds:g} s" if seconds else
            f"{per_round} probes per round, until stopped"), what


def main(command: str, args, destinations) -> int:
    """Run `command` ("ping" or "scan"); `destinations` () means the terminal table.
    Raises EngineError subclasses (cli prints them)."""
    opts = options.build(command, args)
    targets, ports, rounds = _plan(command, opts)
    count, what = _describe(command, opts, targets, ports, rounds)
    if opts.dry_run:
        for target in targets:
            named = "" if target.text == target.given else f"  ({target.given})"
            print(f"{target.text}{named}")
        ports_text = "" if ports == [None] else f", {len(ports)} port(s) each"
        print(f"{len(targets)} target(s){ports_text}: {count}, {what}")
        return 0
    if command == "scan" and opts.syn and os.geteuid() != 0:
        raise ConfigError("scan --syn needs root (it sends from raw sockets); leave out "
                          "--syn for a connect scan, which needs no privileges")
    rate = f"at most {opts.rate:g} probes/s" if opts.rate else "no rate limit"
    log(f"{command}: {len(targets)} target(s) ({' '.join(opts.targets)}), {what}, {count}, "
        f"{rate}, {opts.concurrency} in flight at most, timeout {opts.timeout_ns / 1e9:g} s")
    return _Run(command, opts, targets, ports, rounds, destinations).run()


class _Run:
    def __init__(self, command, opts, targets, ports, rounds, destinations):
        self.command, self.opts, self.targets, self.ports = command, opts, targets, ports
        self.rounds = rounds
        self.destinations = destinations
        self.wall0, self.mono0 = time.time_ns(), time.monotonic_ns()
        self.outputs = None
        self.alerts = None
        self.loop: Loop | None = None
        self.schedule = None
        self.signals = 0
        self.shown = Shown(opts.addresses, opts.state_dir)

    def wall(self, mono_ns: int) -> int:
        return self.wall0 + (mono_ns - self.mono0)

    def emit(self, record: dict) -> None:
        """Write a record, as the address policy shows it; the alert rules see
        the real one (and show theirs through the same policy)."""
        self.outputs.write(self.shown(record))
        if self.alerts is not None:
            for extra in self.alerts.observe(record):
                self.outputs.write(extra)
        if self.outputs.fatal is not None and self.loop is not None:
            self._stop()

    def _stop(self) -> None:
        self.loop.stop()
        self.schedule.finish()

    def _signal(self, signum, frame) -> None:
        self.signals += 1
        if self.signals > 1:
            raise KeyboardInterrupt
        log(f"{signal.Signals(signum).name}: no more probes; waiting for those in flight "
            "(again to stop at once)")
        self._stop()

    def run(self) -> int:
        from ..alerts import Alerts
        from ..backend import use_reference_backend
        from ..sinks import Outputs, SinkContext, open_outputs
        opts = self.opts
        if self.command == "scan":
            self.schedule = ScanSchedule(self.targets, self.ports, opts.retries, self.emit,
                                         self.wall)
            interval_ns, size = 0, 0
        else:
            self.schedule = PingSchedule(self.targets, self.ports, self.rounds,
                                         opts.probe_duration, opts.interval_ns, opts.window,
                                         self.emit, self.wall)
            interval_ns, size = opts.interval_ns, opts.size
        syn = self.command == "scan" and opts.syn
        self.loop = Loop(self.schedule, opts.rate, opts.concurrency, opts.timeout_ns, size,
                         syn=syn)
        families = dict.fromkeys(t.family for t in self.targets)
        if self.ports == [None]:
            for family in families:
                self.loop.open_icmp(family)
            method = "+".join(self.loop.methods)
        elif syn:
            for family in families:           # the raw sockets, before any output
                self.loop.open_syn(family)
            method = "tcp-syn"
        else:
            method = "tcp-connect"
        if self.destinations:
            self.outputs = open_outputs(self.destinations, SinkContext(live=True))
        else:
            from .table import TableSink
            self.outputs = Outputs([TableSink()])
        self.alerts = Alerts.create(opts)
        if self.alerts is not None:
            self.alerts.show = self.shown
        previous = {sig: signal.signal(sig, self._signal)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.emit(stream.probe_hello(
                self.command, method,
                [{"address": t.text, "name": t.given} for t in self.targets],
                None if self.ports == [None] else self.ports,
                self.rounds if self.command == "ping" else None, interval_ns,
                opts.timeout_ns, opts.rate, opts.concurrency,
                "reference" if use_reference_backend() else "native",
                self.shown.policy.text))
            self.loop.run()
            self.schedule.close(time.monotonic_ns())
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self.alerts is not None:
                self.alerts.close()
            self.outputs.close()
        if self.outputs.fatal is not None:
            raise self.outputs.fatal
        return 0
