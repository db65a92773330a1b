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
