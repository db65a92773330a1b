"""The `pt-engine` command line. ``main`` is the only place that prints errors."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from . import __version__
from .config import (ALERT_SYNTAX, Output, PortSpec, ReadOptions, RunOptions, check_option,
                     config_path, finite_number, load_config, parse_alerts, parse_interval,
                     parse_socket_mode, whole_number, MAX_SECONDS)
from .errors import ConfigError, EngineError, ReaderGone


def _version() -> str:
    from .sources import _core, use_reference_backend
    backend = "reference (pure Python, pcapy-ng)" if use_reference_backend() else "native"
    return f"pt-engine {__version__} (backend: {backend}; {_core.LIBPCAP_VERSION})"


def _parser(config: dict | None = None) -> argparse.ArgumentParser:
    """The command line; `config` (ConfigFile.defaults) replaces the defaults of
    read and run."""
    parser = argparse.ArgumentParser(
        prog="pt-engine",
        description="Exact per-port packet and byte counters from captures, as a msgpack stream.")
    parser.add_argument("--version", action="store_true", help="print the version and backend")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    read = sub.add_parser("read", help="count capture files (pcap / pcapng)",
                          description="Read capture files and stream per-port counters.")
    read.add_argument("files", nargs="+", metavar="FILE", help="pcap or pcapng file")
    _add_stream_options(read)
    read.add_argument("--subscriber-wait", type=finite_number, default=None, metavar="S",
                      help="with --output unix:, give up after S seconds without a "
                           "subscriber (default: wait)")

    run = sub.add_parser("run", help="capture live interfaces",
                         description="Capture live traffic and stream per-port counters. "
                                     "Needs root or CAP_NET_RAW.")
    _add_capture_options(run)
    run.add_argument("--socket-mode", default="0600", metavar="MODE",
                     help="permissions of a unix: output socket (default 0600)")
    run.add_argument("--socket-group", metavar="GROUP", help="group of a unix: output socket")
    run.add_argument("--subscriber-buffer", type=finite_number, default=16, metavar="MB",
                     help="unsent data a unix: subscriber may fall behind before it is "
                          "disconnected (default 16 MiB)")
    _add_stream_options(run)
    _add_config_options(read, config)
    _add_config_options(run, config)

    top = sub.add_parser("top", help="live per-port table (standalone or --connect)",
                         description="A top-like live table: one row per port, protocol and "
                                     "direction, with rates, totals and owning processes. "
                                     "Standalone it runs its own capture (same options as "
                                     "run); with --connect it reads a running engine. Keys: "
                                     "q quit, s/r/t/p sort, f protocol, / port, c clear, "
                                     "space pause.")
    top.add_argument("--connect", metavar="unix:PATH",
                     help="read a running engine's socket instead of capturing")
    top.add_argument("--rows", type=whole_number, default=25, metavar="N",
                     help="rows per table when not on a terminal (default 25)")
    top.add_argument("--plain", action="store_true",
                     help="plain-text tables even on a terminal")
    _add_capture_options(top)
    top.add_argument("--interval", default="1", metavar="S",
                     help="window length in seconds (default 1)")
    top.add_argument("-f", "--filter", dest="bpf", metavar="BPF", help="BPF filter applied in libpcap")
    top.add_argument("--ports", metavar="SPEC", help="show only these ports")
    top.add_argument("--config", metavar="PATH", help="config file for the engine top starts")
    top.add_argument("--alert", dest="alerts", action="append", metavar="RULE",
                     help="alert rule for the engine top starts (syntax as in run); "
                          "alerting rows are highlighted")

    from . import plot, record
    record.add_parser(sub, _add_capture_options)
    plot.add_parser(sub)
    return parser


# Capture options of `run` that `top` passes on to the engine it starts.
CAPTURE_FLAGS = (("interfaces", "-i"), ("workers", "--workers"), ("snaplen", "--snaplen"),
                 ("buffer", "--buffer"), ("duration", "--duration"), ("user", "--user"),
                 ("interval", "--interval"), ("bpf", "--filter"), ("ports", "--ports"),
                 ("config", "--config"), ("alerts", "--alert"))


def _add_capture_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-i", "--interface", dest="interfaces", action=_Repeatable, metavar="IFACE",
                   help="interface to capture (repeat for several; default: the first "
                        "interface that is up, as tcpdump picks)")
    p.add_argument("--workers", type=whole_number, default=1, metavar="N",
                   help="capture processes per interface, joined by PACKET_FANOUT hash "
                        "(default 1)")
    p.add_argument("--snaplen", type=whole_number, default=256, metavar="B",
                   help="bytes captured per packet (default 256: the headers; counted "
                        "bytes are always wire lengths; 0 = whole packets)")
    p.add_argument("--buffer", type=finite_number, default=0, metavar="MB",
                   help="kernel capture buffer per capture process in MiB (default: "
                        "libpcap's 2 MiB)")
    p.add_argument("--duration", type=finite_number, metavar="S", help="stop after S seconds")
    p.add_argument("--user", metavar="NAME",
                   help="after opening the capture handles, drop root and run as NAME")


def _capture_argv(args, parser_defaults: dict) -> list[str]:
    """The capture options given on the command line, as `run` arguments."""
    argv: list[str] = []
    for dest, flag in CAPTURE_FLAGS:
        value = getattr(args, dest)
        if value is None or value == parser_defaults.get(dest):
            continue
        for item in value if isinstance(value, list) else [value]:
            argv += [flag, str(item)]
    return argv


class _Repeatable(argparse.Action):
    """action='append', except that the first use replaces a default from the config
    file (a tuple) instead of adding to it: the command line overrides the file."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, (items if isinstance(items, list) else []) + [values])


