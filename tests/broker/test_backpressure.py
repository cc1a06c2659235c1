"""QoS 0 floods and backpressure: publishers wait for a subscriber that keeps up, so it loses
nothing; a subscriber that stopped reading gets its QoS 0 dropped (counted) and publishers go
on; the broker's buffer for it stays bounded."""

from __future__ import annotations

import socket

import trio

from plugin_host.broker.connection import BACKPRESSURE_TIMEOUT
from plugin_host.mqtt import (
    Connack,
    Connect,
    Parser,
    Publish,
    Suback,
    Subscribe,
    Subscription,
    encode,
    encode_publish,
)
from plugin_host.testing import open_client, run_broker

#: Small buffers so that a flood fills them at once (high-water mark: a quarter of it).
MAX_BUFFER = 64 * 1024
PUBLISHERS = 4
BATCH = 100


def flood_batches(topic: str, count: int, size: int) -> list[bytes]:
    """``count`` QoS 0 PUBLISH packets in batches of BATCH (one send_all each)."""
    packet = encode_publish(topic, b"x" * size, 0, False, False, None, None, 4)
    return [packet * min(BATCH, count - i) for i in range(0, count, BATCH)]


async def flood(address: tuple[str, int], client_id: str, topic: str, count: int, size: int):
    async with open_client(address, client_id=client_id) as client:
        for batch in flood_batches(topic, count, size):
            await client.send_raw(batch)
        # a QoS 1 round trip: everything before it was read and routed by the broker
        await client.publish(topic + "/end", b"", qos=1, timeout=30)


class RawSubscriber:
    """A subscriber on a bare socket: reads only when told to (or never)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.parser = Parser(server_side=False, protocol_level=4)
        self.received = 0

    @classmethod
    async def connect(
        cls, address: tuple[str, int], client_id: str, topic_filter: str, rcvbuf: int = 0
    ) -> RawSubscriber:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        if rcvbuf:
            # before connecting: the TCP window stays small, so the broker's writer blocks
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect(address)
        sub = cls(trio.SocketStream(sock))
        await sub.stream.send_all(encode(Connect(client_id=client_id), 4))
        await sub.stream.send_all(encode(Subscribe(1, [Subscription(topic_filter, 0)]), 4))
        acks = 0
        while acks < 2:
            for packet in await sub.read():
                assert isinstance(packet, Connack | Suback)
                acks += 1
        return sub

    async def read(self) -> list:
        data = await self.stream.receive_some(65536)
        assert data, "the broker closed the subscriber's connection"
        return self.parser.feed(data)

    async def read_until(self, count: int) -> None:
        while self.received < count:
            self.received += sum(isinstance(p, Publish) for p in await self.read())


async def test_a_subscriber_that_keeps_up_gets_every_message_of_a_flood():
    per_publisher = 5000
    total = PUBLISHERS * per_publisher
    async with run_broker(max_outgoing_buffer=MAX_BUFFER) as broker:
        sub = await RawSubscriber.connect(broker.address, "sub", "flood/#")
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sub.read_until, total + PUBLISHERS)  # + the QoS 1 markers
                for i in range(PUBLISHERS):
                    nursery.start_soon(
                        flood, broker.address, f"pub{i}", f"flood/{i}", per_publisher, 200
                    )
        assert sub.received == total + PUBLISHERS
        assert broker.broker.counters.dropped.get("buffer_full", 0) == 0
        await sub.stream.aclose()


async def test_a_stopped_subscriber_loses_qos0_and_publishers_go_on():
    per_publisher = 8000  # 4 x 8000 x ~1 KiB: far more than the socket buffers hold
    async with run_broker(max_outgoing_buffer=MAX_BUFFER) as broker:
        sub = await RawSubscriber.connect(broker.address, "stopped", "flood/#", rcvbuf=4096)
        conn = broker.broker.sessions[("", "stopped")].conn
        assert conn is not None
        started = trio.current_time()
        # it never reads again; the publishers must still finish (one bounded wait at most
        # per publisher, then the subscriber is known to be stuck)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(PUBLISHERS):
                    nursery.start_soon(
                        flood, broker.address, f"pub{i}", f"flood/{i}", per_publisher, 1000
                    )
        elapsed = trio.current_time() - started
        dropped = broker.broker.counters.dropped.get("buffer_full", 0)
        assert dropped > 0
        assert conn.stuck
        # memory stays bounded: what waits for the stopped client is at most the limit
        assert len(conn.out) <= MAX_BUFFER + 2048
        assert elapsed < 30
        # another subscriber, reading normally, is not held up by the stuck one
        other = await RawSubscriber.connect(broker.address, "other", "flood/#")
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(other.read_until, 1000 + 1)
                nursery.start_soon(flood, broker.address, "late", "flood/late", 1000, 100)
        assert other.received == 1001
        await other.stream.aclose()
        await sub.stream.aclose()


async def test_the_stuck_mark_clears_when_the_subscriber_reads_again():
    async with run_broker(max_outgoing_buffer=MAX_BUFFER) as broker:
        sub = await RawSubscriber.connect(broker.address, "slow", "flood/#", rcvbuf=4096)
        conn = broker.broker.sessions[("", "slow")].conn
        assert conn is not None
        with trio.fail_after(60):
            await flood(broker.address, "pub", "flood/a", 8000, 1000)
        assert conn.stuck
        # the client reads again: its writer drains, and the mark goes
        with trio.fail_after(30):
            while conn.stuck:
                await sub.read()
        assert conn.drained is None
        assert BACKPRESSURE_TIMEOUT <= 1.0  # "short": a stopped client holds publishers briefly
        await sub.stream.aclose()
