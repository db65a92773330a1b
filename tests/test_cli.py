"""The command line as a user meets it: outputs, options, errors and exit codes."""
import json
import os
import signal
import socket

import subprocess
import sys
import threading
import time

import msgpack
import pytest

from pt_engine import cli, stream
from frames import eth, ipv4, pcap_file, udp
from streams import DATA, CORPUS, counters, read_stream, run_cli

MANY = CORPUS / "ppp_many-protocols.pcap"
MANY_EXPECTED = json.loads((CORPUS / "ppp_many-protocols.pcap.expected.json").read_text())


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.decode()
    assert "Traceback" not in err, err
    assert err.startswith("pt-engine: error: ") and err.count("\n") == 1, err
    return err


def test_version():
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.decode().startswith("pt-engine 0.") and "backend: native" in proc.stdout.decode()


def test_default_output_is_msgpack_on_stdout():
    proc = run_cli("read", str(CORPUS / "tcpdump_dns-badcookie.pcap"))
    assert proc.returncode == 0, proc.stderr
    records = stream.decode(proc.stdout)
    assert [r["type"] for r in records] == ["hello", "window", "summary"]
    assert proc.stderr == b""


def test_json_and_msgpack_carry_the_same_records(tmp_path):
    _, as_msgpack, _ = read_stream(tmp_path, str(MANY))
    _, as_json, _ = read_stream(tmp_path, str(MANY), fmt="json")
    assert as_msgpack == as_json


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_reading_twice_is_byte_identical(tmp_path, fmt):
    files = [str(MANY), str(CORPUS / "zeek_dns-ech.pcap")]
    _, _, first = read_stream(tmp_path, *files, "--interval", "0.01", fmt=fmt)
    _, _, second = read_stream(tmp_path, *files, "--interval", "0.01", fmt=fmt)
    assert first and first == second


def test_snaplen_cut_capture_counts_wire_bytes(tmp_path):
    # many-protocols cut at 96 bytes by `editcap -s 96` (tests/data/README.md):
    # every header is still there, so every counter must equal the full file's.
    cut = DATA / "many-protocols-snap96.pcap"
    status, records, _ = read_stream(tmp_path, str(cut))
    assert status == 0
    assert counters(records[-1]) == counters(MANY_EXPECTED)
    # ...and those bytes are wire lengths, far more than was captured.
    captured = cut.stat().st_size - 24 - 16 * MANY_EXPECTED["totals"]["packets"]
    assert records[-1]["totals"]["bytes"] == MANY_EXPECTED["totals"]["bytes"] > 4 * captured


def test_ports_restricts_rows_not_totals(tmp_path):
    status, records, _ = read_stream(tmp_path, str(MANY), "--ports", "53,80,1000-2000")
    assert status == 0
    summary = records[-1]
    expected_rows = [r for r in MANY_EXPECTED["ports"] if r[1] in (53, 80) or 1000 <= r[1] <= 2000]
    assert summary["ports"] == expected_rows and expected_rows
    assert summary["totals"] == MANY_EXPECTED["totals"]
    for window in records[1:-1]:
        assert all(r[1] in (53, 80) or 1000 <= r[1] <= 2000 for r in window["ports"])


def test_bpf_filter_applies_in_libpcap(tmp_path):
    status, records, _ = read_stream(tmp_path, str(MANY), "--filter", "udp")
    assert status == 0
    summary = records[-1]
    assert summary["ports"] and all(row[0] == "udp" for row in summary["ports"])
    udp_rows = [r for r in MANY_EXPECTED["ports"] if r[0] == "udp"]
    assert summary["ports"] == udp_rows
    assert records[0]["filter"] == "udp"


def test_several_files_merge_in_time_order(tmp_path):
    a, b = CORPUS / "zeek_dns-ech.pcap", CORPUS / "tcpdump_dns-badcookie.pcap"
    _, ra, _ = read_stream(tmp_path, str(a))
    _, rb, _ = read_stream(tmp_path, str(b))
    _, both, _ = read_stream(tmp_path, str(b), str(a))
    summary = both[-1]
    assert summary["totals"]["packets"] == ra[-1]["totals"]["packets"] + rb[-1]["totals"]["packets"]
    assert [s["name"] for s in both[0]["sources"]] == [str(b), str(a)]
    starts = [r["start_ns"] for r in both if r["type"] == "window"]
    assert starts == sorted(starts)


def test_empty_capture_gives_zero_counters(tmp_path):
    status, records, _ = read_stream(tmp_path, str(CORPUS / "zeek_empty.pcap"))
    assert status == 0
    assert [r["type"] for r in records] == ["hello", "summary"]
    assert records[-1]["totals"] == {"packets": 0, "bytes": 0}


