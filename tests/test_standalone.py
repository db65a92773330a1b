"""The repository stands on its own: a fresh clone with nothing beside it passes.

No test, document, benchmark or CI step may refer to a folder next to the
clone; test data lives in tests/corpus, tests/quality-corpus and tests/data.
"""
import json
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Built from parts so that this file does not itself mention the path it looks for.
OUTSIDE = re.compile(re.escape("..") + r"[/\\]" + "shared")
CHECKED = ["tests", "docs", "benchmarks", ".ci", "README.md", "setup.py", "pyproject.toml",
           "MANIFEST.in"]


def _text_files():
    for name in CHECKED:
        path = ROOT / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            if "__pycache__" in f.parts or f.suffix in (".pcap", ".pcapng", ".png", ".so"):
                continue
            try:
                yield f, f.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue


def test_nothing_refers_outside_the_repository():
    offenders = [str(f.relative_to(ROOT)) for f, text in _text_files() if OUTSIDE.search(text)]
    assert offenders == [], f"these refer to a folder beside the clone: {offenders}"


@pytest.mark.parametrize("folder, expected_suffix, at_least", [
    ("corpus", ".expected.json", 60), ("quality-corpus", ".quality.json", 25)])
def test_corpus_is_complete(folder, expected_suffix, at_least):
    corpus = ROOT / "tests" / folder
    captures = [p for p in corpus.iterdir() if p.suffix in (".pcap", ".pcapng")]
    assert len(captures) >= at_least
    readme = (corpus / "README.md").read_text()
    for capture in captures:
        expected = json.loads((corpus / f"{capture.name}{expected_suffix}").read_text())
        assert expected["file"] == capture.name
        assert f"`{capture.name}`" in readme, f"{capture.name} has no origin in the README"


def test_license_and_package_metadata():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "BSD-3-Clause"          # an SPDX expression, not a table
    assert "BSD 3-Clause License" in (ROOT / "LICENSE").read_text()
    assert meta["scripts"]["pt-engine"] == "pt_engine.cli:main"
    assert (ROOT / "engine" / "py.typed").exists()

