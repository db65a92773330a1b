"""CPU per window of the history and fleet sinks at N active ports.

    python -m benchmarks.sinks [--ports 10000] [--windows 30] [--clickhouse URL]

Windows of N active ports (half tcp, half udp, traffic both ways: 2N rows
for pt_ports) go through each sink in this process as the aggregator would
give them (a file run: nothing dropped). Reported per window: the CPU of
the whole process (the sink's thread included) from the first record until
the sink has closed, minus that of the same run with no sink; and the time
the aggregator spends in write() (encoding and queueing). For prometheus:
also the series on /metrics (the default allow-list). A clickhouse: URL is
measured only when given (user and password from the environment, as for
pt-engine). Each sink runs in a fresh subprocess.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def _windows(ports: int, count: int):
    """Windows as the aggregator builds them: ports as PortRows (written natively)."""
    import numpy as np
    from pt_engine.records import PROTO_NAMES
    from pt_engine.stream import PortRows
    half = ports // 2
    tcp, udp = PROTO_NAMES.index("tcp"), PROTO_NAMES.index("udp")
    keys = np.concatenate([(tcp << 16) | np.arange(1, half + 1),
                           (udp << 16) | np.arange(1, ports - half + 1)]).astype(np.uint32)
    values = np.array([[3, 300, 2, 200]] * half + [[1, 90, 1, 80]] * (ports - half),
                      dtype=np.uint64)
    rows = PortRows(keys, values)
    for i in range(count):
        start = 1_700_000_000_000_000_000 + i * 10**9
        yield {"type": "window", "start_ns": start, "end_ns": start + 10**9,
               "totals": {"packets": 8 * ports, "bytes": 670 * ports},
               "classes": {"ported": {"packets": 8 * ports, "bytes": 670 * ports},
                           "ip_other": {"packets": 0, "bytes": 0},
                           "non_ip": {"packets": 0, "bytes": 0},
                           "truncated": {"packets": 0, "bytes": 0}},
               "ports": rows, "late_packets": 0}


def _one(dest: str | None, ports: int, count: int) -> dict:
    from types import SimpleNamespace
    from pt_engine.sinks import SinkContext, open_outputs, parse_destination
    opts = SimpleNamespace(ports=None, prometheus_ports=None, host_name="bench")
    windows = list(_windows(ports, count))
    outputs = open_outputs([parse_destination(dest, "msgpack")] if dest else [],
                           SinkContext(live=False, options=opts))
    series = None
    cpu0, in_write = time.process_time(), 0.0
    outputs.write({"type": "hello", "sources": [{"name": "eth0"}], "backend": "native"})
    for window in windows:
        t = time.perf_counter()
        outputs.write(window)
        in_write += time.perf_counter() - t
    if dest and dest.startswith("prometheus:"):
        import urllib.request
        sink = outputs.sinks[0]
        while sink.backlog() or sink._busy:
            time.sleep(0.01)
        url = f"http://{dest.split(':', 1)[1]}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    outputs.close()
    cpu = time.process_time() - cpu0
    return {"cpu_s": cpu, "write_s": in_write, "series": series,
            "dropped": sum(s.dropped for s in outputs.sinks)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sinks")
    parser.add_argument("--ports", type=int, default=10000)
    parser.add_argument("--windows", type=int, default=30)
    parser.add_argument("--clickhouse", metavar="URL", help="also clickhouse:URL")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(_one(args.child or None, args.ports, args.windows)))
        return 0
    tmp = tempfile.mkdtemp(prefix="pt-bench-sinks-")
    dests = {"none": "", "file (msgpack)": f"{tmp}/stream.msgpack",
             "prometheus": "prometheus:127.0.0.1:19477", "history": f"history:{tmp}/h"}
    if args.clickhouse:
        dests["clickhouse"] = f"clickhouse:{args.clickhouse}"
    results = {}
    for name, dest in dests.items():
        out = subprocess.run([sys.executable, "-m", "benchmarks.sinks", "--ports",
                              str(args.ports), "--windows", str(args.windows), "--child", dest],
                             capture_output=True, text=True, check=True, env=os.environ)
        results[name] = json.loads(out.stdout.strip().splitlines()[-1])
    base = results["none"]["cpu_s"]
    print(f"{args.ports} active ports ({2 * args.ports} port rows a window), "
          f"{args.windows} windows, per window:")
    print(f"{'sink':16} {'CPU ms':>8} {'in write() ms':>14} {'series':>7} {'dropped':>8}")
    for name, r in results.items():
        print(f"{name:16} {(r['cpu_s'] - base) / args.windows * 1000:8.1f} "
              f"{r['write_s'] / args.windows * 1000:14.2f} {r['series'] or '':>7} "
              f"{r['dropped']:>8}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
