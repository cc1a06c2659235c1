"""CONNECT handling: versions, client ids, keepalive, takeover, listeners, limits."""

from __future__ import annotations

import paho.mqtt.client as mqtt
import pytest
import trio

from plugin_host.mqtt import Connack, Connect, Disconnect, Will, encode
from plugin_host.settings import ListenerConfig
from plugin_host.testing import ConnectionRefused, open_client, run_broker


@pytest.mark.parametrize("protocol", [3, 4, 5])
async def test_connect_each_protocol_version(mqtt_broker, protocol):
    async with open_client(mqtt_broker.address, client_id="c1", protocol=protocol) as c:
        assert c.connack.reason_code == 0
        assert c.connack.session_present is False


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5])
async def test_paho_connects(mqtt_broker, paho_clients, protocol):
    client = paho_clients(mqtt_broker.address, "paho1", protocol=protocol)
    await client.connect()
    flags, rc, _ = client.connack
    assert rc == 0
    assert flags.session_present is False
    await client.disconnect()


async def test_v5_empty_client_id_gets_assigned_id(mqtt_broker):
    async with open_client(mqtt_broker.address, client_id="", protocol=5) as c:
        assigned = c.connack.properties["assigned_client_identifier"]
        assert assigned
        assert mqtt_broker.host.session(assigned) is not None


async def test_v311_empty_client_id_clean_session_is_accepted(mqtt_broker):
    async with open_client(mqtt_broker.address, client_id="", protocol=4) as c:
        assert c.connack.reason_code == 0
        assert "assigned_client_identifier" not in c.connack.properties


@pytest.mark.parametrize(("protocol", "clean"), [(4, False), (3, True), (3, False)])
async def test_empty_client_id_rejected_with_2(mqtt_broker, protocol, clean):
    with pytest.raises(ConnectionRefused) as info:
        async with open_client(
            mqtt_broker.address, client_id="", protocol=protocol, clean_start=clean
        ):
            pass
    assert info.value.reason_code == 2


@pytest.mark.parametrize(("protocol", "code"), [(4, 2), (5, 0x85)])
async def test_client_id_too_long(protocol, code):
    async with run_broker(max_client_id_size=10) as broker:
        async with open_client(broker.address, client_id="x" * 10, protocol=protocol):
            pass
        with pytest.raises(ConnectionRefused) as info:
            async with open_client(broker.address, client_id="x" * 11, protocol=protocol):
                pass
        assert info.value.reason_code == code


@pytest.mark.parametrize(("protocol", "code"), [(4, 1), (5, 0x84)])
async def test_allowed_protocol_versions(protocol, code):
    async with run_broker(allowed_protocol_versions=frozenset({3})) as broker:
        with pytest.raises(ConnectionRefused) as info:
            async with open_client(broker.address, client_id="c", protocol=protocol):
                pass
        assert info.value.reason_code == code
        async with open_client(broker.address, client_id="c", protocol=3):
            pass


async def test_unknown_protocol_level_gets_connack_1(mqtt_broker, read_until_closed):
    stream = await trio.open_tcp_stream(*mqtt_broker.address)
    async with stream:
        # CONNECT "MQTT" level 6.
        body = b"\x00\x04MQTT\x06\x02\x00\x3c\x00\x01c"
        await stream.send_all(bytes((0x10, len(body))) + body)
        data = await read_until_closed(stream)
    assert data == b"\x20\x02\x00\x01"


async def test_second_connect_is_a_protocol_error(mqtt_broker):
    async with open_client(mqtt_broker.address, client_id="c2", protocol=5) as c:
        await c.send_packet(Connect(client_id="c2", protocol_level=5))
        await c.wait_closed()
        assert c.server_disconnect is not None
        assert c.server_disconnect.reason_code == 0x82


async def test_second_connect_v311_closes(mqtt_broker):
    async with open_client(mqtt_broker.address, client_id="c3", protocol=4) as c:
        await c.send_packet(Connect(client_id="c3"))
        await c.wait_closed()
        assert c.server_disconnect is None


