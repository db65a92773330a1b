"""Every built-in source kind keeps the one contract of engine.sources.Source.

Each kind (a file, pcap and pcapng; standard input, on a pipe; a live device,
loopback) goes through the same checks on each backend that reads it:
describe() lists the documented keys in the hello's order, fill() returns
counts and valid statuses, stats() is non-negative and monotonic, close() is
safe twice, and failure() classifies the error behind a FILL_ERROR.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

import netns
from pt_engine import _core, sources
from pt_engine.errors import CaptureError, EngineError, TruncatedCapture
from pt_engine.records import RECORD_SIZE
from streams import CORPUS

PCAP = CORPUS / "ppp_many-protocols.pcap"
PCAPNG = CORPUS / "libpcap_rarp_req_reply.pcapng"
N = 7                      # records per fill: several fills per file
ROOT = os.geteuid() == 0
STATUSES = {"file": {sources.FILL_FULL, sources.FILL_EOF},
            "stdin": {sources.FILL_FULL, sources.FILL_EOF},
            "live": {sources.FILL_FULL, sources.FILL_TIMEOUT}}
# The hello's source entry, key order included (the stream is byte-compared).
KEYS = {"file": ["iface", "kind", "name", "format", "linktype", "linktype_name", "snaplen"],
        "live": ["iface", "kind", "name", "worker", "linktype", "linktype_name", "snaplen"]}
KEYS["stdin"] = KEYS["file"]


def expected_packets(path) -> int:
    return json.loads(path.with_name(path.name + ".expected.json").read_text())["totals"]["packets"]


class Pipe:
    """A pipe fed with `data` by a thread, as a shell feeds standard input."""

    def __init__(self, data: bytes):
        self.read_fd, write_fd = os.pipe()
        # Opened here: opening the source holds the GIL while libpcap waits for
        # the header, and the thread's writes need it only between system calls.
        out = os.fdopen(write_fd, "wb", buffering=0)
        self._thread = threading.Thread(target=self._feed, args=(out, data), daemon=True)
        self._thread.start()

    @staticmethod
    def _feed(out, data: bytes) -> None:
        try:
            with out:
                view = memoryview(data)
                while view:
                    view = view[out.write(view):]
        except BrokenPipeError:
            pass          # the reader stopped early

    def close(self) -> None:
        os.close(self.read_fd)
        self._thread.join(10)


class Loopback:
    """UDP datagrams to a port of our own on 127.0.0.1, captured on `lo`."""

    def __init__(self):
        self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sink.bind(("127.0.0.1", 0))
        self.port = self.sink.getsockname()[1]
        self.sent = 0

    def send(self, count: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            for _ in range(count):
                out.sendto(b"pt-engine contract", ("127.0.0.1", self.port))
                self.sent += 1

    def close(self) -> None:
        self.sink.close()


def _open(kind: str, request, path=PCAP, data: bytes | None = None):
    """(source, packets it will deliver) for a case; cleans up after the test."""
    if kind == "file":
        source = sources.open_source("file", str(path))
        total = expected_packets(path)
    elif kind == "stdin":
        pipe = Pipe(path.read_bytes() if data is None else data)
        request.addfinalizer(pipe.close)
        source = sources.open_source("stdin", fd=pipe.read_fd)
        total = expected_packets(path)
    else:
        traffic = Loopback()
        request.addfinalizer(traffic.close)
        source = sources.open_source("live", "lo", 0, f"udp and dst port {traffic.port}")
        total = 25
        source.traffic = traffic
    request.addfinalizer(source.close)
    return source, total


CASES = [(kind, path, backend) for kind, path in [("file", PCAP), ("file", PCAPNG),
                                                  ("stdin", PCAP), ("stdin", PCAPNG)]
         for backend in ("native", "reference")]
CASES.append(("live", None, "native"))       # devices are read by the native core only


@pytest.fixture(params=CASES, ids=lambda c: "-".join(
    [c[0], c[1].suffix[1:], c[2]] if c[1] else [c[0], "lo"]))
def case(request, monkeypatch):
    """(kind, corpus path or None, backend), with the backend selected as
    conftest's backend_env does it."""
    kind, path, backend = request.param
    if kind == "live" and not ROOT:
        pytest.skip("live capture needs root")
    if backend == "reference":
        monkeypatch.setenv("PT_ENGINE_PUREPYTHON", "1")
    else:
        monkeypatch.delenv("PT_ENGINE_PUREPYTHON", raising=False)
    return request.param


