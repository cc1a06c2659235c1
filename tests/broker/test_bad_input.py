"""Bad input and slow clients: one client's fault never disturbs the others."""

from __future__ import annotations

import contextlib
import random

import pytest
import trio
from structlog.testing import capture_logs

from plugin_host.mqtt import Subscription
from plugin_host.testing import open_client, run_broker

# (name, bytes sent after a successful CONNECT, v5 reason code expected)
MALFORMED_AFTER_CONNECT = [
    ("publish topic not utf-8", b"\x30\x05\x00\x02\xff\xfeX", 0x81),
    ("publish qos 3", b"\x36\x05\x00\x01tX\x00", 0x81),
    ("remaining length 5 bytes", b"\x30\xff\xff\xff\xff\x01", 0x81),
    ("subscribe bad flags", b"\x80\x06\x00\x01\x00\x01t\x00", 0x81),
    ("pubrel bad flags", b"\x60\x02\x00\x01", 0x81),
    ("reserved packet type 0", b"\x00\x00", 0x81),
    ("packet id 0", b"\x32\x06\x00\x01t\x00\x00\x00", 0x82),
    ("wildcard in topic name", b"\x30\x05\x00\x01#\x00X", 0x90),
]


@pytest.mark.parametrize(
    ("name", "data", "code"), MALFORMED_AFTER_CONNECT, ids=[m[0] for m in MALFORMED_AFTER_CONNECT]
)
async def test_malformed_packet_v5_gets_disconnect_with_reason(mqtt_broker, name, data, code):
    async with (
        open_client(mqtt_broker.address, client_id="good", protocol=5) as good,
        open_client(mqtt_broker.address, client_id="bad", protocol=5) as bad,
    ):
        await good.subscribe("t", qos=1)
        with capture_logs() as logs:
            await bad.send_raw(data)
            await bad.wait_closed()
        assert bad.server_disconnect is not None
        assert bad.server_disconnect.reason_code == code
        errors = [e for e in logs if e["event"] == "protocol_error"]
        assert len(errors) == 1
        assert errors[0]["client_id"] == "bad" and errors[0]["peer"]
        # The other client is untouched.
        await good.publish("t", b"still here", qos=1)
        assert (await good.receive()).payload == b"still here"


async def test_malformed_packet_v311_just_closes(mqtt_broker):
    async with (
        open_client(mqtt_broker.address, client_id="good") as good,
        open_client(mqtt_broker.address, client_id="bad") as bad,
    ):
        await bad.send_raw(b"\x30\x05\x00\x02\xff\xfeX")
        await bad.wait_closed()
        assert bad.server_disconnect is None
        await good.publish("x", b"1", qos=1)


async def test_malformed_connect(mqtt_broker, read_until_closed):
    stream = await trio.open_tcp_stream(*mqtt_broker.address)
    async with stream:
        # v5 CONNECT with a property not allowed in CONNECT (topic alias, id 35).
        body = b"\x00\x04MQTT\x05\x02\x00\x3c\x03\x23\x00\x01\x00\x01c"
        await stream.send_all(bytes((0x10, len(body))) + body)
        data = await read_until_closed(stream)
    assert data[:1] == b"\x20" and data[3] == 0x81  # CONNACK malformed packet


async def test_shared_subscription_with_no_local_is_a_protocol_error(mqtt_broker):
    async with open_client(mqtt_broker.address, client_id="c", protocol=5) as c:
        await c.send_packet(
            __import__("plugin_host.mqtt", fromlist=["Subscribe"]).Subscribe(
                1, [Subscription("$share/g/t", 1, no_local=True)]
            )
        )
        await c.wait_closed()
        assert c.server_disconnect.reason_code == 0x82


