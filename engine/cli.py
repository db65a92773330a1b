"""The `pt-engine` command line. ``main`` is the only place that prints errors."""
from __future__ import annotations

import argparse
import sys

from . import __version__
from .config import (Output, PortSpec, ReadOptions, RunOptions, parse_interval,
                     parse_socket_mode)
from .errors import ConfigError, EngineError


def _version() -> str:
    from .sources import _core, use_reference_backend
    backend = "reference (pure Python, pcapy-ng)" if use_reference_backend() else "native"
    return f"pt-engine {__version__} (backend: {backend}; {_core.LIBPCAP_VERSION})"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pt-engine",
        description="Exact per-port packet and byte counters from captures, as a msgpack stream.")
    parser.add_argument("--version", action="store_true", help="print the version and backend")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    read = sub.add_parser("read", help="count capture files (pcap / pcapng)",
                          description="Read capture files and stream per-port counters.")
    read.add_argument("files", nargs="+", metavar="FILE", help="pcap or pcapng file")
    _add_stream_options(read)
    read.add_argument("--subscriber-wait", type=float, default=None, metavar="S",
                      help="with --output unix:, give up after S seconds without a "
                           "subscriber (default: wait)")

    run = sub.add_parser("run", help="capture live interfaces",
                         description="Capture live traffic and stream per-port counters. "
                                     "Needs root or CAP_NET_RAW.")
    run.add_argument("-i", "--interface", dest="interfaces", action="append", metavar="IFACE",
                     help="interface to capture (repeat for several; default: the first "
                          "interface that is up, as tcpdump picks)")
    run.add_argument("--workers", type=int, default=1, metavar="N",
                     help="capture processes per interface, joined by PACKET_FANOUT hash "
                          "(default 1)")
    run.add_argument("--snaplen", type=int, default=256, metavar="B",
                     help="bytes captured per packet (default 256: the headers; counted "
                          "bytes are always wire lengths; 0 = whole packets)")
    run.add_argument("--buffer", type=float, default=0, metavar="MB",
                     help="kernel capture buffer per capture process in MiB (default: "
                          "libpcap's 2 MiB)")
    run.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    run.add_argument("--user", metavar="NAME",
                     help="after opening the capture handles, drop root and run as NAME")
    run.add_argument("--socket-mode", default="0600", metavar="MODE",
                     help="permissions of a unix: output socket (default 0600)")
    run.add_argument("--socket-group", metavar="GROUP", help="group of a unix: output socket")
    run.add_argument("--subscriber-buffer", type=float, default=16, metavar="MB",
                     help="unsent data a unix: subscriber may fall behind before it is "
                          "disconnected (default 16 MiB)")
    _add_stream_options(run)
    return parser


def _add_stream_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interval", default="1", metavar="S",
                   help="window length in seconds, cut by packet time (default 1)")
    p.add_argument("--filter", dest="bpf", metavar="BPF", help="BPF filter applied in libpcap")
    p.add_argument("--ports", metavar="SPEC", help="report only these ports, e.g. 22,80,8000-8100")
    p.add_argument("--output", default="-", metavar="DEST",
                   help="- (stdout, default), a file path, or unix:/path/to.sock")
    p.add_argument("--format", choices=("msgpack", "json"),
                   help="msgpack (default) or json lines (default when stdout is a terminal)")


def _output(args) -> Output:
    """--output/--format; binary msgpack is never sprayed onto a terminal by default."""
    fmt = args.format
    if fmt is None:
        to_terminal = args.output in (None, "", "-") and sys.stdout.isatty()
        fmt = "json" if to_terminal else "msgpack"
    return Output.parse(args.output, fmt)


def _read(args) -> int:
    from .pipeline import ReadPipeline
    opts = ReadOptions(files=tuple(args.files), interval_ns=parse_interval(args.interval),
                       bpf=args.bpf, ports=PortSpec.parse(args.ports),
                       output=_output(args))
    ReadPipeline(opts, subscriber_wait=args.subscriber_wait).run()
    return 0


def _run(args) -> int:
    from .pipeline import RunPipeline
    from .sources import default_interface
    if args.workers < 1 or args.workers > 64:
        raise ConfigError(f"--workers {args.workers}: choose 1 to 64")
    if args.snaplen < 0 or args.snaplen > 262144:
        raise ConfigError(f"--snaplen {args.snaplen}: choose 0 (whole packets) to 262144")
    if args.snaplen and args.snaplen < 64:
        raise ConfigError(f"--snaplen {args.snaplen} is too short for the headers; use >= 64")
    if args.buffer < 0 or args.buffer > 4096:
        raise ConfigError(f"--buffer {args.buffer}: choose 0 to 4096 MiB")
    if not 0 < args.subscriber_buffer <= 4096:
        raise ConfigError(f"--subscriber-buffer {args.subscriber_buffer}: choose up to 4096 MiB")
    if args.duration is not None and args.duration <= 0:
        raise ConfigError(f"--duration {args.duration}: must be positive")
    if args.user is not None:
        import pwd
        try:
            pwd.getpwnam(args.user)
        except KeyError:
            raise ConfigError(f"--user {args.user!r}: no such user") from None
    interfaces = tuple(dict.fromkeys(args.interfaces or [default_interface()]))
    opts = RunOptions(interfaces=interfaces, workers=args.workers,
                      interval_ns=parse_interval(args.interval), bpf=args.bpf,
                      ports=PortSpec.parse(args.ports),
                      output=_output(args), snaplen=args.snaplen,
                      buffer_bytes=int(args.buffer * (1 << 20)), duration=args.duration,
                      user=args.user, socket_mode=parse_socket_mode(args.socket_mode),
                      socket_group=args.socket_group,
                      subscriber_buffer=int(args.subscriber_buffer * (1 << 20)))
    RunPipeline(opts).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 runtime error, 2 usage)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.version:
            print(_version())
            return 0
        if args.command == "read":
            return _read(args)
        if args.command == "run":
            return _run(args)
        parser.print_usage(sys.stderr)
        print("pt-engine: error: name a command (read, run)", file=sys.stderr)
        return 2
    except EngineError as err:
        print(f"pt-engine: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
