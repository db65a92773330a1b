"""Per-port counters with dpkt, the way its documentation reads a pcap.

``dpkt.pcap.Reader`` yields (timestamp, bytes); ``dpkt.ethernet.Ethernet``
decodes the frame (802.1Q tags included) down to TCP or UDP. The reader
does not expose the original length, so bytes are captured lengths.

Usage: python dpkt_ports.py FILE
"""
import json
import sys

import dpkt


def count(path: str) -> dict:
    """Read `path` to its end; returns totals and the number of port rows in use."""
    counters = {}
    packets = total_bytes = ported = 0
    with open(path, "rb") as fh:
        for _ts, buf in dpkt.pcap.Reader(fh):
            packets += 1
            total_bytes += len(buf)
            ip = dpkt.ethernet.Ethernet(buf).data
            if not isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
                continue
            l4 = ip.data
            if isinstance(l4, dpkt.tcp.TCP):
                name = "tcp"
            elif isinstance(l4, dpkt.udp.UDP):
                name = "udp"
            else:
                continue
            ported += 1
            counters.setdefault((name, l4.dport), [0, 0, 0, 0])
            counters.setdefault((name, l4.sport), [0, 0, 0, 0])
            counters[(name, l4.dport)][0] += 1
            counters[(name, l4.dport)][1] += len(buf)
            counters[(name, l4.sport)][2] += 1
            counters[(name, l4.sport)][3] += len(buf)
    return {"tool": "dpkt", "packets": packets, "bytes": total_bytes, "ported": ported,
            "port_rows": len(counters)}


if __name__ == "__main__":
    print(json.dumps(count(sys.argv[1])))
