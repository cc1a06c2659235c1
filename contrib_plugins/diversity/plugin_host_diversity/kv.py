"""The ``kv`` module's storage: node-local tables shared by every script and Lua state.

VerneMQ backs ``kv`` with ETS tables, so the semantics are ETS's (spec 4.5):

* ``set`` / ``ordered_set``: one value per key; ``insert`` replaces it.
* ``bag``: several values per key, but never the same (key, value) object twice.
* ``duplicate_bag``: several values per key, duplicates kept.
* ``insert_new`` inserts nothing and returns ``False`` if *any* of the given keys exists.

Values are stored as plain Python data (converted from Lua when inserted, back to fresh Lua
tables on lookup), so a table looked up and changed by one call never changes the stored
value or what another state sees. The store belongs to one plugin instance (its lifespan),
not to the module: two brokers in one process do not share it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["TABLE_TYPES", "KVError", "KVStore"]

TABLE_TYPES = ("set", "ordered_set", "bag", "duplicate_bag")


class KVError(ValueError):
    """Bad use of ``kv`` (unknown table, bad type ...): raised as a Lua error."""


class _Table:
    __slots__ = ("data", "kind")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.data: dict[Any, list[Any]] = {}


class KVStore:
    """Named tables of one plugin instance."""

    def __init__(self) -> None:
        self._tables: dict[str, _Table] = {}

    def ensure_table(self, name: str = "simple_kv", kind: str = "set") -> bool:
        """Create table ``name`` of type ``kind`` unless it exists (its type then stays)."""
        if kind not in TABLE_TYPES:
            raise KVError(f"kv.ensure_table: type must be one of {', '.join(TABLE_TYPES)}")
        self._tables.setdefault(name, _Table(kind))
        return True

    def _table(self, name: str) -> _Table:
        table = self._tables.get(name)
        if table is None:
            raise KVError(f"kv: unknown table {name!r} (call kv.ensure_table first)")
        return table

    def insert(self, name: str, objects: Iterable[tuple[Any, Any]]) -> bool:
        table = self._table(name)
        for key, value in objects:
            self._put(table, key, value)
        return True

    def insert_new(self, name: str, objects: Iterable[tuple[Any, Any]]) -> bool:
        table = self._table(name)
        pairs = list(objects)
        if any(key in table.data for key, _ in pairs):
            return False
        for key, value in pairs:
            self._put(table, key, value)
        return True

    @staticmethod
    def _put(table: _Table, key: Any, value: Any) -> None:
        if table.kind in ("set", "ordered_set"):
            table.data[key] = [value]
            return
        values = table.data.setdefault(key, [])
        if table.kind == "bag" and value in values:
            return
        values.append(value)

    def lookup(self, name: str, key: Any) -> list[Any]:
        return list(self._table(name).data.get(key, ()))

    def delete(self, name: str, key: Any) -> bool:
        self._table(name).data.pop(key, None)
        return True

    def delete_all(self, name: str) -> bool:
        self._table(name).data.clear()
        return True

    def keys(self, name: str) -> list[Any]:
        """The keys of a table (``ordered_set`` sorted), for tests and diagnostics."""
        table = self._table(name)
        keys = list(table.data)
        if table.kind == "ordered_set":
            keys.sort(key=lambda k: (str(type(k)), k))
        return keys
