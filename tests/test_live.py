"""`pt-engine run` on real traffic made here: a veth pair into a network namespace."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import msgpack
import numpy as np
import psutil
import pytest

import netns
from pt_engine import _reference, stream
from pt_engine.analysers.ports import class_totals, port_rows, stream_order
from pt_engine.records import RECORD_DTYPE
from frames import (ETH_ARP, ETH_IPV6, ETH_VLAN, arp, eth, icmp, ipv4, ipv6, sctp, tcp, udp,
                    vlan)

REASON = netns.why_not()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def mixed_frames(n_ports: int = 40, repeat: int = 5) -> list[bytes]:
    """TCP/UDP/SCTP over IPv4 and IPv6, VLAN tags, fragments, ARP, ICMP."""
    frames = []
    for r in range(repeat):
        for p in range(n_ports):
            sport, dport = 20000 + p, 1000 + (p * 7) % 97
            frames.append(eth() + ipv4("192.0.2.1", "192.0.2.2", 6, tcp(sport, dport, b"t" * p)))
            frames.append(eth() + ipv4("192.0.2.1", "192.0.2.2", 17, udp(dport, sport, b"u" * r)))
            frames.append(eth(et=ETH_VLAN) + vlan(ETH_IPV6, vid=5)
                          + ipv6("2001:db8::1", "2001:db8::2", 132, sctp(sport, 36412)))
        frames.append(eth() + ipv4("192.0.2.1", "192.0.2.2", 17, udp(5353, 53, b"f" * 64), mf=True))
        frames.append(eth() + ipv4("192.0.2.1", "192.0.2.2", 17, b"g" * 40, frag_offset=9))
        frames.append(eth(et=ETH_ARP) + arp())
        frames.append(eth() + ipv4("192.0.2.1", "192.0.2.2", 1, icmp()))
    return frames


def expected_summary(frames: list[bytes]) -> dict:
    """What the counting rules say these frames add up to (the reference oracle)."""
    data = b"".join(frames)
    lens = np.array([len(f) for f in frames], np.uint32)
    offsets = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.uint32)
    out = np.zeros(len(frames), RECORD_DTYPE)
    _reference.parse_batch(1, data, offsets, lens, lens, np.zeros(len(frames), np.uint64), 0, out)
    table = np.zeros((5 * 65536, 4), np.uint64)
    classes = np.zeros((4, 2), np.uint64)
    touched = np.zeros(5 * 65536, np.uint32)
    state = np.zeros(4, np.uint64)
    _reference.reduce_records(out, 0, len(out), 1, table, classes, touched, state)
    rows = stream_order(touched[:int(state[0])])
    totals, per_class = class_totals(classes)
    return {"totals": totals, "classes": per_class, "ports": port_rows(rows, table[rows], None)}


def start_engine(*args: str) -> subprocess.Popen:
    """Start `pt-engine run ARGS` and wait until it says it is capturing."""
    proc = subprocess.Popen([sys.executable, "-m", "pt_engine", "run", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = []
    while not lines or "capturing on" not in lines[-1]:     # warnings may come first
        line = proc.stderr.readline().decode()
        assert line, "".join(lines) + proc.stderr.read().decode()
        lines.append(line)
    proc.early_stderr = "".join(lines)
    time.sleep(0.3)    # the fanout group and BPF are in place once READY was sent
    return proc


def stop_engine(proc: subprocess.Popen) -> tuple[list[dict], str]:
    time.sleep(0.5)    # let the last packets reach the capture processes
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return stream.decode(out), err.decode()


def capture_processes(pid: int) -> list:
    """The engine's capture processes still running (the only children it has)."""
    alive = []
    for child in psutil.Process(pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child)
        except psutil.NoSuchProcess:
            pass
    return alive


def counters(record: dict) -> dict:
    return {k: record[k] for k in ("totals", "classes", "ports")}


@pytest.fixture
def veth():
    with netns.VethPair() as pair:
        yield pair


