"""The option table: every option of every subcommand, declared once.

Each ``Opt`` row gives the flags, help, default and the subcommands that take
it; from the table come:

* the argparse options of each subcommand (``add_arguments``; plot adds the
  rows that name it to the options of its own);
* the config file's keys and their checks (``CONFIG_OPTS``; pt_engine.config
  reads the file with them), the config's values standing in for the
  defaults of the command line;
* the options dataclass of each subcommand (``options_class``), built from
  parsed arguments by ``build``, with each value checked by the same check
  as the config file's and converted (seconds to ns, MiB to bytes, texts to
  parsed rules and port sets).

Each default is written here and nowhere else.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from . import config
from .config import (ALERT_SYNTAX, PortSpec, _Bad, finite_number, parse_alerts,
                     whole_number)
from .errors import ConfigError

_COUNTERS = ("read", "run", "top", "record")
_PROBE = ("ping", "scan")                # active probing (pt_engine.probe)
COMMANDS = (*_COUNTERS, *_PROBE)
_ALL = _COUNTERS
_STREAM = ("read", "run", "record")      # commands that make a stream of their own
_LIVE = ("run", "top", "record")         # commands that capture live


@dataclass(frozen=True)
class Opt:
    """One option. `key` is its TOML key and options field (unless `field`)."""

    key: str
    flags: tuple[str, ...]            # () for a positional
    help: str
    commands: tuple[str, ...]
    default: Any = None
    metavar: str | None = None
    arg_type: Callable | None = None  # argparse type: text -> value (usage error if not)
    check: Callable | None = None     # value -> value, raises config._Bad (CLI and TOML)
    convert: Callable | None = None   # checked value -> options field value
    field: str | None = None
    dest: str | None = None           # argparse dest (default key)
    repeat: bool = False              # may be given several times; a list in TOML
    nargs: str | None = None
    choices: tuple | None = None
    toml: bool = True
    switch: bool = False              # store_true (store_false with `off`)
    off: bool = False                 # a switch that turns off what is on by default
    label: str | None = None          # what messages call it, if not its long flag
    cli: bool = True                  # False: a config file key only (credentials)

    @property
    def name(self) -> str:
        """What messages call it: its label, else --flag (or the key)."""
        long = [f for f in self.flags if f.startswith("--")]
        return self.label or (long[0] if long else self.key)

    @property
    def attr(self) -> str:
        return self.dest or self.key

    @property
    def out(self) -> str:
        return self.field or self.key


def _mib(value) -> int:
    return int(value * (1 << 20))


def _rules(value) -> tuple:
    """Alert rules: texts from the command line, or the config file's parsed rules."""
    if not value:
        return ()
    if isinstance(value, tuple) and all(isinstance(r, (config.AlertRule, config.PingRule))
                                        for r in value):
        return value
    return parse_alerts(value)


def _names(value) -> tuple[str, ...]:
    return tuple(dict.fromkeys(value or ()))


def _ns(seconds) -> int:
    return round(seconds * 1_000_000_000)


def _uids(value) -> frozenset[int] | None:
    """--socket-users: user names or numbers to uids (None: no allow-list)."""
    if not value:
        return None
    import pwd
    uids = set()
    for item in value:
        if str(item).isdigit():
            uids.add(int(item))
            continue
        try:
            uids.add(pwd.getpwnam(item).pw_uid)
        except KeyError:
            raise ConfigError(f"--socket-users {item!r}: no such user") from None
    return frozenset(uids)


