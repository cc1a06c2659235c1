"""paho-mqtt driven from trio tests: an independent MQTT implementation as the test's client.

paho-mqtt runs its network loop in a thread of its own. Its callbacks (in that thread) set
events and fill queues; the trio test waits for them in a worker thread
(``trio.to_thread.run_sync``) with a timeout, never by sleeping::

    from plugin_host.testing import PahoClient, run_broker

    async def test_with_paho():
        async with run_broker() as broker:
            client = PahoClient(broker.address, "c1", v5=True)
            try:
                assert await client.connect() == 0
                assert await client.subscribe("a/#", qos=1) == [1]
                assert await client.publish("a/b", b"hi", qos=1) == 0
                assert (await client.receive()).payload == b"hi"
                await client.disconnect()
            finally:
                client.stop()

With pytest, the ``paho`` fixture of ``plugin_host.testing.pytest_plugin`` makes clients
(``paho(address, client_id, **options)``) and stops them after the test.

paho-mqtt is a test dependency (``pip install plugin-host[test]``): it is imported when a
client is made, so importing :mod:`plugin_host.testing` does not need it.
"""

# The waits take a timeout on purpose: a test helper must fail loudly, never hang.
# ruff: noqa: ASYNC109

from __future__ import annotations

import queue
import ssl
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import trio

if TYPE_CHECKING:  # pragma: no cover
    import paho.mqtt.client as mqtt

__all__ = ["WAIT", "Connack", "PahoClient"]

#: How long a client waits for each answer of the broker, in seconds (``timeout=`` changes it).
WAIT = 10.0


class Connack(NamedTuple):
    """What paho's ``on_connect`` reported for the CONNACK."""

    flags: Any  # paho ConnectFlags (.session_present)
    reason_code: Any  # paho ReasonCode: == its int value and == its name ("Not authorized")
    properties: Any  # paho Properties (MQTT 5; empty for 3.x)


