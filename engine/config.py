"""Options as frozen dataclasses, parsing of the small languages in them (--ports,
--alert), and the TOML config file (load_config), whose errors name the key and
its line.

Checks shared by the command line and the config file raise ``_Bad`` with the
problem phrased to follow the value's name; the caller adds the name (``--workers``
or ``config.toml line 3: workers``) and raises ConfigError.
"""
from __future__ import annotations

import grp
import math
import os
import stat
import pwd
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy

from .analysers import tcp_quality as _quality
from .errors import ConfigError
from .records import PROTO_NAMES


class _Bad(ValueError):
    """A bad value; the message follows the value's name. Never leaves this module."""


@dataclass(frozen=True)
class PortSpec:
    """A set of ports from text like ``22,80,443,8000-8100``; empty text = all ports."""

    text: str
    mask: numpy.ndarray = field(repr=False, compare=False)   # bool[65536]

    @classmethod
    def parse(cls, text: str | None) -> PortSpec | None:
        """Parse a port list; None or '' selects every port.

        Raises ConfigError naming the bad element.
        """
        if text is None or not text.strip():
            return None
        try:
            return cls(text=text, mask=_port_mask(text))
        except _Bad as bad:
            raise ConfigError(f"--ports {bad}") from None


def _port_ranges(text: str) -> list[tuple[int, int]]:
    """The inclusive (low, high) ranges of a port list, as written; raises _Bad."""
    ranges = []
    for part in text.split(","):
        item = part.strip()
        if not item:
            raise _Bad(f"{text!r}: empty element")
        if not item[:1].isdigit():       # a name from /etc/services: ssh, https, http-alt
            lo = hi = _service(item, text)
        else:
            lo_text, sep, hi_text = item.partition("-")
            lo = _port(lo_text, text)
            hi = _port(hi_text, text) if sep else lo
            if hi < lo:
                raise _Bad(f"{text!r}: range {item!r} runs backwards")
        ranges.append((lo, hi))
    return ranges


def _port_mask(text: str) -> numpy.ndarray:
    import numpy as np
    mask = np.zeros(65536, dtype=bool)
    for lo, hi in _port_ranges(text):
        mask[lo:hi + 1] = True
    return mask


MAX_SECONDS = 366 * 86400     # --duration, --subscriber-wait: at most a year


def _digits(word) -> bool:
    """ASCII decimal digits only: str.isdigit() and int() also take other scripts'
    digits ('٣٣' would be port 33)."""
    return isinstance(word, str) and word.isascii() and word.isdigit()


