"""The file benchmarks: fixtures, tools, the correctness gate, timed rounds, the table.

Method (see README.md): every measurement is a whole process (interpreter
start included) on a fixture just read into the page cache; one untimed
warm-up run per case first, then N rounds in which every case runs once, in
an order rotated from round to round, so that all tools see the same
machine state; medians and min/max over the rounds; ratios are taken within
the run (and per round for the targets), never against numbers from
another day.
"""
from __future__ import annotations

import json
import re
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import callgrind, gen, measure
from .gen import FixtureSpec

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers"
RESULTS_DIR = HERE / "results"


def log(message: str) -> None:
    """Progress on stderr; stdout carries the table only."""
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- fixtures

@dataclass(frozen=True)
class Sizes:
    """Packets in each fixture of a run."""

    main: int          # the 64-byte and imix fixtures the fast tools read
    mixed: int         # VLAN / IPv6 / ICMP / ARP with Zipf ports, imix sizes
    medium: int        # pcapy-ng next() loop
    small: int         # dpkt, tshark, pt-engine's pure-Python reference
    tiny: int          # scapy
    large: int | None = None   # the 64-byte 16M fixture (pt-engine and c-empty); None: not run


DEFAULT_SIZES = Sizes(main=10_000_000, mixed=2_000_000, medium=1_000_000, small=200_000,
                      tiny=10_000, large=16_000_000)
QUICK_SIZES = Sizes(main=1_000_000, mixed=200_000, medium=200_000, small=50_000, tiny=2_000)
MEMORY_PACKETS = (10_000_000, 40_000_000)
# The many-ports fixture: both ports of every flow drawn from all 65536, TCP and
# UDP, 2**20 flows: about 131k active (protocol, port) rows in every 1-second window.
MANY_PORTS_POOL = 65536
MANY_PORTS_FLOWS = 1 << 20
MANY_PORTS_MIN_ROWS = 100_000
# The TCP-heavy fixture: 64-byte frames of 100k concurrent TCP connections (more
# than the 65,536 the quality analysis keeps: its LRU eviction at work).
TCP_CONNECTIONS = 100_000


def fixture_specs(sizes: Sizes) -> dict[str, FixtureSpec]:
    """The fixtures of a run by role."""
    return {
        "64": FixtureSpec(sizes="64", packets=sizes.main),
        "64x2": FixtureSpec(sizes="64", packets=sizes.main, split=2),
        "imix": FixtureSpec(sizes="imix", packets=sizes.main),
        "mixed": FixtureSpec(mix="mixed", sizes="imix", packets=sizes.mixed, zipf=1.1),
        "64-medium": FixtureSpec(sizes="64", packets=sizes.medium),
        "64-small": FixtureSpec(sizes="64", packets=sizes.small),
        "64-tiny": FixtureSpec(sizes="64", packets=sizes.tiny),
        "many-ports": FixtureSpec(sizes="64", packets=sizes.main, flows=MANY_PORTS_FLOWS,
                                  pool=MANY_PORTS_POOL),
        "tcp-100k": FixtureSpec(mix="tcp", sizes="64", packets=sizes.main,
                                flows=TCP_CONNECTIONS),
        **({"64-16M": FixtureSpec(sizes="64", packets=sizes.large)} if sizes.large else {}),
    }


def label(spec: FixtureSpec) -> str:
    """Short fixture name for the table, e.g. '64B 10M', 'mixed imix 2M z1.1', '64B 10M /2'."""
    size = "64B" if spec.sizes == "64" else ("1500B" if spec.sizes == "1500" else spec.sizes)
    text = f"{size} {gen.short_count(spec.packets)}"
    if spec.mix != "plain":
        text = f"{spec.mix} {text}"
    if spec.zipf is not None:
        text += f" z{spec.zipf:g}"
    if spec.pool is not None:
        text += " all ports" if spec.pool == 65536 else f" pool {spec.pool}"
    if spec.split > 1:
        text += f" /{spec.split}"
    return text


@dataclass
class Fixture:
    """A generated fixture: its files and the counters they hold."""

    role: str
    spec: FixtureSpec
    paths: list[Path]
    summary: dict            # expected summary of all files read together
    kinds: dict              # packets per kind of frame (benchmarks.gen.KIND_NAMES)

    @property
    def packets(self) -> int:
        """Packets in all files."""
        return self.summary["totals"]["packets"]

    @property
    def file_bytes(self) -> int:
        """Bytes of all files on disk."""
        return sum(p.stat().st_size for p in self.paths)


def load_fixture(role: str, spec: FixtureSpec, directory: Path = gen.FIXTURE_DIR) -> Fixture:
    """Generate the fixture if missing and read its manifests."""
    paths = gen.ensure(spec, directory, log=log)
    manifests = [gen.load_manifest(p) for p in paths]
    kinds = {k: sum(m["kinds"][k] for m in manifests) for k in gen.KIND_NAMES}
    return Fixture(role, spec, paths, gen.merge_summaries([m["summary"] for m in manifests]), kinds)


# --------------------------------------------------------------------------- tools