def _drain(source, kind: str, total: int) -> list[tuple[int, int, sources.SourceStats]]:
    """fill() until the source has given `total` records (a file: and its end)."""
    buf = bytearray(N * RECORD_SIZE)
    steps = []
    got = 0
    deadline = time.monotonic() + 20
    if kind == "live":
        source.traffic.send(total)
    while time.monotonic() < deadline:
        n, status = source.fill(buf, 0, 50)
        got += n
        steps.append((n, status, source.stats()))
        if status == sources.FILL_EOF or (kind == "live" and got >= total):
            break
    return steps


def test_registry_holds_the_built_in_kinds():
    assert {"file", "stdin", "live"} <= set(sources.SOURCES)
    assert sources.SOURCES["live"] is sources.LiveSource
    with pytest.raises(ValueError):
        sources.register_source("file", sources.open_file)
    with pytest.raises(EngineError, match="unknown source kind 'nope'"):
        sources.open_source("nope")


def test_describe_lists_the_documented_keys(case, request):
    kind, path, backend = case
    source, _ = _open(kind, request, path or PCAP)
    described = source.describe()
    assert list(described)[:len(KEYS[kind])] == KEYS[kind]
    assert set(described) - set(KEYS[kind]) <= {"warning"}
    assert source.kind == kind and sources.SOURCES[kind]
    assert described["kind"] == ("live" if kind == "live" else "file")
    assert described["name"] == source.name == {"file": str(path), "stdin": "-",
                                                "live": "lo"}[kind]
    assert isinstance(described["linktype"], int) and isinstance(described["snaplen"], int)
    assert described["iface"] == 0
    if kind == "stdin":
        assert described["format"] == "stream"      # as the hello has always said
    elif kind == "file":
        assert described["format"] == path.suffix[1:]


def test_fill_counts_and_stats(case, request):
    kind, path, backend = case
    source, total = _open(kind, request, path or PCAP)
    steps = _drain(source, kind, total)
    assert all(0 <= n <= N for n, _, _ in steps)
    assert {status for _, status, _ in steps} <= STATUSES[kind]
    assert all(status != sources.FILL_FULL or n == N for n, status, _ in steps)
    assert sum(n for n, _, _ in steps) == total
    if kind != "live":
        assert steps[-1][1] == sources.FILL_EOF
    previous = sources.SourceStats()
    for _, _, stats in steps:
        for field in ("received", "dropped", "if_dropped", "transport_dropped"):
            value = getattr(stats, field)
            assert isinstance(value, int) and value >= getattr(previous, field) >= 0, field
        previous = stats
    assert previous.received >= total


def test_fill_from_an_offset_writes_only_the_rest(case, request):
    kind, path, backend = case
    source, total = _open(kind, request, path or PCAP)
    buf = bytearray(N * RECORD_SIZE)
    if kind == "live":
        source.traffic.send(5)
    n, status = source.fill(buf, N - 2, 200)
    assert 0 <= n <= 2 and status in STATUSES[kind]
    assert source.fill(buf, N, 0) == (0, sources.FILL_FULL)


def test_close_twice_is_safe(case, request):
    kind, path, backend = case
    source, _ = _open(kind, request, path or PCAP)
    source.fill(bytearray(N * RECORD_SIZE), 0, 0)
    source.close()
    source.close()


