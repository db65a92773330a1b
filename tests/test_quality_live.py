"""TCP quality on live traffic across a link of known impairment (tests/linkemu.py).

A client sends a paced bulk transfer to a server through the emulator; the
server answers with a little data of its own, so both directions have
RTT samples. pt-engine captures on the client's side of the emulator:

* the client's data (the server port's ``in`` side) is acknowledged after
  the emulator's two delays: its RTT is the link's, 2 D;
* the server's data (the server port's ``out`` side) is acknowledged by
  the client host right beside the capture point: its RTT is the host's
  own turnaround, well under a millisecond or two;
* frames the emulator drops on their way to the server were captured
  before they were lost, and their data comes again: retransmissions.

The histogram's buckets are powers of two of microseconds, wider than the
issue's ±3 ms tolerance around 40 ms, so the test checks that the p50
bucket holds 40 ms and that the exact mean (rtt_sum_ns / rtt_samples) is
within ±3 ms of it.
"""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

import netns
from linkemu import LinkBed
from pt_engine import stream
from pt_engine.analysers import tcp_quality as q

REASON = netns.why_not()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

PORT = 5001

# The server: reads everything; after every 64 KiB it sends 1 KiB back. Both ends
# ask for quick ACKs after each read, so that no delayed ACK inflates an RTT sample.
SERVER = r'''
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)
print("listening", flush=True)
import threading
def serve(c):
    got = 0
    while True:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        d = c.recv(65536)
        if not d:
            break
        before, got = got, got + len(d)
        for _ in range(before // 65536, got // 65536):
            c.sendall(b"r" * 1024)
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'''

# The client: CONNS connections, each sending CHUNK bytes every PAUSE seconds for
# SECONDS, draining the server's answers as they come.
CLIENT = r'''
import selectors, socket, sys, time
host, port, conns, seconds, chunk, pause = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
socks = [socket.create_connection((host, port)) for _ in range(conns)]
sel = selectors.DefaultSelector()
for c in socks:
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sel.register(c, selectors.EVENT_READ)
data = b"x" * chunk
end = time.monotonic() + seconds
nxt = time.monotonic()
while time.monotonic() < end:
    for c in socks:
        c.sendall(data)
    nxt += pause
    while True:
        wait = nxt - time.monotonic()
        for key, _ in sel.select(max(0.0, wait)):
            key.fileobj.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            key.fileobj.recv(65536)
        if wait <= 0:
            break
for c in socks:
    c.shutdown(socket.SHUT_WR)
for c in socks:
    c.settimeout(10)
    while c.recv(65536):
        pass
    c.close()
'''


