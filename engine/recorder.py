"""`pt-engine record`: the stream into a msgpack file, appended to and rotated by size.

Three sources, one sink (pt_engine.sinks.recording): a capture of its own,
live (the options of `run`) or from capture files (``--read``), run by the
pipeline with the config file's settings and alert rules as `run` and
`read` have them; or a running engine's socket (``--connect``), whose
records are read with pt_engine.client and written as they are. The
recording is the stream format itself, concatenated: a file may hold
several hello ... summary sequences, and each rotated file begins with a
hello.
"""
from __future__ import annotations

import signal
import time

from . import options
from .errors import ConfigError
from .log import log
from .sinks import Destination, SinkContext

# Options that only a live capture of record's own uses.
_LIVE_ONLY = ("interfaces", "workers", "snaplen", "buffer", "user", "duration")
# ...and those that shape a stream: they cannot change one recorded via --connect.
_SHAPING = ("interfaces", "workers", "snaplen", "buffer", "user", "interval", "filter",
            "ports", "tcp_quality", "analysers", "observers", "addresses", "alert", "on_alert")


def main(args) -> int:
    """Run `pt-engine record`.

    Raises ConfigError for bad or conflicting options, SinkError when the
    recording cannot be written, StreamError when the --connect stream cannot
    be read, CaptureError from a capture.
    """
    opts = options.build("record", args)
    dest = Destination("recording", opts.file, "msgpack", "", max_bytes=max(
        1, int(opts.max_size * (1 << 20))), keep=opts.keep, encrypt_to=opts.encrypt_to)
    if opts.connect is not None:
        shaping = options.given(args, "record", _SHAPING)
        if shaping:
            raise ConfigError(f"--connect records a running engine's stream as it is: "
                              f"{', '.join(shaping)} do not apply")
        from .client import ClientTls
        return _record_connect(opts.connect, dest, opts.duration, opts.output_buffer,
                               ClientTls(opts.tls_cert, opts.tls_key, opts.tls_ca))
    common = dict(interval_ns=opts.interval_ns, bpf=opts.bpf, ports=opts.ports,
                  outputs=(dest,), tcp_quality=opts.tcp_quality, analysers=opts.analysers,
                  observers=opts.observers, addresses=opts.addresses, state_dir=opts.state_dir,
                  output_buffer=opts.output_buffer, alerts=opts.alerts,
                  on_alert=opts.on_alert, alert_timeout=opts.alert_timeout,
                  alert_hooks=opts.alert_hooks)
    if opts.read_files:
        live_only = options.given(args, "record", _LIVE_ONLY)
        if live_only:
            raise ConfigError(f"--read counts capture files; {', '.join(live_only)}: "
                              f"for a live capture only")
        from .pipeline import ReadPipeline
        ReadPipeline(options.options_class("read")(files=opts.read_files, **common)).run()
        return 0
    from .pipeline import RunPipeline
    RunPipeline(options.options_class("run")(
        interfaces=opts.interfaces, workers=opts.workers, snaplen=opts.snaplen,
        buffer_bytes=opts.buffer_bytes, duration=opts.duration, user=opts.user,
        **common)).run()
    return 0


def _record_connect(dest_text: str, dest: Destination, duration: float | None,
                    queue_bytes: int, tls=None) -> int:
    """Copy a running engine's stream into the recording until it ends, a signal,
    or `duration` seconds. Raises StreamError (after writing every whole record
    received) if the stream breaks, SinkError if the recording cannot be written."""
    from .client import connect
    from .sinks.recording import RecordingSink

    stopping: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: stopping.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    deadline = None if duration is None else time.monotonic() + duration
    last = None
    try:
        with connect(dest_text, tls=tls) as client:
            # Lossless: a recording of a stream is a copy; the engine's socket
            # drops a subscriber that falls too far behind, and says so.
            sink = RecordingSink(dest, SinkContext(live=False, queue_bytes=queue_bytes))
            log(f"recording {dest_text} into {dest.target}; Ctrl-C to stop")
            try:
                while not stopping and not client.eof and sink.failure is None:
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                    for record in client.read(timeout=0.2):
                        sink.write(record)
                        last = record["type"]
            finally:
                sink.close()
            if sink.failure is not None:
                raise sink.failure
            if client.eof and last != "summary":
                log(f"{dest_text} closed its stream without a summary (the engine stopped "
                    f"abnormally, or dropped this subscriber as too slow)")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
