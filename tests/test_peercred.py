"""`--socket-users`: the unix: output's allow-list of user ids, checked with
SO_PEERCRED on every connection; each refusal is a log line."""
import os
import subprocess
import sys
import time

from pt_engine import client
from pt_engine.cli import main
from pt_engine.errors import StreamError
from streams import CORPUS

MANY = CORPUS / "ppp_many-protocols.pcap"      # 52 windows


def serve(path, *users):
    args = [a for u in users for a in ("--socket-users", u)]
    proc = subprocess.Popen([sys.executable, "-m", "pt_engine", "read", str(MANY), "--output",
                             f"unix:{path}", "--subscriber-wait", "5", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(200):
        if os.path.exists(path) or proc.poll() is not None:
            break
        time.sleep(0.05)
    return proc


def test_listed_uid_is_served(tmp_path):
    path = tmp_path / "s.sock"
    proc = serve(path, "65000", str(os.getuid()))
    records = list(client.iter_records(f"unix:{path}"))
    proc.communicate(timeout=60)
    assert sum(r["type"] == "window" for r in records) == 52


def test_unlisted_uid_is_refused_with_a_log_line(tmp_path):
    path = tmp_path / "s.sock"
    proc = serve(path, "65000")
    try:
        try:
            got = list(client.iter_records(f"unix:{path}"))
        except StreamError:
            got = []
        assert got == []
    finally:
        _, err = proc.communicate(timeout=60)
    assert f"refused a subscriber of uid {os.getuid()}" in err
    assert "not in --socket-users" in err


def test_unknown_user_is_a_usage_error(tmp_path, capsys):
    assert main(["read", str(MANY), "--output", f"unix:{tmp_path}/s", "--socket-users",
                 "no-such-user-here"]) == 2
    assert "no such user" in capsys.readouterr().err