OPTIONS: tuple[Opt, ...] = (
    # --- what to read ---------------------------------------------------------------
    Opt("files", (), "pcap or pcapng file ('-': standard input)", ("read",), metavar="FILE",
        nargs="+", toml=False, convert=tuple),
    Opt("file", (), "the recording", ("record",), metavar="FILE", toml=False),
    Opt("connect", ("--connect",), "read a running engine's socket instead of capturing",
        ("top", "record"), metavar="unix:PATH|tls:HOST:PORT", toml=False),
    Opt("read_files", ("-r", "--read"), "count this capture file (as `pt-engine read`) "
        "instead of capturing live; repeat for several", ("record",), metavar="PCAP",
        repeat=True, toml=False, convert=lambda v: tuple(v or ())),
    Opt("interfaces", ("-i", "--interface"), "interface to capture (repeat for several; "
        "default: the first interface that is up, as tcpdump picks); NETNS/IFACE or "
        "pid:PID/IFACE captures in another network namespace", _LIVE, metavar="IFACE",
        repeat=True, check=config.check_interfaces, convert=_names, label="-i"),
    Opt("all_netns", ("--all-netns",), "also capture every interface that is up (loopback "
        "aside) in every named network namespace (`ip netns list`), as NETNS/IFACE",
        _LIVE, default=False, switch=True, check=config.check_switch),
    Opt("workers", ("--workers",), "capture processes per interface, joined by "
        "PACKET_FANOUT hash (default %(default)s)", _LIVE, default=1, metavar="N",
        arg_type=whole_number, check=config.check_workers),
    Opt("snaplen", ("--snaplen",), "bytes captured per packet (default %(default)s: the "
        "headers; counted bytes are always wire lengths; 0 = whole packets)", _LIVE,
        default=256, metavar="B", arg_type=whole_number, check=config.check_snaplen),
    Opt("buffer", ("--buffer",), "kernel capture buffer per capture process in MiB "
        "(default: libpcap's 2 MiB)", _LIVE, default=0, metavar="MB",
        arg_type=finite_number, check=config.check_buffer, convert=_mib,
        field="buffer_bytes"),
    Opt("duration", ("--duration",), "stop after S seconds", _LIVE, metavar="S",
        arg_type=finite_number, check=config.check_duration, toml=False),
    Opt("user", ("--user",), "after opening the capture handles, drop root and run as "
        "NAME", _LIVE, metavar="NAME", check=config.check_user),
    # --- what to count ----------------------------------------------------------------
    Opt("interval", ("--interval",), "window length in seconds, cut by packet time "
        "(default %(default)s)", _ALL, default="1", metavar="S", check=config.check_interval,
        convert=config.interval_ns, field="interval_ns"),
    Opt("filter", ("-f", "--filter"), "BPF filter applied in libpcap", _ALL, dest="bpf",
        field="bpf", metavar="BPF", check=config.check_text),
    Opt("ports", ("--ports",), "report only these ports, e.g. 22,80,https,8000-8100",
        _ALL, metavar="SPEC", check=config.check_ports, convert=PortSpec.parse),
    Opt("tcp_quality", ("--no-tcp-quality",), "do not measure TCP quality (RTT, jitter, "
        "retransmissions, gaps, duplicate ACKs per port: the tcp_quality field, "
        "docs/quality-rules.md; on by default; config: tcp_quality = false)",
        (*_STREAM, "top"), default=True, switch=True, off=True, check=config.check_switch),
    Opt("analysers", ("--analyser",), "run this analyser too (a plugin; `pt-engine "
        "plugins` lists them); repeatable", _STREAM, metavar="NAME", repeat=True,
        check=config.check_names, convert=_names),
    Opt("addresses", ("--addresses",), "how addresses leave the engine: pseudonymise "
        "(default: keyed, prefix-preserving Crypto-PAn), truncate:V4,V6 (keep that many "
        "prefix bits, e.g. truncate:24,48), hash (keyed BLAKE2b) or clear; top: of the "
        "talkers of the engine it starts; ping and scan: of the targets in their records, "
        "table and alerts", (*_STREAM, "top", "ping", "scan"),
        default="pseudonymise", metavar="POLICY", check=config.check_text),
    Opt("state_dir", ("--state-dir",), "where the address key is created (mode 0600) "
        "and kept (default: $STATE_DIRECTORY, else /var/lib/pt-engine as root, else "
        "~/.local/state/pt-engine)", (*_STREAM, "top", "ping", "scan"), metavar="DIR",
        check=config.check_text),
    Opt("observers", ("--observer",), "run this observer plugin too; repeatable",
        _STREAM, metavar="NAME", repeat=True, check=config.check_names, convert=_names),
    # --- where it goes ----------------------------------------------------------------
    Opt("output", ("-o", "--output"), "where the stream goes, repeatable: - (stdout, the "
        "default), a file path, unix:/path/to.sock, or a plugin's SCHEME:...; prefix "
        "json: or msgpack: to choose the encoding of one output (json:-)",
        ("read", "run", *_PROBE), metavar="DEST", repeat=True, check=config.check_outputs,
        field="outputs"),
    # --- what clickhouse:, history: and prometheus: outputs write (sinks/clickhouse.py,
    # sinks/prometheus.py); credentials and TLS files come from the config file only.
    Opt("host_name", ("--host-name",), "the host column of clickhouse: and history: "
        "outputs (default: this machine's host name)", ("read", "run"), metavar="NAME",
        check=config.check_text),
    Opt("prometheus_ports", ("--prometheus-ports",), "ports a prometheus: output labels "
        "by number; the others are summed into port=\"other\" (default: the --ports "
        "selection, else a short list of well-known ports, README)", ("read", "run"),
        metavar="SPEC", check=config.check_ports, convert=PortSpec.parse),
    *(Opt(key, (), text, ("read", "run", "history"), check=config.check_text, cli=False)
      for key, text in (("clickhouse_user", "user of clickhouse: outputs and sources "
                         "($PT_ENGINE_CLICKHOUSE_USER wins)"),
                        ("clickhouse_password", "password of clickhouse: outputs and "
                         "sources ($PT_ENGINE_CLICKHOUSE_PASSWORD wins)"),
                        ("prometheus_tls_cert", "prometheus: serves HTTPS with this "
                         "certificate (PEM file) instead of tls_cert; any prometheus_tls_* "
                         "key replaces tls_cert, tls_key, tls_client_ca and "
                         "tls_client_names for this endpoint"),
                        ("prometheus_tls_key", "the certificate's private key (PEM file), "
                         "instead of tls_key"),
                        ("prometheus_tls_client_ca", "prometheus: asks every client for a "
                         "certificate signed by these CAs (PEM file), instead of "
                         "tls_client_ca"))),
    Opt("format", ("--format",), "encoding of outputs without a prefix: msgpack (default) "
        "or json lines (default when stdout is a terminal; ping and scan: a table there)",
        ("read", "run", *_PROBE),
        choices=("msgpack", "json"), check=config.check_format),
    Opt("output_buffer", ("--output-buffer",), "records an output that writes slower "
        "than the stream comes may queue, in MiB, before a live run drops them (counted) "
        "or a file run waits (default %(default)s)", _STREAM, default=64, metavar="MB",
        arg_type=finite_number, check=config.check_mib, convert=_mib),
    Opt("socket_mode", ("--socket-mode",), "permissions of a unix: output socket (default "
        "%(default)s)", ("read", "run"), default="0600", metavar="MODE",
        check=config.check_socket_mode, convert=config.socket_mode),
    Opt("socket_group", ("--socket-group",), "group of a unix: output socket",
        ("read", "run"), metavar="GROUP", check=config.check_group),
    Opt("subscriber_buffer", ("--subscriber-buffer",), "unsent data a unix: subscriber "
        "may fall behind before it is disconnected (default %(default)s MiB)",
        ("read", "run"), default=16, metavar="MB", arg_type=finite_number,
        check=config.check_mib, convert=_mib),
    Opt("socket_users", ("--socket-users",), "only these users (names or uids) may "
        "subscribe to a unix: output, checked with SO_PEERCRED on every connection; "
        "repeatable (default: whoever the socket's mode and group let in)", ("read", "run"),
        metavar="USER", repeat=True, check=config.check_names, convert=_uids),
    Opt("tls_cert", ("--tls-cert",), "PEM certificate: of tls: outputs and the "
        "prometheus: endpoint (which then serves HTTPS only), or with --connect tls: the "
        "client's own", ("read", "run", "top", "record"),
        metavar="PEM", check=config.check_text),
    Opt("tls_key", ("--tls-key",), "PEM private key of --tls-cert",
        ("read", "run", "top", "record"), metavar="PEM", check=config.check_text),
    Opt("tls_client_ca", ("--tls-client-ca",), "CA certificates (PEM) tls: outputs and "
        "the prometheus: endpoint check client certificates against (a tls: output always "
        "requires one; prometheus: with this option)",
        ("read", "run"), metavar="PEM", check=config.check_text),
    Opt("tls_client_names", ("--tls-client-name",), "with tls: outputs and the "
        "prometheus: endpoint, accept only client certificates with this subject common name or DNS name; repeatable",
        ("read", "run"), metavar="NAME", repeat=True, check=config.check_names,
        convert=_names),
    Opt("tls_ca", ("--tls-ca",), "with --connect tls:HOST:PORT: CA certificates (PEM) "
        "the engine's certificate must chain to (its name must match HOST)",
        ("top", "record"), metavar="PEM", check=config.check_text),
    Opt("subscriber_wait", ("--subscriber-wait",), "with --output unix:, give up after S "
        "seconds without a subscriber (default: wait)", ("read",), metavar="S",
        arg_type=finite_number, check=config.check_wait, toml=False),
    Opt("max_size", ("--max-size",), "start a new FILE when a record would take it past "
        "MB MiB; the old one becomes FILE.1 (default %(default)s)", ("record",),
        default=100, metavar="MB", arg_type=finite_number, check=config.check_max_size,
        toml=False),
    Opt("keep", ("--keep",), "rotated files to keep, FILE.1 (newest) ... FILE.N (default "
        "%(default)s)", ("record",), default=5, metavar="N", arg_type=whole_number,
        check=config.check_keep, toml=False),
    Opt("encrypt_to", ("--encrypt-to",), "encrypt the recording to this age public key "
        "(age1..., from age-keygen), repeatable: each file is one age stream, readable "
        "with --identity or `age -d`", ("record",), metavar="RECIPIENT", repeat=True,
        check=config.check_names, convert=_names),
    Opt("identity", ("--identity",), "age secret key file (age-keygen) to read "
        "encrypted recordings with", ("plot",), metavar="KEYFILE", toml=False),
    # --- config and alerts ------------------------------------------------------------
    Opt("config", ("--config",), "TOML config file; the command line overrides it "
        "(default: $PT_ENGINE_CONFIG, else the first that exists of "
        "~/.config/pt-engine/config.toml and /etc/pt-engine/config.toml)", (*_ALL, *_PROBE, "history"),
        metavar="PATH", toml=False),
    Opt("alert", ("--alert",), f"alert rule, repeatable (replaces the config file's "
        f"rules): {ALERT_SYNTAX}, e.g. tcp:443:in:bytes_per_s>10M:for=3. PROTO: tcp, "
        f"udp, sctp, udplite, dccp or *; PORTS: a port, a range 8000-8100 or *; "
        f"DIRECTION: in, out or both (summed); METRIC: bytes_per_s or packets_per_s; "
        f"LIMIT: a number, optionally with k, M, G or T (powers of 1000). Fires when "
        f"over LIMIT for N windows in a row (default 1); resolved when under R*LIMIT for "
        f"N windows in a row (default R 0.8). scope=port (default) checks each matching "
        f"port on its own, scope=sum their sum. NAME defaults to the rule text. ping and "
        f"scan: {config.PING_ALERT_SYNTAX}, TARGET * or an address or range, METRIC "
        f"loss_ratio, rtt_ms (the average), rtt_min_ms, rtt_max_ms, rtt_p50_ms, "
        f"rtt_p95_ms or jitter_ms, checked on each ping window", (*_ALL, *_PROBE),
        dest="alerts", metavar="RULE", repeat=True, convert=_rules, field="alerts",
        toml=False),
    Opt("on_alert", ("--on-alert",), "shell command run in the background for each alert "
        "and resolution, given the record as one JSON line on stdin; its output goes to "
        "stderr", (*_STREAM, *_PROBE), metavar="CMD", check=config.check_text),
    Opt("alert_timeout", ("--alert-timeout",), "kill an --on-alert command and its "
        "process group after S seconds (default %(default)s)", (*_STREAM, *_PROBE), default=10,
        metavar="S", arg_type=finite_number, check=config.check_alert_timeout),
    Opt("alert_hooks", ("--alert-hooks",), "run at most K --on-alert commands at once; "
        "alerts beyond are not given to the command, with a log line (default "
        "%(default)s)", (*_STREAM, *_PROBE), default=4, metavar="K", arg_type=whole_number,
        check=config.check_alert_hooks),
    # --- ping's and scan's ------------------------------------------------------------
    Opt("targets", (), "an address, a name (each address it resolves to) or a CIDR range "
        "(its hosts: a sweep)", _PROBE, metavar="TARGET", nargs="+", toml=False,
        convert=tuple),
    Opt("count", ("--count",), "rounds of probes, one to each target per round (default "
        "1: a sweep, as fping -g; 0: until --duration or Ctrl-C)", ("ping",), metavar="N",
        arg_type=whole_number, check=config.check_count, toml=False),
    Opt("probe_duration", ("--duration",), "probe for S seconds (rounds keep coming; "
        "--count 0 unless given)", ("ping",), metavar="S", arg_type=finite_number,
        check=config.check_duration, toml=False, convert=_ns),
    Opt("probe_interval", ("--interval",), "seconds between rounds (default "
        "%(default)s; 0: each round as soon as the rate limit lets it)", ("ping",),
        default=1.0, metavar="S", arg_type=finite_number, check=config.check_probe_interval,
        toml=False, convert=_ns, field="interval_ns"),
    Opt("window", ("--window",), "rounds per ping record (default %(default)s: a record "
        "per target and round)", ("ping",), default=1, metavar="N", arg_type=whole_number,
        check=config.check_rounds, toml=False),
    Opt("tcp", ("--tcp",), "probe these TCP ports (connect time; a reset is an answer "
        "too) instead of ICMP echo, for hosts that drop ICMP: 443 or 22,80,https",
        ("ping",), metavar="PORTS", check=config.check_probe_ports, toml=False),
    Opt("size", ("--size",), "ICMP payload bytes (default %(default)s, as ping)", ("ping",),
        default=56, metavar="B", arg_type=whole_number, check=config.check_size,
        toml=False),
    Opt("scan_ports", ("--ports",), "the TCP ports to scan, e.g. 22,80,https,8000-8100 or "
        "1-65535 (required)", ("scan",), metavar="SPEC", check=config.check_probe_ports,
        toml=False),
    Opt("syn", ("--syn",), "a half-open SYN scan from raw sockets (root only): a SYN "
        "per port, open on a SYN/ACK (the kernel's reset then closes it), closed on a "
        "reset, filtered on no answer or an ICMP unreachable; faster than the connect scan "
        "and no connection is made", ("scan",), switch=True, default=False, toml=False),
    Opt("retries", ("--retries",), "probes again a port that did not answer, N times, "
        "before it is filtered (default %(default)s)", ("scan",), default=1, metavar="N",
        arg_type=whole_number, check=config.check_retries, toml=False),
    Opt("timeout", ("--timeout",), "seconds to wait for each answer (default "
        "%(default)s); a later one is counted late", _PROBE, default=1.0, metavar="S",
        arg_type=finite_number, check=config.check_probe_timeout, toml=False, convert=_ns,
        field="timeout_ns"),
    Opt("rate", ("--rate",), "at most PPS probes per second in all, whatever the "
        "concurrency (token bucket; default %(default)s, as masscan; 0: no limit)", _PROBE,
        default=100.0, metavar="PPS", arg_type=finite_number, check=config.check_rate,
        toml=False),
    Opt("concurrency", ("--concurrency",), "at most N probes in flight (default "
        "%(default)s)", _PROBE, default=256, metavar="N", arg_type=whole_number,
        check=config.check_concurrency, toml=False),
    Opt("max_targets", ("--max-targets",), "allow up to N addresses (default "
        "%(default)s); a range or a run with more is refused", _PROBE, default=1024,
        metavar="N", arg_type=whole_number, check=config.check_max_targets, toml=False),
    Opt("dry_run", ("--dry-run",), "print the resolved targets and the probe count, and "
        "send nothing", _PROBE, switch=True, default=False, toml=False),
    # --- top's own --------------------------------------------------------------------
    Opt("rows", ("--rows",), "rows per table when not on a terminal (default %(default)s)",
        ("top",), default=25, metavar="N", arg_type=whole_number, toml=False),
    Opt("plain", ("--plain",), "plain-text tables even on a terminal", ("top",),
        switch=True, default=False, toml=False),
    Opt("numeric", ("-n", "--numeric"), "show port numbers only, not service names from "
        "/etc/services (443, not 443/https), as tcpdump -n", ("top",), switch=True,
        default=False, toml=False),
    Opt("bits", ("-b", "--bits"), "rates in bits per second (b/s, kb/s, Mb/s, Gb/s; "
        "decimal), as iftop; totals stay in bytes", ("top",), switch=True, default=False,
        toml=False),
    Opt("bytes", ("-B", "--bytes"), "rates in bytes per second (B/s, kB/s, MB/s, GB/s; "
        "decimal: 1 kB = 1000 bytes), the default", ("top",), switch=True, default=False,
        toml=False),
    Opt("sort", ("--sort",), "the order of the rows: rate, total, port, rtt (TCP RTT "
        "p95, highest first) or retrans (retransmitted %% of data segments); keys change "
        "it on a terminal (default %(default)s)", ("top",), default="rate",
        choices=("rate", "total", "port", "rtt", "retrans"), toml=False),
    Opt("expire", ("--expire",), "a row without traffic for N windows leaves the table "
        "(default: a minute's worth of windows; 0 keeps every row)", ("top",),
        metavar="N", arg_type=whole_number, toml=False),
    # --- top's and plot's -------------------------------------------------------------
    Opt("no_fold", ("--no-fold",), "show every port of the ephemeral (client) range "
        "on its own; by default they are summed into one row per protocol and "
        "direction named ephemeral (the range is the system's ip_local_port_range, "
        "else 32768-60999; --ports ones stay apart)", ("top", "plot"), switch=True,
        default=False, toml=False),
)
BY_KEY = {opt.key: opt for opt in OPTIONS}
# Keys of the config file, with their checks (values in command-line form).
CONFIG_OPTS = {opt.key: opt for opt in OPTIONS if opt.toml}


