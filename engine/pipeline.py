"""Wiring: capture processes -> per-window deltas -> aggregator -> observers -> sinks.

The calling process is the aggregator. It forks one capture process per
source (a file, or an interface; N per interface joined by PACKET_FANOUT),
each with a pipe of its own; every capture process opens its source and
answers READY (or fails the run before any output), then parses its frames
into records and counts them into windows itself (pt_engine.counting),
handing over one delta per closed window (pt_engine.transport). The
aggregator merges the windows of every capture process in time order
(pt_engine.aggregate), the analysers turn them into fields
(pt_engine.analysers), the observers add records (pt_engine.observers), and
every record goes to each output (pt_engine.sinks).

An output whose failure policy is "stop" (stdout, a file, a recording) that
fails stops the run as a signal would, except that the error is reported:
the summary still goes to the other outputs.

Stopping: SIGINT/SIGTERM (or --duration) ask the capture processes to hand
over what they hold and finish; the partial window and the summary are
written; a second signal kills them. A capture process that dies is reported
on stderr and in the stream, and live ones are restarted (bounded).
"""
from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import os
import pwd
import signal
import time
from dataclasses import dataclass

from typing import TYPE_CHECKING

from . import backend, errors, records, stream
from .errors import EngineError
from .log import log
from .sources import (FILL_EOF, FILL_ERROR, FILL_FULL, InterfaceSpec, LiveSource, container_of,
                      enter_netns, netns_entered, offload_warning, open_source, spare_handle)
from .transport import Consumer, Credits, Done, Producer

if TYPE_CHECKING:
    from .aggregate import CaptureFeed
    from .sinks import Outputs

FLUSH_MS = 50          # a live capture process hands over a partial slot this often
RESTARTS = 3           # a live capture process that dies is restarted at most this often
STOP_GRACE_S = 2.0     # a capture process asked to stop is killed after this long
BATCH_RECORDS = 8192   # records a capture process parses before it counts them
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _stop_on_sigterm() -> list:
    """In a capture process, once its source is open: SIGTERM asks to stop
    (installed without SA_RESTART, so a blocked read is interrupted). Until
    then SIGTERM kills at once: opening may sit in libpcap for long (a huge
    BPF expression keeps its optimiser busy for minutes), where no Python
    handler could run."""
    stopping: list = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    return stopping


def _capture_entry(parent: int, inherited: list, handles: list, target, args: tuple) -> None:
    """First code of every capture process: die with the aggregator, then run `target`.

    SIGINT (a Ctrl-C reaches the whole process group) is the aggregator's
    business: it asks the capture processes to stop with SIGTERM.

    PR_SET_PDEATHSIG makes the kernel kill this process when its parent dies
    (even by SIGKILL), whatever it is blocked on; closing the parent's ends of
    the pipes it inherited lets it also see end-of-file there.
    """
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass    # not Linux: the closed pipe ends still end the process at its next wait
    if os.getppid() != parent:
        os._exit(1)     # the parent died before the death signal was armed
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for conn in inherited:
        conn.close()
    for handle in handles:     # other capture processes' packet sockets (--user restarts)
        handle.forget()
    target(*args)


@dataclass(frozen=True)
class CountingSpec:
    """What a capture process counts: the analysers' context and names."""

    ctx: object            # pt_engine.analysers.AnalyserContext
    analysers: tuple[str, ...]

    def start(self):
        from .counting import CaptureCounting
        return CaptureCounting.for_analysers(self.ctx, self.analysers)


def _record_buffer() -> memoryview:
    return memoryview(bytearray(BATCH_RECORDS * records.RECORD_SIZE))


def _file_capture_main(kind: str, args: tuple, counting: CountingSpec, conn,
                       credits: Credits) -> None:
    """Body of a file capture process: open, say READY, read and count to the end."""
    producer = Producer(conn, credits)
    try:
        windows = counting.start()      # loads the analysers' counters: may fail
        source = open_source(kind, *args)
    except EngineError as err:
        producer.finish(Done("error", {}, type(err).__name__, str(err)))
        return
    stopping = _stop_on_sigterm()
    producer.ready(source.describe())
    try:
        buf = _record_buffer()
        told = None             # the frontier the aggregator knows
        while True:
            n, status = source.fill(buf)
            for delta in windows.feed(buf, n):
                told = windows.frontier_ns
                producer.delta(delta, told, stopping)
            if windows.frontier_ns != told:     # a first window, or one after a gap
                told = windows.frontier_ns
                producer.progress(told, source.stats())
            if status == FILL_FULL and not stopping:
                continue
            last = windows.finish()
            if last is not None:
                producer.delta(last, None, stopping)
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
                                     f"{source.name}: unexpected reader status {status}"))
            return
    finally:
        source.close()


