"""--output prometheus:HOST:PORT: the exposition itself, and Debian's prometheus
scraping a `pt-engine read` exporter."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import frames as F
from servers import Prometheus, free_port, why_not_prometheus
from streams import run_cli

CAPTURE = Path(__file__).parent / "data" / "many-protocols-snap96.pcap"
T0 = 1_700_000_000 * 10**9


def _capture() -> tuple[bytes, bytes]:
    """The capture (many ports, then non-IP frames that close its windows while the
    read from a pipe waits) and the same without those frames."""
    records = []
    for s in range(4):
        for port in (22, 53, 80, 443, 5000, 6000, 7000):
            frame = F.eth() + F.ipv4(payload=F.udp(40000 + s, port, b"z" * (port % 50)))
            records.append((T0 + s * 10**9 + port, frame, None))
    filler = [(T0 + 60 * 10**9, F.eth(et=F.ETH_ARP) + F.arp(), None)] * 20000
    return (F.pcap_file(records + filler, F.DLT_EN10MB), F.pcap_file(records, F.DLT_EN10MB))


def _summary_of(data: bytes, tmp_path: Path) -> dict:
    path = tmp_path / "plain.pcap"
    path.write_bytes(data)
    result = run_cli("read", str(path), "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.decode().splitlines()[-1])


class _Exporter:
    """`pt-engine read -` with a prometheus: output, fed `data`, kept open until closed."""

    def __init__(self, data: bytes, *args: str):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "pt_engine", "read", "-", "-o",
                                      f"prometheus:127.0.0.1:{self.port}", "-o", "/dev/null",
                                      *args], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def metrics(self, want: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics",
                                            timeout=5) as response:
                    text = response.read().decode()
                if want in text:
                    return text
            except OSError:
                pass
            assert time.monotonic() < deadline, f"no {want!r} on /metrics"
            time.sleep(0.2)

    def close(self) -> None:
        _, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err


def _samples(text: str, name: str) -> dict[str, float]:
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
            if line.startswith(name + "{")}


def test_exposition_names_labels_and_other(tmp_path):
    data, plain = _capture()
    summary = _summary_of(plain, tmp_path)
    exporter = _Exporter(data, "--prometheus-ports", "22,80")
    try:
        text = exporter.metrics("pt_engine_windows_total 4.0")
    finally:
        exporter.close()
    assert "# TYPE pt_engine_port_bytes_total counter" in text
    assert "# HELP pt_engine_port_packets_total" in text
    bytes_ = _samples(text, "pt_engine_port_bytes_total")
    ports = {key.split('port="')[1].split('"')[0] for key in bytes_}
    assert ports == {"22", "80", "other"}
    assert sum(bytes_.values()) == sum(r[3] + r[5] for r in summary["ports"])
    dst = {r[1]: r[3] for r in summary["ports"]}
    assert bytes_['pt_engine_port_bytes_total{direction="in",port="22",proto="udp"}'] == dst[22]
    assert bytes_['pt_engine_port_bytes_total{direction="in",port="other",proto="udp"}'] == \
        sum(v for p, v in dst.items() if p not in (22, 80))
    classes = _samples(text, "pt_engine_class_bytes_total")
    assert classes['pt_engine_class_bytes_total{class="ported"}'] == \
        summary["classes"]["ported"]["bytes"]
    assert 'pt_engine_build_info{backend="' in text
    outputs = _samples(text, "pt_engine_output_dropped_records_total")
    assert outputs == {f'pt_engine_output_dropped_records_total{{output="{name}"}}': 0.0
                       for name in (f"prometheus:127.0.0.1:{exporter.port}", "/dev/null")}


@pytest.mark.parametrize("target, message", [
    ("prometheus:9464", "write it as prometheus:HOST:PORT"),
    ("prometheus:127.0.0.1:70000", "write it as prometheus:HOST:PORT"),
    ("prometheus:203.0.113.9:9464", "cannot serve on 203.0.113.9:9464"),
])
def test_bad_prometheus_outputs_are_one_line(target, message):
    result = run_cli("read", str(CAPTURE), "-o", target, "-o", "/dev/null")
    err = result.stderr.decode()
    assert result.returncode in (1, 2) and err.count("\n") == 1 and message in err, err


@pytest.mark.skipif(why_not_prometheus() is not None, reason=str(why_not_prometheus()))
def test_prometheus_scrapes_sums_that_add_up(tmp_path):
    data, plain = _capture()
    summary = _summary_of(plain, tmp_path)
    expected = sum(r[3] + r[5] for r in summary["ports"])
    exporter = _Exporter(data, "--prometheus-ports", "53,443")
    server = Prometheus(tmp_path, [f"127.0.0.1:{exporter.port}"])
    try:
        exporter.metrics("pt_engine_windows_total 4.0")
        server.start()
        deadline = time.monotonic() + 60
        while True:
            result = server.query("sum(pt_engine_port_bytes_total)")
            if result and float(result[0]["value"][1]) == expected:
                break
            assert time.monotonic() < deadline, result
            time.sleep(0.5)
        other = server.query('sum(pt_engine_port_bytes_total{port="other"})')
        named = server.query('sum(pt_engine_port_bytes_total{port!="other"})')
        assert float(other[0]["value"][1]) > 0 and float(named[0]["value"][1]) > 0
        assert float(other[0]["value"][1]) + float(named[0]["value"][1]) == expected
        ports = {s["metric"]["port"] for s in server.query("pt_engine_port_bytes_total")}
        assert ports == {"53", "443", "other"}
    finally:
        exporter.close()
        server.stop()
    assert os.path.isdir(tmp_path / "data")


def test_rtt_histogram_of_allow_listed_ports():
    """tcp_quality's RTT histogram, for the allow-listed ports only, fed to the sink
    as the aggregator would (this capture is a pcapng: no filler can follow it)."""
    from types import SimpleNamespace
    from pt_engine import stream
    from pt_engine.config import PortSpec
    from pt_engine.sinks import SinkContext, open_outputs, parse_destination
    quality = Path(__file__).parent / "quality-corpus" / \
        "pkt2flow_200722_win_scale_examples_anon.pcapng"
    result = run_cli("read", str(quality), "--analyser", "tcp_quality")
    records = stream.decode(result.stdout)
    rows = records[-1]["tcp_quality"]["rows"]
    port = free_port()
    outputs = open_outputs([parse_destination(f"prometheus:127.0.0.1:{port}", "msgpack")],
                           SinkContext(live=False, options=SimpleNamespace(
                               prometheus_ports=PortSpec.parse("2000"))))
    for record in records:
        outputs.write(record)
    sink = outputs.sinks[0]
    while sink.backlog() or sink._busy:
        time.sleep(0.01)
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    finally:
        outputs.close()
    assert "# TYPE pt_engine_tcp_rtt_seconds histogram" in text
    hist = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
            if line.startswith("pt_engine_tcp_rtt_seconds")}
    assert {key.split('port="')[1].split('"')[0] for key in hist} == {"2000"}
    sides = [r for r in rows if r[1] == 2000 and r[3]]
    assert len(sides) == 2
    for row in sides:
        labels = f'port="2000",side="{row[2]}"'
        assert hist[f"pt_engine_tcp_rtt_seconds_count{{{labels}}}"] == row[3]
        assert hist[f"pt_engine_tcp_rtt_seconds_sum{{{labels}}}"] == row[4] / 1e9
        assert hist[f'pt_engine_tcp_rtt_seconds_bucket{{le="0.004096",{labels}}}'] == \
            sum(row[17][:13])                    # buckets 0..12: under 2^12 us
        assert hist[f'pt_engine_tcp_rtt_seconds_bucket{{le="+Inf",{labels}}}'] == row[3]


def test_subscribers_of_a_unix_output(tmp_path):
    import socket
    from types import SimpleNamespace
    from pt_engine.sinks import SinkContext, open_outputs, parse_destination
    port, path = free_port(), tmp_path / "s.sock"
    outputs = open_outputs([parse_destination(f"prometheus:127.0.0.1:{port}", "msgpack"),
                            parse_destination(f"unix:{path}", "msgpack")],
                           SinkContext(live=True, options=SimpleNamespace()))
    client = socket.socket(socket.AF_UNIX)
    try:
        client.connect(str(path))
        deadline = time.monotonic() + 10
        while True:
            outputs.poll()
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            if f'pt_engine_subscribers{{output="{outputs.sinks[1].name}"}} 1.0' in text:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.05)
    finally:
        client.close()
        outputs.close()
