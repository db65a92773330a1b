"""Every built-in analyser, observer and sink through the same contract test, and
the failure policies of sinks in a real run (a sink that fails, one that blocks).

Sources have theirs in test_source_contract.py.
"""
from __future__ import annotations

import io
import json
import os
import socket
import sys
import threading
import time
import urllib.request

import msgpack
import numpy as np
import pytest

import stages
from pt_engine import analysers, options, plugins, sinks, stream
from pt_engine.aggregate import Aggregator
from pt_engine.analysers import AnalyserContext
from pt_engine.cli import main
from pt_engine.config import parse_alerts
from pt_engine.counting import CaptureCounting
from pt_engine.sinks import Destination, SinkContext, parse_destination
from streams import CORPUS, read_stream, subscribe

MANY = CORPUS / "ppp_many-protocols.pcap"


def builtin(kind: str) -> list[str]:
    return [name for name, p in plugins.available(kind).items() if p.builtin]


def no_floats(value) -> bool:
    if isinstance(value, float):
        return False
    if isinstance(value, dict):
        return all(no_floats(v) for v in value.values())
    if isinstance(value, list):
        return all(no_floats(v) for v in value)
    return True


# --- analysers ---------------------------------------------------------------------------

def _count(name: str, records: np.ndarray, chunks) -> list:
    """Count `records` as one capture process would, handed over in `chunks`
    (index ranges): its window deltas."""
    ctx = AnalyserContext(("all",), 10**9, None, False)
    counting = CaptureCounting.for_analysers(ctx, (name,))
    out = []
    for lo, hi in chunks:
        buf = memoryview(bytearray(records[lo:hi].tobytes()))
        out += counting.feed(buf, hi - lo)
    last = counting.finish()
    return out + ([last] if last is not None else [])


def _merge(name: str, deltas: list, rng=None) -> tuple[list[dict], dict]:
    """The aggregator side of analyser `name` over the deltas of several capture
    processes (merged per window in a shuffled order if `rng`)."""
    ctx = AnalyserContext(("all",), 10**9, None, False)
    (analyser,) = [a for a in analysers.create((name,), ctx) if a.name == name]
    by_window: dict[int, list] = {}
    for delta in deltas:
        by_window.setdefault(delta.start_ns, []).append(delta)
    out = []
    for start in sorted(by_window):
        parts = by_window[start]
        if rng is not None:
            rng.shuffle(parts)
        for delta in parts:
            analyser.merge(delta.ports if name == "ports" else delta.extra[name], 0)
        out.append(analyser.window(start, start + 10**9))
    return out, analyser.summary()


def _plain(value):
    return json.loads(json.dumps(value, default=stream.PortRows.tolist))


@pytest.mark.parametrize("name", builtin("analysers"))
def test_analyser_merges_exactly_whatever_the_split(name, backend_env):
    """The same records counted by one capture process in one piece, or split
    among three capture processes (every record to one of them, in order;
    a TCP connection's to one, both ways, as the kernel's symmetric fanout
    hash does) and handed over in small random pieces: the same fields, all
    integers."""
    records = stages.synthetic_records(20_000, conversations=300)
    rng = np.random.default_rng(7)

    def pieces(n):
        cuts = np.unique(np.concatenate([[0, n], rng.integers(0, n, 30)]))
        return list(zip(cuts[:-1].tolist(), cuts[1:].tolist()))

    whole, whole_summary = _merge(name, _count(name, records, [(0, len(records))]))
    owner = rng.integers(0, 3, len(records))
    by_flow = stages.flow_owner(records, 3)
    owner = np.where(by_flow >= 0, by_flow, owner)
    deltas = []
    for k in range(3):
        mine = records[owner == k]
        deltas += _count(name, mine, pieces(len(mine)))
    split, split_summary = _merge(name, deltas, rng)
    assert _plain(whole) == _plain(split) and _plain(whole_summary) == _plain(split_summary)
    assert no_floats(_plain(whole)) and no_floats(_plain(whole_summary))
    cls = plugins.load("analysers", name)
    for fields in whole:
        assert set(fields) <= set(cls.fields)


def test_analyser_fields_may_not_clash(monkeypatch):
    class Clash(analysers.Analyser):
        name = "clash"
        fields = ("ports",)

    monkeypatch.setitem(plugins.available("analysers"), "clash",
                        plugins.Plugin("analysers", "clash", "x:y", "test", "0"))
    monkeypatch.setattr(plugins.Plugin, "load", lambda self: Clash if self.name == "clash"
                        else plugins.importlib.import_module("pt_engine.analysers.ports")
                        .PortCounters)
    with pytest.raises(plugins.PluginError, match="'ports', which analyser 'ports'"):
        analysers.create(("clash",), AnalyserContext(("all",), 10**9, None, False))


