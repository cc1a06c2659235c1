"""MQTT 5 features: properties, expiry, topic aliases, flow control, packet sizes, wills."""

from __future__ import annotations

import paho.mqtt.client as mqtt
import trio
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from plugin_host.mqtt import Will, encode_publish
from plugin_host.testing import open_client, run_broker


async def test_properties_forwarded_in_order(mqtt_broker):
    props = {
        "payload_format_indicator": 1,
        "content_type": "application/json",
        "response_topic": "reply/here",
        "correlation_data": b"\x00\x01corr",
        "user_property": [("b", "2"), ("a", "1"), ("b", "3")],
    }
    async with (
        open_client(mqtt_broker.address, client_id="s", protocol=5) as sub,
        open_client(mqtt_broker.address, client_id="p", protocol=5) as pub,
    ):
        await sub.subscribe("j", qos=1)
        await pub.publish("j", b'{"x": 1}', qos=1, properties=props)
        message = await sub.receive()
        assert message.properties == props


async def test_v5_properties_not_sent_to_v311_subscriber(mqtt_broker):
    async with (
        open_client(mqtt_broker.address, client_id="s", protocol=4) as sub,
        open_client(mqtt_broker.address, client_id="p", protocol=5) as pub,
    ):
        await sub.subscribe("j", qos=1)
        await pub.publish("j", b"x", qos=1, properties={"user_property": [("k", "v")]})
        message = await sub.receive()
        assert message.payload == b"x" and message.properties == {}


async def test_paho_user_properties_round_trip(mqtt_broker, paho_clients):
    c = paho_clients(mqtt_broker.address, "up", protocol=mqtt.MQTTv5)
    await c.connect()
    await c.subscribe("u", qos=1)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("z", "1"), ("a", "2"), ("z", "3")]
    props.ContentType = "text/plain"
    await c.publish("u", b"hi", qos=1, properties=props)
    message = await c.receive()
    assert message.properties.UserProperty == [("z", "1"), ("a", "2"), ("z", "3")]
    assert message.properties.ContentType == "text/plain"
    await c.disconnect()


async def test_message_expiry_remaining_interval_forwarded(mqtt_broker):
    address = mqtt_broker.address
    props = {"session_expiry_interval": 60}
    async with open_client(
        address, client_id="s", protocol=5, clean_start=False, properties=props
    ) as sub:
        await sub.subscribe("x", qos=1)
        await sub.disconnect()
    async with open_client(address, client_id="p", protocol=5) as pub:
        await pub.publish("x", b"long", qos=1, properties={"message_expiry_interval": 100})
        await pub.publish("x", b"short", qos=1, properties={"message_expiry_interval": 1})
    await trio.sleep(1.2)  # the condition under test is the passage of time
    async with open_client(
        address, client_id="s", protocol=5, clean_start=False, properties=props
    ) as sub:
        message = await sub.receive()
        assert message.payload == b"long"
        assert 0 < message.properties["message_expiry_interval"] <= 99
        await sub.sync()
        assert sub.pending_messages() == []  # "short" expired and was never delivered
    assert mqtt_broker.broker.counters.dropped["expired"] == 1


async def test_expired_retained_message_not_delivered(mqtt_broker):
    async with open_client(mqtt_broker.address, client_id="p", protocol=5) as pub:
        await pub.publish(
            "r", b"soon gone", qos=1, retain=True, properties={"message_expiry_interval": 1}
        )
        await pub.publish("r2", b"stays", qos=1, retain=True)
        await trio.sleep(1.2)  # the condition under test is the passage of time
        await pub.subscribe("r/#")
        await pub.subscribe("r2")
        assert (await pub.receive()).payload == b"stays"
        await pub.sync()
        assert pub.pending_messages() == []


async def test_incoming_topic_alias():
    async with (
        run_broker(topic_alias_max_broker=3) as broker,
        open_client(broker.address, client_id="c", protocol=5) as c,
    ):
        assert c.connack.properties["topic_alias_maximum"] == 3
        await c.subscribe("long/topic/name", qos=1)
        await c.publish("long/topic/name", b"1", qos=1, properties={"topic_alias": 2})
        await c.publish("", b"2", qos=1, properties={"topic_alias": 2})
        got = await c.receive_many(2)
        assert [(m.topic, m.payload) for m in got] == [
            ("long/topic/name", b"1"),
            ("long/topic/name", b"2"),
        ]
        assert "topic_alias" not in got[1].properties


