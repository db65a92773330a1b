"""The TOML config file and the --alert syntax: keys applied, the command line
on top, and errors that name the key, the file and the line."""
import os
import subprocess
from pathlib import Path

import pytest

import netns
from pt_engine import cli, options, stream
from pt_engine.alerts import Alerts
from pt_engine.config import (AlertRule, _key_lines, config_path, load_config, parse_alert,
                           parse_alerts)
from pt_engine.errors import ConfigError
from frames import eth, ipv4, pcap_file, udp
from streams import run_cli

S = 1_000_000_000
T0 = 1_700_000_000 * S

EVERY_KEY = '''\
# every key pt-engine knows
interfaces = ["pt-a0", "pt-b0"]
workers = 3
filter = "udp"
ports = [22, "5000-5010"]
interval = 0.5
snaplen = 128
buffer = 8
subscriber_buffer = 2.5
output = "unix:/tmp/pt-config-test.sock"
format = "json"
socket_mode = "0660"
socket_group = "root"
user = "root"
on_alert = "logger -t pt-engine"
alert_timeout = 3.5
alert_hooks = 2

[[alert]]
name = "web"
ports = "8000-8100"
proto = "tcp"
direction = "in"
metric = "bytes_per_s"
limit = "10M"
for_windows = 3
clear_ratio = 0.5
scope = "sum"

[[alert]]
metric = "packets_per_s"
limit = 500
'''


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def pcap(tmp_path: Path, rates: dict[int, int], port: int = 5000) -> str:
    """One UDP packet of rates[w] wire bytes to `port` in each 1 s window w."""
    frame = eth() + ipv4("10.0.0.1", "10.0.0.2", 17, udp(40000, port, b"x"))
    path = tmp_path / "traffic.pcap"
    path.write_bytes(pcap_file([(T0 + w * S + 1000, frame, n) for w, n in rates.items()],
                               linktype=1, nano=True))
    return str(path)


def parsed(config: Path, *argv: str):
    """The namespace `pt-engine ARGV` runs with under `config`."""
    return cli._parser(load_config(str(config)).defaults()).parse_args(list(argv))


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.decode()
    assert "Traceback" not in err, err
    assert err.startswith("pt-engine: error: ") and err.count("\n") == 1, err
    return err


# --- every key, and the command line on top ---------------------------------------