def test_windowing_counts_late_records_and_emits_only_windows_with_packets(backend_env):
    """The windowing end to end, with fake capture processes: their deltas
    reach the aggregator in any interleaving; every record is counted once,
    late ones (older than their process's open window) are reported, only
    windows with packets are emitted, in time order."""
    records = stages.synthetic_records(5000)
    ts = records["ts_ns"].astype(np.int64)
    rng = np.random.default_rng(3)
    owner = rng.integers(0, 2, len(records))
    emitted = []
    ctx = AnalyserContext(("all",), 10**9, None, False)
    agg = Aggregator(10**9, analysers.create((), ctx), emitted.append)
    want_late = 0
    for k in range(2):
        mine = ts[owner == k]
        deltas = _count("ports", records[owner == k], [(0, len(mine))])
        feed = FakeFeed(deltas)
        agg.feeds.append(feed)
        newest = np.maximum.accumulate(mine)
        want_late += int(np.sum(mine < newest - newest % 10**9))
    agg.run()
    assert sum(w["totals"]["packets"] for w in emitted) == len(records)
    assert want_late > 0 and agg.late_packets == want_late
    assert sum(w["late_packets"] for w in emitted) == agg.late_packets
    assert all(w["totals"]["packets"] for w in emitted)
    starts = [w["start_ns"] for w in emitted]
    assert starts == sorted(set(starts))


class FakeFeed:
    """A capture process that has sent its deltas, one per pump, then finished."""

    group = source = 0

    def __init__(self, deltas):
        self.deltas = list(deltas)
        self.stats: dict = {}
        self.done = None
        self.consumer = self

    def pump(self, deliver) -> bool:
        if self.deltas:
            deliver(self, self.deltas.pop(0))
        if not self.deltas:
            self.done = object()
        return True

    @property
    def finished(self) -> bool:
        return self.done is not None

    def limit(self):
        return 2**64 - 1 if self.done is not None else self.deltas[0].start_ns

    def ack(self) -> None:
        pass


# --- observers ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", builtin("observers"))
def test_observer_contract(name, tmp_path):
    """Fed a real stream: what it returns are stream records of known types,
    encodable; close() ends it."""
    status, records, _ = read_stream(tmp_path, str(MANY), "--interval", "0.05")
    assert status == 0
    opts = options.options_class("read")(
        files=(str(MANY),), alerts=parse_alerts(["*:*:both:packets_per_s>100"]))
    observer = plugins.load("observers", name).create(opts)
    assert observer is not None, f"{name}: the options configure it, yet it made none"
    produced = []
    for record in records:
        out = observer.observe(record)
        assert isinstance(out, list)
        produced += out
    observer.close()
    assert produced, f"{name} produced nothing on a stream that should trigger it"
    for record in produced:
        assert record["type"] in stream.RECORD_TYPES
        assert msgpack.unpackb(msgpack.packb(record), raw=False) == record


# --- sinks -----------------------------------------------------------------------------

def _stream_records(tmp_path) -> list[dict]:
    status, records, _ = read_stream(tmp_path, str(MANY))
    assert status == 0
    return records


class _Stdout:
    def __init__(self):
        self.buffer = io.BytesIO()


def _open(scheme: str, tmp_path, monkeypatch, fmt: str = "msgpack"):
    """A built-in sink of `scheme` and a function returning what it wrote."""
    ctx = SinkContext(live=False)
    if scheme == "stdout":
        fake = _Stdout()
        monkeypatch.setattr(sys, "stdout", fake)
        sink = sinks.open_outputs([Destination("stdout", None, fmt, "-")], ctx).sinks[0]
        return sink, fake.buffer.getvalue
    if scheme == "file":
        path = tmp_path / "out"
        sink = sinks.open_outputs([Destination("file", str(path), fmt, str(path))], ctx).sinks[0]
        return sink, path.read_bytes
    if scheme == "recording":
        path = tmp_path / "rec.msgpack"
        dest = Destination("recording", str(path), "msgpack", "", max_bytes=1 << 30, keep=1)
        return sinks.open_outputs([dest], ctx).sinks[0], path.read_bytes
    if scheme == "unix":
        path = tmp_path / "s.sock"
        sink = sinks.open_outputs([Destination("unix", str(path), fmt, f"unix:{path}")],
                                  ctx).sinks[0]
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(path))
        sink.poll()
        return sink, _reader(client)
    if scheme == "tls":
        return _open_tls(tmp_path, fmt)
    raise AssertionError(f"no contract set-up for the built-in sink {scheme!r}: add one")


