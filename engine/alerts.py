"""Threshold alerts: rules (pt_engine.config.AlertRule) checked on every window record,
and ping rules (pt_engine.config.PingRule) on every ping record of `pt-engine ping`.

An ``Alerts`` object is an observer (pt_engine.observers): it sees the stream's records and
returns ``alert`` and ``resolved`` records to write after them
(docs/stream-format.md). It reads only the stream: the ``hello`` for the
window length, and the port rows of each ``window``.

A rate is a window's count divided by the window length. A TCP quality
figure (``rtt_p95_ms``, ``retrans_ratio``, ...: pt_engine.analysers.tcp_quality
METRICS) is computed from the window's ``tcp_quality`` rows, merged exactly
over the directions (``both``) and ports (scope ``sum``) the rule names; a
window in which a figure has nothing to be computed from (no RTT sample, no
data segment) counts as zero for it, as a window without traffic does for a
rate. Scope ``port`` keeps
one state per matching (proto, port) row, scope ``sum`` one for the sum over
the matching rows. A state fires when its rate is over the limit for
``for_windows`` windows in a row and resolves when it stays under
``limit * clear_ratio`` as many windows in a row; in between (under the limit,
over the clear level) it stays as it is, so a rate flapping around the limit
alerts once. A window without a row for a port counts as zero for it, and so
does every window of a gap in the stream (file mode writes only windows with
packets): a resolution that falls in a gap is written with the next window
record, carrying the gap window's start.

Each alert and resolution is also logged on stderr and, with ``--on-alert``,
given to a shell command (``Hooks``) that runs in the background.
"""
from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import threading
from dataclasses import dataclass

from . import stream
from .analysers import tcp_quality as _quality
from .config import AlertRule, PingRule, si
from .errors import ConfigError
from .log import log
from .observers import Observer
from .stream import COL

# Port-row columns summed for (metric, direction).
_COLUMNS = {("packets_per_s", "in"): COL.of("in_packets"),
            ("bytes_per_s", "in"): COL.of("in_bytes"),
            ("packets_per_s", "out"): COL.of("out_packets"),
            ("bytes_per_s", "out"): COL.of("out_bytes"),
            ("packets_per_s", "both"): COL.of("in_packets", "out_packets"),
            ("bytes_per_s", "both"): COL.of("in_bytes", "out_bytes")}
_UNITS = {"bytes_per_s": "bytes/s", "packets_per_s": "packets/s", "rtt_p50_ms": "ms",
          "rtt_p95_ms": "ms", "rtt_avg_ms": "ms", "jitter_ms": "ms", "retrans_ratio": "",
          "gap_ratio": ""}
_SIDES = {"in": ("in",), "out": ("out",), "both": ("in", "out")}


@dataclass
class _State:
    """One (rule, port or sum) being watched: over the limit, or alerting."""

    over: int = 0            # windows in a row over the limit
    under: int = 0           # windows in a row under the clear level, while active
    active: bool = False
    since_ns: int = 0        # start of the first window of the run over the limit
    fired_ns: int = 0        # start of the window the alert fired in
    peak: float = 0.0


