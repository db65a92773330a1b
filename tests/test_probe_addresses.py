"""The --addresses policy on ping and scan: targets leave the engine as the policy
leaves them (records, hello, table, alerts), the rules and the probes see the
real ones."""
from __future__ import annotations

import io
import json
import subprocess
import sys

from pt_engine import stream
from pt_engine.probe.shown import Shown
from pt_engine.probe.table import TableSink


def _ping(tmp_path, *extra, state="state"):
    proc = subprocess.run([sys.executable, "-m", "pt_engine", "ping", "127.0.0.1", "--format",
                           "json", "--state-dir", str(tmp_path / state), *extra],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


def test_ping_records_pseudonymise_their_targets_by_default(tmp_path):
    records, _ = _ping(tmp_path)
    hello, window, final = records
    shown = Shown("pseudonymise", str(tmp_path / "state")).address("127.0.0.1")
    assert shown != "127.0.0.1"
    assert hello["addresses"] == "pseudonymise"
    assert hello["targets"] == [{"address": shown, "name": shown}]
    assert window["target"] == final["target"] == shown
    assert window["received"] == 1 and final["up"]
    again, _ = _ping(tmp_path)                    # the same key: the same pseudonym
    assert again[1]["target"] == shown
    other, _ = _ping(tmp_path, state="other")     # another key: another one
    assert other[1]["target"] not in (shown, "127.0.0.1")
    assert "127.0.0.1" not in json.dumps(records)


def test_truncation_and_clear(tmp_path):
    records, _ = _ping(tmp_path, "--addresses", "truncate:8,48")
    assert records[0]["addresses"] == "truncate:8,48"
    assert [r["target"] for r in records[1:]] == ["127.0.0.0", "127.0.0.0"]
    records, _ = _ping(tmp_path, "--addresses", "clear")
    assert records[0]["addresses"] == "clear"
    assert [r["target"] for r in records[1:]] == ["127.0.0.1", "127.0.0.1"]


def test_rules_match_the_real_target_and_alerts_show_the_policys(tmp_path):
    records, err = _ping(tmp_path, "--addresses", "hash", "--alert", "ping:127.0.0.1:rtt_ms>0")
    shown = Shown("hash", str(tmp_path / "state")).address("127.0.0.1")
    alerts = [r for r in records if r["type"] == "alert"]
    assert len(alerts) == 1 and alerts[0]["target"] == shown
    line = next(line for line in err.splitlines() if "alert 'ping:127.0.0.1:rtt_ms>0'" in line)
    assert shown in line and "127.0.0.1:" not in line.replace("'ping:127.0.0.1:rtt_ms>0'", "")


def test_ranges_keep_their_prefix_length_and_names_stay_names(tmp_path):
    shown = Shown("truncate:16,32")
    assert shown.address("10.1.2.0/30") == "10.1.0.0/30"
    assert shown.address("2001:db8::5%eth0") == "2001:db8::%eth0"
    assert shown.address("db.example") == "db.example"
    pan = Shown("pseudonymise", str(tmp_path))
    a, b = pan.address("10.1.2.3"), pan.address("10.1.2.0/24")
    assert b.endswith("/24") and a.rsplit(".", 1)[0] == b.rsplit(".", 1)[0]


def test_the_table_says_which_policy_its_addresses_follow():
    out = io.StringIO()
    table = TableSink(out)
    table.write(stream.probe_hello("ping", "icmp-raw", [], None, 3, 1, 1, 100, 1, "native",
                                   "pseudonymise"))
    assert "--addresses pseudonymise" in out.getvalue()
    out = io.StringIO()
    TableSink(out).write(stream.probe_hello("ping", "icmp-raw", [], None, 3, 1, 1, 100, 1,
                                            "native", "clear"))
    assert out.getvalue() == ""