@pytest.mark.parametrize("args, status, words", [
    (["read", "/nonexistent/x.pcap"], 1, "no such file"),
    (["read", "/etc"], 1, "is a directory"),
    (["read", str(CORPUS / "README.md")], 1, "not a pcap or pcapng capture"),
    (["read", str(CORPUS / "tcpdump_unsupported-link-type-dbus.pcap")], 1, "231 (DBUS)"),
    (["read", str(MANY), "--filter", "tcp port"], 2, "--filter 'tcp port'"),
    (["read", str(MANY), "--ports", "80,70000"], 2, "'70000' is not a port number"),
    (["read", str(MANY), "--ports", "90-80"], 2, "runs backwards"),
    (["read", str(MANY), "--interval", "soon"], 2, "not a number of seconds"),
    (["read", str(MANY), "--output", "/nonexistent/dir/out"], 1, "--output /nonexistent/dir/out"),
])
def test_user_mistakes_get_one_line(args, status, words):
    proc = run_cli(*args)
    assert proc.returncode == status
    assert words in one_line_error(proc)
    assert proc.stdout == b""


def test_bad_format_is_a_usage_error():
    proc = run_cli("read", str(MANY), "--format", "xml")
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path):
    path = tmp_path / "secret.pcap"
    path.write_bytes(MANY.read_bytes()[:100])
    path.chmod(0)
    proc = run_cli("read", str(path))
    assert proc.returncode == 1 and "permission denied" in one_line_error(proc)


def test_cut_off_file_reports_everything_before_the_break(tmp_path):
    frames = [(i * 1000, eth() + ipv4("10.0.0.1", "10.0.0.2", 17, udp(1000 + i, 53, b"x" * 20)), None)
              for i in range(5)]
    whole = pcap_file(frames, linktype=1)
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(whole[:-10])                        # the last record loses 10 bytes
    out = tmp_path / "out.json"
    proc = run_cli("read", str(cut), "--format", "json", "--output", str(out))
    assert proc.returncode == 1
    err = one_line_error(proc)
    last_record_at = len(whole) - (16 + len(frames[-1][1]))
    assert f"record 5 starting at byte {last_record_at}" in err and "4 packets" in err
    records = stream.decode(out.read_bytes(), "json")
    assert records[-1]["type"] == "summary" and records[-1]["totals"]["packets"] == 4
    assert records[-1]["sources"][0]["status"] == "error"


def _fifo_pcap(tmp_path, packets: int):
    """A FIFO fed with a pcap header and `packets` frames, then held open."""
    fifo = tmp_path / "live.pcap"
    os.mkfifo(fifo)
    frames = [(i * 1000, eth() + ipv4("10.0.0.1", "10.0.0.2", 17, udp(5000, 53, b"q")), None)
              for i in range(packets)]
    data = pcap_file(frames, linktype=1)
    holder = {}

    def feed():
        fh = open(fifo, "wb")
        fh.write(data)
        fh.flush()
        holder["fh"] = fh

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return fifo, thread, holder


def _shm_segments():
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def _children(pid):
    """The engine's capture processes (not multiprocessing's resource tracker)."""
    import psutil
    return [c for c in psutil.Process(pid).children()
            if "resource_tracker" not in " ".join(c.cmdline())]


