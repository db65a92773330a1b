"""The human tables of `ping` and `scan` on a terminal, as a sink of their records.

``ping``: a line per target and window (unless the run is one round, a
sweep), then the totals of every target, as ``fping -s``'s per-target
lines; ``scan``: per target a port table, as nmap's, listing open and
filtered ports and closed ones while there are few (otherwise their count).
"""
from __future__ import annotations

import socket
import sys

from ..errors import SinkError
from ..sinks import Destination, Sink, SinkContext

_SHOW_CLOSED = 20


def _ms(ns: int | None) -> str:
    return "-" if ns is None else f"{ns / 1e6:.3f}"


def _service(port: int) -> str:
    try:
        return socket.getservbyport(port, "tcp")
    except OSError:
        return ""


class TableSink(Sink):
    """Writes the tables to `out` (stdout)."""

    formats = ()
    on_failure = "stop"

    def __init__(self, out=None):
        super().__init__(Destination("stdout", None, "table", "-"), SinkContext(live=True))
        self.name = "the terminal"
        self.out = out or sys.stdout
        self.lines = True
        self.finals: list[dict] = []

    def write(self, record: dict) -> None:
        kind = record.get("type")
        try:
            if kind == "hello":
                self.lines = record.get("count") != 1
                policy = record.get("addresses", "clear")
                if policy != "clear":
                    self._print(f"addresses shown as --addresses {policy} leaves them "
                                f"(--addresses clear shows them)")
            elif kind == "ping" and record.get("final"):
                self.finals.append(record)
            elif kind == "ping" and self.lines:
                self._print(self._ping_line(record))
            elif kind == "scan":
                self._print(self._scan_table(record))
            self.written += 1
        except OSError as err:
            self.failure = SinkError(f"the terminal: {err.strerror}")

    def _print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    @staticmethod
    def _where(record: dict) -> str:
        return record["target"] + (f" tcp/{record['port']}" if record["port"] else "")

    def _ping_line(self, r: dict) -> str:
        rtt = (f"rtt min/avg/max {_ms(r['rtt_min_ns'])}/{_ms(r['rtt_avg_ns'])}/"
               f"{_ms(r['rtt_max_ns'])} ms  jitter {_ms(r['jitter_ns'])} ms"
               if r["received"] else "no reply")
        extra = "".join(f"  {r[k]} {k}" for k in ("late", "duplicates") if r[k])
        return (f"{self._where(r):<24} sent {r['sent']} received {r['received']} "
                f"loss {r['loss_ratio']:.1%}  {rtt}{extra}")

    def _final_table(self) -> str:
        head = (f"{'TARGET':<28}{'SENT':>6}{'RECV':>6}{'LOSS':>7}{'MIN':>9}{'AVG':>9}"
                f"{'MAX':>9}{'P50':>9}{'P95':>9}{'JITTER':>9}  UP")
        rows = [head]
        for r in self.finals:
            rows.append(f"{self._where(r):<28}{r['sent']:>6}{r['received']:>6}"
                        f"{r['loss_ratio']:>7.1%}{_ms(r['rtt_min_ns']):>9}"
                        f"{_ms(r['rtt_avg_ns']):>9}{_ms(r['rtt_max_ns']):>9}"
                        f"{_ms(r['rtt_p50_ns']):>9}{_ms(r['rtt_p95_ns']):>9}"
                        f"{_ms(r['jitter_ns']):>9}  {'up' if r['up'] else 'down'}")
        up = sum(r["up"] for r in self.finals)
        rows.append(f"{up} of {len(self.finals)} up (RTT and jitter in ms)")
        return "\n".join(rows)

    def _scan_table(self, r: dict) -> str:
        ports = r["ports"]
        lines = [f"scan of {r['target']}: {r['open']} open, {r['closed']} closed, "
                 f"{r['filtered']} filtered ({len(ports)} ports)"]
        hide = {state for state in ("closed", "filtered") if r[state] > _SHOW_CLOSED}
        if hide:
            lines.append("not shown: " + ", ".join(f"{r[s]} {s}" for s in sorted(hide)))
        lines.append(f"{'PORT':<12}{'STATE':<10}{'RTT ms':>9}  SERVICE")
        for p in ports:
            if p["state"] not in hide:
                lines.append(f"{str(p['port']) + '/tcp':<12}{p['state']:<10}"
                             f"{_ms(p['rtt_ns']):>9}  {_service(p['port'])}")
        return "\n".join(lines)

    def close(self) -> None:
        if self.finals:
            try:
                self._print(self._final_table())
            except OSError as err:
                self.failure = SinkError(f"the terminal: {err.strerror}")
