"""Value parsers and formatters, shared by the broker keys, listener options and plugin schemas.

A parser takes a raw value (text from a ``.conf`` file, or a TOML value) and returns the typed
value or raises :class:`BadValue` with the problem; the caller adds the file, line and key.
Each formatter writes text its parser reads back, so ``check-config`` output is loadable.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from plugin_host.settings import Origin


class BadValue(ValueError):
    """A value of the wrong shape; the caller adds file, line and key."""


_DURATION_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "f": 1209600.0,  # cuttlefish's fortnight
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|f)")
_DURATION_FULL = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w|f))+")
# VerneMQ's own period syntax (persistent_client_expiration, max_last_will_delay): m = month of
# four weeks, y = twelve such months. Kept as VerneMQ computes it so old files mean the same.
_PERIOD_UNITS = {
    "s": 1.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "m": 4 * 604800.0,
    "y": 48 * 604800.0,
}
_PERIOD = re.compile(r"(\d+(?:\.\d+)?)([shdwmy]?)")
_SIZE = re.compile(r"(\d+)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?", re.I)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------
# Parsers


def parse_bool(value: Any) -> bool:
    """``on``/``off``/``true``/``false`` (any case) or a TOML boolean."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("on", "true"):
            return True
        if word in ("off", "false"):
            return False
    raise BadValue("expected on or off")


def parse_int(value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """An integer (a TOML integer or decimal digits), optionally range-checked."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        number = int(value.strip())
    else:
        raise BadValue("expected an integer")
    if lo is not None and hi is not None and not lo <= number <= hi:
        raise BadValue(f"must be between {lo} and {hi}")
    if lo is not None and number < lo:
        raise BadValue(f"must be at least {lo}")
    if hi is not None and number > hi:
        raise BadValue(f"must be at most {hi}")
    return number


def parse_float(value: Any) -> float:
    """A number (TOML integer or float, or its text)."""
    if _is_number(value):
        return float(value)
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value.strip())
    raise BadValue("expected a number")


def parse_duration(value: Any, unit: str) -> float:
    """A duration in seconds: a bare number is in ``unit`` (``s`` or ``ms``), or cuttlefish
    units ``ms s m h d w f`` that may be combined (``1h30m``)."""
    if _is_number(value):
        if value < 0:
            raise BadValue("must not be negative")
        return float(value) * _DURATION_UNITS[unit]
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            if text.startswith("-"):
                raise BadValue("must not be negative")
            return float(text) * _DURATION_UNITS[unit]
        if _DURATION_FULL.fullmatch(text):
            return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
    raise BadValue(f"expected a duration: a number of {unit}, or with a unit like 500ms, 5s, 2m")


def parse_size(value: Any) -> int:
    """A size in bytes: a bare integer, or with ``KB``/``MB``/``GB`` (powers of 1024)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise BadValue("must not be negative")
        return value
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if match:
            unit = (match.group(2) or "").lower()[:1]
            return int(match.group(1)) * _SIZE_UNITS[unit]
    raise BadValue("expected a size in bytes, e.g. 65536, 64KB or 4MB")


def parse_period(value: Any, none_word: str) -> float | None:
    """VerneMQ's ``<n><h|d|w|m|y>`` (m = 4 weeks) or ``none_word``; a bare number is seconds."""
    if _is_number(value):
        if value < 0:
            raise BadValue("must not be negative")
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text == none_word:
            return None
        match = _PERIOD.fullmatch(text)
        if match:
            return float(match.group(1)) * _PERIOD_UNITS[match.group(2) or "s"]
    raise BadValue(
        f"expected {none_word!r} or a number followed by s, h, d, w, m (month) or y, e.g. 1w"
    )


def parse_str(value: Any) -> str:
    """A string (a number is taken as its text)."""
    if isinstance(value, str):
        return value
    if _is_number(value):
        return str(value)
    raise BadValue("expected a string")


def parse_list(value: Any) -> list[str]:
    """A TOML array, or a comma-separated ``.conf`` value (``[a, b]`` Erlang brackets allowed)."""
    if isinstance(value, list):
        items = [parse_str(item) for item in value]
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        items = text.split(",")
    else:
        raise BadValue("expected a list (comma-separated)")
    return [item.strip() for item in items if item.strip()]


def parse_enum(value: Any, choices: Iterable[str]) -> str:
    """One of ``choices``, exactly as written there."""
    options = tuple(choices)
    text = parse_str(value).strip()
    if text not in options:
        raise BadValue(f"expected one of {', '.join(options)}")
    return text


def parse_path(value: Any, origin: Origin | None, *, must_exist: bool = False) -> Path:
    """A path; a relative one is relative to the directory of the config file that set it."""
    text = parse_str(value).strip()
    if not text:
        raise BadValue("expected a path")
    path = Path(text).expanduser()
    if not path.is_absolute() and origin is not None and origin.file:
        path = (Path(origin.file).parent / path).absolute()
    if must_exist and not path.exists():
        raise BadValue(f"file not found: {path}")
    return path


def parse_address(text: str) -> tuple[str, int]:
    """``IPv4:PORT``, ``[IPv6]:PORT`` or ``localhost:PORT`` -> ``(host, port)``; port 0 is allowed
    (an ephemeral port, the bound one is logged). Raises ValueError with a readable reason."""
    example = "expected IP:PORT, e.g. 127.0.0.1:1883, 0.0.0.0:1883 or [::1]:1883"
    text = text.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"bad listener address {text!r}: {example}")
        try:
            is_v6 = ipaddress.ip_address(host).version == 6
        except ValueError:
            is_v6 = False
        if not is_v6:
            raise ValueError(f"bad listener address {text!r}: {host!r} is not an IPv6 address")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            if text.startswith("/"):
                raise ValueError(f"bad listener address {text!r}: unix sockets are not supported")
            raise ValueError(f"bad listener address {text!r}: {example}")
        if ":" in host:
            raise ValueError(
                f"bad listener address {text!r}: write IPv6 addresses in brackets, e.g. [::1]:1883"
            )
        if host != "localhost":
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise ValueError(
                    f"bad listener address {text!r}: {host!r} is not an IPv4 address"
                ) from None
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"bad listener address {text!r}: port must be 0..65535")
    return host, int(port_text)


# --------------------------------------------------------------------------------------------
# Formatters: each produces text its parser reads back (check-config output is loadable).


def format_bool(value: bool) -> str:
    return "on" if value else "off"


def format_seconds(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000, 6):g}ms"


def format_millis(value: float) -> str:
    millis = round(value * 1000, 6)
    return str(int(millis)) if float(millis).is_integer() else f"{millis:g}ms"


def format_period(value: float | None, none_word: str) -> str:
    if value is None:
        return none_word
    for unit, factor in (("w", 604800), ("d", 86400), ("h", 3600)):
        if value and float(value / factor).is_integer():
            return f"{int(value // factor)}{unit}"
    return f"{value:g}s"


def format_value(value: Any) -> str:
    """Any raw or typed value as ``.conf`` text, quoted when needed to read back the same."""
    if isinstance(value, bool):
        return format_bool(value)
    if isinstance(value, list | tuple | frozenset | set):
        return ", ".join(format_value(item) for item in value)
    text = str(value)
    if text != text.strip() or "#" in text or not text or text[0] in "\"'":
        return json.dumps(text)
    return text


def shown(value: Any) -> str:
    """A raw value as an error message quotes it (``bad value 'x': ...``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)
