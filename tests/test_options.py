"""The option table: one declaration per option gives argparse, the config file
and the options dataclasses; record takes the config file and alerts."""
from __future__ import annotations

import dataclasses

import pytest

from pt_engine import cli, options, stream
from pt_engine.cli import main
from pt_engine.config import load_config
from streams import CORPUS

MANY = CORPUS / "ppp_many-protocols.pcap"


@pytest.mark.parametrize("command", options.COMMANDS)
def test_every_option_of_the_table_is_on_the_command_line(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = capsys.readouterr().out
    for opt in options.for_command(command):
        if not opt.cli:         # a config file key only (credentials): never a flag
            assert opt.key in options.CONFIG_OPTS and opt.key not in text
            continue
        assert (opt.flags[-1] if opt.flags else opt.metavar) in text
        if opt.default not in (None, False) and "%(default)s" in opt.help:
            assert f"default {opt.default}" in " ".join(text.split())


@pytest.mark.parametrize("command", ("read", "run", "record"))
def test_options_dataclass_defaults_come_from_the_table(command):
    fields = {f.name: f.default for f in dataclasses.fields(options.options_class(command))}
    for opt in options.for_command(command):
        if opt.key == "config":
            continue
        if opt.default is not None and opt.convert is None:
            assert fields[opt.out] == opt.default, opt.key
    if command in ("run", "record"):
        assert fields["snaplen"] == 256 and fields["buffer_bytes"] == 0
    assert fields["output_buffer"] == 64 << 20 and fields["interval_ns"] == 10**9


def test_every_config_key_is_an_option_with_a_check(tmp_path):
    for key, opt in options.CONFIG_OPTS.items():
        assert opt.check is not None, key
    path = tmp_path / "c.toml"
    path.write_text("nosuch = 1\n")
    with pytest.raises(Exception) as err:
        load_config(str(path))
    for key in options.CONFIG_OPTS:
        assert key in str(err.value)


def test_record_takes_the_config_file_and_its_alerts(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text('interval = 0.5\n[[alert]]\nmetric = "packets_per_s"\nlimit = 50\n'
                      'name = "busy"\n')
    rec = tmp_path / "rec.msgpack"
    # --read before FILE: options in any order
    assert main(["record", "--read", str(MANY), str(rec), "--config", str(config)]) == 0
    records = stream.decode(rec.read_bytes())
    assert records[0]["interval_ns"] == 500_000_000
    assert any(r["type"] == "alert" and r["rule"] == "busy" for r in records)
    assert "alert 'busy'" in capsys.readouterr().err


def test_record_read_is_repeatable(tmp_path):
    rec = tmp_path / "rec.msgpack"
    assert main(["record", str(rec), "-r", str(MANY), "-r", str(MANY)]) == 0
    summary = stream.decode(rec.read_bytes())[-1]
    assert len(summary["sources"]) == 2
    assert summary["totals"]["packets"] == 2 * 4709


def test_config_settings_are_not_command_line_flags_for_connect(tmp_path):
    """A config file's interface and interval are for captures; record --connect
    does not take them for flags given on the command line."""
    config = tmp_path / "c.toml"
    config.write_text('interfaces = ["lo"]\ninterval = 2\n')
    proc_status = main(["record", str(tmp_path / "r.msgpack"), "--connect",
                        f"unix:{tmp_path}/none.sock", "--config", str(config)])
    assert proc_status == 1         # no engine on the socket, and no complaint about -i
