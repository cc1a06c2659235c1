"""The TOML reader: a ``.toml`` document into entries, with TOML errors made readable."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from typing import Any

from plugin_host.config.entries import Entry, make_entry
from plugin_host.config.toml_lines import TomlLines
from plugin_host.settings import ConfigError

_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column \d+\)|\s*\(at end of document\)")


def _value_table_conflict(lines: TomlLines, line: int | None, file: str) -> ConfigError | None:
    """A key used as a value and then as a table (``x = 1`` then ``[x]`` or ``x.y = 2``): the
    usual TOML mistake when moving from ``.conf``; explain the table-friendly spelling."""
    if line is None:
        return None
    here = lines.repeated[line][0] if line in lines.repeated else lines.key_at.get(line)
    if here is None:
        return None
    for n in range(len(here), 0, -1):
        prefix = here[:n]
        first = lines.assigned.get(prefix)
        if first is None or first >= line:
            continue
        if n == len(here) and line not in lines.headers:
            return None  # the same key twice: a plain duplicate
        dotted = ".".join(prefix)
        if prefix[0] == "listener" and len(prefix) == 3:
            hint = f'; write address = "ip:port" inside [{dotted}]'
        elif (prefix[0] == "plugins" and len(prefix) == 2) or prefix == ("persistence",):
            hint = f"; write enabled = true inside [{dotted}]"
        else:
            hint = ""
        return ConfigError(
            f"{dotted} already has a value (line {first}), so it cannot also be a table{hint}",
            key=".".join(here),
            file=file,
            line=line,
        )
    return None


def read_toml(text: str, file: str) -> list[Entry]:
    """The entries of a ``.toml`` document (tables flattened to dotted keys), in file order."""
    lines = TomlLines(text)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"at line (\d+)", message)
        reason = _TOML_POSITION.sub("", message).strip() or "invalid TOML"
        line = int(found.group(1)) if found else None
        conflict = _value_table_conflict(lines, line, file)
        if conflict is not None:
            raise conflict from None
        if line is not None and line in lines.repeated:
            key, first = lines.repeated[line]
            what = "table" if line in lines.headers else "key"
            raise ConfigError(
                f"duplicate {what} (already set on line {first})",
                key=".".join(key),
                file=file,
                line=line,
            ) from None
        key_here = lines.key_at.get(line) if line is not None else None
        raise ConfigError(
            f"TOML syntax error: {reason}",
            key=".".join(key_here) if key_here else None,
            file=file,
            line=line,
        ) from None

    entries: list[Entry] = []

    def walk(table: Mapping[str, Any], prefix: tuple[str, ...]) -> None:
        for name, value in table.items():
            parts = (*prefix, name)
            if isinstance(value, dict):
                walk(value, parts)
                continue
            line = lines.line_of(parts)
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                raise ConfigError(
                    "arrays of tables are not supported: use named tables ([a.name])",
                    key=".".join(parts),
                    file=file,
                    line=line,
                )
            entries.append(make_entry(".".join(parts), value, file, line))

    walk(document, ())
    entries.sort(key=lambda e: e.origin.line or 0)  # stable: file order for warnings
    return entries