@pytest.mark.parametrize("workers", [1, 2])
def test_counts_exactly_what_was_sent(veth, workers):
    frames = mixed_frames()
    before = set(os.listdir("/dev/shm"))
    proc = start_engine("-i", veth.host, "--workers", str(workers), "--interval", "0.2")
    veth.send(frames, pause=0.002)
    records, err = stop_engine(proc)
    assert proc.returncode == 0, err
    summary = records[-1]
    assert summary["type"] == "summary" and summary["interrupted"] is True
    assert counters(summary) == expected_summary(frames)
    assert len(records[0]["sources"]) == workers
    windows = [r for r in records if r["type"] == "window"]
    assert all(w["end_ns"] == n["start_ns"] for w, n in zip(windows, windows[1:])), \
        "live windows are consecutive, empty ones included"
    last = windows[-1]["sources"]
    assert sum(s["dropped"] + s["transport_dropped"] for s in last) == 0
    assert set(os.listdir("/dev/shm")) <= before


def test_two_interfaces_reported_apart_and_summed(veth):
    with netns.VethPair() as other:
        first, second = mixed_frames(10, 2), mixed_frames(3, 1)
        proc = start_engine("-i", veth.host, "-i", other.host, "--interval", "0.2")
        veth.send(first)
        other.send(second)
        records, err = stop_engine(proc)
    assert proc.returncode == 0, err
    summary = records[-1]
    parts = {part["name"]: part for part in summary["interfaces"]}
    assert counters(parts[veth.host]) == expected_summary(first)
    assert counters(parts[other.host]) == expected_summary(second)
    assert counters(summary) == expected_summary(first + second)


def _read_all(sock: socket.socket, got: list) -> None:
    unpacker = msgpack.Unpacker(raw=False)
    while True:
        data = sock.recv(1 << 20)
        if not data:
            return
        unpacker.feed(data)
        got.extend(unpacker)


def test_stalled_subscriber_never_slows_the_others(veth, tmp_path):
    import threading
    path = tmp_path / "pt.sock"
    proc = start_engine("-i", veth.host, "--interval", "0.1", "--output", f"unix:{path}",
                        "--subscriber-buffer", "1")
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(str(path))
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.connect(str(path))
    got: list = []
    reader = threading.Thread(target=_read_all, args=(live, got), daemon=True)
    reader.start()
    # many ports, so that windows are large (~600 KiB a round) and the stalled
    # subscriber's kernel buffer and 1 MiB allowance overflow within three rounds
    frames = [eth() + ipv4("192.0.2.1", "192.0.2.2", 17, udp(1024 + p, 60000 - p))
              for p in range(20000)]
    for _ in range(3):
        veth.send(frames)
        time.sleep(0.3)
    frames = frames * 3
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    reader.join(30)
    assert proc.returncode == 0
    assert "too slow" in err.decode()
    assert got and got[-1]["type"] == "summary", "the live subscriber got the whole stream"
    windows = [r for r in got if r["type"] == "window"]
    assert [r["type"] for r in got[:2]] == ["hello", "snapshot"]
    assert all(w["end_ns"] == n["start_ns"] for w, n in zip(windows, windows[1:]))
    assert got[-1]["totals"]["packets"] == len(frames)
    assert sum(w["totals"]["packets"] for w in windows) == len(frames)
    stalled.close()
    live.close()


