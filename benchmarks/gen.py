"""Deterministic pcap fixtures with a manifest of the exact counters they hold.

A fixture is a classic pcap file (microsecond timestamps, link type
EN10MB, snap length 65535, every frame captured whole: caplen == origlen
== the frame length, no FCS) written by numpy in chunks, plus a manifest
(``NAME.manifest.json``) whose ``summary`` has the shape of pt-engine's
summary record: ``totals``, ``classes`` and ``ports`` rows
``[proto, port, in_packets, in_bytes, out_packets, out_bytes]`` sorted by
(protocol name, port). The manifest is computed from the generator's own
arrays (``np.bincount``), never by running pt-engine.

Traffic model (all drawn from ``numpy.random.default_rng`` seeded with the
fixture's seed, so the same parameters give byte-identical files):

* ``ports`` server ports, drawn once from 1-49151; ``flows`` flows, each
  with a client (198.18.0.0/16, ephemeral port 49152-65535) and a server
  (198.19.0.0/16, one of the server ports, picked with Zipf(A) weights
  when ``zipf`` is set, uniformly otherwise). Both ranges are RFC 2544's
  benchmarking block; IPv6 flows use 2001:db8::/32 (RFC 3849).
* ``pool=N`` instead (the many-ports fixtures): both ports of every flow,
  client and server, drawn uniformly from one pool of N ports (drawn once
  from 0-65535; N = 65536 is every port), so TCP and UDP each show up on
  about N rows: 65536 gives about 131k active (protocol, port) rows per
  1-second window at 1 Mpps with flows >= 1M; 1000 and 10000 give the 2k and
  20k rows of the live CPU steps. ``ports`` and ``zipf`` are not used then.
* Each packet picks a flow uniformly and a direction (client -> server or
  back) with even odds, so a server port collects mostly ``in`` on one side
  and ``out`` on the other, and ephemeral ports show up as rows too.
* ``mix="plain"``: Ethernet II, IPv4, TCP (60 %) or UDP (40 %) flows;
  ``mix="tcp"``: the same with TCP flows only.
  ``mix="mixed"``: 15 % of flows and other frames behind one 802.1Q tag,
  flows IPv4 TCP/UDP and IPv6 TCP/UDP (45/25/15/15 %), plus 6 % ICMP echo
  (class ``ip_other``) and 4 % ARP requests (class ``non_ip``).
* Frame sizes: ``"64"``, ``"1500"`` or ``"imix"`` (64/576/1500 at 7:4:1).
  A frame is never shorter than its headers rounded up to 4 bytes (an IPv6
  TCP frame in the 64-byte mix is 76 bytes, 80 with a VLAN tag); the rest of
  the frame is zero payload. IPv4 header checksums are valid; TCP, UDP and
  ICMP checksums are left at zero.
* Packet i has the timestamp T0 + i / rate_pps (1 us apart at the default
  1 Mpps), so 1-second windows hold realistic counts.
* ``split=N`` writes N files instead of one: file k holds packets
  k, k + N, k + 2N... of the same traffic, so the files cover the same time
  span like captures of N interfaces taken side by side, and together they
  hold exactly the one-file fixture's packets.

Run as ``python -m benchmarks.gen --help`` to write a fixture by hand.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

GEN_VERSION = 1
FIXTURE_DIR = Path(__file__).resolve().parent / "fixtures"

T0_S = 1_700_000_000           # first packet's timestamp, seconds since the epoch
PCAP_MAGIC_US = 0xA1B2C3D4
LINKTYPE_EN10MB = 1
SNAPLEN = 65535
PCAP_HEADER = 24
RECORD_HEADER = 16
CHUNK_BYTES = 64 << 20         # target size of one written chunk

SIZE_MIXES = {
    "64": ((64,), (1,)),
    "imix": ((64, 576, 1500), (7, 4, 1)),
    "1500": ((1500,), (1,)),
}

# Packet kinds. Flows carry the first four; ICMP and ARP are single frames.
V4TCP, V4UDP, V6TCP, V6UDP, ICMP, ARP = range(6)
KIND_NAMES = ("ipv4_tcp", "ipv4_udp", "ipv6_tcp", "ipv6_udp", "icmp", "arp")
TCP_KINDS = (V4TCP, V6TCP)
PORTED_KINDS = (V4TCP, V4UDP, V6TCP, V6UDP)


@dataclass(frozen=True)
class ProtoMix:
    """Shares of each kind of traffic in a protocol mix."""

    flow_kinds: tuple[float, float, float, float]   # V4TCP, V4UDP, V6TCP, V6UDP among flows
    icmp: float = 0.0          # share of all packets that are ICMP echo requests
    arp: float = 0.0           # share of all packets that are ARP requests
    vlan: float = 0.0          # share of flows (and of ICMP/ARP frames) with an 802.1Q tag


PROTO_MIXES = {
    "plain": ProtoMix(flow_kinds=(0.6, 0.4, 0.0, 0.0)),
    "mixed": ProtoMix(flow_kinds=(0.45, 0.25, 0.15, 0.15), icmp=0.06, arp=0.04, vlan=0.15),
    "tcp": ProtoMix(flow_kinds=(1.0, 0.0, 0.0, 0.0)),
}

# Rows of the manifest's port table: protocol names sorted as pt-engine sorts them.
PROTO_ROW = {"tcp": 0, "udp": 1}


@dataclass(frozen=True)
class FixtureSpec:
    """Everything that determines a fixture's bytes; the file name spells it out."""

    mix: str = "plain"
    sizes: str = "64"
    packets: int = 10_000_000
    ports: int = 1000
    flows: int = 10_000
    zipf: float | None = None
    seed: int = 1
    rate_pps: int = 1_000_000
    split: int = 1
    pool: int | None = None    # both ports of a flow from one pool of this many (see above)

    def __post_init__(self):
        if self.mix not in PROTO_MIXES:
            raise ValueError(f"mix {self.mix!r}: choose one of {', '.join(PROTO_MIXES)}")
        if self.sizes not in SIZE_MIXES:
            raise ValueError(f"sizes {self.sizes!r}: choose one of {', '.join(SIZE_MIXES)}")
        if not 1 <= self.ports <= 49151:
            raise ValueError(f"ports {self.ports}: between 1 and 49151")
        for name in ("packets", "flows", "rate_pps", "split"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} {getattr(self, name)}: must be at least 1")
        if self.pool is not None:
            if not 1 <= self.pool <= 65536:
                raise ValueError(f"pool {self.pool}: between 1 and 65536")
            if self.zipf is not None:
                raise ValueError("zipf applies to server ports, which a pool replaces")

    @property
    def name(self) -> str:
        """File stem, e.g. plain-64-n10M-p1000-f10000-zu-s1-r1M (a pool: ...-pool65536-...)."""
        zipf = "u" if self.zipf is None else f"{self.zipf:g}"
        ports = f"p{self.ports}" if self.pool is None else f"pool{self.pool}"
        return (f"{self.mix}-{self.sizes}-n{short_count(self.packets)}-{ports}-f{self.flows}"
                f"-z{zipf}-s{self.seed}-r{short_count(self.rate_pps)}")

    def stems(self) -> list[str]:
        """One stem per file: NAME, or NAME-part0of2, NAME-part1of2..."""
        if self.split == 1:
            return [self.name]
        return [f"{self.name}-part{k}of{self.split}" for k in range(self.split)]

    def paths(self, directory: Path = FIXTURE_DIR) -> list[Path]:
        """The pcap files of this fixture in `directory`."""
        return [directory / f"{stem}.pcap" for stem in self.stems()]


