"""Fixtures for the persistence tests: a store directory, and a stopped broker's store file."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from plugin_host.store.sqlite import DB_NAME


class StoreFile:
    """The SQLite file of a broker that is not running (a running broker locks it)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / DB_NAME

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(self.path)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        """Change the store behind the broker's back (time passing while it was down...)."""
        conn = sqlite3.connect(self.path)
        try:
            conn.execute(sql, params)
            conn.commit()
        finally:
            conn.close()

    def count(self, table: str) -> int:
        return int(self.query(f"SELECT count(*) FROM {table}")[0][0])


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store_file(store_dir: Path) -> StoreFile:
    return StoreFile(store_dir)
