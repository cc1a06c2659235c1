"""The load generator's MQTT clients: trio tasks built for throughput, not generality.

Publishers send pre-encoded batches with one ``send_all`` each; subscribers whose packets have
a known size count them without parsing (``wire.FixedRecords``); only the latency subscriber
parses frames. ``Flow`` couples publishers to subscribers for lossless end-to-end flow control.
"""

from __future__ import annotations

import contextlib
import struct
import time
from typing import Protocol

import trio
import wire


class Endpoint(Protocol):
    """Where and as whom clients connect (``loadgen.LoadOptions`` is one)."""

    host: str
    port: int
    username: str | None
    password: str | None


async def sleep_until_monotonic(t: float) -> None:
    """Sleep until ``time.monotonic() >= t`` (the clock every process shares; trio's is not)."""
    await trio.sleep(max(0.0, t - time.monotonic()))


class Client:
    """One connected MQTT client: its stream and the frame reader used during handshakes."""

    def __init__(self, stream: trio.SocketStream, client_id: str) -> None:
        self.stream = stream
        self.client_id = client_id
        self.reader = wire.FrameReader()

    async def read_frame(self) -> tuple[int, bytes]:
        while True:
            frames = self.reader.feed(b"")
            if not frames:
                data = await self.stream.receive_some(65536)
                if not data:
                    raise wire.ProtocolMismatch(f"{self.client_id}: broker closed the connection")
                frames = self.reader.feed(data)
            if frames:
                if len(frames) > 1:
                    raise wire.ProtocolMismatch(
                        f"{self.client_id}: unexpected packet 0x{frames[1][0]:02x} in handshake"
                    )
                return frames[0]

    def leftover(self) -> bytes:
        """Bytes received past the last handshake packet (start of the counted stream)."""
        data = bytes(self.reader._buf)
        self.reader = wire.FrameReader()
        return data

    async def subscribe(self, topic_filter: str, qos: int) -> None:
        await self.stream.send_all(wire.subscribe(1, topic_filter, qos))
        first, body = await self.read_frame()
        if first != wire.SUBACK or body[:2] != b"\x00\x01":
            raise wire.ProtocolMismatch(f"{self.client_id}: expected SUBACK, got 0x{first:02x}")
        if body[2] > 2:
            raise wire.ProtocolMismatch(
                f"{self.client_id}: subscription to {topic_filter!r} refused (0x{body[2]:02x})"
            )

    async def disconnect(self) -> None:
        """Send DISCONNECT (so the broker sees a clean close) and close the socket."""
        with trio.move_on_after(2):
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self.stream.send_all(wire.DISCONNECT_PACKET)
        await self.stream.aclose()


async def open_client(
    opts: Endpoint, client_id: str, *, clean_session: bool = True, keepalive: int = 600
) -> Client:
    """TCP connect, CONNECT, and wait for a successful CONNACK."""
    # a bare socket connect: trio.open_tcp_stream's happy-eyeballs machinery would cost the
    # connection storm more CPU than some brokers spend accepting
    sock = trio.socket.socket(trio.socket.AF_INET6 if ":" in opts.host else trio.socket.AF_INET)
    try:
        await sock.connect((opts.host, opts.port))
    except BaseException:
        sock.close()
        raise
    stream = trio.SocketStream(sock)
    client = Client(stream, client_id)
    try:
        await stream.send_all(
            wire.connect(
                client_id,
                clean_session=clean_session,
                keepalive=keepalive,
                username=opts.username,
                password=opts.password,
            )
        )
        first, body = await client.read_frame()
        if first != wire.CONNACK or len(body) != 2:
            raise wire.ProtocolMismatch(f"{client_id}: expected CONNACK, got 0x{first:02x}")
        if body[1] != 0:
            raise wire.ProtocolMismatch(f"{client_id}: connection refused, return code {body[1]}")
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return client


class Stopper:
    """Cooperative stop for publishers: a batch is never cut in half (the broker would log it)."""

    def __init__(self) -> None:
        self.stopping = False


