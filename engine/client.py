"""Reading a pt-engine stream back: a running engine's UNIX socket, a file, or stdin.

The encoding is told by the first byte: ``{`` starts JSON lines, anything else
is msgpack (a msgpack map never starts with ``{``, which msgpack reads as the
integer 123). Records come out whole, as dicts; the first must be a ``hello``
of a format version this pt-engine reads. A stream may hold several
hello ... summary sequences one after the other (an appended or rotated
recording). Consumers of a stream (``top --connect``, ``record --connect``,
``plot``) read it through this module and see records only.

    for record in iter_records("unix:/run/pt.sock"):
        ...

A connection or file that ends in the middle of a record raises
TruncatedStream after the whole records before it were handed out; bytes that
are not a stream raise StreamError. Both carry ``records_read``.
"""
from __future__ import annotations

import json
import os
import select
import socket
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import msgpack

from .errors import StreamError, TruncatedStream
from .stream import FORMAT_NAME, FORMAT_VERSION

CHUNK = 1 << 16


class StreamClient:
    """One open stream, read record by record.

    Iterate over it for every record until the end (blocking), or call
    ``read(timeout)`` to poll; ``fileno()`` serves ``select``. The client owns
    what ``connect`` opened (not stdin) and closes it in ``close``.
    """

    def __init__(self, name: str, fd: int, sock: socket.socket | None = None,
                 owns_fd: bool = False, data: bytes | None = None):
        self.name = name
        self.format: str | None = None      # 'msgpack' or 'json', known after the first byte
        self.records_read = 0
        self.bytes_read = 0
        self.eof = False                     # the stream ended at a record boundary
        self._fd = fd
        self._sock = sock
        self._owns_fd = owns_fd
        self._unpacker = msgpack.Unpacker(raw=False)
        self._whole_bytes = 0                # bytes of the whole records decoded
        self._line = bytearray()             # JSON: the unfinished last line
        self._line_no = 0
        self._failure: StreamError | None = None
        self._data = None if data is None else memoryview(data)   # a decrypted file

    def fileno(self) -> int:
        """The descriptor to wait on."""
        return self._fd

    @property
    def _is_socket(self) -> bool:
        return self._sock is not None

    def read(self, timeout: float | None = None) -> list[dict]:
        """The whole records that arrive within `timeout` seconds (None: wait for data).

        Returns [] when nothing complete arrived in time, and at the end of the
        stream (``eof`` is then True). Raises StreamError for bytes that are not
        a pt-engine stream, TruncatedStream when the stream ends mid-record;
        records decoded before a failure are returned first, the error is
        raised by the next call.
        """
        if self._failure is not None:
            raise self._failure
        if self.eof:
            return []
        if timeout is not None and self._data is None and not self._pending():
            ready, _, _ = select.select([self._fd], [], [], timeout)
            if not ready:
                return []
        chunk = self._receive()
        if not chunk:
            return self._finish()
        self.bytes_read += len(chunk)
        if self.format is None:
            self.format = "json" if chunk[:1] == b"{" else "msgpack"
        records: list[dict] = []
        try:
            if self.format == "json":
                self._decode_json(chunk, records)
            else:
                self._decode_msgpack(chunk, records)
        except StreamError as err:
            if not records:
                raise
            self._failure = err
        return records

    def __iter__(self) -> Iterator[dict]:
        """Every record to the end of the stream; raises as ``read`` does."""
        while not self.eof:
            yield from self.read()

    def _pending(self) -> int:
        """Bytes a TLS connection has decrypted but not handed out (select misses them)."""
        pending = getattr(self._sock, "pending", None)
        return pending() if pending is not None else 0

    def _receive(self) -> bytes:
        if self._data is not None:
            chunk, self._data = self._data[:CHUNK], self._data[CHUNK:]
            return bytes(chunk)
        try:
            if self._sock is not None:
                return self._sock.recv(CHUNK)
            return os.read(self._fd, CHUNK)
        except ConnectionResetError:
            return b""          # the engine went away: judged like a close
        except OSError as err:
            reason = err.strerror or getattr(err, "reason", None) or err
            raise StreamError(f"{self.name}: cannot read: {reason}",
                              self.records_read) from err

    def _decode_msgpack(self, chunk: bytes, out: list[dict]) -> None:
        self._unpacker.feed(chunk)
        try:
            for obj in self._unpacker:
                out.append(self._check(obj))
                # tell() is exact only between whole objects.
                self._whole_bytes = self._unpacker.tell()
        except (msgpack.UnpackException, ValueError) as err:
            raise StreamError(
                f"{self.name}: not a pt-engine stream: corrupt msgpack after "
                f"{self.records_read} records, at byte {self._whole_bytes} or after ({err})",
                self.records_read) from None

    def _decode_json(self, chunk: bytes, out: list[dict]) -> None:
        self._line += chunk
        *lines, rest = self._line.split(b"\n")
        self._line = bytearray(rest)
        for line in lines:
            self._line_no += 1
            if line.strip():
                out.append(self._check(self._json(line)))

    def _json(self, line: bytes):
        try:
            return json.loads(line)
        except ValueError as err:
            raise StreamError(f"{self.name}: not a pt-engine stream: line {self._line_no} is "
                              f"not JSON ({err}), after {self.records_read} records",
                              self.records_read) from None

    def _check(self, obj) -> dict:
        n = self.records_read + 1
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            raise StreamError(f"{self.name}: not a pt-engine stream: record {n} is not a map "
                              f"with a type", self.records_read)
        if n == 1 and (obj["type"] != "hello" or obj.get("format") != FORMAT_NAME):
            raise StreamError(f"{self.name}: not a pt-engine stream: it does not begin with "
                              f"a hello record", 0)
        if obj["type"] == "hello":
            version = obj.get("format_version")
            if not isinstance(version, int) or version > FORMAT_VERSION:
                raise StreamError(f"{self.name}: stream format version {version!r}; this "
                                  f"pt-engine reads version {FORMAT_VERSION} and older",
                                  self.records_read)
        self.records_read = n
        return obj

    def _finish(self) -> list[dict]:
        """End of input: whatever is left must be nothing (or a last JSON line)."""
        self.eof = True
        records: list[dict] = []
        if self.format == "json" and self._line.strip():
            self._line_no += 1
            try:
                records.append(self._check(json.loads(self._line)))
                self._line.clear()
            except ValueError:
                pass
        left = (len(self._line.strip()) if self.format == "json"
                else self.bytes_read - self._whole_bytes)
        where = "the connection closed" if self._is_socket else "it ends"
        if self.records_read == 0 and not records:
            what = ("closed the connection before sending a record" if self._is_socket
                    else "is empty" if self.bytes_read == 0
                    else f"is not a pt-engine stream ({self.bytes_read} bytes, no whole record)")
            raise StreamError(f"{self.name} {what}", 0)
        if left:
            err = TruncatedStream(f"{self.name}: {where} in the middle of a record, after "
                                  f"{self.records_read} whole records ({left} bytes left over)",
                                  self.records_read)
            if records:
                self._failure = err
                return records
            raise err
        return records

    def close(self) -> None:
        """Close what ``connect`` opened."""
        if self._sock is not None:
            self._sock.close()
        elif self._owns_fd:
            os.close(self._fd)
        self._owns_fd = False

    def __enter__(self) -> StreamClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class ClientTls:
    """A client's TLS settings for tls:HOST:PORT (--tls-cert, --tls-key, --tls-ca)."""

    cert: str | None = None
    key: str | None = None
    ca: str | None = None


