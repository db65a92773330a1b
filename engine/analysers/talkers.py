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

DELTA_VERSION = 2
_HEAD = struct.Struct("<4Q")            # version, entries, rows, 0
_ENTRY = struct.Struct("<II16sQQ")      # row, 0, address, packets, bytes
_ROW = struct.Struct("<IIQQQ")          # row, addresses, packets, bytes, error


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
    summaries = [_ROW.pack(key, len(row), sum(c[0] for c in row.values()),
                           sum(c[1] for c in row.values()), errors.get(key, 0))
                 for key, row in rows.items()]
    return (_HEAD.pack(DELTA_VERSION, len(entries), len(summaries), 0)
            + b"".join(entries + summaries))


def _dtypes():
    import numpy as np
    # the address as two big-endian words: their order is the bytes' order
    entry = np.dtype({"names": ["key", "hi", "lo", "packets", "bytes"],
                      "formats": ["<u4", ">u8", ">u8", "<u8", "<u8"],
                      "offsets": [0, 8, 16, 24, 32], "itemsize": _ENTRY.size})
    row = np.dtype([("key", "<u4"), ("addresses", "<u4"), ("packets", "<u8"),
                    ("bytes", "<u8"), ("error", "<u8")])
    return entry, row


def unpack_delta(delta):
    """(entries, rows) of delta bytes: numpy structured arrays with fields key,
    hi, lo (the address), packets, bytes; and key, addresses, packets, bytes,
    error. Raises ValueError for bytes of another layout."""
    import numpy as np
    entry, row = _dtypes()
    version, n, n_rows, _ = _HEAD.unpack_from(delta)
    size = _HEAD.size + n * _ENTRY.size + n_rows * _ROW.size
    if version != DELTA_VERSION or len(delta) != size:
        raise ValueError(f"not a talkers delta: version {version}, {len(delta)} bytes for "
                         f"{n} entries and {n_rows} rows")
    return (np.frombuffer(delta, entry, n, _HEAD.size),
            np.frombuffer(delta, row, n_rows, _HEAD.size + n * _ENTRY.size))


# --- the aggregator side --------------------------------------------------------------------

def _summed_entries(entries: list) -> dict:
    """Entry arrays (unpack_delta's) as columns sorted by (row, address), one
    entry per (row, address): the sum of the parts."""
    import numpy as np

    def col(name, dtype):
        return np.concatenate([np.asarray(e[name], dtype=dtype) for e in entries]
                              or [np.zeros(0, dtype)])
    key, hi, lo = col("key", np.uint32), col("hi", np.uint64), col("lo", np.uint64)
    order = np.lexsort((lo, hi, key))
    key, hi, lo = key[order], hi[order], lo[order]
    first = _starts(key, hi, lo)
    out = {"key": key[first], "hi": hi[first], "lo": lo[first]}
    for name in ("packets", "bytes"):
        values = col(name, np.uint64)[order]
        out[name] = np.add.reduceat(values, first) if len(first) else values
    return out


def _starts(*columns):
    """Indices where a run of equal rows of sorted columns starts."""
    import numpy as np
    n = len(columns[0])
    new = np.zeros(n, dtype=bool)
    if n:
        new[0] = True
        for c in columns:
            new[1:] |= c[1:] != c[:-1]
    return np.flatnonzero(new)


