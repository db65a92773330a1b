"""--output clickhouse:URL against a real server: Debian's clickhouse-server
(18.16: no TTL, no insert_deduplication_token), started by the tests."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import frames as F
from servers import CLICKHOUSE_PASSWORD, ClickHouse, free_port, why_not_clickhouse
from streams import run_cli as _run_cli

pytestmark = pytest.mark.skipif(why_not_clickhouse() is not None,
                                reason=str(why_not_clickhouse()))

CAPTURE = Path(__file__).parent / "data" / "many-protocols-snap96.pcap"
ENV = {"PT_ENGINE_CLICKHOUSE_USER": "default",
       "PT_ENGINE_CLICKHOUSE_PASSWORD": CLICKHOUSE_PASSWORD}
T0 = 1_700_000_000 * 10**9


def run_cli(*args: str, env: dict | None = None):
    result = _run_cli(*args, env={**ENV, **(env or {})})
    result.stdout, result.stderr = result.stdout.decode(), result.stderr.decode()
    return result


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    ch = ClickHouse(tmp_path_factory.mktemp("clickhouse"))
    ch.start()
    yield ch
    ch.stop()


def _int(server, sql: str) -> int:
    return int(server.query(sql).strip() or 0)


def _summary(text: str) -> dict:
    return [json.loads(line) for line in text.splitlines()][-1]


def test_read_into_clickhouse_sums_to_the_summary(server):
    result = run_cli("read", str(CAPTURE), "-o", f"clickhouse:{server.url}/fleet",
                     "-o", "json:-", "--host-name", "probe-a")
    assert result.returncode == 0, result.stderr
    summary = _summary(result.stdout)
    assert "outputs" not in summary
    assert "lacks TTL" in result.stderr and "insert_deduplication_token" in result.stderr
    port_bytes = sum(r[3] + r[5] for r in summary["ports"])
    for table in ("pt_ports", "pt_ports_1m", "pt_ports_5m", "pt_ports_1h"):
        assert _int(server, f"SELECT sum(bytes) FROM fleet.{table}") == port_bytes, table
    assert _int(server, "SELECT sum(bytes) FROM fleet.pt_classes") == summary["totals"]["bytes"]
    assert server.query("SELECT DISTINCT host FROM fleet.pt_ports").split() == ["probe-a"]
    top = run_cli("history", f"clickhouse:{server.url}/fleet", "--top", "1", "--format",
                  "json")
    assert top.returncode == 0, top.stderr
    busiest = max(summary["ports"], key=lambda r: r[3] + r[5])
    assert json.loads(top.stdout)["rows"] == [busiest]


def _frames(seconds, port: int):
    frame = F.eth() + F.ipv4(payload=F.udp(40000, port, b"y" * 20))
    return [(T0 + s * 10**9 + k * 1000, frame, None) for s in seconds for k in range(10)]


def _filler(second: int, n: int = 20000):
    """Non-IP frames that close the windows before them (and a read from a pipe
    hands on its records only in full batches)."""
    frame = F.eth(et=F.ETH_ARP) + F.arp()
    return [(T0 + second * 10**9, frame, None)] * n


def _packets(records) -> bytes:
    return F.pcap_file(records, F.DLT_EN10MB)[24:]


def test_server_killed_and_restarted_mid_run_counts_nothing_twice(server):
    db = "restart"
    proc = subprocess.Popen([sys.executable, "-m", "pt_engine", "read", "-", "-o",
                             f"clickhouse:{server.url}/{db}", "-o", "json:-"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**__import__("os").environ, **ENV})
    try:
        proc.stdin.write(F.pcap_file(_frames(range(0, 5), 53) + _filler(10), F.DLT_EN10MB))
        proc.stdin.flush()
        deadline = time.monotonic() + 60
        while _int(server, f"SELECT count() FROM system.tables WHERE database = '{db}' AND "
                           "name = 'pt_ports'") == 0 or \
                _int(server, f"SELECT count() FROM {db}.pt_ports") == 0:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        server.kill()
        proc.stdin.write(_packets(_frames(range(20, 25), 123) + _filler(30)))
        proc.stdin.flush()
        time.sleep(2)
        server.start()
        proc.stdin.write(_packets(_frames(range(40, 45), 443) + _filler(50)))
    finally:
        out, err = proc.communicate(timeout=120)     # closes stdin: the end of the capture
    assert proc.returncode == 0, err
    summary = _summary(out.decode())
    assert "outputs" not in summary, summary["outputs"]     # a file run waits: no drops
    assert "retrying" in err.decode() and "is back" in err.decode(), err.decode()
    assert _int(server, f"SELECT sum(bytes) FROM {db}.pt_ports") == \
        sum(r[3] + r[5] for r in summary["ports"])
    assert _int(server, f"SELECT sum(bytes) FROM {db}.pt_classes") == summary["totals"]["bytes"]
    assert _int(server, f"SELECT count() FROM (SELECT count() AS n FROM {db}.pt_ports GROUP BY "
                        "host, interface, proto, direction, port, window_start HAVING n > 1)") \
        == 0


def _window(i: int) -> dict:
    size = 100 + i
    return {"type": "window", "start_ns": T0 + i * 10**9, "end_ns": T0 + (i + 1) * 10**9,
            "totals": {"packets": 1, "bytes": size},
            "classes": {"ported": {"packets": 1, "bytes": size}},
            "ports": [["udp", 1000 + i, 1, size, 0, 0]], "late_packets": 0}


def test_live_run_drops_while_the_server_is_away_and_counts_exactly(server):
    """A live run never waits: with the server away the queue fills and records are
    dropped; each window is in the table or counted as dropped, never both."""
    from pt_engine.sinks import SinkContext, open_outputs, parse_destination
    opts = SimpleNamespace(host_name="live-1", clickhouse_user="default",
                           clickhouse_password=CLICKHOUSE_PASSWORD)
    dest = parse_destination(f"clickhouse:{server.url}/live", "msgpack")
    outputs = open_outputs([dest], SinkContext(live=True, queue_bytes=2000, options=opts))
    sink = outputs.sinks[0]
    outputs.write({"type": "hello", "sources": [{"name": "eth9"}]})
    for i in range(5):
        outputs.write(_window(i))
    deadline = time.monotonic() + 30
    while _int(server, "SELECT count() FROM live.pt_ports") < 5:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    server.kill()
    started = time.monotonic()
    for i in range(5, 205):
        outputs.write(_window(i))
    assert time.monotonic() - started < 5        # never waited for the server
    server.start()
    for i in range(205, 210):
        outputs.write(_window(i))
        time.sleep(0.05)
    outputs.close()
    stored = {int(p) for p in server.query("SELECT port FROM live.pt_ports").split()}
    assert sink.dropped > 0 and sink.failure is None
    assert sink.written == 1 + len(stored)                     # the hello, then windows
    assert len(stored) + sink.dropped == 210
    assert _int(server, "SELECT count() FROM live.pt_ports") == len(stored)   # none twice
    assert outputs.report() == [{"output": sink.name, "written": sink.written,
                                 "dropped": sink.dropped}]


@pytest.mark.parametrize("dest, status, message", [
    ("clickhouse:http://127.0.0.1:{free}/db", 1, "cannot reach the server: Connection refused"),
    ("clickhouse:ftp://127.0.0.1/db", 2, "write it as clickhouse:http://HOST:8123/DATABASE"),
    ("clickhouse:http://u:secret@127.0.0.1:8123/db", 2, "not on the command line"),
    ("clickhouse:http://127.0.0.1:8123/no-such!", 2, "is not a database name"),
])
def test_bad_clickhouse_outputs_are_one_line(dest, status, message):
    result = run_cli("read", str(CAPTURE), "-o", dest.replace("{free}", str(free_port())),
                     "-o", "/dev/null")
    assert result.returncode == status, result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert "secret" not in result.stderr


def test_wrong_password_is_one_line(server):
    result = run_cli("read", str(CAPTURE), "-o", f"clickhouse:{server.url}/db", "-o",
                     "/dev/null", env={"PT_ENGINE_CLICKHOUSE_PASSWORD": "wrong"})
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "the server said" in result.stderr, \
        result.stderr


def test_tcp_quality_rows_on_an_old_server(server):
    from test_history import QUALITY, quality_rows_stored
    from pt_engine import warehouse
    result = run_cli("read", str(QUALITY), "--analyser", "tcp_quality", "-o",
                     f"clickhouse:{server.url}/quality", "-o", "json:-")
    assert result.returncode == 0, result.stderr
    store = warehouse.HttpStore(f"{server.url}/quality", "default", CLICKHOUSE_PASSWORD)
    assert quality_rows_stored(store) == _summary(result.stdout)["tcp_quality"]["rows"]
