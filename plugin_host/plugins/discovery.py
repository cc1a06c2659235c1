"""Finding plugins (entry points, ``--plugins-dir``) and turning them into plugin objects.

Discovery never imports anything: :func:`find_candidates` lists names and where they come
from, so a plugin disabled with ``plugins.<name> = off`` is never imported. :func:`load` then
imports one candidate and builds the object that gets registered with pluggy:

* an entry point may name a module (``myplugin = my_package.plugin``) or an object in it
  (``myplugin = my_package.plugin:MyPlugin``);
* a **class** is instantiated with no arguments, one instance per broker, so the plugin's state
  lives on the instance (no module globals);
* a **module defining** ``plugin_host_plugin`` (a class or a zero-argument factory) is replaced by
  ``plugin_host_plugin()``, for the same reason, when the entry point must name the module;
* anything else (a module of plain hookimpl functions) is registered as is.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import inspect
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from plugin_host.settings import ConfigError

__all__ = [
    "ENTRY_POINT_GROUP",
    "Candidate",
    "PluginLoadError",
    "find_candidates",
    "load",
]

ENTRY_POINT_GROUP = "plugin_host"
#: Package under which ``--plugins-dir`` files are imported (``sys.modules`` keys).
DIR_PLUGIN_PACKAGE = "plugin_host_dir_plugins"
FACTORY_ATTRIBUTE = "plugin_host_plugin"


class PluginLoadError(ConfigError):
    """A plugin could not be imported, registered or started; start-up stops.

    ``str()`` names the plugin and its distribution (or file) and says what went wrong.
    """

    def __init__(self, reason: str, *, plugin: str, source: str) -> None:
        self.plugin = plugin
        self.source = source
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A plugin that was found but not imported yet."""

    name: str
    kind: Literal["entry_point", "plugins_dir", "object"]
    distribution: str  # distribution name, or the file path for --plugins-dir plugins
    version: str
    entry_point: importlib.metadata.EntryPoint | None = None
    path: Path | None = None
    obj: Any = None  # kind == "object": an in-process plugin handed to the manager

    @property
    def source(self) -> str:
        """``distribution version`` or the file, for messages."""
        if self.kind == "plugins_dir":
            return str(self.path)
        if self.kind == "object":
            return "in-process plugin"
        return f"{self.distribution} {self.version}".strip()


def _entry_point_candidates(
    entry_points: Iterable[importlib.metadata.EntryPoint],
) -> list[Candidate]:
    out = []
    for ep in entry_points:
        dist = getattr(ep, "dist", None)
        out.append(
            Candidate(
                name=ep.name,
                kind="entry_point",
                distribution=dist.name if dist is not None else "?",
                version=dist.version if dist is not None else "",
                entry_point=ep,
            )
        )
    return out


def _dir_candidates(directories: Iterable[Path]) -> list[Candidate]:
    out = []
    for directory in directories:
        if not directory.is_dir():
            raise ConfigError(f"plugins dir {str(directory)!r} is not a directory")
        for path in sorted(directory.glob("*.py")):
            if path.name.startswith("_"):
                continue  # __init__.py and private helper modules are not plugins
            out.append(
                Candidate(
                    name=path.stem,
                    kind="plugins_dir",
                    distribution=str(path),
                    version="",
                    path=path,
                )
            )
    return out


def find_candidates(
    *,
    entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
    plugins_dirs: Iterable[Path] = (),
    objects: dict[str, Any] | None = None,
) -> list[Candidate]:
    """Every plugin that can be loaded, sorted by name, without importing any of them.

    ``entry_points`` defaults to the installed ones of group ``plugin_host``. Two plugins with
    the same name are an error naming both sources.
    """
    if entry_points is None:
        entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    found = _entry_point_candidates(entry_points) + _dir_candidates(plugins_dirs)
    for name, obj in (objects or {}).items():
        found.append(Candidate(name=name, kind="object", distribution="", version="", obj=obj))
    by_name: dict[str, Candidate] = {}
    for candidate in found:
        other = by_name.get(candidate.name)
        if other is not None:
            if other.kind == candidate.kind == "entry_point" and (
                other.entry_point == candidate.entry_point
            ):
                continue  # the same distribution seen twice on sys.path
            raise ConfigError(
                f"two plugins are named {candidate.name!r}: {other.source} and {candidate.source}"
            )
        by_name[candidate.name] = candidate
    return [by_name[name] for name in sorted(by_name)]


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if isinstance(exc, SyntaxError) and exc.filename:
        return f" ({exc.filename}:{exc.lineno})"
    if frames:
        last = frames[-1]
        return f" ({last.filename}:{last.lineno})"
    return ""


def _import_file(candidate: Candidate) -> ModuleType:
    assert candidate.path is not None
    module_name = f"{DIR_PLUGIN_PACKAGE}.{candidate.name}"
    spec = importlib.util.spec_from_file_location(module_name, candidate.path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {candidate.path}")
    module = importlib.util.module_from_spec(spec)
    # Registered so that dataclasses, pickling and tracebacks work inside the plugin.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    return module


def load(candidate: Candidate) -> Any:
    """Import ``candidate`` and return the object to register (see the module docstring).

    Raises :class:`PluginLoadError` naming the plugin, its distribution and the failing line.
    """
    try:
        if candidate.kind == "object":
            obj = candidate.obj
        elif candidate.kind == "plugins_dir":
            obj = _import_file(candidate)
        else:
            assert candidate.entry_point is not None
            obj = candidate.entry_point.load()
    except Exception as exc:
        raise PluginLoadError(
            f"plugin {candidate.name!r} ({candidate.source}) failed to import: "
            f"{type(exc).__name__}: {exc}{_where(exc)}",
            plugin=candidate.name,
            source=candidate.source,
        ) from exc
    try:
        if inspect.isclass(obj):
            return obj()
        if isinstance(obj, ModuleType):
            factory = getattr(obj, FACTORY_ATTRIBUTE, None)
            if factory is not None:
                return factory()
    except Exception as exc:
        raise PluginLoadError(
            f"plugin {candidate.name!r} ({candidate.source}) failed to initialise: "
            f"{type(exc).__name__}: {exc}{_where(exc)}",
            plugin=candidate.name,
            source=candidate.source,
        ) from exc
    return obj
