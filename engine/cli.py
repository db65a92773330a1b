"""The `pt-engine` command line. ``main`` is the only place that prints errors.

The options of read, run, top and record come from the option table
(pt_engine.options); this module adds the subcommands' descriptions and
turns parsed arguments into a run.

Start-up is kept short (a `read` of a small file is mostly start-up): only
the subcommand given gets its argparse parser (the others are listed, with
their one-line help, by name only), and each module a subcommand needs is
imported by that subcommand (plot, top, recorder, plugins, the config file's
TOML parser only when there is a config file). Started as the program
(``argv`` None: the console script, ``python -m pt_engine``), ``main`` ends
the process with ``os._exit`` once stdout and stderr are flushed, skipping
the interpreter's finalization (see ``_exit``).
"""
from __future__ import annotations

import argparse
import os
import sys

from . import __version__, options
from .config import config_path, load_config
from .errors import EngineError, ReaderGone

_DESCRIPTIONS = {
    "read": ("count capture files (pcap / pcapng)",
             "Read capture files and stream per-port counters."),
    "run": ("capture live interfaces",
            "Capture live traffic and stream per-port counters. Needs root or CAP_NET_RAW."),
    "top": ("live per-port table (standalone or --connect)",
            "A top-like live table: one row per port, protocol and direction, with rates, "
            "totals and owning processes. Standalone it runs its own capture (same options "
            "as run); with --connect it reads a running engine. Keys: q quit, h/? help, "
            "j/k/arrows/PgUp/PgDn/Home/End move, s/r/t/p/l/x sort, f protocol, / port, c clear, "
            "e fold ephemeral ports, n names, b bits, space pause."),
    "record": ("record the stream into a rotated msgpack file",
               "Write the stream into FILE (msgpack; appended to if it exists; rotated by "
               "size into FILE.1 ... FILE.N, whole records only). The stream comes from a "
               "running engine (--connect), from capture files (--read), or from a live "
               "capture of record's own with the options of `run`."),
    "ping": ("latency, loss and jitter to targets; sweeps (ICMP echo or TCP connect)",
             "Probe each TARGET with ICMP echo (an unprivileged ICMP socket where the "
             "system allows one, a raw socket as root) or, with --tcp, the TCP connect "
             "time, and stream ping records: per target and window sent, received, "
             "loss, RTT min/avg/max/p50/p95, jitter; at the end each target's totals. "
             "One round by default (a sweep of a range, as fping -g); --count 0 or "
             "--duration for a continuous run. On a terminal: a table."),
    "scan": ("TCP connect port scan: open, closed, filtered",
             "Connect to each --ports port of each TARGET and stream one scan record per "
             "target: each port open (handshake), closed (reset) or filtered (no answer "
             "after --retries more tries, or unreachable), with its answer time. No "
             "privileges needed. On a terminal: a port table, as nmap's."),
}
COMMANDS = ("read", "run", "top", "record", "ping", "scan", "plot", "history", "plugins")
# The one-line help of each subcommand in `pt-engine --help`.
_SUMMARIES = {**{command: summary for command, (summary, _) in _DESCRIPTIONS.items()},
              "plot": "chart recorded streams as a PNG",
              "history": "query a history (history:PATH, clickhouse:URL)",
              "plugins": "list the installed sources, analysers, observers and sinks"}
_ALL = object()     # _parser: build every subcommand's parser


def _version() -> str:
    from .backend import use_reference_backend
    from .sources import _core
    backend = "reference (pure Python, pcapy-ng)" if use_reference_backend() else "native"
    return f"pt-engine {__version__} (backend: {backend}; {_core.LIBPCAP_VERSION})"


COMPLETION_SHELLS = ("bash", "zsh")


def _given_command(argv: list[str]) -> str | None:
    """The subcommand argparse will take from `argv`: its first word that is not an
    option or the value of --completion (the only top-level option taking one),
    or None."""
    words = iter(argv)
    for word in words:
        if word == "--completion":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _parser(config: dict | None = None, only=_ALL) -> argparse.ArgumentParser:
    """The command line; `config` (ConfigFile.defaults) replaces the defaults.

    `only`: build the parser of this subcommand alone (a name, or None for none);
    every other subcommand is still a choice with its one-line help, as in
    `pt-engine --help`, but without options (argparse never selects it: it is not
    the given one). By default every subcommand's parser is built.
    """
    parser = argparse.ArgumentParser(
        prog="pt-engine",
        description="Exact per-port packet and byte counters from captures, as a msgpack stream.")
    parser.add_argument("--version", action="store_true", help="print the version and backend")
    parser.add_argument("--man", action="store_true",
                        help="show the manual page (written from these options; piped: roff)")
    parser.add_argument("--completion", choices=COMPLETION_SHELLS, metavar="SHELL",
                        help="print a completion script for bash or zsh, e.g. "
                             "`pt-engine --completion bash > /etc/bash_completion.d/pt-engine`")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.set_defaults(defaults={})
    for command in COMMANDS:
        summary = _SUMMARIES[command]
        if only is not _ALL and command != only:
            sub.add_parser(command, help=summary)
        elif command in _DESCRIPTIONS:
            p = sub.add_parser(command, help=summary, description=_DESCRIPTIONS[command][1])
            options.add_arguments(p, command, config)
            # What is not given on the command line: the table's default or the config's.
            p.set_defaults(defaults={opt.attr: p.get_default(opt.attr)
                                     for opt in options.for_command(command)})
        elif command == "plot":
            from . import plot
            plot.add_parser(sub, summary)
        elif command == "history":
            from . import history
            history.add_parser(sub, summary, config)
        else:
            sub.add_parser(command, help=summary, description="List every plugin, built-in "
                           "or installed, with its package and version.")
    return parser


