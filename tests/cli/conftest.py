"""Helpers for CLI tests: the installed ``plugin-host`` script run as a real process."""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

#: The console script of the virtualenv running the tests (``.venv/bin/plugin-host``).
PLUGIN_HOST = Path(sys.executable).parent / "plugin-host"

#: Generous: a cold start imports trio, structlog, pluggy and plugins on a loaded 2-core machine.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """configure_logging() changes process-wide state: put the defaults back after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def plugin_host_exe() -> Path:
    if not PLUGIN_HOST.exists():
        pytest.fail(f"{PLUGIN_HOST} is missing: install the package (pip install -e .)")
    return PLUGIN_HOST


class ServeProcess:
    """``plugin-host serve ...`` as a child process whose JSON log lines can be awaited."""

    def __init__(self, exe: Path, args: list[str], cwd: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGIN_HOST")}
        self.proc = subprocess.Popen(
            [str(exe), "serve", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.events: list[dict[str, Any]] = []  # every stderr line, parsed (or {"raw": line})
        self._seen = 0
        self._buffer = b""
        self._selector = selectors.DefaultSelector()
        assert self.proc.stderr is not None
        self._selector.register(self.proc.stderr, selectors.EVENT_READ)

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = START_TIMEOUT
    ) -> dict[str, Any]:
        """The next logged event matching ``predicate``; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            while self._seen < len(self.events):
                event = self.events[self._seen]
                self._seen += 1
                if predicate(event):
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching log event within {timeout}s: {self.events}")
            if not self._selector.select(remaining):
                continue
            assert self.proc.stderr is not None
            chunk = os.read(self.proc.stderr.fileno(), 65536)
            if not chunk:
                raise AssertionError(
                    f"plugin-host exited ({self.proc.wait()}) before the event: {self.events}"
                )
            self._add(chunk)

    def _add(self, chunk: bytes) -> None:
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            text = line.decode("utf-8", "replace")
            try:
                event = json.loads(text)
            except ValueError:
                event = {"raw": text}
            self.events.append(event if isinstance(event, dict) else {"raw": text})

    def stop(self, signum: int = signal.SIGINT) -> tuple[int, str]:
        """Send ``signum``, wait for the exit; returns (exit code, the rest of stderr)."""
        self.proc.send_signal(signum)
        try:
            _out, rest = self.proc.communicate(timeout=STOP_TIMEOUT)
        finally:
            self.kill()
        self._add(rest + b"\n")
        return self.proc.returncode, rest.decode("utf-8", "replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        if self._selector.get_map() is not None:
            self._selector.close()


@pytest.fixture
def serve_process(plugin_host_exe: Path, tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    started: list[ServeProcess] = []

    def start(*args: str) -> ServeProcess:
        process = ServeProcess(plugin_host_exe, list(args), tmp_path)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
