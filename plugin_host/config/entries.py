"""Entries: what both file formats become before any validation.

An :class:`Entry` is one key as written (dotted), what it means after aliasing, its raw value
and where it was set. All validation happens on entries, so a key means the same thing in
``.toml`` and ``.conf`` files.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from plugin_host.config.keys import PLUGIN_ALIASES
from plugin_host.config.values import shown
from plugin_host.settings import ConfigError, Origin

_KEY_SYNTAX = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


@dataclass(slots=True)
class Entry:
    """One ``key = value`` of a config file."""

    key: str  # as written (dotted)
    canon: str  # after aliasing: what the key means
    value: Any  # text from .conf, TOML value as parsed
    origin: Origin

    @property
    def parts(self) -> list[str]:
        return self.canon.split(".")

    def error(self, reason: str) -> ConfigError:
        return ConfigError(reason, key=self.key, file=self.origin.file, line=self.origin.line)

    def bad_value(self, problem: str, *, secret: bool = False) -> ConfigError:
        text = "***" if secret else shown(self.value)  # secrets stay out of error output
        return self.error(f"bad value {text}: {problem}")


def canonical(key: str) -> str:
    """The meaning of a key: VerneMQ aliases and the TOML-friendly spellings folded in."""
    parts = key.split(".")
    parts[0] = PLUGIN_ALIASES.get(parts[0], parts[0])
    if parts[0] == "plugins" and len(parts) >= 2:
        parts[1] = PLUGIN_ALIASES.get(parts[1], parts[1])
        if len(parts) == 3 and parts[2] == "enabled":
            del parts[2]
    elif parts[0] == "listener" and len(parts) == 4 and parts[3] == "address":
        del parts[3]
    elif parts == ["persistence", "enabled"]:
        del parts[1]
    elif parts == ["log", "console", "level"]:  # VerneMQ's level key
        parts = ["log", "level"]
    return ".".join(parts)


def make_entry(key: str, value: Any, file: str, line: int | None) -> Entry:
    """An entry for ``key`` (checked for syntax) set at ``file:line``."""
    origin = Origin(file=file, line=line)
    if not _KEY_SYNTAX.fullmatch(key):
        raise ConfigError(
            "invalid key (letters, digits, _ and - separated by dots)",
            key=key,
            file=file,
            line=line,
        )
    return Entry(key=key, canon=canonical(key), value=value, origin=origin)


def where(origin: Origin, here: Origin) -> str:
    """Where ``origin`` is, as told in an error about ``here`` (the same file: just the line)."""
    if origin.file == here.file and origin.line:
        return f"line {origin.line}"
    if origin.file:
        return f"{origin.file}:{origin.line}" if origin.line else origin.file
    return "the command line"


def unknown(entry: Entry, candidates: Iterable[str], what: str = "unknown key") -> ConfigError:
    """An error for a key nothing knows, with a "did you mean" among keys of the same depth."""
    depth = entry.canon.count(".")
    same_shape = [c for c in candidates if c.count(".") == depth]
    close = difflib.get_close_matches(entry.canon, same_shape, n=1, cutoff=0.75)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return entry.error(f"{what}{hint}")