class Flow:
    """End-to-end flow control: messages published but not yet received by the subscribers.

    Without it, publishers outrun any broker that reads faster than it delivers: QoS 0 piles up
    in the broker (or is dropped), and a QoS 1 PUBACK only means "queued", so publishers run
    ahead until the broker's queue limit (1000 in mosquitto and VerneMQ-like brokers) drops
    messages. Either way the figure would describe overload, not throughput. Publishers
    therefore wait while more than ``limit`` deliveries are pending, which measures the
    sustainable, lossless end-to-end rate (``fanin-qos0-flood`` measures overload instead).
    """

    def __init__(self, limit: int, fanout: int) -> None:
        self.limit = limit
        self.fanout = fanout  # deliveries per published message
        self.sent = 0  # messages published
        self.received = 0  # deliveries counted by the subscribers
        self.written_off = 0  # deliveries given up on (the broker dropped them)
        self.need = 0  # room the waiting publishers need (deliveries of one batch)
        self._event = trio.Event()
        self._waiting = False
        self.waits = 0
        self.write_offs = 0

    def pending(self) -> int:
        return self.sent * self.fanout - self.received - self.written_off

    def has_room(self, messages: int) -> bool:
        return self.pending() + messages * self.fanout <= self.limit

    def progressed(self, deliveries: int) -> None:
        """Subscribers call this per chunk: wake publishers once a batch fits again."""
        self.received += deliveries
        if self._waiting and self.pending() + self.need <= self.limit:
            self._waiting = False
            self._event.set()
            self._event = trio.Event()

    async def wait(self, messages: int) -> None:
        """Wait for room for ``messages``; after 1 s without it, write the pending off.

        A broker that drops messages (mosquitto does under load at its defaults, even at QoS 1)
        would otherwise leave the publishers waiting forever; the loss is still reported.
        """
        self.need = messages * self.fanout
        self._waiting = True
        self.waits += 1
        with trio.move_on_after(1.0) as scope:
            await self._event.wait()
        if scope.cancelled_caught:
            self.write_offs += 1
            self.written_off += max(0, self.pending())


class FloodPublisher:
    """QoS 0: the same pre-encoded batch, ``send_all`` after ``send_all``.

    With a ``Flow`` it waits while too many deliveries are pending (capacity, not overload);
    without one it floods, and TCP back-pressure (if the broker applies it) paces it.
    """

    def __init__(
        self, client: Client, topic: str, payload: bytes, batch: int, flow: Flow | None
    ) -> None:
        self.client = client
        self.batch_bytes = wire.publish(topic, payload) * batch
        self.batch = batch
        self.flow = flow
        self.sent = 0

    def counters(self) -> dict[str, int]:
        return {"sent": self.sent}

    async def run(self, stop: Stopper) -> None:
        send_all = self.client.stream.send_all
        data, n, flow = self.batch_bytes, self.batch, self.flow
        while not stop.stopping:
            if flow is not None:
                if not flow.has_room(n):
                    await flow.wait(n)
                    continue
                flow.sent += n
            self.sent += n
            await send_all(data)


class WindowPublisher:
    """QoS 1 with at most ``window`` PUBACKs outstanding, in pre-encoded half-window batches."""

    def __init__(
        self, client: Client, topic: str, payload: bytes, window: int, flow: Flow | None
    ) -> None:
        self.client = client
        self.batch = max(1, window // 2)
        self.window = window
        self.flow = flow
        # ids cycle over many more than the window so an id in flight is never reused
        self.batches, _ = wire.qos1_batches(topic, payload, batch=self.batch, ids=20 * window)
        self.sent = 0
        self.acked = 0
        self._acks_wanted: trio.Event | None = None

    def counters(self) -> dict[str, int]:
        return {"sent": self.sent, "acked": self.acked}

    async def _read_acks(self) -> None:
        records = wire.FixedRecords(4, b"\x40")
        records.feed(self.client.leftover())
        self.acked = records.count
        receive = self.client.stream.receive_some
        while True:
            data = await receive(65536)
            if not data:
                raise wire.ProtocolMismatch(
                    f"{self.client.client_id}: broker closed the connection"
                )
            self.acked += records.feed(data)
            wanted = self._acks_wanted
            if wanted is not None and self.sent - self.acked + self.batch <= self.window:
                self._acks_wanted = None
                wanted.set()

    async def _wait_acks(self) -> None:
        self._acks_wanted = event = trio.Event()
        await event.wait()

    async def run(self, stop: Stopper) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read_acks)
            send_all = self.client.stream.send_all
            batches, n = self.batches, self.batch
            flow, window = self.flow, self.window
            i = 0
            while not stop.stopping:
                if self.sent - self.acked + n > window:
                    await self._wait_acks()
                    continue
                if flow is not None:
                    if not flow.has_room(n):
                        await flow.wait(n)
                        continue
                    flow.sent += n
                self.sent += n
                await send_all(batches[i])
                i = (i + 1) % len(batches)
            # keep reading PUBACKs for what is still outstanding, then stop
            with trio.move_on_after(5):
                while self.acked < self.sent:
                    self._acks_wanted = event = trio.Event()
                    if self.acked < self.sent:
                        await event.wait()
            nursery.cancel_scope.cancel()


