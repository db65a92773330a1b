"""Capture file formats: classic pcap in both byte orders and resolutions, pcapng."""
import pytest

from frames import eth, ipv4, ipv6, pcap_file, pcapng_file, tcp, udp
from streams import read_stream

SECOND = 1_000_000_000
T0 = 1_700_000_000 * SECOND


def frames():
    return [eth() + ipv4("192.0.2.1", "192.0.2.2", 17, udp(1000 + i, 53, b"q" * i))
            for i in range(6)] + [eth(et=0x86DD) + ipv6(nh=6, payload=tcp(4000, 443, b"x" * 9))]


def expected(orig_extra: int = 0) -> dict:
    sizes = [len(f) + orig_extra for f in frames()]
    ports = {("udp", 53): [6, sum(sizes[:6]), 0, 0], ("tcp", 443): [1, sizes[6], 0, 0],
             ("tcp", 4000): [0, 0, 1, sizes[6]]}
    for i in range(6):
        ports[("udp", 1000 + i)] = [0, 0, 1, sizes[i]]
    return {"packets": 7, "bytes": sum(sizes),
            "ports": [[p, port, *v] for (p, port), v in sorted(ports.items())]}


def summary_of(tmp_path, data: bytes, *args):
    path = tmp_path / "capture"
    path.write_bytes(data)
    status, records, _ = read_stream(tmp_path, str(path), *args)
    return status, records


@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
@pytest.mark.parametrize("nano", [False, True], ids=["usec", "nsec"])
def test_classic_pcap_variants(tmp_path, big_endian, nano):
    ts = [T0 + i * 123_456_789 + 987 for i in range(7)]
    data = pcap_file([(t, f, None) for t, f in zip(ts, frames())], linktype=1, nano=nano,
                     big_endian=big_endian)
    status, records = summary_of(tmp_path, data, "--interval", "0.1")
    assert status == 0
    summary = records[-1]
    want = expected()
    assert summary["totals"] == {"packets": want["packets"], "bytes": want["bytes"]}
    assert summary["ports"] == want["ports"]
    # windows are cut by the file's timestamps at its resolution
    first = ts[0] if nano else ts[0] // 1000 * 1000
    assert summary["start_ns"] == first - first % (SECOND // 10)


def test_pcapng_several_interfaces_of_one_link_type(tmp_path):
    packets = [(i % 3, T0 + i * SECOND // 10, f, None) for i, f in enumerate(frames())]
    data = pcapng_file([(1, 0), (1, 0), (1, 0)], packets)
    status, records = summary_of(tmp_path, data)
    assert status == 0
    assert records[0]["sources"][0]["format"] == "pcapng"
    assert records[-1]["ports"] == expected()["ports"]


def test_pcapng_big_endian_and_cut_frames(tmp_path):
    packets = [(0, T0 + i, f, len(f) + 100) for i, f in enumerate(frames())]
    data = pcapng_file([(1, 0)], packets, big_endian=True)
    status, records = summary_of(tmp_path, data)
    assert status == 0
    assert records[-1]["ports"] == expected(orig_extra=100)["ports"]


def test_pcapng_differing_snap_lengths_are_refused_by_name(tmp_path, capsys):
    packets = [(0, T0, frames()[0], None), (1, T0 + 1, frames()[1], None)]
    data = pcapng_file([(1, 65535), (1, 128)], packets)
    status, records = summary_of(tmp_path, data)
    err = capsys.readouterr().err
    assert status == 1
    assert "differing snapshot lengths 128, 65535" in err and err.count("\n") == 1
    # both interfaces are described before any packet: libpcap stops at the
    # second one, so the summary (still written) has nothing counted
    assert records[-1]["type"] == "summary" and records[-1]["totals"]["packets"] == 0


def test_pcapng_differing_link_types_name_them(tmp_path, capsys):
    packets = [(0, T0, frames()[0], None), (1, T0 + 1, b"\x45" + bytes(40), None)]
    data = pcapng_file([(1, 0), (101, 0)], packets)
    status, records = summary_of(tmp_path, data)
    err = capsys.readouterr().err
    assert status == 1 and "1 (EN10MB), 101 (RAW)" in err