def _port_bytes_of(scheme: str, tmp_path):
    """Sinks that store what the records say rather than the records: (a sink of
    `scheme`, a function giving the port bytes it holds: called before close)."""
    from types import SimpleNamespace
    import servers
    opts = SimpleNamespace(host_name="contract", clickhouse_user="default",
                           clickhouse_password=servers.CLICKHOUSE_PASSWORD)
    ctx = SinkContext(live=False, options=opts)
    if scheme == "prometheus":
        port = servers.free_port()
        sink = sinks.open_outputs([sinks.parse_destination(f"prometheus:127.0.0.1:{port}",
                                                           "msgpack")], ctx).sinks[0]

        def read() -> int:
            while sink.backlog() or sink._busy:
                time.sleep(0.01)
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            return int(sum(float(line.split()[-1]) for line in text.splitlines()
                           if line.startswith("pt_engine_port_bytes_total{")))
        return sink, read
    if scheme == "history":
        text = f"history:{tmp_path / 'h'}"
    else:
        if servers.why_not_clickhouse():
            pytest.skip(servers.why_not_clickhouse())
        server = servers.ClickHouse(tmp_path)
        server.start()
        text = f"clickhouse:{server.url}/contract"
    sink = sinks.open_outputs([sinks.parse_destination(text, "msgpack")], ctx).sinks[0]
    store = sink.store

    def read() -> int:
        try:
            return int(store.query(f"SELECT sum(bytes) FROM {store.database}.pt_ports"))
        finally:
            if scheme == "clickhouse":
                server.stop()
    return sink, read


@pytest.mark.parametrize("scheme", ["prometheus", "history", "clickhouse"])
def test_storing_sink_contract(scheme, tmp_path):
    """Sinks that store counters: write() never waits, everything is taken, and
    what they hold adds up to the stream's port bytes."""
    records = _stream_records(tmp_path)
    sink, port_bytes = _port_bytes_of(scheme, tmp_path)
    assert sink.on_failure == "continue"
    start = time.monotonic()
    for record in records:
        sink.write(record)
    assert time.monotonic() - start < 5
    if scheme == "prometheus":
        held = port_bytes()
        sink.close()
    else:
        sink.close()
        held = port_bytes()
    assert held == sum(r[3] + r[5] for r in records[-1]["ports"])
    assert (sink.failure, sink.dropped, sink.written) == (None, 0, len(records))


def _open_tls(tmp_path, fmt):
    """A tls: sink on a free port of 127.0.0.1 and one subscriber with a good certificate."""
    import ssl
    import threading
    import time

    from pt_engine.sinks.tls import ServerTls
    pytest.importorskip("cryptography", reason="cryptography is not installed")
    from tlscerts import Authority
    ca = Authority(tmp_path, "ca")
    cert, key = ca.issue("localhost", server=True)
    ccert, ckey = ca.issue("client")
    ctx = SinkContext(live=False, tls=ServerTls(cert, key, str(ca.pem)))
    sink = sinks.open_outputs([Destination("tls", "127.0.0.1:0", fmt, "tls:127.0.0.1:0")],
                              ctx).sinks[0]
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.load_verify_locations(str(ca.pem))
    cctx.load_cert_chain(ccert, ckey)
    conns = []

    def handshake():
        raw = socket.create_connection(sink.socket.address, timeout=10)
        conns.append(cctx.wrap_socket(raw, server_hostname="127.0.0.1"))

    thread = threading.Thread(target=handshake)
    thread.start()
    deadline = time.monotonic() + 10
    while sink.socket.subscribers == 0 and time.monotonic() < deadline:
        sink.poll()
        time.sleep(0.01)
    thread.join(10)
    (client,) = conns
    return sink, _reader(client)


def _reader(client):
    """A function returning every byte `client` receives until the sink closes."""
    got = bytearray()

    def read() -> bytes:
        client.settimeout(5)
        while chunk := client.recv(1 << 16):
            got.extend(chunk)
        return bytes(got)
    return read


@pytest.mark.parametrize("scheme", sorted(set(builtin("sinks")) -
                                          {"prometheus", "history", "clickhouse"}))
