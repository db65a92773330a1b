"""`pt-engine plot` folds the ephemeral (client) ports into one line per protocol,
`tcp/ephemeral`, unless --no-fold; the recording itself keeps every port."""
from __future__ import annotations

import pytest

from pt_engine import plot, stream
from pt_engine.cli import main
from pt_engine.top import EPHEMERAL

SECOND = 10**9
T0 = 1_700_000_000


def recording(path, ports_selected: str | None = None) -> None:
    """Ten one-second windows: a server on tcp/443 and udp/53 answering a new client
    port each second (40000 + t tcp, 50000 + t udp), and tcp/8080 a little."""
    encode = stream.encoder("msgpack")
    hello = stream.hello([{"iface": 0, "kind": "live", "name": "eth0"}], SECOND, None,
                         ports_selected, "native")
    out = [encode(hello)]
    for t in range(10):
        ports = [["tcp", 443, 2, 1000, 2, 9000], ["tcp", 8080, 1, 100, 1, 100],
                 ["tcp", 40000 + t, 2, 9000, 2, 1000], ["udp", 53, 1, 60, 1, 200],
                 ["udp", 50000 + t, 1, 200, 1, 60]]
        out.append(encode({"type": "window", "start_ns": (T0 + t) * SECOND,
                           "end_ns": (T0 + t + 1) * SECOND, "ports": sorted(ports)}))
    out.append(encode({"type": "summary"}))
    path.write_bytes(b"".join(out))


@pytest.fixture
def rec(tmp_path):
    path = tmp_path / "rec.msgpack"
    recording(path)
    return path


def test_load_folds_a_port_range_into_one_port_per_protocol(rec):
    folded = plot.load([str(rec)], top=8, fold=(32768, 60999))
    by_label = {p.label: p for p in folded.ports}
    assert set(by_label) == {"tcp/443", "tcp/ephemeral", "udp/53", "udp/ephemeral",
                             "tcp/8080"}
    eph = by_label["tcp/ephemeral"]
    assert eph.port == EPHEMERAL and (eph.in_bytes, eph.out_bytes) == (90000, 10000)
    assert (eph.in_rate == 9000).all() and (eph.out_rate == 1000).all()
    assert (by_label["udp/ephemeral"].in_bytes, by_label["udp/ephemeral"].out_bytes) == \
        (2000, 600)
    assert folded.port_count == 5
    # without fold every port is its own, as recorded
    exact = plot.load([str(rec)], top=20)
    assert exact.port_count == 23 and "tcp/40000" in {p.label for p in exact.ports}
    assert not any("ephemeral" in p.label for p in exact.ports)
    # a range that holds no port folds nothing
    assert {p.label for p in plot.load([str(rec)], top=20, fold=(1, 2)).ports} == \
        {p.label for p in exact.ports}


def charted(monkeypatch, rec, tmp_path, *flags: str) -> list[str]:
    """The bar labels of `pt-engine plot` on rec, the ephemeral range 32768-60999."""
    got = {}
    monkeypatch.setattr(plot, "ephemeral_range", lambda: (32768, 60999))
    monkeypatch.setattr(plot, "save", lambda fig, path: got.setdefault("fig", fig))
    assert main(["plot", str(rec), "-o", str(tmp_path / "x.png"), "--top", "4", *flags]) == 0
    return [t.get_text() for t in got["fig"].axes[2].get_yticklabels()]


def test_plot_folds_by_default_and_no_fold_unfolds(monkeypatch, rec, tmp_path):
    assert charted(monkeypatch, rec, tmp_path) == ["tcp/443", "tcp/ephemeral", "udp/53",
                                                   "udp/ephemeral"]
    unfolded = charted(monkeypatch, rec, tmp_path, "--no-fold")
    assert unfolded[0] == "tcp/443" and not any("ephemeral" in t for t in unfolded)
    assert set(unfolded[1:]) <= {f"tcp/{40000 + t}" for t in range(10)} | {"tcp/8080"}


def test_ports_the_recording_selected_are_not_folded(tmp_path):
    path = tmp_path / "sel.msgpack"
    recording(path, ports_selected="443,53,8080,40003")
    labels = {p.label: p for p in plot.load([str(path)], top=20, fold=(32768, 60999)).ports}
    assert "tcp/40003" in labels and labels["tcp/ephemeral"].in_bytes == 9 * 9000