async def test_incoming_topic_alias_errors():
    async with run_broker(topic_alias_max_broker=2) as broker:
        async with open_client(broker.address, client_id="c", protocol=5) as c:
            await c.publish("t", b"1", qos=0, properties={"topic_alias": 3})
            await c.wait_closed()
            assert c.server_disconnect.reason_code == 0x94
        async with open_client(broker.address, client_id="c", protocol=5) as c:
            await c.publish("", b"1", qos=0, properties={"topic_alias": 1})
            await c.wait_closed()
            assert c.server_disconnect.reason_code == 0x82
    async with (
        run_broker() as broker,
        open_client(broker.address, client_id="c", protocol=5) as c,
    ):
        # The broker announced no aliases (topic_alias_max_broker = 0).
        assert "topic_alias_maximum" not in c.connack.properties
        await c.publish("t", b"1", qos=0, properties={"topic_alias": 1})
        await c.wait_closed()
        assert c.server_disconnect.reason_code == 0x94


async def test_outgoing_topic_aliases():
    async with (
        run_broker(topic_alias_max_client=2) as broker,
        open_client(
            broker.address, client_id="c", protocol=5, properties={"topic_alias_maximum": 10}
        ) as c,
    ):
        await c.subscribe("#", qos=0)
        for topic in ("a/long/one", "a/long/one", "b/two", "c/three", "a/long/one", "c/three"):
            await c.publish(topic, b"x")
        got = await c.receive_many(6)
        # The test client resolves aliases into .topic; the raw properties show what was sent.
        assert [m.topic for m in got] == [
            "a/long/one",
            "a/long/one",
            "b/two",
            "c/three",
            "a/long/one",
            "c/three",
        ]
        aliases = [m.properties.get("topic_alias") for m in got]
        assert aliases == [1, 1, 2, None, 1, None]  # capped at 2 aliases


async def test_no_outgoing_aliases_unless_client_allows():
    async with (
        run_broker(topic_alias_max_client=5) as broker,
        open_client(broker.address, client_id="c", protocol=5) as c,
    ):
        await c.subscribe("t")
        await c.publish("t", b"1")
        await c.publish("t", b"2")
        got = await c.receive_many(2)
        assert all("topic_alias" not in m.properties for m in got)


async def test_receive_maximum_exceeded():
    async with (
        run_broker(receive_max_broker=2) as broker,
        open_client(broker.address, client_id="c", protocol=5) as c,
    ):
        assert c.connack.properties["receive_maximum"] == 2
        for pid in (1, 2, 3):  # QoS 2 without PUBREL: each stays in flight
            await c.send_raw(encode_publish("t", b"x", 2, False, False, pid, None, 5))
        await c.wait_closed()
        assert c.server_disconnect.reason_code == 0x93


async def test_maximum_packet_size_of_client_is_respected(mqtt_broker):
    async with (
        open_client(
            mqtt_broker.address,
            client_id="small",
            protocol=5,
            properties={"maximum_packet_size": 64},
        ) as small,
        open_client(mqtt_broker.address, client_id="p", protocol=5) as pub,
    ):
        await small.subscribe("t", qos=1)
        await pub.publish("t", b"x" * 100, qos=1)
        await pub.publish("t", b"fits", qos=1)
        message = await small.receive()
        assert message.payload == b"fits"
        await small.sync()  # our PUBACK was handled before the PINGRESP came back
        assert mqtt_broker.broker.counters.dropped["max_packet_size_exceeded"] == 1
        assert not mqtt_broker.broker.sessions[("", "small")].inflight


async def test_incoming_packet_too_large():
    async with run_broker(max_message_size=100) as broker:
        async with open_client(broker.address, client_id="c", protocol=5) as c:
            assert c.connack.properties["maximum_packet_size"] == 100
            await c.publish("t", b"x" * 200)
            await c.wait_closed()
            assert c.server_disconnect.reason_code == 0x95
        async with open_client(broker.address, client_id="c3", protocol=4) as c:
            await c.publish("t", b"x" * 200)
            await c.wait_closed()
            assert c.server_disconnect is None


async def test_request_response_information(mqtt_broker):
    async with open_client(
        mqtt_broker.address,
        client_id="rr",
        protocol=5,
        properties={"request_response_information": 1},
    ) as c:
        assert c.connack.properties["response_information"]
    async with open_client(mqtt_broker.address, client_id="rr2", protocol=5) as c:
        assert "response_information" not in c.connack.properties


async def test_reason_strings_only_when_problem_information_allowed(mqtt_broker):
    for allowed in (True, False):
        props = {} if allowed else {"request_problem_information": 0}
        async with open_client(
            mqtt_broker.address, client_id="rs", protocol=5, properties=props
        ) as old:
            async with open_client(mqtt_broker.address, client_id="rs", protocol=5):
                await old.wait_closed()
            assert old.server_disconnect.reason_code == 0x8E
            has = "reason_string" in old.server_disconnect.properties
            assert has is allowed


# --------------------------------------------------------------------------- wills


