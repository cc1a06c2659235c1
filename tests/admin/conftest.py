"""Helpers for the admin tests: a broker with an HTTP listener, a scraper, the CLI.

Everything is real: the broker listens on ephemeral ports, ``/metrics`` is fetched over a
socket and parsed with prometheus-client's own parser, ``plugin-host admin`` runs its click
command (in a worker thread, since it starts its own trio run) or a real subprocess. paho-mqtt
clients come from the ``paho`` fixture of ``plugin_host.testing.pytest_plugin``.
"""

from __future__ import annotations

import json
import ssl
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from plugin_host.admin.commands import admin_group
from plugin_host.config import load_config
from plugin_host.http import HTTPPool, HTTPResponse
from plugin_host.mqtt import Packet, Parser, encode
from plugin_host.testing import RunningBroker, run_broker

WAIT = 10.0
API_KEY = "test-admin-key-0123456789"


class Metrics:
    """Parsed samples of one scrape: ``m.value("plugin_host_connects_total")``."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        self.types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        if key not in self.samples:
            near = sorted(n for n, _ in self.samples if n.startswith(name.rsplit("_", 1)[0]))
            raise KeyError(f"no sample {name}{labels or ''}; similar: {near[:10]}")
        return self.samples[key]

    def get(self, name: str, default: float = 0.0, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), default)

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


@dataclass
class Admin:
    """A running broker with an admin listener."""

    running: RunningBroker
    url: str
    config_path: Path
    pool: HTTPPool

    @property
    def broker(self) -> Any:
        return self.running.broker

    @property
    def address(self) -> tuple[str, int]:
        return self.running.address

    async def request(
        self,
        method: str,
        path: str,
        *,
        key: str | None = API_KEY,
        body: Any = None,
        headers: list[tuple[str, str]] | None = None,
        raw_body: bytes | None = None,
    ) -> HTTPResponse:
        hdrs = list(headers or [])
        if key is not None:
            hdrs.append(("authorization", f"Bearer {key}"))
        data = raw_body
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.append(("content-type", "application/json"))
        return await self.pool.request(method, self.url + path, body=data, headers=hdrs)

    async def api(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        response = await self.request(method, path, body=body)
        assert response.status == status, (response.status, response.body)
        return json.loads(response.body)

    async def scrape(self) -> Metrics:
        response = await self.request("GET", "/metrics", key=None)
        assert response.status == 200, response.body
        assert (response.header("content-type") or "").startswith("text/plain")
        return Metrics(response.body.decode())

    async def cli(self, *args: str, key: str | None = API_KEY, ok: bool = True) -> Any:
        """Run ``plugin-host admin --url URL --api-key KEY ARGS`` in-process."""
        base = ["--url", self.url]
        if key is not None:
            base += ["--api-key", key]
        return await run_cli(*base, *args, ok=ok)


async def run_cli(*args: str, ok: bool = True, env: dict[str, str] | None = None) -> Any:
    """The click command in a worker thread (it starts its own trio run)."""
    runner = CliRunner()

    def invoke() -> Any:
        return runner.invoke(admin_group, list(args), env=env, catch_exceptions=False)

    result = await trio.to_thread.run_sync(invoke)
    if ok:
        assert result.exit_code == 0, (result.exit_code, result.output, result.stderr)
    return result


def broker_conf(
    tmp_path: Path,
    extra: str = "",
    *,
    api_key: str | None = API_KEY,
    name: str = "broker.conf",
) -> Path:
    lines = [
        "listener.tcp.default = 127.0.0.1:0",
        "listener.http.admin = 127.0.0.1:0",
        "allow_anonymous = on",
        "persistence = off",
    ]
    if api_key is not None:
        lines.append(f"admin.api_key = {api_key}")
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


@pytest.fixture
def admin_broker(tmp_path: Path) -> Callable[..., Any]:
    """``async with admin_broker(extra_conf, plugins={...}) as admin``."""

    @asynccontextmanager
    async def start(
        extra: str = "",
        *,
        plugins: dict[str, Any] | None = None,
        api_key: str | None = API_KEY,
        name: str = "broker.conf",
    ) -> AsyncIterator[Admin]:
        path = broker_conf(tmp_path, extra, api_key=api_key, name=name)
        # A plain-HTTP pool: a bare TLS context spares loading the system CAs.
        plain = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        async with (
            run_broker(load_config(path), plugins=plugins or {}) as running,
            HTTPPool(size=4, tls=plain) as pool,
        ):
            admin = running.info.admin
            assert admin is not None
            yield Admin(running, admin.url(), path, pool)

    return start


# ------------------------------------------------------------------------------------ raw


class RawClient:
    """MQTT over a plain socket with exact byte counts (``sent``, ``received``; per packet
    type number: ``sent_by_type``, and ``parser.bytes_by_type`` for what was received)."""

    def __init__(self, stream: trio.SocketStream, level: int) -> None:
        self.stream = stream
        self.level = level
        self.parser = Parser(server_side=False, protocol_level=level)
        self.sent = 0
        self.sent_by_type = [0] * 16
        self.received = 0
        self._pending: list[Packet] = []

    async def send(self, *packets: Packet) -> None:
        encoded = [encode(p, self.level) for p in packets]
        data = b"".join(encoded)
        await self.stream.send_all(data)
        self.sent += len(data)
        for one in encoded:
            self.sent_by_type[one[0] >> 4] += len(one)

    async def expect(self, cls: type[Any]) -> Any:
        with trio.fail_after(WAIT):
            while not self._pending:
                data = await self.stream.receive_some(65536)
                assert data, f"connection closed while waiting for {cls.__name__}"
                self.received += len(data)
                self._pending.extend(self.parser.feed(data))
        packet = self._pending.pop(0)
        assert isinstance(packet, cls), packet
        return packet

    async def closed(self) -> None:
        """Read until the broker closes the connection (counting what arrives)."""
        with trio.fail_after(WAIT):
            while data := await self.stream.receive_some(65536):
                self.received += len(data)
                self._pending.extend(self.parser.feed(data))


@pytest.fixture
def raw() -> Callable[..., Any]:
    """``async with raw(address, level=4) as client``: a :class:`RawClient`."""

    @asynccontextmanager
    async def open_raw(address: tuple[str, int], level: int = 4) -> AsyncIterator[RawClient]:
        stream = await trio.open_tcp_stream(*address)
        async with stream:
            yield RawClient(stream, level)

    return open_raw


@pytest.fixture
def cli() -> Iterator[Callable[..., Any]]:
    """``await cli(*args, ok=True, env=None)``: ``plugin-host admin ARGS`` in-process.

    click's runner swaps ``sys.stdout`` while the command runs (in a worker thread); the
    broker's log lines (structlog prints to whatever ``sys.stdout`` is) must not end up in the
    command's output, so they go to a stream fixed now for the duration of the test.
    """
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    try:
        yield run_cli
    finally:
        structlog.reset_defaults()


@pytest.fixture
def api_key() -> str:
    return API_KEY
