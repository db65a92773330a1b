"""Address policy (--addresses): what an address looks like when it leaves the engine.

* ``pseudonymise`` (default): Crypto-PAn (yacryptopan), keyed and
  prefix-preserving: two addresses sharing an n-bit prefix map to two
  pseudonyms sharing an n-bit prefix, so subnets stay recognisable while the
  addresses do not. Chosen over ipcrypt's prefix-preserving mode because
  Crypto-PAn is the long-standing, published scheme (Xu et al., 2002) used by
  trace anonymisers, with a maintained pure-Python package on PyPI covering
  IPv4 and IPv6; ipcrypt's prefix-preserving mode had no maintained Python
  package here. The 32-byte key is created on first use in the state
  directory with mode 0600 and never written into the stream.
* ``truncate:V4,V6``: keep the first V4 (IPv4) and V6 (IPv6) bits, zero the rest.
* ``hash``: a keyed BLAKE2b of the address (same key file), 16 hex digits.
* ``clear``: the real addresses.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass

from .errors import ConfigError

KEY_FILE = "address-key"
POLICIES = ("pseudonymise", "truncate:V4,V6", "hash", "clear")


def state_dir() -> str:
    """$STATE_DIRECTORY (systemd), else /var/lib/pt-engine for root, else
    ~/.local/state/pt-engine."""
    if os.environ.get("STATE_DIRECTORY"):
        return os.environ["STATE_DIRECTORY"].split(":")[0]
    if os.geteuid() == 0:
        return "/var/lib/pt-engine"
    return os.path.join(os.path.expanduser("~"), ".local", "state", "pt-engine")


def load_key(directory: str) -> bytes:
    """The 32-byte key in `directory`, created (mode 0600) if missing; ConfigError."""
    path = os.path.join(directory, KEY_FILE)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            with open(path, "rb") as fh:
                key = fh.read()
            if len(key) != 32:
                raise ConfigError(f"address key {path}: {len(key)} bytes, not 32") from None
            return key
        key = os.urandom(32)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
        return key
    except OSError as err:
        raise ConfigError(f"address key {path}: {err.strerror}") from err


@dataclass(frozen=True)
class Policy:
    """A parsed --addresses value."""

    kind: str
    v4_bits: int = 32
    v6_bits: int = 128

    @property
    def text(self) -> str:
        if self.kind == "truncate":
            return f"truncate:{self.v4_bits},{self.v6_bits}"
        return self.kind

    @classmethod
    def parse(cls, text: str) -> Policy:
        """Raises ConfigError naming the value."""
        if text in ("pseudonymise", "hash", "clear"):
            return cls(text)
        if text.startswith("truncate:"):
            parts = text[len("truncate:"):].split(",")
            if len(parts) == 2 and all(p.isdigit() for p in parts):
                v4, v6 = int(parts[0]), int(parts[1])
                if v4 <= 32 and v6 <= 128:
                    return cls("truncate", v4, v6)
        raise ConfigError(f"--addresses {text!r}: choose {', '.join(POLICIES)} (V4 up to "
                          "32 bits, V6 up to 128)")

    def mapper(self, directory: str | None = None):
        """A function from a 16-byte record address (IPv4 as ::ffff:a.b.c.d) to its text."""
        if self.kind == "clear":
            return _text
        if self.kind == "truncate":
            return lambda raw: _truncate(raw, self.v4_bits, self.v6_bits)
        key = load_key(directory or state_dir())
        if self.kind == "hash":
            return lambda raw: hashlib.blake2b(raw, key=key, digest_size=8).hexdigest()
        from yacryptopan import CryptoPAn
        pan = CryptoPAn(key)
        return lambda raw: pan.anonymize(_text(raw))


def _address(raw: bytes):
    addr = ipaddress.IPv6Address(bytes(raw))
    return addr.ipv4_mapped or addr


def _text(raw: bytes) -> str:
    return str(_address(raw))


def _truncate(raw: bytes, v4: int, v6: int) -> str:
    addr = _address(raw)
    bits = v4 if addr.version == 4 else v6
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False).network_address)
