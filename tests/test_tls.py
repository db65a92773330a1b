"""`--output tls:HOST:PORT`: TLS 1.2+ with client certificates required.

Refused: a client without a certificate, one from another CA, an expired one,
one whose name is not listed; each refusal is one log line and the engine
keeps serving. A good client gets every window (engine.client and
`record --connect tls:`)."""
import socket
import ssl
import subprocess
import sys

import msgpack
import pytest

pytest.importorskip("cryptography", reason="cryptography is not installed "
                    "(pip install -e '.[test]')")

from pt_engine import client
from pt_engine.cli import main
from pt_engine.errors import ConfigError, StreamError
from streams import CORPUS
from tlscerts import Authority

MANY = CORPUS / "ppp_many-protocols.pcap"      # 4709 packets, 52 windows


@pytest.fixture
def pki(tmp_path):
    ca = Authority(tmp_path, "test-ca")
    other = Authority(tmp_path, "other-ca")
    return {"ca": ca, "other": other, "server": ca.issue("localhost", server=True),
            "good": ca.issue("collector"), "stranger": other.issue("collector2"),
            "expired": ca.issue("old-collector", expired=True),
            "unlisted": ca.issue("intruder")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def engine(pki, port, *extra):
    cert, key = pki["server"]
    return subprocess.Popen(
        [sys.executable, "-m", "pt_engine", "read", str(MANY), "--output",
         f"tls:127.0.0.1:{port}", "--tls-cert", cert, "--tls-key", key, "--tls-client-ca",
         str(pki["ca"].pem), "--subscriber-wait", "60", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_listening(port, proc):
    import time
    for _ in range(300):
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read())
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError("the engine did not listen")


def tls_for(pki, who):
    cert, key = pki[who]
    return client.ClientTls(cert, key, str(pki["ca"].pem))


def refused(port, pki, who=None) -> None:
    """A client (`who`'s certificate, None for none) that must be refused."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(pki["ca"].pem))
    if who is not None:
        ctx.load_cert_chain(*pki[who])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.settimeout(10)
                data = tls.recv(1)   # TLS 1.3: the refusal comes after the handshake
                assert data == b"", "a refused client must not get stream bytes"
                raise ConnectionResetError("closed")


def test_bad_clients_refused_good_client_gets_every_window(pki):
    port = free_port()
    proc = engine(pki, port)
    try:
        wait_listening(port, proc)
        refused(port, pki, None)
        refused(port, pki, "stranger")
        refused(port, pki, "expired")
        records = list(client.iter_records(f"tls:127.0.0.1:{port}",
                                           tls=tls_for(pki, "good")))
    finally:
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert records[0]["type"] == "hello" and records[-1]["type"] == "summary"
    assert sum(r["type"] == "window" for r in records) == 52
    assert records[-1]["totals"]["packets"] == 4709
    refusals = [line for line in err.splitlines() if "refused" in line]
    # wait_listening's bare TCP probe is refused too (it sends no handshake)
    assert len(refusals) == 4, err
    for reason in ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "unable to get local issuer "
                   "certificate", "certificate has expired"):
        assert sum(reason in line for line in refusals) == 1, err


def test_client_name_allow_list(pki):
    port = free_port()
    proc = engine(pki, port, "--tls-client-name", "collector")
    try:
        wait_listening(port, proc)
        with pytest.raises(StreamError):
            list(client.iter_records(f"tls:127.0.0.1:{port}", tls=tls_for(pki, "unlisted")))
        records = list(client.iter_records(f"tls:127.0.0.1:{port}",
                                           tls=tls_for(pki, "good")))
    finally:
        _, err = proc.communicate(timeout=60)
    assert sum(r["type"] == "window" for r in records) == 52
    assert "intruder is not in --tls-client-name" in err


def test_record_connect_over_tls(pki, tmp_path):
    port = free_port()
    proc = engine(pki, port)
    out = tmp_path / "rec.msgpack"
    try:
        wait_listening(port, proc)
        cert, key = pki["good"]
        assert main(["record", str(out), "--connect", f"tls:127.0.0.1:{port}", "--tls-cert",
                     cert, "--tls-key", key, "--tls-ca", str(pki["ca"].pem)]) == 0
    finally:
        proc.communicate(timeout=60)
    recs = list(msgpack.Unpacker(open(out, "rb"), raw=False))
    assert sum(r["type"] == "window" for r in recs) == 52


def test_client_refuses_engine_of_another_ca(pki, tmp_path):
    port = free_port()
    proc = engine(pki, port, "--subscriber-wait", "3")
    try:
        wait_listening(port, proc)
        cert, key = pki["good"]
        with pytest.raises(StreamError, match="not trusted"):
            client.connect(f"tls:127.0.0.1:{port}",
                           tls=client.ClientTls(cert, key, str(pki["other"].pem)))
    finally:
        proc.communicate(timeout=60)


def test_usage_errors(pki, capsys, tmp_path):
    assert main(["read", str(MANY), "--output", "tls:127.0.0.1:7443"]) == 2
    assert "needs --tls-cert" in capsys.readouterr().err
    assert main(["read", str(MANY), "--output", "tls:nowhere"]) == 2
    assert "tls:HOST:PORT" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--tls-ca"):
        client.connect("tls:127.0.0.1:1")
    with pytest.raises(StreamError, match="cannot connect"):
        client.connect(f"tls:127.0.0.1:{free_port()}", tls=tls_for(pki, "good"))


# --- the Prometheus endpoint takes the same certificate options --------------------------

def scrape(port, pki, who=None):
    """GET /metrics over HTTPS with `who`'s certificate (None: none); the text."""
    import urllib.request
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(str(pki["ca"].pem))
    if who is not None:
        ctx.load_cert_chain(*pki[who])
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/metrics", context=ctx,
                                timeout=10) as response:
        return response.read().decode()


def exporter(pki, port, *extra):
    """`pt-engine read -` serving prometheus: with the tls options, kept running
    while its stdin is open."""
    cert, key = pki["server"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pt_engine", "read", "-", "-o", f"prometheus:127.0.0.1:{port}",
         "-o", "/dev/null", "--tls-cert", cert, "--tls-key", key, "--tls-client-ca",
         str(pki["ca"].pem), *extra], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE)
    proc.stdin.write(MANY.read_bytes())
    proc.stdin.flush()
    return proc