class PacedPublisher:
    """QoS 0 at a steady rate; the payload carries the send time (monotonic ns) and a sequence."""

    def __init__(self, client: Client, topic: str, payload_size: int, rate: float) -> None:
        self.client = client
        self.topic = topic
        self.pad = b"\x00" * max(0, payload_size - 16)
        self.interval = 1.0 / rate
        self.sent = 0

    def counters(self) -> dict[str, int]:
        return {"sent": self.sent}

    async def run(self, stop: Stopper) -> None:
        header = wire.publish(self.topic, b"\x00" * (16 + len(self.pad)))
        header = header[: len(header) - 16 - len(self.pad)]
        send_all = self.client.stream.send_all
        pack = struct.Struct("!QQ").pack
        next_t = time.monotonic()
        while not stop.stopping:
            if time.monotonic() < next_t:
                await sleep_until_monotonic(next_t)
            await send_all(header + pack(time.monotonic_ns(), self.sent) + self.pad)
            self.sent += 1
            next_t += self.interval


class CountingSubscriber:
    """Counts fixed-size PUBLISH packets; at QoS 1 it acknowledges each one."""

    def __init__(
        self, client: Client, topic: str, payload_size: int, qos: int, flow: Flow | None = None
    ) -> None:
        self.client = client
        self.qos = qos
        self.flow = flow
        size = wire.publish_size(topic, payload_size, qos)
        if qos:
            self.records = wire.FixedRecords(
                size, b"\x32\x3a", wire.publish_packet_id_offset(topic, payload_size)
            )
        else:
            self.records = wire.FixedRecords(size, b"\x30\x38")

    @property
    def received(self) -> int:
        return self.records.count

    def counters(self) -> dict[str, int]:
        return {"received": self.records.count}

    async def run(self) -> None:
        stream = self.client.stream
        records = self.records
        first = self.client.leftover()
        progressed = self.flow.progressed if self.flow else lambda n: None
        if self.qos:
            acks = records.feed_acks(first)
            if acks:
                progressed(len(acks) >> 2)
                await stream.send_all(acks)
            while True:
                data = await stream.receive_some(262144)
                if not data:
                    raise wire.ProtocolMismatch(
                        f"{self.client.client_id}: broker closed the connection"
                    )
                acks = records.feed_acks(data)
                if acks:
                    progressed(len(acks) >> 2)
                    await stream.send_all(acks)
        else:
            progressed(records.feed(first))
            feed = records.feed
            while True:
                data = await stream.receive_some(262144)
                if not data:
                    raise wire.ProtocolMismatch(
                        f"{self.client.client_id}: broker closed the connection"
                    )
                n = feed(data)
                if n:
                    progressed(n)


class LatencySubscriber:
    """Parses every packet and records the latency of messages sent inside the window.

    At 1000 msg/s speed does not matter, so this one parses with the project's own sans-IO
    codec (``plugin_host.mqtt.Parser``), which also cross-checks it against every broker.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self.received = 0
        self.window = (0, 0)  # monotonic ns: only messages sent inside it are sampled
        self.samples: list[int] = []

    def counters(self) -> dict[str, int]:
        return {"received": self.received}

    async def run(self) -> None:
        from plugin_host.mqtt import MQTT_3_1_1, MQTTError, Parser, Publish

        parser = Parser(server_side=False, protocol_level=MQTT_3_1_1)
        stream = self.client.stream
        unpack = struct.Struct("!Q").unpack_from
        data = self.client.leftover()
        while True:
            if data:
                now = time.monotonic_ns()
                lo, hi = self.window
                try:
                    packets = parser.feed(data)
                except MQTTError as exc:
                    raise wire.ProtocolMismatch(f"plugin_host.mqtt.Parser: {exc!r}") from exc
                for packet in packets:
                    if not isinstance(packet, Publish):
                        raise wire.ProtocolMismatch(f"unexpected {type(packet).__name__}")
                    (sent_ns,) = unpack(packet.payload)
                    self.received += 1
                    if lo <= sent_ns < hi:
                        self.samples.append(now - sent_ns)
            data = await stream.receive_some(65536)
            if not data:
                raise wire.ProtocolMismatch(
                    f"{self.client.client_id}: broker closed the connection"
                )
