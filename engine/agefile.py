"""Recordings encrypted at rest: the age format (age-encryption.org/v1), via pyrage.

``AgeWriter`` encrypts a recording as it is written: a thread of its own runs
``pyrage.encrypt_io`` over a queue of the records' bytes, so that age's 64 KiB
chunks reach the file as they fill and the plaintext is only ever in memory
(one chunk and the queue). An age file is finalised at ``close``: a recorder
killed before then leaves a file whose last chunk is missing, which every
reader (this one and the ``age`` command) reports as an error; what it loses
is that file's records (docs/security.md: rotate often enough).

``decrypt`` reads one back, whole and authenticated, into memory: a truncated
or altered file is an error naming it, never shorter data.
"""
from __future__ import annotations

import io
import os
import threading
from collections import deque

from .errors import ConfigError, SinkError, StreamError

MAGIC = b"age-encryption.org/v1\n"


def _pyrage():
    try:
        import pyrage
    except ImportError:
        raise ConfigError("encrypted recordings need the pyrage package "
                          "(pip install pyrage)") from None
    return pyrage


def recipient(text: str):
    """An age X25519 public key (age1...); raises ConfigError naming it."""
    pyrage = _pyrage()
    try:
        return pyrage.x25519.Recipient.from_str(text.strip())
    except Exception:     # pyrage raises its own RecipientError, or ValueError
        raise ConfigError(f"--encrypt-to {text!r}: not an age public key "
                          "(age1..., as age-keygen prints)") from None


def identities(path: str) -> list:
    """The age identities (AGE-SECRET-KEY-1...) in the key file `path`, as
    age-keygen writes it; raises ConfigError naming the file."""
    pyrage = _pyrage()
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            lines = [line.strip() for line in fh]
    except OSError as err:
        raise ConfigError(f"--identity {path}: {err.strerror}") from None
    keys = []
    for n, line in enumerate(lines, 1):
        if not line or line.startswith("#"):
            continue
        try:
            keys.append(pyrage.x25519.Identity.from_str(line))
        except Exception:
            raise ConfigError(f"--identity {path}: line {n} is not an age secret key "
                              "(AGE-SECRET-KEY-1...)") from None
    if not keys:
        raise ConfigError(f"--identity {path}: no age secret key in it")
    return keys


class _Feed:
    """The reader pyrage pulls plaintext from: blocks until bytes or the end."""

    def __init__(self):
        self._chunks: deque[bytes] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, data: bytes) -> None:
        with self._cond:
            self._chunks.append(bytes(data))
            self._cond.notify()

    def end(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def read(self, n: int = -1) -> bytes:
        with self._cond:
            while not self._chunks and not self._closed:
                self._cond.wait()
            if not self._chunks:
                return b""
            chunk = self._chunks.popleft()
            if 0 <= n < len(chunk):
                self._chunks.appendleft(chunk[n:])
                chunk = chunk[:n]
            return chunk

    def readinto(self, buf) -> int:
        chunk = self.read(len(buf))
        buf[:len(chunk)] = chunk
        return len(chunk)


class AgeWriter:
    """A new file at `path` (mode 0600, never an existing one) holding one age
    stream to `recipients`. ``write(data)`` queues plaintext; ``close()``
    finalises the file. Raises SinkError naming the file."""

    def __init__(self, path: str, recipients: list):
        pyrage = _pyrage()
        self.path = path
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as err:
            raise SinkError(f"{path}: {err.strerror}") from err
        self._fh = os.fdopen(fd, "wb")
        self._feed = _Feed()
        self._error: BaseException | None = None

        def run():
            try:
                pyrage.encrypt_io(self._feed, self._fh, recipients)
            except BaseException as err:     # reported by write/close
                self._error = err

        self._thread = threading.Thread(target=run, daemon=True,
                                        name=f"pt-engine age {path}")
        self._thread.start()

    def write(self, data: bytes) -> None:
        if self._error is not None:
            raise SinkError(f"cannot encrypt into {self.path}: {self._error}")
        self._feed.put(data)

    def close(self) -> None:
        self._feed.end()
        self._thread.join()
        try:
            self._fh.close()
        except OSError as err:
            raise SinkError(f"cannot write to {self.path}: {err.strerror}") from err
        if self._error is not None:
            raise SinkError(f"cannot encrypt into {self.path}: {self._error}")


def is_encrypted(head: bytes) -> bool:
    """Whether a file beginning with `head` is an age file."""
    return head[:len(MAGIC)] == MAGIC


def decrypt(name: str, data: bytes, keys: list | None) -> bytes:
    """The plaintext of the age file `data`, authenticated whole. Raises
    StreamError naming `name`: no identity given, no key matches, or the file is
    truncated or altered."""
    if keys is None:
        raise StreamError(f"{name} is an encrypted recording (age); give the key file "
                          f"with --identity KEYFILE")
    pyrage = _pyrage()
    out = io.BytesIO()
    try:
        pyrage.decrypt_io(io.BytesIO(data), out, keys)
    except pyrage.DecryptError as err:
        if "No matching keys" in str(err):
            raise StreamError(f"{name}: encrypted to another key (none of the identities "
                              f"given opens it)") from None
        raise StreamError(f"{name}: encrypted recording with a damaged header "
                          f"(truncated or altered: {err})") from None
    except OSError:
        raise StreamError(f"{name}: encrypted recording is truncated or altered (age "
                          f"authentication failed after {out.tell()} bytes); not reading "
                          f"any of it") from None
    return out.getvalue()
