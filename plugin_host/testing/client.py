"""A small trio MQTT client for tests, built on :mod:`plugin_host.mqtt`.

Use it to drive a broker from a test (``plugin_host.testing.run_broker`` starts one)::

    async with open_client(broker.address, client_id="c1", protocol=5) as client:
        assert client.connack.reason_code == 0
        codes = await client.subscribe([("a/#", 1)])
        await client.publish("a/b", b"hi", qos=1)
        message = await client.receive()

It speaks MQTT 3.1 (``protocol=3``), 3.1.1 (``4``, the default) and 5 (``5``), acknowledges
incoming QoS 1/2 messages itself unless ``auto_ack=False``, sends PINGREQ when idle (so the
keepalive is honoured), and offers raw access (:meth:`MQTTClient.send_raw`,
:meth:`MQTTClient.send_packet`, :meth:`MQTTClient.receive_packet`) for protocol tests.
Every wait has a timeout (``timeout`` argument, default :data:`DEFAULT_TIMEOUT`) and raises
:class:`TimeoutError` instead of hanging a test.
"""

# Every wait takes a ``timeout`` on purpose: a test helper must fail loudly, never hang.
# ruff: noqa: ASYNC109

from __future__ import annotations

import math
import ssl
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

import trio

from plugin_host.mqtt import (
    MQTT_5,
    PINGREQ_BYTES,
    Connack,
    Connect,
    Disconnect,
    MQTTError,
    Packet,
    Parser,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
    encode,
    encode_puback,
    encode_pubcomp,
    encode_publish,
    encode_pubrec,
    encode_pubrel,
)

DEFAULT_TIMEOUT = 10.0

__all__ = [
    "DEFAULT_TIMEOUT",
    "ClientSession",
    "ConnectionRefused",
    "MQTTClient",
    "open_client",
]


class ConnectionRefused(Exception):
    """CONNACK carried a failure code (or the broker closed without CONNACK)."""

    def __init__(self, connack: Connack | None) -> None:
        self.connack = connack
        code = "no CONNACK" if connack is None else f"0x{connack.reason_code:02X}"
        super().__init__(f"connection refused ({code})")

    @property
    def reason_code(self) -> int | None:
        return None if self.connack is None else self.connack.reason_code


class ClientSession:
    """Client-side session state that must survive reconnects for exactly-once QoS 2.

    Pass the same object to several :func:`open_client` calls with ``clean_start=False``.
    ``qos2_received`` holds packet ids of QoS 2 messages delivered to the test and not yet
    released by PUBREL: a re-sent PUBLISH with one of those ids is acknowledged, not delivered
    twice (MQTT 4.3.3, method B).
    """

    def __init__(self) -> None:
        self.qos2_received: set[int] = set()


