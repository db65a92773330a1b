"""Running `pt-engine read` from tests and reading back its stream."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pt_engine import stream
from pt_engine.cli import main

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"      # real captures with independently computed counters
DATA = HERE / "data"          # captures made for pt-engine


def read_stream(tmp_path: Path, *args: str, fmt: str = "msgpack") -> tuple[int, list[dict], bytes]:
    """Run `pt-engine read ARGS` in-process; returns (status, records, raw bytes)."""
    out = tmp_path / f"out-{len(list(tmp_path.iterdir()))}.{fmt}"
    status = main(["read", *args, "--output", str(out), "--format", fmt])
    raw = out.read_bytes() if out.exists() else b""
    return status, stream.decode(raw, fmt), raw


def run_cli(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -m pt_engine ARGS` as a user would; returns the completed process."""
    return subprocess.run([sys.executable, "-m", "pt_engine", *args], capture_output=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def counters(record: dict) -> dict:
    """The parts of a summary that .expected.json files hold."""
    return {"totals": record["totals"], "classes": record["classes"], "ports": record["ports"]}


def subscribe(sock: Path, proc, after: float = 0.0) -> bytes:
    """Everything an engine (`proc`, started with --output unix:SOCK) sends a
    subscriber that connects `after` seconds after the socket appears."""
    import socket
    import time
    deadline = time.monotonic() + 30
    while not sock.exists():
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
        time.sleep(0.02)
    time.sleep(after)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(sock))
    data = bytearray()
    while chunk := client.recv(1 << 16):
        data.extend(chunk)
    client.close()
    return bytes(data)


def quality_row(port: int, side: str, samples: int = 0, rtt_ns: int = 0, data: int = 0,
                retrans: int = 0, gaps: int = 0, jitter_pairs: int = 0,
                jitter_ns: int = 0) -> list:
    """A tcp_quality stream row (docs/quality-rules.md section 8) with `samples`
    RTT samples of rtt_ns each, `data` data segments of 100 bytes, `retrans` and
    `gaps` of them retransmitted and after a gap, `jitter_pairs` of jitter_ns."""
    hist = [0] * 32
    if samples:
        hist[min(31, (rtt_ns // 1000).bit_length())] = samples
    counters = [samples, samples * rtt_ns, rtt_ns if samples else 0, rtt_ns if samples else 0,
                jitter_ns * jitter_pairs, jitter_pairs, data, data * 100, retrans,
                retrans * 100, 0, gaps, gaps * 100, 0]
    return ["tcp", port, side, *counters, hist]
