"""`pt-engine --man`: the manual page, written from the same argparse parsers as
``--help`` (and so from the option table, pt_engine.options), in roff.

`pt-engine --man | man -l -` shows it; on a terminal ``--man`` does that itself.
Nothing here is kept by hand but the few paragraphs of prose below.
"""
from __future__ import annotations

import argparse
import datetime

from . import __version__

_PROSE = {
    "EXIT STATUS": "0 on success (also after Ctrl-C, with the partial window and the "
                   "summary written), 1 for a runtime error (a capture file that cannot be "
                   "read, an interface that vanished, an output that failed), 2 for a usage "
                   "error. Every error is one line on stderr, starting with "
                   "\\fBpt-engine: error:\\fR.",
    "ENVIRONMENT": "\\fBPT_ENGINE_CONFIG\\fR names the config file (default "
                   "\\fI~/.config/pt-engine/config.toml\\fR if it exists). "
                   "\\fBPT_ENGINE_PUREPYTHON=1\\fR runs the pure-Python reference backend.",
    "SEE ALSO": "\\fBtcpdump\\fR(8), \\fBpcap-filter\\fR(7), \\fBiftop\\fR(8). The stream "
                "format, the counting rules and the architecture are in the project's "
                "\\fIdocs/\\fR directory.",
}


def _esc(text: str) -> str:
    """Text safe in roff: backslashes doubled, a leading dot or quote protected."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line
                     for line in text.splitlines())


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = parser._get_formatter()
    return " ".join(formatter._expand_help(action).split()) if action.help else ""


def _option_lines(parser: argparse.ArgumentParser) -> list[str]:
    out = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, (argparse._HelpAction,
                                                                   argparse._SubParsersAction)):
            continue
        if action.option_strings:
            metavar = ""
            if action.nargs != 0:
                metavar = " " + parser._get_formatter()._format_args(
                    action, action.dest.upper())
            names = ", ".join(f"\\fB{_esc(o)}\\fR" for o in action.option_strings)
            out += [".TP", f"{names}{_esc(metavar)}", _esc(_help(parser, action))]
        else:
            out += [".TP", f"\\fI{_esc(action.metavar or action.dest)}\\fR",
                    _esc(_help(parser, action))]
    return out


def render(parser: argparse.ArgumentParser, today: datetime.date | None = None) -> str:
    """The page for the whole command line (`parser`: every subcommand built)."""
    day = (today or datetime.date.today()).isoformat()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    summaries = {c.dest: c.help for c in subs._choices_actions}
    lines = [f'.TH PT\\-ENGINE 1 "{day}" "pt-engine {__version__}" "User Commands"',
             ".SH NAME", "pt\\-engine \\- " + _esc(parser.description or ""),
             ".SH SYNOPSIS"]
    for name in subs.choices:
        lines += [f".B pt\\-engine {name}", f"[\\fIOPTIONS\\fR]", ".br"]
    lines += [".B pt\\-engine", "[\\fB\\-\\-version\\fR | \\fB\\-\\-man\\fR | "
              "\\fB\\-\\-completion\\fR \\fISHELL\\fR]", ".SH DESCRIPTION",
              _esc("Exact per-port packet and byte counters from capture files and live "
                   "interfaces, window by window, as a msgpack (or JSON lines) stream for "
                   "other tools, with a live table, recordings, charts, threshold alerts "
                   "and plugins."),
              ".SH GLOBAL OPTIONS", *_option_lines(parser), ".SH COMMANDS"]
    for name, sub in subs.choices.items():
        lines += [f'.SS "pt\\-engine {name}"', _esc(sub.description or summaries.get(name)
                                                   or ""), *_option_lines(sub)]
    for title, text in _PROSE.items():
        lines += [f".SH {title}", text]
    return "\n".join(lines) + "\n"


def show(parser: argparse.ArgumentParser) -> int:
    """Print the page; on a terminal, let man(1) format and page it."""
    import shutil
    import subprocess
    import sys
    page = render(parser)
    if sys.stdout.isatty() and shutil.which("man"):
        return subprocess.run(["man", "-l", "-"], input=page.encode()).returncode
    sys.stdout.write(page)
    return 0
