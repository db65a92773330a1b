"""Instructions per packet of each process, counted by callgrind (``--callgrind``).

Instruction counts do not depend on the machine's load, so on a shared,
noisy machine they are the robust figure where wall and CPU seconds are not.

A command runs under ``valgrind --tool=callgrind --trace-children=yes
--dump-before=os_fork``. Callgrind follows forked children by itself (each
writes its own ``callgrind.out.PID``); ``--trace-children`` follows execs as
well (a helper a process would start). ``--dump-before=os_fork`` closes a
part each time CPython's ``os.fork`` is entered, so

* the main process's first part counts interpreter start, imports and
  argument parsing up to its first fork (pt-engine's first capture process);
* a forked child's counters start at that dump, so its files count its own
  instructions only, not its parent's before the fork.

Each file's header names its ``pid`` and its ``cmd`` (the same command line
for a forked child as for its parent); its ``totals:`` line is the part's
instruction count (``Ir``). The process valgrind was started as is the main
one (valgrind runs the program in its own process, so the pid is Popen's);
the others with the same command line are its forked capture processes, any
other command line is reported under its own name.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

VALGRIND_MISSING = ("--callgrind: skipped: valgrind is not installed "
                    "(apt-get install valgrind)")
_HEADER = re.compile(r"^(pid|cmd|part|totals|summary):\s*(.*)$")


def available() -> bool:
    """True when valgrind is on PATH."""
    return shutil.which("valgrind") is not None


@dataclass
class Process:
    """The instructions of one process of a callgrind run, over all its parts."""

    pid: int
    cmd: str
    role: str = ""
    parts: dict[int, int] = field(default_factory=dict)    # part number -> instructions

    @property
    def instructions(self) -> int:
        """All its parts added up."""
        return sum(self.parts.values())

    @property
    def to_first_fork(self) -> int | None:
        """Its first part when it forked (ended by the os.fork dump), else None."""
        return self.parts.get(1) if len(self.parts) > 1 else None


def parse_file(path: Path) -> tuple[int, str, int, int]:
    """(pid, cmd, part, instructions) from a callgrind.out file's header and totals line.

    Raises ValueError when the file has no pid or no totals/summary line.
    """
    found: dict[str, str] = {}
    with open(path, errors="replace") as fh:
        for line in fh:
            m = _HEADER.match(line)
            if m and m.group(1) not in found:
                found[m.group(1)] = m.group(2).strip()
    count = found.get("totals") or found.get("summary")
    if "pid" not in found or count is None:
        raise ValueError(f"{path.name}: no pid or totals line")
    return (int(found["pid"]), found.get("cmd", ""), int(found.get("part", "1") or 1),
            int(count.split()[0]))


def collect(directory: Path, main_pid: int) -> list[Process]:
    """Every process of a run from its callgrind.out.* files, the main one first,
    then its same-command children (role "capture N" in pid order), then others."""
    procs: dict[int, Process] = {}
    for path in sorted(directory.glob("callgrind.out.*")):
        pid, cmd, part, count = parse_file(path)
        proc = procs.setdefault(pid, Process(pid, cmd))
        proc.parts[part] = count
    main = procs.get(main_pid)
    if main is None:
        raise ValueError(f"no callgrind output for the main process (pid {main_pid})")
    main.role = "main"
    out = [main]
    captures = sorted((p for p in procs.values() if p is not main and p.cmd == main.cmd),
                      key=lambda p: p.pid)
    for n, proc in enumerate(captures):
        proc.role = f"capture {n}" if len(captures) > 1 else "capture"
        out.append(proc)
    for proc in sorted((p for p in procs.values() if not p.role), key=lambda p: p.pid):
        proc.role = f"other: {proc.cmd[:60]}"
        out.append(proc)
    return out


def run(argv: list[str], env: dict | None = None, cwd: Path | None = None,
        timeout_s: float = 3600) -> list[Process]:
    """Run `argv` under callgrind (stdout discarded) and return its processes.

    Raises RuntimeError when valgrind or the command fails.
    """
    with tempfile.TemporaryDirectory(prefix="ptb-callgrind-") as tmp:
        cmd = ["valgrind", "--tool=callgrind", "--trace-children=yes",
               "--dump-before=os_fork", f"--callgrind-out-file={tmp}/callgrind.out.%p",
               *map(str, argv)]
        with open(Path(tmp) / "stderr", "w+b") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env,
                                    cwd=cwd)
            try:
                code = proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise RuntimeError(f"callgrind run over {timeout_s} s: {' '.join(argv)}") \
                    from None
            err.seek(0)
            text = err.read().decode(errors="replace")
        if code != 0:
            lines = [ln for ln in text.splitlines() if not ln.startswith("==")]
            raise RuntimeError(f"under callgrind, {' '.join(map(str, argv))} exited with "
                               f"{code}: {' '.join(lines)[-300:]}")
        return collect(Path(tmp), proc.pid)


def per_packet(big: list[Process], small: list[Process], packets: int,
               small_packets: int) -> list[dict]:
    """Instructions per packet of each role: over the whole run of `big` (start-up
    included), and marginal (`big` minus `small`, the same command on a smaller
    fixture, per extra packet: the start-up cancels out)."""
    small_by_role = {p.role: p for p in small}
    rows = []
    for proc in big:
        row = {"role": proc.role, "pid": proc.pid, "instructions": proc.instructions,
               "per_packet": proc.instructions / packets}
        if proc.to_first_fork is not None:
            row["to_first_fork"] = proc.to_first_fork
        other = small_by_role.get(proc.role)
        if other is not None and packets > small_packets:
            row["small_instructions"] = other.instructions
            row["marginal_per_packet"] = ((proc.instructions - other.instructions)
                                          / (packets - small_packets))
        rows.append(row)
    return rows
