"""Real servers for the history and fleet tests, started and stopped by the tests:
Debian's clickhouse-server and prometheus, on loopback, on free ports, with their
data in a temporary directory. ``why_not_*`` give the reason to skip when a
binary is missing."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

CLICKHOUSE_PASSWORD = "pt-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def why_not_clickhouse() -> str | None:
    if shutil.which("clickhouse-server") is None:
        return "needs Debian's clickhouse-server (apt-get install clickhouse-server)"
    return None


def why_not_prometheus() -> str | None:
    if shutil.which("prometheus") is None:
        return "needs Debian's prometheus (apt-get install prometheus)"
    return None


def why_not_chdb() -> str | None:
    try:
        import chdb  # noqa: F401
    except ImportError:
        return "needs chDB (pip install 'pt-engine[history]')"
    return None


def _wait_http(url: str, what: str, proc: subprocess.Popen, log: Path, timeout: float = 60,
               headers: dict | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}): "
                               f"{log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                        timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer on {url} within {timeout} s")


class ClickHouse:
    """clickhouse-server on 127.0.0.1 with user default / CLICKHOUSE_PASSWORD;
    ``kill()`` and ``start()`` again keep its data directory."""

    def __init__(self, root: Path):
        self.root = root
        self.http_port = free_port()
        self.tcp_port = free_port()
        self.proc: subprocess.Popen | None = None
        (root / "users.xml").write_text(
            "<?xml version=\"1.0\"?><yandex><profiles><default></default></profiles>"
            f"<users><default><password>{CLICKHOUSE_PASSWORD}</password><networks>"
            "<ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota>"
            "</default></users><quotas><default></default></quotas></yandex>")
        (root / "config.xml").write_text(f"""<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{root}/server.log</log>
    <errorlog>{root}/error.log</errorlog><console>0</console></logger>
  <http_port>{self.http_port}</http_port>
  <tcp_port>{self.tcp_port}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>{root}/data/</path>
  <tmp_path>{root}/tmp/</tmp_path>
  <user_files_path>{root}/user_files/</user_files_path>
  <format_schema_path>{root}/format_schemas/</format_schema_path>
  <users_config>{root}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>67108864</mark_cache_size>
  <uncompressed_cache_size>67108864</uncompressed_cache_size>
</yandex>
""")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        log = self.root / "stdout.log"
        args = ["clickhouse-server", f"--config-file={self.root}/config.xml"]
        self.proc = subprocess.Popen(args, stdout=open(log, "ab"), stderr=subprocess.STDOUT,
                                     cwd=self.root, start_new_session=True)
        _wait_http(f"{self.url}/?query=SELECT%201", "clickhouse-server", self.proc, log,
                   headers=self.auth())

    def auth(self) -> dict:
        import base64
        token = base64.b64encode(f"default:{CLICKHOUSE_PASSWORD}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def query(self, sql: str) -> str:
        request = urllib.request.Request(self.url + "/", data=sql.encode(),
                                         headers=self.auth(), method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read().decode()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        self.proc = None

    def stop(self) -> None:
        self.kill()


class Prometheus:
    """prometheus scraping `targets` every second, storage in a temporary directory."""

    def __init__(self, root: Path, targets: list[str]):
        self.root = root
        self.port = free_port()
        (root / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: pt-engine\n    static_configs:\n"
            f"      - targets: {json.dumps(targets)}\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = self.root / "prometheus.log"
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={self.root}/prometheus.yml",
             f"--storage.tsdb.path={self.root}/data",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=self.root,
            start_new_session=True)
        _wait_http(f"http://127.0.0.1:{self.port}/-/ready", "prometheus", self.proc, log)

    def query(self, expr: str) -> list:
        url = (f"http://127.0.0.1:{self.port}/api/v1/query?"
               + urllib.parse.urlencode({"query": expr}))
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None