@dataclass(frozen=True)
class Context:
    """What tool commands need: the compiled C limit, how to start pt-engine and Python,
    and the launcher that measures them."""

    limit: Path
    launcher: measure.Launcher
    pt_engine: tuple[str, ...]
    python: str = sys.executable


Check = Callable[[measure.Run, Fixture], "str | None"]


@dataclass(frozen=True)
class Tool:
    """A way of counting a fixture, run as one process."""

    name: str
    about: str
    command: Callable[[Context, list[Path]], list[str]]
    check: Check
    discard_stdout: bool = False     # its stdout is the counters stream: to /dev/null
    env: dict | None = None
    note: str = ""                   # shown under the table when the tool is timed


def _last_json(run: measure.Run) -> dict:
    lines = [ln for ln in run.stdout.splitlines() if ln.strip()]
    if not lines:
        raise ValueError("no output")
    return json.loads(lines[-1])


def check_counts(run: measure.Run, fx: Fixture) -> str | None:
    """Compare a peer's JSON line (packets, bytes, ported, port_rows) with the manifest."""
    try:
        got = _last_json(run)
    except ValueError as err:
        return f"unreadable output ({err}): {run.stdout[-200:]!r}"
    want = {"packets": fx.summary["totals"]["packets"], "bytes": fx.summary["totals"]["bytes"],
            "ported": fx.summary["classes"]["ported"]["packets"],
            "port_rows": len(fx.summary["ports"])}
    wrong = [f"{k} {got[k]} != {v}" for k, v in want.items() if k in got and got[k] != v]
    return "; ".join(wrong) or None


_CONV = re.compile(r"<->\s+\S+\s+(\d+)\s+\S+\s+\S+\s+(\d+)\s")


def check_tshark_conv(run: measure.Run, fx: Fixture) -> str | None:
    """The frames of tshark's TCP conversation table must add up to the TCP packets."""
    frames = sum(int(a) + int(b) for a, b in _CONV.findall(run.stdout))
    want = fx.kinds["ipv4_tcp"] + fx.kinds["ipv6_tcp"]
    return None if frames == want else f"TCP conversation frames {frames} != {want}"


def check_exit_only(run: measure.Run, fx: Fixture) -> str | None:
    """No counts to compare (the output is discarded); the exit status was checked."""
    return None


def _peer(script: str) -> Callable[[Context, list[Path]], list[str]]:
    return lambda ctx, paths: [ctx.python, str(PEERS / script), *map(str, paths)]


TOOLS = {t.name: t for t in (
    Tool("pt-engine", "pt-engine read F (1 capture process), msgpack to /dev/null",
         lambda ctx, paths: [*ctx.pt_engine, "read", *map(str, paths)], check_exit_only,
         discard_stdout=True, note="counters checked by the gate before timing"),
    Tool("pt-engine-noq", "pt-engine read F --no-tcp-quality: the counters alone",
         lambda ctx, paths: [*ctx.pt_engine, "read", *map(str, paths), "--no-tcp-quality"],
         check_exit_only, discard_stdout=True,
         note="counters checked by the gate before timing; pt-engine itself measures TCP "
              "quality too (on by default)"),
    Tool("pt-engine-talkers", "pt-engine read F --analyser talkers: the top talkers too",
         lambda ctx, paths: [*ctx.pt_engine, "read", *map(str, paths), "--analyser", "talkers"],
         check_exit_only, discard_stdout=True,
         note="counters checked by the gate before timing; the talkers analyser on top of "
              "pt-engine (TCP quality on in both)"),
    Tool("pt-engine-2proc", "pt-engine read A B: one capture process per file",
         lambda ctx, paths: [*ctx.pt_engine, "read", *map(str, paths)], check_exit_only,
         discard_stdout=True, note="counters checked by the gate before timing"),
    Tool("pt-engine-reference", "pt-engine read F with PT_ENGINE_PUREPYTHON=1",
         lambda ctx, paths: [*ctx.pt_engine, "read", *map(str, paths)], check_exit_only,
         discard_stdout=True, env={"PT_ENGINE_PUREPYTHON": "1"},
         note="counters checked by the gate before timing"),
    Tool("c-empty", "C pcap_next_ex loop that only counts (benchmarks/limit.c)",
         lambda ctx, paths: [str(ctx.limit), "empty", str(paths[0])], check_counts),
    Tool("c-count", "C pcap_loop + parse + per-port uint64 counters (benchmarks/limit.c)",
         lambda ctx, paths: [str(ctx.limit), "count", str(paths[0])], check_counts),
    Tool("tcpdump", "tcpdump -r F -w /dev/null",
         lambda ctx, paths: ["tcpdump", "-r", str(paths[0]), "-w", "/dev/null"], check_exit_only,
         note="copies the file; nothing to count, exit status checked"),
    Tool("tshark", "tshark -q -z conv,tcp -r F",
         lambda ctx, paths: ["tshark", "-q", "-z", "conv,tcp", "-r", str(paths[0])],
         check_tshark_conv, note="checked: TCP conversation frames = TCP packets"),
    Tool("pcapy-next", "pcapy-ng next() loop, Python parse, dict counters",
         _peer("pcapy_next.py"), check_counts),
    Tool("pcapy-batch", "pcapy-ng next_batch + numpy parse + np.bincount",
         _peer("pcapy_batch.py"), check_counts),
    Tool("dpkt", "dpkt pcap.Reader + Ethernet decode, dict counters",
         _peer("dpkt_ports.py"), check_counts),
    Tool("scapy", "scapy PcapReader, TCP/UDP layers, dict counters",
         _peer("scapy_ports.py"), check_counts),
)}