class Alerts(Observer):
    """Checks `rules` on each window; an observer (pt_engine.observers).

    `on_alert` is a shell command given each alert and resolved record as JSON
    on stdin (see Hooks), killed after `timeout` seconds, at most `max_hooks`
    at once. Call ``close`` when the stream has ended.
    """

    name = "alerts"

    def __init__(self, rules: tuple[AlertRule, ...] = (), on_alert: str | None = None,
                 timeout: float = 10.0, max_hooks: int = 4):
        self.rules = tuple(r for r in rules if not isinstance(r, PingRule))
        self.ping_rules = tuple(r for r in rules if isinstance(r, PingRule))
        self._ping_states: list[dict[tuple, _State]] = [{} for _ in self.ping_rules]
        self.hooks = Hooks(on_alert, timeout, max_hooks) if on_alert else None
        self.interval_ns: int | None = None
        self._next_ns: int | None = None      # start of the window expected next
        # What a ping alert looks like when it leaves (its log line, hooks, the
        # stream): the probe command's --addresses policy; rules match the real
        # target before it.
        self.show = lambda alert: alert
        self._states: list[dict[tuple, _State]] = [{} for _ in self.rules]
        self._ranges = [rule.port_range for rule in self.rules]

    @classmethod
    def create(cls, options) -> Alerts | None:
        """The alerts of a run's options (rules from --alert or the config file);
        None without rules."""
        if not options.alerts:
            return None
        quality_on = getattr(options, "tcp_quality", False) or \
            "tcp_quality" in getattr(options, "analysers", ())
        for rule in options.alerts:
            if getattr(rule, "quality", False) and not quality_on:
                raise ConfigError(f"--alert {rule.name!r}: {rule.metric} comes from the TCP "
                                  f"quality analysis, which --no-tcp-quality turns off")
        return cls(options.alerts, options.on_alert, options.alert_timeout, options.alert_hooks)

    def observe(self, record: dict) -> list[dict]:
        """The alert and resolved records a stream record causes (records before the
        hello, and records other than windows, cause none)."""
        if record.get("type") == "hello":
            self.interval_ns = record["interval_ns"]
            return []
        if record.get("type") == "ping" and not record.get("final"):
            return self._ping(record)
        if record.get("type") != "window" or self.interval_ns is None or not self.rules:
            return []
        start = record["start_ns"]
        out: list[dict] = []
        if self._next_ns is not None and start > self._next_ns:
            quiet = (start - self._next_ns) // self.interval_ns
            for i in range(len(self.rules)):
                out += self._quiet(i, self._next_ns, quiet)
        for i, rule in enumerate(self.rules):
            values = self._figures(i, record) if rule.quality else self._rates(i, record["ports"])
            out += self._window(rule, self._states[i], values, start)
        self._next_ns = start + self.interval_ns
        for alert in out:
            self._report(alert)
        return out

    def close(self) -> None:
        """Let running hooks finish (each until its timeout)."""
        if self.hooks is not None:
            self.hooks.close()

    def _ping(self, record: dict) -> list[dict]:
        """The alert and resolved records of one ping window: each ping rule keeps a
        state per (target, port); a window without the rule's figure (no reply)
        leaves it as it is."""
        out = []
        key = (record["target"], record["port"])
        window = (record["window_start_ns"], record["window_end_ns"])
        for rule, states in zip(self.ping_rules, self._ping_states):
            value = rule.value(record) if rule.matches(key[0]) else None
            if value is not None:
                out += self._advance(rule, states, key, value, window)
        out = [self.show(alert) for alert in out]
        for alert in out:
            self._report(alert)
        return out

    def _rates(self, i: int, rows: list) -> dict[tuple, float]:
        """key -> rate of the rows rule i matches: key (proto, port) for scope port,
        (rule proto, rule ports) for scope sum."""
        rule, (lo, hi) = self.rules[i], self._ranges[i]
        columns = _COLUMNS[rule.metric, rule.direction]
        counts: dict[tuple, int] = {}
        if rule.below and rule.scope == "port":     # a port without a row is at zero
            counts = {(rule.proto, port): 0 for port in range(lo, hi + 1)}
        proto_col, port_col = COL.proto, COL.port
        for row in rows:
            if (rule.proto == "*" or row[proto_col] == rule.proto) and lo <= row[port_col] <= hi:
                counts[row[proto_col], row[port_col]] = sum(row[c] for c in columns)
        if rule.scope == "sum":
            counts = {(rule.proto, rule.ports): sum(counts.values())}
        return {key: n * 1_000_000_000 / self.interval_ns for key, n in counts.items()}

    def _figures(self, i: int, record: dict) -> dict[tuple, float]:
        """key -> the quality figure of rule i (as _rates), from the window's
        tcp_quality rows."""
        rule, (lo, hi) = self.rules[i], self._ranges[i]
        sides = _SIDES[rule.direction]
        parts: dict[tuple, list] = {}
        for row in record.get("tcp_quality", {}).get("rows", ()):
            if lo <= row[1] <= hi and row[2] in sides:
                key = (rule.proto, rule.ports) if rule.scope == "sum" else ("tcp", row[1])
                parts.setdefault(key, []).append(_quality.row_values(row))
        return {key: _quality.metric(_quality.merged(v), rule.metric) or 0.0
                for key, v in parts.items()}

    def _window(self, rule: AlertRule, states: dict, rates: dict, start: int) -> list[dict]:
        out = []
        idle = sorted(key for key in states if key not in rates)
        for key in [*rates, *idle]:
            out += self._advance(rule, states, key, rates.get(key, 0.0), start)
        return out

    def _advance(self, rule, states: dict, key: tuple, value: float, start) -> list[dict]:
        """One window of one state (made when the value is past the limit, dropped
        when it is idle again); the record it causes, if any, in a list."""
        state = states.get(key)
        if state is None:
            if not rule.violated(value):
                return []
            state = states[key] = _State()
        alert = self._step(rule, key, state, value, start)
        if not state.active and not state.over:
            del states[key]
        return [] if alert is None else [alert]

    def _step(self, rule: AlertRule, key: tuple, state: _State, rate: float,
              start: int) -> dict | None:
        """Advance one state by one window; the record it causes, if any."""
        if not state.active:
            if not rule.violated(rate):
                state.over = 0
                return None
            state.over += 1
            if state.over == 1:
                state.since_ns = _start(start)
            if state.over < rule.for_windows:
                return None
            state.active, state.fired_ns, state.peak, state.under = True, _start(start), rate, 0
            build = stream.ping_alert if isinstance(rule, PingRule) else stream.alert
            return build(*self._fields(rule, key, rate, start), since_ns=state.since_ns,
                         windows_over=state.over)
        state.peak = min(state.peak, rate) if rule.below else max(state.peak, rate)
        if not rule.cleared(rate):
            state.under = 0
            return None
        state.under += 1
        if state.under < rule.for_windows:
            return None
        return self._resolve(rule, key, state, rate, start)

    def _quiet(self, i: int, first_ns: int, windows: int) -> list[dict]:
        """`windows` windows without packets from first_ns on: every rate of rule i
        is zero."""
        rule, states = self.rules[i], self._states[i]
        if rule.below:
            # Zero is past a '<' limit: the first for_windows windows of the gap
            # decide; after them nothing changes while it lasts.
            out = []
            zeros = self._rates(i, [])
            for k in range(min(windows, rule.for_windows)):
                out += self._window(rule, states, zeros, first_ns + k * self.interval_ns)
            return out
        out = []
        for key in sorted(states):
            state = states[key]
            if state.active and state.under + windows >= rule.for_windows:
                at = first_ns + (rule.for_windows - state.under - 1) * self.interval_ns
                out.append(self._resolve(rule, key, state, 0.0, at))
                del states[key]
            elif state.active:
                state.under += windows
            else:
                del states[key]
        return out

    def _resolve(self, rule: AlertRule | PingRule, key: tuple, state: _State, rate: float,
                 start) -> dict:
        state.active, state.over = False, 0
        build = stream.ping_resolved if isinstance(rule, PingRule) else stream.resolved
        return build(*self._fields(rule, key, rate, start),
                               clear_level=rule.clear_level, since_ns=state.since_ns,
                               fired_ns=state.fired_ns, peak=state.peak)

    def _fields(self, rule: AlertRule | PingRule, key: tuple, rate: float, start) -> tuple:
        """The leading fields of an alert or resolved record (pt_engine.stream);
        `start` is a window's start, or a ping window's (start, end)."""
        if isinstance(rule, PingRule):
            return (rule.name, key[0], key[1], rule.metric, rule.op, rate, rule.limit, *start)
        return (rule.name, rule.scope, key[0], key[1], rule.direction, rule.metric, rule.op,
                rate, rule.limit, start, start + self.interval_ns)

    def _report(self, alert: dict) -> None:
        unit = _UNITS.get(alert["metric"], "ms" if alert["metric"].endswith("_ms") else "") \
            or alert["metric"]
        if "target" in alert:
            where = alert["target"] + (f" tcp/{alert['port']}" if alert["port"] else "")
        else:
            where = f"{alert['proto']}/{alert['port']} {alert['direction']}"
        when = _utc(alert["window_start_ns"])
        below = alert["op"] == "<"
        if alert["type"] == "alert":
            log(f"alert {alert['rule']!r}: {where} {si(alert['value'])} {unit}, "
                f"{'under' if below else 'over'} {si(alert['limit'])} for "
                f"{alert['windows_over']} window(s), at {when}")
        else:
            clear = alert["clear_above" if below else "clear_below"]
            log(f"resolved {alert['rule']!r}: {where} {si(alert['value'])} {unit}, "
                f"{'over' if below else 'under'} {si(clear)}, at {when}; active "
                f"{alert['duration_ns'] / 1e9:g} s, {'lowest' if below else 'peak'} "
                f"{si(alert['peak'])} {unit}")
        if self.hooks is not None:
            self.hooks.run(alert)


