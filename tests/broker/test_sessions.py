"""Sessions: offline queues, redelivery, exactly-once QoS 2 across reconnects, flow, expiry."""

from __future__ import annotations

import pytest
import trio

from plugin_host.mqtt import Puback, Pubcomp, Publish, Pubrec, Pubrel, encode_publish
from plugin_host.testing import ClientSession, open_client, run_broker


async def test_persistent_session_queues_qos1_and_2_while_offline(mqtt_broker):
    address = mqtt_broker.address
    async with open_client(address, client_id="sub", clean_start=False) as sub:
        await sub.subscribe("q/#", qos=2)
        await sub.disconnect()
    async with open_client(address, client_id="pub") as pub:
        await pub.publish("q/0", b"zero", qos=0)  # not queued for an offline session
        await pub.publish("q/1", b"one", qos=1)
        await pub.publish("q/2", b"two", qos=2)
    async with open_client(address, client_id="sub", clean_start=False) as sub:
        assert sub.connack.session_present
        got = await sub.receive_many(2)
        assert [(m.topic, m.qos) for m in got] == [("q/1", 1), ("q/2", 2)]
        await sub.sync()
        assert sub.pending_messages() == []


async def test_clean_session_discards_state(mqtt_broker):
    address = mqtt_broker.address
    async with open_client(address, client_id="sub", clean_start=False) as sub:
        await sub.subscribe("q", qos=1)
        await sub.disconnect()
    async with open_client(address, client_id="pub") as pub:
        await pub.publish("q", b"one", qos=1)
    async with open_client(address, client_id="sub", clean_start=True) as sub:
        assert not sub.connack.session_present
        await sub.sync()
        assert sub.pending_messages() == []
        await sub.publish("q", b"no subscription any more", qos=1)
        await sub.sync()
        assert sub.pending_messages() == []


async def test_offline_queue_drops_oldest_when_full(recorder):
    async with run_broker(max_offline_messages=3, plugins={"rec": recorder}) as broker:
        address = broker.address
        async with open_client(address, client_id="sub", clean_start=False) as sub:
            await sub.subscribe("q", qos=1)
            await sub.disconnect()
        async with open_client(address, client_id="pub") as pub:
            for i in range(5):
                await pub.publish("q", str(i).encode(), qos=1)
        async with open_client(address, client_id="sub", clean_start=False) as sub:
            got = await sub.receive_many(3)
            assert [m.payload for m in got] == [b"2", b"3", b"4"]
        assert broker.broker.counters.dropped["queue_full"] == 2
        dropped = await recorder.wait_for("on_message_drop", reason="queue_full")
        assert dropped["client_id"] == "sub" and dropped["payload"] == b"0"
        offline = recorder.of("on_offline_message")
        assert [o["payload"] for o in offline] == [b"0", b"1", b"2", b"3", b"4"]


@pytest.mark.parametrize("protocol", [4, 5])
async def test_unacknowledged_messages_are_redelivered_with_dup(mqtt_broker, protocol):
    address = mqtt_broker.address
    async with open_client(
        address,
        client_id="sub",
        protocol=protocol,
        clean_start=False,
        auto_ack=False,
        properties={"session_expiry_interval": 60} if protocol == 5 else None,
    ) as sub:
        await sub.subscribe("r", qos=1)
        async with open_client(address, client_id="pub") as pub:
            for i in range(3):
                await pub.publish("r", str(i).encode(), qos=1)
        first = await sub.receive_many(3)
        assert not any(m.dup for m in first)
        await sub.ack(first[0])
        await sub.sync()
        await sub.close()  # no PUBACK for 1 and 2
    async with open_client(
        address,
        client_id="sub",
        protocol=protocol,
        clean_start=False,
        properties={"session_expiry_interval": 60} if protocol == 5 else None,
    ) as sub:
        again = await sub.receive_many(2)
        assert [m.payload for m in again] == [b"1", b"2"]
        assert all(m.dup for m in again)
        assert [m.packet_id for m in again] == [m.packet_id for m in first[1:]]
        await sub.sync()
        assert sub.pending_messages() == []