PT_ENGINE_TOOLS = ("pt-engine", "pt-engine-noq", "pt-engine-talkers", "pt-engine-2proc",
                   "pt-engine-reference")

# (tool, fixture role), in the order of the first round.
CASES = (
    ("pt-engine", "64"), ("pt-engine-noq", "64"), ("pt-engine-talkers", "64"),
    ("pt-engine-2proc", "64x2"),
    ("c-empty", "64"), ("c-count", "64"), ("tcpdump", "64"), ("pcapy-batch", "64"),
    ("pt-engine", "imix"), ("pt-engine-noq", "imix"), ("pt-engine-talkers", "imix"),
    ("c-empty", "imix"), ("c-count", "imix"),
    ("tcpdump", "imix"), ("pcapy-batch", "imix"),
    ("pt-engine", "tcp-100k"), ("pt-engine-noq", "tcp-100k"), ("c-empty", "tcp-100k"),
    ("pt-engine", "mixed"), ("c-empty", "mixed"), ("c-count", "mixed"),
    ("pcapy-next", "64-medium"),
    ("pt-engine", "64-small"), ("pt-engine-reference", "64-small"), ("dpkt", "64-small"),
    ("tshark", "64-small"),
    ("scapy", "64-tiny"),
    ("pt-engine", "many-ports"), ("pt-engine-talkers", "many-ports"), ("c-empty", "many-ports"),
    ("c-count", "many-ports"),
    ("pt-engine", "64-16M"), ("c-empty", "64-16M"),
)

# Ratios are to the C empty loop on the same fixture, or on the 64-byte main one.
REFERENCE_ROLE = {"64x2": "64", "64-medium": "64", "64-small": "64", "64-tiny": "64"}

# (what, (tool, role), (reference tool, role), at least)
TARGETS = (
    ("1 process, 64B: >= 0.8 x C empty loop", ("pt-engine", "64"), ("c-empty", "64"), 0.8),
    ("1 process, imix: >= 0.8 x C empty loop", ("pt-engine", "imix"), ("c-empty", "imix"), 0.8),
    ("1 process, 64B: >= 2 x pcapy-ng next_batch+numpy", ("pt-engine", "64"),
     ("pcapy-batch", "64"), 2.0),
    ("1 process, imix: >= 2 x pcapy-ng next_batch+numpy", ("pt-engine", "imix"),
     ("pcapy-batch", "imix"), 2.0),
    ("2 processes over 2 files: >= 1.6 x 1 process", ("pt-engine-2proc", "64x2"),
     ("pt-engine", "64"), 1.6),
    ("1 process, 64B 16M: >= 0.8 x C empty loop", ("pt-engine", "64-16M"),
     ("c-empty", "64-16M"), 0.8),
    # Issue 12: the TCP quality analysis costs at most 25 % of the counting rate.
    ("TCP quality on, 64B: >= 0.75 x off", ("pt-engine", "64"), ("pt-engine-noq", "64"), 0.75),
    ("TCP quality on, imix: >= 0.75 x off", ("pt-engine", "imix"), ("pt-engine-noq", "imix"),
     0.75),
    ("TCP quality on, 64B TCP 100k conns: >= 0.75 x off", ("pt-engine", "tcp-100k"),
     ("pt-engine-noq", "tcp-100k"), 0.75),
)
# What an analyser costs, with no target: (what, (tool, role), (reference tool, role)).
RATIOS = (
    ("talkers on / off, 64B", ("pt-engine-talkers", "64"), ("pt-engine", "64")),
    ("talkers on / off, imix", ("pt-engine-talkers", "imix"), ("pt-engine", "imix")),
    ("talkers on / off, many ports (2^20 flows)", ("pt-engine-talkers", "many-ports"),
     ("pt-engine", "many-ports")),
)
MEMORY_LIMIT_MIB = 200
GATE_FAILURE = "wrong counters (gate); not timed"


def make_context(build_dir: Path = gen.FIXTURE_DIR, pt_engine: str | None = None) -> Context:
    """Compile the C helpers (if needed) into `build_dir` and find pt-engine.

    Raises RuntimeError when a helper cannot be compiled or `pt_engine` is not executable.
    """
    return Context(limit=measure.compile_helper("limit", build_dir, ("pcap",)),
                   launcher=measure.Launcher(measure.compile_helper("rusage", build_dir)),
                   pt_engine=pt_engine_command(pt_engine))


def pt_engine_command(explicit: str | None = None) -> tuple[str, ...]:
    """How to start pt-engine: `explicit` (an executable) if given; else the script
    installed next to this Python, else on PATH, else ``python -m pt_engine``. The script
    next to Python avoids wrappers such as pyenv's shims (a bash script that would add
    its own start-up time to every run)."""
    if explicit:
        found = shutil.which(explicit)
        if not found:
            raise RuntimeError(f"--pt-engine {explicit}: not an executable")
        return (str(Path(found).resolve()),)
    beside = Path(sys.executable).parent / "pt-engine"
    if beside.exists():
        return (str(beside),)
    found = shutil.which("pt-engine")
    return (found,) if found else (sys.executable, "-m", "pt_engine")


