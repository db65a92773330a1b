"""`pt-engine history SOURCE`: the busiest ports over a time range, or one port's
series, from a history (`history:PATH`, chDB) or a ClickHouse server
(`clickhouse:URL`), with the SQL of docs/clickhouse.md.

Which table answers: the coarsest of pt_ports_1h, pt_ports_5m, pt_ports_1m
whose step divides both ends of the range (so that it holds exactly the
range), else pt_ports; for a series, the coarsest whose step is at most the
range / MAX_POINTS. Every query sums (``sum() ... GROUP BY``), so the answer
does not depend on background merges.

`--last D` counts back from the newest window in the store (for the host
given with --host, else any), as plot's --last does for a recording.

`--talkers`: the talkers stored (pt_talkers, --analyser talkers) for the
busiest ports or the --port ones, per port and direction the TALKERS
addresses with the most bytes over the range. A window stores only the
addresses it listed (its top N), so an address's figures are the sums of
the windows that listed it (``windows`` says how many): exact for those
windows, nothing for the others.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from . import warehouse
from .config import PortSpec, whole_number
from .errors import ConfigError, StreamError
from .warehouse import ROLLUPS, literal, tsv

MAX_POINTS = 480
TALKERS = 5           # addresses per port and direction with --talkers
_NS = 1_000_000_000


def add_parser(subparsers, summary: str, config: dict | None = None):
    """The `history` subcommand; `config` holds the config file's settings."""
    p = subparsers.add_parser(
        "history", help=summary,
        description="Query a history written by --output history:PATH or --output "
                    "clickhouse:URL: the busiest ports over a range (default), or, with "
                    "--port, the series of those ports. Times are UTC.")
    p.add_argument("source", metavar="SOURCE", help="history:PATH or clickhouse:URL")
    p.add_argument("--last", metavar="D", help="the last D up to the newest window stored: "
                   "90s, 15m, 1h, 2d, 1h30m")
    p.add_argument("--since", metavar="T", help="from T: UTC as 2024-05-01T12:00:00 (or "
                   "with an offset), or seconds since the epoch")
    p.add_argument("--until", metavar="T", help="up to T (as --since)")
    p.add_argument("--top", type=whole_number, default=10, metavar="N",
                   help="the N busiest ports (default 10)")
    p.add_argument("--port", metavar="SPEC", help="the series of these ports (22,443,"
                   "8000-8100) instead of the busiest")
    p.add_argument("--talkers", action="store_true",
                   help=f"the talkers stored for those ports (--analyser talkers): per port "
                        f"and direction the {TALKERS} addresses with the most bytes, as the "
                        f"engine's --addresses policy left them")
    p.add_argument("--host", metavar="NAME", help="one host's rows only (a fleet's "
                   "ClickHouse holds many)")
    p.add_argument("--format", choices=("table", "json"), default="table",
                   help="table (default) or json")
    from . import options
    options.add_arguments(p, "history", config)  # --config; the credentials' keys
    return p


@dataclass(frozen=True)
class Query:
    """What to ask: a range of seconds [since, until), or None for the store's."""

    since: int | None
    until: int | None
    last: int | None               # seconds back from the newest window
    host: str | None
    ports: PortSpec | None


def _where(q: Query, since: int | None, until: int | None) -> str:
    parts = ["1"]
    if since is not None:
        parts.append(f"window_start >= toDateTime({since}, 'UTC')")
    if until is not None:
        parts.append(f"window_start < toDateTime({until}, 'UTC')")
    if q.host is not None:
        parts.append(f"host = {literal(q.host)}")
    if q.ports is not None:
        parts.append(_port_clause(q.ports))
    return " AND ".join(parts)


def _port_clause(ports: PortSpec) -> str:
    """`port IN (...)` as ranges: BETWEEN per run of the spec's mask."""
    import numpy as np
    mask = ports.mask.astype(np.int8)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask, [0]))))
    runs = [f"port BETWEEN {lo} AND {hi - 1}" for lo, hi in zip(edges[::2], edges[1::2])]
    return "(" + " OR ".join(runs) + ")"