def test_sink_contract(scheme, tmp_path, monkeypatch):
    """Every record written comes out whole and in order, and nothing was dropped."""
    records = _stream_records(tmp_path)
    sink, written = _open(scheme, tmp_path, monkeypatch)
    assert sink.on_failure in ("stop", "continue")
    start = time.monotonic()
    for record in records:
        sink.write(record)
    assert time.monotonic() - start < 5          # write() queues; it never waits here
    reader = threading.Thread(target=lambda: results.append(written()))
    results: list[bytes] = []
    if scheme == "unix":
        reader.start()
    sink.close()
    if scheme == "unix":
        reader.join(10)
    data = results[0] if results else written()
    assert stream.decode(data) == records
    assert (sink.failure, sink.dropped) == (None, 0)


def test_a_failing_sink_counts_what_it_did_not_write(tmp_path):
    sink = stages.FailingSink(Destination("failing", "x", "msgpack", "failing:x"),
                              SinkContext(live=True))
    for i in range(5):
        sink.write({"type": "window", "n": i})
        time.sleep(0.02)
    sink.close()
    assert len(sink.got) == 2 and sink.written == 2 and sink.dropped == 3
    assert "failed on purpose" in str(sink.failure)


def test_a_blocking_sink_never_blocks_a_live_run_and_counts_its_drops():
    stages.BlockingSink.release.clear()
    record = {"type": "window", "pad": "x" * 1000}
    size = len(msgpack.packb(record))
    ctx = SinkContext(live=True, queue_bytes=3 * size)
    sink = stages.BlockingSink(Destination("blocking", "x", "msgpack", "blocking:x"), ctx)
    sink.write(record)
    while not sink._busy:                 # the writer holds the first record, stuck
        time.sleep(0.001)
    start = time.monotonic()
    for _ in range(99):
        sink.write(record)
    assert time.monotonic() - start < 1
    # queue_bytes bounds what the sink holds: the one being written and two more
    assert sink.dropped == 100 - 3
    stages.BlockingSink.release.set()
    sink.close()
    assert sink.written == 3 and sink.dropped == 97 and sink.failure is None


def test_a_file_run_waits_for_a_slow_sink_but_not_for_ever():
    stages.BlockingSink.release.clear()
    record = {"type": "window"}
    ctx = SinkContext(live=False, queue_bytes=1, stall_s=0.3)
    sink = stages.BlockingSink(Destination("blocking", "x", "msgpack", "blocking:x"), ctx)
    for _ in range(4):
        sink.write(record)
    assert "took nothing for 0.3 s" in str(sink.failure)
    stages.BlockingSink.release.set()
    sink.close()
    assert sink.written + sink.dropped == 4 and sink.dropped >= 2


@pytest.fixture
def test_sinks(monkeypatch):
    """The stages' sinks installed as schemes failing:, stopping:, blocking:."""
    table = {"failing": "stages:FailingSink", "stopping": "stages:StoppingSink",
             "blocking": "stages:BlockingSink"}
    for name, target in table.items():
        monkeypatch.setitem(plugins.available("sinks"), name,
                            plugins.Plugin("sinks", name, target, "tests", "0"))
    monkeypatch.setattr(sinks, "CLOSE_S", 0.5)
    stages.BlockingSink.release.clear()
    stages.BlockingSink.instances.clear()
    yield
    stages.BlockingSink.release.set()


def test_a_run_goes_on_past_a_failing_sink(tmp_path, test_sinks, capsys):
    out = tmp_path / "s.json"
    assert main(["read", str(MANY), "--interval", "0.05", "-o", f"json:{out}",
                 "-o", "failing:x"]) == 0
    records = stream.decode(out.read_bytes(), "json")
    windows = [r for r in records if r["type"] == "window"]
    assert records[-1]["type"] == "summary" and records[-1]["windows"] == len(windows) > 400
    (report,) = records[-1]["outputs"]
    # the summary itself is the last record the failing sink did not write
    assert report["output"] == "failing:x" and report["written"] == 2
    assert report["dropped"] == len(records) - 1 - 2
    err = capsys.readouterr().err
    assert "output failing:x failed: " in err and "the run goes on without it" in err
    assert f"output failing:x: {len(records) - 2} record(s) not written (2 written)" in err