# --------------------------------------------------------------------------- the gate

def _describe_mismatch(got: dict, want: dict) -> str:
    parts = []
    if got.get("totals") != want["totals"]:
        parts.append(f"totals {got.get('totals')} != {want['totals']}")
    for name, value in want["classes"].items():
        if got.get("classes", {}).get(name) != value:
            parts.append(f"class {name} {got.get('classes', {}).get(name)} != {value}")
    got_rows = {(r[0], r[1]): r[2:] for r in got.get("ports", [])}
    want_rows = {(r[0], r[1]): r[2:] for r in want["ports"]}
    missing = sorted(set(want_rows) - set(got_rows))
    extra = sorted(set(got_rows) - set(want_rows))
    differ = sorted(k for k in set(want_rows) & set(got_rows) if want_rows[k] != got_rows[k])
    if missing:
        parts.append(f"{len(missing)} port rows missing, e.g. {missing[:3]}")
    if extra:
        parts.append(f"{len(extra)} unexpected port rows, e.g. {extra[:3]}")
    for k in differ[:3]:
        parts.append(f"row {list(k)}: {got_rows[k]} != {want_rows[k]}")
    if len(differ) > 3:
        parts.append(f"... {len(differ)} rows differ in all")
    if not parts and got.get("ports") != want["ports"]:
        parts.append("port rows in the wrong order")
    return "; ".join(parts)


@dataclass
class GateResult:
    """pt-engine's summary on one fixture compared with the manifest."""

    tool: str
    role: str
    fixture: str
    ok: bool
    detail: str
    wall_s: float
    rows_per_window: dict | None = None    # min / median / max port rows of the windows
    tcp_quality_state: dict | None = None  # the summary's, when the analysis ran


def _rows_per_window(stdout: str) -> dict | None:
    """Port rows of each window record of a JSON-lines stream: min, median, max, windows."""
    rows = []
    for line in stdout.splitlines():
        if line.startswith('{"type":"window"'):
            rows.append(len(json.loads(line).get("ports", ())))
    if not rows:
        return None
    return {"windows": len(rows), "min": min(rows), "median": statistics.median(rows),
            "max": max(rows)}


def gate(ctx: Context, tool: Tool, fx: Fixture) -> GateResult:
    """Run pt-engine with --format json on the fixture and compare its summary exactly."""
    env = _env(tool)
    run = ctx.launcher.run([*tool.command(ctx, fx.paths), "--format", "json"], env=env)
    detail = ""
    got = None
    if not run.ok:
        detail = f"exit status {run.returncode}: {run.stderr.strip()[-300:]}"
    else:
        try:
            got = _last_json(run)
        except ValueError as err:
            got, detail = None, f"unreadable summary ({err})"
        if got is not None:
            if got.get("type") != "summary":
                detail = f"last record is {got.get('type')!r}, not the summary"
            else:
                detail = _describe_mismatch(got, fx.summary)
    return GateResult(tool.name, fx.role, label(fx.spec), not detail, detail or "exact",
                      round(run.wall_s, 3),
                      _rows_per_window(run.stdout) if run.ok and fx.spec.pool else None,
                      (got or {}).get("tcp_quality", {}).get("state"))


def _env(tool: Tool) -> dict:
    return measure.python_env(gen.FIXTURE_DIR / "pycache", tool.env)


# --------------------------------------------------------------------------- timing

@dataclass
class Case:
    """One tool on one fixture, and its timed runs."""

    tool: Tool
    fixture: Fixture
    runs: list[measure.Run] = field(default_factory=list)
    failure: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        """(tool name, fixture role)."""
        return self.tool.name, self.fixture.role

    def mpps(self) -> list[float]:
        """Million packets per second of each timed run."""
        return [self.fixture.packets / r.wall_s / 1e6 for r in self.runs]

    def execute(self, ctx: Context) -> measure.Run:
        """Warm the fixture into the page cache, then run and check the tool once."""
        measure.warm(self.fixture.paths)
        run = ctx.launcher.run(self.tool.command(ctx, self.fixture.paths), env=_env(self.tool),
                                  discard_stdout=self.tool.discard_stdout)
        if not run.ok:
            self.failure = f"exit status {run.returncode}: {run.stderr.strip()[-300:]}"
        else:
            self.failure = self.tool.check(run, self.fixture)
        return run


def time_cases(ctx: Context, cases: list[Case], rounds: int) -> None:
    """A warm-up run of every case, then `rounds` rounds, rotating the order each round.

    A case whose run fails or miscounts is marked failed and not run again.
    """
    for case in cases:
        run = case.execute(ctx)
        log(f"warm-up  {case.tool.name:20} {label(case.fixture.spec):22} {run.wall_s:7.2f} s"
            + (f"  FAIL: {case.failure}" if case.failure else ""))
    for r in range(rounds):
        shift = r % len(cases)
        for case in cases[shift:] + cases[:shift]:
            if case.failure:
                continue
            run = case.execute(ctx)
            if case.failure:
                log(f"round {r + 1}: {case.tool.name} on {label(case.fixture.spec)}: "
                    f"FAIL: {case.failure}")
                continue
            case.runs.append(run)
        log(f"round {r + 1}/{rounds} done")


