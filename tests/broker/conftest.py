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

from plugin_host import hookimpl

pytest_plugins = ["plugin_host.testing.pytest_plugin"]

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


class Recorder:
    """An in-test plugin recording every notification hook call (a real plugin object).

    ``await recorder.wait_for("on_session_expired", client_id="x")`` waits (with a timeout)
    until a matching call was recorded and returns its arguments.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._changed = trio.Event()

    def record(self, hook: str, **args: Any) -> None:
        self.calls.append((hook, args))
        self._changed.set()
        self._changed = trio.Event()

    def of(self, hook: str) -> list[dict[str, Any]]:
        return [args for name, args in self.calls if name == hook]

    async def wait_for(self, hook: str, timeout: float = WAIT, **match: Any) -> dict[str, Any]:
        with trio.fail_after(timeout):
            while True:
                for name, args in self.calls:
                    if name == hook and all(args.get(k) == v for k, v in match.items()):
                        return args
                await self._changed.wait()

    @hookimpl
    def on_register(self, peer_addr, peer_port, mountpoint, client_id, username):
        self.record(
            "on_register",
            peer_addr=peer_addr,
            peer_port=peer_port,
            mountpoint=mountpoint,
            client_id=client_id,
            username=username,
        )

    @hookimpl
    def on_register_m5(self, peer_addr, peer_port, mountpoint, client_id, username, properties):
        self.record(
            "on_register_m5",
            peer_addr=peer_addr,
            peer_port=peer_port,
            mountpoint=mountpoint,
            client_id=client_id,
            username=username,
            properties=properties,
        )

    @hookimpl
    def on_publish(self, username, mountpoint, client_id, qos, topic, payload, retain):
        self.record(
            "on_publish",
            username=username,
            mountpoint=mountpoint,
            client_id=client_id,
            qos=qos,
            topic=topic,
            payload=payload,
            retain=retain,
        )

    @hookimpl
    def on_publish_m5(
        self, username, mountpoint, client_id, qos, topic, payload, retain, properties
    ):
        self.record(
            "on_publish_m5",
            username=username,
            mountpoint=mountpoint,
            client_id=client_id,
            qos=qos,
            topic=topic,
            payload=payload,
            retain=retain,
            properties=properties,
        )

    @hookimpl
    def on_subscribe(self, username, mountpoint, client_id, topics):
        self.record(
            "on_subscribe",
            username=username,
            mountpoint=mountpoint,
            client_id=client_id,
            topics=topics,
        )

    @hookimpl
    def on_subscribe_m5(self, username, mountpoint, client_id, topics, properties):
        self.record(
            "on_subscribe_m5",
            username=username,
            mountpoint=mountpoint,
            client_id=client_id,
            topics=topics,
            properties=properties,
        )

    @hookimpl
    def on_topic_unsubscribed(self, mountpoint, client_id, topics):
        self.record(
            "on_topic_unsubscribed", mountpoint=mountpoint, client_id=client_id, topics=topics
        )

    @hookimpl
    def on_offline_message(self, mountpoint, client_id, qos, topic, payload, retain):
        self.record(
            "on_offline_message",
            mountpoint=mountpoint,
            client_id=client_id,
            qos=qos,
            topic=topic,
            payload=payload,
            retain=retain,
        )

    @hookimpl
    def on_message_drop(self, mountpoint, client_id, topic, qos, payload, properties, reason):
        self.record(
            "on_message_drop",
            mountpoint=mountpoint,
            client_id=client_id,
            topic=topic,
            qos=qos,
            payload=payload,
            properties=properties,
            reason=reason,
        )

    @hookimpl
    def on_client_wakeup(self, mountpoint, client_id):
        self.record("on_client_wakeup", mountpoint=mountpoint, client_id=client_id)

    @hookimpl
    def on_client_offline(self, mountpoint, client_id):
        self.record("on_client_offline", mountpoint=mountpoint, client_id=client_id)

    @hookimpl
    def on_client_gone(self, mountpoint, client_id):
        self.record("on_client_gone", mountpoint=mountpoint, client_id=client_id)

    @hookimpl
    def on_session_expired(self, mountpoint, client_id):
        self.record("on_session_expired", mountpoint=mountpoint, client_id=client_id)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()
