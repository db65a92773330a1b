"""Top talkers: per window, for the busiest K ports and every --ports port, the
top N remote addresses by bytes, in and out, with their packet and byte counts
(--analyser talkers). Addresses leave through the --addresses policy
(pt_engine.addresses): pseudonymised by default.

A packet of protocol P from (A, S) to (B, D) gives the row (P, D, in) the
remote address A and the row (P, S, out) the remote address B, with one packet
and its wire length: the per-port rows of counting-rules section 4.

Two parts, as every analyser (pt_engine.analysers):

* the **counter**, in each capture process, is native by default
  (``pt_engine._talkers.TalkersCounter``, ext/talkers.pyx, fed the raw
  record buffer: no Python per packet); under the reference backend
  (``PT_ENGINE_PUREPYTHON=1``) it is ``TalkersCounter`` below, the same rule
  one packet at a time. Both give the same counts (tests/test_talkers.py).
* ``Talkers``, in the aggregator, merges the deltas with numpy (a sort and a
  sum per (row, address)), picks the ports and the addresses, and maps the
  few addresses it lists.

Memory is bounded: a capture process keeps at most BOUND addresses per row
and window (Space-Saving, Metwally et al. 2005): an address arriving at a
full row takes the place of the one with the fewest bytes (ties: the lowest
address) and inherits its counts. So a row's entries always add up to the
row's exact packets and bytes; with at most BOUND addresses in a row, every
count is exact; past that a listed address's bytes may be over-counted by at
most ``error_bytes`` (the sum over capture processes of the largest count
each replaced), and an address that moved more than ``error_bytes`` is never
missing from the row. An entry costs about 60 bytes in the native counter
(40 for the entry, 8 of hash table, 4 in its row's list), so a capture
process holds at most min(ported packets in the window, BOUND x rows) x 2
entries; the run's totals keep BOUND addresses per row in the aggregator.
Counts are integers and merge exactly (sums per address).

A delta is bytes (the layout in ext/talkers.pyx: ``pack_delta`` writes it in
Python, ``unpack_delta`` reads it); rows are ``proto_index << 17 | port << 1
| direction`` (direction 0 = in, 1 = out; proto_index in
records.PORT_PROTOCOLS).
"""
from __future__ import annotations

import struct

from .. import records
from ..backend import use_reference_backend
from . import Analyser, AnalyserContext, Counter

BOUND = 1024        # addresses per row, window and capture process
TOP_PORTS = 10      # K: the busiest ports (by bytes, in + out) given talkers
TOP_ADDRESSES = 5   # N: addresses listed per port and direction
_PORTED = records.CLASS_NAMES.index("ported")

DELTA_VERSION = 1
_HEAD = struct.Struct("<4Q")            # version, entries, errors, 0
_ENTRY = struct.Struct("<II16sQQ")      # row, 0, address, packets, bytes
_ERROR = struct.Struct("<IIQ")          # row, 0, error


def row_key(proto_index: int, port: int, direction: int) -> int:
    """The row of (protocol index, port, direction) in a delta."""
    return proto_index << 17 | port << 1 | direction


# --- the capture side: the twin of ext/talkers.pyx ----------------------------------------

class TalkersCounter(Counter):
    """Per row: {address: [packets, bytes]}, at most `bound` addresses; the
    reference backend's counter, one packet at a time."""

    def __init__(self, ctx: AnalyserContext | None = None, bound: int = BOUND):
        super().__init__(ctx)
        self.bound = bound
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
            index = records.PROTO_INDEX.get(proto)
            if index is None:
                continue
            self._add(row_key(index, dport, 0), src[i * 16:i * 16 + 16], wire)
            self._add(row_key(index, sport, 1), dst[i * 16:i * 16 + 16], wire)

    def _add(self, key: int, addr: bytes, wire: int) -> None:
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = {}
        counts = row.get(addr)
        if counts is None:
            if len(row) >= self.bound:
                victim = min(row, key=lambda a: (row[a][1], a))
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
        delta = pack_delta(self._rows, self._errors)
        self._rows, self._errors = {}, {}
        return delta


def new_counter(ctx: AnalyserContext | None = None, bound: int = BOUND):
    """The capture-side counter of the backend in use: the native one
    (ext/talkers.pyx), or the twin under the reference backend."""
    if use_reference_backend():
        return TalkersCounter(ctx, bound)
    from .._talkers import TalkersCounter as NativeTalkersCounter
    return NativeTalkersCounter(bound)


# --- deltas ---------------------------------------------------------------------------------