def short_count(n: int) -> str:
    """10000000 -> '10M', 200000 -> '200k', 12345 -> '12345'."""
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{unit}"
    return str(n)


def manifest_path(pcap: Path) -> Path:
    """Where the manifest of a fixture file lives."""
    return pcap.with_suffix(".manifest.json")


def load_manifest(pcap: Path) -> dict:
    """The manifest of a fixture file (raises FileNotFoundError if missing)."""
    return json.loads(manifest_path(pcap).read_text())


def merge_summaries(summaries: list[dict]) -> dict:
    """The summary of several files read together: counters added row by row."""
    totals = {"packets": 0, "bytes": 0}
    classes: dict[str, dict[str, int]] = {}
    rows: dict[tuple[str, int], list[int]] = {}
    for s in summaries:
        for k in totals:
            totals[k] += s["totals"][k]
        for name, c in s["classes"].items():
            slot = classes.setdefault(name, {"packets": 0, "bytes": 0})
            slot["packets"] += c["packets"]
            slot["bytes"] += c["bytes"]
        for proto, port, *values in s["ports"]:
            acc = rows.setdefault((proto, port), [0, 0, 0, 0])
            for i, v in enumerate(values):
                acc[i] += v
    return {"totals": totals, "classes": classes,
            "ports": [[p, port, *v] for (p, port), v in sorted(rows.items())]}