def span(store, q: Query) -> tuple[int, int] | None:
    """[first window start, last window start + 1 s) of the rows asked for, in
    seconds; None when there are none."""
    text = store.query(f"SELECT toUInt32(min(window_start)), toUInt32(max(window_start)), "
                       f"count() FROM {store.database}.pt_ports "
                       f"WHERE {_where(q, q.since, q.until)}")
    rows = tsv(text)
    if not rows or rows[0][2] == "0":
        return None
    return int(rows[0][0]), int(rows[0][1]) + 1


def resolve(store, q: Query) -> tuple[int, int]:
    """The range asked for, in seconds; raises StreamError when it holds nothing."""
    whole = span(store, Query(None, None, None, q.host, q.ports))
    if whole is None:
        raise StreamError(f"{store.name}: no port rows stored"
                          + (f" for host {q.host}" if q.host else "")
                          + (f" for ports {q.ports.text}" if q.ports else ""))
    if q.last is not None:
        since, until = whole[1] - q.last, whole[1]
    else:
        since = q.since if q.since is not None else whole[0]
        until = q.until if q.until is not None else whole[1]
    if span(store, Query(since, until, None, q.host, q.ports)) is None:
        raise StreamError(f"{store.name}: nothing stored between {_iso(since)} and "
                          f"{_iso(until)}; it holds {_iso(whole[0])} to {_iso(whole[1])}")
    return since, until


def _table(since: int, until: int, step_at_most: int | None = None) -> tuple[str, int]:
    for table, (step, _cut) in sorted(ROLLUPS.items(), key=lambda kv: -kv[1][0]):
        if step_at_most is not None:
            if step <= step_at_most:
                return table, step
        elif since % step == 0 and until % step == 0:
            return table, step
    return "pt_ports", 1


def top(store, q: Query, n: int) -> dict:
    """The n busiest (proto, port) by bytes, in + out, over the range."""
    since, until = resolve(store, q)
    table, step = _table(since, until)
    sql = (f"SELECT proto, port, sumIf(packets, direction = 'in'), sumIf(bytes, direction = "
           f"'in'), sumIf(packets, direction = 'out'), sumIf(bytes, direction = 'out'), "
           f"sum(bytes) AS total FROM {store.database}.{table} "
           f"WHERE {_where(q, since, until)} GROUP BY proto, port "
           f"ORDER BY total DESC, proto, port LIMIT {n}")
    rows = [[r[0], int(r[1]), *map(int, r[2:6])] for r in tsv(store.query(sql))]
    return {"source": store.name, "since": _iso(since), "until": _iso(until),
            "table": table, "columns": ["proto", "port", "in_packets", "in_bytes",
                                        "out_packets", "out_bytes"], "rows": rows}


