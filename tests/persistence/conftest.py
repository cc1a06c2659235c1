"""Fixtures for the persistence tests: a store directory, and a stopped broker's store file."""

from __future__ import annotations

import json
import os
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
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


# ------------------------------------------------------------------------ a broker process

#: The console script of the virtualenv running the tests.
PLUGIN_HOST = Path(sys.executable).parent / "plugin-host"
#: Generous: a cold start imports trio, structlog, pluggy and plugins on a loaded machine.
START_TIMEOUT = 60.0


class BrokerProcess:
    """``plugin-host serve --config FILE --log-format json`` as a child process.

    Its JSON log lines (stderr) are parsed as they come; :meth:`wait_for` waits for one.
    """

    def __init__(self, config: Path, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGIN_HOST")}
        self.proc = subprocess.Popen(
            [str(PLUGIN_HOST), "serve", "--config", str(config), "--log-format", "json", *args],
            cwd=config.parent,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.events: list[dict[str, Any]] = []
        self.stderr = ""
        self._buffer = b""
        self._seen = 0
        self._selector = selectors.DefaultSelector()
        assert self.proc.stderr is not None
        self._selector.register(self.proc.stderr, selectors.EVENT_READ)

    def wait_for(self, event: str, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        """The next log line with this event name."""
        deadline = time.monotonic() + timeout
        while True:
            while self._seen < len(self.events):
                found = self.events[self._seen]
                self._seen += 1
                if found.get("event") == event:
                    return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {event!r} within {timeout} s: {self.stderr[-3000:]}")
            if not self._selector.select(remaining):
                continue
            assert self.proc.stderr is not None
            chunk = os.read(self.proc.stderr.fileno(), 65536)
            if not chunk:
                raise AssertionError(
                    f"plugin-host exited ({self.proc.wait()}) before {event!r}: "
                    f"{self.stderr[-3000:]}"
                )
            self._add(chunk)

    def address(self) -> tuple[str, int]:
        listening = self.wait_for("listening")
        return listening["host"], listening["port"]

    def _add(self, chunk: bytes) -> None:
        self.stderr += chunk.decode("utf-8", "replace")
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            self.events.append(event if isinstance(event, dict) else {"raw": line.decode()})

    def finish(self, timeout: float = START_TIMEOUT) -> int:
        """Wait for the process to exit (reading the rest of its log); its exit code."""
        assert self.proc.stderr is not None
        _, rest = self.proc.communicate(timeout=timeout)
        self._add(rest + b"\n")
        self._selector.close()
        return self.proc.returncode

    def terminate(self) -> int:
        """SIGTERM (graceful shutdown); the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.finish()

    def kill(self) -> None:
        """SIGKILL: the broker dies on the spot (no shutdown, no final commit)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def broker_process(tmp_path: Path) -> Iterator[Callable[..., BrokerProcess]]:
    """Start ``plugin-host serve`` with a config file in tmp_path (``data/`` beside it)."""
    started: list[BrokerProcess] = []

    def start(*args: str, config: str = "") -> BrokerProcess:
        path = tmp_path / "broker.conf"
        path.write_text(
            "listener.tcp.default = 127.0.0.1:0\nallow_anonymous = on\n"
            "persistence.dir = data\n" + config
        )
        process = BrokerProcess(path, *args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
