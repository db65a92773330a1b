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


def _capture_main(path: str, name: str, iface: int, bpf: str | None, ring: Ring, conn) -> None:
    """Body of a capture process: open one file, say READY, read it into the ring.

    SIGTERM asks it to stop: the batch being filled is handed over first (a
    read blocked on a pipe is interrupted, as the handler is installed without
    SA_RESTART), then it finishes with status 'interrupted'.
    """
    stopping = []
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the aggregator decides when to stop
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    producer = Producer(ring, conn)
    try:
        source = open_file(path, iface, bpf, name)
    except EngineError as err:
        producer.finish(Done("error", {}, type(err).__name__, str(err)))
        return
    producer.ready(source.describe())
    try:
        while True:
            slot = producer.acquire()
            n, status = source.fill(ring.slot_bytes(slot))
            if n:
                producer.publish(slot, n)
            if status == FILL_FULL and not stopping:
                continue
            stats = source.stats().__dict__
            if stopping:
                producer.finish(Done("interrupted", stats))
            elif status == FILL_EOF:
                producer.finish(Done("eof", stats))
            elif status == FILL_ERROR:
                err = source.failure()
                producer.finish(Done("error", stats, type(err).__name__, str(err)))
            else:
                producer.finish(Done("error", stats, "CaptureError",
                                     f"{name}: unexpected reader status {status}"))
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

        A source that cannot be opened fails the run before any output. A
        source that fails while being read raises its EngineError after the
        summary is written, so nothing already counted is lost.
        """
        opts = self.opts
        encode = stream.encoder(opts.output.format)
        aggregator = Aggregator(opts.interval_ns, opts.ports, emit=lambda r: None)
        ctx = multiprocessing.get_context("fork")
        rings = [Ring(opts.slots, opts.slot_records) for _ in opts.files]
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            for iface, (path, ring) in enumerate(zip(opts.files, rings)):
                here, there = ctx.Pipe(duplex=True)
                proc = ctx.Process(target=_capture_main, name=f"pt-engine capture {iface}",
                                   args=(_openable(path), path, iface, opts.bpf, ring, there),
                                   daemon=True)
                proc.start()
                there.close()
                self._workers.append(_Worker(proc, Consumer(ring, here), iface))
            described = [self._await_ready(w) for w in self._workers]
            sink = open_sink(opts.output, snapshot=lambda: encode(aggregator.snapshot()))
            try:
                aggregator.emit = lambda record: sink.write(encode(record), record["type"])
                backend = "reference" if use_reference_backend() else "native"
                aggregator.emit(stream.hello(described, opts.interval_ns, opts.bpf,
                                             opts.ports.text if opts.ports else None, backend))
                if opts.output.kind == "unix":
                    self._wait_for_subscriber(sink)
                dones = aggregator.run([(w.consumer, w.iface) for w in self._workers])
                dones = [self._explain(w, d) for w, d in zip(self._workers, dones)]
                summary = aggregator.snapshot("summary")
                summary["interrupted"] = self.interrupted
                summary["sources"] = [dict(d, **_done_fields(done))
                                      for d, done in zip(described, dones)]
                aggregator.emit(summary)
            finally:
                sink.close()
        finally:
            self._stop_workers()
            for s, handler in previous.items():
                signal.signal(s, handler)
            for ring in rings:
                ring.close()
        for done in dones:
            if done.kind == "error":
                raise getattr(errors, done.error_class, EngineError)(done.message)

    def _await_ready(self, worker: _Worker) -> dict:
        msg = worker.consumer.receive()
        if isinstance(msg, Done):
            raise getattr(errors, msg.error_class, EngineError)(msg.message)
        return msg

    def _wait_for_subscriber(self, sink) -> None:
        log(f"waiting for a subscriber on {self.opts.output.path}")
        if not sink.wait_for_subscriber(self.subscriber_wait):
            raise errors.SinkError(f"no subscriber connected to {self.opts.output.path} "
                                   f"within {self.subscriber_wait} s")

    def _stop_workers(self) -> None:
        for worker in self._workers:
            if worker.process.is_alive():
                worker.process.terminate()
            worker.process.join(5)
            worker.consumer.conn.close()

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
        # First signal: ask every capture process to hand over what it read and
        # stop. A second one: stop them at once.
        again = self.interrupted
        self.interrupted = True
        for worker in self._workers:
            if worker.process.is_alive():
                os.kill(worker.process.pid, signal.SIGKILL if again else signal.SIGTERM)


def _openable(path: str) -> str:
    """'-' (standard input, as tcpdump -r -) survives fork as a duplicated descriptor."""
    if path != "-":
        return path
    return f"/dev/fd/{os.dup(0)}"


def _done_fields(done: Done) -> dict:
    fields = {"status": done.kind, **done.stats}
    if done.message:
        fields["error"] = done.message
    return fields