def series(store, q: Query) -> dict:
    """Bytes and packets per step of the ports of q.ports, per (proto, port)."""
    since, until = resolve(store, q)
    table, step = _table(since, until, max(1, (until - since) // MAX_POINTS))
    bucket = max(step, -(-(until - since) // MAX_POINTS))
    sql = (f"SELECT toUInt32(intDiv(toUInt32(window_start), {bucket}) * {bucket}) AS t, "
           f"proto, port, sumIf(packets, direction = 'in'), sumIf(bytes, direction = 'in'), "
           f"sumIf(packets, direction = 'out'), sumIf(bytes, direction = 'out') "
           f"FROM {store.database}.{table} WHERE {_where(q, since, until)} "
           f"GROUP BY t, proto, port ORDER BY t, proto, port")
    rows = [[_iso(int(r[0])), r[1], int(r[2]), *map(int, r[3:7])]
            for r in tsv(store.query(sql))]
    return {"source": store.name, "since": _iso(since), "until": _iso(until),
            "table": table, "step_s": bucket,
            "columns": ["time", "proto", "port", "in_packets", "in_bytes", "out_packets",
                        "out_bytes"], "rows": rows}


def quality_sql(store, where: str, step: int) -> str:
    """pt_tcp_quality summed per (step, port, side), in section 8's row order:
    sums, the least rtt_min_ns of the rows with samples (0 without), the
    greatest rtt_max_ns, the histograms added bucket by bucket."""
    figures = ", ".join(f"minIf({c}, rtt_samples > 0)" if c == "rtt_min_ns" else
                        f"max({c})" if c == "rtt_max_ns" else f"sum({c})"
                        for c in warehouse.QUALITY_COLUMNS)
    return (f"SELECT toUInt32(intDiv(toUInt32(window_start), {step}) * {step}) AS t, port, "
            f"side, {figures}, sumForEach(rtt_hist) FROM {store.database}.pt_tcp_quality "
            f"WHERE {where} GROUP BY t, port, side ORDER BY t, port, side")


def talkers(store, q: Query, n: int) -> dict:
    """The talkers of the n busiest ports (or of q.ports) over the range: per
    (proto, port, direction) the TALKERS addresses with the most bytes summed
    over the windows that listed them. Raises StreamError when none is stored."""
    since, until = resolve(store, q)
    where = _where(q, since, until)
    rank = None
    if q.ports is None:
        busiest = [(r[0], r[1]) for r in top(store, q, n)["rows"]]
        rank = {key: i for i, key in enumerate(busiest)}
        where += " AND (proto, port) IN (" + ", ".join(
            f"({literal(proto)}, {port})" for proto, port in busiest) + ")"
    sql = (f"SELECT proto, port, direction, address, sum(packets), sum(bytes) AS b, "
           f"uniqExact(window_start), policy FROM {store.database}.pt_talkers "
           f"WHERE {where} GROUP BY proto, port, direction, policy, address "
           f"ORDER BY proto, port, direction, b DESC, address "
           f"LIMIT {TALKERS} BY proto, port, direction")
    rows = [[r[0], int(r[1]), r[2], r[3], *map(int, r[4:7]), r[7]]
            for r in tsv(store.query(sql))]
    if not rows:
        raise StreamError(f"{store.name}: no talkers stored for these ports between "
                          f"{_iso(since)} and {_iso(until)} (the engine ran without "
                          "--analyser talkers?)")
    if rank is not None:
        rows.sort(key=lambda r: (rank[(r[0], r[1])], r[2], -r[5], r[3]))
    return {"source": store.name, "since": _iso(since), "until": _iso(until),
            "table": "pt_talkers", "addresses": sorted({r[7] for r in rows}),
            "columns": ["proto", "port", "direction", "address", "packets", "bytes",
                        "windows"], "rows": [r[:7] for r in rows]}


class StoreWindows:
    """A history as plot reads recordings: ``windows(hello, with_quality)`` yields
    (segment 0, start_ns, end_ns, port rows, tcp_quality rows) per stored step
    of the range, in the stream's forms, after one hello giving the step as the
    window length. The tcp_quality rows are asked for only with with_quality=True
    (plot's last pass), and are None when the range holds none at all (the
    engine ran with --no-tcp-quality): a step without TCP data has []."""

    def __init__(self, text: str, since_ns: int | None, until_ns: int | None,
                 last_ns: int | None):
        self.store = warehouse.open_store(text, None, create=False)
        self.query = Query(None if since_ns is None else since_ns // _NS,
                           None if until_ns is None else -(-until_ns // _NS),
                           None if last_ns is None else -(-last_ns // _NS), None, None)
        self._range: tuple[int, int] | None = None

    def windows(self, hello=None, with_quality: bool = False):
        store, q = self.store, self.query
        if self._range is None:
            self._range = resolve(store, q)
        since, until = self._range
        table, step = _table(since, until, max(1, (until - since) // MAX_POINTS))
        if hello is not None:
            hello({"interval_ns": step * _NS, "sources": [{"name": store.name}]})
        by_step: dict[int, list] | None = None
        if with_quality:
            by_step = {}
            for r in tsv(store.query(quality_sql(store, _where(q, since, until), step))):
                by_step.setdefault(int(r[0]), []).append(
                    ["tcp", int(r[1]), r[2], *map(int, r[3:17]), json.loads(r[17])])
            if not by_step:
                by_step = None
        sql = (f"SELECT toUInt32(window_start) AS t, proto, port, "
               f"sumIf(packets, direction = 'in'), sumIf(bytes, direction = 'in'), "
               f"sumIf(packets, direction = 'out'), sumIf(bytes, direction = 'out') "
               f"FROM {store.database}.{table} WHERE {_where(q, since, until)} "
               f"GROUP BY t, proto, port ORDER BY t, proto, port")
        current, rows = None, []
        for r in tsv(store.query(sql)):
            t = int(r[0])
            if t != current:
                if current is not None:
                    yield (0, current * _NS, (current + step) * _NS, rows,
                           None if by_step is None else by_step.get(current, []))
                current, rows = t, []
            rows.append([r[1], int(r[2]), *map(int, r[3:7])])
        if current is not None:
            yield (0, current * _NS, (current + step) * _NS, rows,
                   None if by_step is None else by_step.get(current, []))


def _iso(seconds: int) -> str:
    from datetime import datetime, timezone
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def query_from(args) -> Query:
    """The Query of parsed arguments; raises ConfigError."""
    from .plot import parse_duration, parse_time
    if args.last is not None and (args.since is not None or args.until is not None):
        raise ConfigError("--last counts back from the newest window: give it without "
                          "--since and --until")
    since = parse_time(args.since, "--since") // _NS if args.since is not None else None
    until = -(-parse_time(args.until, "--until") // _NS) if args.until is not None else None
    if since is not None and until is not None and since >= until:
        raise ConfigError(f"--since {args.since} is not before --until {args.until}")
    last = -(-parse_duration(args.last, "--last") // _NS) if args.last is not None else None
    ports = PortSpec.parse(args.port) if args.port is not None else None
    if args.port is not None and ports is None:
        raise ConfigError("--port: name at least one port")
    return Query(since, until, last, args.host, ports)


def main(args) -> int:
    """Run `pt-engine history`. Raises ConfigError (bad options or SOURCE),
    StreamError (nothing stored in the range), SinkError (the store cannot be
    reached or read)."""
    if not warehouse.is_store(args.source):
        raise ConfigError(f"{args.source!r}: name a history as history:PATH or "
                          "clickhouse:URL")
    if not 1 <= args.top <= 1000:
        raise ConfigError(f"--top {args.top}: choose 1 to 1000")
    q = query_from(args)
    from . import options
    store = warehouse.open_store(args.source, options.build("history", args), create=False)
    if isinstance(store, warehouse.ChdbStore) and not _has_schema(store):
        raise StreamError(f"{store.name}: no history there (written by --output "
                          f"{store.name})")
    if args.talkers:
        result = talkers(store, q, args.top)
    else:
        result = series(store, q) if q.ports is not None else top(store, q, args.top)
    if args.format == "json":
        print(json.dumps(result))
    else:
        _table_text(result, sys.stdout)
    return 0


def _has_schema(store) -> bool:
    text = store.query(f"SELECT count() FROM system.tables WHERE database = "
                       f"{literal(store.database)} AND name = 'pt_ports'")
    return text.strip() == "1"


def _table_text(result: dict, out) -> None:
    what = (f"every {result['step_s']} s" if "step_s" in result
            else f"talkers (addresses: {', '.join(result['addresses'])})"
            if "addresses" in result else "busiest ports")
    print(f"{result['source']}: {result['since']} to {result['until']}, {what} "
          f"(from {result['table']})", file=out)
    cols = result["columns"]
    cells = [cols] + [[str(v) for v in row] for row in result["rows"]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    numbers = len(cols) - (3 if "addresses" in result else 4)   # right-aligned: the counts
    for row in cells:
        print("  ".join(c.ljust(w) if i < numbers else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths))).rstrip(), file=out)