def connect(dest: str, identity: str | None = None,
            tls: ClientTls | None = None) -> StreamClient:
    """Open a stream: ``unix:/path`` (a running engine's socket), ``tls:HOST:PORT``
    (an engine's TLS output, with the certificates of `tls`), ``-`` (stdin) or a file.

    A file encrypted with ``record --encrypt-to`` (age) is decrypted whole in
    memory with the keys of the file `identity` (pt_engine.agefile), before any
    record is handed out. Raises StreamError naming `dest` when there is no such
    socket or file, the engine refuses the connection, the file cannot be opened,
    or an encrypted file has no key given, another key, or is truncated or
    altered; ConfigError for a bad key file.
    """
    if dest.startswith("unix:"):
        return _connect_unix(dest)
    if dest.startswith("tls:"):
        return _connect_tls(dest, tls or ClientTls())
    if dest == "-":
        return StreamClient("stdin", sys.stdin.fileno())
    try:
        fd = os.open(dest, os.O_RDONLY)
    except FileNotFoundError:
        raise StreamError(f"{dest}: no such file") from None
    except OSError as err:
        hint = ""
        if os.path.exists(dest) and stat.S_ISSOCK(os.stat(dest).st_mode):
            hint = f"; it is a socket: give it as unix:{dest}"
        raise StreamError(f"{dest}: cannot open: {err.strerror}{hint}") from err
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        os.close(fd)
        raise StreamError(f"{dest} is a directory")
    from . import agefile
    head = os.pread(fd, len(agefile.MAGIC), 0)
    if agefile.is_encrypted(head):
        try:
            with os.fdopen(fd, "rb") as fh:
                data = fh.read()
        except OSError as err:
            raise StreamError(f"{dest}: cannot read: {err.strerror}") from err
        keys = agefile.identities(identity) if identity is not None else None
        return StreamClient(dest, -1, data=agefile.decrypt(dest, data, keys))
    return StreamClient(dest, fd, owns_fd=True)