def case_stats(case: Case, reference: Case | None) -> dict:
    """Median, spread, ratio to the reference, CPU and memory of a case, as a JSON-able dict."""
    out = {"tool": case.tool.name, "about": case.tool.about, "fixture": label(case.fixture.spec),
           "role": case.fixture.role, "fixture_files": [p.name for p in case.fixture.paths],
           "packets": case.fixture.packets, "failure": case.failure,
           "runs": [{"wall_s": round(r.wall_s, 4), "cpu_s": round(r.cpu_s, 4),
                     "main_cpu_s": r.main_cpu_s, "maxrss_kib": r.maxrss_kib}
                    for r in case.runs]}
    if case.failure or not case.runs:
        return out
    mpps = case.mpps()
    out.update(mpps_median=statistics.median(mpps), mpps_min=min(mpps), mpps_max=max(mpps),
               cpu_s_median=statistics.median(r.cpu_s for r in case.runs),
               cpu_ns_per_packet=statistics.median(r.cpu_s for r in case.runs)
               / case.fixture.packets * 1e9,
               peak_mib=max(r.maxrss_kib for r in case.runs) / 1024,
               argv=case.runs[0].argv)
    main = [r.main_cpu_s for r in case.runs if r.main_cpu_s is not None]
    if main:
        out.update(main_cpu_s_median=statistics.median(main), main_cpu_s_min=min(main),
                   main_cpu_s_max=max(main),
                   children_cpu_s_median=statistics.median(r.children_cpu_s for r in case.runs
                                                           if r.main_cpu_s is not None),
                   main_cpu_ns_per_packet=statistics.median(main) / case.fixture.packets * 1e9)
    if reference is not None and reference.runs and not reference.failure:
        out["reference"] = f"c-empty on {label(reference.fixture.spec)}"
        out["ratio_c_empty"] = out["mpps_median"] / statistics.median(reference.mpps())
    return out


def paired_ratios(a: Case, b: Case) -> list[float]:
    """Per-round ratios of a's Mpps to b's (both ran in each of these rounds)."""
    return [x / y for x, y in zip(a.mpps(), b.mpps())]


def _paired(by_key: dict[tuple[str, str], Case], what: str, a, b) -> dict:
    """The per-round paired ratios of case a to case b, their median and best."""
    ca, cb = by_key.get(a), by_key.get(b)
    if ca is None or cb is None or ca.failure or cb.failure or not ca.runs or not cb.runs:
        failed = [c.key for c in (ca, cb) if c is not None and c.failure]
        return {"target": what, "status": "FAIL (wrong counts)" if failed else "not run"}
    ratios = paired_ratios(ca, cb)
    return {"target": what, "ratios": ratios, "median": statistics.median(ratios),
            "best": max(ratios)}


def evaluate_targets(by_key: dict[tuple[str, str], Case]) -> list[dict]:
    """Each throughput target of issue 4, judged on the median of per-round paired ratios."""
    out = []
    for what, a, b, least in TARGETS:
        entry = _paired(by_key, what, a, b)
        if "median" in entry:
            entry.update(at_least=least,
                         status="met" if entry["median"] >= least else "NOT met")
        out.append(entry)
    return out


def evaluate_ratios(by_key: dict[tuple[str, str], Case]) -> list[dict]:
    """The RATIOS: what an analyser costs, as medians of per-round paired ratios."""
    return [_paired(by_key, what, a, b) for what, a, b in RATIOS]


# --------------------------------------------------------------------------- memory

def memory_study(ctx: Context, directory: Path = gen.FIXTURE_DIR) -> list[dict]:
    """pt-engine on 64-byte fixtures of 10M and 40M frames: gate, then peak memory of the tree."""
    tool = TOOLS["pt-engine"]
    out = []
    for packets in MEMORY_PACKETS:
        fx = load_fixture("memory", FixtureSpec(sizes="64", packets=packets), directory)
        g = gate(ctx, tool, fx)
        row = {"fixture": label(fx.spec), "packets": packets, "gate": g.detail, "ok": g.ok}
        if g.ok:
            measure.warm(fx.paths)
            run = ctx.launcher.run(tool.command(ctx, fx.paths), env=_env(tool),
                                   discard_stdout=True, sample_tree=True)
            row.update(ok=run.ok, wall_s=run.wall_s, cpu_s=run.cpu_s,
                       max_process_mib=run.maxrss_kib / 1024,
                       tree_rss_mib=run.tree_rss_kib / 1024, tree_pss_mib=run.tree_pss_kib / 1024)
            row["status"] = ("met" if row["tree_pss_mib"] < MEMORY_LIMIT_MIB else "NOT met")
        log(f"memory   {row['fixture']:22} {row.get('tree_pss_mib', 0):7.1f} MiB PSS"
            + ("" if g.ok else f"  FAIL: {g.detail}"))
        out.append(row)
    return out