@pytest.mark.parametrize("extra, kills", [
    ((), 1),
    # With --user a capture process is restarted from a handle opened before the
    # drop (no process keeps the right to open one), as often as without.
    (("--user", "nobody"), 3),
    (("--user", "nobody", "--workers", "2"), 3),
], ids=["root", "user", "user-2-workers"])
def test_killed_capture_processes_are_reported_and_restarted(veth, extra, kills):
    before = set(os.listdir("/dev/shm"))
    proc = start_engine("-i", veth.host, "--interval", "0.2", *extra)
    workers = int(extra[-1]) if "--workers" in extra else 1
    for _ in range(kills):
        victims = capture_processes(proc.pid)
        assert len(victims) == workers
        victims[0].send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and victims[0] in capture_processes(proc.pid):
            time.sleep(0.1)
        time.sleep(1.0)
    frames = mixed_frames(5, 1)
    veth.send(frames)
    records, err = stop_engine(proc)
    assert proc.returncode == 0, err
    assert err.count("killed by signal 9") == kills and err.count(" restarted (") == kills, err
    if workers == 1:
        assert f"restarted ({kills} of 3)" in err
    events = [r["kind"] for r in records if r["type"] == "event"]
    assert events == ["capture_failed", "capture_restarted"] * kills
    assert counters(records[-1]) == expected_summary(frames)
    assert set(os.listdir("/dev/shm")) <= before


def test_vanished_interface_is_a_clear_error(veth):
    proc = start_engine("-i", veth.host, "--interval", "0.2")
    subprocess.run(["ip", "link", "del", veth.host], check=True)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in err.decode()
    assert veth.host in err.decode().splitlines()[-1]


def test_unknown_interface_is_a_one_line_error():
    proc = subprocess.run([sys.executable, "-m", "pt_engine", "run", "-i", "nosuchif0"],
                          capture_output=True, timeout=60)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert err.startswith("pt-engine: error: interface nosuchif0") and err.count("\n") == 1


def test_drops_root_after_opening_the_handles(veth):
    frames = mixed_frames(5, 1)
    proc = start_engine("-i", veth.host, "--user", "nobody", "--interval", "0.2")
    users = {p.username() for p in capture_processes(proc.pid)} | {
        __import__("psutil").Process(proc.pid).username()}
    veth.send(frames)
    records, err = stop_engine(proc)
    assert proc.returncode == 0, err
    assert users == {"nobody"}
    assert counters(records[-1]) == expected_summary(frames)