@dataclass(frozen=True)
class LiveSpec:
    """What one live capture process opens."""

    device: str
    iface: int
    worker: int
    bpf: str | None
    snaplen: int
    buffer_bytes: int
    fanout_group: int | None
    user: str | None
    netns: str | None = None        # the namespace's name (-i NETNS/IFACE)
    netns_path: str | None = None


def _live_capture_main(spec: LiveSpec, counting: CountingSpec, conn, credits: None,
                       handle=None) -> None:
    """Body of a live capture process: open the device, READY, drop root, capture.

    Counts every packet into its windows; every FLUSH_MS it advances them to
    its watermark (closing a window whose end it passed) and reports its
    frontier and counters, so that windows close on a quiet link too.
    """
    producer = Producer(conn)
    try:
        # Loads the analysers' counters (may fail), before root is dropped.
        windows = counting.start()
        if spec.netns_path is not None and handle is None:
            enter_netns(spec.netns_path)     # before the handle: it captures there
        source = LiveSource(spec.device, spec.iface, spec.bpf, spec.snaplen, spec.buffer_bytes,
                            spec.fanout_group, spec.worker, handle=handle)
        stopping = _stop_on_sigterm()
        described = source.describe()
        offloaded = offload_warning(spec.device) if spec.worker == 0 else None
        if offloaded:      # said once per interface: by its first capture process
            described["warning"] = "; ".join(filter(None, (described.get("warning"),
                                                           offloaded)))
        if spec.netns is not None:
            described.update(name=f"{spec.netns}/{spec.device}", netns=spec.netns,
                             device=spec.device)
            container = (container_of(spec.netns[4:]) if spec.netns.startswith("pid:")
                         else None)
            if container:
                described["container"] = container
        producer.ready(described)
        if spec.user:
            drop_privileges(spec.user)
    except EngineError as err:
        producer.finish(Done("error", {}, type(err).__name__, str(err)))
        return
    buf = _record_buffer()
    # A packet can wait in a kernel block up to the read timeout before we see it.
    grace_ns = 2 * source.timeout_ms * 1_000_000
    last_flush = time.monotonic()
    status = None
    try:
        while not stopping and status != FILL_ERROR:
            started_ns = time.time_ns()
            n, status = source.fill(buf, 0, FLUSH_MS)
            for delta in windows.feed(buf, n):
                producer.delta(delta, windows.frontier_ns)
            now = time.monotonic()
            if status == FILL_ERROR or now - last_flush >= FLUSH_MS / 1000:
                delta = windows.advance(max(0, started_ns - grace_ns))
                if delta is not None:
                    producer.delta(delta, windows.frontier_ns)
                producer.progress(windows.frontier_ns, source.stats())
                last_flush = now
        last = windows.finish()
        if last is not None:
            producer.delta(last, None)
        stats = source.stats().__dict__
        if status == FILL_ERROR:
            err = source.failure()
            producer.finish(Done("error", stats, type(err).__name__, str(err)))
        else:
            producer.finish(Done("interrupted", stats))
    finally:
        source.close()


def drop_privileges(user: str) -> None:
    """Become `user` (its uid, gid, and no supplementary groups), as tcpdump -Z does.

    Raises ConfigError for an unknown user, CaptureError if it cannot be done.
    """
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise errors.ConfigError(f"--user {user!r}: no such user") from None
    # What clear_capabilities needs is imported now: after the switch this Python's
    # own files may be unreadable (a capture process has imported nothing else yet).
    import ctypes  # noqa: F401
    import platform  # noqa: F401
    if os.getuid() == entry.pw_uid:
        clear_capabilities()
        return
    try:
        os.setgroups([])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
    except PermissionError as err:
        raise errors.CaptureError(f"--user {user!r}: cannot switch user ({err.strerror})") \
            from None
    clear_capabilities()


