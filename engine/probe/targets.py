"""The targets of `ping` and `scan`: only what the user names, checked before any probe.

A TARGET is an address (IPv4 or IPv6), a name (every address it resolves to
is a target, and all are listed by ``--dry-run``) or a CIDR range (its hosts,
as ``fping -g`` takes them: without the network and broadcast addresses of an
IPv4 range wider than /31). Refused, with a one-line ConfigError naming the
target: multicast, unspecified and reserved addresses (``ipaddress`` decides,
no list of our own), the limited broadcast 255.255.255.255 and the broadcast
address of any local interface, an IPv6 zone that names no interface here
(fe80::1%eth9); a range, or a whole run, of more than
``max_targets`` addresses (1024 unless ``--max-targets`` says otherwise).
Loopback, private and link-local addresses are allowed: they are the user's.
"""
from __future__ import annotations

import functools
import ipaddress
import socket
from dataclasses import dataclass

from ..errors import ConfigError

DEFAULT_MAX_TARGETS = 1024
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


@dataclass(frozen=True)
class Target:
    """One address to probe, with the text the user gave that named it."""

    address: Address
    given: str

    @functools.cached_property
    def text(self) -> str:
        """The address as text (made once: every probe of a scan names it)."""
        return str(self.address)

    @property
    def family(self) -> int:
        return socket.AF_INET if self.address.version == 4 else socket.AF_INET6


@functools.lru_cache(maxsize=4096)
def split_zone(address: str) -> tuple[str, int]:
    """An address text without its IPv6 zone (fe80::1%eth0), and the zone's interface
    index (0: none); raises OSError for a zone that names no interface."""
    bare, _, zone = address.partition("%")
    if not zone:
        return bare, 0
    return bare, int(zone) if zone.isdigit() else socket.if_nametoindex(zone)


def _local_broadcasts() -> set[Address]:
    """The broadcast addresses of this namespace's interfaces (psutil)."""
    import psutil
    out = set()
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family == socket.AF_INET and addr.broadcast and \
                    addr.broadcast != addr.address:     # no broadcast set: psutil repeats it
                try:
                    out.add(ipaddress.IPv4Address(addr.broadcast))
                except ValueError:
                    pass
    return out


def refusal(address: Address, broadcasts: set[Address] = frozenset()) -> str | None:
    """Why `address` may not be probed, or None."""
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified:
        return "the unspecified address"
    if address == _LIMITED_BROADCAST:
        return "the broadcast address"
    if address in broadcasts:
        return "the broadcast address of a local interface"
    if address.is_reserved and not address.is_loopback:     # ::1 lies in ::/8
        return "a reserved address"
    return None


def _resolve(text: str) -> list[Address]:
    try:
        infos = socket.getaddrinfo(text, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise ConfigError(f"target {text!r}: cannot resolve it ({reason})") from None
    out: list[Address] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0].split("%")[0])
        if address not in out:
            out.append(address)
    return out


def _expand(text: str, max_targets: int) -> list[Address]:
    """The addresses of one TARGET text; raises ConfigError."""
    if "/" in text:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ConfigError(f"target {text!r}: not an address range such as "
                              f"192.0.2.0/24") from None
        if net.num_addresses > max_targets:
            raise ConfigError(f"target {text}: {net.num_addresses} addresses, more than "
                              f"{max_targets}; allow it with --max-targets "
                              f"{net.num_addresses}")
        return list(net.hosts()) if net.num_addresses > 1 else [net.network_address]
    try:
        return [ipaddress.ip_address(text)]
    except ValueError:
        pass
    if not text or text.startswith("-") or any(c.isspace() for c in text):
        raise ConfigError(f"target {text!r}: not an address, a name or a range")
    return _resolve(text)


def parse_targets(texts, max_targets: int = DEFAULT_MAX_TARGETS) -> list[Target]:
    """The targets named by `texts`, in order, each address once.

    Raises ConfigError (exit 2) for a bad or unresolvable target, a refused
    address (naming it and why) or more than `max_targets` addresses.
    """
    if max_targets < 1:
        raise ConfigError(f"--max-targets {max_targets}: choose 1 or more")
    broadcasts = _local_broadcasts()
    seen: dict[Address, Target] = {}
    for text in texts:
        for address in _expand(text.strip(), max_targets):
            why = refusal(address, broadcasts)
            try:
                split_zone(str(address))
            except OSError:
                raise ConfigError(f"target {text}: no interface "
                                  f"{getattr(address, 'scope_id', '')!r} here") from None
            if why is not None:
                where = f"target {text}" + ("" if str(address) == text else
                                            f": {address}")
                raise ConfigError(f"{where} is {why}; refused")
            seen.setdefault(address, Target(address, text))
            if len(seen) > max_targets:
                raise ConfigError(f"targets {' '.join(texts)}: more than {max_targets} "
                                  f"addresses; allow them with --max-targets N")
    if not seen:
        raise ConfigError("no target: name an address, a name or a range")
    return list(seen.values())
