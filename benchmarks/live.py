"""``python -m benchmarks live``: capture drops on a veth pair at offered-rate steps.

Needs root. Creates the network namespace ``ptb-ns`` and a veth pair,
``ptb-veth0`` here and ``ptb-veth1`` inside the namespace, with no
addresses and IPv6 disabled: frames are replayed raw from a generated
64-byte fixture (addresses in 198.18.0.0/15, locally administered MACs) by
``tcpreplay`` inside the namespace onto ptb-veth1, and arrive on ptb-veth0,
where nothing routes or answers them. For each offered rate (``--pps``
steps, then ``--topspeed``), bounded in packets and seconds, each capturer
listens on ptb-veth0 while the replay runs:

* ``tcpdump -i ptb-veth0 -w /dev/null`` (drops from its own statistics
  lines: "packets dropped by kernel");
* ``pt-engine run`` with 1 and 2 workers, once ``pt-engine run --help``
  succeeds (drops from the summary record's sources); skipped with a note
  until then.

Reported per step: frames sent (tcpreplay), frames that reached ptb-veth0
(its rx_packets counter), frames captured, drops reported by the capturer,
frames missing (arrived but neither captured nor reported dropped), and the
capturer's CPU seconds (all its processes) per captured frame, over its
whole run and over the traffic alone. The namespace and veth pair are
removed on the way out: at the end, on errors, on Ctrl-C and on SIGTERM.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import psutil

from . import gen, measure, suite

NETNS = "ptb-ns"
HOST_IF = "ptb-veth0"
NS_IF = "ptb-veth1"
DEFAULT_RATES = ("100000", "300000", "600000", "top")
# After the replay: longer than libpcap's 1 s TPACKET_V3 block timeout (tcpdump's
# default), so that the last, partly filled block reaches the capturer.
DRAIN_S = 1.5


def log(message: str) -> None:
    """Progress on stderr."""
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the link

def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


class VethPair:
    """Context manager: the namespace and veth pair, created on entry, removed on exit.

    Raises subprocess.CalledProcessError (with ip's message) if creation fails.
    """

    def __enter__(self) -> "VethPair":
        self.remove()                      # leftovers of an earlier, killed run
        try:
            _ip("netns", "add", NETNS)
            _ip("link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF)
            _ip("link", "set", NS_IF, "netns", NETNS)
            for path in (f"/proc/sys/net/ipv6/conf/{HOST_IF}/disable_ipv6",):
                Path(path).write_text("1\n")
            subprocess.run(["ip", "netns", "exec", NETNS, "sh", "-c",
                            f"echo 1 > /proc/sys/net/ipv6/conf/{NS_IF}/disable_ipv6"], check=True)
            _ip("link", "set", HOST_IF, "up")
            _ip("-n", NETNS, "link", "set", NS_IF, "up")
            _ip("-n", NETNS, "link", "set", "lo", "up")
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    @staticmethod
    def remove() -> None:
        """Delete the namespace (which takes its veth end, and so the pair) and any leftover."""
        _ip("netns", "del", NETNS, check=False)
        _ip("link", "del", HOST_IF, check=False)

    @staticmethod
    def rx_packets() -> int:
        """Frames received on this side so far (the kernel's interface counter)."""
        return int(Path(f"/sys/class/net/{HOST_IF}/statistics/rx_packets").read_text())


# --------------------------------------------------------------------------- capturers

@dataclass(frozen=True)
class Capturer:
    """A live capture command and how to read its statistics when it stops."""

    name: str
    argv: tuple[str, ...]
    ready: str                 # text on stderr (or stdout) once it is capturing
    parse: Callable[[str, str], tuple[int, int]]   # (stdout, stderr) -> (captured, dropped)


def _tcpdump_stats(stdout: str, stderr: str) -> tuple[int, int]:
    captured = re.search(r"(\d+) packets? captured", stderr)
    dropped = re.search(r"(\d+) packets? dropped by kernel", stderr)
    if not captured or not dropped:
        raise ValueError(f"no statistics in tcpdump's output: {stderr[-300:]!r}")
    return int(captured.group(1)), int(dropped.group(1))


def _pt_engine_stats(stdout: str, stderr: str) -> tuple[int, int]:
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    summary = json.loads(lines[-1]) if lines else {}
    if summary.get("type") != "summary":
        raise ValueError(f"no summary record from pt-engine run: {stderr[-300:]!r}")
    dropped = sum(s.get("dropped", 0) + s.get("if_dropped", 0) + s.get("transport_dropped", 0)
                  for s in summary.get("sources", []))
    return summary["totals"]["packets"], dropped


def capturers(pt_engine: tuple[str, ...]) -> tuple[list[Capturer], list[str]]:
    """The capturers to run, and notes about those skipped."""
    found = [Capturer("tcpdump", ("tcpdump", "-i", HOST_IF, "-n", "-w", "/dev/null"),
                      "listening on", _tcpdump_stats)]
    notes = []
    try:
        helped = subprocess.run([*pt_engine, "run", "--help"], capture_output=True, text=True,
                                timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        helped = None
        notes.append(f"pt-engine run: skipped ({err})")
    if helped is not None and helped.returncode != 0:
        notes.append("pt-engine run: skipped (live mode not implemented yet: "
                      "`pt-engine run --help` failed)")
    elif helped is not None:
        base = (*pt_engine, "run", "-i", HOST_IF, "--format", "json")
        found.append(Capturer("pt-engine run", base, '"type":"hello"', _pt_engine_stats))
        if "--workers" in helped.stdout:
            found.append(Capturer("pt-engine run x2", (*base, "--workers", "2"),
                                  '"type":"hello"', _pt_engine_stats))
        else:
            notes.append("pt-engine run x2: skipped (`pt-engine run` has no --workers option)")
    return found, notes


# --------------------------------------------------------------------------- one step

def _replay_argv(fixture: Path, rate: str, limit: int) -> list[str]:
    pace = ["--topspeed"] if rate == "top" else [f"--pps={rate}"]
    return ["ip", "netns", "exec", NETNS, "tcpreplay", "-i", NS_IF, *pace, "--preload-pcap",
            "--loop=0", f"--limit={limit}", str(fixture)]


def _tcpreplay_stats(text: str) -> tuple[int, float]:
    sent = re.search(r"Actual: (\d+) packets", text)
    rate = re.search(r"Rated: .*?([\d.]+) pps", text)
    if not sent:
        raise ValueError(f"no statistics in tcpreplay's output: {text[-300:]!r}")
    return int(sent.group(1)), float(rate.group(1)) if rate else math.nan


def _wait_for(path: Path, text: str, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"capture exited early: {path.read_text(errors='replace')[-300:]}")
        time.sleep(0.05)
    raise RuntimeError(f"capture not ready after {timeout_s} s")


def run_step(launcher: measure.Launcher, cap: Capturer, fixture: Path, rate: str, limit: int,
             seconds: float) -> dict:
    """Capture on HOST_IF while tcpreplay offers `limit` frames at `rate`; returns the numbers."""
    with tempfile.TemporaryDirectory(prefix="ptb-live-") as tmp:
        out, err, report = Path(tmp) / "out", Path(tmp) / "err", Path(tmp) / "rusage.json"
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = launcher.start(list(cap.argv), report, env=measure.python_env(
                gen.FIXTURE_DIR / "pycache"), stdout=fo, stderr=fe)
        try:
            _wait_for(err if cap.ready == "listening on" else out, cap.ready, proc, 10)
            time.sleep(0.5)                           # let start-up work settle
            rx_before, cpu_before = VethPair.rx_packets(), _tree_cpu_s(proc.pid)
            replay = subprocess.run(_replay_argv(fixture, rate, limit), capture_output=True,
                                    text=True, timeout=seconds * 4 + 30)
            time.sleep(DRAIN_S)                       # let the capture drain its buffer
            rx, cpu_traffic = VethPair.rx_packets() - rx_before, _tree_cpu_s(proc.pid) - cpu_before
            proc.send_signal(signal.SIGINT)           # the launcher passes it on
            proc.wait(30)
        except BaseException:
            measure.kill_group(proc)
            raise
        if replay.returncode != 0:
            raise RuntimeError(f"tcpreplay failed: {replay.stderr.strip()[-300:]}")
        sent, pps = _tcpreplay_stats(replay.stdout)
        captured, dropped = cap.parse(out.read_text(errors="replace"),
                                      err.read_text(errors="replace"))
        cost = json.loads(report.read_text())
    cpu = (cost["utime_us"] + cost["stime_us"]) / 1e6
    per_packet = (lambda s: s / captured * 1e9 if captured else math.nan)
    return {"capturer": cap.name, "rate": rate, "offered_pps": pps, "sent": sent,
            "arrived": rx, "captured": captured, "dropped": dropped,
            "missing": max(rx - captured - dropped, 0), "cpu_s": cpu,
            "cpu_ns_per_packet": per_packet(cpu), "traffic_cpu_s": cpu_traffic,
            "traffic_cpu_ns_per_packet": per_packet(cpu_traffic)}


def _tree_cpu_s(launcher_pid: int) -> float:
    """User + system CPU seconds used so far by the launcher's live descendants."""
    total = 0.0
    for proc in psutil.Process(launcher_pid).children(recursive=True):
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


# --------------------------------------------------------------------------- command

def format_table(steps: list[dict]) -> str:
    """The live table: one row per rate step and capturer."""
    head = ("rate", "capturer", "offered pps", "sent", "arrived", "captured", "dropped",
            "missing", "CPU s", "ns/pkt", "traffic CPU s", "ns/pkt")
    lines = [head] + [(s["rate"], s["capturer"], f"{s['offered_pps']:.0f}", s["sent"],
                       s["arrived"], s["captured"], s["dropped"], s["missing"],
                       f"{s['cpu_s']:.2f}", f"{s['cpu_ns_per_packet']:.0f}",
                       f"{s['traffic_cpu_s']:.2f}", f"{s['traffic_cpu_ns_per_packet']:.0f}")
                      for s in steps]
    widths = [max(len(str(ln[i])) for ln in lines) for i in range(len(head))]
    text = ["  ".join(str(c).rjust(w) if i != 1 else str(c).ljust(w)
                      for i, (c, w) in enumerate(zip(ln, widths))) for ln in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def _on_sigterm(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    """Run the live steps; returns 0 (also when skipped for want of root), 1 on failure."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks live", description=__doc__.split("\n")[0])
    ap.add_argument("--rates", nargs="+", default=list(DEFAULT_RATES), metavar="PPS",
                    help="offered rates in packets/s; 'top' for tcpreplay --topspeed "
                         f"(default: {' '.join(DEFAULT_RATES)})")
    ap.add_argument("--seconds", type=float, default=4.0,
                    help="length of a paced step (packets = rate x seconds); default 4")
    ap.add_argument("--max-packets", type=int, default=3_000_000,
                    help="frames per step at most, and for the --topspeed step (default 3000000)")
    ap.add_argument("--pt-engine", metavar="EXE",
                    help="the pt-engine executable to measure (default: the script installed "
                         "next to this Python)")
    args = ap.parse_args(argv)
    for rate in args.rates:
        if rate != "top" and not rate.isdigit():
            ap.error(f"--rates: {rate!r} is neither a number nor 'top'")
    if os.geteuid() != 0:
        print("live: skipped: needs root (it creates a network namespace and a veth pair)")
        return 0
    missing = [t for t in ("ip", "tcpreplay", "tcpdump") if not shutil.which(t)]
    if missing:
        print(f"live: skipped: {', '.join(missing)} not installed")
        return 0
    try:
        ctx = suite.make_context(pt_engine=args.pt_engine)
    except RuntimeError as err:
        print(f"live: error: {err}", file=sys.stderr)
        return 1
    fixture = gen.ensure(gen.FixtureSpec(sizes="64", packets=1_000_000), log=log)[0]
    caps, notes = capturers(ctx.pt_engine)
    for note in notes:
        log(note)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    steps = []
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with VethPair():
            for rate in args.rates:
                limit = args.max_packets if rate == "top" else \
                    min(args.max_packets, int(int(rate) * args.seconds))
                for cap in caps:
                    step = run_step(ctx.launcher, cap, fixture, rate, limit, args.seconds)
                    log(f"{rate:>8} {cap.name:18} sent {step['sent']:>9} captured "
                        f"{step['captured']:>9} dropped {step['dropped']:>8} "
                        f"missing {step['missing']:>8}")
                    steps.append(step)
    except KeyboardInterrupt:
        print("live: interrupted; namespace and veth pair removed", file=sys.stderr)
        return 130
    except (RuntimeError, ValueError, subprocess.SubprocessError) as err:
        print(f"live: error: {err}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    result = {"started": started, "machine": measure.machine(ctx.pt_engine), "fixture": fixture.name,
              "options": vars(args), "notes": notes, "steps": steps}
    path = suite.write_result(result, "-live")
    print(format_table(steps))
    for note in notes:
        print(f"  {note}")
    print("  arrived: frames counted by ptb-veth0 during the step; missing: arrived but neither "
          "captured nor reported dropped")
    print("  CPU s: the capturer's whole run (start-up and shutdown included), all its processes; "
          f"traffic CPU s: only from just before the replay to {DRAIN_S} s after it")
    print(f"\nresults: {path}")
    return 0
