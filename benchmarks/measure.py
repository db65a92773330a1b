"""Measuring whole processes: page-cache warming, wall and CPU time, peak memory.

A measured run is one command started by the small launcher
``benchmarks/rusage.c``, which times it (CLOCK_MONOTONIC around fork ...
wait4) and reports the ``wait4`` resource usage. That usage covers the
command *and every descendant it waited for*: CPU seconds are user + system
of the whole process tree, and ``maxrss`` is the largest resident set any
one process of the tree reached. pt-engine forks its capture processes and
joins them, so both include them. The launcher also reads the command's own
process alone (``main_cpu_s``: pt-engine's aggregator, all its threads, none
of its capture processes) from /proc while it is a zombie, in clock ticks
(10 ms steps); ``children_cpu_s`` is the rest of the tree. (Started straight from this Python
process, a command's maxrss would start at the suite's own peak: Linux
carries the replaced address space's peak across exec.)

For the memory study the tree is also sampled while it runs (psutil,
every 20 ms) for the sum of resident and proportional set sizes (PSS splits
shared pages, such as pt-engine's shared-memory rings, between the processes
that map them, so the sum does not count them twice).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
WARM_CHUNK = 8 << 20


def python_env(cache_dir: Path, extra: dict | None = None) -> dict:
    """The environment of measured commands: ours, with Python bytecode cached.

    Python tools would otherwise recompile every module at every start where
    PYTHONDONTWRITEBYTECODE is set or __pycache__ is not writable, a cost
    users who installed normally do not pay. PYTHONPYCACHEPREFIX puts the
    cache under `cache_dir` (git-ignored), filled by the first, untimed run.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(cache_dir)
    env.update(extra or {})
    return env


def warm(paths) -> None:
    """Read every file once (like ``cat F > /dev/null``) so it sits in the page cache."""
    buf = memoryview(bytearray(WARM_CHUNK))
    for path in paths:
        with open(path, "rb", buffering=0) as fh:
            while fh.readinto(buf):
                pass


@dataclass
class Run:
    """One finished process."""

    argv: list[str]
    wall_s: float
    cpu_s: float               # user + system, the process and its waited-for descendants
    maxrss_kib: int            # largest resident set of any one process of the tree
    returncode: int
    stdout: str
    stderr: str
    main_cpu_s: float | None = None   # user + system of the command's own process alone
    tree_rss_kib: int | None = None   # peak of the summed RSS of the live tree (sampled)
    tree_pss_kib: int | None = None   # peak of the summed PSS of the live tree (sampled)

    @property
    def ok(self) -> bool:
        """True when the process exited with status 0."""
        return self.returncode == 0

    @property
    def children_cpu_s(self) -> float | None:
        """User + system of the command's descendants (pt-engine's capture processes)."""
        return None if self.main_cpu_s is None else max(self.cpu_s - self.main_cpu_s, 0.0)


class _TreeSampler(threading.Thread):
    """Samples the summed RSS and PSS of the launcher's descendants until stopped."""

    def __init__(self, pid: int, period_s: float = 0.02):
        super().__init__(daemon=True)
        self.pid = pid
        self.period_s = period_s
        self.peak_rss = 0
        self.peak_pss = 0
        self._done = threading.Event()

    def run(self) -> None:
        try:
            launcher = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._done.is_set():
            try:
                procs = launcher.children(recursive=True)
            except psutil.Error:
                return
            rss = pss = 0
            for proc in procs:
                try:
                    rss += proc.memory_info().rss
                    pss += _pss_bytes(proc.pid)
                except (psutil.Error, OSError):
                    continue
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self._done.wait(self.period_s)

    def stop(self) -> None:
        """Ask the thread to end and wait for it."""
        self._done.set()
        self.join()


def _pss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


