"""A veth pair with one end in a network namespace, for live-capture tests.

Nothing is routed: frames are written raw onto the namespace's end with an
AF_PACKET socket and captured on the host's end. No addresses are assigned
and IPv6 is disabled on both ends, so the kernel itself sends nothing.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid

SENDER = r'''
import pickle, socket, sys, time
frames = pickle.load(open(sys.argv[1], "rb"))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[2], 0))
pause = float(sys.argv[3])
for i, f in enumerate(frames):
    s.send(f)
    if pause and i % 100 == 99:
        time.sleep(pause)
'''


def why_not() -> str | None:
    """None if namespaces can be made here, else the reason to skip."""
    if os.geteuid() != 0:
        return "needs root to create a network namespace and a veth pair"
    if shutil.which("ip") is None:
        return "needs iproute2's ip command"
    name = f"ptprobe{os.getpid()}"
    probe = subprocess.run(["ip", "netns", "add", name], capture_output=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace: {probe.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


class VethPair:
    """host end `host` (captured) <-> `peer` in namespace `ns` (sends)."""

    def __init__(self):
        tag = uuid.uuid4().hex[:6]
        self.ns = f"ptns{tag}"
        self.host = f"pth{tag}"
        self.peer = f"ptp{tag}"

    def __enter__(self) -> VethPair:
        run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
        run("ip", "netns", "add", self.ns)
        try:
            run("ip", "link", "add", self.host, "type", "veth", "peer", "name", self.peer)
            run("ip", "link", "set", self.peer, "netns", self.ns)
            for cmd in (["sysctl", "-qw", f"net.ipv6.conf.{self.host}.disable_ipv6=1"],
                        ["ip", "link", "set", self.host, "up"],
                        ["ip", "netns", "exec", self.ns, "sysctl", "-qw",
                         f"net.ipv6.conf.{self.peer}.disable_ipv6=1"],
                        ["ip", "netns", "exec", self.ns, "ip", "link", "set", self.peer, "up"]):
                run(*cmd)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def send(self, frames: list[bytes], pause: float = 0.0, from_host: bool = False) -> None:
        """Write the frames raw onto the namespace's end (or the host's end, to be
        captured inside the namespace), in order."""
        import pickle
        where = [] if from_host else ["ip", "netns", "exec", self.ns]
        with tempfile.NamedTemporaryFile(suffix=".pickle") as fh:
            pickle.dump(frames, fh)
            fh.flush()
            subprocess.run([*where, sys.executable, "-c", SENDER, fh.name,
                            self.host if from_host else self.peer, str(pause)],
                           check=True, timeout=120)

    def __exit__(self, *exc) -> None:
        subprocess.run(["ip", "link", "del", self.host], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)


def set_offloads(device: str, on: bool, netns: str | None = None,
                 tx_checksum: bool = False) -> None:
    """Turn TSO, GSO and GRO on or off (ethtool's set ioctls), as `ethtool -K`;
    with `tx_checksum`, transmit checksumming too (frames leave with their
    checksums computed)."""
    cmds = "0x1f, 0x24, 0x2c" + (", 0x17" if tx_checksum else "")
    code = (
        "import ctypes, fcntl, socket, struct, sys\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"for cmd in ({cmds}):\n"
        "    v = ctypes.create_string_buffer(struct.pack('II', cmd, int(sys.argv[2])), 8)\n"
        "    r = bytearray(struct.pack('16sP', sys.argv[1].encode(), ctypes.addressof(v)).ljust(40, b'\\0'))\n"
        "    fcntl.ioctl(s.fileno(), 0x8946, r)\n")
    where = ["ip", "netns", "exec", netns] if netns else []
    subprocess.run([*where, sys.executable, "-c", code, device, str(int(on))], check=True)


class NamespaceBed:
    """A test bed of network namespaces built on entry and torn down on exit,
    also when building it fails half way. Subclasses name their namespaces in
    `namespaces`, add to them in `_build()` and undo their own parts in
    `_teardown()`."""

    namespaces: tuple[str, ...] = ()

    def __enter__(self):
        try:
            for ns in self.namespaces:
                run("ip", "netns", "add", ns)
                run("ip", "-n", ns, "link", "set", "lo", "up")
            self._build()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _build(self) -> None:
        pass

    def _teardown(self) -> None:
        pass

    def __exit__(self, *exc) -> None:
        self._teardown()
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def run(*argv: str) -> None:
    """A setup command that must succeed (its output kept for the error)."""
    subprocess.run(argv, check=True, capture_output=True)
