"""The embedded history (--output history:PATH, chDB): the full schema (rollups,
TTL, deduplication tokens), `pt-engine history` and `plot` from it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import frames as F
from servers import why_not_chdb
from streams import run_cli as _run_cli

pytestmark = pytest.mark.skipif(why_not_chdb() is not None, reason=str(why_not_chdb()))

CAPTURE = Path(__file__).parent / "data" / "many-protocols-snap96.pcap"
T0 = 1_700_000_000 * 10**9          # 2023-11-14T22:13:20Z


def run_cli(*args: str):
    """pt-engine's exit status and its output as text."""
    result = _run_cli(*args)
    result.stdout, result.stderr = result.stdout.decode(), result.stderr.decode()
    return result


def _summary(out: str) -> dict:
    records = [json.loads(line) for line in out.splitlines()]
    assert records[-1]["type"] == "summary"
    return records[-1]


def _port_bytes(summary: dict) -> int:
    return sum(row[3] + row[5] for row in summary["ports"])


def _store(path):
    from pt_engine import warehouse
    return warehouse.open_store(f"history:{path}", create=False)


def _one(store, sql: str) -> int:
    return int(store.query(sql).strip() or 0)


def _read_into(path, capture, *extra) -> dict:
    result = run_cli("read", str(capture), "-o", f"history:{path}", "-o", "json:-", *extra)
    assert result.returncode == 0, result.stderr
    return _summary(result.stdout)


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """A history of CAPTURE, and the stream's summary."""
    path = tmp_path_factory.mktemp("history") / "h"
    return path, _read_into(path, CAPTURE, "--host-name", "probe-1")


def test_every_table_sums_to_the_summary(history):
    path, summary = history
    store = _store(path)
    db = store.database
    for table in ("pt_ports", "pt_ports_1m", "pt_ports_5m", "pt_ports_1h"):
        assert _one(store, f"SELECT sum(bytes) FROM {db}.{table}") == _port_bytes(summary), \
            table
        assert _one(store, f"SELECT sum(packets) FROM {db}.{table} WHERE direction = 'in'") \
            == sum(row[2] for row in summary["ports"]), table
    assert _one(store, f"SELECT sum(bytes) FROM {db}.pt_classes") == \
        summary["totals"]["bytes"]
    assert _one(store, f"SELECT sum(packets) FROM {db}.pt_classes WHERE class = 'ported'") \
        == summary["classes"]["ported"]["packets"]
    assert store.query(f"SELECT DISTINCT host FROM {db}.pt_ports").split() == ["probe-1"]


def test_schema_has_ttl_and_deduplication_on_chdb(history):
    path, _ = history
    store = _store(path)
    from pt_engine import warehouse
    caps = warehouse.detect(store)
    assert caps.ttl and caps.dedup_token, caps
    for table in ("pt_ports", "pt_classes", "pt_sources"):
        engine = store.query(f"SELECT engine_full FROM system.tables WHERE database = "
                             f"'{store.database}' AND name = '{table}'")
        days = warehouse.RETENTION_DAYS[table]
        assert f"TTL inserted + toIntervalDay({days})" in engine, engine
    for table in warehouse.ROLLUPS:
        inner = store.query(f"SELECT engine_full FROM system.tables WHERE database = "
                            f"'{store.database}' AND name LIKE '%inner%' AND engine_full "
                            f"LIKE '%toIntervalDay({warehouse.RETENTION_DAYS[table]})%'")
        assert "SummingMergeTree" in inner, table


def test_a_repeated_batch_counts_once(tmp_path):
    from pt_engine import warehouse
    store = warehouse.open_store(f"history:{tmp_path / 'h'}")
    warehouse.create_schema(store)
    row = {"host": "h", "interface": "eth0", "proto": "tcp", "port": 443, "direction": "in",
           "window_start": 1_700_000_000, "packets": 2, "bytes": 300, "batch": 7,
           "inserted": 1_900_000_000}
    for _ in range(3):
        store.insert("pt_ports", warehouse.json_rows([row]), "pt-engine:h:7:pt_ports")
    row["batch"] = 8
    store.insert("pt_ports", warehouse.json_rows([row]), "pt-engine:h:8:pt_ports")
    db = store.database
    for table in ("pt_ports", "pt_ports_1m", "pt_ports_1h"):
        assert _one(store, f"SELECT sum(bytes) FROM {db}.{table}") == 600, table


