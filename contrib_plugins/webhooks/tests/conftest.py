"""Shared helpers of the webhooks tests: certificates, a host for the plugin, and a way to run
the real plugin (its real lifespan, configured through the real config loader).

The broker and the dispatcher are not part of these tests: hooks are called the way the
dispatcher will call them, through the plugin module's hookimpls inside its lifespan.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio
import trustme

from plugin_host.config import apply_schema, load_config
from plugin_host.testing.http_server import TLSFiles, write_tls_files
from plugin_host_webhooks.config import schema
from plugin_host_webhooks.plugin import WebhooksPlugin
from plugin_host_webhooks.runtime import Webhooks


class PluginHost:
    """The part of the broker's Host the webhooks plugin uses: a log and hooks_changed()."""

    def __init__(self) -> None:
        self.hooks_changed_calls = 0

    @property
    def log(self) -> Any:
        # Looked up on use, so structlog.testing.capture_logs() sees the lines.
        return structlog.get_logger("plugin_host_webhooks").bind(plugin="webhooks")

    def hooks_changed(self) -> None:
        self.hooks_changed_calls += 1


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> TLSFiles:
    return write_tls_files(ca, tmp_path, common_name="webhooks-client")


@pytest.fixture
def host() -> PluginHost:
    return PluginHost()


@pytest.fixture
def plugin() -> WebhooksPlugin:
    """A fresh plugin instance (what the manager makes per broker through
    ``plugin_host_plugin``); call its hookimpls like the dispatcher does."""
    return WebhooksPlugin()


Runner = Callable[..., AbstractAsyncContextManager[Webhooks]]


@pytest.fixture
def webhooks(tmp_path: Path, host: PluginHost, plugin: WebhooksPlugin) -> Runner:
    """``async with webhooks(conf_text, suffix=".conf") as runtime:`` runs the plugin with
    that configuration file (vernemq.conf style or TOML)."""
    counter = iter(range(1000))

    @asynccontextmanager
    async def run(text: str = "", suffix: str = ".conf") -> AsyncIterator[Webhooks]:
        path = tmp_path / f"config{next(counter)}{suffix}"
        path.write_text(text)
        section = apply_schema(load_config(path).section("webhooks"), schema())
        async with plugin.lifespan(host, section) as runtime:
            yield runtime

    return run


def _conf(*lines: str, **hooks: str) -> str:
    out = list(lines)
    for name, spec in hooks.items():
        hook, endpoint = spec.split()
        out += [f"vmq_webhooks.{name}.hook = {hook}", f"vmq_webhooks.{name}.endpoint = {endpoint}"]
    return "\n".join(out) + "\n"


@pytest.fixture
def conf() -> Callable[..., str]:
    """``conf(*lines, name="hook url", ...)``: config text with those lines and webhooks."""
    return _conf


# --------------------------------------------------------------------------------------------
# End to end: a real broker with the plugin, and paho-mqtt as an independent client.

WAIT = 10.0


class Paho:
    """A paho-mqtt client driven from trio without a background thread: each operation runs
    paho's network loop in a trio worker thread until its answer arrived (or WAIT passed)."""

    def __init__(self, address: tuple[str, int], client_id: str, *, v5: bool = False) -> None:
        import paho.mqtt.client as mqtt

        self.address = address
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        )
        self.reason_code: Any = None
        self.messages: list[Any] = []
        self._granted: dict[int, Any] = {}
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda client, userdata, message: self.messages.append(message)
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.reason_code = rc

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        self._granted[mid] = rcs

    async def _pump(self, done: Callable[[], bool], what: str) -> None:
        def run() -> bool:
            deadline = time.monotonic() + WAIT
            while not done() and time.monotonic() < deadline:
                self.client.loop(0.02)
            return done()

        assert await trio.to_thread.run_sync(run), f"no {what} within {WAIT}s"

    async def connect(self, username: str | None = None, password: str | None = None) -> Any:
        """Connect; returns paho's CONNACK ReasonCode (compare with ``0`` or a name: paho
        reports the MQTT 3 return codes 4 and 5 as "Bad user name or password" and
        "Not authorized")."""
        if username is not None:
            self.client.username_pw_set(username, password)
        await trio.to_thread.run_sync(lambda: self.client.connect(*self.address))
        await self._pump(lambda: self.reason_code is not None, "CONNACK")
        return self.reason_code

    async def subscribe(self, topics: list[tuple[str, int]]) -> list[int]:
        """Subscribe; returns the SUBACK reason codes."""
        _, mid = self.client.subscribe(topics)
        await self._pump(lambda: mid in self._granted, "SUBACK")
        return [int(rc.value) for rc in self._granted[mid]]

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos)
        await self._pump(info.is_published, "PUBACK")

    async def receive(self) -> Any:
        await self._pump(lambda: bool(self.messages), "message")
        return self.messages.pop(0)

    def close(self) -> None:
        self.client.disconnect()


@pytest.fixture
def paho() -> Iterator[Callable[..., Paho]]:
    """``paho(address, client_id, v5=False)``: clients closed after the test."""
    made: list[Paho] = []

    def make(*args: Any, **kwargs: Any) -> Paho:
        made.append(Paho(*args, **kwargs))
        return made[-1]

    yield make
    for client in made:
        client.close()


@pytest.fixture
def broker(
    tmp_path: Path, plugin: WebhooksPlugin
) -> Callable[..., AbstractAsyncContextManager[Any]]:
    """``async with broker(conf_text, plugins={...}) as running``: a real broker on an
    ephemeral port with the webhooks plugin (plus ``plugins``), configured by ``conf_text``."""

    @asynccontextmanager
    async def run(text: str, plugins: dict[str, Any] | None = None) -> AsyncIterator[Any]:
        from plugin_host.testing import run_broker

        path = tmp_path / "broker.conf"
        path.write_text("listener.tcp.default = 127.0.0.1:0\n" + text)
        async with run_broker(
            load_config(path), plugins={"webhooks": plugin, **(plugins or {})}
        ) as running:
            yield running

    return run


class HookArgs:
    """Typical hook arguments (fresh dicts per test): a CONNECT and a PUBLISH of client c1."""

    def __init__(self) -> None:
        self.register: dict[str, Any] = {
            "peer_addr": "127.0.0.1",
            "peer_port": 5000,
            "mountpoint": "",
            "client_id": "c1",
            "username": "u",
            "password": b"p",
            "clean_session": True,
            "listener_addr": None,
            "listener_port": None,
            "listener_type": None,
            "client_cert": None,
        }
        self.message: dict[str, Any] = {
            "username": "u",
            "mountpoint": "",
            "client_id": "c1",
            "qos": 1,
            "topic": "a/b",
            "payload": b"x",
            "retain": False,
        }


@pytest.fixture
def args() -> HookArgs:
    return HookArgs()