# --------------------------------------------------------------------------- traffic

@dataclass
class _Flows:
    """Per-flow columns, drawn once per fixture."""

    kind: np.ndarray
    client_ip: np.ndarray      # uint32, host order
    server_ip: np.ndarray
    client_port: np.ndarray
    server_port: np.ndarray
    vlan: np.ndarray           # bool
    vlan_id: np.ndarray


def _draw_flows(spec: FixtureSpec) -> _Flows:
    rng = np.random.default_rng([spec.seed, 0])
    mix = PROTO_MIXES[spec.mix]
    server_ports = rng.choice(np.arange(1, 49152, dtype=np.int64), spec.ports, replace=False)
    if spec.zipf is None:
        weights = np.full(spec.ports, 1.0 / spec.ports)
    else:
        weights = 1.0 / np.arange(1, spec.ports + 1, dtype=np.float64) ** spec.zipf
        weights /= weights.sum()
    f = spec.flows
    flows = _Flows(
        kind=rng.choice(4, f, p=np.array(mix.flow_kinds) / sum(mix.flow_kinds)).astype(np.uint8),
        client_ip=(0xC6120000 + rng.integers(1, 65535, f)).astype(np.uint32),
        server_ip=(0xC6130000 + rng.integers(1, 65535, f)).astype(np.uint32),
        client_port=rng.integers(49152, 65536, f).astype(np.uint16),
        server_port=server_ports[rng.choice(spec.ports, f, p=weights)].astype(np.uint16),
        vlan=rng.random(f) < mix.vlan,
        vlan_id=rng.integers(1, 4095, f).astype(np.uint16),
    )
    if spec.pool is not None:
        # Its own stream: the draws above stay those of the same spec without a pool.
        prng = np.random.default_rng([spec.seed, 0, spec.pool])
        pool = (np.arange(65536) if spec.pool == 65536 else
                np.sort(prng.choice(65536, spec.pool, replace=False))).astype(np.uint16)
        flows.client_port = pool[prng.integers(0, spec.pool, f)]
        flows.server_port = pool[prng.integers(0, spec.pool, f)]
    return flows


@dataclass
class _Packets:
    """Per-packet columns of one chunk (or of one file's share of it)."""

    index: np.ndarray          # packet number in the one-file fixture
    kind: np.ndarray
    vlan: np.ndarray
    vlan_id: np.ndarray
    reply: np.ndarray          # 1: server -> client
    src_ip: np.ndarray
    dst_ip: np.ndarray
    src_port: np.ndarray
    dst_port: np.ndarray
    frame_len: np.ndarray      # int64

    def take(self, sel) -> "_Packets":
        """The packets at `sel` (indices or a mask)."""
        return _Packets(**{k: v[sel] for k, v in self.__dict__.items()})