def test_a_stop_sink_ends_the_run_with_its_error_after_the_summary(tmp_path, test_sinks,
                                                                   capsys):
    out = tmp_path / "s.json"
    assert main(["read", str(MANY), "--interval", "0.001", "-o", f"json:{out}",
                 "-o", "stopping:x"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == ("pt-engine: error: stopping:x: the test's sink "
                                            "failed on purpose")
    records = stream.decode(out.read_bytes(), "json")
    summary = records[-1]
    assert summary["type"] == "summary" and summary["interrupted"] is False
    assert {s["status"] for s in summary["sources"]} <= {"stopped", "eof"}
    windows = [r for r in records if r["type"] == "window"]
    assert sum(w["totals"]["packets"] for w in windows) == summary["totals"]["packets"] > 0


@pytest.mark.skipif(os.geteuid() != 0, reason="a live capture needs root (or CAP_NET_RAW)")
def test_a_live_run_goes_on_past_a_blocking_sink(tmp_path, test_sinks, capsys):
    if not hasattr(socket, "AF_PACKET"):
        pytest.skip("live capture needs Linux")
    out = tmp_path / "s.json"
    assert main(["run", "-i", "lo", "--duration", "2.5", "--interval", "0.2",
                 "--output-buffer", "0.001", "-o", f"json:{out}", "-o", "blocking:x"]) == 0
    records = stream.decode(out.read_bytes(), "json")
    assert records[0]["type"] == "hello" and records[-1]["type"] == "summary"
    assert len([r for r in records if r["type"] == "window"]) >= 10
    (sink,) = stages.BlockingSink.instances
    assert sink.written == 0 and sink.dropped == len(records)
    (report,) = records[-1]["outputs"]
    assert report["output"] == "blocking:x" and report["written"] == 0
    assert 0 < report["dropped"] < len(records)      # some were still queued then
    assert f"output blocking:x: {len(records)} record(s) not written" in capsys.readouterr().err


# --- several outputs, destinations ---------------------------------------------------------

def test_several_outputs_at_once(tmp_path):
    """`read X -o - -o unix:... -o FILE` writes all three, the same records."""
    import subprocess
    sock = tmp_path / "s.sock"
    rec = tmp_path / "rec.msgpack"
    proc = subprocess.Popen([sys.executable, "-m", "pt_engine", "read", str(MANY),
                             "--output", "-", "--output", f"unix:{sock}", "--output", str(rec),
                             "--format", "msgpack"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    # stdout is read while the test subscribes: the stream is larger than a pipe
    # holds, and a file run waits for a sink that does not read (not for ever)
    read = {}
    reader = threading.Thread(target=lambda: read.update(out=proc.stdout.read()))
    reader.start()
    got = subscribe(sock, proc)
    reader.join(timeout=60)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    from_stdout = stream.decode(read["out"])
    from_socket = [r for r in stream.decode(bytes(got)) if r["type"] != "snapshot"]
    assert from_stdout == from_socket == stream.decode(rec.read_bytes())
    assert from_stdout[-1]["type"] == "summary" and "outputs" not in from_stdout[-1]


@pytest.mark.parametrize("text, expected", [
    ("-", ("stdout", None, "msgpack")),
    ("json:-", ("stdout", None, "json")),
    ("/tmp/a.msgpack", ("file", "/tmp/a.msgpack", "msgpack")),
    ("json:/tmp/a.json", ("file", "/tmp/a.json", "json")),
    ("file:/tmp/x:y", ("file", "/tmp/x:y", "msgpack")),
    ("./csv:x", ("file", "./csv:x", "msgpack")),
    ("unix:/run/pt.sock", ("unix", "/run/pt.sock", "msgpack")),
    ("json:unix:/run/pt.sock", ("unix", "/run/pt.sock", "json")),
])
def test_destinations(text, expected):
    dest = parse_destination(text, "msgpack")
    assert (dest.scheme, dest.target, dest.format) == expected


@pytest.mark.parametrize("argv, message", [
    (["-o", "nosuch:/x"], "no sink for the scheme 'nosuch'"),
    (["-o", "unix:"], "unix: needs a socket path"),
    (["--analyser", "nosuch"], "no analyser named 'nosuch'"),
    (["--observer", "nosuch"], "no observer named 'nosuch'"),
])
def test_unknown_stages_are_one_line_errors(argv, message, capsys):
    assert main(["read", str(MANY), *argv]) in (1, 2)
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_config_file_outputs_are_a_list(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.msgpack"
    config = tmp_path / "c.toml"
    config.write_text(f'output = ["json:{a}", "{b}"]\n')
    assert main(["read", str(MANY), "--config", str(config)]) == 0
    assert stream.decode(a.read_bytes(), "json") == stream.decode(b.read_bytes())
    assert json.loads(a.read_text().splitlines()[-1])["type"] == "summary"