def pack_delta(rows: dict, errors: dict) -> bytes:
    """The delta bytes of the twin's {row: {address: [packets, bytes]}} and
    {row: error}, as ext/talkers.pyx writes them."""
    entries = [_ENTRY.pack(key, 0, addr, p, b)
               for key, row in rows.items() for addr, (p, b) in row.items()]
    errs = [_ERROR.pack(key, 0, err) for key, err in errors.items() if err]
    return _HEAD.pack(DELTA_VERSION, len(entries), len(errs), 0) + b"".join(entries + errs)


def _dtypes():
    import numpy as np
    # the address as two big-endian words: their order is the bytes' order
    entry = np.dtype({"names": ["key", "hi", "lo", "packets", "bytes"],
                      "formats": ["<u4", ">u8", ">u8", "<u8", "<u8"],
                      "offsets": [0, 8, 16, 24, 32], "itemsize": _ENTRY.size})
    error = np.dtype({"names": ["key", "error"], "formats": ["<u4", "<u8"],
                      "offsets": [0, 8], "itemsize": _ERROR.size})
    return entry, error


def unpack_delta(delta):
    """(entries, errors) of delta bytes: numpy structured arrays with fields
    key, hi, lo (the address), packets, bytes; and key, error. Raises
    ValueError for bytes of another layout."""
    import numpy as np
    entry, error = _dtypes()
    version, n, n_errors, _ = _HEAD.unpack_from(delta)
    size = _HEAD.size + n * _ENTRY.size + n_errors * _ERROR.size
    if version != DELTA_VERSION or len(delta) != size:
        raise ValueError(f"not a talkers delta: version {version}, {len(delta)} bytes for "
                         f"{n} entries and {n_errors} errors")
    return (np.frombuffer(delta, entry, n, _HEAD.size),
            np.frombuffer(delta, error, n_errors, _HEAD.size + n * _ENTRY.size))


# --- the aggregator side --------------------------------------------------------------------

class Table:
    """Entries (row, address) -> packets, bytes, as sorted numpy columns, unique
    (row, address); and row -> error, sorted, unique."""

    __slots__ = ("key", "hi", "lo", "packets", "bytes", "err_key", "err")

    def __init__(self, key, hi, lo, packets, nbytes, err_key, err):
        self.key, self.hi, self.lo, self.packets, self.bytes = key, hi, lo, packets, nbytes
        self.err_key, self.err = err_key, err

    @classmethod
    def merged(cls, parts: list[tuple]) -> Table:
        """The sum of (entries, errors) parts (unpack_delta's, or other tables')."""
        import numpy as np
        col = lambda arrays, dtype: np.concatenate(   # noqa: E731
            [np.asarray(a, dtype=dtype) for a in arrays] or [np.zeros(0, dtype)])
        key = col([p[0]["key"] for p in parts], np.uint32)
        hi = col([p[0]["hi"] for p in parts], np.uint64)
        lo = col([p[0]["lo"] for p in parts], np.uint64)
        order = np.lexsort((lo, hi, key))
        key, hi, lo = key[order], hi[order], lo[order]
        first = _starts(key, hi, lo)
        packets = _sums(col([p[0]["packets"] for p in parts], np.uint64)[order], first)
        nbytes = _sums(col([p[0]["bytes"] for p in parts], np.uint64)[order], first)
        err_key = col([p[1]["key"] for p in parts], np.uint32)
        err = col([p[1]["error"] for p in parts], np.uint64)
        order = np.argsort(err_key, kind="stable")
        err_key, err = err_key[order], err[order]
        efirst = _starts(err_key)
        return cls(key[first], hi[first], lo[first], packets, nbytes, err_key[efirst],
                   _sums(err, efirst))

    def entries(self) -> dict:
        return {"key": self.key, "hi": self.hi, "lo": self.lo, "packets": self.packets,
                "bytes": self.bytes}

    def errors(self) -> dict:
        return {"key": self.err_key, "error": self.err}

    def error_of(self, key: int) -> int:
        import numpy as np
        at = int(np.searchsorted(self.err_key, key))
        return int(self.err[at]) if at < len(self.err_key) and self.err_key[at] == key else 0

    def bounded(self, bound: int) -> Table:
        """At most `bound` entries per row, the biggest by (bytes, lowest
        address); a row that loses entries has its error raised to the
        largest byte count it lost."""
        import numpy as np
        order = np.lexsort((self.lo, self.hi, ~self.bytes, self.key))
        key = self.key[order]
        first = _starts(key)
        rank = np.arange(len(key)) - np.repeat(first, np.diff(np.append(first, len(key))))
        keep = order[rank < bound]
        lost = rank == bound            # the largest one each row lost
        err_key, err = self.err_key, self.err
        if lost.any():
            lost_key, lost_bytes = key[lost], self.bytes[order][lost]   # one per row
            all_keys = np.union1d(err_key, lost_key).astype(np.uint32)
            all_err = np.zeros(len(all_keys), dtype=np.uint64)
            all_err[np.searchsorted(all_keys, err_key)] = err
            at = np.searchsorted(all_keys, lost_key)
            all_err[at] = np.maximum(all_err[at], lost_bytes)
            err_key, err = all_keys, all_err
        keep.sort()
        return Table(self.key[keep], self.hi[keep], self.lo[keep], self.packets[keep],
                     self.bytes[keep], err_key, err)


