"""Per-port counters with scapy's ``PcapReader``, the way its documentation reads a pcap.

Every packet is dissected into scapy layers; ``TCP in pkt`` / ``UDP in pkt``
pick the ports. Bytes are the wire length scapy records (``pkt.wirelen``).

Usage: python scapy_ports.py FILE
"""
import json
import sys

from scapy.layers.inet import TCP, UDP
from scapy.utils import PcapReader


def count(path: str) -> dict:
    """Read `path` to its end; returns totals and the number of port rows in use."""
    counters = {}
    packets = total_bytes = ported = 0
    with PcapReader(path) as reader:
        for pkt in reader:
            wire = pkt.wirelen or len(pkt)
            packets += 1
            total_bytes += wire
            for layer, name in ((TCP, "tcp"), (UDP, "udp")):
                if layer in pkt:
                    l4 = pkt[layer]
                    break
            else:
                continue
            ported += 1
            counters.setdefault((name, l4.dport), [0, 0, 0, 0])
            counters.setdefault((name, l4.sport), [0, 0, 0, 0])
            counters[(name, l4.dport)][0] += 1
            counters[(name, l4.dport)][1] += wire
            counters[(name, l4.sport)][2] += 1
            counters[(name, l4.sport)][3] += wire
    return {"tool": "scapy", "packets": packets, "bytes": total_bytes, "ported": ported,
            "port_rows": len(counters)}


if __name__ == "__main__":
    print(json.dumps(count(sys.argv[1])))