def _add_config_options(p: argparse.ArgumentParser, config: dict | None) -> None:
    """--config and the alert options; then the config file's settings as defaults."""
    p.add_argument("--config", metavar="PATH",
                   help="TOML config file; the command line overrides it (default: "
                        "$PT_ENGINE_CONFIG, else the first that exists of "
                        "~/.config/pt-engine/config.toml and /etc/pt-engine/config.toml)")
    p.add_argument("--alert", dest="alerts", action=_Repeatable, metavar="RULE",
                   help=f"alert rule, repeatable (replaces the config file's rules): "
                        f"{ALERT_SYNTAX}, e.g. tcp:443:in:bytes_per_s>10M:for=3. PROTO: tcp, "
                        f"udp, sctp, udplite, dccp or *; PORTS: a port, a range 8000-8100 or *; "
                        f"DIRECTION: in, out or both (summed); METRIC: bytes_per_s or "
                        f"packets_per_s; LIMIT: a number, optionally with k, M, G or T "
                        f"(powers of 1000). Fires when over LIMIT for N windows in a row "
                        f"(default 1); resolved when under R*LIMIT for N windows in a row "
                        f"(default R 0.8). scope=port (default) checks each matching port "
                        f"on its own, scope=sum their sum. NAME defaults to the rule text")
    p.add_argument("--on-alert", metavar="CMD",
                   help="shell command run in the background for each alert and "
                        "resolution, given the record as one JSON line on stdin; its "
                        "output goes to stderr")
    p.add_argument("--alert-timeout", type=finite_number, default=10, metavar="S",
                   help="kill an --on-alert command and its process group after S "
                        "seconds (default 10)")
    p.add_argument("--alert-hooks", type=whole_number, default=4, metavar="K",
                   help="run at most K --on-alert commands at once; alerts beyond are "
                        "not given to the command, with a log line (default 4)")
    if config:
        p.set_defaults(**config)


def _alerts(args):
    """The Alerts observer for the rules of --alert or the config file; raises ConfigError."""
    from .alerts import Alerts
    rules = args.alerts or ()
    if isinstance(rules, list):     # texts from the command line (the file's are rules)
        rules = parse_alerts(rules)
    return Alerts(rules, args.on_alert, check_option("alert_timeout", args.alert_timeout),
                  check_option("alert_hooks", args.alert_hooks))


