"""The vernemq.conf reader: ``key = value`` lines into entries."""

from __future__ import annotations

import re

from plugin_host.config.entries import Entry, make_entry
from plugin_host.settings import ConfigError

_TRAILING_COMMENT = re.compile(r"\s#")


def read_conf(text: str, file: str) -> list[Entry]:
    """The entries of a ``.conf`` file (``#`` comments and blank lines skipped), in file order."""
    entries: list[Entry] = []
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, rest = line.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError("expected 'key = value'", file=file, line=lineno)
        try:
            value = conf_value(rest.strip())
        except ValueError as exc:
            raise ConfigError(str(exc), key=key, file=file, line=lineno) from None
        entries.append(make_entry(key, value, file, lineno))
    return entries


def conf_value(text: str) -> str:
    """The value part of a ``.conf`` line: quoted ("..." with \\ escapes, or '...') or bare up to
    a ``#`` comment. In a bare value ``#`` starts a comment only after whitespace, so MQTT
    filters such as ``a/#`` need no quotes."""
    if text[:1] in ("'", '"'):
        quote = text[0]
        out: list[str] = []
        i = 1
        while i < len(text) and text[i] != quote:
            if quote == '"' and text[i] == "\\" and i + 1 < len(text):
                escaped = text[i + 1]
                out.append({"n": "\n", "t": "\t"}.get(escaped, escaped))
                i += 2
                continue
            out.append(text[i])
            i += 1
        if i >= len(text):
            raise ValueError("unterminated quoted value")
        rest = text[i + 1 :].strip()
        if rest and not rest.startswith("#"):
            raise ValueError(f"unexpected text after the quoted value: {rest!r}")
        return "".join(out)
    return _TRAILING_COMMENT.split(text, maxsplit=1)[0].rstrip()