# --------------------------------------------------------------------------- report

def format_table(rows: list[dict]) -> str:
    """The results table: tool, fixture, Mpps, spread, ratio to C empty, CPU s, peak MiB."""
    head = ("tool", "fixture", "Mpps", "min-max", "x C empty", "CPU s", "ns/pkt", "main CPU s",
            "peak MiB")
    blank = ("",) * (len(head) - 3)
    lines = [head]
    for r in rows:
        if r.get("failure"):
            lines.append((r["tool"], r["fixture"], "FAIL", *blank))
            continue
        if "mpps_median" not in r:
            lines.append((r["tool"], r["fixture"], "-", *blank))
            continue
        ratio = _num(r["ratio_c_empty"]) if "ratio_c_empty" in r else ""
        main = f"{r['main_cpu_s_median']:.2f}" if "main_cpu_s_median" in r else ""
        lines.append((r["tool"], r["fixture"], _num(r["mpps_median"]),
                      f"{_num(r['mpps_min'])}-{_num(r['mpps_max'])}", ratio,
                      f"{r['cpu_s_median']:.2f}", f"{r['cpu_ns_per_packet']:.0f}", main,
                      f"{r['peak_mib']:.0f}"))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    text = []
    for n, line in enumerate(lines):
        cells = [str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in
                 enumerate(zip(line, widths))]
        text.append("  ".join(cells).rstrip())
        if n == 0:
            text.append("  ".join("-" * w for w in widths))
    return "\n".join(text)


def _num(x: float) -> str:
    return f"{x:.2f}" if x >= 0.1 else f"{x:.4f}"


def format_report(result: dict) -> str:
    """Table, footnotes, gate failures, targets and memory as printed at the end of a run."""
    out = [format_table(result["cases"]), ""]
    notes = {c["tool"]: TOOLS[c["tool"]].note for c in result["cases"] if TOOLS[c["tool"]].note}
    for tool, note in notes.items():
        out.append(f"  {tool}: {note}")
    out.append("  x C empty: median Mpps / median Mpps of c-empty on the same fixture "
               "(small fixtures: on the 64B main one)")
    out.append("  CPU s: user+system of the whole process tree; main CPU s: of its first "
               "process alone (pt-engine's aggregator, without its capture processes; 10 ms "
               "steps); peak MiB: largest RSS of one process of the tree")
    for g in result["gate"]:
        if not g["ok"]:
            out.append(f"  FAIL {g['tool']} on {g['fixture']}: {g['detail']}")
    for c in result["cases"]:
        if c.get("failure") and c["failure"] != GATE_FAILURE:
            out.append(f"  FAIL {c['tool']} on {c['fixture']}: {c['failure']}")
    if result["targets"]:
        out += ["", "targets (median of per-round paired ratios; best round in brackets):"]
        if result["options"]["quick"]:
            out.append("  (--quick: interpreter start dominates these small fixtures; "
                       "the targets need the default run)")
        for t in result["targets"]:
            if "median" in t:
                out.append(f"  {t['target']:52} {t['median']:.3f} [{t['best']:.3f}]  {t['status']}")
            else:
                out.append(f"  {t['target']:52} {t['status']}")
    ratios = [r for r in result.get("ratios", []) if "median" in r]
    if ratios:
        out += ["", "analyser cost (median of per-round paired Mpps ratios, on / off; best "
                    "round in brackets):"]
        for r in ratios:
            out.append(f"  {r['target']:52} {r['median']:.3f} [{r['best']:.3f}]")
    states = [g for g in result["gate"] if g.get("tcp_quality_state")]
    if states:
        out += ["", "TCP quality state at the end of each gate run (the bounds at work):"]
        for g in states:
            st = g["tcp_quality_state"]
            out.append(f"  {g['tool']:15} {g['fixture']:22} " + ", ".join(
                f"{k} {v}" for k, v in st.items() if k in (
                    "analysed", "connections", "connections_evicted", "records_skipped",
                    "holes_forgotten")))
    out += format_aggregator(result)
    out += format_callgrind(result.get("callgrind"))
    if result.get("memory"):
        out += ["", f"memory, pt-engine read (target: < {MEMORY_LIMIT_MIB} MiB, flat in file size):"]
        for m in result["memory"]:
            if "tree_pss_mib" in m:
                out.append(f"  {m['fixture']:10} tree PSS {m['tree_pss_mib']:6.1f} MiB  tree RSS "
                           f"{m['tree_rss_mib']:6.1f} MiB  largest process "
                           f"{m['max_process_mib']:6.1f} MiB  {m['status']}")
            else:
                out.append(f"  {m['fixture']:10} FAIL: {m['gate']}")
    return "\n".join(out)