class _Repeatable(argparse.Action):
    """action='append', except that the first use replaces a default from the config
    file (a tuple) instead of adding to it: the command line overrides the file."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, (items if isinstance(items, list) else []) + [values])


def for_command(command: str) -> list[Opt]:
    return [opt for opt in OPTIONS if command in opt.commands]


def add_arguments(parser: argparse.ArgumentParser, command: str,
                  config_defaults: dict | None = None) -> None:
    """The options of `command`, with the config file's settings as defaults."""
    for opt in for_command(command):
        if not opt.cli:
            parser.set_defaults(**{opt.attr: opt.default})
            continue
        kwargs: dict = {"help": opt.help}
        if opt.switch:
            kwargs.update(action="store_false" if opt.off else "store_true")
        else:
            kwargs.update(metavar=opt.metavar, default=opt.default)
            if opt.arg_type is not None:
                kwargs["type"] = opt.arg_type
            if opt.choices is not None:
                kwargs["choices"] = opt.choices
            if opt.repeat:
                kwargs["action"] = _Repeatable
            if opt.nargs is not None:
                kwargs["nargs"] = opt.nargs
        if opt.flags:
            parser.add_argument(*opt.flags, dest=opt.attr, **kwargs)
        else:
            kwargs.pop("default", None)
            parser.add_argument(opt.attr, **kwargs)
    if config_defaults:
        known = {opt.attr for opt in for_command(command)}
        parser.set_defaults(**{k: v for k, v in config_defaults.items() if k in known})


