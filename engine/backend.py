"""Which backend does the per-packet work: the native core or its pure-Python twin.

* native (default): ``pt_engine._core`` parses in C under libpcap's dispatch
  and reduces with the GIL released;
* reference (``PT_ENGINE_PUREPYTHON=1``): pcapy-ng's ``next()`` and
  ``pt_engine._reference``; slow, for cross-checking the native core.
"""
from __future__ import annotations

import os


def use_reference_backend() -> bool:
    """True when PT_ENGINE_PUREPYTHON=1 selects the pure-Python backend."""
    return os.environ.get("PT_ENGINE_PUREPYTHON") == "1"


def name() -> str:
    """The backend's name as the hello record gives it."""
    return "reference" if use_reference_backend() else "native"


def core():
    """The module with parse_batch, reduce_records, PortWindows, encode_port_rows,
    encode_quality_rows and add_rows for the backend."""
    if use_reference_backend():
        from . import _reference
        return _reference
    from . import _core
    return _core