def aggregator_rows(result: dict) -> list[dict]:
    """pt-engine's aggregator (its main process) on the many-ports fixture: CPU seconds,
    rows per window, and the ratio to the same figure of a baseline result if given."""
    gates = {(g["tool"], g["role"]): g for g in result["gate"]}
    base = {(c["tool"], c["role"]): c for c in (result.get("baseline") or {}).get("cases", [])}
    out = []
    for c in result["cases"]:
        if c["role"] != "many-ports" or c["tool"] != "pt-engine":
            continue
        row = {"tool": c["tool"], "fixture": c["fixture"], "failure": c.get("failure"),
               "rows_per_window": (gates.get((c["tool"], c["role"])) or {}).get(
                   "rows_per_window")}
        for k in ("main_cpu_s_median", "main_cpu_s_min", "main_cpu_s_max",
                  "children_cpu_s_median", "main_cpu_ns_per_packet"):
            if k in c:
                row[k] = c[k]
        old = base.get((c["tool"], c["role"]))
        if old and "main_cpu_s_median" in old and row.get("main_cpu_s_median"):
            row["baseline_main_cpu_s_median"] = old["main_cpu_s_median"]
            row["cheaper_than_baseline"] = old["main_cpu_s_median"] / row["main_cpu_s_median"]
        out.append(row)
    return out


def format_aggregator(result: dict) -> list[str]:
    """The aggregator section of the report (empty when the case was not run)."""
    rows = result.get("aggregator") or []
    if not rows:
        return []
    out = ["", "aggregator (pt-engine's main process, capture processes apart), many-ports "
           "fixture:"]
    for r in rows:
        rpw = r.get("rows_per_window")
        rows_text = (f"{rpw['min']}-{rpw['max']} rows/window over {rpw['windows']} windows"
                     + ("" if rpw["min"] >= MANY_PORTS_MIN_ROWS
                        else f" (UNDER {MANY_PORTS_MIN_ROWS})")) if rpw else "rows/window unknown"
        if r.get("failure") or "main_cpu_s_median" not in r:
            out.append(f"  {r['fixture']}: {rows_text}; {r.get('failure') or 'no CPU figures'}")
            continue
        line = (f"  {r['fixture']}: {rows_text}; aggregator CPU {r['main_cpu_s_median']:.2f} s "
                f"[{r['main_cpu_s_min']:.2f}-{r['main_cpu_s_max']:.2f}] "
                f"({r['main_cpu_ns_per_packet']:.0f} ns/pkt), capture processes "
                f"{r['children_cpu_s_median']:.2f} s")
        if "cheaper_than_baseline" in r:
            line += (f"; baseline {r['baseline_main_cpu_s_median']:.2f} s: "
                     f"{r['cheaper_than_baseline']:.1f} x cheaper (target >= 20 x)")
        out.append(line)
    return out


def format_callgrind(cg: dict | None) -> list[str]:
    """The instruction-count section of the report."""
    if not cg:
        return []
    if cg.get("skipped"):
        return ["", cg["skipped"]]
    out = ["", f"instructions (callgrind; not timing: independent of load) on "
               f"{cg['fixture']} ({cg['packets']} frames; marginal: minus the same run on "
               f"{cg['small_fixture']}, per extra frame):"]
    for tool in cg["tools"]:
        if tool.get("error"):
            out.append(f"  {tool['tool']}: FAIL: {tool['error']}")
            continue
        for r in tool["processes"]:
            text = (f"  {tool['tool']:10} {r['role']:14} {r['instructions'] / 1e6:10.1f} M  "
                    f"{r['per_packet']:8.1f} /pkt")
            if "marginal_per_packet" in r:
                text += f"  marginal {r['marginal_per_packet']:8.1f} /pkt"
            if "to_first_fork" in r:
                text += f"  to the first fork {r['to_first_fork'] / 1e6:.1f} M"
            out.append(text)
    q = cg.get("tcp_quality")
    if q:
        text = (f"  TCP quality analysis (capture process, pt-engine minus pt-engine-noq): "
                f"{q['per_packet']:.1f} /pkt")
        if "marginal_per_packet" in q:
            text += (f", marginal {q['marginal_per_packet']:.1f} /pkt = "
                     f"{100 * q['marginal_share_of_counting']:.0f} % of the capture process "
                     f"without it")
        out.append(text)
    return out


def callgrind_study(ctx: Context, fixtures: dict[str, Fixture]) -> dict:
    """pt-engine read (msgpack to /dev/null) and the C empty loop under callgrind on the
    64-byte medium fixture, and on the tiny one for the marginal figure."""
    if not callgrind.available():
        log(callgrind.VALGRIND_MISSING)
        return {"skipped": callgrind.VALGRIND_MISSING}
    big, small = fixtures["64-medium"], fixtures["64-tiny"]
    out = {"fixture": label(big.spec), "packets": big.packets, "small_fixture": label(small.spec),
           "small_packets": small.packets, "tools": []}
    for name in ("pt-engine", "pt-engine-noq", "c-empty"):
        tool = TOOLS[name]
        entry: dict = {"tool": name}
        try:
            runs = {}
            for fx in (small, big):
                log(f"callgrind {name:19} {label(fx.spec)}")
                runs[fx.role] = callgrind.run(tool.command(ctx, fx.paths), env=_env(tool),
                                              cwd=measure.ROOT)
            entry["argv"] = tool.command(ctx, big.paths)
            entry["processes"] = callgrind.per_packet(runs[big.role], runs[small.role],
                                                      big.packets, small.packets)
        except (RuntimeError, ValueError) as err:
            entry["error"] = str(err)
            log(f"callgrind {name}: FAIL: {err}")
        out["tools"].append(entry)
    out["tcp_quality"] = _quality_instructions(out["tools"])
    return out