def test_every_key_is_applied(tmp_path):
    config = load_config(str(write(tmp_path, EVERY_KEY)))
    web, second = config.alerts
    assert web == AlertRule(name="web", ports="8000-8100", proto="tcp", direction="in",
                            metric="bytes_per_s", limit=10e6, for_windows=3, clear_ratio=0.5,
                            scope="sum")
    assert second == AlertRule(name="*:*:both:packets_per_s>500", ports="*", proto="*",
                               direction="both", metric="packets_per_s", limit=500.0)
    args = parsed(tmp_path / "config.toml", "run")
    opts = options.build("run", args, outputs=cli._destinations(args))
    assert opts.interfaces == ("pt-a0", "pt-b0")
    assert (opts.workers, opts.snaplen, opts.buffer_bytes) == (3, 128, 8 << 20)
    assert (opts.bpf, opts.ports.text, opts.interval_ns) == ("udp", "22,5000-5010", S // 2)
    assert opts.ports.mask[22] and opts.ports.mask[5010] and not opts.ports.mask[80]
    assert [(o.scheme, o.target, o.format) for o in opts.outputs] == [
        ("unix", "/tmp/pt-config-test.sock", "json")]
    assert opts.user == "root"
    assert (args.socket_mode, args.socket_group, args.subscriber_buffer) == ("0660", "root", 2.5)
    alerts = Alerts.create(opts)
    assert alerts.rules == config.alerts
    assert (alerts.hooks.command, alerts.hooks.timeout, alerts.hooks.limit) == (
        "logger -t pt-engine", 3.5, 2)
    # read takes the keys that apply to it
    args = parsed(tmp_path / "config.toml", "read", "x.pcap")
    assert (args.interval, args.bpf, args.ports, args.output, args.format) == (
        0.5, "udp", "22,5000-5010", ("unix:/tmp/pt-config-test.sock",), "json")


def test_command_line_overrides_the_file(tmp_path):
    path = write(tmp_path, EVERY_KEY)
    args = parsed(path, "run", "-i", "eth9", "--workers", "1", "--interval", "2",
                  "--format", "msgpack", "--alert", "udp:53:in:packets_per_s>5",
                  "--on-alert", "true", "--alert-timeout", "1", "--alert-hooks", "4")
    assert args.interfaces == ["eth9"]
    assert (args.workers, args.interval, args.format, args.snaplen) == (1, "2", "msgpack", 128)
    alerts = Alerts.create(options.build("run", args, outputs=()))
    assert [r.name for r in alerts.rules] == ["udp:53:in:packets_per_s>5"]
    assert (alerts.hooks.command, alerts.hooks.timeout, alerts.hooks.limit) == ("true", 1, 4)
    args = parsed(path, "run", "-i", "eth8", "-i", "eth9")
    assert args.interfaces == ["eth8", "eth9"]


def test_read_runs_with_the_file_and_the_command_line_on_top(tmp_path):
    out = tmp_path / "hook.jsonl"
    stream_file = tmp_path / "stream.json"
    config = write(tmp_path, f'''
interval = 2
ports = "5000"
output = "{stream_file}"
format = "json"
on_alert = "cat >> {out}"

[[alert]]
name = "udp-in"
ports = 5000
proto = "udp"
direction = "in"
metric = "bytes_per_s"
limit = "1k"
for_windows = 2
''')
    traffic = pcap(tmp_path, {0: 1500, 1: 1500, 2: 1500, 3: 1500, 4: 100, 5: 100, 6: 100,
                              7: 100})
    proc = run_cli("read", traffic, "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    records = stream.decode(stream_file.read_bytes(), "json")
    assert records[0]["interval_ns"] == 2 * S and records[0]["ports_selected"] == "5000"
    # 2 s windows: 1500 bytes/s in the first two, 100 bytes/s in the last two
    alerts = [(r["type"], r["rule"], r["window_start_ns"]) for r in records
              if r["type"] in ("alert", "resolved")]
    assert alerts == [("alert", "udp-in", T0 + 2 * S), ("resolved", "udp-in", T0 + 6 * S)]
    assert len(out.read_text().splitlines()) == 2
    # the command line wins: its interval and its rule
    proc = run_cli("read", traffic, "--config", str(config), "--interval", "1",
                   "--output", "-", "--alert", "udp:5000:in:bytes_per_s>1400:name=cli")
    records = stream.decode(proc.stdout, "json")
    assert records[0]["interval_ns"] == S
    assert [(r["type"], r["rule"]) for r in records if r["type"] in ("alert", "resolved")] == [
        ("alert", "cli"), ("resolved", "cli")]


@pytest.mark.skipif(netns.why_not() is not None, reason=netns.why_not() or "")
def test_run_captures_as_the_file_says(tmp_path):
    out = tmp_path / "live.json"
    with netns.VethPair() as veth:
        config = write(tmp_path, f'''
interfaces = ["{veth.host}"]
workers = 2
snaplen = 128
interval = 0.25
output = "{out}"
format = "json"
''')
        proc = run_cli("run", "--config", str(config), "--duration", "1", timeout=60)
    assert proc.returncode == 0, proc.stderr
    records = stream.decode(out.read_bytes(), "json")
    hello = records[0]
    assert hello["interval_ns"] == S // 4
    assert [(s["name"], s["worker"], s["snaplen"]) for s in hello["sources"]] == [
        (veth.host, 0, 128), (veth.host, 1, 128)]
    assert records[-1]["type"] == "summary"


# --- where the file is ----------------------------------------------------------------

def test_default_locations(tmp_path, monkeypatch):
    monkeypatch.delenv("PT_ENGINE_CONFIG")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected_none = None if not os.path.isfile("/etc/pt-engine/config.toml") else \
        "/etc/pt-engine/config.toml"
    assert config_path(None) == expected_none
    home = tmp_path / "home" / ".config" / "pt-engine"
    home.mkdir(parents=True)
    (home / "config.toml").write_text("")
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert config_path(None) == str(home / "config.toml")
    xdg = tmp_path / "xdg" / "pt-engine"
    xdg.mkdir(parents=True)
    (xdg / "config.toml").write_text("")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config_path(None) == str(xdg / "config.toml")
    monkeypatch.setenv("PT_ENGINE_CONFIG", "/somewhere/else.toml")
    assert config_path(None) == "/somewhere/else.toml"
    assert config_path("given.toml") == "given.toml"


def test_the_default_file_is_read(tmp_path, monkeypatch):
    monkeypatch.delenv("PT_ENGINE_CONFIG")
    xdg = tmp_path / "xdg" / "pt-engine"
    xdg.mkdir(parents=True)
    (xdg / "config.toml").write_text("interval = 0.25\nformat = 'json'\n")
    proc = run_cli("read", pcap(tmp_path, {0: 100}), env={"XDG_CONFIG_HOME": str(tmp_path / "xdg")})
    assert proc.returncode == 0, proc.stderr
    assert stream.decode(proc.stdout, "json")[0]["interval_ns"] == S // 4
    # found, not named: it is named on stderr
    assert f"reading config file {xdg / 'config.toml'}" in proc.stderr.decode()


def test_missing_config_file_is_an_error(tmp_path):
    proc = run_cli("read", pcap(tmp_path, {0: 100}), "--config", str(tmp_path / "nope.toml"))
    assert proc.returncode == 2
    assert f"config file {tmp_path / 'nope.toml'}: No such file" in one_line_error(proc)
    proc = run_cli("read", pcap(tmp_path, {0: 100}),
                   env={"PT_ENGINE_CONFIG": str(tmp_path / "gone.toml")})
    assert proc.returncode == 2 and "gone.toml" in one_line_error(proc)


# --- errors name the key, the file and the line ------------------------------------------

ALERTS = '''\
interval = 1

[[alert]]
ports = 443
metric = "bytes_per_s"
limit = "10M"

# the second rule
[[alert]]
ports = "8000-8100"
proto = "tcp"
metric = "bits"
limit = 1
'''


@pytest.mark.parametrize("text, message", [
    ("interval = 1\nintervall = 2\n",
     "config.toml line 2: intervall: unknown key; the keys are addresses, alert, alert_hooks"),
    ("\n\nworkers = 0\n", "config.toml line 3: workers: 0: choose 1 to 64"),
    ("workers = '4'\n", "config.toml line 1: workers: '4' is not a whole number"),
    ("workers = true\n", "config.toml line 1: workers: True is not a whole number"),
    ("snaplen = 20\n", "config.toml line 1: snaplen: 20 is too short for the headers"),
    ("buffer = 5000\n", "config.toml line 1: buffer: 5000: choose 0 to 4096 MiB"),
    ("interval = 'soon'\n", "config.toml line 1: interval: 'soon' is not a number of seconds"),
    ("interval = 0\n", "line 1: interval: 0 must be between 0.001 and 86400 seconds"),
    ("ports = '80,70000'\n", "line 1: ports: '80,70000': '70000' is not a port number"),
    ("ports = [22, 1.5]\n", "line 1: ports: [22, 1.5] is not a port list"),
    ("interfaces = []\n", "line 1: interfaces: [] is not an interface name or a list"),
    ("format = 'xml'\n", "line 1: format: 'xml' is not one of msgpack, json"),
    ("output = 'unix:'\n", "line 1: output: 'unix:' needs a socket path"),
    ("socket_mode = 0o660\n", "line 1: socket_mode: 432 is not an octal mode such as 0660"),
    ("socket_mode = '999'\n", "line 1: socket_mode: '999' is not an octal mode"),
    ("user = 'no-such-user-pt'\n", "line 1: user: 'no-such-user-pt': no such user"),
    ("socket_group = 'no-such-group-pt'\n", "socket_group: 'no-such-group-pt': no such group"),
    ("alert_timeout = -1\n", "line 1: alert_timeout: -1: choose more than 0"),
    ("alert_hooks = 0\n", "line 1: alert_hooks: 0: choose 1 to 64"),
    ("on_alert = ''\n", "line 1: on_alert: '' is not a non-empty string"),
    (ALERTS, "config.toml line 12: alert[2].metric: 'bits' is not one of bytes_per_s, "
             "packets_per_s"),
    (ALERTS.replace('metric = "bits"', 'metric = "bytes_per_s"\nlimt = 5'),
     "config.toml line 13: alert[2].limt: unknown key; the keys are name, ports, proto"),
    (ALERTS.replace('limit = "10M"', 'limit = "10 lots"'),
     "config.toml line 6: alert[1].limit: '10 lots' is not a positive number"),
    (ALERTS.replace("limit = 1\n", "").replace('"bits"', '"bytes_per_s"'),
     "config.toml line 9: alert[2]: missing key 'limit'"),
    (ALERTS.replace("ports = 443", "ports = 70000"),
     "line 4: alert[1].ports: 70000 is not a port, a range such as 8000-8100, or *"),
    (ALERTS.replace('proto = "tcp"', 'proto = "icmp"'),
     "line 11: alert[2].proto: 'icmp' is not one of tcp, udp, sctp, udplite, dccp, *"),
    (ALERTS.replace('proto = "tcp"', 'direction = "up"'),
     "line 11: alert[2].direction: 'up' is not one of in, out, both"),
    (ALERTS.replace('proto = "tcp"', 'for_windows = 0'),
     "line 11: alert[2].for_windows: 0: must be 1 or more windows"),
    (ALERTS.replace('proto = "tcp"', 'clear_ratio = 1.5'),
     "line 11: alert[2].clear_ratio: 1.5 must be more than 0 and at most 1"),
    (ALERTS.replace('proto = "tcp"', 'scope = "all"'),
     "line 11: alert[2].scope: 'all' is not one of port, sum"),
    ('[[alert]]\nname = "a"\nmetric = "bytes_per_s"\nlimit = 1\n'
     '[[alert]]\nname = "a"\nmetric = "packets_per_s"\nlimit = 1\n',
     "config.toml line 6: alert[2].name: another rule is named 'a'"),
    ("[alert]\nmetric = 'bytes_per_s'\n", "line 1: alert: write alert rules as [[alert]] tables"),
    ("workers = 2\n[capture]\nworkers = 2\n", "config.toml line 2: capture: unknown key"),
    ('alert = [\n  {metric = "bytes_per_s", limit = 1},\n  {metric = "bits", limit = 1},\n]\n',
     "config.toml line 1: alert[2].metric: 'bits' is not one of"),
    ('on_alert = """\nworkers = 1\n"""\nworkers = 0\n', "config.toml line 4: workers: 0: choose"),
    ('"workers" = 0\n', "config.toml line 1: workers: 0: choose 1 to 64"),
    # ping rules: as --alert text under rule, or as a table with target
    ('[[alert]]\nrule = "ping:*:rtt>5"\n',
     "config.toml line 2: alert[1].rule: metric: 'rtt' is not one of loss_ratio, rtt_ms"),
    ('[[alert]]\nrule = "ping:*:loss_ratio>0.1:every=2"\n',
     "line 2: alert[1].rule: unknown option 'every=2'; the options are for=N, clear=R"),
    ('[[alert]]\nrule = "ping:*>5"\n', "line 2: alert[1].rule: write a ping rule as "
     "ping:TARGET:METRIC>LIMIT"),
    ('[[alert]]\nrule = 5\n', "line 2: alert[1].rule: 5 is not a rule text such as"),
    ('[[alert]]\nrule = "ping:*:loss_ratio>0.1"\nfor_windows = 2\n',
     "line 3: alert[1].for_windows: a table with rule has no other key"),
    ('[[alert]]\ntarget = "198.51.100.300"\nmetric = "rtt_ms"\nlimit = 50\n',
     "line 2: alert[1].target: '198.51.100.300' is not *, an address or a range"),
    ('[[alert]]\ntarget = "*"\nmetric = "bytes_per_s"\nlimit = 50\n',
     "line 3: alert[1].metric: 'bytes_per_s' is not one of loss_ratio, rtt_ms"),
    ('[[alert]]\ntarget = "*"\nmetric = "rtt_ms"\nlimit = 50\nscope = "sum"\n',
     "line 5: alert[1].scope: unknown key; a ping rule's (a table with target) are name, "
     "target, metric"),
    ('[[alert]]\ntarget = "*"\nmetric = "rtt_ms"\n', "line 1: alert[1]: missing key 'limit'"),
    ('[[alert]]\ntarget = "*"\nmetric = "rtt_ms"\nlimit = -1\n',
     "line 4: alert[1].limit: -1 is not a positive number"),
    ('[[alert]]\nrule = "ping:*:rtt_ms>50"\n[[alert]]\ntarget = "*"\nmetric = "rtt_ms"\n'
     'limit = 50\n', "line 3: alert[2]: another rule is named 'ping:*:rtt_ms>50'"),
])
def test_bad_key_or_value_names_key_file_and_line(tmp_path, text, message):
    path = write(tmp_path, text)
    proc = run_cli("read", pcap(tmp_path, {0: 100}), "--config", str(path))
    assert proc.returncode == 2
    err = one_line_error(proc)
    assert str(tmp_path) in err and message in err, err
    assert proc.stdout == b""


PING_RULES = '''\
[[alert]]
rule = "ping:*:loss_ratio>0.05"

[[alert]]
rule = "tcp:443:in:bytes_per_s>10M:for=3"

[[alert]]
target = "192.0.2.0/24"
metric = "rtt_ms"
limit = 50
for_windows = 3

[[alert]]
name = "slow-v6"
target = "2001:db8::1"
metric = "rtt_p95_ms"
limit = "2k"
op = "<"
clear_ratio = 0.5
'''


def test_config_ping_rules_are_the_alert_options_rules(tmp_path):
    rules = load_config(str(write(tmp_path, PING_RULES))).alerts
    assert rules == parse_alerts(["ping:*:loss_ratio>0.05", "tcp:443:in:bytes_per_s>10M:for=3",
                                  "ping:192.0.2.0/24:rtt_ms>50:for=3",
                                  "ping:2001:db8::1:rtt_p95_ms<2k:clear=0.5:name=slow-v6"])
    assert [r.name for r in rules] == ["ping:*:loss_ratio>0.05",
                                       "tcp:443:in:bytes_per_s>10M:for=3",
                                       "ping:192.0.2.0/24:rtt_ms>50:for=3", "slow-v6"]


def test_ping_alerts_from_the_config_file_fire(tmp_path):
    import json
    import socket
    with socket.socket() as s:                  # a closed loopback port: resets at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = write(tmp_path, '[[alert]]\nname = "any-rtt"\ntarget = "127.0.0.0/8"\n'
                           'metric = "rtt_ms"\nlimit = 0\nfor_windows = 2\n'
                           '[[alert]]\nrule = "ping:192.0.2.0/24:loss_ratio>0:name=elsewhere"\n')
    proc = run_cli("ping", "127.0.0.1", "--tcp", str(port), "--count", "3", "--interval",
                   "0.01", "--format", "json", "--config", str(path), "--addresses", "clear")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    windows = [r for r in records if r["type"] == "ping" and not r.get("final")]
    alerts = [r for r in records if r["type"] == "alert"]
    assert len(windows) == 3 and all(w["received"] == 1 for w in windows)
    # the second window over the limit fires the rule; the other rule's range is not probed
    assert [(a["rule"], a["target"], a["windows_over"]) for a in alerts] == [
        ("any-rtt", "127.0.0.1", 2)]
    assert alerts[0]["window_start_ns"] == windows[1]["window_start_ns"]
    # --alert replaces the file's rules
    proc = run_cli("ping", "127.0.0.1", "--tcp", str(port), "--count", "3", "--interval",
                   "0.01", "--format", "json", "--config", str(path), "--alert",
                   "ping:*:loss_ratio>0.5")
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["type"] for line in proc.stdout.decode().splitlines()] == [
        "hello", "ping", "ping", "ping", "ping"]


