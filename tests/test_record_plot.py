"""`pt-engine record` and `pt-engine plot`, and the stream client under them.

Recordings are made from capture files (`record --read`) and from a running
engine's socket (`read --output unix:` + `record --connect`); rotation keeps
whole records and N files; appending adds whole hello ... summary sequences.
Charts are checked on the matplotlib objects (labels, series, totals) and on
the PNG header (size).
"""
import json
import math
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from pt_engine import client, plot, stream
from pt_engine.cli import main
from pt_engine.errors import StreamError, TruncatedStream
from pt_engine.sinks.recording import RotatingFile as RotatingFileSink
from frames import DLT_EN10MB, IPPROTO_TCP, IPPROTO_UDP, eth, ipv4, pcap_file, tcp, udp
from streams import CORPUS, read_stream

MANY = CORPUS / "ppp_many-protocols.pcap"      # 4709 packets, 52 windows
MANY_EXPECTED = json.loads((CORPUS / "ppp_many-protocols.pcap.expected.json").read_text())
T0 = 1_700_000_000          # the synthetic capture starts at 2023-11-14 22:13:20 UTC


def busy_capture(seconds: int) -> bytes:
    """A pcap with steady, known rates: per second, udp/53 gets 15000 bytes in one
    packet and sends 2 x 12500; tcp/443, tcp/80, tcp/5432 and tcp/22 carry more
    (22 only in the second half), udp/123 a little; each second uses new client
    ports. Frames hold the headers only; the wire lengths carry the bytes."""
    half, third = seconds / 2, seconds / 3
    services = [
        ("tcp", 443, lambda t: 80e3, lambda t: 1.5e6 * (1.2 + math.sin(t / 120))),
        ("tcp", 80, lambda t: 20e3, lambda t: 3e5 + (9e5 if 300 < t % 900 < 420 else 0)),
        ("udp", 53, lambda t: 15e3, lambda t: 25e3),
        ("tcp", 22, lambda t: 4e3 if t > half else 0, lambda t: 2.5e4 if t > half else 0),
        ("tcp", 5432, lambda t: 3e5 if t < third else 1e4, lambda t: 6e5 if t < third else 2e4),
        ("udp", 123, lambda t: 200, lambda t: 200),
    ]
    records = []
    for t in range(seconds):
        for k, (proto, port, rate_in, rate_out) in enumerate(services):
            peer = 40000 + k * 1000 + t % 1000
            for sport, dport, rate in ((peer, port, rate_in(t)), (port, peer, rate_out(t))):
                if rate <= 0:
                    continue
                n = min(4, int(rate // 20000) + 1)
                l4 = tcp(sport, dport) if proto == "tcp" else udp(sport, dport)
                frame = eth() + ipv4("10.0.0.2", "10.0.0.1",
                                     IPPROTO_TCP if proto == "tcp" else IPPROTO_UDP, l4)
                for j in range(n):
                    ts = (T0 + t) * 10**9 + j * 10**9 // n + k * 1000 + (sport == port)
                    records.append((ts, frame, max(len(frame), int(rate / n))))
    records.sort(key=lambda r: r[0])
    return pcap_file(records, DLT_EN10MB, nano=True)


@pytest.fixture(scope="module")
def busy(tmp_path_factory):
    """Ten minutes of busy_capture, recorded; returns the recording's path."""
    where = tmp_path_factory.mktemp("busy")
    pcap = where / "busy.pcap"
    pcap.write_bytes(busy_capture(600))
    rec = where / "busy.msgpack"
    assert main(["record", str(rec), "--read", str(pcap)]) == 0
    return rec


def records_of(path) -> list[dict]:
    return list(client.iter_records(str(path)))


def windows_of(records) -> list[dict]:
    return [r for r in records if r["type"] == "window"]


def png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def one_line_error(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("pt-engine: error: ")]
    assert len(lines) == 1, err
    return lines[0]


# --- record ----------------------------------------------------------------------------

def test_record_read_writes_the_read_stream(tmp_path):
    rec = tmp_path / "rec.msgpack"
    assert main(["record", str(rec), "--read", str(MANY)]) == 0
    _, expected, raw = read_stream(tmp_path, str(MANY))
    assert rec.read_bytes() == raw
    records = records_of(rec)
    assert records == expected
    assert len(windows_of(records)) == 52
    assert {k: records[-1][k] for k in ("totals", "classes", "ports")} == \
        {k: MANY_EXPECTED[k] for k in ("totals", "classes", "ports")}


def test_record_appends_whole_runs(tmp_path):
    rec = tmp_path / "rec.msgpack"
    assert main(["record", str(rec), "--read", str(MANY)]) == 0
    once = rec.read_bytes()
    assert main(["record", str(rec), "--read", str(MANY)]) == 0
    assert rec.read_bytes() == once + once
    types = [r["type"] for r in records_of(rec)]
    assert types == 2 * (["hello"] + ["window"] * 52 + ["summary"])


def test_rotation_keeps_whole_records_and_n_files(tmp_path):
    rec = tmp_path / "rec.msgpack"
    max_bytes = int(0.005 * (1 << 20))
    assert main(["record", str(rec), "--read", str(MANY), "--max-size", "0.005",
                 "--keep", "2"]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["rec.msgpack", "rec.msgpack.1", "rec.msgpack.2"]
    full = windows_of(read_stream(tmp_path, str(MANY))[1])
    kept = []
    for path in (rec.with_name("rec.msgpack.2"), rec.with_name("rec.msgpack.1"), rec):
        records = records_of(path)           # whole records only: no TruncatedStream
        # within the limit, or a record larger than it in a file of its own (after its
        # hello): the summary, with its tcp_quality rows
        assert path.stat().st_size <= max_bytes or len(records) == 2
        assert records[0]["type"] == "hello"
        kept += windows_of(records)
    assert records[-1]["type"] == "summary"
    # The oldest windows went with the dropped files; the rest are there in order.
    assert kept == full[len(full) - len(kept):] and 0 < len(kept) < len(full)


def test_rotation_loses_nothing_with_enough_files(tmp_path):
    rec = tmp_path / "rec.msgpack"
    assert main(["record", str(rec), "--read", str(MANY), "--max-size", "0.004",
                 "--keep", "50"]) == 0
    rotated = sorted((p for p in tmp_path.iterdir() if p.name != "rec.msgpack"),
                     key=lambda p: -int(p.suffix[1:]))
    assert len(rotated) >= 4
    recordings = [str(p) for p in rotated] + [str(rec)]
    records = [r for path in recordings for r in records_of(path)]
    full = read_stream(tmp_path, str(MANY))[1]
    assert windows_of(records) == windows_of(full)
    assert [r for r in records if r["type"] == "hello"] == [full[0]] * len(recordings)
    assert records[-1] == full[-1]


def test_rotating_sink_gives_an_oversized_record_a_file_of_its_own(tmp_path):
    path = tmp_path / "s.msgpack"
    encode = stream.encoder("msgpack")
    hello = encode(stream.hello([], 10**9, None, None, "native"))
    big = encode({"type": "window", "pad": "x" * 500})
    small = encode({"type": "window", "pad": "y"})
    sink = RotatingFileSink(str(path), max_bytes=len(hello) + len(small), keep=0)
    sink.write(hello, "hello")
    sink.write(small, "window")
    sink.write(big, "window")
    sink.write(small, "window")
    sink.close()
    assert sink.rotations == 2 and not path.with_name("s.msgpack.1").exists()
    assert path.read_bytes() == hello + small          # keep 0: only the newest file


def test_append_cuts_a_partial_last_record(tmp_path, capsys):
    rec = tmp_path / "rec.msgpack"
    assert main(["record", str(rec), "--read", str(MANY)]) == 0
    whole = rec.read_bytes()
    rec.write_bytes(whole[:-5])                        # a recorder killed mid-write
    with pytest.raises(TruncatedStream):
        records_of(rec)
    assert main(["record", str(rec), "--read", str(MANY)]) == 0
    assert "cutting the" in capsys.readouterr().err
    records = records_of(rec)
    assert [r["type"] for r in records].count("hello") == 2
    assert records[-54:] == stream.decode(whole)


def test_append_refuses_what_is_not_a_recording(tmp_path):
    not_ours = tmp_path / "capture.pcap"
    not_ours.write_bytes(MANY.read_bytes()[:4096])
    proc = subprocess.run([sys.executable, "-m", "pt_engine", "record", str(not_ours), "--read",
                           str(MANY)], capture_output=True, timeout=120)
    assert proc.returncode == 1
    assert "not a pt-engine msgpack recording" in one_line_error(proc.stderr.decode())
    assert not_ours.read_bytes() == MANY.read_bytes()[:4096]


def _serve_read(tmp_path, *args):
    sock = tmp_path / "engine.sock"
    engine = subprocess.Popen([sys.executable, "-m", "pt_engine", "read", str(MANY), *args,
                               "--output", f"unix:{sock}"], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not sock.exists():
        assert engine.poll() is None, engine.stderr.read()
        assert time.monotonic() < deadline, "the engine did not create its socket"
        time.sleep(0.05)
    return engine, sock


def test_record_connect_records_a_running_engine(tmp_path):
    engine, sock = _serve_read(tmp_path)
    rec = tmp_path / "rec.msgpack"
    try:
        assert main(["record", str(rec), "--connect", f"unix:{sock}"]) == 0
    finally:
        assert engine.wait(60) == 0
    records = records_of(rec)
    expected = read_stream(tmp_path, str(MANY))[1]
    assert [r["type"] for r in records] == ["hello", "snapshot"] + ["window"] * 52 + ["summary"]
    assert records[0] == expected[0]
    assert windows_of(records) == windows_of(expected)
    assert records[-1] == expected[-1]


def test_record_connect_rotates_too(tmp_path):
    engine, sock = _serve_read(tmp_path, "--interval", "0.5")
    rec = tmp_path / "rec.msgpack"
    try:
        assert main(["record", str(rec), "--connect", f"unix:{sock}", "--max-size", "0.01",
                     "--keep", "20"]) == 0
    finally:
        engine.wait(60)
    files = [rec] + sorted(tmp_path.glob("rec.msgpack.*"))
    assert len(files) > 1
    for path in files:
        records = records_of(path)
        # within the limit, or one larger record in a file of its own (after its hello)
        assert path.stat().st_size <= 0.01 * (1 << 20) or len(records) == 2
        assert records[0]["type"] == "hello"


class FakeEngine:
    """A UNIX socket server that sends `data` to its first subscriber, then closes
    (or, with hold=True, keeps the connection open until stopped)."""

    def __init__(self, path, data: bytes, hold: bool = False):
        self.path = str(path)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(1)
        self.data, self.hold = data, hold
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conn, _ = self.server.accept()
        conn.sendall(self.data)
        if self.hold:
            self.done.wait(60)
        conn.close()
        self.server.close()

    def stop(self):
        self.done.set()
        self.thread.join(10)


def test_client_reports_a_connection_closed_mid_record(tmp_path):
    raw = read_stream(tmp_path, str(MANY))[2]
    records = stream.decode(raw)
    cut = len(stream.encoder("msgpack")(records[0])) + 20
    engine = FakeEngine(tmp_path / "e.sock", raw[:cut])
    got = []
    with pytest.raises(TruncatedStream) as info:
        for record in client.iter_records(f"unix:{engine.path}"):
            got.append(record)
    assert got == records[:1] and info.value.records_read == 1
    assert "closed in the middle of a record, after 1 whole records" in str(info.value)
    engine.stop()


def test_record_connect_keeps_whole_records_when_the_engine_breaks_off(tmp_path, capsys):
    raw = read_stream(tmp_path, str(MANY))[2]
    records = stream.decode(raw)
    encode = stream.encoder("msgpack")
    cut = sum(len(encode(r)) for r in records[:5]) + 7
    engine = FakeEngine(tmp_path / "e.sock", raw[:cut])
    rec = tmp_path / "rec.msgpack"
    assert main(["record", str(rec), "--connect", f"unix:{engine.path}"]) == 1
    assert "in the middle of a record, after 5 whole records" in \
        one_line_error(capsys.readouterr().err)
    assert records_of(rec) == records[:5]
    engine.stop()


def test_record_connect_stops_on_sigint_and_on_duration(tmp_path):
    hello = stream.encoder("msgpack")(stream.hello([], 10**9, None, None, "native"))
    for how in ("sigint", "duration"):
        engine = FakeEngine(tmp_path / f"{how}.sock", hello, hold=True)
        rec = tmp_path / f"{how}.msgpack"
        extra = ["--duration", "0.5"] if how == "duration" else []
        proc = subprocess.Popen([sys.executable, "-m", "pt_engine", "record", str(rec),
                                 "--connect", f"unix:{engine.path}", *extra],
                                stderr=subprocess.PIPE)
        if how == "sigint":
            deadline = time.monotonic() + 60
            while not (rec.exists() and rec.stat().st_size):
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, proc.stderr.read()
        assert [r["type"] for r in records_of(rec)] == ["hello"]
        engine.stop()


def test_connect_errors_name_the_socket(tmp_path):
    missing = tmp_path / "missing.sock"
    with pytest.raises(StreamError, match="no such socket"):
        client.connect(f"unix:{missing}")
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))            # bound, never listening: what a dead engine leaves
    with pytest.raises(StreamError, match="connection refused"):
        client.connect(f"unix:{stale}")
    s.close()
    with pytest.raises(StreamError, match="it is a socket: give it as unix:"):
        client.connect(str(stale))


@pytest.mark.parametrize("argv, message", [
    (["--connect", "unix:/x.sock", "-i", "lo", "--ports", "80"],
     "--connect records a running engine's stream as it is: -i, --ports do not apply"),
    (["--read", str(MANY), "--workers", "2"], "--read counts capture files; --workers"),
    (["--max-size", "0"], "--max-size 0.0"),
    (["--keep", "-1"], "--keep -1"),
])
def test_record_option_errors(tmp_path, argv, message):
    proc = subprocess.run([sys.executable, "-m", "pt_engine", "record",
                           str(tmp_path / "r.msgpack"), *argv], capture_output=True,
                          timeout=60)
    assert proc.returncode == 2
    assert message in one_line_error(proc.stderr.decode())
    assert not (tmp_path / "r.msgpack").exists()


def test_record_connect_to_nothing_is_a_runtime_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pt_engine", "record", str(tmp_path / "r"),
                           "--connect", f"unix:{tmp_path}/none.sock"], capture_output=True,
                          timeout=60)
    assert proc.returncode == 1
    assert "no such socket" in one_line_error(proc.stderr.decode())
    assert not (tmp_path / "r").exists()


