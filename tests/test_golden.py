"""Every capture in tests/corpus gives exactly its .expected.json, on both backends."""
import json

import pytest

from streams import CORPUS, counters, read_stream

CAPTURES = sorted(p for p in CORPUS.glob("*.pcap*") if not p.name.endswith(".json"))


def test_fixtures_are_there():
    assert CAPTURES, f"expected the capture corpus in {CORPUS}"
    for expected in CORPUS.glob("*.expected.json"):
        assert (CORPUS / expected.name[:-len(".expected.json")]).exists(), expected


@pytest.mark.parametrize("capture", CAPTURES, ids=lambda p: p.name)
def test_capture_matches_expected(capture, backend_env, tmp_path, capsys):
    expected = json.loads((capture.parent / (capture.name + ".expected.json")).read_text())
    status, records, _ = read_stream(tmp_path, str(capture))
    err = capsys.readouterr().err
    if expected["supported"]:
        assert status == 0, err
        assert records[0]["type"] == "hello" and records[-1]["type"] == "summary"
        assert counters(records[-1]) == counters(expected)
        assert records[0]["sources"][0]["linktype_name"] == expected["linktype_name"]
        return
    assert status == 1
    assert err.startswith("pt-engine: error: ") and err.count("\n") == 1, err
    named = [str(n) for n, _ in expected["refused_linktypes"]] + \
            [name for _, name in expected["refused_linktypes"]]
    assert any(word in err for word in named), err
    if "before_refusal" in expected:
        # libpcap meets the interfaces in file order: what came before is reported.
        assert counters(records[-1]) == counters(expected["before_refusal"])
    else:
        assert records == [], "refused before any record"


def test_windows_add_up_to_summary(tmp_path):
    status, records, _ = read_stream(tmp_path, str(CORPUS / "ppp_many-protocols.pcap"),
                                     "--interval", "0.05")
    assert status == 0
    windows = [r for r in records if r["type"] == "window"]
    summary = records[-1]
    assert len(windows) == summary["windows"] > 1
    assert sum(w["totals"]["packets"] for w in windows) == summary["totals"]["packets"]
    assert sum(w["totals"]["bytes"] for w in windows) == summary["totals"]["bytes"]
    merged = {}
    for w in windows:
        assert w["end_ns"] - w["start_ns"] == 50_000_000
        assert w["start_ns"] % 50_000_000 == 0
        for proto, port, *vals in w["ports"]:
            acc = merged.setdefault((proto, port), [0, 0, 0, 0])
            for i, v in enumerate(vals):
                acc[i] += v
    assert [[p, port, *v] for (p, port), v in sorted(merged.items())] == summary["ports"]
    starts = [w["start_ns"] for w in windows]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
