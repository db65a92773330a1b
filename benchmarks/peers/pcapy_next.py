"""Per-port counters with pcapy-ng's ``next()`` loop and a parser in Python.

One Python call per packet into libpcap, then the Ethernet / 802.1Q /
IPv4 / IPv6 / TCP / UDP headers read with ``int.from_bytes``-style byte
indexing, counters in a dict keyed by (protocol, port). IPv6 extension
headers are not walked.

Usage: python pcapy_next.py FILE
"""
import json
import sys

import pcapy

VLAN_TYPES = (0x8100, 0x88A8, 0x9100)
PROTO_NAMES = {6: "tcp", 17: "udp"}


def count(path: str) -> dict:
    """Read `path` to its end; returns totals and the per-port counter dict."""
    reader = pcapy.open_offline(path)
    counters = {}
    packets = total_bytes = ported = 0
    while True:
        hdr, data = reader.next()
        if hdr is None:
            break
        wire = hdr.getlen()
        packets += 1
        total_bytes += wire
        n = len(data)
        if n < 14:
            continue
        etype = data[12] << 8 | data[13]
        off = 14
        while etype in VLAN_TYPES and n >= off + 4:
            etype = data[off + 2] << 8 | data[off + 3]
            off += 4
        if etype == 0x0800:
            if n < off + 20 or data[off] >> 4 != 4:
                continue
            ihl = (data[off] & 15) * 4
            if ihl < 20 or (data[off + 6] << 8 | data[off + 7]) & 0x1FFF:
                continue
            proto = data[off + 9]
            off += ihl
        elif etype == 0x86DD:
            if n < off + 40:
                continue
            proto = data[off + 6]
            off += 40
        else:
            continue
        name = PROTO_NAMES.get(proto)
        if name is None or n < off + 4:
            continue
        sport = data[off] << 8 | data[off + 1]
        dport = data[off + 2] << 8 | data[off + 3]
        ported += 1
        row = counters.get((name, dport))
        if row is None:
            row = counters[(name, dport)] = [0, 0, 0, 0]
        row[0] += 1
        row[1] += wire
        row = counters.get((name, sport))
        if row is None:
            row = counters[(name, sport)] = [0, 0, 0, 0]
        row[2] += 1
        row[3] += wire
    return {"tool": "pcapy-next", "packets": packets, "bytes": total_bytes, "ported": ported,
            "port_rows": len(counters)}


if __name__ == "__main__":
    print(json.dumps(count(sys.argv[1])))