# --- the client on files and stdin -----------------------------------------------------

def test_client_reads_json_lines_and_msgpack_alike(tmp_path):
    _, as_msgpack, raw = read_stream(tmp_path, str(MANY))
    _, _, raw_json = read_stream(tmp_path, str(MANY), fmt="json")
    (tmp_path / "s.json").write_bytes(raw_json)
    (tmp_path / "s.msgpack").write_bytes(raw)
    assert records_of(tmp_path / "s.json") == records_of(tmp_path / "s.msgpack") == as_msgpack
    with client.connect(str(tmp_path / "s.json")) as c:
        assert c.read(0) and c.format == "json"


def test_client_reads_stdin(tmp_path):
    raw = read_stream(tmp_path, str(MANY))[2]
    code = ("import sys; from engine.client import iter_records; "
            "print(sum(r['type'] == 'window' for r in iter_records('-')))")
    proc = subprocess.run([sys.executable, "-c", code], input=raw, capture_output=True,
                          timeout=60)
    assert proc.stdout.decode().strip() == "52", proc.stderr


def test_client_rejects_what_is_not_a_stream(tmp_path):
    raw = read_stream(tmp_path, str(MANY))[2]
    bad = tmp_path / "bad.msgpack"
    at = len(stream.encoder("msgpack")(stream.decode(raw)[0]))
    bad.write_bytes(raw[:at] + b"\xc1" + raw[at:])
    with pytest.raises(StreamError, match="corrupt msgpack after 1 records") as info:
        records_of(bad)
    assert info.value.records_read == 1
    with pytest.raises(StreamError, match="does not begin with a hello"):
        records_of_bytes(tmp_path, stream.encoder("msgpack")({"type": "window"}))
    with pytest.raises(StreamError, match="is empty"):
        records_of_bytes(tmp_path, b"")
    newer = dict(stream.decode(raw)[0], format_version=99)
    with pytest.raises(StreamError, match="format version 99"):
        records_of_bytes(tmp_path, stream.encoder("msgpack")(newer))


