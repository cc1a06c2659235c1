"""Shared helpers for the broker tests: a paho-mqtt wrapper that waits without sleeping.

paho runs its own network thread; its callbacks set ``threading.Event``s or fill queues, and
the trio test waits for them with ``trio.to_thread.run_sync(..., timeout)``.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import trio
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from plugin_host.testing import HookRecorder

WAIT = 10.0


class Paho:
    """A paho-mqtt client driven from trio tests."""

    def __init__(
        self,
        address: tuple[str, int],
        client_id: str = "",
        *,
        protocol: int = mqtt.MQTTv311,
        clean: bool = True,
        session_expiry: int | None = None,
    ) -> None:
        self.address = address
        self.protocol = protocol
        self.v5 = protocol == mqtt.MQTTv5
        kwargs: dict[str, Any] = {}
        if not self.v5:
            kwargs["clean_session"] = clean
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, **kwargs
        )
        self.clean = clean
        self.session_expiry = session_expiry
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connack: tuple[Any, Any, Any] | None = None
        self.disconnect_reason: Any = None
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._acks: dict[int, threading.Event] = {}
        self._ack_results: dict[int, Any] = {}
        self._lock = threading.Lock()
        c = self.client
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_ack
        c.on_unsubscribe = self._on_ack

    # paho callbacks (paho's thread)
    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connack = (flags, rc, props)
        self.connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.disconnect_reason = rc
        self.disconnected.set()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.put(message)

    def _on_ack(self, client: Any, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        with self._lock:
            self._ack_results[mid] = rcs
            event = self._acks.setdefault(mid, threading.Event())
        event.set()

    def _ack_event(self, mid: int) -> threading.Event:
        with self._lock:
            return self._acks.setdefault(mid, threading.Event())

    # trio-side API
    async def connect(self, keepalive: int = 60, properties: Properties | None = None) -> Any:
        props = properties
        if self.v5 and self.session_expiry is not None:
            props = props or Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry
        kwargs: dict[str, Any] = {"keepalive": keepalive}
        if self.v5:
            kwargs["clean_start"] = self.clean
            kwargs["properties"] = props
        self.client.connect(*self.address, **kwargs)
        self.client.loop_start()
        ok = await trio.to_thread.run_sync(self.connected.wait, WAIT)
        assert ok, "no CONNACK"
        return self.connack

    async def subscribe(self, topic: Any, qos: int = 0, **kwargs: Any) -> Any:
        result, mid = self.client.subscribe(topic, qos, **kwargs)
        assert result == mqtt.MQTT_ERR_SUCCESS
        ok = await trio.to_thread.run_sync(self._ack_event(mid).wait, WAIT)
        assert ok, "no SUBACK"
        return self._ack_results[mid]

    async def unsubscribe(self, topic: Any, **kwargs: Any) -> Any:
        _, mid = self.client.unsubscribe(topic, **kwargs)
        ok = await trio.to_thread.run_sync(self._ack_event(mid).wait, WAIT)
        assert ok, "no UNSUBACK"
        return self._ack_results[mid]

    async def publish(self, topic: str, payload: bytes | str, qos: int = 0, **kwargs: Any) -> Any:
        info = self.client.publish(topic, payload, qos, **kwargs)
        await trio.to_thread.run_sync(info.wait_for_publish, WAIT)
        assert info.is_published()
        return info

    async def receive(self, timeout: float = WAIT) -> mqtt.MQTTMessage:
        try:
            return await trio.to_thread.run_sync(self.messages.get, True, timeout)
        except queue.Empty:
            raise TimeoutError("paho received no message") from None

    async def wait_disconnected(self, timeout: float = WAIT) -> Any:
        ok = await trio.to_thread.run_sync(self.disconnected.wait, timeout)
        assert ok, "still connected"
        return self.disconnect_reason

    async def disconnect(self) -> None:
        self.client.disconnect()
        await trio.to_thread.run_sync(self.disconnected.wait, WAIT)
        self.client.loop_stop()

    def stop(self) -> None:
        """Stop paho's thread without DISCONNECT (best effort, for clean-up)."""
        self.client.loop_stop()


@pytest.fixture
def paho_clients():
    """Create Paho clients that are stopped after the test."""
    created: list[Paho] = []

    def make(*args: Any, **kwargs: Any) -> Paho:
        client = Paho(*args, **kwargs)
        created.append(client)
        return client

    yield make
    for client in created:
        client.stop()


@pytest.fixture
def recorder() -> HookRecorder:
    return HookRecorder()