class _Answers:
    """Answers of the broker by packet id (SUBACK, UNSUBACK, PUBACK/PUBCOMP, QoS 0 sent).

    Filled in paho's thread, awaited by the test; an answer may arrive before the test waits.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slots: dict[int, queue.Queue[Any]] = {}

    def _slot(self, mid: int) -> queue.Queue[Any]:
        with self._lock:
            return self._slots.setdefault(mid, queue.Queue())

    def put(self, mid: int, answer: Any) -> None:
        self._slot(mid).put(answer)

    async def get(self, mid: int, what: str, timeout: float) -> Any:
        slot = self._slot(mid)
        try:
            answer = await trio.to_thread.run_sync(slot.get, True, timeout)
        except queue.Empty:
            raise TimeoutError(f"no {what} within {timeout} s") from None
        with self._lock:  # packet ids are reused: the next one starts empty
            self._slots.pop(mid, None)
        return answer


def _code(reason_code: Any) -> int:
    return int(getattr(reason_code, "value", reason_code))


class PahoClient:
    """A paho-mqtt client (MQTT 3.1, 3.1.1 or 5; TCP, TLS, WebSocket) for trio tests.

    * ``address``: ``(host, port)`` of the listener; ``client_id``: ``""`` lets the broker
      assign one (MQTT 5) or is refused/accepted as the broker decides (3.x).
    * ``protocol``: 3, 4 or 5 (paho's ``MQTTv31``, ``MQTTv311``, ``MQTTv5``); ``v5=True`` is
      ``protocol=5``.
    * ``clean``: clean session (3.x) or clean start (5); ``session_expiry``: the MQTT 5
      session expiry interval sent with CONNECT.
    * ``username`` / ``password``: credentials.
    * ``transport="websockets"`` (with ``ws_path``) for WebSocket listeners; ``tls``: an
      :class:`ssl.SSLContext` for TLS (or WSS with ``transport="websockets"``).
    * ``timeout``: how long each wait for the broker may take.

    paho's automatic reconnection is off: a test sees each disconnect as it happened, and
    :meth:`stop` never waits for a reconnection delay. ``client`` is the paho client itself,
    for what this wrapper does not cover (``client.will_set(...)`` before connecting, a
    publish that is not waited for).
    """

    def __init__(
        self,
        address: tuple[str, int],
        client_id: str = "",
        *,
        protocol: int = 4,
        v5: bool = False,
        clean: bool = True,
        session_expiry: int | None = None,
        username: str | None = None,
        password: str | None = None,
        transport: str = "tcp",
        ws_path: str = "/mqtt",
        tls: ssl.SSLContext | None = None,
        timeout: float = WAIT,
    ) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        self.address = address
        self.client_id = client_id
        self.protocol = MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion(protocol)
        self.v5 = self.protocol == MQTTProtocolVersion.MQTTv5
        self.clean = clean
        self.session_expiry = session_expiry
        self.timeout = timeout
        session: dict[str, Any] = {} if self.v5 else {"clean_session": clean}
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=self.protocol,
            transport=transport,  # type: ignore[arg-type]
            reconnect_on_failure=False,
            **session,
        )
        if transport == "websockets":
            self.client.ws_set_options(path=ws_path)
        if tls is not None:
            self.client.tls_set_context(tls)
        if username is not None:
            self.client.username_pw_set(username, password)

        self.connected = threading.Event()  # a CONNACK arrived (accepted or not)
        self.disconnected = threading.Event()
        self.settled = threading.Event()  # CONNACK or failure, whichever comes first
        self.connack: Connack | None = None
        self.disconnect_reason: Any = None  # paho ReasonCode of the last disconnect
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._answers = _Answers()
        self._started = False

        c = self.client
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_message = lambda _client, _userdata, message: self.messages.put(message)
        c.on_subscribe = self._on_acks
        c.on_unsubscribe = self._on_acks
        c.on_publish = self._on_publish

    # paho callbacks (paho's thread) --------------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connack = Connack(flags, rc, props)
        self.connected.set()
        self.settled.set()

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        self.disconnected.set()
        self.settled.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.disconnect_reason = rc
        self.disconnected.set()
        self.settled.set()

    def _on_acks(self, client: Any, userdata: Any, mid: int, rcs: Any, props: Any) -> None:
        self._answers.put(mid, [_code(rc) for rc in rcs])

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        self._answers.put(mid, _code(rc))

    # the test's side -----------------------------------------------------------------------

    async def _wait(self, wait: Callable[[float], bool], timeout: float | None = None) -> bool:
        return await trio.to_thread.run_sync(wait, self.timeout if timeout is None else timeout)

    async def _open(self, keepalive: int, properties: Any) -> None:
        options: dict[str, Any] = {"keepalive": keepalive}
        if self.v5:
            if self.session_expiry is not None:
                from paho.mqtt.packettypes import PacketTypes
                from paho.mqtt.properties import Properties

                properties = properties or Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                properties.SessionExpiryInterval = self.session_expiry
            options["clean_start"] = self.clean
            options["properties"] = properties
        for event in (self.connected, self.disconnected, self.settled):
            event.clear()
        self.connack = None
        # connect() does TCP, TLS and the WebSocket upgrade synchronously: a worker thread.
        await trio.to_thread.run_sync(lambda: self.client.connect(*self.address, **options))
        self.client.loop_start()
        self._started = True

    async def connect(self, *, keepalive: int = 60, properties: Any = None) -> Any:
        """Connect and wait for the CONNACK; returns its reason code, refused or not.

        The reason code is paho's ``ReasonCode``: it compares equal to its int value and to
        paho's name (``"Not authorized"``); ``.value`` is the int. paho reports MQTT 3 return
        codes by their MQTT 5 names (4 is 0x86, 5 is 0x87). ``properties``: paho CONNECT
        ``Properties`` (MQTT 5). Errors of TCP, TLS or the WebSocket upgrade are raised.
        """
        await self._open(keepalive, properties)
        await self._wait(self.settled.wait)
        if self.connack is None:
            reason = "closed" if self.disconnected.is_set() else f"nothing within {self.timeout} s"
            raise ConnectionError(f"{self.client_id!r}: no CONNACK ({reason})")
        return self.connack.reason_code

    async def try_connect(self, *, keepalive: int = 60, properties: Any = None) -> bool:
        """Connect; True when the broker accepted, False when refused at any layer (TCP, TLS
        handshake, WebSocket upgrade, CONNACK)."""
        import paho.mqtt.client as mqtt

        try:
            await self._open(keepalive, properties)
        except (OSError, ssl.SSLError, mqtt.WebsocketConnectionError):
            return False
        await self._wait(self.settled.wait)
        return self.connack is not None and not self.connack.reason_code.is_failure

    async def subscribe(self, topic: Any, qos: int = 0, **options: Any) -> list[int]:
        """Subscribe to ``topic`` (a filter, or a list of ``(filter, qos)``); ``options`` are
        paho's (``options=SubscribeOptions(...)``, ``properties=``). Returns the SUBACK codes:
        the granted QoS per filter, or a refusal (0x80 and up)."""
        import paho.mqtt.client as mqtt

        result, mid = self.client.subscribe(topic, qos, **options)
        if result != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise ConnectionError(f"SUBSCRIBE not sent: {mqtt.error_string(result)}")
        answer: list[int] = await self._answers.get(mid, "SUBACK", self.timeout)
        return answer

    async def unsubscribe(self, topic: Any, **options: Any) -> list[int]:
        """Unsubscribe (``topic``: a filter or a list of them); the UNSUBACK reason codes
        (MQTT 5; paho reports none or success codes for 3.x)."""
        import paho.mqtt.client as mqtt

        result, mid = self.client.unsubscribe(topic, **options)
        if result != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise ConnectionError(f"UNSUBSCRIBE not sent: {mqtt.error_string(result)}")
        answer: list[int] = await self._answers.get(mid, "UNSUBACK", self.timeout)
        return answer

    async def publish(self, topic: str, payload: bytes | str, qos: int = 0, **options: Any) -> int:
        """Publish and wait until it is done: QoS 0 written, QoS 1 PUBACK, QoS 2 PUBCOMP.

        ``options`` are paho's (``retain=True``, ``properties=``). Returns the reason code of
        the acknowledgement: 0 when accepted (always for QoS 0 and MQTT 3), 0x80 and up when an
        MQTT 5 broker did not accept it.
        """
        import paho.mqtt.client as mqtt

        info = self.client.publish(topic, payload, qos, **options)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
            raise ConnectionError(f"PUBLISH not sent: {mqtt.error_string(info.rc)}")
        what = ("PUBLISH written", "PUBACK", "PUBCOMP")[qos]
        answer: int = await self._answers.get(info.mid, what, self.timeout)
        return answer

    async def receive(self, timeout: float | None = None) -> mqtt.MQTTMessage:
        """The next message delivered to this client (paho ``MQTTMessage``)."""
        wait = self.timeout if timeout is None else timeout
        try:
            return await trio.to_thread.run_sync(self.messages.get, True, wait)
        except queue.Empty:
            raise TimeoutError(f"{self.client_id!r} received no message within {wait} s") from None

    async def wait_disconnected(self, timeout: float | None = None) -> Any:
        """Wait until the connection is gone; the reason code paho reported (``== 0x8E``...)."""
        if not await self._wait(self.disconnected.wait, timeout):
            raise TimeoutError(f"{self.client_id!r} is still connected")
        return self.disconnect_reason

    async def disconnect(self, **options: Any) -> None:
        """Send DISCONNECT (``options``: paho's ``reasoncode=``, ``properties=``), wait until
        the connection is closed, stop paho's thread."""
        self.client.disconnect(**options)
        await self._wait(self.disconnected.wait)
        self.stop()

    def stop(self) -> None:
        """End the client (test clean-up): a DISCONNECT if still connected (it also wakes
        paho's thread at once), stop the thread, close a socket left open. Idempotent."""
        self.client.disconnect()
        if self._started:
            self.client.loop_stop()
            self._started = False
        sock = self.client.socket()
        if sock is not None:
            sock.close()