def _draw_chunk(spec: FixtureSpec, flows: _Flows, chunk: int, start: int, stop: int) -> _Packets:
    rng = np.random.default_rng([spec.seed, 1 + chunk])
    mix = PROTO_MIXES[spec.mix]
    n = stop - start
    flow = rng.integers(0, spec.flows, n)
    reply = rng.integers(0, 2, n).astype(np.uint8)
    kind = flows.kind[flow]
    vlan = flows.vlan[flow]
    if mix.icmp or mix.arp:
        u = rng.random(n)
        single = u < mix.icmp + mix.arp
        kind = np.where(u < mix.icmp, ICMP, np.where(single, ARP, kind)).astype(np.uint8)
        vlan = np.where(single, rng.random(n) < mix.vlan, vlan)
    sizes, weights = SIZE_MIXES[spec.sizes]
    if len(sizes) == 1:
        nominal = np.full(n, sizes[0], dtype=np.int64)
    else:
        w = np.array(weights, dtype=np.float64)
        nominal = np.array(sizes, dtype=np.int64)[rng.choice(len(sizes), n, p=w / w.sum())]
    layout = kind.astype(np.int64) * 2 + vlan
    frame_len = np.maximum(nominal, _MIN_FRAME[layout])
    fwd = reply == 0
    cip, sip = flows.client_ip[flow], flows.server_ip[flow]
    cport, sport = flows.client_port[flow], flows.server_port[flow]
    return _Packets(
        index=np.arange(start, stop, dtype=np.int64), kind=kind, vlan=vlan,
        vlan_id=flows.vlan_id[flow], reply=reply,
        src_ip=np.where(fwd, cip, sip), dst_ip=np.where(fwd, sip, cip),
        src_port=np.where(fwd, cport, sport), dst_port=np.where(fwd, sport, cport),
        frame_len=frame_len,
    )


# --------------------------------------------------------------------------- frames

_L4_FIELDS = {
    "tcp": [("src_port", ">u2"), ("dst_port", ">u2"), ("seq", ">u4"), ("ack", ">u4"),
            ("data_off", "u1"), ("flags", "u1"), ("window", ">u2"), ("l4_csum", ">u2"),
            ("urgent", ">u2")],
    "udp": [("src_port", ">u2"), ("dst_port", ">u2"), ("udp_len", ">u2"), ("l4_csum", ">u2")],
    "icmp": [("icmp_type", "u1"), ("icmp_code", "u1"), ("l4_csum", ">u2"), ("icmp_id", ">u2"),
             ("icmp_seq", ">u2")],
}
_L3_FIELDS = {
    "ipv4": [("ver_ihl", "u1"), ("tos", "u1"), ("ip_len", ">u2"), ("ip_id", ">u2"),
             ("frag", ">u2"), ("ttl", "u1"), ("ip_proto", "u1"), ("ip_csum", ">u2"),
             ("src_ip", ">u4"), ("dst_ip", ">u4")],
    "ipv6": [("ver_flow", ">u4"), ("ip_len", ">u2"), ("ip_proto", "u1"), ("ttl", "u1"),
             ("src_net", ">u8"), ("src_ip", ">u8"), ("dst_net", ">u8"), ("dst_ip", ">u8")],
    "arp": [("arp_hw", ">u2"), ("arp_pt", ">u2"), ("arp_hlen", "u1"), ("arp_plen", "u1"),
            ("arp_op", ">u2"), ("arp_sha", ("u1", 6)), ("src_ip", ">u4"), ("arp_tha", ("u1", 6)),
            ("dst_ip", ">u4")],
}
_KIND_STACK = {V4TCP: ("ipv4", "tcp"), V4UDP: ("ipv4", "udp"), V6TCP: ("ipv6", "tcp"),
               V6UDP: ("ipv6", "udp"), ICMP: ("ipv4", "icmp"), ARP: ("arp", None)}
_ETHERTYPE = {"ipv4": 0x0800, "ipv6": 0x86DD, "arp": 0x0806}
_IP_PROTO = {"tcp": 6, "udp": 17, "icmp": 1}


