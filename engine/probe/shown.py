"""What a probe record looks like when it leaves the engine: the --addresses
policy (pt_engine.addresses) applied to every target address in it.

The probing itself, the alert rules (``ping:10.0.0.1:...``) and the dry run
see the real addresses; the stream, the terminal table, alert log lines and
hooks see them as the policy leaves them, and the hello says which policy
that is. A target named as a range keeps its prefix length: ``10.0.0.0/24``
becomes the pseudonym of its network address cut to 24 bits (prefix-preserving
policies keep a range recognisable as one).
"""
from __future__ import annotations

import ipaddress

from ..addresses import Policy


def _raw(address) -> bytes:
    """The 16-byte form the policy's mapper takes (IPv4 as ::ffff:a.b.c.d)."""
    if address.version == 4:
        return b"\0" * 10 + b"\xff\xff" + address.packed
    return address.packed


class Shown:
    """`Shown(policy_text, state_dir)(record)` -> the record as it leaves."""

    def __init__(self, policy: str, state_dir: str | None = None):
        self.policy = Policy.parse(policy)
        self.clear = self.policy.kind == "clear"
        self._map = None if self.clear else self.policy.mapper(state_dir)
        self._cache: dict[str, str] = {}

    def address(self, text: str) -> str:
        """An address text (an IPv6 one may carry a %zone, kept) as the policy
        shows it; a name or a range as the module docstring says."""
        if self.clear:
            return text
        got = self._cache.get(text)
        if got is None:
            got = self._cache[text] = self._address(text)
        return got

    def _address(self, text: str) -> str:
        bare, percent, zone = text.partition("%")
        try:
            return self._map(_raw(ipaddress.ip_address(bare))) + percent + zone
        except ValueError:
            pass
        try:
            net = ipaddress.ip_network(bare, strict=False)
        except ValueError:
            return text                   # a host name: the user's own word for it
        first = self._map(_raw(net.network_address))
        if self.policy.kind == "hash":
            return f"{first}/{net.prefixlen}"
        return str(ipaddress.ip_network(f"{first}/{net.prefixlen}", strict=False))

    def __call__(self, record: dict) -> dict:
        if self.clear:
            return record
        out = dict(record)
        if "target" in out:
            out["target"] = self.address(out["target"])
        if out.get("type") == "hello" and "targets" in out:
            out["targets"] = [{**t, "address": self.address(t["address"]),
                               "name": self.address(t["name"])} for t in out["targets"]]
        return out