def test_lines_skip_multi_line_values_and_count_array_tables():
    text = '''\
a = """
b = 1 [x]
"""
c = [
  "d = 2",   # e = 3
  { f = 4 },
]
g.h = 5  # [not a table]
"quoted.key" = 'i = 6'

[[alert]]
name = 'x'
[[alert]]
metric = "m"
[alert.sub]
k = 1
[table]
x = 1
'''
    lines = _key_lines(text)
    assert lines == {("a",): 1, ("c",): 4, ("g", "h"): 8, ("quoted.key",): 9,
                     ("alert", 1): 11, ("alert", 1, "name"): 12, ("alert", 2): 13,
                     ("alert", 2, "metric"): 14, ("alert", 2, "sub"): 15,
                     ("alert", 2, "sub", "k"): 16, ("table",): 17, ("table", "x"): 18}


def test_toml_syntax_error_keeps_tomllibs_position(tmp_path):
    path = write(tmp_path, "interval = 1\n[[alert]\nmetric = 1\n")
    proc = run_cli("read", pcap(tmp_path, {0: 100}), "--config", str(path))
    assert proc.returncode == 2
    err = one_line_error(proc)
    assert f"config file {path}: " in err and "(at line 2, column 8)" in err, err


def test_not_utf8_is_an_error(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(b"interval = 1\nname = '\xff'\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(str(path))


# --- the --alert syntax ---------------------------------------------------------------------

def test_alert_syntax():
    rule = parse_alert("tcp:443:in:bytes_per_s>10M:for=3")
    assert rule == AlertRule(name="tcp:443:in:bytes_per_s>10M:for=3", ports="443", proto="tcp",
                             direction="in", metric="bytes_per_s", limit=10e6, for_windows=3)
    rule = parse_alert("*:8000-8100:both:packets_per_s>1.5k:clear=0.5:scope=sum:name=web")
    assert (rule.name, rule.ports, rule.port_range, rule.proto, rule.limit, rule.clear_ratio,
            rule.scope) == ("web", "8000-8100", (8000, 8100), "*", 1500.0, 0.5, "sum")
    assert parse_alert("udp:*:out:bytes_per_s>2g").port_range == (0, 65535)
    assert [parse_alert(f"udp:1:in:bytes_per_s>{x}").limit for x in
            ("500k", "500K", "10M", "1.5G", "2T", "1e3", "7")] == [
        5e5, 5e5, 1e7, 1.5e9, 2e12, 1e3, 7.0]
    assert parse_alert("udp:1:in:bytes_per_s>1000:for=2").text() == \
        "udp:1:in:bytes_per_s>1k:for=2"


@pytest.mark.parametrize("rule, message", [
    ("tcp:443:in:bytes_per_s", "write it as PROTO:PORTS:DIRECTION:METRIC>LIMIT"),
    ("tcp:443:bytes_per_s>1", "write it as PROTO:PORTS:DIRECTION:METRIC>LIMIT"),
    ("tcp:443:in:bits>1", "metric: 'bits' is not one of bytes_per_s, packets_per_s"),
    ("icmp:443:in:bytes_per_s>1", "proto: 'icmp' is not one of tcp, udp"),
    ("tcp:99999:in:bytes_per_s>1", "ports: '99999' is not a port, a range"),
    ("tcp:90-80:in:bytes_per_s>1", "ports: '90-80' is not a port, a range"),
    ("tcp:443:sideways:bytes_per_s>1", "direction: 'sideways' is not one of in, out, both"),
    ("tcp:443:in:bytes_per_s>lots", "limit: 'lots' is not a positive number"),
    ("tcp:443:in:bytes_per_s>0", "limit: '0' is not a positive number"),
    ("tcp:443:in:bytes_per_s>1:for=0", "for: 0: must be 1 or more windows"),
    ("tcp:443:in:bytes_per_s>1:for=x", "for: 'x' is not a whole number"),
    ("tcp:443:in:bytes_per_s>1:clear=2", "clear: 2 must be more than 0 and at most 1"),
    ("tcp:443:in:bytes_per_s>1:scope=all", "scope: 'all' is not one of port, sum"),
    ("tcp:443:in:bytes_per_s>1:every=2", "unknown option 'every=2'"),
])
def test_bad_alert_rule_is_a_usage_error(tmp_path, rule, message):
    proc = run_cli("read", pcap(tmp_path, {0: 100}), "--alert", rule)
    assert proc.returncode == 2
    err = one_line_error(proc)
    assert f"--alert {rule!r}: {message}" in err, err


@pytest.mark.parametrize("args, message", [
    (["--alert", "tcp:1:in:bytes_per_s>1", "--alert", "tcp:1:in:bytes_per_s>1"],
     "another rule is named 'tcp:1:in:bytes_per_s>1'"),
    (["--alert-timeout", "0"], "--alert-timeout 0.0: choose more than 0"),
    (["--alert-hooks", "0"], "--alert-hooks 0: choose 1 to 64"),
])
def test_bad_alert_options(tmp_path, args, message):
    proc = run_cli("read", pcap(tmp_path, {0: 100}), *args)
    assert proc.returncode == 2 and message in one_line_error(proc)


def test_names_are_unique_across_rules():
    with pytest.raises(ConfigError, match="another rule is named 'x'"):
        parse_alerts(["tcp:1:in:bytes_per_s>1:name=x", "udp:1:in:bytes_per_s>1:name=x"])


# --- hostile values and files (found by attacking the engine) ------------------------

@pytest.mark.parametrize("argv, message", [
    (["run", "-i", "lo", "--duration", "nan"], "'nan' is not a finite number"),
    (["run", "-i", "lo", "--duration", "1e400"], "'1e400' is not a finite number"),
    (["run", "-i", "lo", "--duration", "1e12"], "at most 31622400 seconds"),
    (["read", "x.pcap", "--subscriber-wait", "nan"], "'nan' is not a finite number"),
    (["read", "x.pcap", "--subscriber-wait", "-1"], "--subscriber-wait -1: choose 0"),
    (["read", "x.pcap", "--ports", "\u0663\u0663"], "is not a port number"),
    (["read", "x.pcap", "--interval", "\u0661"], "is not a number of seconds"),
    (["run", "-i", "lo", "--workers", "\u0662"], "is not a whole number"),
    (["run", "-i", "lo", "--socket-mode", "\u0666\u0666\u0660"], "is not an octal mode"),
    (["read", "x.pcap", "--alert", "tcp:\u0663\u0663:in:bytes_per_s>1"], "is not a port"),
])
def test_numbers_must_be_finite_in_range_and_ascii(argv, message):
    proc = run_cli(*argv, env={"PT_ENGINE_CONFIG": "/dev/null"})
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert message in err and "Traceback" not in err


def _config(tmp_path, text: str, mode: int = 0o644) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_deeply_nested_config_is_an_error(tmp_path):
    path = _config(tmp_path, "x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(str(path))


def test_endless_or_blocking_config_files_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="/dev/zero: not a regular file"):
        load_config("/dev/zero")
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)                      # no writer: reading would block for ever
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(str(fifo))
    big = _config(tmp_path, "# " + "x" * (2 << 20) + "\n")
    with pytest.raises(ConfigError, match="larger than 1 MiB"):
        load_config(str(big))
    assert load_config("/dev/null").defaults() == {}


@pytest.mark.skipif(os.geteuid() != 0, reason="the check applies when running as root")
def test_root_refuses_a_config_others_can_change(tmp_path):
    path = _config(tmp_path, 'on_alert = "touch /tmp/owned"\n', mode=0o666)
    with pytest.raises(ConfigError, match="writable by a user other than root"):
        load_config(str(path))
    path.chmod(0o644)
    os.chown(path, 65534, -1)
    with pytest.raises(ConfigError, match="owner uid 65534"):
        load_config(str(path))
    os.chown(path, 0, -1)
    assert load_config(str(path)).defaults()["on_alert"] == "touch /tmp/owned"


def _has_services() -> bool:
    import socket
    try:
        return socket.getservbyname("https", "tcp") == 443
    except OSError:
        return False


@pytest.mark.skipif(not _has_services(), reason="no /etc/services (Debian: netbase)")
def test_ports_take_service_names():
    from pt_engine.config import PortSpec
    spec = PortSpec.parse("ssh,https,8000-8002,domain")
    assert [p for p in range(65536) if spec.mask[p]] == [22, 53, 443, 8000, 8001, 8002]
    with pytest.raises(ConfigError, match="'nosuchsvc' is neither a port number"):
        PortSpec.parse("22,nosuchsvc")
