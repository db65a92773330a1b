"""The own reader of classic pcap files (SavefileCapture walking the mapping,
sources.ClassicWalk in the reference): the same records, errors and byte
offsets as libpcap's reader (SavefileCapture.open(..., own_reader=False)),
except for records longer than the snapshot length, which keep their
captured length (docs/counting-rules.md, section 4)."""
from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pt_engine import _core, sources
from pt_engine.errors import CaptureError, ConfigError, UnsupportedLinkType
from frames import (DLT_EN10MB, DLT_LINUX_SLL, DLT_RAW, ETH_IPV4, ETH_IPV6, IPPROTO_TCP,
                    IPPROTO_UDP, eth, ipv4, ipv6, pcap_file, sll, tcp, udp)
from streams import CORPUS, DATA, read_stream

RECORD = _core.RECORD_SIZE
CAPTURES = sorted(p for p in [*CORPUS.glob("*.pcap*"), *DATA.glob("*.pcap*")]
                  if not p.name.endswith(".json"))
CLASSIC = [p for p in CAPTURES if sources.sniff_format(str(p)) == "pcap"]


def records_of(path) -> list[tuple[int, int, int]]:
    """(caplen, origlen, snaplen) of every whole record of a classic pcap file."""
    data = path.read_bytes()
    order = sources.PCAP_MAGICS[data[:4]][1]
    snaplen, = struct.unpack_from(order + "I", data, 16)
    found, pos = [], 24
    while pos + 16 <= len(data):
        caplen, origlen = struct.unpack_from(order + "II", data, pos + 8)
        found.append((caplen, origlen, snaplen))
        pos += 16 + caplen
    return found


def drain(reader, chunk: int = 7) -> tuple[bytes, int]:
    """Every record `reader` (a capture or a source) fills, in buffers of
    `chunk` records, and the status it stopped with."""
    out = bytearray()
    for _ in range(1_000_000):
        buf = bytearray(chunk * RECORD)
        n, status = reader.fill(buf)
        out += buf[:n * RECORD]
        if status != sources.FILL_FULL:
            return bytes(out), status
    raise AssertionError("fill never stopped")


def capture(path, own: bool = True, bpf: str | None = None):
    """Everything SavefileCapture tells about reading `path` whole."""
    cap = _core.SavefileCapture.open(str(path), 3, own_reader=own)
    try:
        if bpf:
            cap.set_filter(bpf)
        recs, status = drain(cap)
        message = None
        if status == sources.FILL_ERROR:
            message = str(sources.classify_read_error(
                str(path), str(path), "pcap", cap.error, cap.packets, cap.caplen_bytes,
                cap.file_offset()))
        return {"own": cap.own_reader, "records": recs, "status": status, "error": cap.error,
                "message": message, "offset": cap.file_offset(), "packets": cap.packets,
                "caplen_bytes": cap.caplen_bytes, "snaplen": cap.snaplen,
                "linktype": cap.linktype}
    finally:
        cap.close()


def source(path, cls, bpf: str | None = None):
    """(records, status, failure message or None, snaplen) of a file source."""
    src = cls(str(path), 3, bpf)
    try:
        recs, status = drain(src)
        failure = str(src.failure()) if status == sources.FILL_ERROR else None
        return recs, status, failure, src.snaplen
    finally:
        src.close()


def same_as_libpcap(path, bpf: str | None = None) -> None:
    """The own reader read `path` as libpcap does, and took the file itself."""
    own, theirs = capture(path, True, bpf), capture(path, False, bpf)
    assert own.pop("own") and not theirs.pop("own")
    assert own == theirs


def backends_agree(path, bpf: str | None = None) -> tuple:
    native = source(path, sources.FileSource, bpf)
    assert source(path, sources.ReferenceFileSource, bpf) == native
    return native


# -- every classic capture of the repository ---------------------------------

def test_the_classic_captures_are_there():
    assert len(CLASSIC) > 40 and any(sources.PCAP_MAGICS[p.read_bytes()[:4]][1] == ">"
                                     for p in CLASSIC)