class Talkers(Analyser):
    """The aggregator side: merges, picks the ports and addresses, maps addresses.

    A window's deltas are read with numpy: the busiest ports come from their
    rows parts alone (each row's exact packets and bytes), and only the entries
    of the rows listed are summed (a sort over them). The run's totals are a
    native TalkersCounter (pt_engine._talkers, on either backend) with the real
    BOUND, into which every delta is merged: the same Space-Saving rule,
    weighted (an address's whole window at once), so the summary is bounded
    the same way."""

    name = "talkers"
    fields = ("talkers",)
    counter = staticmethod(new_counter)

    def __init__(self, ctx: AnalyserContext):
        super().__init__(ctx)
        from .._talkers import TalkersCounter as NativeTalkersCounter
        from ..addresses import Policy
        self.policy = Policy.parse(ctx.addresses)
        self._map = self.policy.mapper(ctx.state_dir)
        self._names: dict[bytes, str] = {}
        self._parts: list[bytes] = []
        self._total = NativeTalkersCounter(BOUND)

    def merge(self, delta, group: int) -> None:
        if delta is not None:
            self._parts.append(delta)
            self._total.merge(delta)

    def _name(self, addr: bytes) -> str:
        name = self._names.get(addr)
        if name is None:
            name = self._names[addr] = self._map(addr)
        return name

    def _entries(self, rows, entries_of) -> list[dict]:
        """The record's ports: `rows` (the rows parts, concatenated), and
        `entries_of(row numbers)` giving those rows' summed entries."""
        import numpy as np
        if not len(rows):
            return []
        order = np.argsort(rows["key"], kind="stable")
        key = rows["key"][order]
        first = _starts(key)
        keys = key[first]
        nbytes = np.add.reduceat(rows["bytes"][order], first)
        error = np.add.reduceat(rows["error"][order], first)
        port_key = keys >> 1                     # proto_index << 16 | port, sorted
        pfirst = _starts(port_key)
        ports = port_key[pfirst]
        per_port = np.add.reduceat(nbytes, pfirst)
        index, number = ports >> 16, ports & 0xFFFF
        proto = np.array([n for n, _ in records.PORT_PROTOCOLS])[index]
        rank = np.lexsort((number, proto, ~per_port))
        keep = rank[:TOP_PORTS]
        selected = self.ctx.ports
        if selected is not None:
            keep = np.concatenate([keep[selected.mask[number[keep]]],
                                   rank[TOP_PORTS:][selected.mask[number[rank[TOP_PORTS:]]]]])
        errors = dict(zip(keys.tolist(), error.tolist()))
        table = entries_of([int(ports[i]) << 1 | d for i in keep.tolist() for d in (0, 1)])
        out = []
        for i in keep.tolist():
            entry = {"proto": records.PROTO_NAMES[int(index[i])], "port": int(number[i])}
            for direction, name in ((0, "in"), (1, "out")):
                row = int(ports[i]) << 1 | direction
                lo, hi = np.searchsorted(table["key"], [row, row + 1])
                top = np.lexsort((table["lo"][lo:hi], table["hi"][lo:hi],
                                  ~table["bytes"][lo:hi]))[:TOP_ADDRESSES] + lo
                entry[name] = [
                    {"address": self._name(h.to_bytes(8, "big") + l_.to_bytes(8, "big")),
                     "packets": p, "bytes": b}
                    for h, l_, p, b in zip(table["hi"][top].tolist(), table["lo"][top].tolist(),
                                           table["packets"][top].tolist(),
                                           table["bytes"][top].tolist())]
                entry[f"{name}_addresses"] = int(hi - lo)
                entry[f"{name}_error_bytes"] = errors.get(row, 0)
            out.append(entry)
        return out

    def window(self, start_ns: int, end_ns: int) -> dict:
        import numpy as np
        parts, self._parts = [unpack_delta(d) for d in self._parts], []
        rows = np.concatenate([r for _, r in parts]) if parts else np.zeros(0, _dtypes()[1])

        def entries_of(wanted):
            wanted = np.array(wanted, dtype=np.uint32)
            return _summed_entries([e[np.isin(e["key"], wanted)] for e, _ in parts])
        return {"talkers": self._record(self._entries(rows, entries_of))}

    def _record(self, entries: list[dict]) -> dict:
        return {"addresses": self.policy.text, "bound": BOUND, "ports": entries}

    def summary(self) -> dict:
        import numpy as np
        total = self._total
        rows = np.frombuffer(total.rows(), _dtypes()[1])
        return {"talkers": self._record(self._entries(
            rows, lambda wanted: _summed_entries([unpack_delta(total.entries_of(wanted))[0]])))}
