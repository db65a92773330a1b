"""Shared fixtures: the parser backends, and the Hypothesis profiles.

Hypothesis profile: ``ci`` (derandomized, 300 examples, no deadline) when the
``CI`` environment variable is set, else ``dev``.
"""
from __future__ import annotations

import importlib
import os

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, max_examples=300)
settings.register_profile("dev", deadline=None, max_examples=100)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def _load_native():
    try:
        return importlib.import_module("pt_engine._core")
    except ImportError as err:
        pytest.fail(f"pt_engine._core is not built ({err}); build it with `pip install -e .`",
                    pytrace=False)


@pytest.fixture(autouse=True)
def no_user_config(monkeypatch):
    """The suite never reads the config file of the machine it runs on (an empty
    file stands in for it; tests of config files set their own)."""
    monkeypatch.setenv("PT_ENGINE_CONFIG", os.devnull)


@pytest.fixture(scope="session")
def native():
    """The compiled backend ``pt_engine._core``; fails (never skips) if it is not built."""
    return _load_native()


@pytest.fixture(scope="session")
def reference():
    """The pure-Python backend ``pt_engine._reference``."""
    return importlib.import_module("pt_engine._reference")


@pytest.fixture(scope="session", params=["native", "reference"])
def backend(request):
    """Each backend in turn: the suite runs once per backend."""
    if request.param == "native":
        return _load_native()
    return importlib.import_module("pt_engine._reference")


@pytest.fixture(params=["native", "reference"])
def backend_env(request, monkeypatch):
    """Each backend in turn for `pt-engine` run in this process or its children:
    PT_ENGINE_PUREPYTHON set for the reference, unset for the native core."""
    if request.param == "reference":
        monkeypatch.setenv("PT_ENGINE_PUREPYTHON", "1")
    else:
        monkeypatch.delenv("PT_ENGINE_PUREPYTHON", raising=False)
    return request.param