def _start(start) -> int:
    """The start of a window given as its start or as a ping window's (start, end)."""
    return start[0] if isinstance(start, tuple) else start


def _utc(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{rest // 1_000_000:03d}Z"


class Hooks:
    """Runs `command` through /bin/sh for each record, with the record as one JSON
    line on stdin and its output on stderr (stdout carries the stream).

    Nothing here blocks the caller: the record is written into the pipe at
    once (a record is far smaller than a pipe buffer) and a watcher thread
    waits for the command. A command still running after `timeout` seconds is
    killed with its process group (it runs in a session of its own) and
    logged. When `limit` commands are running, further records are dropped,
    logged and counted in ``dropped``.
    """

    def __init__(self, command: str, timeout: float, limit: int):
        self.command = command
        self.timeout = timeout
        self.limit = limit
        self.dropped = 0
        self._watchers: list[tuple[threading.Thread, subprocess.Popen]] = []

    def run(self, record: dict) -> None:
        """Start the command for `record`, or drop it (logged) when too many run."""
        what = f"{record['type']} {record['rule']!r}"
        self._watchers = [(t, p) for t, p in self._watchers if t.is_alive()]
        if len(self._watchers) >= self.limit:
            self.dropped += 1
            log(f"--on-alert: {self.limit} commands still running; not run for {what} "
                f"({self.dropped} dropped so far)")
            return
        try:
            proc = subprocess.Popen(self.command, shell=True, stdin=subprocess.PIPE,
                                    stdout=2, start_new_session=True)
        except OSError as err:
            log(f"--on-alert: cannot start {self.command!r}: {err.strerror}")
            return
        fd = proc.stdin.fileno()
        os.set_blocking(fd, False)
        try:
            os.write(fd, json.dumps(record, separators=(",", ":")).encode() + b"\n")
        except BrokenPipeError:
            pass              # the command exited without reading its input
        except BlockingIOError:
            log(f"--on-alert: the command's input pipe is full; {what} not given to it")
        finally:
            proc.stdin.close()
        thread = threading.Thread(target=self._watch, args=(proc, what), daemon=True,
                                  name=f"pt-engine hook {proc.pid}")
        thread.start()
        self._watchers.append((thread, proc))

    def _watch(self, proc: subprocess.Popen, what: str) -> None:
        try:
            status = proc.wait(self.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            log(f"--on-alert: command for {what} killed after its {self.timeout:g} s timeout")
            return
        if status:
            how = f"was killed by signal {-status}" if status < 0 else f"exited with {status}"
            log(f"--on-alert: command for {what} {how}")

    def close(self) -> None:
        """Wait for the running commands (each at most until its timeout); on an
        interrupt, kill them instead."""
        try:
            for thread, _ in self._watchers:
                thread.join()
        except BaseException:
            for _, proc in self._watchers:
                _kill_group(proc)
            raise
        if self.dropped:
            log(f"--on-alert: {self.dropped} alert(s) not given to the command "
                f"(more than {self.limit} running at once)")


def _kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
