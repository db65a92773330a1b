"""Timestamps at the ends of their range (docs/counting-rules.md section 5).

pcap seconds are unsigned 32-bit, so 2038-01-19 and later are ordinary
times; nanosecond timestamps go up to 2^64 - 1 without wrapping, and a
window reaching the end of time takes the packets stamped with it.
"""
import pytest

from frames import eth, ipv4, pcap_file, pcapng_file, udp
from streams import read_stream, run_cli
from pt_engine import stream

SECOND = 1_000_000_000
END_OF_TIME = (1 << 64) - 1


def frame(port: int) -> bytes:
    return eth() + ipv4("192.0.2.1", "192.0.2.2", 17, udp(port, 53, b"q"))


def windows(records):
    return [(r["start_ns"], r["end_ns"], r["totals"]["packets"], r["late_packets"])
            for r in records if r["type"] == "window"]


@pytest.mark.parametrize("nano", [False, True], ids=["usec", "nsec"])
@pytest.mark.parametrize("big_endian", [False, True], ids=["le", "be"])
def test_pcap_seconds_after_2038_are_unsigned(tmp_path, backend_env, nano, big_endian):
    times = [(2**31 - 1) * SECOND, 2**31 * SECOND, (2**31 + 5) * SECOND, (2**32 - 1) * SECOND]
    path = tmp_path / "y2038.pcap"
    path.write_bytes(pcap_file([(t, frame(1000 + i), None) for i, t in enumerate(times)], 1,
                               nano=nano, big_endian=big_endian))
    status, records, _ = read_stream(tmp_path, str(path))
    assert status == 0
    assert windows(records) == [(t, t + SECOND, 1, 0) for t in times]
    assert records[-1]["totals"]["packets"] == 4 and records[-1]["late_packets"] == 0


def test_pcap_nanosecond_field_beyond_a_second(tmp_path, backend_env):
    """A fraction field >= 1e9 (fuzzed files have them) carries into the seconds."""
    path = tmp_path / "bigfrac.pcap"
    data = bytearray(pcap_file([(5 * SECOND, frame(1000), None)], 1, nano=True))
    data[24 + 4:24 + 8] = (3_500_000_000).to_bytes(4, "little")   # the record's ns field
    path.write_bytes(bytes(data))
    status, records, _ = read_stream(tmp_path, str(path))
    assert status == 0
    assert windows(records) == [(8 * SECOND, 9 * SECOND, 1, 0)]


@pytest.mark.parametrize("interval", ["1", "0.3"])
def test_pcapng_end_of_time_is_counted_and_ends(tmp_path, backend_env, interval):
    """2^64 - 1 ns used to spin the window loop for ever: run as a subprocess with a
    time limit, so that a regression fails instead of hanging the suite."""
    times = [1_700_000_000 * SECOND, END_OF_TIME - 1, END_OF_TIME]
    path = tmp_path / "end.pcapng"
    path.write_bytes(pcapng_file([(1, 0)], [(0, t, frame(1000 + i), None)
                                       for i, t in enumerate(times)]))
    proc = run_cli("read", str(path), "--interval", interval, "--format", "json", timeout=60)
    assert proc.returncode == 0, proc.stderr
    records = stream.decode(proc.stdout, "json")
    summary = records[-1]
    assert summary["type"] == "summary" and summary["totals"]["packets"] == 3
    assert summary["late_packets"] == 0
    last = [r for r in records if r["type"] == "window"][-1]
    assert last["end_ns"] == END_OF_TIME and last["totals"]["packets"] == 2
    assert last["start_ns"] == END_OF_TIME - END_OF_TIME % int(float(interval) * SECOND)
