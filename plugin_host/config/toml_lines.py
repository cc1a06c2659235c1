"""The TOML line scanner: the line of every key of a TOML document.

``tomllib`` parses a document but reports no lines, and its errors name a line without the
key. :class:`TomlLines` scans the text once so every entry and error can point at
``file:line: key``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence


class TomlLines:
    """Finds the line of every key of a TOML document (tomllib reports none).

    A small scanner of table headers and ``key = value`` lines that skips over multi-line strings
    and arrays. Keys inside inline tables get the line of the table's own key.
    """

    _BARE = re.compile(r"[A-Za-z0-9_-]+")

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple[str, ...], int] = {}
        self.key_at: dict[int, tuple[str, ...]] = {}
        # line of a repeated key or table -> (that key, line of its first definition)
        self.repeated: dict[int, tuple[tuple[str, ...], int]] = {}
        self.headers: set[int] = set()  # lines of [table] headers
        self.assigned: dict[tuple[str, ...], int] = {}  # keys given a value (not a table)
        self._scan(text)

    def line_of(self, parts: Sequence[str]) -> int | None:
        for n in range(len(parts), 0, -1):
            line = self.lines.get(tuple(parts[:n]))
            if line is not None:
                return line
        return None

    def _record(self, key: tuple[str, ...], line: int) -> None:
        if key in self.lines:
            self.repeated.setdefault(line, (key, self.lines[key]))
        else:
            self.lines[key] = line
        self.key_at.setdefault(line, key)

    def _scan(self, text: str) -> None:
        table: tuple[str, ...] = ()
        state: str | None = None  # inside a multi-line string: '"""' or "'''"
        depth = 0  # open [ and { of a value spanning lines
        for lineno, line in enumerate(text.split("\n"), start=1):
            start = 0
            if state is None and depth == 0:
                stripped = line.lstrip()
                start = len(line) - len(stripped)
                if not stripped or stripped.startswith("#"):
                    continue
                if stripped.startswith("["):
                    array = stripped.startswith("[[")
                    parsed = self._key(line, start + (2 if array else 1))
                    if parsed is not None:
                        table = tuple(parsed[0])
                        if array:  # each [[x]] starts a fresh table: forget its old keys
                            for old in [k for k in self.lines if k[: len(table)] == table]:
                                if old != table:
                                    del self.lines[old]
                            self.lines.setdefault(table, lineno)
                        else:
                            self._record(table, lineno)
                            self.headers.add(lineno)
                    continue
                parsed = self._key(line, start)
                if parsed is None:
                    continue
                parts, start = parsed
                self._record(table + tuple(parts), lineno)
                self.assigned.setdefault(table + tuple(parts), lineno)
                start = line.find("=", start)
                if start < 0:
                    continue
                start += 1
            state, depth = self._lex(line, start, state, depth)

    def _key(self, line: str, i: int) -> tuple[list[str], int] | None:
        parts: list[str] = []
        n = len(line)
        while True:
            while i < n and line[i] in " \t":
                i += 1
            if i >= n:
                return None
            if line[i] == '"':
                j = i + 1
                while j < n and line[j] != '"':
                    j += 2 if line[j] == "\\" else 1
                if j >= n:
                    return None
                raw = line[i + 1 : j]
                try:
                    parts.append(json.loads(f'"{raw}"'))
                except ValueError:
                    parts.append(raw)
                i = j + 1
            elif line[i] == "'":
                j = line.find("'", i + 1)
                if j < 0:
                    return None
                parts.append(line[i + 1 : j])
                i = j + 1
            else:
                match = self._BARE.match(line, i)
                if match is None:
                    return None
                parts.append(match.group())
                i = match.end()
            while i < n and line[i] in " \t":
                i += 1
            if i < n and line[i] == ".":
                i += 1
                continue
            return parts, i

    @staticmethod
    def _lex(line: str, i: int, state: str | None, depth: int) -> tuple[str | None, int]:
        """Skip over one line of a value, tracking multi-line strings and bracket depth."""
        n = len(line)
        while i < n:
            if state == '"""':
                while i < n and not line.startswith('"""', i):
                    i += 2 if line[i] == "\\" else 1
                if i >= n:
                    return state, depth
                i += 3
                state = None
                continue
            if state == "'''":
                j = line.find("'''", i)
                if j < 0:
                    return state, depth
                i = j + 3
                state = None
                continue
            char = line[i]
            if char == "#":
                break
            if line.startswith('"""', i) or line.startswith("'''", i):
                state = line[i : i + 3]
                i += 3
                continue
            if char == '"':
                i += 1
                while i < n and line[i] != '"':
                    i += 2 if line[i] == "\\" else 1
            elif char == "'":
                j = line.find("'", i + 1)
                i = n if j < 0 else j
            elif char in "[{":
                depth += 1
            elif char in "]}":
                depth = max(0, depth - 1)
            i += 1
        return state, depth