class Launcher:
    """Runs commands through benchmarks/rusage.c and measures them (module docstring)."""

    def __init__(self, binary: Path):
        self.binary = binary

    def start(self, argv: list[str], report: Path, env: dict | None = None, stdout=None,
              stderr=None) -> subprocess.Popen:
        """Start `argv` under the launcher in a new session (so it can be killed as a group)."""
        return subprocess.Popen([str(self.binary), str(report), *map(str, argv)], stdout=stdout,
                                stderr=stderr, env=env, cwd=ROOT, start_new_session=True)

    def run(self, argv: list[str], env: dict | None = None, discard_stdout: bool = False,
            sample_tree: bool = False, timeout_s: float | None = None) -> Run:
        """Run `argv` to its end and measure it.

        stdout and stderr go to temporary files (or stdout to /dev/null), so
        the suite spends nothing reading pipes while the clock runs. A run past
        `timeout_s` is killed and reported with returncode 137. Interrupting
        the suite kills the command too.
        """
        with tempfile.TemporaryDirectory(prefix="ptb-") as tmp, \
                open(Path(tmp) / "out", "w+b") as out, open(Path(tmp) / "err", "w+b") as err:
            report = Path(tmp) / "rusage.json"
            proc = self.start(argv, report, env,
                              stdout=subprocess.DEVNULL if discard_stdout else out, stderr=err)
            sampler = _TreeSampler(proc.pid) if sample_tree else None
            if sampler:
                sampler.start()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                kill_group(proc)
            except BaseException:
                kill_group(proc)
                raise
            finally:
                if sampler:
                    sampler.stop()
            cost = json.loads(report.read_text()) if report.exists() else None
            out.seek(0)
            err.seek(0)
            if cost is None:    # the launcher itself was killed: timeout
                return Run(argv=list(map(str, argv)), wall_s=float("nan"), cpu_s=float("nan"),
                           maxrss_kib=0, returncode=137, stdout="",
                           stderr=f"killed after the {timeout_s} s time limit")
            return Run(argv=list(map(str, argv)), wall_s=cost["wall_ns"] / 1e9,
                       cpu_s=(cost["utime_us"] + cost["stime_us"]) / 1e6,
                       maxrss_kib=cost["maxrss_kib"], returncode=cost["status"],
                       main_cpu_s=main_cpu_s(cost),
                       stdout=out.read().decode(errors="replace"),
                       stderr=err.read().decode(errors="replace"),
                       tree_rss_kib=sampler.peak_rss // 1024 if sampler else None,
                       tree_pss_kib=sampler.peak_pss // 1024 if sampler else None)


def main_cpu_s(cost: dict) -> float | None:
    """The command's own user + system seconds from a launcher report (None if unread)."""
    user, system = cost.get("self_utime_us", -1), cost.get("self_stime_us", -1)
    return None if user < 0 or system < 0 else (user + system) / 1e6


def kill_group(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """Stop a command started by Launcher.start, then reap it.

    SIGTERM first (the launcher passes it on and reaps the command), then
    SIGKILL to the whole session if it is still there after `grace_s`.
    """
    try:
        proc.terminate()
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def compile_helper(name: str, build_dir: Path, libs: tuple[str, ...] = ()) -> Path:
    """Compile benchmarks/<name>.c with gcc -O2 unless an up-to-date binary exists.

    Raises RuntimeError naming what is missing when gcc or a library's headers are.
    """
    source = Path(__file__).resolve().parent / f"{name}.c"
    binary = build_dir / name
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    if not shutil.which("gcc"):
        raise RuntimeError(f"{source.name} needs gcc: apt-get install gcc libpcap-dev")
    build_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(source),
                           *(f"-l{lib}" for lib in libs)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"compiling {source.name} failed (libpcap-dev installed?):\n"
                           f"{done.stderr.strip()}")
    return binary


def _first_line(argv: list[str]) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else None


def _package(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _libpcap_version() -> str | None:
    name = ctypes.util.find_library("pcap")
    if not name:
        return None
    lib = ctypes.CDLL(name)
    lib.pcap_lib_version.restype = ctypes.c_char_p
    return lib.pcap_lib_version().decode()


def _mem_total_mib() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def _git_commit() -> str | None:
    head = _first_line(["git", "-C", str(ROOT), "rev-parse", "HEAD"])
    if head is None or len(head) != 40:
        return None
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "engine", "ext"],
                           capture_output=True, text=True).stdout.strip()
    return head + ("+dirty" if dirty else "")


def machine(pt_engine: tuple[str, ...] = ("pt-engine",)) -> dict:
    """What the numbers were measured on: CPU, cores, kernel, tool and library versions
    (`pt_engine`: the command measured, asked for its --version)."""
    import numpy

    return {
        "cpu_model": _cpu_model(),
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "mem_total_mib": _mem_total_mib(),
        "kernel": platform.release(),
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "libpcap": _libpcap_version(),
        "pt_engine": _first_line([*pt_engine, "--version"]),
        "repo_commit": _git_commit(),
        "pcapy_ng": _package("pcapy-ng"),
        "dpkt": _package("dpkt"),
        "scapy": _package("scapy"),
        "tcpdump": _first_line(["tcpdump", "--version"]),
        "tshark": _first_line(["tshark", "--version"]),
        "gcc": _first_line(["gcc", "--version"]),
    }
