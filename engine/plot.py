"""`pt-engine plot`: a PNG of recorded streams.

The picture: rate over time of the N busiest ports (by total bytes in the
charted range), in (towards the port) above and out (from the port) below,
and beside them a bar per port of its total bytes, in and out stacked. Rates
are bytes per second in decimal units (B/s, kB/s, MB/s, GB/s: 1 kB = 1000
bytes), averaged over time bins of one or more windows (at most MAX_BINS bins
across the picture); times are UTC. A bin with no recording at all (the
engine was not running) is a gap in the line, while a quiet stretch inside a
recording is drawn at zero. Ports in the system's ephemeral (client) range
count as one port per protocol, `tcp/ephemeral`, unless --no-fold (the
recording keeps every port; only the picture folds them).

Reads recordings (`pt-engine record`, or any saved stream, msgpack or JSON
lines) through pt_engine.client and uses their window records only: several
files and several hello ... summary sequences in one file are fine; windows
that cover the same time (two runs recorded into one file) add up. When the
windows carry TCP quality (docs/quality-rules.md), two more panels follow:
per charted TCP port, the RTT p50 and p95 over time (estimated within their
histogram buckets, from the rows of each bin merged exactly; of the port's
direction with the most RTT samples in the range), and the retransmitted
share of its data segments, both directions together. The files
are read twice (once to find the time range and the busiest ports, once for
their series), so memory does not grow with the recording; a file still being
written is read up to its last whole record.
"""
from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from typing import TYPE_CHECKING

from .analysers import tcp_quality as quality
from .errors import ConfigError, EngineError, SinkError, StreamError, TruncatedStream
from .config import whole_number
from .log import log
from .stream import COL, PORT_ROW, row_key
from .top import EPHEMERAL, ephemeral_range, folded_port, kept_ports

if TYPE_CHECKING:
    import numpy as np

MAX_BINS = 480
DPI = 100
MATPLOTLIB_MIN = (3, 7)
# Bin widths a person reads at a glance, in seconds.
_NICE_BIN_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800,
               21600, 43200, 86400)
_DECIMAL = ((10**12, "T"), (10**9, "G"), (10**6, "M"), (10**3, "k"))
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_DURATION_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def add_parser(subparsers, summary: str):
    """The `plot` subcommand; `summary` is its line in the top-level help (pt_engine.cli
    owns every subcommand's, so that it can list them without importing this module)."""
    p = subparsers.add_parser(
        "plot", help=summary,
        description="Render a PNG from recorded streams (pt-engine record): rate over time "
                    "of the busiest ports, in and out, and total bytes per port. Rates are "
                    "bytes/s in decimal units (1 kB = 1000 bytes); times are UTC. The ports "
                    "of the ephemeral (client) range are charted as one, proto/ephemeral, "
                    "unless --no-fold.")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="recordings, e.g. rec.msgpack rec.msgpack.1 ... (msgpack or JSON lines)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png",
                   help="the chart to write: .png, .jpg, .svg or .pdf")
    p.add_argument("--top", type=whole_number, default=8, metavar="N",
                   help="chart the N ports with the most bytes, in + out (default 8, up to 20)")
    p.add_argument("--since", metavar="TIME",
                   help="start at TIME: UTC as 2024-05-01T12:00:00 (or with an offset, "
                        "+02:00), or seconds since the epoch")
    p.add_argument("--until", metavar="TIME", help="end before TIME (as --since)")
    p.add_argument("--last", metavar="DURATION",
                   help="the last DURATION of the recording, up to its last window: 90s, "
                        "15m, 1h, 2d, 1h30m")
    p.add_argument("--size", metavar="WxH",
                   help="picture size in pixels (default 1200x900; 1200x1400 with the TCP "
                        "quality panels)")
    from . import options
    options.add_arguments(p, "plot")        # the table's rows for plot: --no-fold
    return p


