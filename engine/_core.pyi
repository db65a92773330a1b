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

class PcapError(Exception): ...

class Capture:
    name: str
    linktype: int
    snaplen: int
    live: bool
    error: str | None
    packets: int
    caplen_bytes: int
    @staticmethod
    def open_file(path: str, iface: int = 0) -> Capture: ...
    @staticmethod
    def open_live(device: str, snaplen: int, promisc: bool = True, timeout_ms: int = 100,
                  buffer_bytes: int = 0, immediate: bool = False,
                  iface: int = 0) -> tuple[Capture, str | None]: ...
    def set_filter(self, expression: str) -> None: ...
    def fill(self, buf: Any, start: int = 0) -> tuple[int, int]: ...
    def stats(self) -> tuple[int, int, int]: ...
    def file_offset(self) -> int: ...
    def close(self) -> None: ...

def parse_batch(linktype: int, data: Any, offsets: np.ndarray, caplens: np.ndarray,
                orig_lens: np.ndarray, ts_ns: np.ndarray, iface: int, out: np.ndarray) -> None: ...
def reduce_records(records: np.ndarray, start: int, stop: int, win_end_ns: int,
                   counters: np.ndarray, classes: np.ndarray, touched: np.ndarray,
                   state: np.ndarray) -> int: ...
def window_cut(records: np.ndarray, start: int, stop: int, win_start_ns: int,
               win_end_ns: int) -> tuple[int, int]: ...