def _add_stream_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interval", default="1", metavar="S",
                   help="window length in seconds, cut by packet time (default 1)")
    p.add_argument("-f", "--filter", dest="bpf", metavar="BPF", help="BPF filter applied in libpcap")
    p.add_argument("--ports", metavar="SPEC", help="report only these ports, e.g. 22,80,8000-8100")
    p.add_argument("-o", "--output", default="-", metavar="DEST",
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
    if args.subscriber_wait is not None and not 0 <= args.subscriber_wait <= MAX_SECONDS:
        raise ConfigError(f"--subscriber-wait {args.subscriber_wait:g}: choose 0 to "
                          f"{MAX_SECONDS} seconds")
    opts = ReadOptions(files=tuple(args.files), interval_ns=parse_interval(args.interval),
                       bpf=args.bpf, ports=PortSpec.parse(args.ports),
                       output=_output(args))
    alerts = _alerts(args)
    try:
        ReadPipeline(opts, subscriber_wait=args.subscriber_wait,
                     observers=[alerts.observe]).run()
    finally:
        alerts.close()
    return 0


def _run(args) -> int:
    from .pipeline import RunPipeline
    check_option("subscriber_buffer", args.subscriber_buffer)
    opts = dataclasses.replace(_capture_options(args, _output(args)),
                               socket_mode=parse_socket_mode(args.socket_mode),
                               socket_group=args.socket_group,
                               subscriber_buffer=int(args.subscriber_buffer * (1 << 20)))
    alerts = _alerts(args)
    try:
        RunPipeline(opts, observers=[alerts.observe]).run()
    finally:
        alerts.close()
    return 0


def _capture_options(args, output: Output) -> RunOptions:
    """RunOptions from the capture options `run` and `record` share; raises ConfigError."""
    from .sources import default_interface
    for key in ("workers", "snaplen", "buffer"):
        check_option(key, getattr(args, key))
    if args.duration is not None and not 0 < args.duration <= MAX_SECONDS:
        raise ConfigError(f"--duration {args.duration:g}: choose more than 0 and at most "
                          f"{MAX_SECONDS} seconds (a year)")
    if args.user is not None:
        check_option("user", args.user)
    interfaces = tuple(dict.fromkeys(args.interfaces or [default_interface()]))
    return RunOptions(interfaces=interfaces, workers=args.workers,
                      interval_ns=parse_interval(args.interval), bpf=args.bpf,
                      ports=PortSpec.parse(args.ports), output=output, snaplen=args.snaplen,
                      buffer_bytes=int(args.buffer * (1 << 20)), duration=args.duration,
                      user=args.user)


def _quiet_stdout() -> None:
    """The reader of stdout is gone: point it at /dev/null, so that the flush at
    exit does not complain about the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 runtime error, 2 usage)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if hasattr(args, "config"):
            path = config_path(args.config)
            if path is not None and not args.config and not os.environ.get("PT_ENGINE_CONFIG"):
                print(f"pt-engine: reading config file {path}", file=sys.stderr, flush=True)
            if path is not None:
                parser = _parser(load_config(path).defaults())
                args = parser.parse_args(argv)
        if args.version:
            print(_version())
            return 0
        if args.command == "read":
            return _read(args)
        if args.command == "run":
            return _run(args)
        if args.command == "top":
            from . import top
            defaults = vars(parser.parse_args(["top"]))
            return top.main(args, _capture_argv(args, defaults))
        if args.command == "record":
            from . import record
            return record.main(args, _capture_options)
        if args.command == "plot":
            from . import plot
            return plot.main(args)
        parser.print_usage(sys.stderr)
        print("pt-engine: error: name a command (read, run, top, record, plot)",
              file=sys.stderr)
        return 2
    except ReaderGone:
        _quiet_stdout()
        return 0
    except EngineError as err:
        print(f"pt-engine: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