async def test_garbage_from_many_sockets_leaves_broker_healthy(mqtt_broker, read_until_closed):
    rng = random.Random(1234)
    async with open_client(mqtt_broker.address, client_id="good", protocol=5) as good:
        await good.subscribe("t", qos=1)

        async def garbage(seed: int) -> None:
            r = random.Random(seed)
            stream = await trio.open_tcp_stream(*mqtt_broker.address)
            async with stream:
                try:
                    await stream.send_all(
                        bytes(r.randrange(256) for _ in range(r.randrange(1, 300)))
                    )
                    await read_until_closed(stream)
                except trio.BrokenResourceError:
                    pass

        async def garbage_after_connect(seed: int) -> None:
            r = random.Random(seed)
            async with open_client(
                mqtt_broker.address, client_id=f"g{seed}", protocol=r.choice([4, 5])
            ) as c:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await c.send_raw(bytes(r.randrange(256) for _ in range(r.randrange(1, 300))))
                # Garbage may also look like the start of a long packet: the broker then
                # (rightly) waits for the rest; the client gives up and closes.
                with trio.move_on_after(0.5):
                    await c.wait_closed()

        async with trio.open_nursery() as nursery:
            for _ in range(30):
                nursery.start_soon(garbage, rng.randrange(1 << 30))
                nursery.start_soon(garbage_after_connect, rng.randrange(1 << 30))
        await good.publish("t", b"alive", qos=1)
        assert (await good.receive()).payload == b"alive"


async def test_slow_reader_qos0_dropped_and_memory_bounded():
    limit = 256 * 1024
    async with (
        run_broker(max_outgoing_buffer=limit) as broker,
        open_client(broker.address, client_id="fast") as fast,
        open_client(broker.address, client_id="pub") as pub,
    ):
        # A subscriber that never reads its socket.
        stream = await trio.open_tcp_stream(*broker.address)
        async with stream:
            from plugin_host.mqtt import Connect, Subscribe, encode

            await stream.send_all(encode(Connect(client_id="stuck"), 4))
            await stream.send_all(encode(Subscribe(1, [Subscription("big", 0)]), 4))
            await fast.subscribe("big", qos=0)
            await fast.subscribe("end", qos=1)
            stuck = next(c for c in broker.broker.connections if c.client_id == "stuck")
            with trio.fail_after(5):
                while not stuck.session or "big" not in stuck.session.subscriptions:
                    await pub.sync()
            payload = b"x" * 32 * 1024
            for i in range(800):  # 25 MiB, far beyond kernel buffers
                await pub.publish("big", payload)
                if i % 50 == 0:
                    await pub.sync()
                    assert len(stuck.out) <= limit + len(payload) + 64
                    # The fast subscriber keeps up (drain what it got).
                    fast.pending_messages()
            await pub.publish("end", b"", qos=1)
            with trio.fail_after(20):
                while True:
                    m = await fast.receive()
                    if m.topic == "end":
                        break
            assert broker.broker.counters.dropped["buffer_full"] > 0
            assert len(stuck.out) <= limit + len(payload) + 64


async def test_slow_reader_qos1_stays_queued_in_session():
    limit = 64 * 1024
    async with (
        run_broker(max_outgoing_buffer=limit, max_online_messages=50) as broker,
        open_client(broker.address, client_id="pub") as pub,
    ):
        stream = await trio.open_tcp_stream(*broker.address)
        async with stream:
            from plugin_host.mqtt import Connect, Subscribe, encode

            await stream.send_all(encode(Connect(client_id="stuck"), 4))
            await stream.send_all(encode(Subscribe(1, [Subscription("q", 1)]), 4))
            stuck = next(c for c in broker.broker.connections if c.client_id == "stuck")
            with trio.fail_after(5):
                while not stuck.session or "q" not in stuck.session.subscriptions:
                    await pub.sync()
            payload = b"y" * 16 * 1024
            for _ in range(600):
                await pub.publish("q", payload, qos=1)
            session = stuck.session
            assert len(session.inflight) <= broker.config.broker.max_inflight_messages
            assert len(session.queue) <= 50
            assert len(stuck.out) <= limit + len(payload) + 64
            assert broker.broker.counters.dropped.get("buffer_full", 0) == 0
