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
whole run and over the traffic alone, the latter also split between the
capturer's main process (pt-engine's aggregator; all of tcpdump) and its
descendants (pt-engine's capture processes). The namespace and veth pair are
removed on the way out: at the end, on errors, on Ctrl-C and on SIGTERM.

``--rows N...`` (the CPU-per-packet steps) replaces the rate steps: for each
N, a 64-byte fixture whose flows draw both ports from one pool of N/2 ports
(so TCP and UDP make about N active rows in every 1-second window) is
replayed at one fixed ``--rate``; tcpdump and ``pt-engine run`` (msgpack to
a file, so that JSON encoding is not counted) capture it, and the table
gives the nanoseconds of CPU per captured frame of pt-engine's aggregator
and of its capture processes apart, next to tcpdump's, with the drops and
the active rows pt-engine's windows really had.
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
DEFAULT_ROWS = ("2000", "20000")
DEFAULT_ROWS_RATE = 200_000
ROWS_FIXTURE_PACKETS = 1_000_000


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
    msgpack: bool = False      # stdout is pt-engine's msgpack stream (parse is not used)


def _tcpdump_stats(stdout: str, stderr: str) -> tuple[int, int]:
    captured = re.search(r"(\d+) packets? captured", stderr)
    dropped = re.search(r"(\d+) packets? dropped by kernel", stderr)
    if not captured or not dropped:
        raise ValueError(f"no statistics in tcpdump's output: {stderr[-300:]!r}")
    return int(captured.group(1)), int(dropped.group(1))


def _pt_engine_stats(stdout: str, stderr: str) -> tuple[int, int]:
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    summary = json.loads(lines[-1]) if lines else {}
    return _summary_stats(summary, stderr)


def _summary_stats(summary: dict, stderr: str) -> tuple[int, int]:
    """(captured, dropped) of pt-engine's summary record."""
    if summary.get("type") != "summary":
        raise ValueError(f"no summary record from pt-engine run: {stderr[-300:]!r}")
    dropped = sum(s.get("dropped", 0) + s.get("if_dropped", 0) + s.get("transport_dropped", 0)
                  for s in summary.get("sources", []))
    return summary["totals"]["packets"], dropped


def _msgpack_records(path: Path) -> list[dict]:
    import msgpack
    with open(path, "rb") as fh:
        return list(msgpack.Unpacker(fh, raw=False, strict_map_key=False))


def _pt_engine_msgpack_stats(path: Path, stderr: str) -> tuple[int, int, dict | None]:
    """(captured, dropped, active rows per window) from pt-engine's msgpack stream."""
    records = _msgpack_records(path)
    windows = [(r["totals"]["packets"], len(r.get("ports", ()))) for r in records
               if r.get("type") == "window"]
    # Only windows the replay filled: those before and after it, and the two it
    # starts and ends in, hold few packets or none.
    most = max((n for n, _ in windows), default=0)
    full = [rows for n, rows in windows if most and n >= most / 2]
    per_window = ({"windows": len(full), "min": min(full), "max": max(full),
                   "median": sorted(full)[len(full) // 2]} if full else None)
    captured, dropped = _summary_stats(records[-1] if records else {}, stderr)
    return captured, dropped, per_window


def capturers(pt_engine: tuple[str, ...], fmt: str = "json",
              workers: bool = True) -> tuple[list[Capturer], list[str]]:
    """The capturers to run, and notes about those skipped. `fmt` is pt-engine's
    output format (msgpack: parsed by the caller); `workers`: add a 2-worker run."""
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
        base = (*pt_engine, "run", "-i", HOST_IF, "--format", fmt)
        ready = '"type":"hello"' if fmt == "json" else "hello"
        found.append(Capturer("pt-engine run", base, ready, _pt_engine_stats,
                              msgpack=fmt == "msgpack"))
        if workers and "--workers" in helped.stdout:
            found.append(Capturer("pt-engine run x2", (*base, "--workers", "2"),
                                  ready, _pt_engine_stats, msgpack=fmt == "msgpack"))
        elif workers:
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
            rx_before, cpu_before = VethPair.rx_packets(), _cpu_by_pid(proc.pid)
            replay = subprocess.run(_replay_argv(fixture, rate, limit), capture_output=True,
                                    text=True, timeout=seconds * 4 + 30)
            time.sleep(DRAIN_S)                       # let the capture drain its buffer
            rx = VethPair.rx_packets() - rx_before
            main_traffic, children_traffic = _cpu_delta(cpu_before, _cpu_by_pid(proc.pid))
            proc.send_signal(signal.SIGINT)           # the launcher passes it on
            proc.wait(30)
        except BaseException:
            measure.kill_group(proc)
            raise
        if replay.returncode != 0:
            raise RuntimeError(f"tcpreplay failed: {replay.stderr.strip()[-300:]}")
        sent, pps = _tcpreplay_stats(replay.stdout)
        rows_per_window = None
        if cap.msgpack:
            captured, dropped, rows_per_window = _pt_engine_msgpack_stats(
                out, err.read_text(errors="replace"))
        else:
            captured, dropped = cap.parse(out.read_text(errors="replace"),
                                          err.read_text(errors="replace"))
        cost = json.loads(report.read_text())
    cpu = (cost["utime_us"] + cost["stime_us"]) / 1e6
    main_cpu = measure.main_cpu_s(cost)
    per_packet = (lambda s: s / captured * 1e9 if captured and s is not None else math.nan)
    cpu_traffic = main_traffic + children_traffic
    return {"capturer": cap.name, "rate": rate, "offered_pps": pps, "sent": sent,
            "arrived": rx, "captured": captured, "dropped": dropped,
            "missing": max(rx - captured - dropped, 0), "cpu_s": cpu,
            "cpu_ns_per_packet": per_packet(cpu), "main_cpu_s": main_cpu,
            "traffic_cpu_s": cpu_traffic,
            "traffic_cpu_ns_per_packet": per_packet(cpu_traffic),
            "traffic_main_cpu_s": main_traffic, "traffic_capture_cpu_s": children_traffic,
            "traffic_main_ns_per_packet": per_packet(main_traffic),
            "traffic_capture_ns_per_packet": per_packet(children_traffic),
            "rows_per_window": rows_per_window}


def _proc_cpu_s(pid: int) -> float | None:
    """utime + stime of one process (all its threads) from /proc/PID/stat, in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_by_pid(launcher_pid: int) -> dict[int, tuple[bool, float]]:
    """CPU seconds so far of each live process under the launcher: pid -> (is the
    command itself, the launcher's child, seconds)."""
    out = {}
    try:
        top = psutil.Process(launcher_pid).children()
    except psutil.Error:
        return out
    for main in top:
        try:
            tree = [main, *main.children(recursive=True)]
        except psutil.Error:
            tree = [main]
        for proc in tree:
            seconds = _proc_cpu_s(proc.pid)
            if seconds is not None:
                out[proc.pid] = (proc is main, seconds)
    return out


def _cpu_delta(before: dict, after: dict) -> tuple[float, float]:
    """(main process, its descendants) CPU seconds between two _cpu_by_pid samples; a
    process that started in between counts from zero."""
    main = children = 0.0
    for pid, (is_main, seconds) in after.items():
        used = seconds - before.get(pid, (is_main, 0.0))[1]
        if is_main:
            main += used
        else:
            children += used
    return main, children


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


def format_rows_table(steps: list[dict]) -> str:
    """The CPU-per-packet table: one row per active-rows step and capturer."""
    head = ("rows", "capturer", "offered pps", "captured", "dropped", "missing",
            "rows/window", "main ns/pkt", "capture ns/pkt", "total ns/pkt")

    def rows_seen(s):
        rpw = s.get("rows_per_window")
        return f"{rpw['min']}-{rpw['max']}" if rpw else "-"

    def ns(x):
        return "-" if x is None or math.isnan(x) else f"{x:.0f}"

    lines = [head] + [(s["rows"], s["capturer"], f"{s['offered_pps']:.0f}", s["captured"],
                       s["dropped"], s["missing"], rows_seen(s),
                       ns(s["traffic_main_ns_per_packet"]),
                       ns(s["traffic_capture_ns_per_packet"]),
                       ns(s["traffic_cpu_ns_per_packet"])) for s in steps]
    widths = [max(len(str(ln[i])) for ln in lines) for i in range(len(head))]
    text = ["  ".join(str(c).rjust(w) if i != 1 else str(c).ljust(w)
                      for i, (c, w) in enumerate(zip(ln, widths))) for ln in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def rows_fixture(rows: int) -> Path:
    """The 64-byte fixture of about `rows` active (protocol, port) rows per window:
    both ports of a flow from a pool of rows/2, TCP and UDP; 8 flows per pool port."""
    pool = max(1, rows // 2)
    spec = gen.FixtureSpec(sizes="64", packets=ROWS_FIXTURE_PACKETS, pool=pool,
                           flows=max(10_000, 8 * pool))
    return gen.ensure(spec, log=log)[0]


def _run_steps(launcher: measure.Launcher, plan: list[tuple], seconds: float,
               describe: Callable[[dict], str]) -> list[dict] | int:
    """Run each step of `plan`, (fixture, rate, limit, capturer, fields to add), on the
    veth pair, logging `describe(step)`; returns the steps, or the exit status when
    interrupted (130) or failed (1), the pair removed either way."""
    steps = []
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        with VethPair():
            for fixture, rate, limit, cap, extra in plan:
                step = dict(run_step(launcher, cap, fixture, rate, limit, seconds), **extra)
                log(describe(step))
                steps.append(step)
    except KeyboardInterrupt:
        print("live: interrupted; namespace and veth pair removed", file=sys.stderr)
        return 130
    except (RuntimeError, ValueError, subprocess.SubprocessError) as err:
        print(f"live: error: {err}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    return steps


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
    ap.add_argument("--rows", nargs="+", metavar="N",
                    help="instead of the rate steps: CPU per packet of tcpdump and of "
                         "pt-engine's aggregator and capture processes, one step per N "
                         "active (protocol, port) rows per window, at --rate (e.g. "
                         f"--rows {' '.join(DEFAULT_ROWS)})")
    ap.add_argument("--rate", type=int, default=DEFAULT_ROWS_RATE, metavar="PPS",
                    help=f"offered rate of the --rows steps (default {DEFAULT_ROWS_RATE})")
    ap.add_argument("--pt-engine", metavar="EXE",
                    help="the pt-engine executable to measure (default: the script installed "
                         "next to this Python)")
    args = ap.parse_args(argv)
    for rate in args.rates:
        if rate != "top" and not rate.isdigit():
            ap.error(f"--rates: {rate!r} is neither a number nor 'top'")
    for rows in args.rows or ():
        if not rows.isdigit() or int(rows) < 2:
            ap.error(f"--rows: {rows!r} is not a whole number of at least 2")
    if args.rate < 1:
        ap.error("--rate must be at least 1")
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
    if args.rows:
        return _rows_main(ctx, args)
    fixture = gen.ensure(gen.FixtureSpec(sizes="64", packets=1_000_000), log=log)[0]
    caps, notes = capturers(ctx.pt_engine)
    for note in notes:
        log(note)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    plan = [(fixture, rate, args.max_packets if rate == "top" else
             min(args.max_packets, int(int(rate) * args.seconds)), cap, {})
            for rate in args.rates for cap in caps]
    steps = _run_steps(ctx.launcher, plan, args.seconds, lambda step: (
        f"{step['rate']:>8} {step['capturer']:18} sent {step['sent']:>9} captured "
        f"{step['captured']:>9} dropped {step['dropped']:>8} missing {step['missing']:>8}"))
    if isinstance(steps, int):
        return steps
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


def _rows_main(ctx: suite.Context, args) -> int:
    """The --rows steps: CPU per packet at N active rows per window, one fixed rate."""
    fixtures = {int(rows): rows_fixture(int(rows)) for rows in args.rows}
    caps, notes = capturers(ctx.pt_engine, fmt="msgpack", workers=False)
    for note in notes:
        log(note)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    rate = str(args.rate)
    limit = min(args.max_packets, int(args.rate * args.seconds))
    plan = [(fixture, rate, limit, cap, {"rows": rows, "fixture": fixture.name})
            for rows, fixture in fixtures.items() for cap in caps]
    steps = _run_steps(ctx.launcher, plan, args.seconds, lambda step: (
        f"{step['rows']:>7} rows {step['capturer']:14} captured {step['captured']:>9} dropped "
        f"{step['dropped']:>8} main {step['traffic_main_ns_per_packet']:7.0f} "
        f"capture {step['traffic_capture_ns_per_packet']:7.0f} ns/pkt"))
    if isinstance(steps, int):
        return steps
    result = {"started": started, "machine": measure.machine(ctx.pt_engine), "mode": "rows",
              "fixtures": {str(k): v.name for k, v in fixtures.items()},
              "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "notes": notes, "steps": steps}
    path = suite.write_result(result, "-live-rows")
    print(format_rows_table(steps))
    for note in notes:
        print(f"  {note}")
    print(f"  CPU from just before the replay to {DRAIN_S} s after it (start-up excluded), per "
          "captured frame: main = the capturer's own process (pt-engine's aggregator; all of "
          "tcpdump), capture = its descendants (pt-engine's capture processes); /proc/PID/stat, "
          "10 ms steps")
    print("  rows/window: port rows of pt-engine's windows holding at least half the packets "
          "of its fullest one (partial windows left out); pt-engine writes msgpack to a file")
    print(f"\nresults: {path}")
    return 0
