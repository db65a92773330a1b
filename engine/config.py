"""Options as frozen dataclasses, and parsing of the small languages in them (--ports)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import ConfigError


@dataclass(frozen=True)
class PortSpec:
    """A set of ports from text like ``22,80,443,8000-8100``; empty text = all ports."""

    text: str
    mask: np.ndarray = field(repr=False, compare=False)

    @classmethod
    def parse(cls, text: str | None) -> PortSpec | None:
        """Parse a port list; None or '' selects every port.

        Raises ConfigError naming the bad element.
        """
        if text is None or not text.strip():
            return None
        mask = np.zeros(65536, dtype=bool)
        for part in text.split(","):
            item = part.strip()
            if not item:
                raise ConfigError(f"--ports {text!r}: empty element")
            lo_text, sep, hi_text = item.partition("-")
            lo = _port(lo_text, text)
            hi = _port(hi_text, text) if sep else lo
            if hi < lo:
                raise ConfigError(f"--ports {text!r}: range {item!r} runs backwards")
            mask[lo:hi + 1] = True
        return cls(text=text, mask=mask)


def _port(word: str, spec: str) -> int:
    word = word.strip()
    if not word.isdigit() or int(word) > 65535:
        raise ConfigError(f"--ports {spec!r}: {word!r} is not a port number (0-65535)")
    return int(word)


def parse_interval(text: str | float) -> int:
    """Seconds (e.g. '1', '0.5') -> whole nanoseconds; raises ConfigError."""
    try:
        seconds = float(text)
    except ValueError:
        raise ConfigError(f"--interval {text!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0.001 or seconds > 86400:
        raise ConfigError(f"--interval {text!r} must be between 0.001 and 86400 seconds")
    return round(seconds * 1_000_000_000)


@dataclass(frozen=True)
class Output:
    """Where and how the stream goes: kind is 'stdout', 'file' or 'unix'."""

    kind: str
    path: str | None
    format: str = "msgpack"

    @classmethod
    def parse(cls, dest: str | None, fmt: str) -> Output:
        """'-' or None = stdout, 'unix:/path' = UNIX socket, else a file path."""
        if fmt not in ("msgpack", "json"):
            raise ConfigError(f"--format {fmt!r}: choose msgpack or json")
        if dest in (None, "", "-"):
            return cls("stdout", None, fmt)
        if dest.startswith("unix:"):
            path = dest[5:]
            if not path:
                raise ConfigError("--output unix: needs a socket path, as in unix:/run/pt.sock")
            return cls("unix", path, fmt)
        return cls("file", dest, fmt)


@dataclass(frozen=True)
class ReadOptions:
    """Everything `pt-engine read` needs."""

    files: tuple[str, ...]
    interval_ns: int = 1_000_000_000
    bpf: str | None = None
    ports: PortSpec | None = None
    output: Output = Output("stdout", None)
    slot_records: int = 32768
    slots: int = 4


@dataclass(frozen=True)
class RunOptions:
    """Everything `pt-engine run` needs."""

    interfaces: tuple[str, ...]
    workers: int = 1
    interval_ns: int = 1_000_000_000
    bpf: str | None = None
    ports: PortSpec | None = None
    output: Output = Output("stdout", None)
    snaplen: int = 256
    buffer_bytes: int = 0
    duration: float | None = None
    user: str | None = None
    socket_mode: int = 0o600
    socket_group: str | None = None
    subscriber_buffer: int = 16 << 20
    slot_records: int = 32768
    slots: int = 8


def parse_socket_mode(text: str) -> int:
    """Octal permission bits such as '0660'; raises ConfigError."""
    try:
        mode = int(text, 8)
    except ValueError:
        raise ConfigError(f"--socket-mode {text!r} is not an octal mode such as 0660") from None
    if not 0 <= mode <= 0o777:
        raise ConfigError(f"--socket-mode {text!r} must be between 000 and 777")
    return mode
