"""`--output clickhouse:URL` and `--output history:PATH`: windows into the ClickHouse
schema of pt_engine.warehouse, on a server or in chDB.

Both are ThreadedSinks with the failure policy "continue": the aggregator
only queues the record (msgpack, bounded by --output-buffer); the sink's
thread turns windows into rows and inserts them in batches: what is queued
when it has caught up, at least once a second while it has not (a live run,
where a window comes once an interval, inserts each window on its own; a
file run batches what comes while an insert is under way). A server that is away is retried with backoff (0.5 s
doubling to 30 s) while the queue fills; a live run then drops records,
counted in the summary's ``outputs``, and capture never waits.

A retried batch never counts twice: where the server takes
``insert_deduplication_token``, each table's insert of a batch carries a
token of its own (host, batch, table) and the server drops a repeat; where
it does not (ClickHouse before 22), the sink looks for the batch's rows
(host and batch) before sending them again.
"""
from __future__ import annotations

import json
import socket
import time

from .. import stream, warehouse
from ..errors import ConfigError, EngineError
from ..log import log
from . import CLOSE_S, Destination, SinkContext, ThreadedSink

FLUSH_S = 1.0           # a file run inserts at most this often
MAX_ROWS = 500_000      # ... or when a batch has this many rows
BACKOFF_S = (0.5, 30.0)

_PORT_ROW = ('{"host":%s,"interface":%s,"proto":"%s","port":%d,"direction":"%s",'
             '"window_start":%d,"packets":%d,"bytes":%d,"batch":%d,"inserted":%d}\n')
_CLASS_ROW = ('{"host":%s,"interface":%s,"class":"%s","window_start":%d,"packets":%d,'
              '"bytes":%d,"batch":%d,"inserted":%d}\n')
_SOURCE_ROW = ('{"host":%s,"source":%s,"worker":%d,"window_start":%d,"received":%d,'
               '"dropped":%d,"if_dropped":%d,"transport_dropped":%d,"batch":%d,'
               '"inserted":%d}\n')

def host_name(opts) -> str:
    """The host column: --host-name (config host_name), else this machine's name."""
    return getattr(opts, "host_name", None) or socket.gethostname()


class _Batch:
    """Rows of the windows taken since the last insert, per table."""

    def __init__(self, batch_id: int):
        self.id = batch_id
        self.inserted = batch_id // 1_000_000_000
        self.rows: dict[str, list[str]] = {table: [] for table in warehouse.TABLES}
        self.records = 0                 # records in it (counted as written once taken)
        self.done: set[str] = set()      # tables inserted
        self.tried: set[str] = set()     # tables whose insert may have reached the server
        self.started = time.monotonic()

    def size(self) -> int:
        return sum(len(rows) for rows in self.rows.values())


