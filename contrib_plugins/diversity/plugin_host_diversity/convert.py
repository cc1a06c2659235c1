"""Converting values between Python and Lua states (lupa with ``encoding=None``).

The Lua runtimes are created with ``encoding=None`` so that binary data (payloads, passwords,
correlation data) crosses unchanged: every Lua string reaches Python as ``bytes`` and Python
``str`` must be encoded before it goes in (lupa would otherwise wrap it as an opaque object).
Tables are read with raw iteration only (``items()``), so a script's metamethods never run
outside its call and budget.
"""

from __future__ import annotations

import math
from typing import Any

from lupa.lua54 import LuaRuntime, lua_type

__all__ = ["MAX_DEPTH", "ConversionError", "from_lua", "is_table", "text", "to_lua"]

_LUA_MIN, _LUA_MAX = -(2**63), 2**63 - 1

#: Deepest table nesting converted (cycles and absurd nesting end as a clear error).
MAX_DEPTH = 64


class ConversionError(ValueError):
    """A Lua value cannot be represented on the Python side (or the reverse)."""


def is_table(value: Any) -> bool:
    return bool(lua_type(value) == "table")


def text(value: Any, what: str = "value") -> str:
    """A Lua string (bytes) as ``str``; raises :class:`ConversionError` otherwise."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ConversionError(f"{what} is not valid UTF-8") from None
    if isinstance(value, str):
        return value
    raise ConversionError(f"{what} must be a string, got {type_name(value)}")


def type_name(value: Any) -> str:
    """The Lua type name of a value as Lua code would see it."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, bytes | str):
        return "string"
    kind = lua_type(value)
    return kind if kind else type(value).__name__


def number(value: Any) -> Any:
    """Lua numbers: integral floats become ``int`` (JSON/Lua arithmetic produces them)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def from_lua(value: Any, *, strings: str = "bytes", _depth: int = 0) -> Any:
    """Convert a Lua value to plain Python data.

    Tables whose keys are exactly ``1..n`` (n >= 1) become lists, other tables dicts (an
    empty table is an empty dict). ``strings="bytes"`` keeps strings as ``bytes``;
    ``"str"`` decodes them (UTF-8, :class:`ConversionError` when invalid), including keys.
    Functions, coroutines and userdata raise :class:`ConversionError`.
    """
    cls = value.__class__
    if cls is bytes:
        return _string(value, strings)
    if value is None or cls is bool or cls is int:
        return value
    if cls is float:
        return number(value)
    kind = lua_type(value)
    if kind != "table":
        raise ConversionError(f"cannot convert a Lua {kind or type(value).__name__} value")
    if _depth >= MAX_DEPTH:
        raise ConversionError(f"tables nested deeper than {MAX_DEPTH} levels (a cycle?)")
    items = list(value.items())
    if not items:
        return {}
    depth = _depth + 1
    # Lua's next() visits the array part first: a first key of 1 hints at an array.
    if items[0][0].__class__ is int and all(k.__class__ is int for k, _ in items):
        keys = sorted(k for k, _ in items)
        if keys[0] == 1 and keys[-1] == len(keys):
            if keys != [k for k, _ in items]:
                items.sort(key=lambda kv: kv[0])
            return [from_lua(v, strings=strings, _depth=depth) for _, v in items]
    return {
        _key(key, strings): from_lua(item, strings=strings, _depth=depth) for key, item in items
    }


def _string(value: bytes, strings: str) -> Any:
    if strings != "str":
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ConversionError("string is not valid UTF-8") from None


def _key(key: Any, strings: str) -> Any:
    if isinstance(key, bytes):
        return _string(key, strings)
    if isinstance(key, bool):
        return key
    if isinstance(key, int | float):
        return number(key)
    raise ConversionError(f"cannot use a Lua {type_name(key)} as a key")


def to_lua(lua: LuaRuntime, value: Any, _depth: int = 0) -> Any:
    """Convert plain Python data to Lua values (``str`` encoded, containers as tables)."""
    if value is None or isinstance(value, bool | float | bytes):
        return value
    if isinstance(value, int):
        # Lua integers are 64-bit; larger ones (JSON allows them) become floats, as in Lua.
        return value if _LUA_MIN <= value <= _LUA_MAX else float(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    if _depth >= MAX_DEPTH:
        raise ConversionError(f"data nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        if not value:
            return lua.table_from()
        return lua.table_from(
            {to_lua(lua, k, _depth + 1): to_lua(lua, v, _depth + 1) for k, v in value.items()}
        )
    if isinstance(value, list | tuple):
        return lua.table_from([to_lua(lua, v, _depth + 1) for v in value])
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if lua_type(value) is not None:
        return value
    raise ConversionError(f"cannot pass a Python {type(value).__name__} to Lua")