def given(args: argparse.Namespace, command: str, keys) -> list[str]:
    """The flags among `keys` given on the command line: whose value differs from
    the parser's default (the table's, or the config file's: ``args.defaults``,
    set by the command line's main)."""
    defaults = getattr(args, "defaults", {})
    out = []
    for key in keys:
        opt = BY_KEY[key]
        if command not in opt.commands:
            continue
        value = getattr(args, opt.attr)
        if value not in (defaults.get(opt.attr, opt.default), None, [], ()):
            out.append(opt.name)
    return out


def checked(opt: Opt, value):
    """`value` through the option's check; raises ConfigError naming the flag."""
    if opt.check is None or value is None:
        return value
    try:
        return opt.check(value)
    except _Bad as bad:
        raise ConfigError(f"{opt.name} {bad}") from None


_classes: dict[str, type] = {}


def options_class(command: str) -> type:
    """The frozen dataclass of `command`'s options (fields from the table)."""
    if command not in _classes:
        fields = []
        for opt in for_command(command):
            if opt.key == "config":
                continue
            default = opt.default
            if opt.convert is not None and (default is not None or opt.repeat):
                default = opt.convert(default)
            fields.append((opt.out, Any, dataclasses.field(default=default)))
        name = f"{command.capitalize()}Options"
        _classes[command] = dataclasses.make_dataclass(name, fields, frozen=True)
    return _classes[command]


def build(command: str, args: argparse.Namespace, **overrides):
    """`command`'s options dataclass from parsed arguments: each value checked and
    converted. Raises ConfigError naming the option at fault."""
    values = {}
    for opt in for_command(command):
        if opt.key == "config":
            continue
        value = checked(opt, getattr(args, opt.attr))
        values[opt.out] = opt.convert(value) if opt.convert is not None and (
            value is not None or opt.repeat) else value
    values.update(overrides)
    return options_class(command)(**values)
