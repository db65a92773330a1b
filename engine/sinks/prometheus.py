"""`--output prometheus:HOST:PORT`: a /metrics endpoint (prometheus_client), updated
once per window.

Labels are bounded: a port is labelled by number only if it is in the
allow-list (``--prometheus-ports``; default the ``--ports`` selection, else
DEFAULT_PORTS); every other port of a protocol is summed into
``port="other"``, so the series add up to the totals. A port series appears
when it first has traffic. At most, per interface:
2 metrics x 2 directions x protocols seen x (ports allowed + 1) port
series, plus 8 class series, 4 per capture process and the engine's own
(README, "Prometheus").

The sink is a ThreadedSink (on_failure "continue"): the aggregator only
queues the record; the sink's thread folds it into the counters that a scrape
reads (under a lock, so a scrape sees whole windows).

TLS: the endpoint takes the run's server certificate options, those of
``--output tls:`` (pt_engine.sinks.tls): with --tls-cert and --tls-key
(config tls_cert, tls_key) it serves HTTPS (TLS 1.2+) only; with
--tls-client-ca (tls_client_ca) too, every client must show a certificate
signed by it, valid now, and with --tls-client-name one of those names; a
refused client gets one log line, the others are served. With both a tls:
output and Prometheus, both show the same certificate and take the same
clients. The config keys prometheus_tls_cert, prometheus_tls_key and
prometheus_tls_client_ca, when any is set, replace those three for this
endpoint alone (a scrape certificate of another CA), as a set and without
a name list. With none of them, /metrics is plain HTTP.
"""
from __future__ import annotations

import re
import ssl
import threading

from .. import __version__, stream
from ..config import PortSpec
from ..errors import ConfigError, SinkError
from ..log import log
from . import Destination, SinkContext, ThreadedSink
from .tls import HANDSHAKE_S, ServerTls, check_client, handshake_failure, server_context

# The default allow-list: services a server commonly offers (README lists them).
DEFAULT_PORTS = ("22,25,53,80,110,123,143,161,389,443,445,465,587,636,993,995,3306,3389,"
                 "5432,6379,8080,8443")
_TARGET = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+):(\d{1,5})")
_DIRECTIONS = ("in", "out")
# The RTT histogram's buckets (docs/quality-rules.md section 8: bucket k holds
# [2^(k-1), 2^k) µs) summed into Prometheus's cumulative le buckets every
# second power of four: le = 2^k µs counts the samples of buckets 0..k, exactly.
RTT_LE_POWERS = (6, 8, 10, 12, 14, 16, 18, 20, 22, 24)     # 64 µs ... 16.8 s
_RTT_SAMPLES, _RTT_SUM, _RTT_HIST = 3, 4, 17              # tcp_quality row columns
_SOURCE_COUNTERS = (("received", "packets libpcap received"),
                    ("dropped", "packets libpcap dropped (buffer full)"),
                    ("if_dropped", "packets the interface dropped"),
                    ("transport_dropped", "packets lost between capture and counting"))


def allow_list(opts) -> PortSpec:
    """The ports labelled by number: --prometheus-ports, else --ports, else the default."""
    return (getattr(opts, "prometheus_ports", None) or getattr(opts, "ports", None)
            or PortSpec.parse(DEFAULT_PORTS))


def endpoint_tls(opts, run_tls: ServerTls | None) -> ServerTls | None:
    """The TLS settings of the /metrics endpoint (module docstring), None for
    plain HTTP; ConfigError for an incomplete set."""
    own = tuple(getattr(opts, f"prometheus_tls_{k}", None) for k in ("cert", "key", "client_ca"))
    if any(own):
        tls, flags = ServerTls(*own), ("prometheus_tls_cert", "prometheus_tls_key",
                                       "prometheus_tls_client_ca")
    else:
        tls, flags = run_tls or ServerTls(None, None, None), ("--tls-cert", "--tls-key",
                                                               "--tls-client-ca")
    if bool(tls.cert) != bool(tls.key):
        raise ConfigError(f"--output prometheus: {flags[0]} and {flags[1]} go together")
    if tls.client_ca and not tls.cert:
        raise ConfigError(f"--output prometheus: {flags[2]} needs {flags[0]} and {flags[1]}")
    return tls if tls.cert else None


def parse_target(text: str) -> tuple[str, int]:
    """'127.0.0.1:9464', '[::1]:9464' -> (host, port); raises ConfigError."""
    match = _TARGET.fullmatch(text or "")
    if match is None or not 1 <= int(match[2]) <= 65535:
        raise ConfigError(f"--output prometheus:{text}: write it as prometheus:HOST:PORT, as "
                          "in prometheus:127.0.0.1:9464")
    return match[1].strip("[]"), int(match[2])


