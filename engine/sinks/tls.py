"""`--output tls:HOST:PORT`: the stream over TCP with TLS 1.2+, client certificates required.

The subscriber behaviour is the UNIX socket's (pt_engine.sinks.unix
``SubscriberServer``: hello, snapshot, every record, slow subscribers cut);
this module adds the TLS listener. A connection becomes a subscriber only
once its handshake succeeded: the client showed a certificate signed by
``--tls-client-ca`` that is valid now and, with ``--tls-client-name``, whose
subject common name or DNS name is one of those listed. Handshakes run
non-blocking, moved along on every poll, and one that fails or takes more
than HANDSHAKE_S is closed with one log line; the others are served on.
There is no plaintext TCP output.

The same settings serve `--output prometheus:` (pt_engine.sinks.prometheus):
``server_context`` and ``check_client`` are shared, so both endpoints show
one certificate and take the same clients.
"""
from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass

from ..errors import ConfigError, SinkError
from . import Destination, SinkContext
from .unix import SubscriberServer, SubscriberSink

HANDSHAKE_S = 10.0


@dataclass(frozen=True)
class ServerTls:
    """The tls: outputs' settings (--tls-cert, --tls-key, --tls-client-ca,
    --tls-client-name)."""

    cert: str | None
    key: str | None
    client_ca: str | None
    client_names: tuple[str, ...] = ()


def split_host_port(text: str, what: str) -> tuple[str, int]:
    """(host, port) of HOST:PORT or [V6]:PORT; raises ConfigError naming `what`."""
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{what} tls:{text}: give tls:HOST:PORT, e.g. tls:0.0.0.0:7443")
    return host, int(port)


def server_context(tls: ServerTls, what: str = "--output tls:",
                   clients_required: bool = True) -> ssl.SSLContext:
    """A TLS 1.2+ server context, requiring client certificates signed by
    tls.client_ca (`clients_required`: always; else when a client CA is
    given); ConfigError names the option whose file is missing or unusable."""
    needed = [("--tls-cert", tls.cert), ("--tls-key", tls.key)]
    if clients_required:
        needed.append(("--tls-client-ca", tls.client_ca))
    for flag, value in needed:
        if not value:
            raise ConfigError(f"{what} needs {flag}" + (
                " (client certificates are always required)" if clients_required else ""))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(ctx.load_cert_chain, "--tls-cert/--tls-key", tls.cert, tls.key)
    if tls.client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        _load(ctx.load_verify_locations, "--tls-client-ca", tls.client_ca)
    return ctx


def handshake_failure(err: Exception) -> str:
    """Why a handshake failed, for the one log line of a refusal."""
    reason = getattr(err, "verify_message", None) or getattr(
        err, "reason", None) or getattr(err, "strerror", None) or type(err).__name__
    return f"TLS handshake failed ({reason})"


def check_client(conn: ssl.SSLSocket, names: frozenset[str]) -> tuple[set[str], str | None]:
    """(the peer certificate's names, why it is refused: None when it is not)
    after a handshake: with `names` (--tls-client-name), one of them must be
    the certificate's."""
    got = peer_names(conn.getpeercert() or {})
    if names and not got & names:
        return got, f"certificate of {', '.join(sorted(got)) or 'no name'} is not in " \
                    "--tls-client-name"
    return got, None


def _load(method, flags: str, *paths) -> None:
    try:
        method(*paths)
    except (OSError, ssl.SSLError) as err:
        reason = getattr(err, "strerror", None) or getattr(err, "reason", None) or err
        raise ConfigError(f"{flags} {' '.join(paths)}: {reason}") from None


def peer_names(cert: dict) -> set[str]:
    """The subject common names and DNS subject alternative names of a peer
    certificate (ssl.getpeercert())."""
    names = {value for rdn in cert.get("subject", ()) for key, value in rdn
             if key == "commonName"}
    names.update(value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS")
    return names


class TlsSubscriberServer(SubscriberServer):
    """SubscriberServer on a TLS listener at (host, port)."""

    def __init__(self, host: str, port: int, tls: ServerTls, max_buffer: int = 16 << 20,
                 snapshot=None):
        super().__init__(f"tls:{host}:{port}", max_buffer, snapshot)
        self._ctx = server_context(tls)
        self._names = frozenset(tls.client_names)
        self._handshakes: list[tuple[ssl.SSLSocket, str, float]] = []
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
            family, _, _, _, addr = infos[0]
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as err:
            raise SinkError(f"--output {self.name}: {err.strerror or err}") from err
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
            sock.listen(64)
        except OSError as err:
            sock.close()
            raise SinkError(f"--output {self.name}: cannot listen: {err.strerror}") from err
        sock.setblocking(False)
        self.address = sock.getsockname()[:2]     # the port, when 0 was given
        self._sock = sock

    def _admit(self, conn: socket.socket):
        try:
            peer = "%s:%s" % conn.getpeername()[:2]
            tls = self._ctx.wrap_socket(conn, server_side=True,
                                        do_handshake_on_connect=False)
        except OSError:
            conn.close()
            return None
        self._handshakes.append((tls, peer, time.monotonic() + HANDSHAKE_S))
        self._progress()
        return None

    def _progress(self) -> None:
        for item in list(self._handshakes):
            tls, peer, deadline = item
            try:
                tls.do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                if time.monotonic() > deadline:
                    self._refuse(item, f"no TLS handshake within {HANDSHAKE_S:g} s")
                continue
            except (ssl.SSLError, OSError) as err:
                self._refuse(item, handshake_failure(err))
                continue
            names, why = check_client(tls, self._names)
            if why is not None:
                self._refuse(item, why)
                continue
            self._handshakes.remove(item)
            self._ready(tls, f"subscriber {peer} ({', '.join(sorted(names))})")

    def _refuse(self, item, why: str) -> None:
        self._handshakes.remove(item)
        self._log_drop(f"{self.name}: refused {item[1]}: {why}")
        item[0].close()

    @staticmethod
    def _send(conn, data) -> int:
        try:
            return conn.send(data)
        except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
            raise BlockingIOError from None

    def _closed(self) -> None:
        for tls, _, _ in self._handshakes:
            tls.close()
        self._handshakes.clear()


class TlsSink(SubscriberSink):
    """The sink of `--output tls:HOST:PORT`."""

    def open_server(self, dest: Destination, ctx: SinkContext, snapshot):
        host, port = split_host_port(dest.target or "", "--output")
        return TlsSubscriberServer(host, port, ctx.tls or ServerTls(None, None, None),
                                   ctx.subscriber_buffer, snapshot)