async def test_first_packet_must_be_connect(mqtt_broker, read_until_closed):
    stream = await trio.open_tcp_stream(*mqtt_broker.address)
    async with stream:
        await stream.send_all(b"\xc0\x00")  # PINGREQ
        assert await read_until_closed(stream) == b""


async def test_connect_timeout(read_until_closed):
    async with run_broker(mqtt_connect_timeout=0.3) as broker:
        stream = await trio.open_tcp_stream(*broker.address)
        async with stream:
            with trio.fail_after(5):
                assert await read_until_closed(stream) == b""


@pytest.mark.parametrize("protocol", [4, 5])
async def test_session_takeover(mqtt_broker, protocol):
    async with open_client(mqtt_broker.address, client_id="dup", protocol=protocol) as old:
        await old.subscribe("t", qos=1)
        async with open_client(
            mqtt_broker.address, client_id="dup", protocol=protocol, clean_start=False
        ) as new:
            await old.wait_closed()
            if protocol == 5:
                assert old.server_disconnect is not None
                assert old.server_disconnect.reason_code == 0x8E
            assert new.connack.session_present is True
            # The session (and its subscription) moved to the new connection.
            await new.publish("t", b"x", qos=1)
            assert (await new.receive()).payload == b"x"


async def test_takeover_with_paho(mqtt_broker, paho_clients):
    first = paho_clients(mqtt_broker.address, "same", protocol=mqtt.MQTTv5)
    await first.connect()
    second = paho_clients(mqtt_broker.address, "same", protocol=mqtt.MQTTv5)
    await second.connect()
    reason = await first.wait_disconnected()
    assert reason == 0x8E
    first.client.loop_stop()
    await second.disconnect()


async def test_session_present_for_persistent_session(mqtt_broker):
    async with open_client(mqtt_broker.address, client_id="p", clean_start=False) as c:
        assert c.connack.session_present is False
        await c.disconnect()
    async with open_client(mqtt_broker.address, client_id="p", clean_start=False) as c:
        assert c.connack.session_present is True
    async with open_client(mqtt_broker.address, client_id="p", clean_start=True) as c:
        assert c.connack.session_present is False


async def test_keepalive_timeout_closes_and_sends_will(mqtt_broker):
    async with open_client(mqtt_broker.address, client_id="watch") as watcher:
        await watcher.subscribe("will/#")
        will = Will("will/sleepy", b"gone", 0)
        async with open_client(
            mqtt_broker.address, client_id="sleepy", keepalive=1, auto_ping=False, will=will
        ) as sleepy:
            with trio.fail_after(5):
                await sleepy.wait_closed()
            message = await watcher.receive()
            assert message.topic == "will/sleepy"
            assert message.payload == b"gone"


async def test_keepalive_kept_by_pings(mqtt_broker):
    async with open_client(mqtt_broker.address, client_id="pinger", keepalive=1) as c:
        # Three keepalive periods pass; pings keep the connection up.
        await trio.sleep(2.0)
        assert not c.closed.is_set()
        await c.publish("x", b"1", qos=1)


async def test_v5_server_keep_alive_from_max_keepalive():
    async with run_broker(max_keepalive=1) as broker:
        async with open_client(broker.address, client_id="k", protocol=5, keepalive=0) as c:
            assert c.connack.properties["server_keep_alive"] == 1
        async with open_client(
            broker.address, client_id="k2", protocol=5, keepalive=100, auto_ping=False
        ) as c:
            assert c.connack.properties["server_keep_alive"] == 1
            with trio.fail_after(5):
                await c.wait_closed()
            assert c.server_disconnect is not None
            assert c.server_disconnect.reason_code == 0x8D


async def test_max_connections():
    async with run_broker(max_connections=2) as broker:
        async with (
            open_client(broker.address, client_id="a"),
            open_client(broker.address, client_id="b"),
        ):
            with pytest.raises(ConnectionRefused) as info:
                async with open_client(broker.address, client_id="c"):
                    pass
            assert info.value.connack is None
        # Slots are free again once the others left.
        async with open_client(broker.address, client_id="c"):
            pass


