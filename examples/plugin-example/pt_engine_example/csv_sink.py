"""`--output csv:PATH`: the port rows of every window as CSV.

A ThreadedSink: pt-engine queues what it writes and writes it in a thread of
its own, so a slow disk never stalls the aggregator. It encodes records in
its own way (``formats = ()``: a json: or msgpack: prefix is refused).
"""
from __future__ import annotations

import csv
import io

from pt_engine.errors import SinkError
from pt_engine.sinks import Destination, SinkContext, ThreadedSink
from pt_engine.stream import COL

HEADER = ("window_start_ns", "proto", "port", "in_packets", "in_bytes", "out_packets",
          "out_bytes")


class CsvSink(ThreadedSink):
    on_failure = "stop"          # a CSV file that cannot be written ends the run
    formats = ()

    def __init__(self, dest: Destination, ctx: SinkContext):
        try:
            self._fh = open(dest.target, "w", newline="", encoding="utf-8")
        except OSError as err:
            raise SinkError(f"--output {dest.text}: {err.strerror}") from err
        self._fh.write(",".join(HEADER) + "\r\n")
        super().__init__(dest, ctx)
        self.encode = self._rows

    def _rows(self, record: dict) -> bytes:
        """A window's rows as CSV text (other records: nothing)."""
        if record.get("type") != "window":
            return b""
        out = io.StringIO()
        writer = csv.writer(out)
        columns = COL.of("proto", "port", "in_packets", "in_bytes", "out_packets", "out_bytes")
        for row in record["ports"]:
            writer.writerow([record["start_ns"], *(row[c] for c in columns)])
        return out.getvalue().encode()

    def write_bytes(self, data: bytes, kind: str) -> None:
        if not data:
            return
        try:
            self._fh.write(data.decode())
            self._fh.flush()
        except OSError as err:
            raise SinkError(f"cannot write to {self.dest.target}: {err.strerror}") from err

    def close_target(self) -> None:
        try:
            self._fh.close()
        except OSError as err:
            raise SinkError(f"cannot write to {self.dest.target}: {err.strerror}") from err