async def test_will_on_abnormal_disconnect_not_on_normal(mqtt_broker):
    address = mqtt_broker.address
    async with open_client(address, client_id="w", protocol=5) as watcher:
        await watcher.subscribe("will/#", qos=1)
        for protocol in (4, 5):
            will = Will(f"will/{protocol}", b"normal", 1)
            async with open_client(address, client_id="n", protocol=protocol, will=will) as c:
                await c.disconnect()
            will = Will(f"will/{protocol}", b"abnormal", 1)
            async with open_client(address, client_id="a", protocol=protocol, will=will) as c:
                await c.close()
            message = await watcher.receive()
            assert message.payload == b"abnormal"
            assert message.topic == f"will/{protocol}"


async def test_disconnect_with_will_message_0x04(mqtt_broker):
    address = mqtt_broker.address
    async with open_client(address, client_id="w", protocol=5) as watcher:
        await watcher.subscribe("will", qos=1)
        will = Will("will", b"please", 1, properties={"user_property": [("k", "v")]})
        async with open_client(address, client_id="x", protocol=5, will=will) as c:
            await c.disconnect(reason_code=0x04)
        message = await watcher.receive()
        assert message.payload == b"please"
        assert message.properties["user_property"] == [("k", "v")]


async def test_retained_will(mqtt_broker):
    address = mqtt_broker.address
    will = Will("status/dev1", b"offline", 1, retain=True)
    async with open_client(address, client_id="dev1", will=will) as c:
        await c.close()
    async with open_client(address, client_id="late") as late:
        await late.subscribe("status/+", qos=1)
        message = await late.receive()
        assert message.payload == b"offline" and message.retain


async def test_will_delay(mqtt_broker):
    address = mqtt_broker.address
    async with open_client(address, client_id="w", protocol=5) as watcher:
        await watcher.subscribe("will", qos=1)
        will = Will("will", b"delayed", 1, properties={"will_delay_interval": 1})
        props = {"session_expiry_interval": 60}
        async with open_client(
            address, client_id="d", protocol=5, will=will, properties=props
        ) as c:
            await c.close()
        started = trio.current_time()
        message = await watcher.receive(timeout=5)
        assert message.payload == b"delayed"
        assert trio.current_time() - started >= 0.9


async def test_will_delay_cancelled_by_reconnect(recorder):
    async with run_broker(plugins={"rec": recorder}) as broker:
        address = broker.address
        will = Will("will", b"never", 1, properties={"will_delay_interval": 30})
        props = {"session_expiry_interval": 60}
        async with open_client(
            address, client_id="d", protocol=5, will=will, properties=props, clean_start=False
        ) as c:
            await c.close()
        await recorder.wait_for("on_client_offline", client_id="d")
        session = broker.broker.sessions[("", "d")]
        timer = session.will_timer
        assert timer is not None and not timer.cancelled
        async with open_client(
            address, client_id="d", protocol=5, properties=props, clean_start=False
        ) as c:
            assert c.connack.session_present
            assert session.will_timer is None and timer.cancelled


async def test_will_sent_when_session_ends_before_will_delay(mqtt_broker):
    address = mqtt_broker.address
    async with open_client(address, client_id="w", protocol=5) as watcher:
        await watcher.subscribe("will", qos=1)
        will = Will("will", b"session over", 1, properties={"will_delay_interval": 3600})
        async with open_client(address, client_id="d", protocol=5, will=will) as c:
            await c.close()  # session expiry 0: the session ends now, so does the delay
        message = await watcher.receive(timeout=5)
        assert message.payload == b"session over"


async def test_takeover_sends_will_of_old_connection(mqtt_broker):
    address = mqtt_broker.address
    async with open_client(address, client_id="w") as watcher:
        await watcher.subscribe("will")
        will = Will("will", b"taken over", 0)
        async with (
            open_client(address, client_id="t", will=will),
            open_client(address, client_id="t"),
        ):
            message = await watcher.receive()
            assert message.payload == b"taken over"


async def test_suppress_will_on_takeover():
    async with (
        run_broker(suppress_lwt_on_session_takeover=True) as broker,
        open_client(broker.address, client_id="w") as watcher,
    ):
        await watcher.subscribe("will")
        will = Will("will", b"taken over", 0)
        async with (
            open_client(broker.address, client_id="t", will=will) as old,
            open_client(broker.address, client_id="t"),
        ):
            await old.wait_closed()
            await watcher.publish("will", b"marker")
            assert (await watcher.receive()).payload == b"marker"


async def test_paho_will_v5(mqtt_broker, paho_clients):
    watcher = paho_clients(mqtt_broker.address, "pw", protocol=mqtt.MQTTv5)
    await watcher.connect()
    await watcher.subscribe("pwill", qos=1)
    dying = paho_clients(mqtt_broker.address, "pd", protocol=mqtt.MQTTv5)
    dying.client.will_set("pwill", b"bye", qos=1)
    await dying.connect()
    dying.client.loop_stop()
    dying.client.socket().close()  # abnormal: no DISCONNECT
    message = await watcher.receive()
    assert message.payload == b"bye"
    await watcher.disconnect()