def records_of_bytes(tmp_path, data: bytes) -> list[dict]:
    path = tmp_path / f"x-{len(list(tmp_path.iterdir()))}"
    path.write_bytes(data)
    return records_of(path)


# --- plot ------------------------------------------------------------------------------

def tick_labels(ax) -> list[str]:
    return [t.get_text() for t in ax.get_yticklabels()]


def test_plot_png_size_and_port_labels(tmp_path):
    rec = tmp_path / "rec.msgpack"
    assert main(["record", str(rec), "--read", str(MANY)]) == 0
    out = tmp_path / "many.png"
    assert main(["plot", str(rec), "-o", str(out), "--top", "5", "--size", "1000x700"]) == 0
    assert png_size(out) == (1000, 700)

    recording = plot.load([str(rec)], top=5)
    fig = plot.figure(recording, (1000, 700))
    ax_in, ax_out, ax_bar = fig.axes[:3]       # then the TCP quality panels
    busiest = sorted(MANY_EXPECTED["ports"], key=lambda r: (-(r[3] + r[5]), r[0], r[1]))[:5]
    labels = [f"{r[0]}/{r[1]}" for r in busiest]
    assert labels[:2] == ["tcp/80", "tcp/443"]
    assert tick_labels(ax_bar) == labels
    assert [line.get_label() for line in ax_in.patches] == labels
    assert [text.get_text() for text in fig.legends[0].get_texts()] == labels
    # Totals are the summary's, exactly; the series hold every byte of them.
    assert [(p.in_bytes, p.out_bytes) for p in recording.ports] == [(r[3], r[5]) for r in busiest]
    seconds = recording.covered_ns / 1e9
    for port in recording.ports:
        assert np.nansum(port.in_rate * seconds) == pytest.approx(port.in_bytes)
        assert np.nansum(port.out_rate * seconds) == pytest.approx(port.out_bytes)
    assert ax_in.get_ylabel().endswith("B/s") and ax_bar.get_xlabel().startswith(("kB", "MB"))
    assert ax_out.get_xlabel() == "time (UTC)"
    assert "2010-06-29 19:41:35" in fig.get_suptitle()
    assert "ppp_many-protocols.pcap" in fig.get_suptitle()