def _destinations(args):
    """The Destinations of --output/--format; binary msgpack is never sprayed onto a
    terminal by default."""
    from .sinks import parse_destination
    texts = list(args.output or ["-"])
    fmt = args.format
    if fmt is None:
        fmt = "json" if texts == ["-"] and sys.stdout.isatty() else "msgpack"
    return tuple(parse_destination(text, fmt) for text in texts)


def _read(args) -> int:
    from .pipeline import ReadPipeline
    opts = options.build("read", args, outputs=_destinations(args))
    ReadPipeline(opts).run()
    return 0


def _run(args) -> int:
    from .pipeline import RunPipeline
    opts = options.build("run", args, outputs=_destinations(args))
    RunPipeline(opts).run()
    return 0


def _probe(args) -> int:
    """ping and scan: outputs as for read and run; on a terminal, with neither
    --output nor --format, a human table instead (pt_engine.probe.table)."""
    from .probe import command
    table = not args.output and args.format is None and sys.stdout.isatty()
    return command.main(args.command, args, () if table else _destinations(args))


def _capture_argv(args) -> list[str]:
    """The capture options given to `top` on the command line (not the config
    file's settings: the engine reads that file itself), as `run` arguments for
    the engine it starts."""
    argv: list[str] = []
    for opt in options.for_command("top"):
        if "run" not in opt.commands:
            continue
        value = getattr(args, opt.attr)
        if value is None or value == args.defaults.get(opt.attr):
            continue
        if opt.switch:
            argv.append(opt.name)
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            argv += [opt.name, str(item)]
    return argv


def _quiet_stdout() -> None:
    """The reader of stdout is gone: point it at /dev/null, so that the flush at
    exit does not complain about the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _completion(shell: str) -> int:
    """A completion script from the full parser (shtab: it writes bash and zsh
    scripts from argparse itself, so completion never lags the option table)."""
    import shtab
    parser = _parser()
    for sub in next(a for a in parser._actions
                    if isinstance(a, argparse._SubParsersAction)).choices.values():
        for action in sub._actions:
            if action.dest in ("files", "file", "config", "output"):
                action.complete = shtab.FILE     # capture files, paths: file names
    print(shtab.complete(parser, shell=shell))
    return 0


def _plugins() -> int:
    from .plugins import listing
    for line in listing():
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 runtime error, 2 usage).

    With `argv` None (started as the program) it does not return: the process
    ends with that status (``_exit``)."""
    if argv is None:
        try:
            status = _main(sys.argv[1:])
        except SystemExit as done:      # argparse: --help, usage errors
            status = done.code
        _exit(status)
    return _main(argv)


def _exit(status) -> None:
    """End the process with `status` as sys.exit would, but skip the interpreter's
    finalization (tearing down every module and object costs more than a small
    read). Everything is flushed and closed first: the outputs are (the
    pipeline closes them), atexit handlers run, stdout and stderr are flushed.
    Where that is not clean (a flush fails, a non-daemon thread still runs),
    the ordinary sys.exit does the rest, with its messages and exit codes."""
    import atexit
    import threading
    if status is None:
        status = 0
    elif not isinstance(status, int):   # sys.exit("text"): printed, status 1
        sys.exit(status)
    if any(t is not threading.main_thread() and not t.daemon and t.is_alive()
           for t in threading.enumerate()):
        sys.exit(status)
    _flush_or_exit(status)
    atexit._run_exitfuncs()
    _flush_or_exit(status)
    os._exit(status & 0xFF)


def _flush_or_exit(status: int) -> None:
    """Flush stdout and stderr; if either fails, sys.exit(status) (the interpreter
    reports it at finalization, as it always did)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            sys.exit(status)


def _main(argv: list[str]) -> int:
    parser = _parser(only=_given_command(argv))
    args = parser.parse_args(argv)
    try:
        if hasattr(args, "config"):
            path = config_path(args.config)
            if path is not None and not args.config and not os.environ.get("PT_ENGINE_CONFIG"):
                print(f"pt-engine: reading config file {path}", file=sys.stderr, flush=True)
            if path is not None:
                config = load_config(path)
                parser = _parser(config.defaults(), only=args.command)
                args = parser.parse_args(argv)
        if args.version:
            print(_version())
            return 0
        if args.man:
            from . import manpage
            return manpage.show(_parser())
        if args.completion:
            return _completion(args.completion)
        if args.command == "read":
            return _read(args)
        if args.command == "run":
            return _run(args)
        if args.command in ("ping", "scan"):
            return _probe(args)
        if args.command == "top":
            from . import top
            return top.main(args, _capture_argv(args))
        if args.command == "record":
            from . import recorder
            return recorder.main(args)
        if args.command == "plot":
            from . import plot
            return plot.main(args)
        if args.command == "history":
            from . import history
            return history.main(args)
        if args.command == "plugins":
            return _plugins()
        parser.print_usage(sys.stderr)
        print(f"pt-engine: error: name a command ({', '.join(COMMANDS)})", file=sys.stderr)
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
    main()
