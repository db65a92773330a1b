"""The ClickHouse schema of pt-engine's history, and the two stores that hold it.

One schema (docs/clickhouse.md), two stores with the same SQL:

* ``HttpStore``: a ClickHouse server over its HTTP interface
  (``clickhouse:http://HOST:8123/DATABASE``, or ``https://``), rows as
  JSONEachRow, which every server since 1.1 reads;
* ``ChdbStore``: chDB, ClickHouse in this process, on a directory
  (``history:PATH``; PyPI ``chdb``, the ``pt-engine[history]`` extra).

Tables (the names are the users': their queries name them):

* ``pt_ports``: one row per (host, interface, proto, port, direction, window)
  with traffic; SummingMergeTree partitioned by day;
* ``pt_ports_1m``, ``pt_ports_5m``, ``pt_ports_1h``: rollups, materialized
  views of ``pt_ports``;
* ``pt_classes``: the four counting-rule classes per window;
* ``pt_sources``: libpcap's cumulative counters per capture process;
* ``pt_tcp_quality``: the tcp_quality rows of each window (--analyser
  tcp_quality), one per port and side, the RTT histogram as an array;
* ``pt_talkers``: the talkers each window lists (--analyser talkers), one
  row per (port, direction, address), the address as the stream gives it
  (the --addresses policy, named in the row); kept 14 days: addresses are
  personal data, pseudonymised or not.

Every row carries the ``batch`` it was inserted in and when (``inserted``):
retention (TTL) counts from ``inserted``, so that a capture read today from
last year is kept as long as one captured today. Queries always aggregate
(``sum() ... GROUP BY``): the answer never depends on how far merges got.

What a server lacks is found out, not assumed (``Capabilities``): TTL
(ClickHouse 19.6), ``insert_deduplication_token`` with a non-replicated
deduplication window (22.x). Without the token, a batch whose insert failed
is looked for (by host and batch) before it is sent again, so a retry never
counts twice on any server.
"""
from __future__ import annotations

import base64
import json
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from .errors import ConfigError, SinkError

SCHEMES = ("history", "clickhouse")
DATABASE = "pt_engine"            # history:PATH's database; clickhouse: URLs name theirs
# Retention in days, from the row's insertion (docs/clickhouse.md).
RETENTION_DAYS = {"pt_ports": 2, "pt_ports_1m": 14, "pt_ports_5m": 90, "pt_ports_1h": 400,
                  "pt_classes": 30, "pt_sources": 30, "pt_tcp_quality": 30, "pt_talkers": 14}
# Rollup table -> (step in seconds, ClickHouse function that cuts it).
ROLLUPS = {"pt_ports_1m": (60, "toStartOfMinute"),
           "pt_ports_5m": (300, "toStartOfFiveMinute"),
           "pt_ports_1h": (3600, "toStartOfHour")}
DEDUP_WINDOW = 1000               # batches a server remembers the tokens of
HTTP_TIMEOUT_S = 10.0
PORT_KEY = "host, interface, proto, direction, port, window_start"


class StoreError(SinkError):
    """The store cannot be reached or refused a statement. ``sent`` is False when
    nothing reached the server (the connection was refused): then nothing can
    have been inserted."""

    def __init__(self, message: str, sent: bool = True):
        super().__init__(message)
        self.sent = sent


@dataclass(frozen=True)
class Capabilities:
    """What the server takes, found by asking it (``detect``)."""

    version: str
    ttl: bool
    dedup_token: bool


# --- the schema --------------------------------------------------------------------------

def _ttl(caps: Capabilities, table: str) -> str:
    return f" TTL inserted + INTERVAL {RETENTION_DAYS[table]} DAY" if caps.ttl else ""


def _dedup(caps: Capabilities) -> str:
    return (f" SETTINGS non_replicated_deduplication_window = {DEDUP_WINDOW}"
            if caps.dedup_token else "")