def test_rollups_cut_minutes_and_hours(tmp_path):
    """Packets over two hours: each rollup's buckets hold the windows that start in them."""
    frame = F.eth() + F.ipv4(payload=F.udp(40000, 53, b"x" * 10))
    times = [T0 + s * 10**9 for s in (0, 59, 60, 299, 300, 3599, 3600, 7000)]
    capture = tmp_path / "spread.pcap"
    capture.write_bytes(F.pcap_file([(t, frame, None) for t in times], F.DLT_EN10MB))
    _read_into(tmp_path / "h", capture)
    store = _store(tmp_path / "h")
    per = lambda table: [tuple(map(int, r.split("\t"))) for r in store.query(  # noqa: E731
        f"SELECT toUInt32(window_start), sum(packets) FROM {store.database}.{table} "
        f"WHERE direction = 'in' GROUP BY window_start ORDER BY window_start").split("\n")
        if r]
    seconds = [t // 10**9 for t in times]
    for table, step in (("pt_ports_1m", 60), ("pt_ports_5m", 300), ("pt_ports_1h", 3600)):
        buckets: dict[int, int] = {}
        for s in seconds:
            buckets[s // step * step] = buckets.get(s // step * step, 0) + 1
        assert per(table) == sorted(buckets.items()), table
    assert len(per("pt_ports_1h")) == 3 and len(per("pt_ports_1m")) == 5


def test_history_top_and_series(history):
    path, summary = history
    result = run_cli("history", f"history:{path}", "--top", "3", "--format", "json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    busiest = sorted(summary["ports"], key=lambda r: (-(r[3] + r[5]), r[0], r[1]))[:3]
    assert answer["rows"] == busiest
    port = busiest[0][1]
    result = run_cli("history", f"history:{path}", "--port", str(port), "--format", "json")
    assert result.returncode == 0, result.stderr
    series = json.loads(result.stdout)
    assert sum(r[4] for r in series["rows"]) == busiest[0][3]
    assert sum(r[6] for r in series["rows"]) == busiest[0][5]
    table = run_cli("history", f"history:{path}", "--top", "2")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[1].split() == ["proto", "port", "in_packets", "in_bytes", "out_packets",
                                "out_bytes"]
    assert lines[2].split() == [str(v) for v in busiest[0]]


def test_history_last_counts_back_from_the_newest_window(history):
    path, summary = history
    result = run_cli("history", f"history:{path}", "--last", "10s", "--format", "json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["until"] == "2015-01-03T13:05:31Z" and answer["since"] == \
        "2015-01-03T13:05:21Z"


@pytest.mark.parametrize("args, message", [
    (["history:/nonexistent/pt"], "history:/nonexistent/pt: no such directory"),
    (["{path}", "--last", "1h", "--since", "0"], "--last counts back"),
    (["{path}", "--since", "2030-01-01T00:00:00"], "nothing stored between"),
    (["{path}", "--port", "99999"], "--ports"),
    (["/tmp/x.msgpack"], "name a history as history:PATH or clickhouse:URL"),
    (["clickhouse:http://user:pw@127.0.0.1:1/db"], "not on the command line"),
])
def test_history_errors_are_one_line(history, args, message):
    path, _ = history
    result = run_cli("history", *[a.replace("{path}", f"history:{path}") for a in args])
    assert result.returncode in (1, 2), result
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_plot_reads_a_history(history):
    path, summary = history
    from pt_engine import plot
    rec = plot.load([f"history:{path}"], top=3)
    busiest = sorted(summary["ports"], key=lambda r: (-(r[3] + r[5]), r[0], r[1]))[:3]
    assert [(p.proto, p.port, p.in_bytes, p.out_bytes) for p in rec.ports] == \
        [(r[0], r[1], r[3], r[5]) for r in busiest]


def test_history_is_readable_while_an_engine_holds_it(tmp_path):
    """The sink opens chDB per batch, so `history` can read between batches."""
    import subprocess
    import sys
    import time
    frame = F.eth() + F.ipv4(payload=F.udp(40000, 53, b"x" * 10))
    head = F.pcap_file([(T0 + s * 10**9, frame, None) for s in range(3)] +
                       [(T0 + 60 * 10**9, F.eth(et=F.ETH_ARP) + F.arp(), None)] * 20000,
                       F.DLT_EN10MB)
    proc = subprocess.Popen([sys.executable, "-m", "pt_engine", "read", "-", "-o",
                             f"history:{tmp_path / 'h'}", "-o", "/dev/null"],
                            stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        proc.stdin.write(head)
        proc.stdin.flush()
        deadline = time.monotonic() + 60
        while True:
            result = run_cli("history", f"history:{tmp_path / 'h'}", "--format", "json")
            if result.returncode == 0:
                break
            assert time.monotonic() < deadline, result.stderr
            time.sleep(0.5)
        assert json.loads(result.stdout)["rows"][0][:4] == ["udp", 53, 3, 3 * len(frame)]
    finally:
        proc.stdin.close()
        assert proc.wait(60) == 0, proc.stderr.read()


QUALITY = Path(__file__).parent / "quality-corpus" / "pkt2flow_200722_win_scale_examples_anon.pcapng"


def quality_rows_stored(store) -> list[list]:
    """pt_tcp_quality summed per (port, side), in the summary's row form."""
    from pt_engine.warehouse import QUALITY_COLUMNS
    sums = ", ".join(f"minIf({c}, rtt_samples > 0)" if c == "rtt_min_ns" else
                     f"max({c})" if c == "rtt_max_ns" else f"sum({c})"
                     for c in QUALITY_COLUMNS)
    rows = store.query(f"SELECT port, side, {sums}, sumForEach(rtt_hist) FROM "
                       f"{store.database}.pt_tcp_quality GROUP BY port, side "
                       f"ORDER BY port, side")
    return [["tcp", int(r[0]), r[1], *map(int, r[2:16]), json.loads(r[16])]
            for r in (line.split("\t") for line in rows.splitlines())]


def test_tcp_quality_rows_sum_to_the_summary(tmp_path):
    summary = _read_into(tmp_path / "h", QUALITY, "--analyser", "tcp_quality")
    expected = summary["tcp_quality"]["rows"]
    assert expected and quality_rows_stored(_store(tmp_path / "h")) == expected


def test_plot_charts_tcp_quality_from_a_history_as_from_the_recording(tmp_path):
    from pt_engine import plot
    import numpy as np
    _read_into(tmp_path / "h", QUALITY, "-o", f"msgpack:{tmp_path / 'rec.msgpack'}")
    from_history = plot.load([f"history:{tmp_path / 'h'}"], top=8, fold=None)
    from_file = plot.load([str(tmp_path / "rec.msgpack")], top=8, fold=None)
    assert from_file.quality and from_history.quality is not None
    assert from_history.bin_ns == from_file.bin_ns
    assert [(s.label, s.side) for s in from_history.quality] == \
        [(s.label, s.side) for s in from_file.quality]
    for a, b in zip(from_history.quality, from_file.quality):
        for name in ("rtt_p50_ms", "rtt_p95_ms", "retrans_pct"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_a_history_without_tcp_quality_charts_none(tmp_path):
    from pt_engine import plot
    _read_into(tmp_path / "h", QUALITY, "--no-tcp-quality")
    rec = plot.load([f"history:{tmp_path / 'h'}"], top=8)
    assert rec.ports and rec.quality is None


# --- talkers ---------------------------------------------------------------------------------

def talkers_capture(tmp_path) -> Path:
    """Three 1-second windows of UDP to and from port 53 and TCP to 443, the
    sources changing from window to window."""
    recs = []
    plan = [  # (window, source, sport, destination, dport, wire, count)
        (0, "192.0.2.10", 40000, "10.0.0.1", 53, 100, 7), (0, "192.0.2.77", 40001, "10.0.0.1", 53, 300, 3),
        (0, "10.0.0.1", 53, "192.0.2.10", 40000, 200, 2), (1, "192.0.2.10", 40000, "10.0.0.1", 53, 100, 1),
        (1, "198.51.100.5", 40002, "10.0.0.1", 53, 1000, 4), (1, "198.51.100.5", 40003, "10.0.0.2", 443, 1500, 2),
        (2, "192.0.2.77", 40001, "10.0.0.1", 53, 300, 5), (2, "10.0.0.1", 53, "192.0.2.77", 40001, 90, 1)]
    for w, src, sport, dst, dport, wire, count in plan:
        for k in range(count):
            layer = (F.udp(sport, dport) if dport != 443 else F.tcp(sport, dport))
            recs.append((T0 + w * 10**9 + 1000 * k + 100 * len(recs),
                         F.eth() + F.ipv4(src, dst, 17 if dport != 443 else 6, layer), wire))
    path = tmp_path / "talkers.pcap"
    path.write_bytes(F.pcap_file(recs, F.DLT_EN10MB, nano=True))
    return path


def test_talkers_are_stored_per_window_and_summed_by_history(tmp_path):
    path = tmp_path / "h"
    result = run_cli("read", str(talkers_capture(tmp_path)), "--analyser", "talkers",
                     "--addresses", "clear", "-o", f"history:{path}", "-o", "json:-")
    assert result.returncode == 0, result.stderr
    windows = [json.loads(line) for line in result.stdout.splitlines()]
    windows = [w for w in windows if w["type"] == "window"]
    assert len(windows) == 3
    listed = {}      # (proto, port, direction, address) -> [packets, bytes, windows]
    for w in windows:
        for entry in w["talkers"]["ports"]:
            for direction in ("in", "out"):
                for t in entry[direction]:
                    c = listed.setdefault((entry["proto"], entry["port"], direction,
                                           t["address"]), [0, 0, 0])
                    c[0], c[1], c[2] = c[0] + t["packets"], c[1] + t["bytes"], c[2] + 1
    store = _store(path)
    stored = store.query(f"SELECT proto, port, direction, address, sum(packets), sum(bytes), "
                         f"count(), any(policy) FROM {store.database}.pt_talkers "
                         f"GROUP BY proto, port, direction, address")
    got = {(r[0], int(r[1]), r[2], r[3]): [int(r[4]), int(r[5]), int(r[6])]
           for r in (line.split("\t") for line in stored.splitlines())}
    assert got == listed and {line.split("\t")[7] for line in stored.splitlines()} == {"clear"}
    assert listed[("udp", 53, "in", "192.0.2.77")] == [8, 2400, 2]
    answer = run_cli("history", f"history:{path}", "--talkers", "--format", "json")
    assert answer.returncode == 0, answer.stderr
    answer = json.loads(answer.stdout)
    assert answer["table"] == "pt_talkers" and answer["addresses"] == ["clear"]
    assert answer["rows"][:3] == [["udp", 53, "in", "198.51.100.5", 4, 4000, 1],
                                  ["udp", 53, "in", "192.0.2.77", 8, 2400, 2],
                                  ["udp", 53, "in", "192.0.2.10", 8, 800, 2]]
    assert {tuple(r[:4]) for r in answer["rows"]} == set(listed)
    for r in answer["rows"]:
        assert r[4:] == listed[tuple(r[:4])]
    one = json.loads(run_cli("history", f"history:{path}", "--talkers", "--port", "443",
                             "--format", "json").stdout)
    assert one["rows"] == [["tcp", 443, "in", "198.51.100.5", 2, 3000, 1]]
    table = run_cli("history", f"history:{path}", "--talkers", "--top", "1")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert "talkers (addresses: clear)" in lines[0]
    assert lines[1].split() == ["proto", "port", "direction", "address", "packets", "bytes",
                                "windows"]
    assert lines[2].split() == ["udp", "53", "in", "198.51.100.5", "4", "4000", "1"]


def test_talkers_are_stored_pseudonymised_by_default(tmp_path):
    path = tmp_path / "h"
    result = run_cli("read", str(talkers_capture(tmp_path)), "--analyser", "talkers",
                     "--state-dir", str(tmp_path / "state"), "-o", f"history:{path}")
    assert result.returncode == 0, result.stderr
    store = _store(path)
    text = store.query(f"SELECT policy, address FROM {store.database}.pt_talkers")
    assert text and {line.split("\t")[0] for line in text.splitlines()} == {"pseudonymise"}
    for real in ("192.0.2.10", "192.0.2.77", "198.51.100.5", "10.0.0.1"):
        assert real not in text


def test_history_talkers_without_any_is_an_error(history):
    path, _ = history
    result = run_cli("history", f"history:{path}", "--talkers")
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "no talkers stored" in result.stderr and "Traceback" not in result.stderr