class WarehouseSink(ThreadedSink):
    """Windows into a warehouse store; the store comes from ``open_store``."""

    on_failure = "continue"
    formats = ()                  # rows of its own; the queue holds msgpack

    def __init__(self, dest: Destination, ctx: SinkContext):
        text = f"{dest.scheme}:{dest.target or ''}"
        self.store = warehouse.open_store(text, ctx.options)
        self.caps = self._connect()
        opts = ctx.options
        self._host_text = host_name(opts)
        self._host = json.dumps(self._host_text)
        self._interface = json.dumps("")
        self._batch: _Batch | None = None
        self._last_id = 0
        self._last_flush = time.monotonic()
        self._away_since: float | None = None
        self._closing_seen: float | None = None
        super().__init__(dest, ctx)
        self.name = self.store.name
        self.encode = stream.encoder("msgpack")
        if not self.caps.dedup_token or not self.caps.ttl:
            lacks = [what for what, has in (("TTL: rows are kept until deleted by hand",
                                             self.caps.ttl),
                                            ("insert_deduplication_token: a retried batch "
                                             "is looked for before it is sent again",
                                             self.caps.dedup_token)) if not has]
            log(f"output {self.name}: ClickHouse {self.caps.version} lacks "
                + "; ".join(lacks))

    def _connect(self) -> warehouse.Capabilities:
        """Create the schema; an unreachable server or a refused statement fails the
        run before any output (SinkError, one line)."""
        return warehouse.create_schema(self.store)

    # --- records to rows (the sink's thread) ------------------------------------------
    def write_bytes(self, data: bytes, kind: str) -> None:
        for record in stream.decode(data):
            kind = record.get("type")
            if kind == "hello":
                names = list(dict.fromkeys(str(s.get("name", "")) for s in record["sources"]))
                self._interface = json.dumps(names[0] if len(names) == 1 else ",".join(names))
            elif kind == "window":
                self._add(record)
        batch = self._batch
        if batch is None:
            return
        batch.records += 1
        now = time.monotonic()
        if (kind == "summary" or batch.size() >= MAX_ROWS or now - self._last_flush >= FLUSH_S
                or not self.backlog()):
            self._flush()

    def _new_batch(self) -> _Batch:
        self._last_id = max(self._last_id + 1, time.time_ns())
        return _Batch(self._last_id)

    def _add(self, window: dict) -> None:
        batch = self._batch = self._batch or self._new_batch()
        start = int(window["start_ns"]) // 1_000_000_000
        if start >= 1 << 32:
            return            # past DateTime's range (year 2106): not storable
        host, bid, ins = self._host, batch.id, batch.inserted
        groups = ([(json.dumps(str(i.get("name", ""))), i) for i in window["interfaces"]]
                  if window.get("interfaces") else [(self._interface, window)])
        ports, classes = batch.rows["pt_ports"], batch.rows["pt_classes"]
        for iface, group in groups:
            for proto, port, in_p, in_b, out_p, out_b in group.get("ports") or ():
                if in_p:
                    ports.append(_PORT_ROW % (host, iface, proto, port, "in", start, in_p,
                                              in_b, bid, ins))
                if out_p:
                    ports.append(_PORT_ROW % (host, iface, proto, port, "out", start, out_p,
                                              out_b, bid, ins))
            for name, counts in (group.get("classes") or {}).items():
                if counts["packets"]:
                    classes.append(_CLASS_ROW % (host, iface, name, start, counts["packets"],
                                                 counts["bytes"], bid, ins))
        quality = (window.get("tcp_quality") or {}).get("rows") or ()
        interface = json.loads(self._interface)
        for row in quality:          # few rows (TCP ports with data): plain json.dumps
            fields = {"host": self._host_text, "interface": interface, "port": row[1],
                      "side": row[2], "window_start": start,
                      **dict(zip(warehouse.QUALITY_COLUMNS, row[3:17])),
                      "rtt_hist": row[17], "batch": bid, "inserted": ins}
            batch.rows["pt_tcp_quality"].append(json.dumps(fields) + "\n")
        talkers = window.get("talkers")
        for entry in (talkers or {}).get("ports") or ():     # a few ports, N addresses each
            for direction in ("in", "out"):
                for t in entry[direction]:
                    batch.rows["pt_talkers"].append(json.dumps({
                        "host": self._host_text, "interface": interface,
                        "proto": entry["proto"], "port": entry["port"], "direction": direction,
                        "window_start": start, "policy": talkers["addresses"],
                        "address": t["address"], "packets": t["packets"], "bytes": t["bytes"],
                        "addresses": entry[f"{direction}_addresses"],
                        "error_bytes": entry[f"{direction}_error_bytes"], "batch": bid,
                        "inserted": ins}) + "\n")
        for src in window.get("sources") or ():
            batch.rows["pt_sources"].append(_SOURCE_ROW % (
                host, json.dumps(str(src.get("name", ""))), src.get("worker", 0), start,
                src.get("received", 0), src.get("dropped", 0), src.get("if_dropped", 0),
                src.get("transport_dropped", 0), bid, ins))

    # --- inserting ---------------------------------------------------------------------
    def _flush(self) -> None:
        """Insert the batch, retrying while the server is away. Raises StoreError when
        it gives up (the run is ending, or the sink failed): the batch's records are
        then counted as dropped."""
        batch = self._batch
        delay = BACKOFF_S[0]
        for table, rows in batch.rows.items():
            while rows and table not in batch.done:
                try:
                    self._insert(batch, table, rows)
                    batch.done.add(table)
                except warehouse.StoreError as err:
                    if err.sent:
                        batch.tried.add(table)
                    if self._away_since is None:
                        self._away_since = time.monotonic()
                        log(f"output {self.name}: {err}; retrying (records queue up to "
                            f"--output-buffer, then a live run drops them, counted)")
                    if self._give_up():
                        self._abandon(batch)
                        raise
                    self._sleep(self._backoff(delay))
                    delay = min(delay * 2, BACKOFF_S[1])
        if self._away_since is not None:
            log(f"output {self.name}: the server is back after "
                f"{time.monotonic() - self._away_since:.1f} s")
            self._away_since = None
        self._batch = None
        self._last_flush = time.monotonic()

    def _insert(self, batch: _Batch, table: str, rows: list[str]) -> None:
        if self.caps.dedup_token:
            token = f"pt-engine:{self._host_text}:{batch.id}:{table}"
            self.store.insert(table, "".join(rows).encode(), token)
            return
        if table in batch.tried and self._present(batch, table):
            return
        self.store.insert(table, "".join(rows).encode(), None)

    def _present(self, batch: _Batch, table: str) -> bool:
        """The batch's rows of `table` are in the store (an insert whose answer was lost)."""
        found = self.store.query(f"SELECT count() FROM {self.store.database}.{table} "
                                 f"WHERE host = {warehouse.literal(self._host_text)} "
                                 f"AND batch = {batch.id}").strip()
        return found not in ("", "0")

    def _give_up(self) -> bool:
        """Stop retrying: the sink failed (a file run that stalled) or the run is
        closing and its time to write what is queued is nearly over."""
        if self.failure is not None:
            return True
        if self._closing:
            if self._closing_seen is None:
                self._closing_seen = time.monotonic()
            return time.monotonic() - self._closing_seen > CLOSE_S / 2
        return False

    def _backoff(self, delay: float) -> float:
        """The next wait: `delay`, but no later than the give-up time when closing."""
        if self._closing_seen is None:
            return delay
        return max(0.05, min(delay, CLOSE_S / 2 - (time.monotonic() - self._closing_seen)))

    def _sleep(self, seconds: float) -> None:
        """The backoff: woken early only by a failure (closing does not cut it short,
        or the last retries would spin)."""
        with self._cond:
            self._cond.wait_for(lambda: self.failure is not None, seconds)

    def _abandon(self, batch: _Batch) -> None:
        """The batch will not be inserted: its records were counted as written when
        taken; they are dropped (the one in hand is counted by ThreadedSink)."""
        with self._cond:
            taken = batch.records - 1
            self.written -= taken
            self.dropped += taken
        self._batch = None

    def close_target(self) -> None:
        self.store.close()


class ClickHouseSink(WarehouseSink):
    """`--output clickhouse:http://HOST:8123/DATABASE` (or https://): a server; the
    user and password come from the config file or the environment."""

    def __init__(self, dest: Destination, ctx: SinkContext):
        if not dest.target or not dest.target.startswith(("http://", "https://")):
            raise ConfigError(f"--output {dest.text!r}: write it as "
                              "clickhouse:http://HOST:8123/DATABASE (or https://)")
        super().__init__(dest, ctx)

    def _connect(self) -> warehouse.Capabilities:
        try:
            return super()._connect()
        except EngineError as err:
            raise type(err)(f"--output {err}") from None


class HistorySink(WarehouseSink):
    """`--output history:PATH`: the same schema in chDB, in this process, on PATH."""
