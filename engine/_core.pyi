"""Typed stub for the native core built from ext/_core.pyx."""
from typing import Any

import numpy as np

RECORD_SIZE: int
COUNTER_ROWS: int
BACKEND: str
LIBPCAP_VERSION: str
FILL_FULL: int
FILL_EOF: int
FILL_TIMEOUT: int
FILL_BREAK: int
FILL_ERROR: int

class PcapError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None: ...
    @property
    def status(self) -> int | None: ...

class PcapStatus:
    ERROR: int
    NO_SUCH_DEVICE: int
    PERM_DENIED: int
    PROMISC_PERM_DENIED: int
    IFACE_NOT_UP: int
    RFMON_NOTSUP: int
    TSTAMP_PRECISION_NOTSUP: int
    WARNING_PROMISC_NOTSUP: int

FANOUT_HASH: int

class BaseCapture:
    name: str
    linktype: int
    snaplen: int
    error: str | None
    packets: int
    caplen_bytes: int
    def set_filter(self, expression: str) -> None: ...
    def close(self) -> None: ...

class SavefileCapture(BaseCapture):
    own_reader: bool
    @staticmethod
    def open(path: str, iface: int = 0, own_reader: bool = True) -> SavefileCapture: ...
    def fill(self, buf: Any, start: int = 0) -> tuple[int, int]: ...
    def file_offset(self) -> int: ...

class LiveCapture(BaseCapture):
    @staticmethod
    def open(device: str, snaplen: int, promisc: bool = True, timeout_ms: int = 100,
             buffer_bytes: int = 0, immediate: bool = False,
             iface: int = 0) -> tuple[LiveCapture, str | None]: ...
    def fill(self, buf: Any, start: int = 0, wait_ms: int = 100) -> tuple[int, int]: ...
    def set_fanout(self, group_id: int, mode: int = ..., defrag: bool = False) -> None: ...
    def stats(self) -> tuple[int, int, int]: ...
    def forget(self) -> None: ...

def parse_batch(linktype: int, data: Any, offsets: np.ndarray, caplens: np.ndarray,
                orig_lens: np.ndarray, ts_ns: np.ndarray, iface: int, out: np.ndarray) -> None: ...
def reduce_records(records: np.ndarray, start: int, stop: int, win_end_ns: int,
                   counters: np.ndarray, classes: np.ndarray, touched: np.ndarray,
                   state: np.ndarray) -> int: ...
DELTA_HEADER_WORDS: int

class PortWindows:
    interval_ns: int
    next_ns: int
    def __init__(self, interval_ns: int) -> None: ...
    @property
    def start_ns(self) -> int | None: ...
    def count(self, records, start: int, stop: int) -> int: ...
    def advance(self, ts_ns: int) -> bytes | None: ...
    def finish(self) -> bytes | None: ...

def encode_port_rows(rows: np.ndarray, values: np.ndarray) -> bytes: ...
def add_rows(table: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None: ...