@dataclass(frozen=True)
class _Layout:
    """One kind of frame: the numpy record of its pcap record header + frame headers.

    ``dtype`` covers the first ``header`` bytes of the pcap record (headers
    rounded up to 4 bytes); ``l3`` and ``l4`` are byte offsets into it.
    """

    kind: int
    vlan: bool
    dtype: np.dtype = field(init=False)
    l3: int = field(init=False)
    l4: int = field(init=False)

    def __post_init__(self):
        l3_name, l4_name = _KIND_STACK[self.kind]
        fields = [("ts_sec", "<u4"), ("ts_usec", "<u4"), ("caplen", "<u4"), ("origlen", "<u4"),
                  ("eth_dst", ("u1", 6)), ("eth_src", ("u1", 6))]
        if self.vlan:
            fields += [("tpid", ">u2"), ("tci", ">u2")]
        fields += [("ethertype", ">u2")]
        l3 = sum(np.dtype(f).itemsize for _, f in fields)
        fields += _L3_FIELDS[l3_name]
        l4 = sum(np.dtype(f).itemsize for _, f in fields)
        fields += _L4_FIELDS.get(l4_name, [])
        end = sum(np.dtype(f).itemsize for _, f in fields)
        if (end + 3) & ~3 != end:
            fields.append(("pad", ("u1", ((end + 3) & ~3) - end)))
        object.__setattr__(self, "dtype", np.dtype(fields))
        object.__setattr__(self, "l3", l3)
        object.__setattr__(self, "l4", l4)

    @property
    def header(self) -> int:
        """Bytes of the record this layout writes."""
        return self.dtype.itemsize


_LAYOUTS = [_Layout(k, bool(v)) for k in range(6) for v in (0, 1)]
_MIN_FRAME = np.array([lay.header - RECORD_HEADER for lay in _LAYOUTS], dtype=np.int64)


def _headers(lay: _Layout, p: _Packets, ts_sec, ts_usec) -> np.ndarray:
    """The first `lay.header` bytes of each packet's pcap record, as an (n, header) array."""
    h = np.zeros(len(p.kind), dtype=lay.dtype)
    raw = h.view(np.uint8).reshape(len(h), lay.header)
    h["ts_sec"] = ts_sec
    h["ts_usec"] = ts_usec
    h["caplen"] = p.frame_len
    h["origlen"] = p.frame_len
    # Locally administered MACs 02:00:00:00:00:01 (client) and :02 (server).
    h["eth_dst"][:, 0] = h["eth_src"][:, 0] = 0x02
    h["eth_dst"][:, 5] = 2 - p.reply
    h["eth_src"][:, 5] = 1 + p.reply
    if lay.vlan:
        h["tpid"] = 0x8100
        h["tci"] = p.vlan_id
    l3_name, l4_name = _KIND_STACK[lay.kind]
    h["ethertype"] = _ETHERTYPE[l3_name]
    l3_len = p.frame_len - (lay.l3 - RECORD_HEADER)
    h["src_ip"] = p.src_ip
    h["dst_ip"] = p.dst_ip
    if l3_name == "arp":
        h["eth_dst"] = 0xFF                         # broadcast request
        h["arp_hw"], h["arp_pt"], h["arp_hlen"], h["arp_plen"], h["arp_op"] = 1, 0x0800, 6, 4, 1
        h["arp_sha"] = h["eth_src"]
        return raw
    # Checksums (RFC 1071) are summed from the field values: 16-bit words
    # added up in wide integers and folded once at the end.
    proto = _IP_PROTO[l4_name]
    h["ip_proto"] = proto
    h["ttl"] = 64
    ip_words = _words(p.src_ip) + _words(p.dst_ip)
    if l3_name == "ipv6":
        h["ver_flow"] = 0x60000000
        h["ip_len"] = l3_len - 40
        # 2001:db8:0:1::/64 holds the clients, 2001:db8:0:2::/64 the servers.
        h["src_net"] = 0x20010DB800000001 + p.reply.astype(np.uint64)
        h["dst_net"] = 0x20010DB800000002 - p.reply.astype(np.uint64)
        ip_words = ip_words + 2 * (0x2001 + 0x0DB8) + 3
    else:
        h["ver_ihl"] = 0x45
        h["ip_len"] = l3_len
        h["ip_id"] = p.index & 0xFFFF
        h["frag"] = 0x4000                          # don't fragment
        h["ip_csum"] = _fold(0x4500 + l3_len + (p.index & 0xFFFF) + 0x4000 + (64 << 8 | proto)
                             + ip_words)
    l4_len = p.frame_len - (lay.l4 - RECORD_HEADER)
    if l4_name == "icmp":
        h["icmp_type"] = 8                          # echo request
        h["icmp_seq"] = p.index & 0xFFFF
        h["l4_csum"] = _fold(0x0800 + (p.index & 0xFFFF))
        return raw
    h["src_port"] = p.src_port
    h["dst_port"] = p.dst_port
    l4_words = p.src_port.astype(np.int64) + p.dst_port
    if l4_name == "tcp":
        h["seq"] = p.index & 0xFFFFFFFF
        h["data_off"] = 0x50                        # 20-byte header
        h["flags"] = 0x18                           # PSH ACK
        h["window"] = 0xFFFF
        l4_words += _words(p.index & 0xFFFFFFFF) + 0x5018 + 0xFFFF
    else:
        h["udp_len"] = l4_len
        l4_words += l4_len
    # The pseudo-header (RFC 793, RFC 8200 section 8.1) counts too; the zero
    # payload adds nothing.
    csum = _fold(l4_words + ip_words + proto + l4_len)
    h["l4_csum"] = np.where(csum == 0, 0xFFFF, csum)   # UDP: 0 would mean "none"
    return raw