@pytest.mark.parametrize("kind", ["file", "stdin"])
def test_failure_after_a_fill_error(kind, backend_env, tmp_path, request):
    whole = PCAP.read_bytes()
    cut = whole[:len(whole) // 2]       # in the middle of a record
    path = tmp_path / "cut.pcap"
    path.write_bytes(cut)
    if kind == "file":
        source = sources.open_source("file", str(path))
        request.addfinalizer(source.close)
    else:
        source, _ = _open("stdin", request, PCAP, data=cut)
    buf = bytearray(N * RECORD_SIZE)
    read = 0
    for _ in range(10_000):
        n, status = source.fill(buf, 0, 0)
        read += n
        if status != sources.FILL_FULL:
            break
    assert status == sources.FILL_ERROR
    err = source.failure()
    assert isinstance(err, TruncatedCapture) and isinstance(err, EngineError)
    assert str(err).startswith(f"{source.name}: capture cut off")
    assert f"{read} packets" in str(err)
    assert source.stats().received == read


@pytest.mark.skipif(netns.why_not() is not None, reason=netns.why_not() or "")
def test_live_failure_after_the_device_vanished():
    with netns.VethPair() as pair:
        source = sources.open_source("live", pair.host, 0)
        try:
            subprocess.run(["ip", "link", "del", pair.host], check=True)
            buf = bytearray(N * RECORD_SIZE)
            for _ in range(100):
                n, status = source.fill(buf, 0, 50)
                if status == sources.FILL_ERROR:
                    break
            assert status == sources.FILL_ERROR
            err = source.failure()
            assert isinstance(err, CaptureError)
            assert str(err).startswith(f"interface {pair.host} went down or disappeared")
            stats = source.stats()
            assert min(stats.received, stats.dropped, stats.if_dropped) >= 0
        finally:
            source.close()
            source.close()


def test_stdin_reads_descriptor_0_by_default():
    code = ("from pt_engine import records, sources\n"
            "s = sources.open_source('stdin')\n"
            "n, status = s.fill(bytearray(100000 * records.RECORD_SIZE))\n"
            "print(list(s.describe().items()), n, status == sources.FILL_EOF)\n"
            "s.close()\n")
    proc = subprocess.run([sys.executable, "-c", code], stdin=open(PCAP, "rb"),
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode()
    assert "('kind', 'file'), ('name', '-')" in out
    assert out.rstrip().endswith(f"{expected_packets(PCAP)} True")


# --- live open failures: classified by libpcap's status code, not its words ----

@pytest.mark.skipif(not ROOT, reason="without root libpcap says permission denied first")
def test_unknown_interface_is_no_such_device():
    with pytest.raises(CaptureError) as info:
        sources.open_source("live", "nosuchif9", 0)
    assert str(info.value) == "interface nosuchif9: no such device"


@pytest.mark.parametrize("status, reason", [
    (_core.PcapStatus.NO_SUCH_DEVICE, "no such device"),
    (_core.PcapStatus.PERM_DENIED, "permission denied (needs root or CAP_NET_RAW)"),
    (_core.PcapStatus.PROMISC_PERM_DENIED,
     "permission denied for promiscuous mode (needs root or CAP_NET_RAW)"),
    (_core.PcapStatus.IFACE_NOT_UP, "is down"),
    (_core.PcapStatus.ERROR, "Generic error: something libpcap says"),
    (None, "Generic error: something libpcap says"),
])
def test_open_errors_are_classified_by_status(status, reason):
    # The same words for every code: only the status may decide.
    err = _core.PcapError("Generic error: something libpcap says", status)
    assert str(sources.classify_open_error("eth9", err)) == f"interface eth9: {reason}"


@pytest.mark.skipif(not ROOT, reason="needs root to become another user")
def test_no_permission_is_said_so():
    code = ("import os\n"
            "from pt_engine import sources\n"
            "os.setgid(65534); os.setuid(65534)\n"
            "try:\n"
            "    sources.open_source('live', 'lo', 0)\n"
            "except sources.CaptureError as err:\n"
            "    print(err)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.stdout.decode().strip() == \
        "interface lo: permission denied (needs root or CAP_NET_RAW)", proc.stderr.decode()


@pytest.mark.skipif(netns.why_not() is not None, reason=netns.why_not() or "")
def test_interface_down_is_said_so():
    with netns.VethPair() as pair:
        subprocess.run(["ip", "link", "set", pair.host, "down"], check=True)
        with pytest.raises(CaptureError) as info:
            sources.open_source("live", pair.host, 0)
    assert str(info.value) == f"interface {pair.host}: is down"