def main(args) -> int:
    """Run `pt-engine plot`. Raises ConfigError for bad options, StreamError for
    files that cannot be read or hold no windows in range, EngineError when
    matplotlib is missing, SinkError when the PNG cannot be written."""
    if not 1 <= args.top <= 20:
        raise ConfigError(f"--top {args.top}: choose 1 to 20")
    size = parse_size(args.size) if args.size is not None else None
    output_format(args.output)      # refused before any work
    if args.last is not None and (args.since is not None or args.until is not None):
        raise ConfigError("--last counts back from the end of the recording: give it "
                          "without --since and --until")
    since = parse_time(args.since, "--since") if args.since is not None else None
    until = parse_time(args.until, "--until") if args.until is not None else None
    if since is not None and until is not None and since >= until:
        raise ConfigError(f"--since {args.since} is not before --until {args.until}")
    last = parse_duration(args.last, "--last") if args.last is not None else None
    matplotlib_module()
    rec = load(args.files, args.top, since, until, last,
               fold=None if args.no_fold else ephemeral_range(), identity=args.identity)
    if size is None:
        size = (1200, 1400) if rec.quality else (1200, 900)
    save(figure(rec, size), args.output)
    log(f"wrote {args.output} ({size[0]}x{size[1]}): top {len(rec.ports)} of "
        f"{rec.port_count} ports, "
        f"{_span_text(rec.start_ns, rec.end_ns)}, {rec.windows} windows in bins of "
        f"{_duration_text(rec.bin_ns)}")
    return 0


# --- options ---------------------------------------------------------------------------

