"""``apply_schema``: a plugin's raw config section typed and checked against its declared keys."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from plugin_host.config.keys import segments_match
from plugin_host.config.values import (
    BadValue,
    parse_bool,
    parse_duration,
    parse_enum,
    parse_float,
    parse_int,
    parse_list,
    parse_path,
    parse_size,
    parse_str,
    shown,
)
from plugin_host.settings import ConfigError, Key, Origin, PluginSection


def _convert(key: Key, value: Any, origin: Origin | None) -> Any:
    kind = key.type
    if kind == "bool":
        return parse_bool(value)
    if kind == "int":
        return parse_int(value)
    if kind == "float":
        return parse_float(value)
    if kind == "str":
        return parse_str(value)
    if kind == "path":
        return parse_path(value, origin)
    if kind == "duration_ms":
        return parse_duration(value, "ms")
    if kind == "duration_s":
        return parse_duration(value, "s")
    if kind == "size":
        return parse_size(value)
    if kind == "enum":
        return parse_enum(value, key.choices)
    if kind == "list":
        return parse_list(value)
    raise TypeError(f"unknown Key type {kind!r}")  # a plugin bug, not a config error


def _bindings(pattern: Sequence[str], parts: Sequence[str]) -> tuple[str, ...]:
    """The names matched by the ``*`` segments of ``pattern`` in ``parts``."""
    return tuple(part for part, segment in zip(parts, pattern, strict=False) if segment == "*")


def _fill(pattern: Sequence[str], names: Sequence[str]) -> str:
    it = iter(names)
    return ".".join(next(it) if segment == "*" else segment for segment in pattern)


def apply_schema(section: PluginSection, keys: Sequence[Key]) -> PluginSection:
    """Type and validate ``section`` against a plugin's declared ``keys``; return a new section.

    Each configured key must match one pattern (``*`` = any one name segment; a pattern without
    ``*`` wins over one with). Values are converted per :class:`Key` type (durations to seconds,
    sizes to bytes, relative paths against the config file's directory). Defaults are written
    like config values (``Key("*.response_timeout", "duration_ms", default=5000)`` = 5 s) and
    are filled in for keys without ``*``, and for each name in use for ``*`` patterns (e.g. each
    webhook). Raises :class:`ConfigError` with the file and line of the offending key for an
    unknown key, a bad value or a missing required key.
    """
    compiled = sorted(
        ((key, key.pattern.split(".")) for key in keys), key=lambda kp: kp[1].count("*")
    )
    result = PluginSection(plugin=section.plugin, origins=dict(section.origins))
    matched: dict[str, tuple[Key, list[str]]] = {}
    for dotted, raw in section.values.items():
        parts = dotted.split(".")
        found = next(((k, p) for k, p in compiled if segments_match(p, parts)), None)
        if found is None:
            close = difflib.get_close_matches(dotted, [k.pattern for k in keys], n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise section.error(dotted, f"unknown key{hint}")
        key, pattern = found
        try:
            result.values[dotted] = _convert(key, raw, section.origins.get(dotted))
        except BadValue as exc:
            text = "***" if key.secret else shown(raw)
            raise section.error(dotted, f"bad value {text}: {exc}") from None
        matched[dotted] = (key, pattern)

    any_file = next((o.file for o in section.origins.values() if o.file), None)

    def complete(key: Key, concrete: str, near: str | None) -> None:
        if concrete in result.values:
            return
        if key.required:
            # Point at the key that made this one necessary (e.g. the webhook's .hook line).
            origin = section.origins.get(near) if near else None
            raise ConfigError(
                "required key is missing",
                key=f"{section.plugin}.{concrete}",
                file=origin.file if origin else any_file,
                line=origin.line if origin else None,
            )
        if key.default is not None:
            try:
                result.values[concrete] = _convert(key, key.default, None)
            except BadValue as exc:  # a plugin bug: its own default does not parse
                raise TypeError(f"default of {key.pattern!r}: {exc}") from None

    for key, pattern in compiled:
        if "*" not in pattern:
            complete(key, key.pattern, None)
            continue
        # Names in use for this pattern: from keys that matched a pattern with the same
        # segments up to its last "*" (so "w1.hook" makes webhook w1 need its "w1.endpoint").
        last = max(i for i, segment in enumerate(pattern) if segment == "*")
        prefix = pattern[: last + 1]
        instances: dict[tuple[str, ...], str] = {}
        for dotted, (_other, other_pattern) in matched.items():
            if other_pattern[: last + 1] == prefix:
                names = _bindings(prefix, dotted.split("."))
                instances.setdefault(names, dotted)
        for names, near in instances.items():
            complete(key, _fill(pattern, names), near)
    return result