async def test_outgoing_qos2_resumes_with_pubrel_after_reconnect(mqtt_broker):
    """PUBREC was sent before the connection dropped: the broker re-sends PUBREL, never the
    message again."""
    address = mqtt_broker.address
    async with open_client(address, client_id="sub", clean_start=False, auto_ack=False) as sub:
        await sub.subscribe("x", qos=2)
        async with open_client(address, client_id="pub") as pub:
            await pub.publish("x", b"once", qos=2)
        message = await sub.receive()
        await sub.ack(message)  # PUBREC
        rel = await sub.receive_packet(Pubrel)
        assert rel.packet_id == message.packet_id
        await sub.close()  # no PUBCOMP
    async with open_client(address, client_id="sub", clean_start=False, auto_ack=False) as sub:
        rel = await sub.receive_packet(Pubrel)
        assert rel.packet_id == message.packet_id
        await sub.send_raw(bytes((0x70, 2)) + message.packet_id.to_bytes(2, "big"))
        await sub.sync()
        assert sub.pending_messages() == []
        assert not mqtt_broker.broker.sessions[("", "sub")].inflight


async def test_outgoing_qos2_publish_resent_before_pubrec(mqtt_broker):
    """No PUBREC yet: the PUBLISH is re-sent with DUP and the same packet id; the client's
    own state (ClientSession) makes it exactly once for the application."""
    address = mqtt_broker.address
    state = ClientSession()
    async with open_client(
        address, client_id="sub", clean_start=False, auto_ack=False, session=state
    ) as sub:
        await sub.subscribe("x", qos=2)
        async with open_client(address, client_id="pub") as pub:
            await pub.publish("x", b"once", qos=2)
        message = await sub.receive()
        await sub.close()
    async with open_client(address, client_id="sub", clean_start=False, session=state) as sub:
        # The resent PUBLISH (DUP, same id) is acknowledged but not delivered again.
        await sub.sync()
        rel_done = mqtt_broker.broker.sessions[("", "sub")]
        with trio.fail_after(5):
            while rel_done.inflight:
                await sub.sync()
        assert sub.pending_messages() == []
    assert message.payload == b"once"


async def test_incoming_qos2_exactly_once_across_reconnect(mqtt_broker):
    """The publisher's PUBLISH was acknowledged with PUBREC; it reconnects and (as MQTT
    requires) sends the PUBLISH again with DUP: the broker must not route it twice."""
    address = mqtt_broker.address
    async with open_client(address, client_id="sub") as sub:
        await sub.subscribe("e", qos=2)
        async with open_client(address, client_id="pub", clean_start=False) as pub:
            await pub.send_raw(encode_publish("e", b"exactly", 2, False, False, 7))
            rec = await pub.receive_packet(Pubrec)
            assert rec.packet_id == 7
            await pub.close()
        async with open_client(address, client_id="pub", clean_start=False) as pub:
            assert pub.connack.session_present
            await pub.send_raw(encode_publish("e", b"exactly", 2, False, True, 7))
            rec = await pub.receive_packet(Pubrec)
            assert rec.packet_id == 7
            comp = await pub.release(7)
            assert isinstance(comp, Pubcomp)
        message = await sub.receive()
        assert message.payload == b"exactly"
        await sub.sync()
        assert sub.pending_messages() == []


async def test_inflight_window():
    async with (
        run_broker(max_inflight_messages=2) as broker,
        open_client(broker.address, client_id="sub", auto_ack=False) as sub,
    ):
        await sub.subscribe("w", qos=1)
        async with open_client(broker.address, client_id="pub") as pub:
            for i in range(5):
                await pub.publish("w", str(i).encode(), qos=1)
        got = await sub.receive_many(2)
        await sub.sync()
        assert sub.pending_messages() == []  # the window is full
        await sub.ack(got[0])
        third = await sub.receive()
        assert third.payload == b"2"
        await sub.sync()
        assert sub.pending_messages() == []
        for m in (got[1], third):
            await sub.ack(m)
        rest = await sub.receive_many(2)
        assert [m.payload for m in rest] == [b"3", b"4"]


async def test_v5_receive_maximum_of_client_limits_inflight(mqtt_broker):
    async with open_client(
        mqtt_broker.address,
        client_id="sub",
        protocol=5,
        auto_ack=False,
        properties={"receive_maximum": 1},
    ) as sub:
        await sub.subscribe("w", qos=2)
        async with open_client(mqtt_broker.address, client_id="pub") as pub:
            for i in range(3):
                await pub.publish("w", str(i).encode(), qos=1)
        first = await sub.receive()
        await sub.sync()
        assert sub.pending_messages() == []
        await sub.ack(first)
        second = await sub.receive()
        assert second.payload == b"1"


