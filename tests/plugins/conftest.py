"""Helpers for the hook tests: a recording Host and a factory for real PluginManagers.

The plugin objects are registered through the real manager (the same path as discovered
plugins); installed entry points are left out so the tests see only their own plugins.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import structlog
import trio

from plugin_host.hooks.api import SessionInfo
from plugin_host.plugins.manager import PluginManager
from plugin_host.settings import Config, PluginSection, PluginSettings


class RecordingHost:
    """A Host without a broker: records what plugins ask it to do."""

    def __init__(self, config: Config | None = None) -> None:
        self._config = config or Config()
        self.published: list[tuple[str, bytes, int, bool]] = []
        self.changed = 0

    @property
    def log(self) -> Any:
        return structlog.get_logger("test.host")

    @property
    def config(self) -> Any:
        return self._config

    async def publish(self, topic, payload, qos=0, retain=False, properties=None, mountpoint=""):
        self.published.append((topic, payload, qos, retain))

    async def disconnect(self, client_id, mountpoint="", *, do_cleanup=False):
        return False

    def sessions(self) -> Sequence[SessionInfo]:
        return []

    def session(self, client_id, mountpoint=""):
        return None

    def hooks_changed(self) -> None:
        self.changed += 1


def make_config(
    *,
    priorities: Mapping[str, int] | None = None,
    on_error: Mapping[str, str] | None = None,
    disabled: Sequence[str] = (),
    sections: Mapping[str, Mapping[str, Any]] | None = None,
    hook_timeout: float | None = None,
) -> Config:
    config = Config()
    for name, priority in (priorities or {}).items():
        config.plugins.setdefault(name, PluginSettings(name=name)).priority = priority
    for name, mode in (on_error or {}).items():
        config.plugins.setdefault(name, PluginSettings(name=name)).on_error = mode  # type: ignore[assignment]
    for name in disabled:
        config.plugins.setdefault(name, PluginSettings(name=name)).enabled = False
    for name, values in (sections or {}).items():
        config.sections[name] = PluginSection(plugin=name, values=dict(values))
    if hook_timeout is not None:
        config.broker.hook_timeout = hook_timeout
    return config


@pytest.fixture(autouse=True)
def _default_logging():
    """Tests capture log events (structlog.testing.capture_logs); a CLI test elsewhere may
    have configured logging at another level, so start and end from structlog's defaults."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture
def host() -> RecordingHost:
    return RecordingHost()


@pytest.fixture
def make_manager() -> Callable[..., PluginManager]:
    """``make_manager({"name": plugin, ...}, priorities=..., on_error=..., trace=..., ...)``."""

    def build(
        plugins: Mapping[str, Any],
        *,
        notify_queue_size: int = 10_000,
        notify_workers: int = 4,
        trace: bool = False,
        **config_options: Any,
    ) -> PluginManager:
        return PluginManager.discover(
            make_config(**config_options),
            entry_points=(),
            extra_plugins=plugins,
            notify_queue_size=notify_queue_size,
            notify_workers=notify_workers,
            trace=trace,
        )

    return build


# --- paho-mqtt, driven from trio tests (for the end-to-end tests through a real broker) ----------

WAIT = 10.0


class Paho:
    """A paho-mqtt client: its network thread sets events, the trio test waits on them."""

    def __init__(self, address, client_id="", *, v5=False, username=None, password=None):
        self.address = address
        self.v5 = v5
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        # After the broker went away paho waits before reconnecting; keep that (and with it
        # loop_stop() at teardown) short.
        self.client.reconnect_delay_set(min_delay=0.01, max_delay=0.01)  # type: ignore[arg-type]
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connack: Any = None
        self.messages: queue.Queue[Any] = queue.Queue()
        self._acks: dict[int, threading.Event] = {}
        self._results: dict[int, Any] = {}
        self._lock = threading.Lock()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.disconnected.set()
        self.client.on_message = lambda c, u, m: self.messages.put(m)
        self.client.on_subscribe = self._on_ack

    def _on_connect(self, client, userdata, flags, rc, props):
        self.connack = rc
        if rc.is_failure:
            client.disconnect()  # refused: no automatic reconnection attempts
        self.connected.set()

    def _on_ack(self, client, userdata, mid, rcs, props):
        with self._lock:
            self._results[mid] = rcs
            event = self._acks.setdefault(mid, threading.Event())
        event.set()

    async def connect(self) -> Any:
        """Connect; returns the CONNACK reason code (paho ReasonCode; ``.value`` is the int)."""
        self.client.connect(*self.address)
        self.client.loop_start()
        assert await trio.to_thread.run_sync(self.connected.wait, WAIT), "no CONNACK"
        return self.connack

    async def subscribe(self, topic: str, qos: int = 1) -> list[int]:
        _, mid = self.client.subscribe(topic, qos)
        with self._lock:
            event = self._acks.setdefault(mid, threading.Event())
        assert await trio.to_thread.run_sync(event.wait, WAIT), "no SUBACK"
        return [getattr(rc, "value", rc) for rc in self._results[mid]]

    async def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos)
        await trio.to_thread.run_sync(info.wait_for_publish, WAIT)

    async def receive(self) -> Any:
        return await trio.to_thread.run_sync(self.messages.get, True, WAIT)

    def stop(self) -> None:
        # disconnect() wakes paho's network thread, so loop_stop() need not wait for its
        # select() timeout; it also keeps a refused client from reconnecting.
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def paho():
    """``paho(address, client_id, v5=..., username=..., password=...)``; stopped after the test."""
    created: list[Paho] = []

    def make(*args: Any, **kwargs: Any) -> Paho:
        client = Paho(*args, **kwargs)
        created.append(client)
        return client

    yield make
    for client in created:
        client.stop()