def finite_number(text: str) -> float:
    """An argparse type: a finite number written in ASCII (not 'nan', '1e400' or
    other scripts' digits, which float() takes); raises ArgumentTypeError."""
    import argparse
    try:
        value = float(text) if text.isascii() else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def whole_number(text: str) -> int:
    """An argparse type: an ASCII whole number; raises ArgumentTypeError."""
    import argparse
    stripped = text.strip()
    if not _digits(stripped.removeprefix("-")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(stripped)


def _service(name: str, spec: str) -> int:
    """The port of a service name (/etc/services, TCP or else UDP)."""
    import socket
    for proto in ("tcp", "udp"):
        try:
            return socket.getservbyname(name, proto)
        except OSError:
            continue
    raise _Bad(f"{spec!r}: {name!r} is neither a port number (0-65535) nor a service "
               "name known to /etc/services")


def _port(word: str, spec: str) -> int:
    word = word.strip()
    if not _digits(word) or int(word) > 65535:
        raise _Bad(f"{spec!r}: {word!r} is not a port number (0-65535)")
    return int(word)




def _interval_ns(value: str | float) -> int:
    try:
        if isinstance(value, bool) or (isinstance(value, str) and not value.isascii()):
            raise ValueError
        seconds = float(value)
    except (TypeError, ValueError):
        raise _Bad(f"{value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0.001 or seconds > 86400:
        raise _Bad(f"{value!r} must be between 0.001 and 86400 seconds")
    return round(seconds * 1_000_000_000)




def _socket_mode(text: str) -> int:
    try:
        if not _digits(text):
            raise ValueError
        mode = int(text, 8)
    except (TypeError, ValueError):
        raise _Bad(f"{text!r} is not an octal mode such as 0660 (a string)") from None
    if not 0 <= mode <= 0o777:
        raise _Bad(f"{text!r} must be between 000 and 777")
    return mode


# --- checks shared by the command line and the config file -----------------------

def _integer(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad(f"{value!r} is not a whole number")
    return value


def _number(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _Bad(f"{value!r} is not a number")
    return value


def check_switch(value) -> bool:
    """An on/off setting: true or false (in the config file; the flag gives True)."""
    if not isinstance(value, bool):
        raise _Bad(f"{value!r} is not true or false")
    return value


def _text(value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"{value!r} is not a non-empty string")
    return value


def _choice(*choices: str):
    def check(value) -> str:
        if not isinstance(value, str) or value not in choices:
            raise _Bad(f"{value!r} is not one of {', '.join(choices)}")
        return value
    return check


def _workers(value) -> int:
    if not 1 <= _integer(value) <= 64:
        raise _Bad(f"{value}: choose 1 to 64")
    return value


def _snaplen(value) -> int:
    if not 0 <= _integer(value) <= 262144:
        raise _Bad(f"{value}: choose 0 (whole packets) to 262144")
    if 0 < value < 64:
        raise _Bad(f"{value} is too short for the headers; use >= 64")
    return value


def _buffer(value) -> float:
    if not 0 <= _number(value) <= 4096:
        raise _Bad(f"{value}: choose 0 to 4096 MiB")
    return value


def _subscriber_buffer(value) -> float:
    if not 0 < _number(value) <= 4096:
        raise _Bad(f"{value}: choose up to 4096 MiB")
    return value


def _alert_timeout(value) -> float:
    if not 0 < _number(value) <= 3600:
        raise _Bad(f"{value}: choose more than 0 and at most 3600 seconds")
    return value


def _alert_hooks(value) -> int:
    if not 1 <= _integer(value) <= 64:
        raise _Bad(f"{value}: choose 1 to 64")
    return value


# --- ping and scan ---------------------------------------------------------------------

def port_list(text: str, flag: str) -> list[int]:
    """The ports of a --ports / --tcp spec for probing (22,80,https,8000-8100), in
    ascending order; port 0 cannot be connected to. Raises ConfigError naming `flag`."""
    try:
        ranges = _port_ranges(text)
    except _Bad as bad:
        raise ConfigError(f"{flag} {bad}") from None
    if any(lo == 0 for lo, _ in ranges):
        raise ConfigError(f"{flag} {text!r}: port 0 cannot be probed; ports are 1-65535")
    return sorted(set().union(*(range(lo, hi + 1) for lo, hi in ranges)))


def _probe_ports(value) -> str:
    _port_ranges(_text(value))       # without numpy: a probe run starts quickly
    return value


def _bounded(low: float, high: float, unit: str, low_open: bool = False):
    def check(value):
        number = _number(value)
        if number < low or number > high or (low_open and number == low):
            raise _Bad(f"{value:g}: choose {'more than' if low_open else 'from'} {low:g} "
                       f"{'and at most' if low_open else 'to'} {high:g}{unit}")
        return value
    return check


check_probe_ports = _probe_ports
check_count = _bounded(0, 10_000_000, "")
check_probe_interval = _bounded(0, 3600, " seconds")
check_probe_timeout = _bounded(0, 60, " seconds", low_open=True)
check_rate = _bounded(0, 10_000_000, " probes per second (0: no limit)")
check_concurrency = _bounded(1, 65536, "")
check_retries = _bounded(0, 10, "")
check_size = _bounded(0, 65000, " bytes")
check_rounds = _bounded(1, 1_000_000, " rounds")
check_max_targets = _bounded(1, 1 << 24, " addresses")


# --- alert rules ---------------------------------------------------------------------

ALERT_PROTOS = (*PROTO_NAMES, "*")
DIRECTIONS = ("in", "out", "both")
RATE_METRICS = ("bytes_per_s", "packets_per_s")
# TCP quality figures over a window's tcp_quality rows (docs/quality-rules.md).
QUALITY_METRICS = tuple(_quality.METRICS)
METRICS = RATE_METRICS + QUALITY_METRICS
SCOPES = ("port", "sum")
ALERT_SYNTAX = ("PROTO:PORTS:DIRECTION:METRIC>LIMIT (or <LIMIT)"
                "[:for=N][:clear=R][:scope=port|sum][:name=NAME]")
# A '<' rule of scope port watches every port it names, seen or not.
MAX_BELOW_PORTS = 1024
_SI = (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3))


def si(value: float) -> str:
    """A rate with the largest suffix that keeps it at least 1: 12500000 -> '12.5M'."""
    for suffix, scale in _SI:
        if abs(value) >= scale:
            return f"{value / scale:.6g}{suffix}"
    return f"{value:.6g}"


class _Threshold:
    """What every rule shares: `limit`, `op`, `for_windows`, `clear_ratio`."""

    @property
    def below(self) -> bool:
        """A rule for a value that falls too low (``<``)."""
        return self.op == "<"

    def violated(self, value: float) -> bool:
        """The value is past the limit (strictly)."""
        return value < self.limit if self.below else value > self.limit

    def cleared(self, value: float) -> bool:
        """The value is back on the right side of the clear level: under
        limit * clear_ratio for ``>``, over limit / clear_ratio for ``<``."""
        return value > self.clear_level if self.below else value < self.clear_level

    @property
    def clear_level(self) -> float:
        return self.limit / self.clear_ratio if self.below else self.limit * self.clear_ratio


@dataclass(frozen=True)
class AlertRule(_Threshold):
    """A threshold on the stream's per-port rates (README, "Alerts and config").

    `ports` is ``*``, a port (``443``) or a range (``8000-8100``); `proto` a
    protocol name or ``*``; `direction` in, out or both (their sum); `metric`
    bytes_per_s or packets_per_s, or a TCP quality figure (QUALITY_METRICS:
    TCP only, ``>`` only, over the window's merged quality rows). Scope
    ``port`` checks each matching (proto, port) row on its own, ``sum`` the
    sum over all of them. The rule fires when the rate is over `limit` for
    `for_windows` windows in a row, and resolves when it stays under
    ``limit * clear_ratio`` as many windows.
    """

    name: str
    ports: str
    proto: str
    direction: str
    metric: str
    limit: float
    for_windows: int = 1
    clear_ratio: float = 0.8
    scope: str = "port"
    op: str = ">"             # "<": alert when the rate falls below the limit

    @property
    def quality(self) -> bool:
        """A rule on a TCP quality figure rather than a rate."""
        return self.metric in QUALITY_METRICS

    @property
    def port_range(self) -> tuple[int, int]:
        """The ports as an inclusive (low, high) pair."""
        if self.ports == "*":
            return 0, 65535
        lo, _, hi = self.ports.partition("-")
        return int(lo), int(hi or lo)

    def text(self) -> str:
        """The rule in --alert syntax, without its name (a config-file rule's default name)."""
        parts = [f"{self.proto}:{self.ports}:{self.direction}:{self.metric}{self.op}"
                 f"{si(self.limit)}"]
        if self.for_windows != 1:
            parts.append(f"for={self.for_windows}")
        if self.clear_ratio != 0.8:
            parts.append(f"clear={self.clear_ratio:g}")
        if self.scope != "port":
            parts.append(f"scope={self.scope}")
        return ":".join(parts)


# ping metric -> (ping record field, factor to the rule's unit)
PING_METRICS = {"loss_ratio": ("loss_ratio", 1.0), "rtt_ms": ("rtt_avg_ns", 1e-6),
                "rtt_min_ms": ("rtt_min_ns", 1e-6), "rtt_max_ms": ("rtt_max_ns", 1e-6),
                "rtt_p50_ms": ("rtt_p50_ns", 1e-6), "rtt_p95_ms": ("rtt_p95_ns", 1e-6),
                "jitter_ms": ("jitter_ns", 1e-6)}
PING_ALERT_SYNTAX = "ping:TARGET:METRIC>LIMIT (or <LIMIT)[:for=N][:clear=R][:name=NAME]"


@dataclass(frozen=True)
class PingRule(_Threshold):
    """A threshold on `pt-engine ping`'s windows (README, "Active probing").

    `target` is ``*``, an address or a range (``192.0.2.0/24``): the rule keeps
    a state per matching (target, port). `metric` is a PING_METRICS name:
    loss_ratio (0 to 1) or an RTT or jitter figure in ms. It fires when past
    `limit` for `for_windows` ping windows in a row and resolves when back past
    the clear level as many windows in a row. A window without replies has no
    RTT or jitter: it leaves such a rule's state as it is.
    """

    name: str
    target: str
    metric: str
    limit: float
    for_windows: int = 1
    clear_ratio: float = 0.8
    op: str = ">"

    def matches(self, target: str) -> bool:
        """The rule watches this target address (text)."""
        if self.target == "*":
            return True
        import ipaddress
        return ipaddress.ip_address(target) in ipaddress.ip_network(self.target,
                                                                   strict=False)

    def text(self) -> str:
        """The rule in --alert syntax, without its name (a config-file rule's default name)."""
        parts = [f"ping:{self.target}:{self.metric}{self.op}{self.limit:g}"]
        if self.for_windows != 1:
            parts.append(f"for={self.for_windows}")
        if self.clear_ratio != 0.8:
            parts.append(f"clear={self.clear_ratio:g}")
        return ":".join(parts)

    def value(self, record: dict) -> float | None:
        """The metric of a ping record in the rule's unit (None: no RTT in it)."""
        key, factor = PING_METRICS[self.metric]
        raw = record.get(key)
        return None if raw is None else raw * factor


def _ping_target(value) -> str:
    import ipaddress
    text = _text(value).strip().strip("[]")
    if text == "*":
        return text
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise _Bad(f"{value!r} is not *, an address or a range such as "
                   f"192.0.2.0/24") from None


def _ping_limit(value) -> float:
    if value in (0, "0"):
        return 0.0
    return _limit(value)


def _rule_options(text: str, options: list[str], allowed: tuple[str, ...],
                  raw: dict) -> dict:
    """The :word=value options of a rule into `raw` (by field); returns the word
    each field was given as. Raises ConfigError for an unknown option."""
    labels = {}
    for option in options:
        word, eq, value = option.partition("=")
        if not eq or word not in allowed:
            listed = ", ".join({"for": "for=N", "clear": "clear=R", "name": "name=NAME",
                                "scope": "scope=port|sum"}[w] for w in allowed)
            raise ConfigError(f"--alert {text!r}: unknown option {option!r}; the options are "
                              f"{listed}")
        key = _ALERT_OPTIONS[word]
        raw[key] = _from_text(value) if word in ("for", "clear") else value
        labels[key] = word
    return labels


def _checked_fields(text: str, raw: dict, labels: dict, checks: dict) -> dict:
    checked = {}
    for key, value in raw.items():
        try:
            checked[key] = checks[key](value)
        except _Bad as bad:
            raise ConfigError(f"--alert {text!r}: {labels.get(key, key)}: {bad}") from None
    checked.setdefault("name", text)
    return checked


def parse_ping_alert(text: str, at: int) -> PingRule:
    """A ``ping:TARGET:METRIC>LIMIT[:options]`` rule (`at`: the operator's index).
    TARGET may be an IPv6 address: the metric is the last field before the operator."""
    target, _, metric = text[len("ping:"):at].rpartition(":")
    if not target or not metric:
        raise ConfigError(f"--alert {text!r}: write a ping rule as {PING_ALERT_SYNTAX}")
    limit, *options = text[at + 1:].split(":")
    raw = {"target": target, "metric": metric, "limit": limit, "op": text[at]}
    labels = _rule_options(text, options, ("for", "clear", "name"), raw)
    return PingRule(**_checked_fields(text, raw, labels, _PING_FIELDS))


def _rule_ports(value) -> str:
    text = value.strip() if isinstance(value, str) else value
    if text == "*":
        return text
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    lo, sep, hi = text.partition("-") if isinstance(text, str) else ("", "", "")
    hi = hi if sep else lo
    if not (_digits(lo) and _digits(hi) and int(lo) <= int(hi) <= 65535):
        raise _Bad(f"{value!r} is not a port, a range such as 8000-8100, or *")
    return f"{int(lo)}-{int(hi)}" if sep else str(int(lo))


def _limit(value) -> float:
    number = value
    if isinstance(value, str):
        text = value.strip()
        scale = dict((s.lower(), x) for s, x in _SI).get(text[-1:].lower())
        try:
            number = float(text[:-1]) * scale if scale else float(text)
        except ValueError:
            number = None
    if (isinstance(number, bool) or not isinstance(number, (int, float))
            or not math.isfinite(number) or number <= 0):
        raise _Bad(f"{value!r} is not a positive number (suffixes k, M, G, T allowed)")
    return float(number)


def _for_windows(value) -> int:
    if _integer(value) < 1:
        raise _Bad(f"{value}: must be 1 or more windows")
    return value


def _clear_ratio(value) -> float:
    if not 0 < _number(value) <= 1:
        raise _Bad(f"{value!r} must be more than 0 and at most 1")
    return float(value)


_RULE_FIELDS = {"name": _text, "ports": _rule_ports, "proto": _choice(*ALERT_PROTOS),
                "direction": _choice(*DIRECTIONS), "metric": _choice(*METRICS),
                "limit": _limit, "for_windows": _for_windows, "clear_ratio": _clear_ratio,
                "scope": _choice(*SCOPES), "op": _choice(">", "<")}
_RULE_DEFAULTS = {"ports": "*", "proto": "*", "direction": "both"}
_ALERT_OPTIONS = {"for": "for_windows", "clear": "clear_ratio", "scope": "scope", "name": "name"}


_PING_FIELDS = {"name": _text, "target": _ping_target,
                "metric": _choice(*PING_METRICS), "limit": _ping_limit,
                "for_windows": _for_windows, "clear_ratio": _clear_ratio,
                "op": _choice(">", "<")}


def _ping_rule(checked: dict) -> PingRule:
    """A PingRule from checked fields (a config table); raises _Bad for a missing one."""
    for key in ("metric", "limit"):
        if key not in checked:
            raise _Bad(f"missing key {key!r}")
    rule = PingRule(**{"name": "", **checked})
    return rule if rule.name else replace(rule, name=rule.text())


def _rule(checked: dict) -> AlertRule:
    """An AlertRule from checked fields; raises _Bad for a missing one."""
    values = {**_RULE_DEFAULTS, **checked}
    for key in ("metric", "limit"):
        if key not in values:
            raise _Bad(f"missing key {key!r}")
    name = values.pop("name", None)
    rule = AlertRule(name="", **values)
    lo, hi = rule.port_range
    if rule.quality and (rule.proto not in ("tcp", "*") or rule.below):
        raise _Bad(f"{rule.metric} is a TCP figure: give proto tcp (or *) and a '>' limit")
    if rule.below and rule.scope == "port" and (rule.proto == "*" or hi - lo >= MAX_BELOW_PORTS):
        raise _Bad(f"a '<' rule watches each port it names, also one without traffic: give "
                   f"a protocol and at most {MAX_BELOW_PORTS} ports, or scope=sum")
    return replace(rule, name=name or rule.text())


def _from_text(word: str):
    """'3' -> 3, '0.5' -> 0.5, anything else unchanged (for the checks to reject)."""
    for kind in (int, float):
        try:
            return kind(word)
        except ValueError:
            pass
    return word


def parse_alert(text: str) -> AlertRule | PingRule:
    """A rule in --alert syntax, e.g. ``tcp:443:in:bytes_per_s>10M:for=3`` or
    ``ping:*:rtt_ms>50:for=3`` (named so unless it has a name= option).

    Raises ConfigError naming the rule and the part at fault.
    """
    at = min((i for i in (text.find(">"), text.find("<")) if i >= 0), default=-1)
    if text.startswith("ping:") and at >= 0:
        return parse_ping_alert(text, at)
    head, sep, tail = (text[:at], text[at], text[at + 1:]) if at >= 0 else (text, "", "")
    positional = head.split(":")
    if not sep or len(positional) != 4:
        raise ConfigError(f"--alert {text!r}: write it as {ALERT_SYNTAX}, or for ping "
                          f"{PING_ALERT_SYNTAX}")
    limit, *options = tail.split(":")
    raw = dict(zip(("proto", "ports", "direction", "metric"), positional), limit=limit, op=sep)
    labels = _rule_options(text, options, ("for", "clear", "scope", "name"), raw)
    checked = _checked_fields(text, raw, labels, _RULE_FIELDS)
    try:
        return _rule(checked)
    except _Bad as bad:
        raise ConfigError(f"--alert {text!r}: {bad}") from None


def parse_alerts(texts) -> tuple[AlertRule | PingRule, ...]:
    """Rules from --alert texts; raises ConfigError for a bad rule or a name used twice."""
    rules: dict[str, AlertRule | PingRule] = {}
    for text in texts:
        rule = parse_alert(text)
        if rule.name in rules:
            raise ConfigError(f"--alert {text!r}: another rule is named {rule.name!r}")
        rules[rule.name] = rule
    return tuple(rules.values())


# --- the config file -------------------------------------------------------------------

def _interfaces(value) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise _Bad(f"{value!r} is not an interface name or a list of them")
    return tuple(_text(item) for item in items)


def _ports_text(value) -> str:
    items = value if isinstance(value, list) else [value]
    if not items or any(isinstance(i, bool) or not isinstance(i, (int, str)) for i in items):
        raise _Bad(f"{value!r} is not a port list such as \"22,80,8000-8100\"")
    text = ",".join(str(item) for item in items)
    _port_mask(text)
    return text


def _interval(value):
    _interval_ns(value)
    return value


def _output_dest(value) -> str:
    if _text(value) == "unix:":
        raise _Bad("'unix:' needs a socket path, as in unix:/run/pt.sock")
    return value


def _socket_mode_text(value) -> str:
    _socket_mode(value)
    return value


def _user(value) -> str:
    try:
        pwd.getpwnam(_text(value))
    except KeyError:
        raise _Bad(f"{value!r}: no such user") from None
    return value


def _group(value) -> str:
    try:
        grp.getgrnam(_text(value))
    except KeyError:
        raise _Bad(f"{value!r}: no such group") from None
    return value


def _names(value) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise _Bad(f"{value!r} is not a name or a list of names")
    return tuple(_text(item) for item in items)


def _outputs(value) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise _Bad(f"{value!r} is not a destination or a list of them")
    return [_output_dest(item) for item in items]


def _duration(value) -> float:
    if not 0 < _number(value) <= MAX_SECONDS:
        raise _Bad(f"{value:g}: choose more than 0 and at most {MAX_SECONDS} seconds (a year)")
    return value


def _wait(value) -> float:
    if not 0 <= _number(value) <= MAX_SECONDS:
        raise _Bad(f"{value:g}: choose 0 to {MAX_SECONDS} seconds")
    return value


def _max_size(value) -> float:
    if not 0 < _number(value) <= 1 << 20:
        raise _Bad(f"{value}: choose more than 0 and up to 1048576 MiB")
    return value


def _keep(value) -> int:
    if not 0 <= _integer(value) <= 1000:
        raise _Bad(f"{value}: choose 0 to 1000")
    return value


# The checks of the option table (pt_engine.options): each takes a value in
# command-line form, or as the config file writes it, and returns it in
# command-line form; raises _Bad.
check_interfaces, check_workers, check_snaplen, check_buffer = (
    _interfaces, _workers, _snaplen, _buffer)
check_duration, check_user, check_interval, check_text = _duration, _user, _interval, _text
check_ports, check_names, check_outputs = _ports_text, _names, _outputs
check_format = _choice("msgpack", "json")
check_mib, check_socket_mode, check_group = _subscriber_buffer, _socket_mode_text, _group
check_wait, check_max_size, check_keep = _wait, _max_size, _keep
check_alert_timeout, check_alert_hooks = _alert_timeout, _alert_hooks


def interval_ns(value) -> int:
    """A checked --interval (seconds, text or number) in whole nanoseconds."""
    return _interval_ns(value)


def socket_mode(text: str) -> int:
    """A checked --socket-mode (octal text) as permission bits."""
    return _socket_mode(text)


@dataclass(frozen=True)
class ConfigFile:
    """The settings of a config file, checked: option key -> value in command-line
    form (``interval`` in seconds, ``ports`` and ``socket_mode`` as text,
    ``buffer`` in MiB), so that they can stand in for the command line's
    defaults (``defaults``); ``alerts`` holds the [[alert]] rules."""

    path: str
    values: dict = field(default_factory=dict)

    def get(self, key: str):
        """A setting, or None if the file does not make it."""
        return self.values.get(key)

    @property
    def alerts(self) -> tuple[AlertRule, ...] | None:
        """The [[alert]] rules, or None if the file has none."""
        return self.values.get("alerts")

    def defaults(self) -> dict:
        """The settings made, keyed by argparse destination (``filter`` -> ``bpf``).

        List values (interfaces, alerts) are tuples: a repeatable option given
        on the command line replaces them rather than adding to them.
        """
        from .options import BY_KEY
        out = {}
        for key, value in self.values.items():
            if key == "alerts":
                out["alerts"] = value
            else:
                out[BY_KEY[key].attr] = tuple(value) if isinstance(value, list) else value
        return out


def config_path(explicit: str | None) -> str | None:
    """The config file to read: `explicit` (--config), else $PT_ENGINE_CONFIG, else the
    first that exists of $XDG_CONFIG_HOME/pt-engine/config.toml (~/.config by default)
    and /etc/pt-engine/config.toml; None if there is none."""
    if explicit:
        return explicit
    if os.environ.get("PT_ENGINE_CONFIG"):
        return os.environ["PT_ENGINE_CONFIG"]
    home = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    for candidate in (os.path.join(home, "pt-engine", "config.toml"),
                      "/etc/pt-engine/config.toml"):
        if os.path.isfile(candidate):
            return candidate
    return None


MAX_CONFIG_BYTES = 1 << 20


def _read_config_bytes(path: str) -> bytes:
    """The file's bytes: a regular file of at most MAX_CONFIG_BYTES (or /dev/null).

    Never blocks (a FIFO is refused, not waited on) and never reads without end
    (/dev/zero). As root, a file that anyone but root may change is refused, as
    sshd refuses such key files: its on_alert commands would run as root.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise ConfigError(f"config file {path}: {err.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if path == os.devnull or (stat.S_ISCHR(st.st_mode) and
                                  os.path.realpath(path) == os.devnull):
            return b""
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"config file {path}: not a regular file")
        if os.geteuid() == 0 and (st.st_uid != 0 or st.st_mode & 0o022):
            raise ConfigError(f"config file {path}: writable by a user other than root "
                              f"(owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}); "
                              "running as root, pt-engine reads only a config file that "
                              "only root can change (chown root, chmod go-w)")
        try:
            data = fh.read(MAX_CONFIG_BYTES + 1)
        except OSError as err:
            raise ConfigError(f"config file {path}: {err.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path}: larger than {MAX_CONFIG_BYTES >> 20} MiB")
    return data


def load_config(path: str) -> ConfigFile:
    """Read and check a TOML config file.

    Raises ConfigError naming the file: it cannot be read, it is not TOML
    (tomllib's message, with line and column), or a key is unknown or its value
    bad (naming the key, as ``alert[2].metric`` for the second [[alert]] table,
    and its line).
    """
    try:
        text = _read_config_bytes(path).decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path}: not UTF-8 text ({err.reason} at byte "
                          f"{err.start})") from None
    import tomllib     # here: a run without a config file never needs the parser
    try:
        data = tomllib.loads(text)
        lines = _key_lines(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path}: {err}") from None
    except RecursionError:
        raise ConfigError(f"config file {path}: tables or arrays nested too deeply") from None

    def fail(where: tuple, problem: str) -> ConfigError:
        line = _line_of(lines, where)
        label = ".".join(f"{p}" if isinstance(p, str) else f"[{p}]" for p in where)
        place = f"{path} line {line}" if line else path
        return ConfigError(f"{place}: {label.replace('.[', '[')}: {problem}")

    from .options import CONFIG_OPTS
    values: dict = {}
    for key, value in data.items():
        if key == "alert":
            values["alerts"] = _alert_tables(value, fail)
        elif key in CONFIG_OPTS:
            try:
                values[key] = CONFIG_OPTS[key].check(value)
            except _Bad as bad:
                raise fail((key,), str(bad)) from None
        else:
            keys = sorted((*CONFIG_OPTS, "alert"))
            raise fail((key,), f"unknown key; the keys are {', '.join(keys)}")
    return ConfigFile(path, values)


def _alert_tables(value, fail) -> tuple[AlertRule | PingRule, ...]:
    """The [[alert]] tables: a rate or quality rule by its keys (_RULE_FIELDS), a ping
    rule by its keys (_PING_FIELDS: a table with ``target``), or either as its --alert
    text under ``rule`` (``rule = "ping:*:rtt_ms>50:for=3"``)."""
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise fail(("alert",), "write alert rules as [[alert]] tables")
    rules: dict[str, AlertRule | PingRule] = {}
    for number, table in enumerate(value, 1):
        if "rule" in table:
            rule = _text_rule(table, number, fail)
        else:
            ping = "target" in table
            fields = _PING_FIELDS if ping else _RULE_FIELDS
            checked = {}
            for key, item in table.items():
                if key not in fields:
                    kind = ("; a ping rule's (a table with target) are "
                            if ping else "; the keys are ")
                    raise fail(("alert", number, key),
                               f"unknown key{kind}{', '.join(fields)} (or rule alone)")
                try:
                    checked[key] = fields[key](item)
                except _Bad as bad:
                    raise fail(("alert", number, key), str(bad)) from None
            try:
                rule = _ping_rule(checked) if ping else _rule(checked)
            except _Bad as bad:
                raise fail(("alert", number), str(bad)) from None
        if rule.name in rules:
            raise fail(("alert", number, "name") if "name" in table else ("alert", number),
                       f"another rule is named {rule.name!r}")
        rules[rule.name] = rule
    return tuple(rules.values())


def _text_rule(table: dict, number: int, fail) -> AlertRule | PingRule:
    """An [[alert]] table ``rule = "TEXT"``: the --alert rule TEXT, checked as --alert
    checks it (its errors without the --alert prefix, at the key)."""
    others = sorted(set(table) - {"rule"})
    if others:
        raise fail(("alert", number, others[0]), "a table with rule has no other key: "
                   "give the options in the rule's text (:for=N:clear=R:name=NAME)")
    text = table["rule"]
    if not isinstance(text, str):
        raise fail(("alert", number, "rule"), f"{text!r} is not a rule text such as "
                   f"\"ping:*:loss_ratio>0.05\"")
    try:
        return parse_alert(text)
    except ConfigError as err:
        raise fail(("alert", number, "rule"),
                   str(err).removeprefix(f"--alert {text!r}: ")) from None


# --- where keys are in the file ----------------------------------------------------------
# tomllib gives values without positions, so the text of a file it accepted is
# scanned: table headers ([a], [[a]] counted per name), and `key =` at the start
# of a line that is not inside a multi-line string or a multi-line array or
# inline table. A key is recorded under its table's path, where the n-th [[a]]
# table is (a, n), n from 1.

def _key_lines(text: str) -> dict[tuple, int]:
    lines: dict[tuple, int] = {}
    counts: dict[tuple, int] = {}
    table: tuple = ()
    state = (None, 0)      # (open multi-line string delimiter, bracket depth)
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if state == (None, 0) and stripped and not stripped.startswith("#"):
            if stripped.startswith("["):
                array = stripped.startswith("[[")
                name = tuple(_split_key(stripped[2 if array else 1:_unquoted_index(stripped, "]")]))
                if array:
                    counts[name] = counts.get(name, 0) + 1
                table = _table_path(name, counts)
                lines.setdefault(table, number)
            else:
                key = stripped[:_unquoted_index(stripped, "=")]
                lines.setdefault(table + tuple(_split_key(key)), number)
        state = _scan(line, *state)
    return lines


def _line_of(lines: dict[tuple, int], where: tuple) -> int | None:
    """The line of `where`, else of the first key inside it, else of its nearest parent."""
    for n in range(len(where), 0, -1):
        prefix = where[:n]
        if prefix in lines:
            return lines[prefix]
        inside = [line for path, line in lines.items() if path[:n] == prefix]
        if inside:
            return min(inside)
    return None


def _table_path(name: tuple, counts: dict) -> tuple:
    """(a, b) -> (a, 3, b) when a is an array of tables seen three times so far."""
    path: tuple = ()
    for i in range(len(name)):
        path += (name[i],)
        if name[:i + 1] in counts:
            path += (counts[name[:i + 1]],)
    return path


def _unquoted_index(line: str, target: str) -> int:
    """Index of the first `target` character outside quotes (len(line) if none):
    a header's closing bracket, or the '=' after a key."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == target:
            return i
    return len(line)


def _split_key(key: str) -> list[str]:
    """'a."b.c" . d' -> ['a', 'b.c', 'd'] (escapes in quoted keys are kept as written)."""
    parts, current, quote = [], "", None
    for ch in key:
        if quote:
            if ch == quote:
                quote = None
            else:
                current += ch
        elif ch in "\"'":
            quote = ch
        elif ch == ".":
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    parts.append(current.strip())
    return parts


def _scan(line: str, string: str | None, depth: int) -> tuple[str | None, int]:
    """The multi-line string and bracket depth open after `line`."""
    i = 0
    while i < len(line):
        if string:
            if line.startswith(string, i) and (string == "'''" or line[i - 1:i] != "\\"):
                i += 3
                string = None
            else:
                i += 1
            continue
        ch = line[i]
        if ch == "#":
            break
        if line.startswith(('"""', "'''"), i):
            string = line[i:i + 3]
            i += 3
        elif ch in "\"'":
            end = i + 1
            while end < len(line) and line[end] != ch:
                end += 2 if ch == '"' and line[end] == "\\" else 1
            i = end + 1
        else:
            depth += (ch in "[{") - (ch in "]}")
            i += 1
    return string, depth