async def test_several_listeners_ipv4_and_ipv6():
    listeners = [
        ListenerConfig(kind="tcp", name="v4", host="127.0.0.1", port=0),
        ListenerConfig(kind="tcp", name="v6", host="::1", port=0),
    ]
    async with run_broker(listeners=listeners) as broker:
        v4 = broker.listener_address("v4")
        v6 = broker.listener_address("v6")
        assert ":" in v6[0]
        async with open_client(v4, client_id="four") as a, open_client(v6, client_id="six") as b:
            await a.subscribe("x")
            await b.publish("x", b"from six")
            assert (await a.receive()).payload == b"from six"


async def test_mountpoints_isolate_listeners():
    listeners = [
        ListenerConfig(kind="tcp", name="a", host="127.0.0.1", port=0, mountpoint="tenant-a/"),
        ListenerConfig(kind="tcp", name="b", host="127.0.0.1", port=0, mountpoint="tenant-b/"),
        ListenerConfig(kind="tcp", name="b2", host="127.0.0.1", port=0, mountpoint="tenant-b/"),
    ]
    async with (
        run_broker(listeners=listeners) as broker,
        open_client(broker.listener_address("a"), client_id="same") as a,
        open_client(broker.listener_address("b"), client_id="same") as b,
        open_client(broker.listener_address("b2"), client_id="other") as b2,
    ):
        # Same client id on two mountpoints: two sessions, no takeover.
        await a.subscribe("#")
        await b.subscribe("#")
        await b2.publish("t", b"for b")
        assert (await b.receive()).payload == b"for b"
        await a.publish("t", b"for a")
        assert (await a.receive()).payload == b"for a"
        assert a.pending_messages() == []
        assert b.pending_messages() == []
        assert not a.closed.is_set() and not b.closed.is_set()
        sessions = {(s.mountpoint, s.client_id) for s in broker.host.sessions()}
        assert {("tenant-a/", "same"), ("tenant-b/", "same")} <= sessions


async def test_graceful_shutdown_sends_0x8b():
    async with (
        run_broker() as broker,
        open_client(broker.address, client_id="v5", protocol=5) as v5,
        open_client(broker.address, client_id="v3", protocol=4) as v3,
    ):
        broker.shutdown()
        await v5.wait_closed()
        await v3.wait_closed()
        assert v5.server_disconnect is not None
        assert v5.server_disconnect.reason_code == 0x8B
        assert v3.server_disconnect is None


async def test_raw_connect_bytes_for_v31(mqtt_broker, read_until_closed):
    stream = await trio.open_tcp_stream(*mqtt_broker.address)
    async with stream:
        await stream.send_all(
            encode(Connect(protocol_name="MQIsdp", protocol_level=3, client_id="old"), 3)
        )
        data = await stream.receive_some(4)
        assert data == b"\x20\x02\x00\x00"
        await stream.send_all(encode(Disconnect(), 3))
        assert await read_until_closed(stream) == b""
    assert isinstance(Connack(), Connack)


async def test_max_connection_lifetime():
    async with (
        run_broker(max_connection_lifetime=0.5) as broker,
        open_client(broker.address, client_id="short", protocol=5) as c,
    ):
        with trio.fail_after(5):
            await c.wait_closed()
        assert c.server_disconnect.reason_code == 0xA0


async def test_max_message_rate_throttles_reading():
    async with (
        run_broker(max_message_rate=5) as broker,
        open_client(broker.address, client_id="fast") as c,
    ):
        await c.subscribe("t", qos=1)
        started = trio.current_time()
        for i in range(11):
            await c.publish("t", str(i).encode(), qos=1)
        assert trio.current_time() - started >= 1.0  # 11 messages at 5/s: two windows
        assert len(await c.receive_many(11)) == 11