def test_duration_gives_one_consistent_status(veth):
    proc = subprocess.run([sys.executable, "-m", "pt_engine", "run", "-i", veth.host,
                           "--workers", "2", "--duration", "1", "--format", "msgpack"],
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    summary = stream.decode(proc.stdout)[-1]
    assert summary["type"] == "summary" and summary["interrupted"] is False
    assert [s["status"] for s in summary["sources"]] == ["stopped", "stopped"]


def test_loopback_received_counts_each_packet_twice():
    """Linux gives a packet socket on lo both the outgoing and the incoming copy
    of each packet; libpcap drops the outgoing one but counts both in its
    `received`. The counters count each packet once (README, "Live")."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    port = sink.getsockname()[1]
    proc = start_engine("-i", "lo", "--filter", f"udp port {port}", "--interval", "0.2")
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(10):
        sender.sendto(b"x" * 10, ("127.0.0.1", port))
    records, err = stop_engine(proc)
    summary = records[-1]
    assert summary["totals"]["packets"] == 10, err
    assert [s["received"] for s in summary["sources"]] == [20]
    assert [r[:3] for r in summary["ports"] if r[1] == port] == [["udp", port, 10]]


@pytest.mark.parametrize("extra", [(), ("--workers", "2"), ("--user", "nobody")],
                         ids=["1-worker", "2-workers", "user"])
def test_capture_inside_a_network_namespace(veth, extra):
    """-i NETNS/IFACE captures inside the namespace (the capture process enters it
    before opening the handle), beside an interface of this one; counters exact
    per interface."""
    inside = f"{veth.ns}/{veth.peer}"
    proc = start_engine("-i", veth.host, "-i", inside, "--interval", "0.2", *extra)
    to_ns, to_host = mixed_frames(6, 1), mixed_frames(3, 2)
    veth.send(to_ns, from_host=True)     # host end -> peer: captured inside (and on host)
    veth.send(to_host)                   # peer -> host end: captured on both too
    records, err = stop_engine(proc)
    assert proc.returncode == 0, err
    summary = records[-1]
    both = expected_summary(to_ns + to_host)
    per_iface = {i["name"]: counters(i) for i in summary["interfaces"]}
    assert per_iface == {veth.host: both, inside: both}
    names = {s["name"] for s in records[0]["sources"]}
    assert names == {veth.host, inside}
    netns_sources = [s for s in records[0]["sources"] if s.get("netns")]
    assert {s["netns"] for s in netns_sources} == {veth.ns}
    assert {s["device"] for s in netns_sources} == {veth.peer}


def test_unknown_network_namespace_is_a_usage_error():
    proc = subprocess.run([sys.executable, "-m", "pt_engine", "run", "-i", "nosuchns0/eth0"],
                          capture_output=True, timeout=60)
    assert proc.returncode == 2
    assert b"no network namespace 'nosuchns0'" in proc.stderr


@pytest.mark.parametrize("on", [True, False], ids=["offloads-on", "offloads-off"])
def test_offloads_are_warned_about(veth, on):
    netns.set_offloads(veth.host, on)
    proc = start_engine("-i", veth.host, "--workers", "2", "--interval", "0.2")
    records, err = stop_engine(proc)
    err = proc.early_stderr + err
    hello = records[0]
    warnings = [s.get("warning") for s in hello["sources"]]
    if on:
        assert warnings[0] and "TSO, GSO, GRO enabled" in warnings[0]
        assert f"ethtool -K {veth.host} tso off gso off gro off" in warnings[0]
        assert warnings[1] is None, "said once per interface"
        assert err.count("super-packets") == 1, err
    else:
        assert warnings == [None, None] and "super-packets" not in err


def test_all_netns_captures_every_named_namespace(veth):
    """--all-netns adds NETNS/IFACE for every interface that is up in every named
    namespace (here: the veth's peer end), labelled like -i NETNS/IFACE."""
    proc = start_engine("--all-netns", "--interval", "0.2")
    frames = mixed_frames(4, 3)
    veth.send(frames, from_host=True)       # host end -> peer: captured inside
    records, err = stop_engine(proc)
    assert proc.returncode == 0, err
    inside = f"{veth.ns}/{veth.peer}"
    assert inside in {s["name"] for s in records[0]["sources"]}
    summary = records[-1]
    per_iface = {i["name"]: counters(i) for i in summary.get("interfaces", [])} or \
        {inside: counters(summary)}
    assert per_iface[inside] == expected_summary(frames)


@pytest.mark.parametrize("cgroup, expected", [
    ("0::/system.slice/docker-0123456789abcdef0123.scope\n", "docker:0123456789ab"),
    ("0::/machine.slice/libpod-fedcba9876543210.scope/container\n", "podman:fedcba987654"),
    ("12:pids:/docker/aabbccddeeff00112233\n", "docker:aabbccddeeff"),
    ("0::/lxc/web1\n", "lxc:web1"),
    ("0::/user.slice/user-1000.slice/session-2.scope\n", None),
])
def test_container_names_come_from_the_cgroup_path(tmp_path, cgroup, expected):
    from pt_engine.sources import container_of
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "cgroup").write_text(cgroup)
    assert container_of("42", proc=str(tmp_path)) == expected
    assert container_of("43", proc=str(tmp_path)) is None


def test_top_finds_port_owners_inside_the_captured_namespace(veth):
    """A UDP socket bound inside the namespace is invisible from here; top looks
    its owner up from inside the namespaces its sources capture in."""
    from pt_engine.top import Owners
    server = subprocess.Popen(
        ["ip", "netns", "exec", veth.ns, sys.executable, "-c",
         "import socket, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
         "s.bind(('0.0.0.0', 45871)); print('ok', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ok"
        here = Owners(every=0)
        assert here.get("udp", 45871) == "-"
        inside = Owners(every=0, sources=lambda: [{"name": f"{veth.ns}/{veth.peer}",
                                                   "netns": veth.ns}])
        owner = inside.get("udp", 45871)
        assert owner == f"{server.pid}/{psutil.Process(server.pid).name()}", owner
    finally:
        server.kill()
        server.wait()
