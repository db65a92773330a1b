"""Least privilege: --user leaves no capability in any pt-engine process; a
non-root user with only CAP_NET_RAW (+CAP_NET_ADMIN for fanout) can capture;
packaging/pt-engine.service passes `systemd-analyze verify`."""
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = os.geteuid() == 0
REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "packaging" / "pt-engine.service"
SETPRIV = shutil.which("setpriv")


def _status(pid: int) -> dict:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def _tree(pid: int) -> list[int]:
    """`pid` and every descendant."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            children = []
        todo.extend(int(c) for c in children)
    return out


def _nobody_can_run_python() -> str | None:
    if not ROOT:
        return "needs root (to switch users and grant capabilities)"
    if SETPRIV is None:
        return "needs setpriv (util-linux)"
    probe = subprocess.run([SETPRIV, "--reuid", "nobody", "--regid", "nogroup",
                            "--clear-groups", "--", sys.executable, "-c", "import pt_engine"],
                           capture_output=True, cwd="/")
    if probe.returncode != 0:
        return ("user nobody cannot run this Python and pt_engine (a checkout in a private "
                f"directory?): {probe.stderr.decode().strip().splitlines()[-1:]}")
    return None


@pytest.mark.skipif(not ROOT or SETPRIV is None, reason="needs root and setpriv")
def test_user_clears_every_capability_of_every_process():
    # no_setuid_fixup makes setuid keep every capability: the engine must clear them
    nobody = pwd.getpwnam("nobody")
    proc = subprocess.Popen([SETPRIV, "--securebits", "+no_setuid_fixup", "--", sys.executable,
                             "-m", "pt_engine", "run", "-i", "lo", "--workers", "2", "--user",
                             "nobody", "--duration", "20", "--format", "json"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        seen = {}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            procs = {p: _status(p) for p in _tree(proc.pid)}
            procs = {p: s for p, s in procs.items() if s}
            if len(procs) >= 3 and all(s["Uid"].split()[0] == str(nobody.pw_uid)
                                       for s in procs.values()):
                seen = procs
                break
            time.sleep(0.1)
        assert seen, f"not every process became nobody: {procs}"
        for pid, st in seen.items():
            assert st["Uid"].split() == [str(nobody.pw_uid)] * 4, (pid, st["Uid"])
            assert st["Gid"].split()[0] == str(nobody.pw_gid)
            for key in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
                assert st[key] == "0000000000000000", (pid, key, st[key])
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


@pytest.mark.skipif(_nobody_can_run_python() is not None,
                    reason=str(_nobody_can_run_python()))
def test_non_root_with_only_net_raw_and_net_admin_captures():
    caps = "+net_raw,+net_admin"
    proc = subprocess.run([SETPRIV, "--reuid", "nobody", "--regid", "nogroup",
                           "--clear-groups", "--inh-caps", caps, "--ambient-caps", caps, "--",
                           sys.executable, "-m", "pt_engine", "run", "-i", "lo", "--workers",
                           "2", "--duration", "2", "--format", "json"],
                          capture_output=True, text=True, cwd="/", timeout=60)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert records[0]["type"] == "hello" and records[-1]["type"] == "summary"
    assert len(records[0]["sources"]) == 2
    # and without the capabilities it is a one-line error, not a traceback
    bare = subprocess.run([SETPRIV, "--reuid", "nobody", "--regid", "nogroup",
                           "--clear-groups", "--", sys.executable, "-m", "pt_engine", "run",
                           "-i", "lo", "--duration", "1"], capture_output=True, text=True,
                          cwd="/", timeout=60)
    assert bare.returncode == 1
    assert bare.stderr.strip().splitlines()[-1].startswith("pt-engine: error: ")
    assert "CAP_NET_RAW" in bare.stderr and "Traceback" not in bare.stderr


def _analyze_why_not() -> str | None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return "systemd-analyze is not installed (apt-get install systemd)"
    probe = subprocess.run([tool, "--version"], capture_output=True)
    if probe.returncode != 0:
        return f"systemd-analyze cannot run here: {probe.stderr.decode().strip()}"
    return None


@pytest.mark.skipif(_analyze_why_not() is not None, reason=str(_analyze_why_not()))
def test_systemd_unit_verifies(tmp_path):
    unit = tmp_path / "pt-engine.service"
    # ExecStart must name an executable that exists where it is verified
    text = UNIT.read_text().replace("/usr/local/bin/pt-engine",
                                    str(Path(sys.executable).parent / "pt-engine"))
    unit.write_text(text)
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                          capture_output=True, text=True, timeout=120)
    problems = [line for line in proc.stderr.splitlines()
                if str(unit) in line or "pt-engine.service" in line]
    assert proc.returncode == 0 and not problems, proc.stderr


def test_unit_asks_for_what_security_md_says():
    text = UNIT.read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", text, re.M))
    assert settings["AmbientCapabilities"].split() == ["CAP_NET_RAW", "CAP_NET_ADMIN"]
    assert settings["CapabilityBoundingSet"].split() == ["CAP_NET_RAW", "CAP_NET_ADMIN"]
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("ProtectHome", "yes"), ("PrivateTmp", "yes"),
                       ("RuntimeDirectory", "pt-engine"), ("StateDirectory", "pt-engine")):
        assert settings[key] == value, key
    assert settings["User"] != "root"
