"""Two network namespaces joined by a veth pair, for `ping` and `scan` tests:
a client namespace (where pt-engine runs) and a server namespace with TCP
listeners on known ports, ports dropped by an nftables filter (no answer),
ports rejected by it (an ICMP administratively-prohibited answer), and extra
addresses for a sweep. Test-bed addresses only: 198.18.0.0/24 (RFC 2544's
benchmarking range) and 2001:db8::/64 (RFC 3849's documentation prefix),
inside the namespaces, never on the host.

    with ProbeBed(open_ports=[2201], dropped_ports=[2203], extra=[10, 11]) as bed:
        bed.run_engine(["scan", bed.server_addr, "--ports", "2200-2205"])
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid

import netns

LISTENER = r'''
import socket, sys, time
socks = []
for port in map(int, sys.argv[1:]):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    s.listen(4096)
    socks.append(s)
print("ready", flush=True)
import select
while True:
    for s in select.select(socks, [], [])[0]:
        try:
            s.accept()[0].close()
        except OSError:
            pass
'''


def why_not_nft() -> str | None:
    """None if nft can filter inside a namespace here, else the reason."""
    if shutil.which("nft") is None:
        return "needs nftables' nft command (apt-get install nftables)"
    return None


class ProbeBed(netns.NamespaceBed):
    """client ns (198.18.0.1, 2001:db8::1) <-> server ns (198.18.0.2, 2001:db8::2 and
    198.18.0.N for each N of `extra`)."""

    def __init__(self, open_ports=(), dropped_ports=(), extra=(), rejected_ports=()):
        tag = uuid.uuid4().hex[:6]
        self.client_ns, self.server_ns = f"ptpc{tag}", f"ptps{tag}"
        self._cif, self._sif = f"pc{tag}", f"ps{tag}"
        self.client_addr, self.server_addr = "198.18.0.1", "198.18.0.2"
        self.client_addr6, self.server_addr6 = "2001:db8::1", "2001:db8::2"
        self.extra = [f"198.18.0.{n}" for n in extra]
        self.open_ports, self.dropped_ports = list(open_ports), list(dropped_ports)
        self.rejected_ports = list(rejected_ports)
        self._listener: subprocess.Popen | None = None
        self.namespaces = (self.client_ns, self.server_ns)

    def _build(self) -> None:
        run = netns.run
        run("ip", "link", "add", self._cif, "netns", self.client_ns, "type", "veth",
            "peer", "name", self._sif, "netns", self.server_ns)
        for ns, dev, addrs in ((self.client_ns, self._cif,
                                [f"{self.client_addr}/24", f"{self.client_addr6}/64"]),
                               (self.server_ns, self._sif,
                                [f"{self.server_addr}/24", f"{self.server_addr6}/64",
                                 *(f"{a}/24" for a in self.extra)])):
            for addr in addrs:
                run("ip", "-n", ns, "addr", "add", addr, "dev", dev,
                    *(["nodad"] if ":" in addr else []))
            # no duplicate address detection: the addresses answer at once
            run("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.accept_dad=0")
            run("ip", "-n", ns, "link", "set", dev, "up")
        self._wait_reachable()
        if self.dropped_ports or self.rejected_ports:
            verdicts = ((self.dropped_ports, "drop"),
                        (self.rejected_ports, "reject with icmpx type admin-prohibited"))
            lines = "".join(f"  tcp dport {{ {', '.join(map(str, ports))} }} {verdict}\n"
                            for ports, verdict in verdicts if ports)
            rules = ("table inet ptfilter {\n chain input {\n  type filter hook input "
                     f"priority 0;\n{lines} }}\n}}\n")
            subprocess.run(["ip", "netns", "exec", self.server_ns, "nft", "-f", "-"],
                           input=rules.encode(), check=True, capture_output=True)
        if self.open_ports:
            self._listener = subprocess.Popen(
                ["ip", "netns", "exec", self.server_ns, sys.executable, "-c", LISTENER,
                 *map(str, self.open_ports)], stdout=subprocess.PIPE, text=True)
            if self._listener.stdout.readline().strip() != "ready":
                raise RuntimeError("the listener in the server namespace did not start")

    def _wait_reachable(self) -> None:
        """Until both server addresses answer ping (a fresh veth's IPv6 takes a moment)."""
        for addr in (self.server_addr, self.server_addr6):
            for _ in range(50):
                if subprocess.run(["ip", "netns", "exec", self.client_ns, "ping", "-c", "1",
                                   "-W", "0.2", addr], capture_output=True).returncode == 0:
                    break
            else:
                raise RuntimeError(f"{addr} does not answer in the test bed")

    def run_engine(self, argv: list[str], timeout: float = 120,
                   env: dict | None = None) -> tuple[int, list[dict], str]:
        """pt-engine in the client namespace with JSON output and the real target
        addresses (--addresses clear): (status, records, stderr); `env`: variables
        to add to its environment."""
        proc = subprocess.run(["ip", "netns", "exec", self.client_ns, sys.executable, "-m",
                               "pt_engine", *argv, "--format", "json", "--addresses", "clear"],
                              capture_output=True, text=True, timeout=timeout,
                              env=None if env is None else {**os.environ, **env})
        records = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
        return proc.returncode, records, proc.stderr

    def _teardown(self) -> None:
        if self._listener is not None:
            self._listener.kill()
            self._listener.wait()