def schema(db: str, caps: Capabilities) -> list[str]:
    """The CREATE statements of every table and view, in order, for this server."""
    ports = (f"CREATE TABLE IF NOT EXISTS {db}.pt_ports (host String, interface String, "
             "proto String, port UInt16, direction String, window_start DateTime('UTC'), "
             "packets UInt64, bytes UInt64, batch UInt64, inserted DateTime('UTC')) "
             "ENGINE = SummingMergeTree((packets, bytes)) "
             "PARTITION BY toYYYYMMDD(window_start) "
             f"ORDER BY ({PORT_KEY}, batch)" + _ttl(caps, "pt_ports") + _dedup(caps))
    out = [f"CREATE DATABASE IF NOT EXISTS {db}", ports]
    for table, (_step, cut) in ROLLUPS.items():
        out.append(
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{table} "
            "ENGINE = SummingMergeTree((packets, bytes)) "
            "PARTITION BY toYYYYMM(window_start) "
            f"ORDER BY ({PORT_KEY})" + _ttl(caps, table) + _dedup(caps) +
            f" AS SELECT host, interface, proto, direction, port, "
            f"{cut}(window_start) AS window_start, sum(packets) AS packets, "
            f"sum(bytes) AS bytes, max(inserted) AS inserted FROM {db}.pt_ports "
            f"GROUP BY {PORT_KEY}")
    out.append(f"CREATE TABLE IF NOT EXISTS {db}.pt_classes (host String, interface String, "
               "class String, window_start DateTime('UTC'), packets UInt64, bytes UInt64, "
               "batch UInt64, inserted DateTime('UTC')) "
               "ENGINE = SummingMergeTree((packets, bytes)) "
               "PARTITION BY toYYYYMM(window_start) "
               "ORDER BY (host, interface, class, window_start, batch)"
               + _ttl(caps, "pt_classes") + _dedup(caps))
    out.append(f"CREATE TABLE IF NOT EXISTS {db}.pt_sources (host String, source String, "
               "worker UInt16, window_start DateTime('UTC'), received UInt64, "
               "dropped UInt64, if_dropped UInt64, transport_dropped UInt64, batch UInt64, "
               "inserted DateTime('UTC')) ENGINE = MergeTree "
               "PARTITION BY toYYYYMM(window_start) "
               "ORDER BY (host, source, worker, window_start, batch)"
               + _ttl(caps, "pt_sources") + _dedup(caps))
    out.append(f"CREATE TABLE IF NOT EXISTS {db}.pt_tcp_quality (host String, "
               "interface String, port UInt16, side String, window_start DateTime('UTC'), "
               + ", ".join(f"{name} UInt64" for name in QUALITY_COLUMNS) +
               ", rtt_hist Array(UInt64), batch UInt64, inserted DateTime('UTC')) "
               "ENGINE = MergeTree PARTITION BY toYYYYMM(window_start) "
               "ORDER BY (host, interface, port, side, window_start, batch)"
               + _ttl(caps, "pt_tcp_quality") + _dedup(caps))
    out.append(f"CREATE TABLE IF NOT EXISTS {db}.pt_talkers (host String, interface String, "
               "proto String, port UInt16, direction String, window_start DateTime('UTC'), "
               "policy String, address String, packets UInt64, bytes UInt64, "
               "addresses UInt32, error_bytes UInt64, batch UInt64, inserted DateTime('UTC')) "
               "ENGINE = MergeTree PARTITION BY toYYYYMM(window_start) "
               "ORDER BY (host, interface, proto, port, direction, window_start, batch)"
               + _ttl(caps, "pt_talkers") + _dedup(caps))
    return out