@pytest.mark.parametrize("path", CLASSIC, ids=lambda p: p.name)
def test_same_records_as_libpcap(path):
    if any(caplen > snaplen for caplen, _, snaplen in records_of(path)):
        own, theirs = capture(path, True), capture(path, False)
        assert own["caplen_bytes"] > theirs["caplen_bytes"]      # libpcap cut the frame
        return
    same_as_libpcap(path)


@pytest.mark.parametrize("path", [p for p in CAPTURES if p not in CLASSIC], ids=lambda p: p.name)
def test_pcapng_stays_with_libpcap(path):
    cap = _core.SavefileCapture.open(str(path))
    try:
        assert not cap.own_reader
    finally:
        cap.close()


# tcp_quality columns measured in nanoseconds (and the RTT histogram): rtt_sum_ns,
# rtt_min_ns, rtt_max_ns, jitter_sum_ns (row indices 4 to 7), and the last, the histogram.
_NS_COLUMNS = (4, 5, 6, 7)


def _comparable(records: list[dict], pcapng: bool) -> list[dict]:
    for record in records:
        record.pop("backend", None)
        for src in record.get("sources", []):
            if pcapng:       # pcapy-ng's Reader has no snapshot(): the reference says 0
                src.pop("snaplen")
        if pcapng and "tcp_quality" in record:
            # pcapy-ng gives pcapng times to the microsecond, the native reader to the
            # nanosecond: RTTs differ below the microsecond, the counts may not
            record["tcp_quality"]["rows"] = [
                [v for i, v in enumerate(row) if i not in _NS_COLUMNS and i != len(row) - 1]
                for row in record["tcp_quality"]["rows"]]
    return records


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_backends_write_the_same_stream(path, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("PT_ENGINE_PUREPYTHON", raising=False)
    native = read_stream(tmp_path, str(path), fmt="json")
    native_err = capsys.readouterr().err
    monkeypatch.setenv("PT_ENGINE_PUREPYTHON", "1")
    reference = read_stream(tmp_path, str(path), fmt="json")
    assert capsys.readouterr().err == native_err
    pcapng = path not in CLASSIC
    assert reference[0] == native[0]
    assert _comparable(reference[1], pcapng) == _comparable(native[1], pcapng)
    if not pcapng:
        raw = [r.replace(b'"backend":"reference"', b'"backend":"native"') for r in
               (reference[2], native[2])]
        assert raw[0] == raw[1]


# -- byte orders and timestamp resolutions ------------------------------------

STAMPS = [0, 1, 999_999_000, 1_700_000_000_123_456_000, (1 << 31) * 10**9 + 5000,
          (1 << 32) * 10**9 - 1000]


@pytest.mark.parametrize("nano", [False, True], ids=["us", "ns"])
@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
def test_byte_orders_and_resolutions(tmp_path, nano, big_endian):
    import numpy as np
    frames = [(ts, eth() + ipv4(proto=IPPROTO_UDP, payload=udp(1000 + i, 53, b"q" * i)), None)
              for i, ts in enumerate(STAMPS)]
    path = tmp_path / "t.pcap"
    path.write_bytes(pcap_file(frames, DLT_EN10MB, nano=nano, big_endian=big_endian))
    same_as_libpcap(path)
    recs, status, failure, _ = backends_agree(path)
    assert status == sources.FILL_EOF and failure is None
    got = np.frombuffer(recs, dtype=sources.records.RECORD_DTYPE)
    want = STAMPS if nano else [ts // 1000 * 1000 for ts in STAMPS]
    assert got["ts_ns"].tolist() == want
    assert got["src_port"].tolist() == [1000 + i for i in range(len(STAMPS))]


def test_an_empty_capture_ends_at_once(tmp_path):
    path = tmp_path / "empty.pcap"
    path.write_bytes(pcap_file([], DLT_RAW))
    same_as_libpcap(path)
    assert backends_agree(path)[:3] == (b"", sources.FILL_EOF, None)


# -- the snap length rule ------------------------------------------------------

def _oversize_file(path, origlen: int) -> bytes:
    """A classic file with snaplen 20 holding one whole 62-byte UDP frame
    (record caplen 62 > snaplen), recorded with the original length origlen."""
    frame = eth() + ipv4(proto=IPPROTO_UDP, payload=udp(4000, 53, b"x" * 12))
    data = bytearray(pcap_file([(10**9, frame, origlen)], DLT_EN10MB, snaplen=65535))
    struct.pack_into("<I", data, 16, 20)
    path.write_bytes(bytes(data))
    return frame


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_a_record_past_the_snap_length_keeps_its_captured_length(tmp_path, backend,
                                                                 monkeypatch):
    path = tmp_path / "over.pcap"
    frame = _oversize_file(path, origlen=40)       # fuzz-like: origlen < caplen
    if backend == "reference":
        monkeypatch.setenv("PT_ENGINE_PUREPYTHON", "1")
    status, records, _ = read_stream(tmp_path, str(path))
    assert status == 0
    summary = records[-1]
    assert summary["totals"] == {"packets": 1, "bytes": len(frame)}
    assert summary["classes"]["ported"] == {"packets": 1, "bytes": len(frame)}
    assert ["udp", 53, 1, len(frame), 0, 0] in summary["ports"]


def test_libpcap_cuts_a_record_past_the_snap_length(tmp_path):
    import numpy as np
    path = tmp_path / "over.pcap"
    frame = _oversize_file(path, origlen=40)
    dtype = sources.records.RECORD_DTYPE
    own = np.frombuffer(capture(path, True)["records"], dtype)
    theirs = np.frombuffer(capture(path, False)["records"], dtype)
    assert own["wire_len"].tolist() == [len(frame)] and own["pkt_class"].tolist() == [0]
    assert theirs["wire_len"].tolist() == [40] and theirs["pkt_class"].tolist() == [3]


@pytest.mark.parametrize("caplen", [262145, 0xFFFF_FFFF])
def test_a_bogus_captured_length_is_refused_as_libpcap_does(tmp_path, caplen):
    frames = [(i, eth() + ipv4(proto=IPPROTO_UDP, payload=udp(7, 9)), None) for i in range(3)]
    data = bytearray(pcap_file(frames, DLT_EN10MB))
    last = len(data) - 16 - len(frames[-1][1])
    struct.pack_into("<I", data, last + 8, caplen)
    path = tmp_path / "bogus.pcap"
    path.write_bytes(bytes(data))
    same_as_libpcap(path)
    recs, status, failure, _ = backends_agree(path)
    assert status == sources.FILL_ERROR and len(recs) == 2 * RECORD
    assert f"invalid packet capture length {caplen}, bigger than snaplen of 65535" in failure


# -- cut-off files ---------------------------------------------------------------

def test_a_file_cut_at_every_byte_of_its_last_record(tmp_path):
    frames = [(i * 1000, eth() + ipv4(proto=IPPROTO_TCP, payload=tcp(1000 + i, 80, b"y" * i)),
               None) for i in range(4)]
    whole = pcap_file(frames, DLT_EN10MB)
    last = len(whole) - 16 - len(frames[-1][1])
    for cut in range(last, len(whole)):
        path = tmp_path / f"cut-{cut}.pcap"
        path.write_bytes(whole[:cut])
        same_as_libpcap(path)
        recs, status, failure, _ = backends_agree(path)
        assert len(recs) == 3 * RECORD
        if cut == last:
            assert status == sources.FILL_EOF
            continue
        assert status == sources.FILL_ERROR
        assert f"in record 4 starting at byte {last}" in failure
        assert "3 packets before it were counted" in failure
        got = cut - last - 16 if cut - last >= 16 else cut - last
        assert f"only got {got})" in failure


# -- BPF filters -------------------------------------------------------------------

FILTERS = ["udp", "tcp port 80", "ip6", "vlan", "greater 200", "less 100", "not ip"]


@pytest.mark.parametrize("bpf", FILTERS)
def test_a_filter_passes_the_frames_libpcap_passes(bpf):
    path = CORPUS / "ppp_many-protocols.pcap"
    same_as_libpcap(path, bpf)
    assert capture(path, True, bpf)["packets"] < capture(path, True)["packets"]


@pytest.mark.parametrize("bpf, passed", [("greater 100", 5), ("less 100", 3), ("len == 64", 1),
                                         ("udp", 8)])
def test_a_filter_sees_the_original_length_on_both_backends(tmp_path, bpf, passed):
    # Frames of 44, 64, ... 184 bytes cut to 50 by the snap length: `len` is
    # the original length.
    frames = [(i, sll(ETH_IPV4) + ipv4(proto=IPPROTO_UDP, payload=udp(5, 6, bytes(i * 20))), None)
              for i in range(8)]
    path = tmp_path / "cut.pcap"
    path.write_bytes(pcap_file(frames, DLT_LINUX_SLL, snaplen=50))
    same_as_libpcap(path, bpf)
    recs, status, _, _ = backends_agree(path, bpf)
    assert status == sources.FILL_EOF and len(recs) == passed * RECORD


def test_a_bad_filter_is_refused_on_both_backends():
    path = str(CORPUS / "ppp_many-protocols.pcap")
    messages = set()
    for cls in (sources.FileSource, sources.ReferenceFileSource):
        with pytest.raises(ConfigError) as err:
            cls(path, 0, "udp and (")
        messages.add(str(err.value))
    assert len(messages) == 1


def test_an_unsupported_link_type_is_refused_before_reading():
    path = str(CORPUS / "tcpdump_unsupported-link-type-dbus.pcap")
    for cls in (sources.FileSource, sources.ReferenceFileSource):
        with pytest.raises(UnsupportedLinkType, match="231"):
            cls(path)


# -- mutated record headers --------------------------------------------------------

SEED_FRAMES = [eth() + ipv4(proto=IPPROTO_UDP, payload=udp(1234, 53, b"a" * 10)),
               eth(et=ETH_IPV6) + ipv6(nh=IPPROTO_TCP, payload=tcp(80, 4321)),
               eth() + ipv4(proto=IPPROTO_TCP, payload=tcp(22, 5555, b"b" * 30))]
SNAPLEN = 64
EDGES = [0, 1, 15, 16, 17, SNAPLEN, SNAPLEN + 1, 262144, 262145, 1 << 31, (1 << 32) - 1]
FIELDS = [0, 1, 2, 2, 2, 3, 3]     # seconds, fraction, caplen (mostly), origlen
counter = itertools.count()


@st.composite
def mutated_files(draw):
    """A classic file of the seed frames with header fields overwritten and
    maybe its tail cut, in either byte order and resolution."""
    nano, big_endian = draw(st.booleans()), draw(st.booleans())
    order = ">" if big_endian else "<"
    data = bytearray(pcap_file([(i * 10**9, f, None) for i, f in enumerate(SEED_FRAMES)],
                               DLT_EN10MB, nano=nano, big_endian=big_endian, snaplen=SNAPLEN))
    starts, pos = [], 24
    while pos < len(data):
        starts.append(pos)
        pos += 16 + struct.unpack_from(order + "I", data, pos + 8)[0]
    for _ in range(draw(st.integers(1, 4))):
        record = draw(st.sampled_from(starts))
        field = draw(st.sampled_from(FIELDS))
        value = draw(st.sampled_from(EDGES) | st.integers(0, (1 << 32) - 1) |
                     st.integers(0, 200))
        struct.pack_into(order + "I", data, record + 4 * field, value)
    if draw(st.booleans()):
        data = data[:draw(st.integers(24, len(data)))]
    return bytes(data)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("mutated")


@given(data=mutated_files())
def test_mutated_record_headers(scratch, data):
    path = scratch / f"m{next(counter)}.pcap"
    path.write_bytes(data)
    try:
        native = backends_agree(path)
        assert native[1] in (sources.FILL_EOF, sources.FILL_ERROR)
        own = capture(path, True)
        if own["status"] == sources.FILL_ERROR:
            assert isinstance(sources.classify_read_error(
                str(path), str(path), "pcap", own["error"], own["packets"],
                own["caplen_bytes"], own["offset"]), CaptureError)
        # Without a record past the snap length, libpcap reads it all the same.
        order = sources.PCAP_MAGICS[data[:4]][1]
        pos, over = 24, False
        while pos + 16 <= len(data) and not over:
            caplen, = struct.unpack_from(order + "I", data, pos + 8)
            over = SNAPLEN < caplen <= 262144
            pos += 16 + caplen
        if not over:
            same_as_libpcap(path)
    finally:
        path.unlink()