class MQTTClient:
    """One client connection. Create it with :func:`open_client`."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        protocol: int,
        *,
        auto_ack: bool,
        session: ClientSession | None,
        max_packet_size: int | None = None,
    ) -> None:
        self.stream = stream
        self.protocol = protocol
        self.v5 = protocol == MQTT_5
        self.auto_ack = auto_ack
        self.session = session or ClientSession()
        self.parser = Parser(
            server_side=False, protocol_level=protocol, max_packet_size=max_packet_size
        )
        self.connack: Connack | None = None
        #: The DISCONNECT the server sent, if any (MQTT 5).
        self.server_disconnect: Disconnect | None = None
        #: Set when the connection is closed (by either side).
        self.closed = trio.Event()
        self.keepalive = 0
        self.topic_aliases: dict[int, str] = {}
        self._send_lock = trio.Lock()
        self._messages_send, self._messages = trio.open_memory_channel[Publish](math.inf)
        self._packets: deque[Packet] = deque()
        self._packet_event = trio.Event()
        self._next_pid = 1
        self._waiters: dict[tuple[type[Any], int], trio.Event] = {}
        self._replies: dict[tuple[type[Any], int], Packet] = {}
        self._last_send = 0.0
        self._pong = trio.Event()
        self._pings = 0
        self._pongs = 0
        self.received_count = 0

    # ------------------------------------------------------------------------------ sending

    async def send_raw(self, data: bytes) -> None:
        """Send bytes as they are (for malformed-input tests)."""
        async with self._send_lock:
            await self.stream.send_all(data)
            self._last_send = trio.current_time()

    async def send_packet(self, packet: Packet) -> None:
        """Encode ``packet`` for this connection's protocol level and send it."""
        await self.send_raw(encode(packet, self.protocol))

    def _alloc_pid(self) -> int:
        pid = self._next_pid
        while any(key[1] == pid for key in self._waiters):
            pid = pid % 0xFFFF + 1
        self._next_pid = pid % 0xFFFF + 1
        return pid

    async def _wait_reply(self, key: tuple[type[Any], int], timeout: float) -> Packet:
        # The reader sets every waiter's event when the connection closes.
        event = self._waiters.setdefault(key, trio.Event())
        try:
            if self.closed.is_set():
                event.set()
            with trio.fail_after(timeout):
                await event.wait()
        except trio.TooSlowError:
            raise TimeoutError(f"no {key[0].__name__} for packet id {key[1]}") from None
        finally:
            self._waiters.pop(key, None)
        reply = self._replies.pop(key, None)
        if reply is None:
            raise ConnectionError(f"connection closed while waiting for {key[0].__name__}")
        return reply

    async def publish(
        self,
        topic: str,
        payload: bytes | str = b"",
        qos: int = 0,
        retain: bool = False,
        properties: dict[str, Any] | None = None,
        *,
        packet_id: int | None = None,
        dup: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Packet | None:
        """Publish; for QoS 1 return the PUBACK, for QoS 2 the PUBCOMP (or a failing PUBREC).

        QoS 0 returns None once the bytes are sent.
        """
        data = payload.encode() if isinstance(payload, str) else payload
        if qos == 0:
            await self.send_raw(
                encode_publish(topic, data, 0, retain, False, None, properties, self.protocol)
            )
            return None
        pid = packet_id or self._alloc_pid()
        if qos == 1:
            key: tuple[type[Any], int] = (Puback, pid)
            self._waiters[key] = trio.Event()
            await self.send_raw(
                encode_publish(topic, data, 1, retain, dup, pid, properties, self.protocol)
            )
            return await self._wait_reply(key, timeout)
        key = (Pubrec, pid)
        self._waiters[key] = trio.Event()
        await self.send_raw(
            encode_publish(topic, data, 2, retain, dup, pid, properties, self.protocol)
        )
        rec = await self._wait_reply(key, timeout)
        assert isinstance(rec, Pubrec)
        if rec.reason_code >= 0x80:
            return rec
        return await self.release(pid, timeout=timeout)

    async def release(self, packet_id: int, *, timeout: float = DEFAULT_TIMEOUT) -> Packet:
        """Send PUBREL for ``packet_id`` and wait for PUBCOMP (QoS 2 step 2)."""
        key = (Pubcomp, packet_id)
        self._waiters[key] = trio.Event()
        await self.send_raw(encode_pubrel(packet_id, self.protocol))
        return await self._wait_reply(key, timeout)

    async def subscribe(
        self,
        topics: str | Sequence[tuple[str, int] | Subscription] | Subscription,
        qos: int = 0,
        properties: dict[str, Any] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> list[int]:
        """Subscribe and return the SUBACK reason codes (also in :attr:`last_suback`).

        ``topics`` is a filter (subscribed at ``qos``), a list of ``(filter, qos)`` tuples, or
        :class:`plugin_host.mqtt.Subscription` objects (MQTT 5 options).
        """
        if isinstance(topics, str):
            subs = [Subscription(topics, qos)]
        elif isinstance(topics, Subscription):
            subs = [topics]
        else:
            subs = [t if isinstance(t, Subscription) else Subscription(t[0], t[1]) for t in topics]
        pid = self._alloc_pid()
        key = (Suback, pid)
        self._waiters[key] = trio.Event()
        await self.send_packet(Subscribe(pid, subs, dict(properties or {})))
        ack = await self._wait_reply(key, timeout)
        assert isinstance(ack, Suback)
        self.last_suback = ack
        return list(ack.reason_codes)

    async def unsubscribe(
        self,
        topics: str | Iterable[str],
        properties: dict[str, Any] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Unsuback:
        """Unsubscribe and return the UNSUBACK."""
        filters = [topics] if isinstance(topics, str) else list(topics)
        pid = self._alloc_pid()
        key = (Unsuback, pid)
        self._waiters[key] = trio.Event()
        await self.send_packet(Unsubscribe(pid, filters, dict(properties or {})))
        ack = await self._wait_reply(key, timeout)
        assert isinstance(ack, Unsuback)
        return ack

    async def ping(self) -> None:
        """Send PINGREQ (without waiting)."""
        async with self._send_lock:
            self._pings += 1
            await self.stream.send_all(PINGREQ_BYTES)
            self._last_send = trio.current_time()

    async def sync(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """PINGREQ and wait for its PINGRESP: everything the broker queued to this client
        before answering has then arrived (a barrier for tests, no sleeping)."""
        await self.ping()
        wanted = self._pings
        try:
            with trio.fail_after(timeout):
                while self._pongs < wanted:
                    if self.closed.is_set():
                        raise ConnectionError("connection closed")
                    self._pong = trio.Event()
                    await self._pong.wait()
        except trio.TooSlowError:
            raise TimeoutError("no PINGRESP") from None

    async def ack(self, message: Publish) -> None:
        """Acknowledge a message received with ``auto_ack=False`` (PUBACK or PUBREC)."""
        if message.packet_id is None:
            return
        if message.qos == 1:
            await self.send_raw(encode_puback(message.packet_id, self.protocol))
        elif message.qos == 2:
            await self.send_raw(encode_pubrec(message.packet_id, self.protocol))

    async def disconnect(
        self, reason_code: int = 0, properties: dict[str, Any] | None = None
    ) -> None:
        """Send DISCONNECT and close the connection."""
        if not self.closed.is_set():
            with suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await self.send_packet(Disconnect(reason_code, dict(properties or {})))
        await self.close()

    async def close(self) -> None:
        """Close the socket without DISCONNECT (an abnormal disconnect for the broker)."""
        self.closed.set()
        await trio.aclose_forcefully(self.stream)

    # ------------------------------------------------------------------------------ receiving

    async def receive(self, timeout: float = DEFAULT_TIMEOUT) -> Publish:
        """The next application message (PUBLISH) from the broker."""
        try:
            with trio.fail_after(timeout):
                return await self._messages.receive()
        except trio.TooSlowError:
            raise TimeoutError("no message received") from None
        except trio.EndOfChannel:
            raise ConnectionError("connection closed") from None

    async def receive_many(self, count: int, timeout: float = DEFAULT_TIMEOUT) -> list[Publish]:
        """The next ``count`` messages (one overall timeout)."""
        out: list[Publish] = []
        try:
            with trio.fail_after(timeout):
                while len(out) < count:
                    out.append(await self._messages.receive())
        except trio.TooSlowError:
            raise TimeoutError(f"received {len(out)} of {count} messages") from None
        except trio.EndOfChannel:
            raise ConnectionError(f"closed after {len(out)} of {count} messages") from None
        return out

    def pending_messages(self) -> list[Publish]:
        """Messages already received and not yet taken (does not wait)."""
        out = []
        while True:
            try:
                out.append(self._messages.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return out

    async def receive_packet(
        self, packet_type: type[Any] | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> Packet:
        """The next non-PUBLISH packet not claimed by a waiting call (optionally of a type).

        PUBLISH packets go to :meth:`receive`; acks of calls in progress go to those calls.
        """
        try:
            with trio.fail_after(timeout):
                while True:
                    for i, packet in enumerate(self._packets):
                        if packet_type is None or isinstance(packet, packet_type):
                            del self._packets[i]
                            return packet
                    if self.closed.is_set():
                        raise ConnectionError("connection closed")
                    self._packet_event = trio.Event()
                    await self._packet_event.wait()
        except trio.TooSlowError:
            name = packet_type.__name__ if packet_type else "packet"
            raise TimeoutError(f"no {name} received") from None

    async def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Wait until the broker closes the connection."""
        try:
            with trio.fail_after(timeout):
                await self.closed.wait()
        except trio.TooSlowError:
            raise TimeoutError("connection still open") from None

    async def _reader(self) -> None:
        try:
            while True:
                data = await self.stream.receive_some(65536)
                if not data:
                    break
                for packet in self.parser.feed(data):
                    await self._dispatch(packet)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, MQTTError):
            pass
        finally:
            self.closed.set()
            self._messages_send.close()
            for event in list(self._waiters.values()):
                event.set()
            self._packet_event.set()
            self._pong.set()

    async def _dispatch(self, packet: Packet) -> None:
        t = type(packet)
        if t is Publish:
            assert isinstance(packet, Publish)
            await self._on_publish(packet)
            return
        if t is Pubrel:
            assert isinstance(packet, Pubrel)
            self.session.qos2_received.discard(packet.packet_id)
            if self.auto_ack:
                await self.send_raw(encode_pubcomp(packet.packet_id, self.protocol))
                return
        pid = getattr(packet, "packet_id", None)
        if pid is not None and (t, pid) in self._waiters:
            self._replies[(t, pid)] = packet
            self._waiters[(t, pid)].set()
            return
        if t is Disconnect:
            assert isinstance(packet, Disconnect)
            self.server_disconnect = packet
        if t is Pingresp:
            self._pongs += 1
            self._pong.set()
            return
        self._packets.append(packet)
        self._packet_event.set()

    async def _on_publish(self, packet: Publish) -> None:
        props = packet.properties
        if props and "topic_alias" in props:
            alias = props["topic_alias"]
            if packet.topic:
                self.topic_aliases[alias] = packet.topic
            else:
                packet.topic = self.topic_aliases.get(alias, "")
        pid = packet.packet_id
        # Hand the message to the application before acknowledging it: once the broker has
        # the ack, the message is the client's responsibility.
        duplicate = False
        if packet.qos == 2 and pid is not None:
            duplicate = pid in self.session.qos2_received
            self.session.qos2_received.add(pid)
        if not duplicate:
            self.received_count += 1
            self._messages_send.send_nowait(packet)
        if self.auto_ack and pid is not None:
            if packet.qos == 2:
                await self.send_raw(encode_pubrec(pid, self.protocol))
            elif packet.qos == 1:
                await self.send_raw(encode_puback(pid, self.protocol))

    async def _pinger(self) -> None:
        if not self.keepalive:
            return
        interval = self.keepalive * 0.5
        while not self.closed.is_set():
            await trio.sleep(interval)
            if trio.current_time() - self._last_send >= interval:
                try:
                    await self.ping()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    return


@asynccontextmanager
async def open_client(
    address: tuple[str, int],
    *,
    client_id: str = "",
    protocol: int = 4,
    clean_start: bool = True,
    keepalive: int = 60,
    username: str | None = None,
    password: bytes | None = None,
    will: Will | None = None,
    properties: dict[str, Any] | None = None,
    auto_ack: bool = True,
    auto_ping: bool = True,
    session: ClientSession | None = None,
    check_connack: bool = True,
    wait_connack: bool = True,
    max_packet_size: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    stream: trio.abc.Stream | None = None,
) -> AsyncIterator[MQTTClient]:
    """Connect to ``address`` and yield a connected :class:`MQTTClient`.

    ``check_connack=True`` raises :class:`ConnectionRefused` unless CONNACK says success;
    with ``False`` inspect ``client.connack`` yourself (``None`` if the broker closed first).
    ``wait_connack=False`` yields right after sending CONNECT (an MQTT 5 AUTH exchange: read
    AUTH with ``receive_packet(Auth)``, answer with ``send_packet``, then
    ``receive_packet(Connack)``).
    The connection is closed (without DISCONNECT) when the block exits; call
    :meth:`MQTTClient.disconnect` for a normal disconnect.

    ``ssl_context``: connect with TLS (``server_hostname`` defaults to the address's host).
    ``stream``: speak MQTT over an already open stream instead of connecting to ``address``
    (after a PROXY header, over a WebSocket adapter ...).
    """
    if stream is None:
        stream = await trio.open_tcp_stream(*address)
        if ssl_context is not None:
            stream = trio.SSLStream(
                stream,
                ssl_context,
                server_hostname=server_hostname or address[0],
                https_compatible=True,
            )
    client = MQTTClient(
        stream, protocol, auto_ack=auto_ack, session=session, max_packet_size=max_packet_size
    )
    client.keepalive = keepalive if auto_ping else 0
    name = "MQIsdp" if protocol == 3 else "MQTT"
    connect = Connect(
        protocol_name=name,
        protocol_level=protocol,
        client_id=client_id,
        clean_start=clean_start,
        keepalive=keepalive,
        username=username,
        password=password,
        will=will,
        properties=dict(properties or {}),
    )
    refused: ConnectionRefused | None = None
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            await client.send_packet(connect)
            nursery.start_soon(client._reader)
            if wait_connack:
                try:
                    packet: Packet | None = await client.receive_packet(Connack, timeout=timeout)
                except ConnectionError:
                    packet = None
                client.connack = packet if isinstance(packet, Connack) else None
                if check_connack and (client.connack is None or client.connack.reason_code != 0):
                    refused = ConnectionRefused(client.connack)
            if refused is None:
                if client.connack is not None and client.v5:
                    ka = client.connack.properties.get("server_keep_alive")
                    if ka is not None and auto_ping:
                        client.keepalive = ka
                nursery.start_soon(client._pinger)
                try:
                    yield client
                except BaseException as exc:
                    body_error = exc
                    raise
                finally:
                    nursery.cancel_scope.cancel()
            else:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Give the test its own exception, not a group made by the client's nursery.
        if body_error is not None and list(group.exceptions) == [body_error]:
            raise body_error from None
        raise
    finally:
        await trio.aclose_forcefully(stream)
    if refused is not None:
        raise refused