def _quality_instructions(tools: list[dict]) -> dict | None:
    """The TCP quality analysis's instructions per packet: the capture process of
    pt-engine minus that of pt-engine --no-tcp-quality, per packet and marginal."""
    capture = {}
    for tool in tools:
        for r in tool.get("processes", ()):
            if r["role"] == "capture":
                capture[tool["tool"]] = r
    on, off = capture.get("pt-engine"), capture.get("pt-engine-noq")
    if on is None or off is None:
        return None
    out = {"per_packet": on["per_packet"] - off["per_packet"],
           "capture_per_packet_off": off["per_packet"]}
    if "marginal_per_packet" in on and "marginal_per_packet" in off:
        out["marginal_per_packet"] = on["marginal_per_packet"] - off["marginal_per_packet"]
        out["marginal_share_of_counting"] = out["marginal_per_packet"] / off["marginal_per_packet"]
    return out


def select_cases(specs: dict[str, FixtureSpec], only: list[str] | None) -> list[tuple[str, str]]:
    """The (tool, role) cases to run: all, or those of the `only` tools plus their c-empty
    references; a tool is run once per distinct fixture (small --packets can make roles equal)."""
    cases = [c for c in CASES if c[1] in specs]
    chosen = [c for c in cases if only is None or c[0] in only]
    refs = {("c-empty", REFERENCE_ROLE.get(role, role)) for _, role in chosen}
    picked, seen = [], set()
    for tool, role in cases:
        if (tool, role) in chosen or (tool, role) in refs:
            if (tool, specs[role]) not in seen:
                seen.add((tool, specs[role]))
                picked.append((tool, role))
    return picked


def run_suite(sizes: Sizes, rounds: int, only: list[str] | None, memory: bool,
              quick: bool, pt_engine: str | None = None,
              directory: Path = gen.FIXTURE_DIR, use_callgrind: bool = False,
              baseline: dict | None = None) -> dict:
    """Generate, gate, time, and return the whole result (for write_result).

    Raises RuntimeError when the C helpers cannot be built or pt-engine not found.
    """
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    ctx = make_context(directory, pt_engine)
    specs = fixture_specs(sizes)
    wanted = select_cases(specs, only)
    fixtures = {role: load_fixture(role, specs[role], directory)
                for role in dict.fromkeys(role for _, role in wanted)}
    gates = []
    failed_gate = set()
    for tool_name, role in wanted:
        if tool_name in PT_ENGINE_TOOLS:
            g = gate(ctx, TOOLS[tool_name], fixtures[role])
            log(f"gate     {tool_name:20} {g.fixture:22} {'ok' if g.ok else 'FAIL: ' + g.detail}")
            gates.append(g.__dict__)
            if not g.ok:
                failed_gate.add((tool_name, role))
    cases = [Case(TOOLS[t], fixtures[r]) for t, r in wanted]
    for case in cases:
        if case.key in failed_gate:
            case.failure = GATE_FAILURE
    time_cases(ctx, [c for c in cases if not c.failure], rounds)
    cg = None
    if use_callgrind:
        for role in ("64-medium", "64-tiny"):
            if role not in fixtures:
                fixtures[role] = load_fixture(role, specs[role], directory)
        cg = callgrind_study(ctx, fixtures)
    by_key = {c.key: c for c in cases}
    rows = []
    for case in cases:
        ref_role = REFERENCE_ROLE.get(case.fixture.role, case.fixture.role)
        rows.append(case_stats(case, by_key.get(("c-empty", ref_role))))
    result = {
        "started": started, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": measure.machine(ctx.pt_engine),
        "options": {"rounds": rounds, "sizes": sizes.__dict__, "only": only, "memory": memory,
                    "quick": quick, "pt_engine": list(ctx.pt_engine), "callgrind": use_callgrind,
                    "python_bytecode": "cached (PYTHONPYCACHEPREFIX=benchmarks/fixtures/pycache)"},
        "fixtures": {role: {"name": fx.spec.name, "label": label(fx.spec), "packets": fx.packets,
                            "bytes": fx.summary["totals"]["bytes"], "file_bytes": fx.file_bytes,
                            "files": [p.name for p in fx.paths], "spec": fx.spec.__dict__}
                     for role, fx in fixtures.items()},
        "gate": gates,
        "cases": rows,
        "targets": evaluate_targets(by_key),
        "ratios": evaluate_ratios(by_key),
        "memory": memory_study(ctx, directory) if memory else [],
        "callgrind": cg,
    }
    if baseline is not None:
        result["baseline"] = {"started": baseline.get("started"),
                              "repo_commit": baseline.get("machine", {}).get("repo_commit"),
                              "cases": [c for c in baseline.get("cases", [])
                                        if c.get("role") == "many-ports"]}
    result["aggregator"] = aggregator_rows(result)
    return result


def write_result(result: dict, suffix: str = "") -> Path:
    """Save a result as benchmarks/results/<timestamp><suffix>.json."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / (time.strftime("%Y%m%d-%H%M%S") + suffix + ".json")
    path.write_text(json.dumps(result, indent=1) + "\n")
    return path