def _words(x: np.ndarray) -> np.ndarray:
    """Sum of the two 16-bit halves of 32-bit values, as int64."""
    x = x.astype(np.int64)
    return (x >> 16) + (x & 0xFFFF)


def _fold(total: np.ndarray) -> np.ndarray:
    """One's complement of a one's-complement sum of 16-bit words (RFC 1071)."""
    total = np.asarray(total, dtype=np.int64)
    for _ in range(3):
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _records(p: _Packets, rate_pps: int, scratch: np.ndarray) -> memoryview:
    """The pcap records of packets `p`, back to back, built in (a prefix of) `scratch`.

    `scratch` is reused from chunk to chunk: zeroing it is cheaper than
    faulting in fresh pages for every chunk.
    """
    usec = p.index * 1_000_000 // rate_pps
    ts_sec = T0_S + usec // 1_000_000
    ts_usec = usec % 1_000_000
    rec_len = RECORD_HEADER + p.frame_len
    offsets = np.zeros(len(rec_len), dtype=np.int64)
    np.cumsum(rec_len[:-1], out=offsets[1:])
    buf = scratch[:int(rec_len.sum())]
    buf.fill(0)
    uniform = bool((rec_len == rec_len[0]).all()) if len(rec_len) else True
    layout = p.kind.astype(np.int64) * 2 + p.vlan
    for lid in np.flatnonzero(np.bincount(layout, minlength=len(_LAYOUTS))):
        lay = _LAYOUTS[lid]
        sel = np.flatnonzero(layout == lid)
        hdr = _headers(lay, p.take(sel), ts_sec[sel], ts_usec[sel])
        if uniform:
            buf.reshape(-1, int(rec_len[0]))[sel, :lay.header] = hdr
        else:
            # Every record starts on a 4-byte boundary (24-byte file header,
            # 16-byte record headers, frame lengths multiples of 4): scatter words.
            words = buf.view(np.uint32)
            cols = np.arange(lay.header // 4)
            words[(offsets[sel] // 4)[:, None] + cols] = hdr.view(np.uint32)
    return buf.data


# --------------------------------------------------------------------------- manifest

class _Tally:
    """Exact counters of one file, accumulated chunk by chunk."""

    def __init__(self):
        size = len(PROTO_ROW) * 65536
        self.port = np.zeros((4, size), dtype=np.int64)   # in_p, in_b, out_p, out_b
        self.classes = {c: [0, 0] for c in ("ported", "ip_other", "non_ip", "truncated")}
        self.kinds = [0] * len(KIND_NAMES)
        self.first_index = None
        self.last_index = None

    def add(self, p: _Packets) -> None:
        if len(p.index) == 0:
            return
        if self.first_index is None:
            self.first_index = int(p.index[0])
        self.last_index = int(p.index[-1])
        size = self.port.shape[1]
        wire = p.frame_len
        counts = np.bincount(p.kind, minlength=len(KIND_NAMES))
        byte_sums = np.bincount(p.kind, weights=wire, minlength=len(KIND_NAMES))
        for k in range(len(KIND_NAMES)):
            self.kinds[k] += int(counts[k])
            cls = "ported" if k in PORTED_KINDS else ("ip_other" if k == ICMP else "non_ip")
            self.classes[cls][0] += int(counts[k])
            self.classes[cls][1] += int(round(byte_sums[k]))   # exact: < 2**53 per chunk
        ported = np.isin(p.kind, PORTED_KINDS)
        row = np.where(np.isin(p.kind[ported], TCP_KINDS), PROTO_ROW["tcp"], PROTO_ROW["udp"])
        w = wire[ported].astype(np.float64)
        for i, port in ((0, p.dst_port[ported]), (2, p.src_port[ported])):
            key = row * 65536 + port.astype(np.int64)
            self.port[i] += np.bincount(key, minlength=size)
            self.port[i + 1] += np.rint(np.bincount(key, weights=w, minlength=size)).astype(np.int64)

    def summary(self) -> dict:
        names = sorted(PROTO_ROW, key=PROTO_ROW.get)
        keys = np.flatnonzero(self.port[0] | self.port[2])
        values = self.port[:, keys].T.tolist()
        ports = [[names[k >> 16], k & 0xFFFF, *v] for k, v in zip(keys.tolist(), values)]
        classes = {c: {"packets": v[0], "bytes": v[1]} for c, v in self.classes.items()}
        totals = {"packets": sum(v[0] for v in self.classes.values()),
                  "bytes": sum(v[1] for v in self.classes.values())}
        return {"totals": totals, "classes": classes, "ports": ports}


# --------------------------------------------------------------------------- writing

def _file_header() -> bytes:
    return np.array([PCAP_MAGIC_US, 2 | (4 << 16), 0, 0, SNAPLEN, LINKTYPE_EN10MB],
                    dtype="<u4").tobytes()


def generate(spec: FixtureSpec, directory: Path = FIXTURE_DIR) -> list[Path]:
    """Write the fixture's pcap file(s) and manifest(s); returns the pcap paths.

    Files are written under temporary names and renamed when complete, so an
    interrupted run never leaves a fixture that looks finished. Raises OSError
    when the directory is not writable.
    """
    directory.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    flows = _draw_flows(spec)
    paths = spec.paths(directory)
    tmp = [p.with_suffix(".pcap.tmp") for p in paths]
    tallies = [_Tally() for _ in paths]
    mean_size = sum(s * w for s, w in zip(*SIZE_MIXES[spec.sizes])) / sum(SIZE_MIXES[spec.sizes][1])
    chunk = max(4096, CHUNK_BYTES // int(RECORD_HEADER + mean_size))   # same for any split
    longest = max(SIZE_MIXES[spec.sizes][0] + (int(_MIN_FRAME.max()),))
    scratch = np.empty(chunk * (RECORD_HEADER + longest), dtype=np.uint8)
    files = [open(t, "wb") for t in tmp]
    try:
        for fh in files:
            fh.write(_file_header())
        for c, start in enumerate(range(0, spec.packets, chunk)):
            packets = _draw_chunk(spec, flows, c, start, min(start + chunk, spec.packets))
            for k, (fh, tally) in enumerate(zip(files, tallies)):
                part = packets if spec.split == 1 else packets.take(packets.index % spec.split == k)
                tally.add(part)
                fh.write(_records(part, spec.rate_pps, scratch))
    finally:
        for fh in files:
            fh.close()
    elapsed = time.perf_counter() - started
    for k, (path, t, tally) in enumerate(zip(paths, tmp, tallies)):
        manifest = {
            "generator": "benchmarks/gen.py",
            "generator_version": GEN_VERSION,
            "spec": asdict(spec),
            "file": path.name,
            "part": k,
            "file_bytes": t.stat().st_size,
            "first_ts_ns": _ts_ns(tally.first_index, spec.rate_pps),
            "last_ts_ns": _ts_ns(tally.last_index, spec.rate_pps),
            "kinds": dict(zip(KIND_NAMES, tally.kinds)),
            "generated_in_s": round(elapsed, 3),
            "summary": tally.summary(),
        }
        manifest_path(path).write_text(json.dumps(manifest, separators=(",", ":")) + "\n")
        os.replace(t, path)
    return paths


def _ts_ns(index: int | None, rate_pps: int) -> int | None:
    if index is None:
        return None
    return T0_S * 1_000_000_000 + index * 1_000_000 // rate_pps * 1000


def ensure(spec: FixtureSpec, directory: Path = FIXTURE_DIR, log=None) -> list[Path]:
    """The fixture's pcap paths, generating them first if any file or manifest is missing
    or was written by another generator version."""
    paths = spec.paths(directory)
    for p in paths:
        try:
            if load_manifest(p)["generator_version"] != GEN_VERSION or not p.exists():
                break
        except (FileNotFoundError, KeyError, ValueError):
            break
    else:
        return paths
    if log:
        log(f"generating {spec.name}" + (f" ({spec.split} files)" if spec.split > 1 else ""))
    return generate(spec, directory)


def main(argv: list[str] | None = None) -> int:
    """Command line: write one fixture and print where it went."""
    d = FixtureSpec()
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gen", description=__doc__.split("\n")[0])
    ap.add_argument("--mix", default=d.mix, choices=sorted(PROTO_MIXES))
    ap.add_argument("--sizes", default=d.sizes, choices=sorted(SIZE_MIXES))
    ap.add_argument("--packets", type=int, default=d.packets)
    ap.add_argument("--ports", type=int, default=d.ports)
    ap.add_argument("--flows", type=int, default=d.flows)
    ap.add_argument("--zipf", type=float, default=None, metavar="A",
                    help="Zipf exponent of server-port popularity (default: uniform)")
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--rate", type=int, default=d.rate_pps, dest="rate_pps",
                    help="packets per second of the timestamps (default 1000000)")
    ap.add_argument("--split", type=int, default=d.split,
                    help="write N interleaved files covering the same time span")
    ap.add_argument("--pool", type=int, default=None, metavar="N",
                    help="both ports of every flow from one pool of N ports (65536: all); "
                         "replaces --ports and --zipf")
    ap.add_argument("--dir", type=Path, default=FIXTURE_DIR)
    ap.add_argument("--force", action="store_true", help="regenerate even if present")
    args = ap.parse_args(argv)
    opts = {k: v for k, v in vars(args).items() if k not in ("dir", "force")}
    try:
        spec = FixtureSpec(**opts)
    except ValueError as err:
        ap.error(str(err))
    t = time.perf_counter()
    paths = generate(spec, args.dir) if args.force else ensure(spec, args.dir)
    for p in paths:
        m = load_manifest(p)
        print(f"{p}  {m['summary']['totals']['packets']} packets  "
              f"{p.stat().st_size / 2**20:.0f} MiB")
    print(f"{time.perf_counter() - t:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
