"""`pt-engine record`: the stream into a msgpack file, appended to and rotated by size.

Three sources, one sink (sinks.RotatingFileSink): a capture of its own, live
(the options of `run`) or from capture files (``--read``), where the pipeline
writes into the sink; or a running engine's socket (``--connect``), whose
records are read with pt_engine.client and written into the same sink. The
recording is the stream format itself, concatenated: a file may hold several
hello ... summary sequences, and each rotated file begins with a hello.
"""
from __future__ import annotations

import argparse
import signal
import time

from .config import (MAX_SECONDS, Output, PortSpec, ReadOptions, finite_number, parse_interval,
                     whole_number)
from .errors import ConfigError
from .sinks import log, open_sink

# Options that only a live capture of record's own uses.
_LIVE_ONLY = (("interfaces", "-i"), ("workers", "--workers"), ("snaplen", "--snaplen"),
              ("buffer", "--buffer"), ("user", "--user"))
# ...and those that shape a capture: they cannot change a stream recorded via --connect.
_CAPTURE = _LIVE_ONLY + (("interval", "--interval"), ("bpf", "--filter"), ("ports", "--ports"))


def add_parser(subparsers, add_capture_options) -> argparse.ArgumentParser:
    """The `record` subcommand; `add_capture_options` adds the live options of `run`."""
    p = subparsers.add_parser(
        "record", help="record the stream into a rotated msgpack file",
        description="Write the stream into FILE (msgpack; appended to if it exists; rotated "
                    "by size into FILE.1 ... FILE.N, whole records only). The stream comes "
                    "from a running engine (--connect), from capture files (--read), or from "
                    "a live capture of record's own with the options of `run`.")
    p.add_argument("file", metavar="FILE", help="the recording")
    p.add_argument("--max-size", type=finite_number, default=100, metavar="MB",
                   help="start a new FILE when a record would take it past MB MiB; the old "
                        "one becomes FILE.1 (default 100)")
    p.add_argument("--keep", type=whole_number, default=5, metavar="N",
                   help="rotated files to keep, FILE.1 (newest) ... FILE.N (default 5)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--connect", metavar="unix:PATH",
                        help="record a running engine's socket instead of capturing")
    source.add_argument("-r", "--read", nargs="+", dest="read_files", metavar="PCAP",
                        help="count capture files (as `pt-engine read`) instead of capturing "
                             "live; put FILE before this option")
    add_capture_options(p)
    p.add_argument("--interval", default="1", metavar="S",
                   help="window length in seconds, cut by packet time (default 1)")
    p.add_argument("-f", "--filter", dest="bpf", metavar="BPF", help="BPF filter applied in libpcap")
    p.add_argument("--ports", metavar="SPEC",
                   help="record only these ports, e.g. 22,80,8000-8100")
    # To tell which capture options were given (they conflict with --connect, --read).
    p.set_defaults(record_defaults={dest: p.get_default(dest)
                                    for dest, _ in _CAPTURE + (("duration", ""),)})
    return p


def main(args, capture_options) -> int:
    """Run `pt-engine record`.

    `capture_options(args, output)` builds the RunOptions of a live capture
    (cli's, shared with `run`). Raises ConfigError for bad or conflicting
    options, SinkError when the recording cannot be written, StreamError when
    the --connect stream cannot be read, CaptureError from a capture.
    """
    if not 0 < args.max_size <= 1 << 20:
        raise ConfigError(f"--max-size {args.max_size}: choose more than 0 and up to "
                          f"1048576 MiB")
    if not 0 <= args.keep <= 1000:
        raise ConfigError(f"--keep {args.keep}: choose 0 to 1000")
    output = Output("rotating", args.file, "msgpack",
                    max_bytes=max(1, int(args.max_size * (1 << 20))), keep=args.keep)

    def given(options) -> list[str]:
        return [flag for dest, flag in options
                if getattr(args, dest) != args.record_defaults[dest]]

    if args.connect is not None:
        if given(_CAPTURE):
            raise ConfigError(f"--connect records a running engine's stream as it is: "
                              f"{', '.join(given(_CAPTURE))} do not apply")
        if args.duration is not None and not 0 < args.duration <= MAX_SECONDS:
            raise ConfigError(f"--duration {args.duration:g}: choose more than 0 and at most "
                              f"{MAX_SECONDS} seconds (a year)")
        return _record_connect(args.connect, output, args.duration)
    if args.read_files:
        live_only = given(_LIVE_ONLY + (("duration", "--duration"),))
        if live_only:
            raise ConfigError(f"--read counts capture files; {', '.join(live_only)}: "
                              f"for a live capture only")
        from .pipeline import ReadPipeline
        opts = ReadOptions(files=tuple(args.read_files),
                           interval_ns=parse_interval(args.interval), bpf=args.bpf,
                           ports=PortSpec.parse(args.ports), output=output)
        ReadPipeline(opts).run()
        return 0
    from .pipeline import RunPipeline
    RunPipeline(capture_options(args, output)).run()
    return 0


def _record_connect(dest: str, output: Output, duration: float | None) -> int:
    """Copy a running engine's stream into the recording until it ends, a signal,
    or `duration` seconds. Raises StreamError (after writing every whole record
    received) if the stream breaks, SinkError if the recording cannot be written."""
    from . import stream
    from .client import connect

    stopping: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: stopping.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    deadline = None if duration is None else time.monotonic() + duration
    encode = stream.encoder("msgpack")
    last = None
    try:
        with connect(dest) as client:
            sink = open_sink(output)
            log(f"recording {dest} into {output.path}; Ctrl-C to stop")
            try:
                while not stopping and not client.eof:
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                    for record in client.read(timeout=0.2):
                        sink.write(encode(record), record["type"])
                        last = record["type"]
            finally:
                sink.close()
            if client.eof and last != "summary":
                log(f"{dest} closed its stream without a summary (the engine stopped "
                    f"abnormally, or dropped this subscriber as too slow)")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