def _starts(*columns):
    """Indices where a run of equal rows (over sorted columns) starts."""
    import numpy as np
    n = len(columns[0])
    if not n:
        return np.zeros(0, dtype=np.intp)
    new = np.zeros(n, dtype=bool)
    new[0] = True
    for c in columns:
        new[1:] |= c[1:] != c[:-1]
    return np.flatnonzero(new)


def _sums(values, first):
    import numpy as np
    return np.add.reduceat(values, first) if len(first) else values[:0]


class Talkers(Analyser):
    """The aggregator side: merges, picks the ports and addresses, maps addresses."""

    name = "talkers"
    fields = ("talkers",)
    counter = staticmethod(new_counter)

    def __init__(self, ctx: AnalyserContext):
        super().__init__(ctx)
        from ..addresses import Policy
        self.policy = Policy.parse(ctx.addresses)
        self._map = self.policy.mapper(ctx.state_dir)
        self._names: dict[bytes, str] = {}
        self._parts: list[tuple] = []
        self._total = Table.merged([])

    def merge(self, delta, group: int) -> None:
        if delta is not None:
            self._parts.append(unpack_delta(delta))

    def _name(self, addr: bytes) -> str:
        name = self._names.get(addr)
        if name is None:
            name = self._names[addr] = self._map(addr)
        return name

    def _entries(self, table: Table) -> list[dict]:
        import numpy as np
        port_key = table.key >> 1          # proto_index << 16 | port, sorted
        first = _starts(port_key)
        if not len(first):
            return []
        ports = port_key[first]
        per_port = _sums(table.bytes, first)
        index, number = ports >> 16, ports & 0xFFFF
        proto = np.array([n for n, _ in records.PORT_PROTOCOLS])[index]
        rank = np.lexsort((number, proto, ~per_port))
        keep = rank[:TOP_PORTS]
        selected = self.ctx.ports
        if selected is not None:
            keep = np.concatenate([keep[selected.mask[number[keep]]],
                                   rank[TOP_PORTS:][selected.mask[number[rank[TOP_PORTS:]]]]])
        out = []
        for i in keep.tolist():
            entry = {"proto": records.PROTO_NAMES[int(index[i])], "port": int(number[i])}
            for direction, name in ((0, "in"), (1, "out")):
                key = int(ports[i]) << 1 | direction
                lo, hi = np.searchsorted(table.key, [key, key + 1])
                order = np.lexsort((table.lo[lo:hi], table.hi[lo:hi], ~table.bytes[lo:hi]))
                top = order[:TOP_ADDRESSES] + lo
                entry[name] = [
                    {"address": self._name(h.to_bytes(8, "big") + l_.to_bytes(8, "big")),
                     "packets": p, "bytes": b}
                    for h, l_, p, b in zip(table.hi[top].tolist(), table.lo[top].tolist(),
                                           table.packets[top].tolist(),
                                           table.bytes[top].tolist())]
                entry[f"{name}_addresses"] = int(hi - lo)
                entry[f"{name}_error_bytes"] = table.error_of(key)
            out.append(entry)
        return out

    def window(self, start_ns: int, end_ns: int) -> dict:
        table = Table.merged(self._parts)
        self._parts = []
        entries = self._entries(table)
        # the run's totals keep the BOUND biggest per row
        self._total = Table.merged([(self._total.entries(), self._total.errors()),
                                    (table.entries(), table.errors())]).bounded(BOUND)
        return {"talkers": self._record(entries)}

    def _record(self, entries: list[dict]) -> dict:
        return {"addresses": self.policy.text, "bound": BOUND, "ports": entries}

    def summary(self) -> dict:
        return {"talkers": self._record(self._entries(self._total))}