def no_metrics(port, pki, who=None) -> None:
    import http.client
    with pytest.raises((OSError, http.client.HTTPException)):
        scrape(port, pki, who)


@pytest.mark.parametrize("names", [(), ("--tls-client-name", "collector")])
def test_prometheus_serves_https_to_good_clients_only(pki, names):
    pytest.importorskip("prometheus_client")
    import urllib.request
    port = free_port()
    proc = exporter(pki, port, *names)
    try:
        wait_listening(port, proc)
        no_metrics(port, pki, None)
        no_metrics(port, pki, "stranger")
        no_metrics(port, pki, "expired")
        if names:
            no_metrics(port, pki, "unlisted")
        with pytest.raises(OSError):      # plain HTTP gets nothing either
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        for _ in range(100):
            text = scrape(port, pki, "good")
            if "pt_engine_windows_total" in text:
                break
        assert "pt_engine_windows_total" in text
    finally:
        _, err = proc.communicate(timeout=60)      # closes stdin: the run ends
        err = err.decode()
    assert proc.returncode == 0, err
    refusals = [line for line in err.splitlines() if "refused" in line]
    assert "Traceback" not in err
    # wait_listening's bare probe, three (or four) bad certificates, plain HTTP
    assert len(refusals) == (6 if names else 5), err
    for reason in ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "unable to get local issuer "
                   "certificate", "certificate has expired"):
        assert sum(reason in line for line in refusals) == 1, err
    if names:
        assert "intruder is not in --tls-client-name" in err


def test_prometheus_tls_settings_and_their_errors(pki):
    from types import SimpleNamespace

    from pt_engine.sinks.prometheus import endpoint_tls
    from pt_engine.sinks.tls import ServerTls
    cert, key = pki["server"]
    run = ServerTls(cert, key, "ca.pem", ("collector",))
    none = SimpleNamespace()
    assert endpoint_tls(none, run) == run             # the tls: output's settings
    assert endpoint_tls(none, ServerTls(None, None, None)) is None     # plain HTTP
    own = SimpleNamespace(prometheus_tls_cert="p.crt", prometheus_tls_key="p.key")
    assert endpoint_tls(own, run) == ServerTls("p.crt", "p.key", None)   # as a set
    with pytest.raises(ConfigError, match="--tls-cert and --tls-key go together"):
        endpoint_tls(none, ServerTls(cert, None, None))
    with pytest.raises(ConfigError, match="prometheus_tls_client_ca needs"):
        endpoint_tls(SimpleNamespace(prometheus_tls_client_ca="ca.pem"), run)