def test_plot_rates_of_a_busy_capture(busy, tmp_path):
    out = tmp_path / "busy.png"
    assert main(["plot", str(busy), "-o", str(out), "--top", "5", "--last", "5m"]) == 0
    assert png_size(out) == (1200, 900)
    recording = plot.load([str(busy)], top=5, last_ns=300 * 10**9)
    # In the last five minutes tcp/5432 is down to 30 kB/s, below udp/53's 40 kB/s.
    assert [p.label for p in recording.ports] == ["tcp/443", "tcp/80", "udp/53", "tcp/5432",
                                                 "tcp/22"]
    assert (recording.start_ns, recording.end_ns) == ((T0 + 300) * 10**9, (T0 + 600) * 10**9)
    assert recording.bin_ns == 10**9 and recording.windows == 300
    dns = recording.ports[2]
    assert np.all(dns.in_rate == 15000) and np.all(dns.out_rate == 25000)
    assert (dns.in_bytes, dns.out_bytes) == (300 * 15000, 300 * 25000)
    fig = plot.figure(recording)
    assert fig.axes[0].get_ylabel() == "kB/s" and fig.axes[1].get_ylabel() == "MB/s"


def test_plot_bins_a_long_recording_and_marks_what_was_not_recorded(tmp_path):
    encode = stream.encoder("msgpack")
    second = 10**9
    hello = stream.hello([{"iface": 0, "kind": "live", "name": "eth0"}], second, None, None,
                         "native")

    def run(start, seconds, port_bytes):
        out = [encode(hello)]
        for t in range(start, start + seconds):
            out.append(encode({"type": "window", "start_ns": t * second,
                               "end_ns": (t + 1) * second, "ports": [
                                   ["tcp", 443, 1, port_bytes, 1, 2 * port_bytes]]}))
        out.append(encode({"type": "summary"}))
        return b"".join(out)

    # Two hours with a 30-minute hole in the middle (the engine was stopped).
    rec = tmp_path / "rec.msgpack"
    rec.write_bytes(run(T0, 2700, 1000) + run(T0 + 4500, 2700, 3000))
    recording = plot.load([str(rec)])
    assert recording.bin_ns == 15 * second           # 7200 s in at most 480 bins
    rate = recording.ports[0].in_rate
    left = recording.edges_ns[:-1] // second - T0
    right = left + 15
    assert np.all(rate[left < 2700] == 1000)        # also the bin half recorded
    assert np.all(np.isnan(rate[(left >= 2700) & (right <= 4500)]))
    assert np.all(rate[right > 4500] == 3000)
    assert recording.sources == ["eth0"]
    # The same run recorded twice (appended) adds up, as two engines would.
    rec.write_bytes(run(T0, 60, 1000) * 2)
    assert np.all(plot.load([str(rec)]).ports[0].in_rate == 2000)