def _connect_unix(dest: str) -> StreamClient:
    path = dest[len("unix:"):]
    if not path:
        raise StreamError("unix: needs a socket path, as in unix:/run/pt.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except FileNotFoundError:
        sock.close()
        raise StreamError(f"{dest}: no such socket (is an engine running with "
                          f"--output {dest}?)") from None
    except ConnectionRefusedError:
        sock.close()
        raise StreamError(f"{dest}: connection refused: no engine serves this socket "
                          f"(a stale socket file?)") from None
    except PermissionError:
        sock.close()
        raise StreamError(f"{dest}: permission denied (see the engine's --socket-mode and "
                          f"--socket-group)") from None
    except OSError as err:
        sock.close()
        raise StreamError(f"{dest}: cannot connect: {err.strerror}") from err
    return StreamClient(dest, sock.fileno(), sock=sock)


def _connect_tls(dest: str, tls: ClientTls) -> StreamClient:
    """Connect to tls:HOST:PORT, checking the engine's certificate against
    tls.ca (and HOST), showing tls.cert; StreamError for every failure."""
    import ssl

    from .errors import ConfigError
    from .sinks.tls import _load, split_host_port
    host, port = split_host_port(dest[len("tls:"):], "--connect")
    if not (tls.cert and tls.key and tls.ca):
        raise ConfigError(f"--connect {dest}: needs --tls-cert, --tls-key (the client's "
                          f"certificate) and --tls-ca (the engine's CA)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load(ctx.load_cert_chain, "--tls-cert/--tls-key", tls.cert, tls.key)
    _load(ctx.load_verify_locations, "--tls-ca", tls.ca)
    try:
        raw = socket.create_connection((host, port), timeout=10)
    except OSError as err:
        raise StreamError(f"{dest}: cannot connect: {err.strerror or err}") from err
    try:
        sock = ctx.wrap_socket(raw, server_hostname=host)
        sock.settimeout(None)
        # TLS 1.3 sends the server's verdict on our certificate after the
        # handshake: wait for the first bytes so that a refusal shows here.
        ready, _, _ = select.select([sock], [], [], 10)
        if not ready and not sock.pending():
            raise StreamError(f"{dest}: the engine sent nothing within 10 s")
    except ssl.SSLCertVerificationError as err:
        raw.close()
        raise StreamError(f"{dest}: the engine's certificate is not trusted "
                          f"({err.verify_message})") from None
    except (ssl.SSLError, OSError) as err:
        raw.close()
        raise StreamError(f"{dest}: TLS handshake failed "
                          f"({getattr(err, 'reason', None) or err})") from None
    return StreamClient(dest, sock.fileno(), sock=sock)


def iter_records(dest: str, identity: str | None = None,
                 tls: ClientTls | None = None) -> Iterator[dict]:
    """Every record of the stream at `dest` (see ``connect``) until it ends.

    Raises StreamError (TruncatedStream for a record cut off) as ``connect``
    and ``StreamClient.read`` do.
    """
    with connect(dest, identity, tls) as client:
        yield from client
