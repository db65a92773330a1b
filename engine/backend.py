"""Which backend parses frames and reduces records: the native core
(``pt_engine._core``, the default) or the pure-Python reference
(``pt_engine._reference``, with ``PT_ENGINE_PUREPYTHON=1``).

Imports neither at module level: a capture process must not import numpy,
which the reference backend needs.
"""
from __future__ import annotations

import os
from types import ModuleType


def use_reference_backend() -> bool:
    """True when PT_ENGINE_PUREPYTHON=1 selects the pure-Python backend."""
    return os.environ.get("PT_ENGINE_PUREPYTHON") == "1"


def core() -> ModuleType:
    """The module with parse_batch and reduce_records for the active backend."""
    if use_reference_backend():
        from . import _reference
        return _reference
    from . import _core
    return _core