def test_plot_reads_rotated_files_and_a_file_still_being_written(busy, tmp_path, capsys):
    rec = tmp_path / "rot.msgpack"
    assert main(["record", str(rec), "--read", str(busy.with_name("busy.pcap")),
                 "--max-size", "0.1", "--keep", "100"]) == 0
    files = [str(p) for p in sorted(tmp_path.glob("rot.msgpack.*"),
                                    key=lambda p: -int(p.suffix[1:]))] + [str(rec)]
    assert len(files) > 2
    whole = plot.load([str(busy)], top=5)
    parts = plot.load(files, top=5)
    assert [(p.label, p.in_bytes, p.out_bytes) for p in parts.ports] == \
        [(p.label, p.in_bytes, p.out_bytes) for p in whole.ports]
    assert parts.sources == ["busy.pcap"]
    data = rec.read_bytes()
    rec.write_bytes(data[:-3])
    capsys.readouterr()
    out = tmp_path / "cut.png"
    assert main(["plot", *files, "-o", str(out)]) == 0
    assert "in the middle of a record" in capsys.readouterr().err
    assert png_size(out) == (1200, 900)


def test_plot_errors(tmp_path, monkeypatch, capsys):
    empty_pcap = tmp_path / "empty.pcap"
    empty_pcap.write_bytes(pcap_file([], DLT_EN10MB))
    no_windows = tmp_path / "nowin.msgpack"
    assert main(["record", str(no_windows), "--read", str(empty_pcap)]) == 0
    rec = tmp_path / "rec.msgpack"
    assert main(["record", str(rec), "--read", str(MANY)]) == 0
    raw = rec.read_bytes()
    corrupt = tmp_path / "corrupt.msgpack"
    at = sum(len(stream.encoder("msgpack")(r)) for r in stream.decode(raw)[:12])
    corrupt.write_bytes(raw[:at] + b"\xc1" * 8 + raw[at:])
    out = str(tmp_path / "o.png")
    cases = [
        ([str(no_windows)], 1, "no window records to chart"),
        ([str(corrupt)], 1, "corrupt msgpack after 12 records"),
        ([str(MANY)], 1, "not a pt-engine stream"),
        ([str(tmp_path / "nope")], 1, "no such file"),
        ([str(rec), "--since", "2030-01-01"], 1,
         ("no windows between 2030-01-01 00:00:00 UTC and the end; the recording covers "
          "2010-06-29 19:41:35")),
        ([str(rec), "--top", "0"], 2, "--top 0"),
        ([str(rec), "--size", "big"], 2, "--size 'big'"),
        ([str(rec), "--since", "yesterday"], 2, "--since 'yesterday'"),
        ([str(rec), "--last", "1h", "--since", "0"], 2, "--last counts back"),
        ([str(rec), "--last", "an hour"], 2, "--last 'an hour'"),
    ]
    for argv, status, message in cases:
        assert main(["plot", *argv, "-o", out]) == status, argv
        assert message in one_line_error(capsys.readouterr().err), argv
    assert not os.path.exists(out)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert main(["plot", str(rec), "-o", out]) == 1
    assert "plot needs matplotlib" in one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("15m", 900), ("1h", 3600), ("1h30m", 5400), ("2d", 172800), ("1.5h", 5400),
    ("45", 45)])