_CAP_VERSION_3 = 0x20080522          # <linux/capability.h> _LINUX_CAPABILITY_VERSION_3
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_SYS_CAPSET = {"x86_64": 126, "aarch64": 91}


def clear_capabilities() -> None:
    """Clear every capability of this process: ambient, effective, permitted and
    inheritable (setuid from root clears most; a process started with ambient or
    file capabilities, or SECBIT_KEEP_CAPS, keeps them otherwise). Raises
    CaptureError if the kernel refuses."""
    import ctypes
    import platform
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)   # EINVAL: old kernel
    header = (ctypes.c_uint32 * 2)(_CAP_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()      # two {effective, permitted, inheritable}: all 0
    number = _SYS_CAPSET.get(platform.machine())
    result = (libc.syscall(number, header, data) if number is not None
              else libc.capset(header, data))
    if result != 0:
        err = ctypes.get_errno()
        raise errors.CaptureError(f"cannot clear the capabilities after --user: "
                                  f"{os.strerror(err)}")


@dataclass
class _Worker:
    process: multiprocessing.Process
    consumer: Consumer
    source: int              # index into the hello's sources
    start: tuple             # (group, target, args) to restart it
    feed: CaptureFeed | None = None     # once the aggregator consumes it
    restarts: int = 0
    reported: bool = False
    handle: object = None    # the spare handle it was started from (--user restarts)


class _Pipeline:
    """Common part of read and run: workers, signals, stream, summary."""

    live = False

    def __init__(self, opts):
        self.opts = opts
        self.observers: list = []
        self.interrupted = False      # a signal stopped the run
        self._stopping = False        # the capture processes were asked to stop
        self._stop_asked = 0.0        # when (time.monotonic())
        self.workers: list[_Worker] = []
        self.sources: list[dict] = []
        self._ctx = multiprocessing.get_context("fork")
        self._deadline: float | None = None
        self._outputs: Outputs | None = None
        self._fatal: EngineError | None = None

    # --- subclasses -----------------------------------------------------------
    def _groups(self) -> list[str]:
        raise NotImplementedError

    def _targets(self) -> list[tuple[int, object, tuple]]:
        """(group, target function, args without the counting and conn) per capture process."""
        raise NotImplementedError

    def _before_stream(self, outputs: Outputs) -> None:
        """Hook run after READY and the hello, before counting starts."""

    # --- the run ----------------------------------------------------------------
    def run(self) -> None:
        """Capture until the sources end or a signal; write the stream.

        A source that cannot be opened fails the run before any output. A
        source that fails later, or an output that fails, raises its
        EngineError after the summary is written, so nothing already counted
        is lost.
        """
        from . import observers
        opts = self.opts
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        failures: list[Done] = []
        try:
            # Capture processes start first: they never import numpy, so they
            # read while this process imports the aggregator's modules.
            for source_id, (group, target, args) in enumerate(self._targets()):
                self._spawn(source_id, group, target, args)
            self.aggregator = self._aggregator()
            self.observers = observers.create(opts.observers, opts)
            for worker in self.workers:
                self._attach(worker)
            self.sources = [self._await_ready(w) for w in self.workers]
            self.aggregator.source_info = {i: {"source": i, "name": s["name"],
                                               "worker": s.get("worker", 0)}
                                           for i, s in enumerate(self.sources)}
            outputs = self._outputs = self._open_outputs()
            try:
                self.aggregator.emit = self._emit
                self._emit(stream.hello(self.sources, opts.interval_ns, opts.bpf,
                                        opts.ports.text if opts.ports else None,
                                        backend.name(), opts.addresses))
                self._before_stream(outputs)
                if getattr(opts, "duration", None):
                    self._deadline = time.monotonic() + opts.duration
                self.aggregator.run(idle=self._idle)
                failures = [d for d in map(self._explain, self.workers) if d.kind == "error"]
                self._emit(self.aggregator.snapshot(
                    "summary", interrupted=self.interrupted,
                    sources=[dict(self.sources[w.source],
                                  **_done_fields(w.feed.done, self.interrupted))
                             for w in self.workers],
                    outputs=outputs.report()))
            finally:
                outputs.close()
                for observer in self.observers:
                    observer.close()
        finally:
            self._stop_workers()
            for s, handler in previous.items():
                signal.signal(s, handler)
        fatal = self._fatal or outputs.fatal
        if fatal is not None:
            raise fatal
        if failures and not self.live:
            raise _rebuild(failures[0])

    def _counting(self) -> CountingSpec:
        from .analysers import ALWAYS, AnalyserContext
        ctx = AnalyserContext(tuple(self._groups()), self.opts.interval_ns, self.opts.ports,
                              self.live, self.opts.addresses, self.opts.state_dir)
        # tcp_quality runs unless --no-tcp-quality (or named with --analyser anyway)
        default = ("tcp_quality",) if self.opts.tcp_quality else ()
        return CountingSpec(ctx, tuple(dict.fromkeys((*ALWAYS, *default,
                                                      *self.opts.analysers))))

    def _aggregator(self):
        from . import analysers
        from .aggregate import Aggregator
        counting = self._counting()
        return Aggregator(self.opts.interval_ns,
                          analysers.create(counting.analysers, counting.ctx),
                          emit=lambda record: None, live=self.live)

    def _open_outputs(self) -> Outputs:
        from .sinks import SinkContext, open_outputs
        from .sinks.tls import ServerTls
        opts = self.opts
        # read and run both have the socket options (pt_engine.options); only run has --user
        ctx = SinkContext(live=self.live, snapshot=self.aggregator.snapshot,
                          socket_mode=opts.socket_mode, socket_group=opts.socket_group,
                          subscriber_buffer=opts.subscriber_buffer,
                          user=getattr(opts, "user", None), queue_bytes=opts.output_buffer,
                          options=opts, socket_uids=opts.socket_users, tls=ServerTls(
                              opts.tls_cert, opts.tls_key, opts.tls_client_ca,
                              opts.tls_client_names))
        return open_outputs(opts.outputs, ctx)

    def _emit(self, record: dict) -> None:
        """Write a record to every output, then what the observers add to it."""
        outputs = self._outputs
        outputs.write(record)
        for observer in self.observers:
            for extra in observer.observe(record):
                outputs.write(extra)
        if outputs.fatal is not None and not self._stopping:
            self._ask_workers_to_stop(signal.SIGTERM)    # counted so far: into the summary

    def _spawn(self, source_id: int, group: int, target, args, handle=None) -> _Worker:
        here, there = self._ctx.Pipe(duplex=True)
        credits = None if self.live else Credits()
        inherited = [here] + [w.consumer.conn for w in self.workers]
        others = [h for h in self._handles() if h is not handle]
        start = target if handle is None else functools.partial(target, handle=handle)
        proc = self._ctx.Process(target=_capture_entry, name=f"pt-engine capture {source_id}",
                                 args=(os.getpid(), inherited, others, start,
                                       (*args, self._counting(), there, credits)),
                                 daemon=True)
        proc.start()
        there.close()
        worker = _Worker(proc, Consumer(here, credits), source_id,
                         (group, target, args),
                         handle=handle)
        self.workers.append(worker)
        return worker

    def _handles(self) -> list:
        """Every live handle this process holds for capture processes."""
        return [w.handle for w in self.workers if w.handle is not None]

    def _attach(self, worker: _Worker) -> None:
        """Hand a capture process's records to the aggregator."""
        group = worker.start[0]
        worker.feed = self.aggregator.add_feed(worker.consumer, group, worker.source)

    def _await_ready(self, worker: _Worker) -> dict:
        try:
            msg = worker.consumer.receive()
        except errors.TransportError:
            worker.process.join(5)
            if self.interrupted:
                raise KeyboardInterrupt from None    # stopped while opening: nothing counted
            raise errors.TransportError(
                f"capture process {worker.source} died while opening its source "
                f"(exit status {worker.process.exitcode})") from None
        if isinstance(msg, Done):
            raise _rebuild(msg)
        if msg.get("warning"):
            log(f"{msg['name']}: {msg['warning']}")
        return msg

    def _idle(self) -> None:
        if self._outputs is not None:
            self._outputs.poll()
            if self._outputs.fatal is not None and not self._stopping:
                self._ask_workers_to_stop(signal.SIGTERM)
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self._deadline = None
            self._ask_workers_to_stop(signal.SIGTERM)
        if self._stopping and time.monotonic() - self._stop_asked > STOP_GRACE_S:
            # A capture process deep in libpcap (a pathological file) cannot run
            # its SIGTERM handler: what it holds is lost, the run still ends.
            self._stop_asked = float("inf")      # once: a killed one is not yet reaped
            for worker in self.workers:
                if worker.process.is_alive():
                    log(f"capture process {worker.source} did not stop within "
                        f"{STOP_GRACE_S:g} s; killed")
                    worker.process.kill()
        for worker in list(self.workers):
            self._check_worker(worker)

    def _check_worker(self, worker: _Worker) -> None:
        """Report a capture process that failed; restart a live one (bounded), or
        stop the run when it cannot be restarted."""
        done = worker.feed.done
        if (not self.live or done is None or done.kind != "error" or worker.reported
                or self._stopping):
            return       # file mode: the error ends the run after the summary
        worker.reported = True
        done = self._explain(worker)
        if worker.handle is not None:
            # Its socket is still open here and in the fanout group, where the
            # kernel would go on giving it a share of the traffic.
            worker.handle.close()
        log(done.message)
        self.aggregator.emit(stream.capture_failed(worker.feed.source, done.message))
        if worker.restarts >= RESTARTS:
            self._give_up(f"{done.message}; not restarted again after {RESTARTS} restarts")
            return
        group, target, args = worker.start
        spare = self._take_spare(worker.source)
        if spare is False:
            self._give_up(f"{done.message}; no capture handle left to restart it with after "
                          f"--user (opened {RESTARTS} per capture process before the drop)")
            return
        replacement = self._spawn(worker.source, group, target, args, spare)
        self._attach(replacement)
        replacement.restarts = worker.restarts + 1
        try:
            self._await_ready(replacement)
        except EngineError as err:
            replacement.reported = True
            self._give_up(f"{done.message}; restarting it failed: {err}")
            return
        log(f"capture process {worker.feed.source} restarted "
            f"({replacement.restarts} of {RESTARTS})")
        self.aggregator.emit(stream.capture_restarted(worker.feed.source,
                                                      replacement.restarts))

    def _take_spare(self, source: int):
        """The handle a restarted capture process of `source` starts from: None
        when it can open its own (no --user), False when none is left."""
        return None

    def _give_up(self, message: str) -> None:
        self._fatal = errors.CaptureError(message)
        self._ask_workers_to_stop(signal.SIGTERM)

    def _stop_workers(self) -> None:
        """Ask every capture process still alive to stop; kill it after STOP_GRACE_S
        (one blocked on a pipe nobody reads, say). Never waits longer."""
        for worker in self.workers:
            if worker.process.is_alive():
                worker.process.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for worker in self.workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.consumer.conn.close()

    def _explain(self, worker: _Worker) -> Done:
        done = worker.feed.done
        if done.kind == "error" and done.error_class == "TransportError":
            worker.process.join(5)
            code = worker.process.exitcode
            if self._stopping:
                return Done("interrupted", done.stats)
            how = f"was killed by signal {-code}" if code and code < 0 else f"exited with {code}"
            name = self.aggregator.source_info.get(worker.feed.source, {}).get(
                "name", worker.feed.source)
            worker.feed.done = Done("error", done.stats, "TransportError",
                                    f"capture process for {name} {how}")
            return worker.feed.done
        return done

    def _ask_workers_to_stop(self, sig: int) -> None:
        if not self._stopping:
            self._stop_asked = time.monotonic()
        self._stopping = True
        for worker in self.workers:
            if worker.process.is_alive():
                os.kill(worker.process.pid, sig)

    def _on_signal(self, signum, frame) -> None:
        # First signal: ask every capture process to hand over what it read and
        # stop. A second one: stop them at once.
        again = self._stopping
        self.interrupted = True
        self._ask_workers_to_stop(signal.SIGKILL if again else signal.SIGTERM)


class ReadPipeline(_Pipeline):
    """`pt-engine read`: capture files -> stream, one capture process per file."""

    def _groups(self) -> list[str]:
        return ["all"]

    def _targets(self):
        return [(0, _file_capture_main, _file_source(path, iface, self.opts.bpf))
                for iface, path in enumerate(self.opts.files)]

    def _before_stream(self, outputs: Outputs) -> None:
        """A socket output waits for its first subscriber: a file read takes
        less time than a subscriber needs to connect."""
        wait = getattr(self.opts, "subscriber_wait", None)
        for sink in outputs.sinks:
            if not hasattr(sink, "wait_for_subscriber"):
                continue
            log(f"waiting for a subscriber on {sink.dest.target}")
            if not sink.wait_for_subscriber(wait, lambda: self.interrupted):
                if self.interrupted:
                    raise KeyboardInterrupt      # Ctrl-C or SIGTERM before anyone listened
                raise errors.SinkError(f"no subscriber connected to {sink.dest.target} "
                                       f"within {wait} s")


class RunPipeline(_Pipeline):
    """`pt-engine run`: live interfaces -> stream, N capture processes per interface."""

    live = True

    def __init__(self, opts):
        interfaces = tuple(opts.interfaces)
        if opts.all_netns:
            from .sources import named_netns_interfaces
            interfaces += tuple(i for i in named_netns_interfaces() if i not in interfaces)
            if not interfaces:
                raise errors.ConfigError("--all-netns: no named network namespace has an "
                                         "interface that is up (and no -i was given)")
        if not interfaces:
            from .sources import default_interface
            interfaces = (default_interface(),)
        super().__init__(dataclasses.replace(opts, interfaces=interfaces))

    def _groups(self) -> list[str]:
        return list(self.opts.interfaces)

    def _targets(self):
        opts = self.opts
        targets = []
        for iface, text in enumerate(opts.interfaces):
            where = InterfaceSpec.parse(text)
            group_id = (os.getpid() + iface) & 0xFFFF if opts.workers > 1 else None
            for worker in range(opts.workers):
                spec = LiveSpec(where.device, iface, worker, opts.bpf, opts.snaplen,
                                opts.buffer_bytes, group_id, opts.user, where.netns,
                                where.netns_path)
                targets.append((iface, _live_capture_main, (spec,)))
        return targets

    def _before_stream(self, outputs: Outputs) -> None:
        names = ", ".join(f"{d} ({self.opts.workers} capture process"
                          f"{'es' if self.opts.workers > 1 else ''})" for d in self.opts.interfaces)
        log(f"capturing on {names}; Ctrl-C to stop")
        if self.opts.user:
            # Whatever the run needs from disk is loaded before the files may
            # become unreadable (numpy imports parts of itself lazily).
            import numpy.ma  # noqa: F401
            snapshot = self.aggregator.snapshot()
            for sink in outputs.sinks:
                sink.encode(snapshot)
            self._open_spares()
            drop_privileges(self.opts.user)

    def _open_spares(self) -> None:
        """Open, while still root, the handles restarted capture processes will need:
        after the drop no process of the run can open one (nor keeps the right to)."""
        self._spares = {}
        for worker in self.workers:
            spec = worker.start[2][0]
            with netns_entered(spec.netns_path):
                self._spares[worker.source] = [
                    spare_handle(spec.device, spec.snaplen, spec.buffer_bytes, spec.iface)
                    for _ in range(RESTARTS)]

    def _handles(self) -> list:
        spares = [h for left in getattr(self, "_spares", {}).values() for h in left]
        return super()._handles() + spares

    def _take_spare(self, source: int):
        if not self.opts.user:
            return None
        left = self._spares.get(source)
        if not left:
            return False
        # This process closes it only once that capture process is gone: libpcap's
        # close tears down the kernel ring the capture process reads.
        return left.pop()


def _file_source(path: str, iface: int, bpf: str | None) -> tuple[str, tuple]:
    """(source kind, its arguments) of a file to read. '-' (standard input, as
    tcpdump -r -) is passed on as a duplicated descriptor, which survives the fork."""
    if path == "-":
        return "stdin", (iface, bpf, os.dup(0))
    return "file", (path, iface, bpf, path)


def _rebuild(done: Done) -> EngineError:
    return getattr(errors, done.error_class or "EngineError", EngineError)(done.message)


def _done_fields(done: Done | None, interrupted: bool) -> dict:
    """A source's status in the summary: a capture process asked to stop reports
    "interrupted"; without a signal (--duration, a failed peer) that is "stopped",
    so that it agrees with the summary's `interrupted`."""
    if done is None:
        return {"status": "running"}
    kind = "stopped" if done.kind == "interrupted" and not interrupted else done.kind
    fields = {"status": kind, **done.stats}
    if done.message:
        fields["error"] = done.message
    return fields
