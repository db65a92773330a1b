"""The `pt-engine` command line. ``main`` is the only place that prints errors."""
from __future__ import annotations

import argparse
import sys

from . import __version__
from .config import Output, PortSpec, ReadOptions, parse_interval
from .errors import EngineError


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
    return parser


def _add_stream_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interval", default="1", metavar="S",
                   help="window length in seconds, cut by packet time (default 1)")
    p.add_argument("--filter", dest="bpf", metavar="BPF", help="BPF filter applied in libpcap")
    p.add_argument("--ports", metavar="SPEC", help="report only these ports, e.g. 22,80,8000-8100")
    p.add_argument("--output", default="-", metavar="DEST",
                   help="- (stdout, default), a file path, or unix:/path/to.sock")
    p.add_argument("--format", default="msgpack", choices=("msgpack", "json"),
                   help="msgpack (default) or json lines")


def _read(args) -> int:
    from .pipeline import ReadPipeline
    opts = ReadOptions(files=tuple(args.files), interval_ns=parse_interval(args.interval),
                       bpf=args.bpf, ports=PortSpec.parse(args.ports),
                       output=Output.parse(args.output, args.format))
    ReadPipeline(opts, subscriber_wait=args.subscriber_wait).run()
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
        parser.print_usage(sys.stderr)
        print("pt-engine: error: name a command (read)", file=sys.stderr)
        return 2
    except EngineError as err:
        print(f"pt-engine: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