def capture(bed: LinkBed, engines: list[tuple[str, ...]], conns: int = 1,
            seconds: float = 4.0, chunk: int = 8 * 1448, pause: float = 0.01) -> list[dict]:
    """The transfer across the bed, captured on the client's veth by one
    `pt-engine run` per entry of `engines` (its extra arguments), all at
    once: their streams' records (each ends with its summary)."""
    server = bed.exec(bed.server_ns, [sys.executable, "-c", SERVER, str(PORT)],
                      stdout=subprocess.PIPE, text=True)
    procs = []
    try:
        assert server.stdout.readline().strip() == "listening"
        for args in engines:
            engine = subprocess.Popen(
                [sys.executable, "-m", "pt_engine", "run", "-i",
                 f"{bed.client_ns}/{bed.client_if}", "--format", "json", "--interval", "1",
                 *args],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            procs.append(engine)
            line = b""
            while b"capturing on" not in line:
                line = engine.stderr.readline()
                assert line, engine.stderr.read().decode()
        time.sleep(0.5)
        subprocess.run(["ip", "netns", "exec", bed.client_ns, sys.executable, "-c", CLIENT,
                        bed.server_addr, str(PORT), str(conns), str(seconds), str(chunk),
                        str(pause)], check=True, timeout=seconds + 60)
        time.sleep(0.5)
        streams = []
        for engine in procs:
            engine.send_signal(2)
            out, err = engine.communicate(timeout=60)
            assert engine.returncode == 0, err.decode()
            records = stream.decode(out, "json")
            summary = records[-1]
            assert summary["type"] == "summary"
            assert sum(s["dropped"] for s in summary["sources"]) == 0, summary
            streams.append(records)
        return streams
    finally:
        for p in (server, *procs):
            p.kill()
            p.wait()


def quality_run(bed: LinkBed, *engine_args: str, **transfer) -> tuple[dict, dict, list]:
    """(the summary's tcp_quality rows by (port, side), the emulator's counters,
    the stream's alert records)."""
    records, = capture(bed, [engine_args], **transfer)
    rows = {(r[1], r[2]): r for r in records[-1]["tcp_quality"]["rows"]}
    return rows, bed.stats(), [r for r in records if r["type"] == "alert"]


def column(row: list, name: str):
    return row[3 + q.COLUMNS.index(name)]


def mean_ms(row: list) -> float:
    return column(row, "rtt_sum_ns") / column(row, "rtt_samples") / 1e6


def p50_range_ms(row: list) -> tuple[float, float]:
    lo, hi = q.percentile_range(row[3 + q.N_COUNTERS], 0.5)
    return lo / 1e6, hi / 1e6


@pytest.fixture
def bed(request):
    with LinkBed(**request.param) as b:
        yield b


@pytest.mark.parametrize("bed", [dict(delay_ms=20)], indirect=True)
def test_rtt_is_the_links_for_the_clients_data_and_the_hosts_for_the_servers(bed):
    rows, _, alerts = quality_run(bed, "--alert", f"tcp:{PORT}:in:rtt_p95_ms>30:for=2:name=link",
                                  "--alert", f"tcp:{PORT}:out:rtt_p95_ms>30:name=host")
    client_data, server_data = rows[(PORT, "in")], rows[(PORT, "out")]
    # the link's 40 ms shows in the client's data only, and alerts there
    assert {a["rule"] for a in alerts} == {"link"} and alerts[0]["value"] > 30
    assert column(client_data, "rtt_samples") > 50
    assert abs(mean_ms(client_data) - 40) <= 3, mean_ms(client_data)
    lo, hi = p50_range_ms(client_data)
    assert lo <= 40 < hi
    assert column(server_data, "rtt_samples") > 10
    assert p50_range_ms(server_data)[1] <= 2.048      # the p50 bucket ends by 2 ms
    assert mean_ms(server_data) < 2
    assert column(client_data, "retrans_segments") == 0


@pytest.mark.parametrize("bed", [dict(delay_ms=20, loss=0.02, seed=7)], indirect=True)
def test_frames_lost_after_the_capture_point_come_again_as_retransmissions(bed):
    rows, emulator, _ = quality_run(bed)
    lost = emulator["a_to_b"]["dropped_data"]
    retrans = column(rows[(PORT, "in")], "retrans_segments")
    assert lost > 0
    assert lost / 2 <= retrans <= lost * 2, (retrans, lost, emulator)


@pytest.mark.parametrize("bed", [dict(delay_ms=20, jitter_ms=5, seed=3)], indirect=True)
def test_jitter_of_the_link_shows_in_the_clients_data(bed):
    rows, _, _ = quality_run(bed)
    row = rows[(PORT, "in")]
    assert column(row, "jitter_pairs") > 50
    mean_jitter_ms = column(row, "jitter_sum_ns") / column(row, "jitter_pairs") / 1e6
    assert mean_jitter_ms > 0.5, mean_jitter_ms


@pytest.mark.parametrize("bed", [dict(delay_ms=5, jitter_ms=2, loss=0.01, seed=5)],
                         indirect=True)
def test_two_workers_give_the_figures_of_one(bed):
    """Two engines capture the same frames at once (the kernel stamps each frame
    once, so both see the same times): one capture process, and two that the
    fanout's symmetric hash splits the connections between."""
    streams = capture(bed, [("--workers", "1"), ("--workers", "2")], conns=12, seconds=4,
                      chunk=2 * 1448, pause=0.02)
    one, two = (records[-1] for records in streams)
    assert len(two["sources"]) == 2 and all(s["received"] for s in two["sources"])
    assert one["tcp_quality"]["state"]["connections"] == 12
    assert one["tcp_quality"] == two["tcp_quality"]
    assert one["ports"] == two["ports"]
    retrans = sum(column(r, "retrans_segments") for r in one["tcp_quality"]["rows"])
    assert retrans > 0          # the figures compared are not only the easy ones
