"""Top talkers: per window, for the busiest K ports and every --ports port, the
top N remote addresses by bytes, in and out, with their packet and byte counts
(--analyser talkers). Addresses leave through the --addresses policy
(pt_engine.addresses): pseudonymised by default.

A packet of protocol P from (A, S) to (B, D) gives the row (P, D, in) the
remote address A and the row (P, S, out) the remote address B, with one packet
and its wire length: the per-port rows of counting-rules section 4.

Memory is bounded: a capture process keeps at most BOUND addresses per row
and window (Space-Saving, Metwally et al. 2005): an address arriving at a
full row takes the place of the one with the fewest bytes and inherits its
counts. So with at most BOUND addresses in a row, every count is exact; past
that a listed address's bytes may be over-counted by at most ``error_bytes``
(the sum over capture processes of the largest count each evicted), and an
address that moved more than ``error_bytes`` is never missing from the top.
Counts are integers and merge exactly (sums per address).
"""
from __future__ import annotations

from .. import records
from . import Analyser, AnalyserContext, Counter

BOUND = 1024        # addresses per row, window and capture process
TOP_PORTS = 10      # K: the busiest ports (by bytes, in + out) given talkers
TOP_ADDRESSES = 5   # N: addresses listed per port and direction
_PORTED = records.CLASS_NAMES.index("ported")


class TalkersCounter(Counter):
    """Per (proto index, port, direction): {address: [packets, bytes]}, bounded."""

    def __init__(self, ctx: AnalyserContext):
        super().__init__(ctx)
        self._rows: dict = {}
        self._errors: dict = {}

    def consume(self, recs, start, stop) -> None:
        part = recs[start:stop]
        part = part[part["pkt_class"] == _PORTED]
        if not len(part):
            return
        src = part["src_addr"].tobytes()
        dst = part["dst_addr"].tobytes()
        for i, (proto, sport, dport, wire) in enumerate(zip(
                part["proto"].tolist(), part["src_port"].tolist(), part["dst_port"].tolist(),
                part["wire_len"].tolist())):
            self._add((proto, dport, 0), src[i * 16:i * 16 + 16], wire)
            self._add((proto, sport, 1), dst[i * 16:i * 16 + 16], wire)

    def _add(self, key, addr: bytes, wire: int) -> None:
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = {}
        counts = row.get(addr)
        if counts is None:
            if len(row) >= BOUND:
                victim = min(row, key=lambda a: row[a][1])
                counts = row.pop(victim)
                self._errors[key] = max(self._errors.get(key, 0), counts[1])
            else:
                counts = [0, 0]
            row[addr] = counts
        counts[0] += 1
        counts[1] += wire

    def take(self):
        if not self._rows:
            return None
        delta = (self._rows, self._errors)
        self._rows, self._errors = {}, {}
        return delta


class Talkers(Analyser):
    """The aggregator side: merges, picks the ports and addresses, maps addresses."""

    name = "talkers"
    fields = ("talkers",)
    counter = TalkersCounter

    def __init__(self, ctx: AnalyserContext):
        super().__init__(ctx)
        from ..addresses import Policy
        self.policy = Policy.parse(ctx.addresses)
        self._map = self.policy.mapper(ctx.state_dir)
        self._names: dict[bytes, str] = {}
        self._rows: dict = {}
        self._errors: dict = {}
        self._windows = 0
        self._total: dict = {}
        self._total_errors: dict = {}

    def merge(self, delta, group: int) -> None:
        if delta is None:
            return
        rows, errors = delta
        for key, row in rows.items():
            mine = self._rows.setdefault(key, {})
            for addr, (packets, nbytes) in row.items():
                counts = mine.setdefault(addr, [0, 0])
                counts[0] += packets
                counts[1] += nbytes
        for key, err in errors.items():
            self._errors[key] = self._errors.get(key, 0) + err

    def _name(self, addr: bytes) -> str:
        name = self._names.get(addr)
        if name is None:
            name = self._names[addr] = self._map(addr)
        return name

    def _entries(self, rows: dict, errors: dict) -> list[dict]:
        per_port: dict = {}
        for (proto, port, _), row in rows.items():
            per_port[(proto, port)] = per_port.get((proto, port), 0) + sum(
                c[1] for c in row.values())
        selected = self.ctx.ports
        keep = sorted(per_port, key=lambda k: (-per_port[k], k))[:TOP_PORTS]
        if selected is not None:
            keep = [k for k in keep if selected.mask[k[1]]]
            keep += [k for k in per_port if selected.mask[k[1]] and k not in keep]
        out = []
        for proto, port in sorted(keep, key=lambda k: (-per_port[k], k)):
            entry = {"proto": records.PROTO_NAMES[records.PROTO_INDEX[proto]], "port": port}
            for direction, name in ((0, "in"), (1, "out")):
                row = rows.get((proto, port, direction), {})
                top = sorted(row.items(), key=lambda kv: (-kv[1][1], kv[0]))[:TOP_ADDRESSES]
                entry[name] = [{"address": self._name(a), "packets": p, "bytes": b}
                               for a, (p, b) in top]
                entry[f"{name}_addresses"] = len(row)
                entry[f"{name}_error_bytes"] = errors.get((proto, port, direction), 0)
            out.append(entry)
        return out

    def window(self, start_ns: int, end_ns: int) -> dict:
        entries = self._entries(self._rows, self._errors)
        for key, row in self._rows.items():
            mine = self._total.setdefault(key, {})
            for addr, (p, b) in row.items():
                counts = mine.setdefault(addr, [0, 0])
                counts[0] += p
                counts[1] += b
            err = self._total_errors.get(key, 0) + self._errors.get(key, 0)
            if len(mine) > BOUND:      # the run's totals keep the BOUND biggest
                for addr in sorted(mine, key=lambda a: mine[a][1])[:len(mine) - BOUND]:
                    err = max(err, mine.pop(addr)[1])
            self._total_errors[key] = err
        self._rows, self._errors = {}, {}
        return {"talkers": self._record(entries)}

    def _record(self, entries: list[dict]) -> dict:
        return {"addresses": self.policy.text, "bound": BOUND, "ports": entries}

    def summary(self) -> dict:
        return {"talkers": self._record(self._entries(self._total, self._total_errors))}
