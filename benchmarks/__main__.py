"""``python -m benchmarks``: the one command (see benchmarks/README.md).

    python -m benchmarks [--quick] [--rounds N] [--packets N] [--only TOOL...] [--memory]
                         [--callgrind] [--baseline RESULTS.json]
    python -m benchmarks plot RESULTS.json [-o OUT.png]
    python -m benchmarks live [--seconds S] [--rates PPS...]
    python -m benchmarks probe [--rounds N]     (ping and scan against nmap, fping, ping)
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path


def _run(argv: list[str]) -> int:
    from . import suite

    ap = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Check pt-engine's counters against generated fixtures, then time it "
                    "side by side with the C limit and its peers. Subcommands: plot, live.")
    ap.add_argument("--quick", action="store_true",
                    help="small fixtures and 2 rounds: a smoke test, not a measurement")
    ap.add_argument("--rounds", type=int, help="timed rounds (default 5, 2 with --quick)")
    ap.add_argument("--packets", type=int,
                    help="frames in the main 64-byte and imix fixtures (default 10000000); "
                         "the smaller fixtures are capped at this")
    ap.add_argument("--only", nargs="+", metavar="TOOL", choices=sorted(suite.TOOLS),
                    help="time only these tools (c-empty on the 64B fixture stays, as the "
                         f"reference): {', '.join(sorted(suite.TOOLS))}")
    ap.add_argument("--memory", action="store_true",
                    help="also run pt-engine on 10M- and 40M-frame 64-byte files and report the "
                         "peak memory of its whole process tree")
    ap.add_argument("--callgrind", action="store_true",
                    help="also count the instructions per packet of each process (pt-engine's "
                         "main and capture processes, the C empty loop) under valgrind's "
                         "callgrind on the 1M-frame 64-byte fixture (skipped if valgrind is "
                         "missing)")
    ap.add_argument("--baseline", type=Path, metavar="RESULTS.json",
                    help="an earlier results file (e.g. of main): report how many times "
                         "cheaper the aggregator's CPU on the many-ports fixture is now")
    ap.add_argument("--pt-engine", metavar="EXE",
                    help="the pt-engine executable to measure (default: the script installed "
                         "next to this Python)")
    args = ap.parse_args(argv)
    baseline = None
    if args.baseline:
        try:
            baseline = json.loads(args.baseline.read_text())
        except (OSError, ValueError) as err:
            ap.error(f"--baseline {args.baseline}: {err}")
    sizes = suite.QUICK_SIZES if args.quick else suite.DEFAULT_SIZES
    if args.packets:
        n = args.packets
        sizes = replace(sizes, main=n, mixed=min(sizes.mixed, n), medium=min(sizes.medium, n),
                        small=min(sizes.small, n), tiny=min(sizes.tiny, n))
    rounds = args.rounds or (2 if args.quick else 5)
    if rounds < 1:
        ap.error("--rounds must be at least 1")
    try:
        result = suite.run_suite(sizes, rounds, args.only, args.memory, args.quick,
                                 args.pt_engine, use_callgrind=args.callgrind,
                                 baseline=baseline)
    except RuntimeError as err:
        print(f"benchmarks: error: {err}", file=sys.stderr)
        return 1
    path = suite.write_result(result, "-quick" if args.quick else "")
    print(suite.format_report(result))
    print(f"\nresults: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    failed = any(not g["ok"] for g in result["gate"]) or any(c.get("failure")
                                                             for c in result["cases"])
    return 1 if failed else 0


def _plot(argv: list[str]) -> int:
    from . import plot

    ap = argparse.ArgumentParser(prog="python -m benchmarks plot",
                                 description="Render a results file as a PNG bar chart of Mpps.")
    ap.add_argument("results", type=Path, help="benchmarks/results/<timestamp>.json")
    ap.add_argument("-o", "--output", type=Path, help="PNG to write (default: next to RESULTS)")
    args = ap.parse_args(argv)
    out = plot.render(args.results, args.output)
    print(out)
    return 0


def _live(argv: list[str]) -> int:
    from . import live

    return live.main(argv)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the file benchmarks, ``plot`` or ``live``; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "plot":
        return _plot(argv[1:])
    if argv and argv[0] == "live":
        return _live(argv[1:])
    if argv and argv[0] == "probe":
        from . import probe
        return probe.main(argv[1:])
    try:
        return _run(argv)
    except KeyboardInterrupt:
        print("benchmarks: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
