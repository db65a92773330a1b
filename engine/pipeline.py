"""Wiring: capture processes -> shared-memory rings -> aggregator -> sink.

The calling process is the aggregator. It validates every source first (so a
bad file or filter fails before anything starts), creates one Ring per
source, forks one capture process per source, and merges their records in
time order (engine.aggregate). SIGINT/SIGTERM stop the capture processes;
whatever they handed over is still counted, and the summary is written.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
from dataclasses import dataclass

from . import errors, stream
from .aggregate import Aggregator
from .config import ReadOptions
from .errors import EngineError
from .sinks import log, open_sink
from .sources import FILL_EOF, FILL_ERROR, FILL_FULL, open_file, use_reference_backend
from .transport import Consumer, Done, Producer, Ring


def _capture_main(path: str, iface: int, bpf: str | None, ring: Ring, conn) -> None:
    """Body of a capture process: read one file into the ring until it ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the aggregator decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    producer = Producer(ring, conn)
    try:
        source = open_file(path, iface, bpf)
    except EngineError as err:
        producer.finish(Done("error", {}, type(err).__name__, str(err)))
        return
    try:
        while True:
            slot = producer.acquire()
            n, status = source.fill(ring.slot_bytes(slot))
            if n:
                producer.publish(slot, n)
            if status == FILL_FULL:
                continue
            stats = source.stats().__dict__
            if status == FILL_EOF:
                producer.finish(Done("eof", stats))
            elif status == FILL_ERROR:
                err = source.failure()
                producer.finish(Done("error", stats, type(err).__name__, str(err)))
            else:
                producer.finish(Done("error", stats, "CaptureError",
                                     f"{path}: unexpected reader status {status}"))
            return
    finally:
        source.close()


@dataclass
class _Worker:
    process: multiprocessing.Process
    consumer: Consumer
    iface: int


class ReadPipeline:
    """`pt-engine read`: capture files -> stream. Use run() once."""

    def __init__(self, opts: ReadOptions, subscriber_wait: float | None = None):
        self.opts = opts
        self.subscriber_wait = subscriber_wait
        self.interrupted = False
        self._workers: list[_Worker] = []

    def run(self) -> None:
        """Read every file to its end and write the stream.

        Raises the first source's EngineError after the summary is written,
        so nothing already counted is lost.
        """
        opts = self.opts
        described = []
        for iface, path in enumerate(opts.files):
            source = open_file(path, iface, opts.bpf)   # validates path, format, link type, BPF
            described.append(source.describe())
            source.close()
        encode = stream.encoder(opts.output.format)
        aggregator = Aggregator(opts.interval_ns, opts.ports, emit=lambda r: None)
        sink = open_sink(opts.output, snapshot=lambda: encode(aggregator.snapshot()))
        try:
            aggregator.emit = lambda record: sink.write(encode(record), record["type"])
            backend = "reference" if use_reference_backend() else "native"
            aggregator.emit(stream.hello(described, opts.interval_ns, opts.bpf,
                                         opts.ports.text if opts.ports else None, backend))
            if opts.output.kind == "unix":
                log(f"waiting for a subscriber on {opts.output.path}")
                if not sink.wait_for_subscriber(self.subscriber_wait):
                    raise errors.SinkError(f"no subscriber connected to {opts.output.path} "
                                           f"within {self.subscriber_wait} s")
                sink.write(b"", "poll")
            dones = self._run_workers(aggregator)
            summary = aggregator.snapshot("summary")
            summary["interrupted"] = self.interrupted
            summary["sources"] = [dict(d, **_done_fields(done)) for d, done in zip(described, dones)]
            aggregator.emit(summary)
        finally:
            sink.close()
        if not self.interrupted:
            for done in dones:
                if done.kind == "error":
                    raise getattr(errors, done.error_class, EngineError)(done.message)

    def _run_workers(self, aggregator: Aggregator) -> list[Done]:
        ctx = multiprocessing.get_context("fork")
        rings = [Ring(self.opts.slots, self.opts.slot_records) for _ in self.opts.files]
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for iface, (path, ring) in enumerate(zip(self.opts.files, rings)):
                here, there = ctx.Pipe(duplex=True)
                proc = ctx.Process(target=_capture_main, name=f"pt-engine capture {iface}",
                                   args=(path, iface, self.opts.bpf, ring, there), daemon=True)
                proc.start()
                there.close()
                self._workers.append(_Worker(proc, Consumer(ring, here), iface))
            dones = aggregator.run([(w.consumer, w.iface) for w in self._workers])
            return [self._explain(w, d) for w, d in zip(self._workers, dones)]
        finally:
            for worker in self._workers:
                if worker.process.is_alive():
                    worker.process.terminate()
                worker.process.join(5)
                worker.consumer.conn.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
            for ring in rings:
                ring.close()

    def _explain(self, worker: _Worker, done: Done) -> Done:
        if done.kind == "error" and done.error_class == "TransportError":
            worker.process.join(5)
            code = worker.process.exitcode
            if self.interrupted:
                return Done("interrupted", done.stats)
            how = f"was killed by signal {-code}" if code and code < 0 else f"exited with {code}"
            return Done("error", done.stats, "TransportError",
                        f"capture process for {self.opts.files[worker.iface]} {how}")
        return done

    def _on_signal(self, signum, frame) -> None:
        self.interrupted = True
        for worker in self._workers:
            if worker.process.is_alive():
                os.kill(worker.process.pid, signal.SIGTERM)


def _done_fields(done: Done) -> dict:
    fields = {"status": done.kind, **done.stats}
    if done.message:
        fields["error"] = done.message
    return fields