def test_durations(text, seconds):
    assert plot.parse_duration(text, "--last") == seconds * 10**9


@pytest.mark.parametrize("text, ns", [
    ("2023-11-14T22:13:20", T0 * 10**9), ("2023-11-14 22:13:20Z", T0 * 10**9),
    ("2023-11-15T00:13:20+02:00", T0 * 10**9), (str(T0), T0 * 10**9),
    ("2023-11-14", (T0 - 80000) * 10**9)])
def test_times_are_utc(text, ns):
    assert plot.parse_time(text, "--since") == ns


@pytest.mark.parametrize("name, magic", [("c.jpg", b"\xff\xd8\xff"), ("c.JPEG", b"\xff\xd8\xff"),
                                         ("c.svg", b"<?xml"), ("c.pdf", b"%PDF")])
def test_plot_writes_the_format_its_extension_names(tmp_path, name, magic):
    rec = tmp_path / "rec.msgpack"
    assert main(["record", str(rec), "--read", str(MANY)]) == 0
    out = tmp_path / name
    assert main(["plot", str(rec), "-o", str(out)]) == 0
    assert out.read_bytes().startswith(magic)


@pytest.mark.parametrize("name", ["c.gif", "chart"])
def test_plot_refuses_an_extension_it_cannot_write(tmp_path, name, capsys):
    rec = tmp_path / "rec.msgpack"
    rec.write_bytes(b"")
    assert main(["plot", str(rec), "-o", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and ".png, .jpg, .jpeg, .svg, .pdf" in err
    assert not (tmp_path / name).exists()


# --- TCP quality panels -------------------------------------------------------------------

QUALITY_CAPTURE = CORPUS.parent / "quality-corpus" / "zeek_mapi.pcap"


def test_plot_charts_tcp_quality_when_the_windows_carry_it(tmp_path):
    """Per charted TCP port and bin: the RTT percentiles of the bin's rows merged
    (the side with the most samples), and retransmitted % of both sides."""
    from pt_engine.analysers import tcp_quality as q
    rec_path = tmp_path / "q.msgpack"
    assert main(["record", str(rec_path), "--read", str(QUALITY_CAPTURE), "--analyser",
                 "tcp_quality", "--interval", "0.25"]) == 0
    rec = plot.load([str(rec_path)], top=8)
    assert rec.quality and {(s.proto, s.port) for s in rec.quality} <= \
        {(p.proto, p.port) for p in rec.ports}
    assert any(np.isfinite(s.rtt_p95_ms).any() for s in rec.quality)
    windows = windows_of(records_of(rec_path))
    for series in rec.quality:
        per_bin: dict[int, dict[str, list]] = {}
        for w in windows:
            b = min((w["start_ns"] - rec.edges_ns[0]) // rec.bin_ns, len(rec.edges_ns) - 2)
            for row in w["tcp_quality"]["rows"]:
                if row[1] == series.port:         # load() folds nothing unless asked
                    per_bin.setdefault(b, {}).setdefault(row[2], []).append(q.row_values(row))
        for b in range(len(rec.edges_ns) - 1):
            sides = per_bin.get(b, {})
            mine = q.merged(sides.get(series.side, []))
            want = q.metric(mine, "rtt_p95_ms")
            got = series.rtt_p95_ms[b]
            assert (want is None and math.isnan(got)) or got == pytest.approx(want)
            every = q.merged(sides.get("in", []) + sides.get("out", []))
            want = q.metric(every, "retrans_ratio")
            got = series.retrans_pct[b]
            assert (want is None and math.isnan(got)) or got == pytest.approx(want * 100)
    out = tmp_path / "q.png"
    assert main(["plot", str(rec_path), "-o", str(out)]) == 0
    assert png_size(out) == (1200, 1400)
    assert len(plot.figure(rec).axes) == 5


def test_plot_without_tcp_quality_keeps_three_panels(tmp_path):
    rec_path = tmp_path / "p.msgpack"
    assert main(["record", str(rec_path), "--read", str(QUALITY_CAPTURE), "--no-tcp-quality"]) == 0
    rec = plot.load([str(rec_path)])
    assert rec.quality is None and len(plot.figure(rec).axes) == 3
    out = tmp_path / "p.png"
    assert main(["plot", str(rec_path), "-o", str(out)]) == 0
    assert png_size(out) == (1200, 900)
