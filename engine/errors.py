"""The one exception hierarchy of pt-engine.

Every operational failure is an EngineError subclass whose message names the
object at fault (path, interface, link type, BPF text, option). ``cli.main``
prints it as one line; a traceback always means a bug.
"""


class EngineError(Exception):
    """Base of every error pt-engine reports to its user."""

    exit_code = 1


class ConfigError(EngineError):
    """A bad option, port spec, or config value (exit status 2)."""

    exit_code = 2


class CaptureError(EngineError):
    """A capture source cannot be opened or read."""


class UnsupportedLinkType(CaptureError):
    """The source's link type is not one counting-rules section 1 decodes."""


class TruncatedCapture(CaptureError):
    """A capture file ends in the middle of a record."""


class TransportError(EngineError):
    """A capture process or the shared-memory hand-off failed."""


class SinkError(EngineError):
    """The output (stdout, file, UNIX socket) cannot be written."""


class ReaderGone(SinkError):
    """The reader of stdout or a pipe closed it (`pt-engine read X | head`): the
    run ends quietly with status 0, as a Unix filter does."""

    exit_code = 0


class StreamError(EngineError):
    """A stream cannot be read: no engine on the socket, a file that is not a
    pt-engine stream or is corrupt. ``records_read`` counts the whole records
    read before the failure."""

    def __init__(self, message: str, records_read: int = 0):
        super().__init__(message)
        self.records_read = records_read


class TruncatedStream(StreamError):
    """A stream ends in the middle of a record (a connection closed mid-record,
    a recording cut off or still being written)."""


class ProbeError(EngineError):
    """`ping` or `scan` cannot probe: no ICMP socket without privileges, too few
    file descriptors for the concurrency asked for."""


class PluginError(EngineError):
    """A plugin (or a built-in stage named by the user) cannot be found or loaded."""