def parse_size(text: str) -> tuple[int, int]:
    """'1200x900' -> (1200, 900); raises ConfigError."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise ConfigError(f"--size {text!r}: give width x height in pixels, as 1200x900")
    width, height = int(match[1]), int(match[2])
    if not (300 <= width <= 10000 and 200 <= height <= 10000):
        raise ConfigError(f"--size {text!r}: choose 300 to 10000 pixels wide and 200 to "
                          f"10000 high")
    return width, height


def parse_time(text: str, option: str) -> int:
    """A UTC time (ISO 8601; an offset if given is honoured) or epoch seconds -> ns
    since the epoch; raises ConfigError naming `option`."""
    word = text.strip()
    try:
        seconds = float(word)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds):
            return round(seconds * 1e9)
    try:
        when = datetime.fromisoformat(word[:-1] + "+00:00" if word.endswith("Z") else word)
    except ValueError:
        raise ConfigError(f"{option} {text!r}: give a UTC time such as 2024-05-01T12:00:00, "
                          f"or seconds since the epoch") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return (when - _EPOCH) // timedelta(microseconds=1) * 1000


def parse_duration(text: str, option: str) -> int:
    """'90s', '15m', '1h30m', '2d', '1w' or plain seconds -> ns; raises ConfigError."""
    word = text.strip().lower()
    try:
        seconds = float(word)
    except ValueError:
        if not re.fullmatch(f"(?:{_DURATION.pattern})+", word):
            raise ConfigError(f"{option} {text!r}: give a duration such as 90s, 15m, 1h, "
                              f"1h30m, 2d") from None
        seconds = sum(float(n) * _DURATION_S[unit] for n, unit in _DURATION.findall(word))
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"{option} {text!r}: must be a positive duration")
    return round(seconds * 1e9)


# --- reading ---------------------------------------------------------------------------

@dataclass
class PortSeries:
    """One charted port: totals over the range and rates per bin (bytes/s, NaN where
    nothing was recorded)."""

    proto: str
    port: int
    in_bytes: int
    out_bytes: int
    in_rate: np.ndarray
    out_rate: np.ndarray

    @property
    def label(self) -> str:
        """'tcp/443'; 'tcp/ephemeral' for the folded ephemeral ports."""
        return f"{self.proto}/{'ephemeral' if self.port == EPHEMERAL else self.port}"


@dataclass
class QualitySeries:
    """TCP quality of one charted port, per bin (NaN where the bin has no figure)."""

    proto: str
    port: int
    side: str                 # the direction of the RTT series: "in" or "out"
    rtt_p50_ms: np.ndarray
    rtt_p95_ms: np.ndarray
    retrans_pct: np.ndarray   # both directions

    @property
    def label(self) -> str:
        return f"{self.proto}/{'ephemeral' if self.port == EPHEMERAL else self.port}"


@dataclass
class Recording:
    """What the picture shows, read from the files."""

    files: list[str]
    sources: list[str]        # source names from the hellos (file base names, interfaces)
    start_ns: int             # charted range [start_ns, end_ns): the windows in range
    end_ns: int
    interval_ns: int          # the smallest window length of the recordings
    bin_ns: int
    edges_ns: np.ndarray      # bin edges, int64 ns, len(bins) + 1
    covered_ns: np.ndarray    # per bin, the ns a recording covers (rates are per these)
    ports: list[PortSeries]   # the busiest first
    windows: int              # window records in range
    port_count: int           # ports with traffic in range
    quality: list[QualitySeries] | None = None   # None: the windows carry no TCP quality


class _Files:
    """The recordings, read record by record; later passes stop where the first did."""

    def __init__(self, paths: list[str], identity: str | None = None):
        self.paths = paths
        self.identity = identity
        self.limits: dict[int, int] = {}

    def records(self) -> Iterator[tuple[str, int, dict]]:
        """(path, record number, record); StreamError for what cannot be read."""
        from .client import connect
        first_pass = not self.limits
        for i, path in enumerate(self.paths):
            limit = self.limits.get(i)
            n = 0
            with connect(path, self.identity) as client:
                try:
                    for record in client:
                        if limit is not None and n >= limit:
                            break
                        n += 1
                        yield path, n, record
                except TruncatedStream as err:
                    if first_pass:
                        log(f"{err}; charting the whole records before it (a recording "
                            f"still being written?)")
            if first_pass:
                self.limits[i] = n

    def windows(self, hello=None, with_quality: bool = True
                ) -> Iterator[tuple[int, int, int, list, list | None]]:
        """(segment, start_ns, end_ns, port rows, tcp_quality rows or None) per
        window; a segment is what follows one hello, and `hello` (if given) is
        called with each hello. A recording's windows carry their quality rows
        whatever `with_quality` says (a history's need a query of their own)."""
        segment = -1
        for path, n, record in self.records():
            kind = record["type"]
            if kind == "hello":
                segment += 1
                if hello is not None:
                    hello(record)
            elif kind == "window":
                try:
                    start, end, rows = int(record["start_ns"]), int(record["end_ns"]), \
                        record["ports"]
                    if not all(isinstance(r, list) and len(r) == len(PORT_ROW) for r in rows):
                        raise TypeError
                    qrows = record["tcp_quality"]["rows"] if "tcp_quality" in record else None
                    if qrows is not None and not all(
                            isinstance(r, list) and len(r) == 4 + quality.N_COUNTERS
                            and len(r[-1]) == quality.HIST_BUCKETS for r in qrows):
                        raise TypeError
                except (KeyError, TypeError, ValueError):
                    raise StreamError(f"{path}: record {n} is not a window of this format "
                                      f"(start_ns, end_ns, ports of 6 columns, tcp_quality "
                                      f"rows of section 8)", n - 1) from None
                yield segment, start, end, rows, qrows


def _source(paths: list[str], since_ns, until_ns, last_ns, identity: str | None = None):
    """The windows of recording files (encrypted ones read with `identity`), or
    of one history (history:PATH, clickhouse:URL; pt_engine.history), which
    answers the range itself."""
    from .warehouse import is_store
    if not any(is_store(path) for path in paths):
        return _Files(paths, identity)
    if len(paths) > 1:
        raise ConfigError(f"{', '.join(paths)}: chart one history at a time, or files")
    from .history import StoreWindows
    return StoreWindows(paths[0], since_ns, until_ns, last_ns)


class _Totals:
    """Bytes per port over the windows that start in [lo_filter, hi_filter)."""

    def __init__(self, since_ns: int | None, until_ns: int | None,
                 fold: tuple[int, int] | None = None, kept: set | None = None):
        self.fold = fold
        self.kept = kept if kept is not None else set()   # --ports of the recordings
        self.lo_filter = since_ns if since_ns is not None else -(1 << 63)
        self.hi_filter = until_ns if until_ns is not None else 1 << 63
        self.ports: dict[tuple[str, int], list[int]] = {}
        self.windows = 0
        self.lo: int | None = None      # first start and last end of those windows
        self.hi: int | None = None

    def wants(self, start: int) -> bool:
        """The window starting at `start` is in range."""
        return self.lo_filter <= start < self.hi_filter

    def key(self, row: list) -> tuple[str, int]:
        """(proto, port) of a port row; (proto, EPHEMERAL) for a folded port."""
        proto, port = row_key(row)
        return proto, folded_port(port, self.fold, self.kept)

    def add(self, start: int, end: int, rows: list) -> None:
        """Count one window in range."""
        self.windows += 1
        self.lo = start if self.lo is None else min(self.lo, start)
        self.hi = end if self.hi is None else max(self.hi, end)
        ports = self.ports
        in_bytes, out_bytes = COL.of("in_bytes", "out_bytes")
        for row in rows:
            key = self.key(row)
            acc = ports.get(key)
            if acc is None:
                ports[key] = [row[in_bytes], row[out_bytes]]
            else:
                acc[0] += row[in_bytes]
                acc[1] += row[out_bytes]


def load(paths: list[str], top: int = 8, since_ns: int | None = None,
         until_ns: int | None = None, last_ns: int | None = None,
         fold: tuple[int, int] | None = None, identity: str | None = None) -> Recording:
    """Read recordings into what `figure` draws: the `top` busiest ports over the
    windows that start in [since_ns, until_ns), or in the last `last_ns` of the
    recording. `fold` (lo, hi): the ports in that range count as one port per
    protocol, EPHEMERAL, except those of the recordings' --ports (their hellos'
    ports_selected); `pt-engine plot` folds the system's ephemeral range unless
    --no-fold. None charts every port as it is.

    Raises StreamError for a file that cannot be read or is not a stream (the
    message counts the records read), or when no window falls in the range.
    """
    import numpy as np
    files = _source(list(paths), since_ns, until_ns, last_ns, identity)
    segments: dict[int, list[int]] = {}      # segment -> [first start, last end]
    intervals: set[int] = set()
    sources: list[str] = []
    kept: set[int] = set()       # ports the recordings were made with (--ports): not folded

    def hello(record: dict) -> None:
        kept.update(kept_ports(record.get("ports_selected")))
        if isinstance(record.get("interval_ns"), int) and record["interval_ns"] > 0:
            intervals.add(record["interval_ns"])
        for source in record.get("sources") or []:
            name = str(source.get("name", "?"))
            name = os.path.basename(name) if source.get("kind") == "file" else name
            if name not in sources:
                sources.append(name)

    # First pass: the time each recording covers, and (when the range is
    # known before reading) the totals per port.
    totals = _Totals(since_ns, until_ns, fold, kept) if last_ns is None else None
    every = 0
    for segment, start, end, rows, _ in files.windows(hello):
        every += 1
        span = segments.setdefault(segment, [start, end])
        span[0], span[1] = min(span[0], start), max(span[1], end)
        if totals is not None and totals.wants(start):
            totals.add(start, end, rows)
    names = ", ".join(paths)
    if not every:
        raise StreamError(f"{names}: no window records to chart (the recording holds no "
                          f"traffic)")
    first_start = min(s[0] for s in segments.values())
    last_end = max(s[1] for s in segments.values())
    if totals is None:
        totals = _Totals(last_end - last_ns, None, fold, kept)
        for _, start, end, rows, _ in files.windows():
            if totals.wants(start):
                totals.add(start, end, rows)
    if not totals.windows:
        raise StreamError(f"{names}: no windows between {_time_text(totals.lo_filter)} and "
                          f"{_time_text(totals.hi_filter)}; the recording covers "
                          f"{_span_text(first_start, last_end)}")

    counts = totals.ports
    busiest = sorted(counts, key=lambda k: (-(counts[k][0] + counts[k][1]), k))[:top]
    busiest = [k for k in busiest if counts[k][0] + counts[k][1] > 0]
    lo, hi = totals.lo, totals.hi
    interval = min(intervals) if intervals else 1_000_000_000
    bin_ns = _bin_width(hi - lo, interval)
    edge0 = lo // bin_ns * bin_ns
    nbins = -(-(hi - edge0) // bin_ns)
    edges = edge0 + np.arange(nbins + 1, dtype=np.int64) * bin_ns
    covered = _coverage(edges, [(max(a, lo), min(b, hi)) for a, b in segments.values()])

    # Last pass: the series of the busiest ports.
    index = {key: i for i, key in enumerate(busiest)}
    in_bytes, out_bytes = COL.of("in_bytes", "out_bytes")
    series = np.zeros((len(busiest), 2, nbins))
    # per port, side ("in", "out") and bin: the quality rows' values summed (the
    # figures charted need sums only, not the min and max)
    qsums = np.zeros((len(busiest), 2, nbins, quality.ROW_WIDTH), dtype=np.int64)
    with_quality = False
    if busiest:
        for _, start, _end, rows, qrows in files.windows(with_quality=True):
            if not totals.wants(start):
                continue
            b = min((start - edge0) // bin_ns, nbins - 1)
            for row in rows:
                i = index.get(totals.key(row))
                if i is not None:
                    series[i, 0, b] += row[in_bytes]
                    series[i, 1, b] += row[out_bytes]
            with_quality = with_quality or qrows is not None
            for qrow in qrows or ():
                i = index.get(totals.key(qrow))
                if i is not None:
                    qsums[i, quality.SIDES.index(qrow[2]), b] += quality.row_values(qrow)
    seconds = np.where(covered > 0, covered / 1e9, np.nan)
    ports = [PortSeries(key[0], key[1], counts[key][0], counts[key][1],
                        series[i, 0] / seconds, series[i, 1] / seconds)
             for i, key in enumerate(busiest)]
    return Recording(files=list(paths), sources=sources, start_ns=lo, end_ns=hi,
                     interval_ns=interval, bin_ns=bin_ns, edges_ns=edges,
                     covered_ns=covered, ports=ports,
                     windows=totals.windows,
                     port_count=sum(1 for v in counts.values() if v[0] + v[1]),
                     quality=_quality_series(busiest, qsums) if with_quality else None)


def _quality_series(keys: list[tuple[str, int]], sums: np.ndarray) -> list[QualitySeries]:
    """The QualitySeries of the ports (keys) that have TCP quality rows."""
    import numpy as np
    out = []
    nan = float("nan")
    for i, (proto, port) in enumerate(keys):
        if not sums[i].any():
            continue
        side = int(sums[i, 1, :, quality.RTT_SAMPLES].sum() > sums[i, 0, :, quality.RTT_SAMPLES].sum())
        hist = sums[i, side, :, quality.N_COUNTERS:]
        p50, p95 = ([nan if v is None else v / 1e6 for v in
                     (quality.percentile_ns(h.tolist(), f) for h in hist)] for f in (0.5, 0.95))
        both = sums[i].sum(axis=0)
        data = both[:, quality.DATA_SEGMENTS].astype(float)
        retrans = np.where(data > 0, both[:, quality.RETRANS_SEGMENTS] / np.where(data, data, 1)
                           * 100, np.nan)
        out.append(QualitySeries(proto, port, quality.SIDES[side], np.array(p50),
                                 np.array(p95), retrans))
    return out


def _bin_width(span_ns: int, interval_ns: int) -> int:
    """The narrowest readable bin, a multiple of the window length, that keeps the
    picture under MAX_BINS bins."""
    need = -(-span_ns // MAX_BINS)
    if need <= interval_ns:
        return interval_ns
    for seconds in _NICE_BIN_S:
        width = seconds * 1_000_000_000
        if width >= need and width % interval_ns == 0:
            return width
    day = 86400 * 1_000_000_000
    unit = day if day % interval_ns == 0 else interval_ns
    return -(-need // unit) * unit


def _coverage(edges: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """Recorded ns within each bin, from the union of the recordings' spans."""
    import numpy as np
    merged: list[list[int]] = []
    for a, b in sorted(s for s in spans if s[1] > s[0]):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    covered = np.zeros(len(edges) - 1)
    left, right = edges[:-1], edges[1:]
    for a, b in merged:
        covered += np.clip(np.minimum(right, b) - np.maximum(left, a), 0, None)
    return covered


# --- drawing ---------------------------------------------------------------------------

def matplotlib_module():
    """matplotlib, or EngineError saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise EngineError("pt-engine plot needs matplotlib, which is not installed: "
                          "pip install 'pt-engine[plot]' (or: pip install matplotlib)") from None
    version = tuple(int(p) for p in re.findall(r"\d+", matplotlib.__version__)[:2])
    if version < MATPLOTLIB_MIN:
        raise EngineError(f"pt-engine plot needs matplotlib {MATPLOTLIB_MIN[0]}."
                          f"{MATPLOTLIB_MIN[1]} or newer; this is {matplotlib.__version__}")
    return matplotlib


def figure(rec: Recording, size: tuple[int, int] = (1200, 900)):
    """The chart as a matplotlib Figure on the Agg canvas (pyplot is not used).

    Raises EngineError if matplotlib is missing.
    """
    import numpy as np
    matplotlib_module()
    from matplotlib import colormaps
    from matplotlib import dates as mdates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    if rec.quality:
        grid = fig.add_gridspec(4, 2, width_ratios=(2.1, 1), height_ratios=(1, 1, 0.8, 0.8))
    else:
        grid = fig.add_gridspec(2, 2, width_ratios=(2.1, 1))
    ax_in = fig.add_subplot(grid[0, 0])
    ax_out = fig.add_subplot(grid[1, 0], sharex=ax_in)
    ax_bar = fig.add_subplot(grid[0:2, 1])
    if len(rec.ports) <= 10:
        colors = [colormaps["tab10"](i) for i in range(len(rec.ports))]
    else:       # the ten strong colours first, then their light twins
        colors = [colormaps["tab20"](2 * i % 20 + 2 * i // 20) for i in range(len(rec.ports))]
    edges = mdates.date2num(rec.edges_ns.astype("datetime64[ns]"))
    per_bin = (f"{_duration_text(rec.bin_ns)} windows" if rec.bin_ns == rec.interval_ns
               else f"averaged over {_duration_text(rec.bin_ns)}")

    for ax, direction, attr in ((ax_in, "in: bytes/s to the port", "in_rate"),
                                (ax_out, "out: bytes/s from the port", "out_rate")):
        peak = max((np.nanmax(getattr(p, attr), initial=0) for p in rec.ports), default=0)
        scale, prefix = _unit(peak)
        for port, color in zip(rec.ports, colors):
            ax.stairs(getattr(port, attr) / scale, edges, baseline=None, color=color,
                      linewidth=1.6, label=port.label)
        ax.set_title(f"{direction} ({per_bin})", loc="left", fontsize=11)
        ax.set_ylabel(f"{prefix}B/s")
        ax.set_ylim(bottom=0, top=max(peak / scale * 1.08, 1e-9))
        ax.grid(True, alpha=0.3)
    _time_axis(mdates, ax_out, edges)
    ax_in.tick_params(labelbottom=False)
    if rec.quality:
        by_label = dict(zip((p.label for p in rec.ports), colors))
        _quality_panels(fig, grid, mdates, rec, edges, by_label, per_bin)

    ins = np.array([p.in_bytes for p in rec.ports], dtype=float)
    outs = np.array([p.out_bytes for p in rec.ports], dtype=float)
    scale, prefix = _unit(float((ins + outs).max(initial=0)))
    y = np.arange(len(rec.ports))
    ax_bar.barh(y, ins / scale, color=colors, height=0.7)
    ax_bar.barh(y, outs / scale, left=ins / scale, color=colors, alpha=0.45, hatch="//",
                edgecolor="white", linewidth=0, height=0.7)
    ax_bar.set_yticks(y, [p.label for p in rec.ports], fontsize=11 if len(y) <= 10 else 9)
    ax_bar.set_ylim(max(len(y), 6) - 0.5, -0.5)      # the busiest on top; few bars stay thin
    for yi, total in zip(y, ins + outs):
        ax_bar.text(total / scale, yi, f" {_bytes_text(total)}", va="center", fontsize=9)
    ax_bar.set_xlim(0, max((ins + outs).max(initial=0) / scale * 1.3, 1e-9))
    ax_bar.set_xlabel(f"{prefix}B: in (solid) + out (hatched)")
    ax_bar.set_title(f"total bytes per port\n(top {len(rec.ports)} of {rec.port_count} "
                     f"ports)", loc="left", fontsize=11)
    ax_bar.grid(True, axis="x", alpha=0.3)
    if rec.ports:
        fig.legend(*ax_in.get_legend_handles_labels(), loc="outside lower center",
                   ncol=max(1, min(len(rec.ports), size[0] // 125)), frameon=False,
                   fontsize=10)
    else:
        ax_in.text(0.5, 0.5, "no port traffic in this range", transform=ax_in.transAxes,
                   ha="center", va="center")
    fig.suptitle(f"Traffic per port, {_span_text(rec.start_ns, rec.end_ns)}\n"
                 f"sources: {_names(rec.sources)}   ·   recording: "
                 f"{_names([os.path.basename(f) for f in rec.files])}",
                 fontsize=12)
    return fig


def _time_axis(mdates, ax, edges) -> None:
    locator = mdates.AutoDateLocator(tz=timezone.utc, minticks=4, maxticks=9)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=timezone.utc))
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel("time (UTC)")


def _quality_panels(fig, grid, mdates, rec: Recording, edges, colors: dict,
                    per_bin: str) -> None:
    """RTT p50 (solid) and p95 (dashed) on a log scale, and retransmitted % of data
    segments, for the charted TCP ports, in the port's colour of the panels above."""
    import numpy as np
    ax_rtt = fig.add_subplot(grid[2, :])
    ax_retr = fig.add_subplot(grid[3, :], sharex=ax_rtt)
    drawn = False
    for q in rec.quality:
        color = colors[q.label]
        for values, style in ((q.rtt_p50_ms, "-"), (q.rtt_p95_ms, "--")):
            if np.isfinite(values).any():
                drawn = True
                ax_rtt.stairs(values, edges, baseline=None, color=color, linestyle=style,
                              linewidth=1.4, label=f"{q.label} {q.side}")
        ax_retr.stairs(q.retrans_pct, edges, baseline=None, color=color, linewidth=1.4)
    if drawn:
        ax_rtt.set_yscale("log")
    ax_rtt.set_title(f"TCP RTT, ms: p50 solid, p95 dashed (per port, the direction with "
                     f"the most samples; {per_bin})", loc="left", fontsize=11)
    ax_rtt.set_ylabel("ms")
    ax_rtt.grid(True, which="both", alpha=0.3)
    ax_rtt.tick_params(labelbottom=False)
    ax_retr.set_title("TCP retransmitted % of data segments (in + out)", loc="left",
                      fontsize=11)
    ax_retr.set_ylabel("%")
    ax_retr.set_ylim(bottom=0)
    ax_retr.grid(True, alpha=0.3)
    _time_axis(mdates, ax_retr, edges)
    if not drawn:
        ax_rtt.text(0.5, 0.5, "no RTT samples for these ports", transform=ax_rtt.transAxes,
                    ha="center", va="center")


# What -o can write, by the file's extension (JPEG through Pillow, which
# matplotlib depends on).
FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".svg": "svg", ".pdf": "pdf"}


def output_format(path: str) -> str:
    """The matplotlib format for `path`, from its extension; raises ConfigError."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ConfigError(f"-o {path}: cannot write {ext or 'a file without an extension'}; "
                          f"name a {', '.join(FORMATS)} file")
    return FORMATS[ext]


def save(fig, path: str) -> None:
    """Write the figure at its own size, in the format its extension names
    (output_format); raises SinkError or ConfigError."""
    try:
        fig.savefig(path, format=output_format(path), dpi=fig.dpi)
    except OSError as err:
        raise SinkError(f"-o {path}: {err.strerror or err}") from err


# --- words -----------------------------------------------------------------------------

def _unit(value: float) -> tuple[float, str]:
    for scale, prefix in _DECIMAL:
        if value >= scale:
            return scale, prefix
    return 1, ""


def _bytes_text(n: float) -> str:
    scale, prefix = _unit(n)
    return f"{n / scale:.3g} {prefix}B"


def _utc(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


def _time_text(ns: int) -> str:
    if ns <= -(1 << 62):
        return "the beginning"
    if ns >= 1 << 62:
        return "the end"
    return f"{_utc(ns):%Y-%m-%d %H:%M:%S} UTC"


def _span_text(start_ns: int, end_ns: int) -> str:
    a, b = _utc(start_ns), _utc(end_ns)
    end = f"{b:%H:%M:%S}" if a.date() == b.date() else f"{b:%Y-%m-%d %H:%M:%S}"
    return f"{a:%Y-%m-%d %H:%M:%S} – {end} UTC ({_duration_text(end_ns - start_ns)})"


def _duration_text(ns: int) -> str:
    s = ns / 1e9
    if s < 120:
        return f"{s:g} s"
    if s < 7200:
        return f"{s / 60:.3g} min"
    if s < 2 * 86400:
        return f"{s / 3600:.3g} h"
    return f"{s / 86400:.4g} days"


def _names(names: list[str], limit: int = 3) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit])} and {len(names) - limit} more"
