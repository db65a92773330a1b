"""Every record type of real runs against docs/stream-format.md: each key is
documented for its record type, with the documented type, and each documented
key shows up in at least one of the runs."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pt_engine import stream
from streams import CORPUS, read_stream, subscribe

DOC = Path(__file__).resolve().parent.parent / "docs" / "stream-format.md"
MANY = CORPUS / "ppp_many-protocols.pcap"
SECTIONS = {"hello": ("hello",), "window": ("window",), "summary (and snapshot)":
            ("summary", "snapshot"), "alert and resolved": ("alert", "resolved"),
            "event": ("event",), "ping": ("ping",), "scan": ("scan",)}
TYPES = {"int": (int,), "str": (str,), "list": (list,), "map": (dict,), "bool": (bool,),
         "float": (float,), "null": (type(None),)}


def doc_schema() -> dict[str, dict[str, tuple]]:
    """record type -> key -> allowed Python types, from the doc's tables."""
    schema: dict[str, dict[str, tuple]] = {}
    section = None
    for line in DOC.read_text().splitlines():
        if line.startswith("### "):
            section = SECTIONS.get(line[4:].strip())
            continue
        if section is None or not line.startswith("| `"):
            continue
        keys_cell, type_cell, meaning = [c.strip() for c in line.strip("|").split("|")[:3]]
        keys = re.findall(r"`([a-z][a-z0-9_]*)`", keys_cell)
        only = re.match(r"(\w+) only", meaning)
        kinds = (only[1],) if only and only[1] in section else section
        types = tuple(t for word in re.split(r"\s+or\s+", type_cell) if word
                      for t in TYPES[word])
        for kind in kinds:
            for key in keys:
                # an empty type: "as in window"
                schema.setdefault(kind, {})[key] = types or schema["window"][key]
    return schema


def check(record: dict, schema: dict) -> None:
    kind = record["type"]
    assert kind in schema, f"record type {kind!r} is not in docs/stream-format.md"
    for key, value in record.items():
        if key == "type":
            continue
        assert key in schema[kind], f"{kind}.{key} is not in docs/stream-format.md"
        allowed = schema[kind][key]
        assert type(value) in allowed, f"{kind}.{key} is {type(value).__name__}, " \
                                       f"documented as {[t.__name__ for t in allowed]}"


# A live capture on lo needs Linux and the right to open a packet socket.
LIVE = hasattr(socket, "AF_PACKET") and os.geteuid() == 0


def _records(tmp_path) -> list[dict]:
    """hello, window, summary (with tcp_quality), alert, resolved (both ops), snapshot; a live run's
    window sources; the events and a summary's outputs from the builders and a
    sink that fails."""
    out = []
    status, records, _ = read_stream(
        tmp_path, str(MANY), "--interval", "0.05", "--alert", "*:*:both:packets_per_s>200",
        "--alert", "udp:53:in:packets_per_s<1:name=quiet", "--analyser", "tcp_quality", "--analyser", "talkers", "--addresses", "clear")
    assert status == 0
    out += records
    if LIVE:
        # live: windows with sources; a subscriber that joins late gets a snapshot
        sock, live = tmp_path / "s.sock", tmp_path / "live.msgpack"
        proc = subprocess.Popen([sys.executable, "-m", "pt_engine", "run", "-i", "lo",
                                 "--duration", "1.5", "--interval", "0.1", "-o",
                                 f"unix:{sock}", "-o", str(live), "--analyser", "tcp_quality", "--analyser", "talkers",
                                 "--addresses", "clear"],
                                stderr=subprocess.PIPE)
        data = subscribe(sock, proc, after=0.5)
        assert proc.wait(60) == 0
        joined = stream.decode(bytes(data))
        assert [r["type"] for r in joined[:2]] == ["hello", "snapshot"]
        out += joined + stream.decode(live.read_bytes())
    # ping and scan on loopback: TCP to a listening and a closed port, and a ping
    # rule firing and resolving
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        for argv in (["scan", "127.0.0.1", "--ports", f"{port}-{port + 1}"],
                     ["ping", "127.0.0.1", "--tcp", str(port), "--count", "4", "--interval",
                      "0.01", "--alert", "ping:*:rtt_ms>0.000001:for=2"]):
            proc = subprocess.run([sys.executable, "-m", "pt_engine", *argv, "--format",
                                   "json"], capture_output=True, timeout=60)
            assert proc.returncode == 0, proc.stderr
            out += stream.decode(proc.stdout, "json")
    out.append(stream.ping_resolved("r", "127.0.0.1", None, "rtt_ms", ">", 1.0, 2.0, 0, 1,
                                    1.6, 0, 0, 3.0))
    out += [stream.capture_failed(0, "capture process for lo was killed by signal 9"),
            stream.capture_restarted(0, 1)]
    out.append(stream.summary("summary", None, None, 0, 0, {"totals": {}, "classes": {},
                                                           "ports": []},
                              interrupted=False, sources=[],
                              outputs=[{"output": "x", "written": 1, "dropped": 2,
                                        "error": "e"}]))
    return out


def test_every_record_is_as_documented(tmp_path):
    schema = doc_schema()
    assert set(schema) == set(stream.RECORD_TYPES)
    records = _records(tmp_path)
    seen: dict[str, set] = {}
    for record in records:
        check(record, schema)
        seen.setdefault(record["type"], set()).update(record)
    if not LIVE:
        pytest.skip("the live half (window sources, snapshot) needs Linux and root "
                    "(or CAP_NET_RAW)")
    assert set(seen) == set(stream.RECORD_TYPES)
    # Every documented key occurs; `interfaces` needs two interfaces (test_live).
    rarely = {"interfaces"}
    for kind, keys in schema.items():
        missing = set(keys) - seen[kind] - rarely
        assert not missing, f"{kind}: documented but never seen: {sorted(missing)}"


def test_a_key_the_doc_lacks_is_caught():
    schema = doc_schema()
    with pytest.raises(AssertionError, match="window.surprise"):
        check({"type": "window", "surprise": 1}, schema)
    with pytest.raises(AssertionError, match="documented as"):
        check({"type": "window", "start_ns": "0"}, schema)
