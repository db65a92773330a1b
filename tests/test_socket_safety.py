"""The UNIX socket output under attack: swapped symlinks, things in its place,
hostile directories, and a run that drops root."""
from __future__ import annotations

import os
import pwd
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from pt_engine.sinks.unix import SubscriberSocket
from pt_engine.errors import SinkError
from streams import CORPUS, run_cli

MANY = CORPUS / "ppp_many-protocols.pcap"


def test_symlink_swapped_in_before_chmod_is_not_followed(tmp_path, monkeypatch):
    """An attacker replaces the freshly bound socket with a symlink to a file of
    their choice before the mode is set: the file must keep its mode."""
    victim = tmp_path / "victim"
    victim.write_text("secret")
    victim.chmod(0o600)
    path = tmp_path / "s.sock"
    real_chmod, real_chown = os.chmod, os.chown

    def swap_then(real):
        def call(target, *args, **kwargs):
            if path.exists() or path.is_symlink():
                path.unlink()
            path.symlink_to(victim)
            return real(target, *args, **kwargs)
        return call

    monkeypatch.setattr(os, "chmod", swap_then(real_chmod))
    monkeypatch.setattr(os, "chown", swap_then(real_chown))
    sink = SubscriberSocket(str(path), mode=0o666, group=_a_group())
    try:
        assert stat.S_IMODE(victim.stat().st_mode) == 0o600
        assert victim.stat().st_gid == os.getgid()
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode), "the socket is what ends up at the path"
        assert stat.S_IMODE(st.st_mode) == 0o666
    finally:
        sink.close()
    assert victim.read_text() == "secret"
    assert not path.exists() and not path.is_symlink()


def _a_group() -> str:
    import grp
    return grp.getgrgid(os.getgid()).gr_name


def test_refuses_a_directory_others_can_write_without_sticky_bit(tmp_path):
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(SinkError, match="writable by other users and has no sticky bit"):
        SubscriberSocket(str(open_dir / "s.sock"))
    open_dir.chmod(0o1777)           # as /tmp: allowed
    SubscriberSocket(str(open_dir / "s.sock")).close()


@pytest.mark.parametrize("what", ["regular file", "FIFO", "directory", "symbolic link"])
def test_only_a_stale_socket_is_replaced(tmp_path, what):
    path = tmp_path / "out.sock"
    if what == "regular file":
        path.write_text("keep me")
    elif what == "FIFO":
        os.mkfifo(path)
    elif what == "directory":
        path.mkdir()
    else:
        path.symlink_to(tmp_path / "elsewhere")
    proc = run_cli("read", str(MANY), "--output", f"unix:{path}", "--subscriber-wait", "1")
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert err.startswith("pt-engine: error: ") and err.count("\n") == 1, err
    assert str(path) in err and f"is a {what}" in err and "Traceback" not in err
    assert os.path.lexists(path)
    if what == "regular file":
        assert path.read_text() == "keep me"


def test_stale_socket_is_replaced(tmp_path):
    path = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()                          # bound, never listening: what a dead engine leaves
    sink = SubscriberSocket(str(path))
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    sink.close()
    assert not path.exists()


ROOT = os.geteuid() == 0


@pytest.mark.skipif(not ROOT, reason="dropping to another user needs root")
def test_user_that_could_not_remove_the_socket_is_refused_up_front(tmp_path):
    rootdir = tmp_path / "rootonly"
    rootdir.mkdir(mode=0o755)
    proc = run_cli("run", "-i", "lo", "--duration", "1", "--user", "nobody",
                   "--output", f"unix:{rootdir}/s.sock", timeout=60)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "nobody could not remove the socket" in err and "Traceback" not in err
    assert list(rootdir.iterdir()) == []


