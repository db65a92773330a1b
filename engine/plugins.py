"""Plugins: the built-in stages and third-party ones, found by name.

Four kinds, each with its interface in its own module and an entry-point
group for third-party packages (docs/architecture.md):

=========  ======================  ============================
kind       interface               entry-point group
=========  ======================  ============================
sources    pt_engine.sources       ``pt_engine.sources``
analysers  pt_engine.analysers     ``pt_engine.analysers``
observers  pt_engine.observers     ``pt_engine.observers``
sinks      pt_engine.sinks         ``pt_engine.sinks``
=========  ======================  ============================

An entry point's name is the plugin's name (for a sink, its --output
scheme); its value ``module:attribute`` names the class. Built-ins are
listed in each interface module's ``BUILTIN`` and win over a plugin of the
same name. A plugin that fails to import is reported in one line naming it
and its package (PluginError), never a traceback.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from . import __version__
from .errors import PluginError

KINDS = ("sources", "analysers", "observers", "sinks")


@dataclass(frozen=True)
class Plugin:
    """One stage implementation, built-in or from an installed distribution."""

    kind: str
    name: str
    target: str          # "module:attribute"
    package: str         # the distribution that provides it
    version: str

    @property
    def builtin(self) -> bool:
        return self.package == "pt-engine"

    def load(self):
        """The class (or factory) the plugin names; raises PluginError."""
        module, _, attr = self.target.partition(":")
        where = f"{self.kind[:-1]} {self.name!r} ({self.target}, from {self.package} " \
                f"{self.version})"
        try:
            obj = importlib.import_module(module)
            for part in attr.split(".") if attr else ():
                obj = getattr(obj, part)
        except Exception as err:      # any error in third-party code: name it, one line
            raise PluginError(f"{where} cannot be loaded: {type(err).__name__}: {err}") \
                from None
        return obj


def _builtin(kind: str) -> dict[str, str]:
    if kind == "sources":
        from .sources import SOURCES
        return {name: f"{factory.__module__}:{factory.__qualname__}"
                for name, factory in SOURCES.items()}
    module = importlib.import_module(f"pt_engine.{kind}")
    return module.BUILTIN


_cache: dict[str, dict[str, Plugin]] = {}


def available(kind: str) -> dict[str, Plugin]:
    """Every plugin of `kind` by name: built-ins first, then installed entry points."""
    if kind not in KINDS:
        raise ValueError(f"unknown plugin kind {kind!r}")
    if kind not in _cache:
        found = {name: Plugin(kind, name, target, "pt-engine", __version__)
                 for name, target in _builtin(kind).items()}
        from importlib import metadata    # here: loading a built-in never needs it
        for ep in metadata.entry_points(group=f"pt_engine.{kind}"):
            dist = ep.dist.name if ep.dist is not None else "?"
            version = ep.dist.version if ep.dist is not None else "?"
            found.setdefault(ep.name, Plugin(kind, ep.name, ep.value, dist, version))
        _cache[kind] = found
    return _cache[kind]


def load(kind: str, name: str):
    """The class of plugin `name` of `kind`; raises PluginError if there is none
    or it cannot be loaded. A built-in is loaded without looking at the
    installed distributions (which takes a while on a big environment)."""
    builtin = _builtin(kind)
    if name in builtin and kind not in _cache:
        return Plugin(kind, name, builtin[name], "pt-engine", __version__).load()
    plugins = available(kind)
    if name not in plugins:
        raise PluginError(f"no {kind[:-1]} named {name!r}; installed: "
                          f"{', '.join(sorted(plugins)) or 'none'} (pt-engine plugins "
                          "lists them)")
    return plugins[name].load()


def listing() -> list[str]:
    """Lines for `pt-engine plugins`: every plugin with its package and version,
    and whether it loads."""
    lines = []
    for kind in KINDS:
        lines.append(f"{kind}:")
        for plugin in available(kind).values():
            origin = "built-in" if plugin.builtin else f"{plugin.package} {plugin.version}"
            try:
                plugin.load()
                state = ""
            except PluginError as err:
                state = f"  BROKEN: {err}"
            lines.append(f"  {plugin.name:<12} {origin:<24} {plugin.target}{state}")
    return lines