def _wait_for(predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _read_from_fifo(tmp_path, packets: int):
    """`pt-engine read` on a FIFO that delivered `packets` frames and stays open,
    once its capture process is blocked reading; returns (process, out, holder)."""
    fifo, thread, holder = _fifo_pcap(tmp_path, packets)
    out = tmp_path / "out.json"
    proc = subprocess.Popen([sys.executable, "-m", "pt_engine", "read", str(fifo), "--format", "json",
                             "--output", str(out)], stderr=subprocess.PIPE)
    thread.join(20)
    assert _wait_for(lambda: len(_children(proc.pid)) >= 1)
    time.sleep(0.5)
    return proc, out, holder


def test_sigterm_flushes_summary_and_leaks_no_segment(tmp_path):
    before = _shm_segments()
    proc, out, holder = _read_from_fifo(tmp_path, 7)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    holder["fh"].close()
    assert proc.returncode == 0, err
    records = stream.decode(out.read_bytes(), "json")
    assert records[-1]["type"] == "summary" and records[-1]["interrupted"] is True
    assert records[-1]["totals"]["packets"] == 7
    assert _shm_segments() <= before


def test_killed_capture_process_is_reported_without_leaks(tmp_path):
    before = _shm_segments()
    proc, out, holder = _read_from_fifo(tmp_path, 3)
    for child in _children(proc.pid):
        child.send_signal(signal.SIGKILL)
    _, err = proc.communicate(timeout=30)
    holder["fh"].close()
    assert proc.returncode == 1
    assert b"killed by signal 9" in err and b"Traceback" not in err
    records = stream.decode(out.read_bytes(), "json")
    assert records[-1]["type"] == "summary"
    assert _shm_segments() <= before


def test_unix_socket_output(tmp_path):
    path = tmp_path / "pt.sock"
    proc = subprocess.Popen([sys.executable, "-m", "pt_engine", "read", str(MANY),
                             "--output", f"unix:{path}"], stderr=subprocess.PIPE)
    assert _wait_for(path.exists)
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    unpacker = msgpack.Unpacker(raw=False)
    got = []
    while not got or got[-1]["type"] != "summary":
        data = sock.recv(1 << 16)
        assert data, "stream ended before the summary"
        unpacker.feed(data)
        got.extend(unpacker)
    sock.close()
    assert proc.wait(30) == 0
    assert got[0]["type"] == "hello"
    assert counters(got[-1]) == counters(MANY_EXPECTED)
    assert not path.exists(), "the socket file is removed at exit"


def test_unix_socket_gives_up_without_subscriber(tmp_path):
    proc = run_cli("read", str(MANY), "--output", f"unix:{tmp_path}/s.sock", "--subscriber-wait", "0.3")
    assert proc.returncode == 1
    assert "no subscriber" in proc.stderr.decode().splitlines()[-1]


def test_unix_socket_refuses_to_steal_a_live_socket(tmp_path):
    path = tmp_path / "busy.sock"
    owner = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    owner.bind(str(path))
    owner.listen(1)
    try:
        proc = run_cli("read", str(MANY), "--output", f"unix:{path}")
        assert proc.returncode == 1 and "already serving" in one_line_error(proc)
    finally:
        owner.close()


def test_standard_input_as_in_tcpdump_r_dash():
    proc = subprocess.run([sys.executable, "-m", "pt_engine", "read", "-", "--format", "json"],
                          input=MANY.read_bytes(), capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    records = stream.decode(proc.stdout, "json")
    assert records[0]["sources"][0]["name"] == "-"
    assert counters(records[-1]) == counters(MANY_EXPECTED)


@pytest.mark.parametrize("pure", ["0", "1"], ids=["native", "reference"])
def test_clock_stepping_back_is_counted_late(tmp_path, monkeypatch, pure):
    monkeypatch.setenv("PT_ENGINE_PUREPYTHON", pure)
    second = 1_000_000_000
    frame = eth() + ipv4("10.0.0.1", "10.0.0.2", 17, udp(4000, 53, b"x"))
    times = [0, 2 * second + 500_000_000, 1 * second + 200_000_000, 3 * second]
    path = tmp_path / "steps.pcap"
    path.write_bytes(pcap_file([(t + 1_700_000_000 * second, frame, None) for t in times],
                               linktype=1, nano=True))
    status, records, _ = read_stream(tmp_path, str(path))
    assert status == 0
    windows = [(r["start_ns"] // second - 1_700_000_000, r["totals"]["packets"], r["late_packets"])
               for r in records if r["type"] == "window"]
    # the 1.2 s packet arrives while [2, 3) is open: counted there, as late
    assert windows == [(0, 1, 0), (2, 2, 1), (3, 1, 0)]
    assert records[-1]["late_packets"] == 1 and records[-1]["totals"]["packets"] == 4


def test_short_flags_as_tcpdump_and_iftop(tmp_path):
    out = tmp_path / "udp.json"
    proc = run_cli("read", str(MANY), "-f", "udp", "-o", str(out), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    summary = stream.decode(out.read_bytes(), "json")[-1]
    assert summary["ports"] and {row[0] for row in summary["ports"]} == {"udp"}
    rec = tmp_path / "rec.msgpack"
    proc = run_cli("record", str(rec), "-r", str(MANY), "-f", "tcp")
    assert proc.returncode == 0, proc.stderr
    assert {row[0] for row in stream.decode(rec.read_bytes())[-1]["ports"]} == {"tcp"}


def test_top_level_help_lists_every_subcommand_with_its_line():
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.decode().split())
    for command in cli.COMMANDS:
        assert f"{command} {' '.join(cli._SUMMARIES[command].split())}" in text, command


def test_only_the_given_subcommand_gets_its_parser_and_imports():
    """`read` builds read's options alone and imports neither plot nor the TOML parser
    (no config file); the other subcommands are choices without options."""
    code = ("import sys; from pt_engine import cli; "
            "p = cli._parser(only=cli._given_command(['read', 'x.pcap'])); "
            "args = p.parse_args(['read', 'x.pcap']); "
            "subs = p._subparsers._group_actions[0].choices; "
            "print(args.files, sorted(subs), len(subs['run']._actions), "
            "'pt_engine.plot' in sys.modules, 'tomllib' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["['x.pcap']", *str(sorted(cli.COMMANDS)).split(), "1",
                                   "False", "False"]


def test_exit_after_flush_loses_nothing(tmp_path):
    """Started as the program, pt-engine ends with os._exit once it has flushed: the
    stream on stdout and in a file is whole, the status as before."""
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, "-m", "pt_engine", "read", str(MANY), "--format",
                           "json", "-o", "-", "-o", f"json:{out}"], capture_output=True)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().splitlines()
    assert json.loads(lines[-1])["type"] == "summary"
    assert out.read_text().splitlines() == lines
    bad = subprocess.run([sys.executable, "-m", "pt_engine", "read", str(tmp_path / "none")],
                         capture_output=True)
    assert bad.returncode == 1 and bad.stderr.decode().startswith("pt-engine: error: ")
