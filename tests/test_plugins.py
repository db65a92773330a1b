"""Plugins from a clean install: examples/plugin-example is installed with pip into
a directory of its own, found through its entry points, and used end to end;
a plugin that fails to import is one line naming it."""
from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pt_engine import stream
from streams import CORPUS

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "plugin-example"
MANY = CORPUS / "ppp_many-protocols.pcap"
MULTI = CORPUS / "ppp_many-protocols.pcap"


def _pip_install(source: Path, target: Path) -> None:
    # Without build isolation when setuptools can build wheels here (no download);
    # else pip fetches a build backend from the package index.
    local = all(importlib.util.find_spec(m) is not None
                for m in ("setuptools", "wheel"))
    isolation = ["--no-build-isolation"] if local else []
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                           "--disable-pip-version-check", *isolation, "--target", str(target),
                           str(source)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """PYTHONPATH under which the example plugin package is installed."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build") / "plugin-example"
    import shutil
    shutil.copytree(EXAMPLE, build)          # pip builds in place: keep the source clean
    _pip_install(build, target)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (
        str(target), os.environ.get("PYTHONPATH"))))}


def pt(env, *args):
    return subprocess.run([sys.executable, "-m", "pt_engine", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_plugins_lists_builtins_and_the_example(installed):
    proc = pt(installed, "plugins")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    for kind in ("sources:", "analysers:", "observers:", "sinks:"):
        assert kind in lines
    row = {line.split()[0]: line for line in lines if line.startswith("  ")}
    assert "built-in" in row["ports"] and "built-in" in row["unix"]
    assert "pt-engine-example 0.1.0" in row["csv"] and "CsvSink" in row["csv"]
    assert "pt-engine-example 0.1.0" in row["ip_protocols"]
    assert "BROKEN" not in proc.stdout


def test_the_example_plugins_end_to_end(installed, tmp_path):
    """A CSV output and the per-IP-protocol analyser beside a JSON output."""
    out_csv, out_json = tmp_path / "ports.csv", tmp_path / "s.json"
    proc = pt(installed, "read", str(MANY), "--interval", "0.5", "--analyser", "ip_protocols",
              "-o", f"csv:{out_csv}", "-o", f"json:{out_json}")
    assert proc.returncode == 0, proc.stderr
    records = stream.decode(out_json.read_bytes(), "json")
    windows = [r for r in records if r["type"] == "window"]
    summary = records[-1]
    # the CSV holds every port row of every window, in order
    with out_csv.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["window_start_ns", "proto", "port", "in_packets", "in_bytes",
                       "out_packets", "out_bytes"]
    expected = [[str(w["start_ns"]), *map(str, row)] for w in windows for row in w["ports"]]
    assert rows[1:] == expected and len(expected) > 100
    # ip_protocols: every packet once, per window and in total
    for w in windows:
        assert sum(p for _, p, _ in w["ip_protocols"]) == w["totals"]["packets"]
        assert sum(b for _, _, b in w["ip_protocols"]) == w["totals"]["bytes"]
    by_proto = {proto: (p, b) for proto, p, b in summary["ip_protocols"]}
    tcp = [r for r in summary["ports"] if r[0] == "tcp"]
    # each TCP packet adds to two rows' sides: in at its destination, out at its source
    assert by_proto[6][0] == sum(r[stream.COL.in_packets] for r in tcp)
    assert sum(p for p, _ in by_proto.values()) == summary["totals"]["packets"]
    # without --analyser the stream is as before: the plugin is not run
    plain = tmp_path / "plain.json"
    assert pt(installed, "read", str(MANY), "--interval", "0.5", "-o",
              f"json:{plain}").returncode == 0
    assert "ip_protocols" not in stream.decode(plain.read_bytes(), "json")[-1]


def test_csv_refuses_an_encoding_prefix(installed, tmp_path):
    proc = pt(installed, "read", str(MANY), "-o", f"json:csv:{tmp_path / 'x.csv'}")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "its own format" in proc.stderr, proc.stderr


def test_a_broken_plugin_is_one_line(installed, tmp_path):
    pkg = tmp_path / "broken"
    (pkg / "pt_engine_broken").mkdir(parents=True)
    (pkg / "pt_engine_broken" / "__init__.py").write_text("import no_such_module_here\n")
    (pkg / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = '
        '"setuptools.build_meta"\n[project]\nname = "pt-engine-broken"\nversion = "2.0"\n'
        '[project.entry-points."pt_engine.analysers"]\n'
        'broken = "pt_engine_broken:Nothing"\n[tool.setuptools]\n'
        'packages = ["pt_engine_broken"]\n')
    site = tmp_path / "site"
    _pip_install(pkg, site)
    env = {**installed, "PYTHONPATH": os.pathsep.join((str(site), installed["PYTHONPATH"]))}
    listing = pt(env, "plugins")
    assert listing.returncode == 0
    (line,) = [x for x in listing.stdout.splitlines() if x.strip().startswith("broken")]
    assert "pt-engine-broken 2.0" in line and "BROKEN" in line and "no_such_module_here" in line
    proc = pt(env, "read", str(MANY), "--analyser", "broken")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert ("analyser 'broken' (pt_engine_broken:Nothing, from pt-engine-broken 2.0) cannot "
            "be loaded: ModuleNotFoundError") in proc.stderr