@pytest.mark.skipif(not ROOT, reason="dropping to another user needs root")
def test_user_run_removes_its_socket(tmp_path):
    nobody = pwd.getpwnam("nobody")
    sockdir = Path(tempfile.mkdtemp(dir="/tmp"))     # pytest's own folders are 0700
    sockdir.chmod(0o755)
    os.chown(sockdir, nobody.pw_uid, nobody.pw_gid)
    path = sockdir / "pt.sock"
    proc = subprocess.run([sys.executable, "-m", "pt_engine", "run", "-i", "lo", "--duration",
                           "1.5", "--user", "nobody", "--output", f"unix:{path}"],
                          capture_output=True, timeout=60)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "cannot remove" not in err
    assert not os.path.lexists(path), "the dropped user removed its socket"
    sockdir.rmdir()


@pytest.mark.skipif(not ROOT, reason="dropping to another user needs root")
def test_user_that_cannot_reach_the_directory_is_refused(tmp_path):
    os.chmod(tmp_path, 0o700)
    sockdir = tmp_path / "run"
    sockdir.mkdir(mode=0o777)
    os.chown(sockdir, pwd.getpwnam("nobody").pw_uid, -1)
    proc = run_cli("run", "-i", "lo", "--duration", "1", "--user", "nobody",
                   "--output", f"unix:{sockdir}/s.sock", timeout=60)
    assert proc.returncode == 1 and b"could not remove the socket" in proc.stderr


def test_a_disconnect_storm_is_a_few_log_lines(tmp_path, capsys):
    sink = SubscriberSocket(str(tmp_path / "s.sock"))
    sink.write(b"\x80", "hello")
    for _ in range(200):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(str(tmp_path / "s.sock"))
        sink.poll()
        c.close()
        sink.write(b"\x80", "window")      # the write finds the subscriber gone
    sink.close()
    lines = capsys.readouterr().err.splitlines()
    assert 1 < len(lines) <= 6, lines
    assert lines[-1] == "pt-engine: ... and 195 more such lines", lines


def test_clean_shutdown_never_cuts_a_record(tmp_path, capsys):
    """A subscriber that has not read for a while is behind by several large
    records at the end: it gets whole records only, and a log line."""
    import msgpack
    path = tmp_path / "s.sock"
    sink = SubscriberSocket(str(path), max_buffer=64 << 20)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(str(path))
    records = [msgpack.packb({"type": "window", "n": i, "pad": "x" * 700_000})
               for i in range(6)]
    sink.write(msgpack.packb({"type": "hello"}), "hello")
    for r in records:
        sink.write(r, "window")
    data = bytearray()

    def late_reader():
        time.sleep(0.6)                 # behind when the stream ends, then reads
        while chunk := client.recv(1 << 16):
            data.extend(chunk)

    reader = threading.Thread(target=late_reader)
    reader.start()
    sink.close(linger=0.3)
    reader.join(10)
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(bytes(data))
    got = list(unpacker)
    assert got[0] == {"type": "hello"} and 1 <= len(got) <= 7
    assert [r["n"] for r in got[1:]] == list(range(len(got) - 1))
    assert unpacker.tell() == len(data), "the stream ends after a whole record"
    if len(got) < 7:
        assert "records behind at the end of the stream" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_a_wait_for_a_subscriber_ends_when_the_socket_path_is_taken_away(tmp_path, how):
    path = tmp_path / "s.sock"
    proc = subprocess.Popen([sys.executable, "-m", "pt_engine", "read", str(MANY),
                             "-o", f"unix:{path}"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert path.exists(), proc.stderr.read().decode() if proc.poll() is not None else ""
        path.unlink()
        if how == "replaced":
            other = socket.socket(socket.AF_UNIX)
            other.bind(str(path))
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 1
    assert lines[-1] == (f"pt-engine: error: unix:{path}: {path} was {how}"
                         f"{' by another socket or file' if how == 'replaced' else ''}; "
                         "no subscriber can connect")
    assert "Traceback" not in err.decode()


def test_a_subscriber_socket_tells_when_its_path_is_no_longer_its_own(tmp_path):
    path = tmp_path / "s.sock"
    server = SubscriberSocket(str(path))
    try:
        assert server.unreachable() is None
        path.unlink()
        path.write_text("")
        assert server.unreachable() == f"{path} was replaced by another socket or file"
        path.unlink()
        assert server.unreachable() == f"{path} was removed"
    finally:
        server.close()
