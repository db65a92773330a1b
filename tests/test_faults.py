"""Fault injection: killed processes, closed pipes, full disks, privilege drops.

After each fault: no process of the run survives, nothing is left in
/dev/shm, the error is one line (or none, for a reader that went away), and
nothing already written is lost.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import psutil
import pytest

import netns
from frames import eth, ipv4, pcap_file, udp
from pt_engine import stream
from streams import CORPUS

ROOT = os.geteuid() == 0
MANY = CORPUS / "ppp_many-protocols.pcap"


def _big_capture(tmp_path, packets: int = 300_000):
    """More packets than a capture process reads in one go (pipeline.BATCH_RECORDS)."""
    path = tmp_path / f"big-{packets}.pcap"
    if path.exists():
        return path
    frames = [eth() + ipv4("192.0.2.1", "192.0.2.2", 17, udp(1000 + i % 50, 53, b"q"))
              for i in range(50)]
    path.write_bytes(pcap_file([(1_700_000_000_000_000_000 + i * 1000, frames[i % 50], None)
                                for i in range(packets)], 1))
    return path


def _gone(pids, timeout=10.0) -> list[int]:
    """The pids still alive (zombies count as gone) after up to `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def _shm():
    return set(os.listdir("/dev/shm"))


def _engine(*args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pt_engine", *args], **kwargs)


def _wait_children(proc, n=1, timeout=20.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = psutil.Process(proc.pid).children(recursive=True)
        if len(kids) >= n:
            return [k.pid for k in kids]
        time.sleep(0.02)
    raise AssertionError("the capture processes did not start")


def test_broken_pipe_ends_promptly_and_quietly(tmp_path):
    """`read BIG | head -c 10`: the capture process may be blocked waiting for
    credits (its windows not yet emitted) when the reader goes; the run must end at once, status 0, nothing on stderr."""
    big = _big_capture(tmp_path)
    reader = subprocess.Popen(["head", "-c", "10"], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL)
    proc = _engine("read", str(big), "--format", "json", stdout=reader.stdin,
                   stderr=subprocess.PIPE)
    reader.stdin.close()
    kids = _wait_children(proc)
    _, err = proc.communicate(timeout=60)
    reader.wait(10)
    assert err == b"", err
    assert proc.returncode == 0
    assert _gone(kids) == []


@pytest.fixture(scope="module")
def huge(tmp_path_factory):
    return _big_capture(tmp_path_factory.mktemp("huge"), 400_000)


@pytest.mark.parametrize("seed", range(6))
def test_sigkill_of_the_main_process_leaves_nothing(huge, seed):
    """The main process killed at a random point of a read, while its capture
    processes wait for credits (its reader never reads): none survives (they
    used to hold on for good), /dev/shm stays clean."""
    rng = random.Random(seed)
    before = _shm()
    reader = subprocess.Popen(["sleep", "30"], stdin=subprocess.PIPE)   # never reads
    # A small output queue: the aggregator soon waits on stdout, and so the
    # capture processes for their credits.
    proc = _engine("read", str(huge), str(huge), "--format", "json", "--interval", "0.001",
                   "--output-buffer", "0.05", stdout=reader.stdin, stderr=subprocess.DEVNULL)
    kids = _wait_children(proc, 2)
    time.sleep(rng.uniform(0.2, 1.5))
    assert _gone(kids, 0) == kids, "still reading when the main process is killed"
    proc.kill()
    proc.wait(10)
    reader.kill()
    assert _gone(kids) == [], "capture processes outlived the main process"
    assert _shm() <= before


@pytest.mark.parametrize("seed", range(4))
def test_sigkill_of_a_capture_process_is_reported(tmp_path, seed):
    rng = random.Random(seed)
    big = _big_capture(tmp_path, 200_000)
    out = tmp_path / "out.json"
    proc = _engine("read", str(big), str(MANY), "--format", "json", "--output", str(out),
                   stderr=subprocess.PIPE)
    kids = _wait_children(proc, 2)
    time.sleep(rng.uniform(0, 0.3))
    victim = rng.choice(kids)
    try:
        os.kill(victim, signal.SIGKILL)
    except ProcessLookupError:
        pass                        # it had finished already
    _, err = proc.communicate(timeout=60)
    assert b"Traceback" not in err
    if proc.returncode == 1:       # killed while counting, or still opening its source
        assert (b"killed by signal 9" in err or b"died while opening its source (exit "
                b"status -9)" in err) and err.count(b"\n") == 1, err
    else:
        assert proc.returncode == 0, err
    records = stream.decode(out.read_bytes(), "json")
    assert records[-1]["type"] == "summary"
    assert _gone(kids) == []


def test_sigstop_sigcont_of_a_capture_process(tmp_path):
    """A capture process stopped and continued in the middle of its file (read
    from a pipe, so that it is still reading when it is stopped) loses nothing."""
    data = _big_capture(tmp_path, 100_000).read_bytes()
    out = tmp_path / "out.json"
    proc = _engine("read", "-", "--format", "json", "--output", str(out),
                   stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    half = len(data) // 2
    proc.stdin.write(data[:half])
    proc.stdin.flush()
    kid = _wait_children(proc)[0]
    os.kill(kid, signal.SIGSTOP)
    time.sleep(0.5)
    os.kill(kid, signal.SIGCONT)
    proc.stdin.write(data[half:])
    proc.stdin.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, err
    assert stream.decode(out.read_bytes(), "json")[-1]["totals"]["packets"] == 100_000


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs (root only)."""
    if not ROOT:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


@pytest.mark.parametrize("how", ["output", "record"])
def test_full_disk_is_one_error_line(tmp_path, full_disk, how):
    big = _big_capture(tmp_path, 100_000)
    target = full_disk / "out"
    args = (["read", str(big), "--interval", "0.001", "--format", "json", "--output",
             str(target)] if how == "output"
            else ["record", str(target), "--read", str(big), "--interval", "0.001"])
    proc = _engine(*args, stderr=subprocess.PIPE)
    kids = _wait_children(proc)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert err.count(b"\n") == 1 and b"No space left on device" in err, err
    assert b"Traceback" not in err
    assert _gone(kids) == []


def _run_processes(proc) -> list[psutil.Process]:
    main = psutil.Process(proc.pid)
    return [main, *main.children(recursive=True)]


def _cap_eff(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    raise AssertionError("no CapEff line")


@pytest.mark.skipif(not ROOT, reason="dropping privileges needs root")
def test_no_process_keeps_root_after_user(tmp_path):
    reason = netns.why_not()
    if reason:
        pytest.skip(reason)
    proc = _engine("run", "-i", "lo", "--workers", "2", "--user", "nobody", "--duration", "30",
                   "--format", "json", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while b"capturing on" not in (line := proc.stderr.readline()):   # after warnings
            assert line, "the engine ended before capturing"
        deadline = time.monotonic() + 10
        while True:
            procs = _run_processes(proc)
            try:
                states = [(p.pid, p.uids().effective, p.uids().real, _cap_eff(p.pid))
                          for p in procs]
            except (psutil.NoSuchProcess, FileNotFoundError):
                continue
            if all(uid != 0 for _, uid, _, _ in states) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert len(states) == 3, states            # the aggregator and two capture processes
        for pid, euid, ruid, caps in states:
            assert euid != 0 and ruid != 0 and caps == 0, (pid, euid, ruid, hex(caps))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_ctrl_c_stops_a_filter_that_takes_long_to_compile():
    """libpcap's optimiser needs minutes for this filter; Ctrl-C must still stop
    the run at once (it used to be ignored until the compile finished)."""
    expr = " and ".join(f"not (udp port {i} or tcp port {i + 1})" for i in range(1, 1200))
    proc = _engine("read", str(MANY), "--filter", expr, "--format", "json",
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    kids = _wait_children(proc)
    time.sleep(1.5)
    assert proc.poll() is None, "compiled already: make the filter larger"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 130 and b"Traceback" not in err, err
    assert _gone(kids) == []


def test_fuzz_found_pcapng_with_a_short_interface_block_is_refused():
    """tests/fuzz.py found it: the interface scan looped for ever, out of memory."""
    data = CORPUS.parent / "data" / "fuzz-idb-short-block.pcapng"
    proc = subprocess.run([sys.executable, "-m", "pt_engine", "read", str(data)],
                          capture_output=True, timeout=60)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert err.startswith("pt-engine: error: ") and "274 (ETHERNET_MPACKET)" in err, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_a_read_waiting_for_its_first_subscriber(tmp_path, sig):
    path = tmp_path / "s.sock"
    proc = _engine("read", str(MANY), "--output", f"unix:{path}", stderr=subprocess.PIPE)
    while b"waiting for a subscriber" not in (line := proc.stderr.readline()):
        assert line, "the engine ended before waiting"
    kids = _wait_children(proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 130 and b"Traceback" not in err, err
    assert not path.exists() and _gone(kids) == []
