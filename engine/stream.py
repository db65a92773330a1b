"""The wire format of pt-engine's output stream (docs/stream-format.md).

A stream is a sequence of self-describing records (maps with a "type"):
``hello`` first, then one ``window`` per interval with traffic, then a final
``summary``; a UNIX-socket subscriber that joins late gets a ``snapshot``
(same shape as ``summary``) right after its ``hello``. Between windows may
come ``alert`` / ``resolved`` records (pt_engine.alerts) and ``event`` records
(a capture process failed or restarted). Encoded as
concatenated msgpack maps, or as JSON lines with ``--format json``. Every
record is encoded to bytes whole before anything is written.
"""
from __future__ import annotations

import json

import msgpack

from . import __version__

FORMAT_NAME = "pt-engine-stream"
FORMAT_VERSION = 1
FORMATS = ("msgpack", "json")


def hello(sources: list[dict], interval_ns: int, bpf: str | None, ports: str | None,
          backend: str) -> dict:
    """The first record: what produced the stream and how to read it."""
    return {
        "type": "hello",
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "engine_version": __version__,
        "backend": backend,
        "interval_ns": interval_ns,
        "filter": bpf,
        "ports_selected": ports,
        "sources": sources,
        "port_row": ["proto", "port", "in_packets", "in_bytes", "out_packets", "out_bytes"],
    }


def encoder(fmt: str):
    """A function record -> bytes for 'msgpack' or 'json' (one line per record)."""
    if fmt == "msgpack":
        packer = msgpack.Packer(use_bin_type=True)
        return packer.pack
    if fmt == "json":
        return lambda record: json.dumps(record, separators=(",", ":")).encode() + b"\n"
    raise ValueError(f"unknown stream format {fmt!r}; choose one of {', '.join(FORMATS)}")


def decode(data: bytes, fmt: str = "msgpack") -> list[dict]:
    """All records in a complete stream (for tests and small consumers)."""
    if fmt == "json":
        return [json.loads(line) for line in data.splitlines() if line.strip()]
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(data)
    return list(unpacker)
