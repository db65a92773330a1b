"""``python -m benchmarks probe``: ping and scan against nmap, fping and ping, side by side.

Needs root, nmap and fping (Debian packages). Builds its own test bed: a
client and a server network namespace joined by a veth pair, 198.18.1.0/24
(RFC 2544's benchmarking range) with the server on 5 addresses and TCP
listeners on 5 ports; removed on the way out. Each round runs, in the client
namespace:

* a full TCP connect scan of the server, ports 1-65535, rate limit off:
  ``pt-engine scan --ports 1-65535 --rate 0`` against
  ``nmap -sT -p- -T5 -n``; the open ports must be the same (the listeners');
* the same as a half-open SYN scan: ``pt-engine scan --syn`` against
  ``nmap -sS -p- -T5 -n`` (both as root);
* a sweep of the /24: ``pt-engine ping 198.18.1.0/24 --timeout 0.5`` (at its
  default 100 probes/s, fping's default pace, and at --rate 0) against
  ``fping -g -r 1 -t 500 -a``; the live addresses must be the same (the 5).

Then on loopback, the timing overhead: ``ping -c N -i 0.01`` against
``pt-engine ping --count N --interval 0.01`` to 127.0.0.1 (avg and p50 RTT).
Wall times include each tool's start-up; median and spread over the rounds.
The tools of a case take turns round by round (not all rounds of one, then
the next), so that a change in the machine's load falls on all of them; each
round's ratio to the case's peer (its last tool) is kept, and their median
given too.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

NS_C, NS_S = "ptbp-c", "ptbp-s"
NET = "198.18.1"
SERVER = f"{NET}.2"
LIVE = [SERVER, f"{NET}.1", f"{NET}.10", f"{NET}.11", f"{NET}.12"]   # .1: the client
OPEN = [22, 80, 443, 8080, 50000]
RESULTS = Path(__file__).resolve().parent / "results"
LISTENER = ("import socket,select,sys\nss=[]\nfor p in map(int,sys.argv[1:]):\n"
            " s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
            " s.bind(('0.0.0.0',p));s.listen(4096);ss.append(s)\nprint('ready',flush=True)\n"
            "while True:\n for s in select.select(ss,[],[])[0]: s.accept()[0].close()\n")


def _run(*argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)


def _bed() -> subprocess.Popen:
    for ns in (NS_C, NS_S):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        _run("ip", "netns", "add", ns)
        _run("ip", "-n", ns, "link", "set", "lo", "up")
    _run("ip", "link", "add", "ptbp0", "netns", NS_C, "type", "veth", "peer", "name",
         "ptbp1", "netns", NS_S)
    _run("ip", "-n", NS_C, "addr", "add", f"{NET}.1/24", "dev", "ptbp0")
    for addr in LIVE:
        if addr != f"{NET}.1":
            _run("ip", "-n", NS_S, "addr", "add", f"{addr}/24", "dev", "ptbp1")
    for ns, dev in ((NS_C, "ptbp0"), (NS_S, "ptbp1")):
        _run("ip", "-n", ns, "link", "set", dev, "up")
    listener = subprocess.Popen(["ip", "netns", "exec", NS_S, sys.executable, "-c", LISTENER,
                                 *map(str, OPEN)], stdout=subprocess.PIPE, text=True)
    listener.stdout.readline()
    _run("ip", "netns", "exec", NS_C, "ping", "-c", "1", "-W", "2", SERVER)
    return listener


def _teardown(listener) -> None:
    if listener is not None:
        listener.kill()
        listener.wait()
    for ns in (NS_C, NS_S):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _timed(argv: list[str], ns: str | None = NS_C) -> tuple[float, str]:
    where = ["ip", "netns", "exec", ns] if ns else []
    start = time.monotonic()
    proc = subprocess.run([*where, *argv], capture_output=True, text=True, timeout=600)
    took = time.monotonic() - start
    if proc.returncode not in (0, 1):        # fping: 1 when some targets are unreachable
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()}")
    return took, proc.stdout


def _engine(*args) -> list[str]:
    return [sys.executable, "-m", "pt_engine", *args, "--format", "json", "--addresses", "clear"]


def _records(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _scan_pt(out: str) -> list[int]:
    return sorted(p["port"] for r in _records(out) if r["type"] == "scan"
                  for p in r["ports"] if p["state"] == "open")


def _scan_nmap(out: str) -> list[int]:
    return sorted(int(m) for m in re.findall(r"(\d+)/open/tcp", out))


def _sweep_pt(out: str) -> list[str]:
    return sorted(r["target"] for r in _records(out) if r.get("final") and r["up"])


def _sweep_fping(out: str) -> list[str]:
    return sorted(line.strip() for line in out.splitlines() if line.strip())


CASES = {
    "scan 1-65535": {
        "pt-engine": (_engine("scan", SERVER, "--ports", "1-65535", "--rate", "0"), _scan_pt),
        "nmap -sT -p- -T5 -n": (["nmap", "-sT", "-p-", "-T5", "-n", "-oG", "-", SERVER],
                                _scan_nmap)},
    "syn scan 1-65535": {
        "pt-engine --syn": (_engine("scan", SERVER, "--ports", "1-65535", "--rate", "0",
                                    "--syn"), _scan_pt),
        "nmap -sS -p- -T5 -n": (["nmap", "-sS", "-p-", "-T5", "-n", "-oG", "-", SERVER],
                                _scan_nmap)},
    "sweep /24": {
        "pt-engine (rate 100)": (_engine("ping", f"{NET}.0/24", "--timeout", "0.5"),
                                 _sweep_pt),
        "pt-engine (rate 0)": (_engine("ping", f"{NET}.0/24", "--timeout", "0.5", "--rate",
                                       "0"), _sweep_pt),
        "fping -g -r 1 -t 500": (["fping", "-g", "-r", "1", "-t", "500", "-a", f"{NET}.0/24"],
                                 _sweep_fping)},
}
WANT = {"scan 1-65535": OPEN, "syn scan 1-65535": OPEN, "sweep /24": sorted(LIVE)}


def _loopback(count: int) -> dict:
    _, out = _timed(["ping", "-c", str(count), "-i", "0.01", "-q", "127.0.0.1"], ns=None)
    mn, avg, mx, _ = map(float, re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+)", out).groups())
    _, out = _timed(_engine("ping", "127.0.0.1", "--count", str(count), "--interval", "0.01",
                            "--window", str(count)), ns=None)
    final = next(r for r in _records(out) if r.get("final"))
    return {"count": count, "ping_avg_ms": avg, "ping_min_ms": mn,
            "pt_avg_ms": final["rtt_avg_ns"] / 1e6, "pt_min_ms": final["rtt_min_ns"] / 1e6,
            "pt_p50_ms": final["rtt_p50_ns"] / 1e6,
            "overhead_avg_ms": final["rtt_avg_ns"] / 1e6 - avg}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks probe", description=__doc__
                                 .split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--loopback-count", type=int, default=500)
    args = ap.parse_args(argv)
    missing = [t for t in ("nmap", "fping", "ping", "ip") if shutil.which(t) is None]
    if missing:
        print(f"benchmarks probe: error: needs {', '.join(missing)}", file=sys.stderr)
        return 1
    listener = None
    result: dict = {"cases": {}, "rounds": args.rounds}
    try:
        listener = _bed()
        for case, tools in CASES.items():
            times: dict[str, list[float]] = {tool: [] for tool in tools}
            for _ in range(args.rounds):
                for tool, (cmd, parse) in tools.items():
                    took, out = _timed(cmd)
                    got = parse(out)
                    if got != WANT[case]:
                        raise RuntimeError(f"{case}: {tool} found {got}, not {WANT[case]}")
                    times[tool].append(took)
            peer = list(tools)[-1]
            for tool, seconds in times.items():
                result["cases"].setdefault(case, {})[tool] = {
                    "median_s": statistics.median(seconds), "min_s": min(seconds),
                    "max_s": max(seconds), "found": len(WANT[case]), "times_s": seconds,
                    "ratio_to_peer_median": statistics.median(
                        t / p for t, p in zip(seconds, times[peer]))}
        result["loopback"] = _loopback(args.loopback_count)
    except RuntimeError as err:
        print(f"benchmarks probe: error: {err}", file=sys.stderr)
        return 1
    finally:
        _teardown(listener)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-probe.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    for case, tools in result["cases"].items():
        print(f"{case}  (identical results: {WANT[case]})")
        for tool, t in tools.items():
            print(f"  {tool:<24} median {t['median_s']:7.3f} s  "
                  f"[{t['min_s']:.3f} .. {t['max_s']:.3f}]  "
                  f"x{t['ratio_to_peer_median']:.2f} of the last")
    lb = result["loopback"]
    print(f"loopback, {lb['count']} echoes: ping avg {lb['ping_avg_ms']:.3f} ms (min "
          f"{lb['ping_min_ms']:.3f}); pt-engine avg {lb['pt_avg_ms']:.3f} ms, p50 "
          f"{lb['pt_p50_ms']:.3f} (min {lb['pt_min_ms']:.3f}); overhead "
          f"{lb['overhead_avg_ms'] * 1000:.0f} us")
    print(f"results: {path}")
    return 0