async def test_v3_retry_interval_resends_with_dup():
    async with (
        run_broker(retry_interval=0.3) as broker,
        open_client(broker.address, client_id="sub", auto_ack=False) as sub,
    ):
        await sub.subscribe("t", qos=1)
        await sub.publish("t", b"x", qos=1)
        first = await sub.receive()
        assert not first.dup
        again = await sub.receive(timeout=5)
        assert again.dup and again.packet_id == first.packet_id
        await sub.ack(again)


async def test_v5_does_not_retry_while_connected():
    async with (
        run_broker(retry_interval=0.2) as broker,
        open_client(broker.address, client_id="sub", protocol=5, auto_ack=False) as sub,
    ):
        await sub.subscribe("t", qos=1)
        await sub.publish("t", b"x", qos=1)
        await sub.receive()
        with trio.move_on_after(0.8):
            await sub.receive()
            raise AssertionError("a v5 message was retried while connected")


async def test_v5_session_expiry(recorder):
    async with run_broker(plugins={"rec": recorder}, allow_anonymous=True) as broker:
        address = broker.address
        props = {"session_expiry_interval": 1}
        async with open_client(
            address, client_id="exp", protocol=5, clean_start=False, properties=props
        ) as c:
            await c.subscribe("e", qos=1)
            await c.disconnect()
        await recorder.wait_for("on_client_offline", client_id="exp")
        assert broker.host.session("exp") is not None
        await recorder.wait_for("on_session_expired", client_id="exp", timeout=5)
        assert broker.host.session("exp") is None
        unsub = await recorder.wait_for("on_topic_unsubscribed", client_id="exp")
        assert unsub["topics"] is None
        async with open_client(
            address, client_id="exp", protocol=5, clean_start=False, properties=props
        ) as c:
            assert not c.connack.session_present


async def test_v5_session_expiry_changed_at_disconnect(recorder):
    async with run_broker(plugins={"rec": recorder}, allow_anonymous=True) as broker:
        address = broker.address
        async with open_client(
            address,
            client_id="d",
            protocol=5,
            clean_start=False,
            properties={"session_expiry_interval": 3600},
        ) as c:
            await c.subscribe("e", qos=1)
            await c.disconnect(properties={"session_expiry_interval": 0})
        await recorder.wait_for("on_client_gone", client_id="d")
        assert broker.host.session("d") is None


async def test_v5_disconnect_cannot_set_expiry_from_zero(mqtt_broker):
    async with open_client(mqtt_broker.address, client_id="z", protocol=5) as c:
        await c.send_raw(bytes((0xE0, 7, 0x00, 5, 17)) + (10).to_bytes(4, "big"))
        await c.wait_closed()
        assert c.server_disconnect is not None
        assert c.server_disconnect.reason_code == 0x82


async def test_v3_persistent_client_expiration(recorder):
    async with run_broker(
        plugins={"rec": recorder}, allow_anonymous=True, persistent_client_expiration=0.5
    ) as broker:
        async with open_client(broker.address, client_id="v3", clean_start=False) as c:
            await c.subscribe("x", qos=1)
            await c.close()
        await recorder.wait_for("on_session_expired", client_id="v3", timeout=5)
        assert broker.host.session("v3") is None


async def test_session_lifecycle_hooks(recorder):
    async with run_broker(plugins={"rec": recorder}, allow_anonymous=True) as broker:
        async with open_client(broker.address, client_id="clean") as c:
            await c.disconnect()
        await recorder.wait_for("on_client_wakeup", client_id="clean")
        await recorder.wait_for("on_client_gone", client_id="clean")
        async with open_client(broker.address, client_id="keep", clean_start=False) as c:
            await c.close()
        await recorder.wait_for("on_client_offline", client_id="keep")
        assert recorder.of("on_client_gone") == [{"mountpoint": "", "client_id": "clean"}]


async def test_acks_for_unknown_packet_ids_are_harmless(mqtt_broker):
    async with open_client(mqtt_broker.address, client_id="c", protocol=5, auto_ack=False) as c:
        await c.send_raw(bytes((0x40, 2, 0, 99)))  # PUBACK for nothing
        await c.send_raw(bytes((0x70, 2, 0, 98)))  # PUBCOMP for nothing
        await c.send_raw(bytes((0x50, 2, 0, 97)))  # PUBREC for nothing -> PUBREL 0x92
        rel = await c.receive_packet(Pubrel)
        assert rel.packet_id == 97 and rel.reason_code == 0x92
        ack = await c.publish("t", b"still fine", qos=1)
        assert isinstance(ack, Puback)
        assert isinstance(Publish("t"), Publish)