TABLES = ("pt_ports", "pt_classes", "pt_sources", "pt_tcp_quality", "pt_talkers")
# The counters of a tcp_quality row after ("tcp", port, side), before rtt_hist
# (docs/quality-rules.md section 8), as pt_tcp_quality's columns.
QUALITY_COLUMNS = ("rtt_samples", "rtt_sum_ns", "rtt_min_ns", "rtt_max_ns", "jitter_sum_ns",
                   "jitter_pairs", "data_segments", "data_bytes", "retrans_segments",
                   "retrans_bytes", "ooo_segments", "gaps", "gap_bytes", "dup_acks")


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def detect(store) -> Capabilities:
    """Ask the server what it takes; raises StoreError."""
    version = store.query("SELECT version()").strip()
    token = store.query("SELECT count() FROM system.settings "
                        "WHERE name = 'insert_deduplication_token'").strip()
    window = store.query("SELECT count() FROM system.merge_tree_settings "
                         "WHERE name = 'non_replicated_deduplication_window'").strip()
    return Capabilities(version=version, ttl=_version_tuple(version) >= (19, 6),
                        dedup_token=token == "1" and window == "1")


def create_schema(store) -> Capabilities:
    """Create what is missing; return the server's capabilities. Raises StoreError."""
    caps = detect(store)
    for statement in schema(store.database, caps):
        store.query(statement)
    return caps


# --- the stores --------------------------------------------------------------------------

def literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class HttpStore:
    """A ClickHouse server over HTTP. User and password come from the caller
    (the config file or the environment), never from the URL."""

    def __init__(self, url: str, user: str | None = None, password: str | None = None):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"clickhouse:{url}: write it as clickhouse:http://HOST:8123/"
                              "DATABASE (or https://)")
        if parts.username or parts.password:
            raise ConfigError(f"clickhouse:{parts.scheme}://...@{parts.hostname}: put the user "
                              "and password in the config file (clickhouse_user, "
                              "clickhouse_password) or the environment "
                              "(PT_ENGINE_CLICKHOUSE_USER, PT_ENGINE_CLICKHOUSE_PASSWORD), "
                              "not on the command line")
        try:
            parts.port
        except ValueError:
            raise ConfigError(f"clickhouse:{url}: the port is not a number") from None
        database = parts.path.strip("/") or "default"
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", database):
            raise ConfigError(f"clickhouse:{url}: {database!r} is not a database name "
                              "(letters, digits, _)")
        self.database = database
        self.name = f"clickhouse:{parts.scheme}://{parts.netloc}/{database}"
        self._base = f"{parts.scheme}://{parts.netloc}/"
        self._headers = {}
        if user is not None:
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"

    def _post(self, params: dict, body: bytes) -> str:
        url = self._base + "?" + urllib.parse.urlencode(params)
        request = urllib.request.Request(url, data=body, headers=self._headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
                return response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as err:
            text = err.read().decode("utf-8", "replace").strip().splitlines()
            raise StoreError(f"{self.name}: the server said: "
                             f"{text[0] if text else err.reason}") from None
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            refused = isinstance(reason, (ConnectionRefusedError, socket.gaierror))
            text = getattr(reason, "strerror", None) or str(reason)
            raise StoreError(f"{self.name}: cannot reach the server: {text}",
                             sent=not refused) from None

    def query(self, sql: str) -> str:
        """Run one statement; its result as TabSeparated text. Raises StoreError."""
        return self._post({}, sql.encode())      # statements name their database

    def insert(self, table: str, rows: bytes, token: str | None) -> None:
        """Insert JSONEachRow rows; `token` deduplicates a repeat. Raises StoreError."""
        params = {"query": f"INSERT INTO {self.database}.{table} FORMAT JSONEachRow"}
        if token is not None:
            params["insert_deduplication_token"] = token
            params["deduplicate_blocks_in_dependent_materialized_views"] = 1
        self._post(params, rows)

    def close(self) -> None:
        """Nothing held between requests."""


_CHDB_LOCK = threading.Lock()     # chDB: one session per process


class ChdbStore:
    """chDB on a directory. The session is opened for each use and closed after
    it, since a chDB directory can be open in one process only: the engine
    writing the history and `pt-engine history` reading it take turns."""

    OPEN_TRIES_S = 10.0

    def __init__(self, path: str, create: bool = True):
        try:
            import chdb  # noqa: F401
        except ImportError:
            raise ConfigError(f"history:{path} needs chDB: pip install 'pt-engine[history]'"
                              ) from None
        if not path:
            raise ConfigError("history: needs a directory, as in history:/var/lib/pt-engine")
        self.path = os.path.abspath(path)
        self.database = DATABASE
        self.name = f"history:{path}"
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise ConfigError(f"{self.name}: not a directory")
        if not create and not os.path.isdir(self.path):
            raise ConfigError(f"{self.name}: no such directory")
        try:
            os.makedirs(self.path, exist_ok=True)
        except OSError as err:
            raise SinkError(f"{self.name}: {err.strerror}") from None
        self._session = None
        self._depth = 0

    def __enter__(self):
        _CHDB_LOCK.acquire()
        if self._depth == 0:
            self._session = self._open()
        self._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0:
            session, self._session = self._session, None
            session.close()
        _CHDB_LOCK.release()

    def _open(self):
        from chdb import session
        deadline = time.monotonic() + self.OPEN_TRIES_S
        while True:
            try:
                return session.Session(self.path)
            except Exception as err:     # chDB raises RuntimeError; a lock is not named
                if time.monotonic() > deadline:
                    raise StoreError(f"{self.name}: cannot open it ({_first_line(err)}; "
                                     "is another process using it?)", sent=False) from None
                time.sleep(0.2)

    def _run(self, sql: str) -> str:
        try:
            result = self._session.query(sql, "TabSeparated")
        except Exception as err:         # chDB raises RuntimeError with the server's text
            raise StoreError(f"{self.name}: {_first_line(err)}") from None
        return result.bytes().decode("utf-8", "replace") if hasattr(result, "bytes") \
            else str(result)

    def query(self, sql: str) -> str:
        """Run one statement; its result as TabSeparated text. Raises StoreError."""
        with self:
            return self._run(sql)

    def insert(self, table: str, rows: bytes, token: str | None) -> None:
        """Insert JSONEachRow rows; `token` deduplicates a repeat. Raises StoreError."""
        settings = (f" SETTINGS insert_deduplication_token = {literal(token)}, "
                    "deduplicate_blocks_in_dependent_materialized_views = 1" if token else "")
        with self:
            self._run(f"INSERT INTO {self.database}.{table}{settings} FORMAT JSONEachRow\n"
                      + rows.decode())

    def close(self) -> None:
        """Sessions are closed after each use."""


def _first_line(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def credentials(opts) -> tuple[str | None, str | None]:
    """User and password for a ClickHouse server: the environment's, else the config
    file's (clickhouse_user, clickhouse_password)."""
    user = os.environ.get("PT_ENGINE_CLICKHOUSE_USER") or getattr(opts, "clickhouse_user", None)
    password = os.environ.get("PT_ENGINE_CLICKHOUSE_PASSWORD")
    if password is None:
        password = getattr(opts, "clickhouse_password", None)
    return user, password


def open_store(text: str, opts=None, create: bool = True):
    """The store named by `history:PATH` or `clickhouse:URL` (`create`: a history's
    directory if missing); raises ConfigError."""
    scheme, _, rest = text.partition(":")
    if scheme == "history":
        return ChdbStore(rest, create)
    if scheme == "clickhouse":
        return HttpStore(rest, *credentials(opts))
    raise ConfigError(f"{text!r}: name a history as history:PATH or clickhouse:URL")


def is_store(text: str) -> bool:
    """`text` names a store (history:PATH, clickhouse:URL) rather than a file."""
    return text.partition(":")[0] in SCHEMES and ":" in text


# --- rows ----------------------------------------------------------------------------------

def json_rows(rows: list[dict]) -> bytes:
    """JSONEachRow text of `rows`."""
    return "".join(json.dumps(row, separators=(",", ":")) + "\n" for row in rows).encode()


def tsv(text: str) -> list[list[str]]:
    """Rows of a TabSeparated result."""
    return [line.split("\t") for line in text.splitlines() if line]
