"""Peers: plain per-port counting scripts written the way a user of each library would.

Each script takes one pcap file and prints one JSON line,
``{"tool", "packets", "bytes", "ported", "port_rows"}``, so the suite can
check its counts against the fixture's manifest. Bytes are the wire length
where the library exposes it, the captured length otherwise (equal in the
generated fixtures). They share no code with pt-engine or with each other.
"""