class PrometheusSink(ThreadedSink):
    """Serves /metrics on HOST:PORT from the windows it is given."""

    on_failure = "continue"
    formats = ()
    peers: list = []              # every output of the run, set by open_outputs

    def __init__(self, dest: Destination, ctx: SinkContext):
        try:
            import prometheus_client  # noqa: F401
        except ImportError:
            raise ConfigError("--output prometheus: needs prometheus_client: pip install "
                              "'pt-engine[prometheus]'") from None
        host, port = parse_target(dest.target)
        opts = ctx.options
        self._allowed = bytes(allow_list(opts).mask.astype("u1"))
        self._lock = threading.Lock()
        self._ports: dict[tuple, list[int]] = {}       # (iface, proto, port) -> 4 counts
        self._classes: dict[tuple, list[int]] = {}     # (iface, class) -> packets, bytes
        self._sources: dict[tuple, dict] = {}          # (name, worker) -> libpcap counters
        self._rtt: dict[tuple, list[int]] = {}         # (port, side) -> 32 buckets, sum, n
        self._several = False
        self._windows = 0
        self._late = 0
        self._last_end = 0.0
        self._backend = ""
        self._server, self._thread_http = self._serve(host, port, endpoint_tls(opts, ctx.tls),
                                                      dest.text)
        super().__init__(dest, ctx)
        self.name = dest.text
        self.encode = stream.encoder("msgpack")

    def _serve(self, host: str, port: int, tls: ServerTls | None, text: str):
        from prometheus_client import make_wsgi_app
        from prometheus_client.registry import CollectorRegistry
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        context = (None if tls is None else
                   server_context(tls, f"--output {text}", clients_required=False))
        try:
            return _start_server(host, port, make_wsgi_app(registry), context,
                                 frozenset(tls.client_names) if tls else frozenset(), text)
        except OSError as err:
            raise SinkError(f"--output {text}: cannot serve on {host}:{port}: "
                            f"{err.strerror or err}") from None

    # --- the sink's thread -------------------------------------------------------------
    def write_bytes(self, data: bytes, kind: str) -> None:
        for record in stream.decode(data):
            kind = record.get("type")
            if kind == "hello":
                with self._lock:
                    self._backend = str(record.get("backend", ""))
            elif kind == "window":
                self._fold(record)

    def _fold(self, window: dict) -> None:
        allowed = self._allowed
        several = bool(window.get("interfaces"))
        groups = ([(str(i.get("name", "")), i) for i in window["interfaces"]]
                  if several else [("", window)])
        delta: dict[tuple, list[int]] = {}
        for iface, group in groups:
            for proto, port, in_p, in_b, out_p, out_b in group.get("ports") or ():
                key = (iface, proto, str(port) if allowed[port] else "other")
                acc = delta.get(key)
                if acc is None:
                    delta[key] = [in_p, in_b, out_p, out_b]
                else:
                    acc[0] += in_p
                    acc[1] += in_b
                    acc[2] += out_p
                    acc[3] += out_b
        with self._lock:
            self._several = self._several or several
            ports = self._ports
            for key, counts in delta.items():
                acc = ports.get(key)
                if acc is None:
                    ports[key] = counts
                else:
                    for i in range(4):
                        acc[i] += counts[i]
            for iface, group in groups:
                for name, counts in (group.get("classes") or {}).items():
                    acc = self._classes.setdefault((iface, name), [0, 0])
                    acc[0] += counts["packets"]
                    acc[1] += counts["bytes"]
            for row in (window.get("tcp_quality") or {}).get("rows") or ():
                if not allowed[row[1]] or not row[_RTT_SAMPLES]:
                    continue
                acc = self._rtt.setdefault((row[1], row[2]), [0] * 34)
                for i, count in enumerate(row[_RTT_HIST]):
                    acc[i] += count
                acc[32] += row[_RTT_SUM]
                acc[33] += row[_RTT_SAMPLES]
            for src in window.get("sources") or ():
                self._sources[(str(src.get("name", "")), int(src.get("worker", 0)))] = src
            self._windows += 1
            self._late += int(window.get("late_packets", 0))
            self._last_end = int(window["end_ns"]) / 1e9

    def close_target(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Collector:
    """What a scrape reads: a copy of the sink's counters, taken under its lock."""

    def __init__(self, sink: PrometheusSink):
        self.sink = sink

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        sink = self.sink
        with sink._lock:
            ports = {k: list(v) for k, v in sink._ports.items()}
            classes = {k: list(v) for k, v in sink._classes.items()}
            sources = {k: dict(v) for k, v in sink._sources.items()}
            rtt = {k: list(v) for k, v in sink._rtt.items()}
            several, windows, late = sink._several, sink._windows, sink._late
            last_end, backend = sink._last_end, sink._backend
        iface = ["interface"] if several else []
        packets = CounterMetricFamily("pt_engine_port_packets", "Packets per port and "
                                      "direction (in: to the port, out: from it); ports "
                                      "outside the allow-list are summed into port=\"other\"",
                                      labels=["proto", "port", "direction", *iface])
        octets = CounterMetricFamily("pt_engine_port_bytes", "Bytes (wire lengths) per port "
                                     "and direction, as pt_engine_port_packets_total",
                                     labels=["proto", "port", "direction", *iface])
        for (name, proto, port), counts in sorted(ports.items()):
            for i, direction in enumerate(_DIRECTIONS):
                labels = [proto, port, direction, *([name] if several else [])]
                packets.add_metric(labels, counts[2 * i])
                octets.add_metric(labels, counts[2 * i + 1])
        yield packets
        yield octets
        cls_packets = CounterMetricFamily("pt_engine_class_packets", "Packets per counting "
                                          "class (ported, ip_other, non_ip, truncated)",
                                          labels=["class", *iface])
        cls_bytes = CounterMetricFamily("pt_engine_class_bytes", "Bytes per counting class",
                                        labels=["class", *iface])
        for (name, cls), (n, b) in sorted(classes.items()):
            labels = [cls, *([name] if several else [])]
            cls_packets.add_metric(labels, n)
            cls_bytes.add_metric(labels, b)
        yield cls_packets
        yield cls_bytes
        for field, text in _SOURCE_COUNTERS:
            family = CounterMetricFamily(f"pt_engine_source_{field}_packets",
                                         f"Per capture process: {text} (libpcap's counter)",
                                         labels=["source", "worker"])
            for (name, worker), src in sorted(sources.items()):
                family.add_metric([name, str(worker)], int(src.get(field, 0)))
            yield family
        if rtt:
            yield _rtt_family(rtt)
        yield CounterMetricFamily("pt_engine_windows", "Windows emitted", value=windows)
        yield CounterMetricFamily("pt_engine_late_packets", "Packets older than their "
                                  "window (a clock that stepped back)", value=late)
        yield GaugeMetricFamily("pt_engine_last_window_end_seconds", "End of the newest "
                                "window, packet time, seconds since the epoch",
                                value=last_end)
        written = CounterMetricFamily("pt_engine_output_written_records", "Records each "
                                      "output wrote (or took, for this one)",
                                      labels=["output"])
        dropped = CounterMetricFamily("pt_engine_output_dropped_records", "Records each "
                                      "output dropped (queue full, failed)",
                                      labels=["output"])
        subscribers = GaugeMetricFamily("pt_engine_subscribers", "Subscribers connected to "
                                        "each unix: output", labels=["output"])
        for peer in sink.peers:
            written.add_metric([peer.name], peer.written)
            dropped.add_metric([peer.name], peer.dropped)
            socket = getattr(peer, "socket", None)
            if socket is not None and hasattr(socket, "subscribers"):
                subscribers.add_metric([peer.name], socket.subscribers)
        yield written
        yield dropped
        if subscribers.samples:
            yield subscribers
        info = GaugeMetricFamily("pt_engine_build_info", "pt-engine's version and backend",
                                 labels=["version", "backend"])
        info.add_metric([__version__, backend], 1)
        yield info


def _rtt_family(rtt: dict):
    """pt_engine_tcp_rtt_seconds: the RTT samples of --analyser tcp_quality (native
    or not) per allow-listed port and side, as a Prometheus histogram."""
    from prometheus_client.core import HistogramMetricFamily
    family = HistogramMetricFamily("pt_engine_tcp_rtt_seconds", "TCP round-trip time "
                                   "samples (docs/quality-rules.md) per port and side",
                                   labels=["port", "side"])
    for (port, side), acc in sorted(rtt.items()):
        buckets = [(f"{(1 << k) / 1e6:g}", sum(acc[:k + 1])) for k in RTT_LE_POWERS]
        buckets.append(("+Inf", acc[33]))
        family.add_metric([str(port), side], buckets, sum_value=acc[32] / 1e9)
    return family


def _start_server(host: str, port: int, app, context: ssl.SSLContext | None,
                  names: frozenset[str], text: str):
    """prometheus_client's WSGI server in a daemon thread, as its
    start_http_server, but with our TLS context: the handshake runs in the
    connection's own thread (at most HANDSHAKE_S), and a client it refuses
    gets one log line instead of a traceback."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client.exposition import ThreadingWSGIServer

    class Handler(WSGIRequestHandler):
        admitted = True

        def setup(self):
            if context is not None:
                self.admitted = _admit(self.request, self.client_address, names, text)
            super().setup()

        def handle(self):
            if self.admitted:
                super().handle()

        def finish(self):
            try:
                super().finish()
            except (OSError, ValueError):
                if self.admitted:
                    raise

        def log_message(self, format, *args):
            """Scrapes are not logged."""

    class Server(ThreadingWSGIServer):
        address_family = socket_family(host, port)

        def handle_error(self, request, client_address):
            log(f"output {text}: request of {client_address[0]} failed")

    httpd = make_server(host, port, app, Server, handler_class=Handler)
    if context is not None:
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True,
                                           do_handshake_on_connect=False)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    return httpd, thread


def socket_family(host: str, port: int) -> int:
    import socket
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                              flags=socket.AI_PASSIVE)[0][0]


def _admit(conn, client_address, names: frozenset[str], text: str) -> bool:
    peer = f"{client_address[0]}:{client_address[1]}"
    conn.settimeout(HANDSHAKE_S)
    try:
        conn.do_handshake()
    except (ssl.SSLError, OSError) as err:
        why = handshake_failure(err)
    else:
        _, why = check_client(conn, names)
        if why is None:
            conn.settimeout(None)
            return True
    log(f"output {text}: refused {peer}: {why}")
    return False
