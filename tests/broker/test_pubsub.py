"""Publish/subscribe: QoS, wildcards, overlapping and shared subscriptions, retained messages."""

from __future__ import annotations

from collections import Counter

import paho.mqtt.client as mqtt
import pytest
import trio
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from plugin_host.mqtt import Puback, Pubcomp, Subscription
from plugin_host.testing import open_client, run_broker


@pytest.mark.parametrize("protocol", [3, 4, 5])
@pytest.mark.parametrize("qos", [0, 1, 2])
async def test_qos_round_trip(mqtt_broker, protocol, qos):
    async with open_client(mqtt_broker.address, client_id="s", protocol=protocol) as sub:
        assert await sub.subscribe("a/b", qos=2) == [2]
        async with open_client(mqtt_broker.address, client_id="p", protocol=protocol) as pub:
            ack = await pub.publish("a/b", b"payload", qos=qos)
            if qos == 1:
                assert isinstance(ack, Puback) and ack.reason_code == 0
            elif qos == 2:
                assert isinstance(ack, Pubcomp) and ack.reason_code == 0
        message = await sub.receive()
        assert (message.topic, message.payload, message.qos) == ("a/b", b"payload", qos)
        assert message.retain is False


@pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5])
async def test_paho_all_qos_both_directions(mqtt_broker, paho_clients, protocol):
    sub = paho_clients(mqtt_broker.address, "psub", protocol=protocol)
    pub = paho_clients(mqtt_broker.address, "ppub", protocol=protocol)
    await sub.connect()
    await pub.connect()
    await sub.subscribe("sensors/#", qos=2)
    for qos in (0, 1, 2):
        await pub.publish(f"sensors/{qos}", f"v{qos}".encode(), qos=qos)
    got = sorted([(m.topic, m.payload, m.qos) for m in [await sub.receive() for _ in range(3)]])
    assert got == [("sensors/0", b"v0", 0), ("sensors/1", b"v1", 1), ("sensors/2", b"v2", 2)]
    await sub.disconnect()
    await pub.disconnect()


async def test_delivery_qos_is_min_of_publish_and_subscription(mqtt_broker):
    async with open_client(mqtt_broker.address, client_id="s") as sub:
        await sub.subscribe("t", qos=1)
        await sub.publish("t", b"x", qos=2)
        assert (await sub.receive()).qos == 1
        await sub.publish("t", b"y", qos=0)
        assert (await sub.receive()).qos == 0


async def test_upgrade_qos_option():
    async with (
        run_broker(upgrade_outgoing_qos=True) as broker,
        open_client(broker.address, client_id="s") as sub,
    ):
        await sub.subscribe("t", qos=2)
        await sub.publish("t", b"x", qos=0)
        assert (await sub.receive()).qos == 2


@pytest.mark.parametrize(
    ("topic_filter", "topic", "matches"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/d", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("#", "x/y", True),
        ("+", "x", True),
        ("+", "x/y", False),
        ("+/+", "/x", True),
        ("a/+", "a/", True),
        ("#", "$SYS/x", False),
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("$SYS/+", "$SYS/x", True),
    ],
)
async def test_wildcards(mqtt_broker, topic_filter, topic, matches):
    async with open_client(mqtt_broker.address, client_id="s") as c:
        await c.subscribe(topic_filter)
        await c.subscribe("marker")
        await c.publish(topic, b"1", qos=1)
        await c.publish("marker", b"end", qos=1)
        first = await c.receive()
        if matches:
            assert first.topic == topic
            assert (await c.receive()).topic == "marker"
        else:
            assert first.topic == "marker"


async def test_overlapping_subscriptions_v311_delivered_once_at_max_qos(mqtt_broker):
    async with open_client(mqtt_broker.address, client_id="s", protocol=4) as c:
        await c.subscribe([("a/#", 0), ("a/+", 1), ("a/b", 2)])
        await c.publish("a/b", b"x", qos=2)
        await c.publish("marker", b"end", qos=1)
        await c.subscribe("marker")
        await c.publish("marker", b"end", qos=1)
        message = await c.receive()
        assert message.topic == "a/b" and message.qos == 2
        assert (await c.receive()).topic == "marker"


async def test_overlapping_subscriptions_v5_carry_all_subscription_ids(mqtt_broker):
    async with open_client(mqtt_broker.address, client_id="s", protocol=5) as c:
        await c.subscribe("a/#", qos=0, properties={"subscription_identifier": 7})
        await c.subscribe("a/+", qos=1, properties={"subscription_identifier": 9})
        await c.subscribe("a/b", qos=1)  # no identifier
        await c.publish("a/b", b"x", qos=1)
        message = await c.receive()
        assert message.qos == 1
        assert sorted(message.properties["subscription_identifier"]) == [7, 9]
        await c.publish("a/c/d", b"y", qos=1)
        message = await c.receive()
        assert message.properties["subscription_identifier"] == [7]


async def test_no_local(mqtt_broker):
    async with open_client(mqtt_broker.address, client_id="s", protocol=5) as c:
        await c.subscribe([Subscription("t", 1, no_local=True), Subscription("marker", 1)])
        await c.publish("t", b"own", qos=1)
        await c.publish("marker", b"end", qos=1)
        assert (await c.receive()).topic == "marker"
        async with open_client(mqtt_broker.address, client_id="other", protocol=5) as o:
            await o.publish("t", b"theirs", qos=1)
        assert (await c.receive()).payload == b"theirs"


async def test_no_local_with_overlapping_subscription(mqtt_broker):
    async with open_client(mqtt_broker.address, client_id="s", protocol=5) as c:
        await c.subscribe([Subscription("t/#", 1, no_local=True), Subscription("t/x", 0)])
        await c.publish("t/x", b"own", qos=1)
        message = await c.receive()  # through the subscription without no_local
        assert message.payload == b"own" and message.qos == 0


async def test_paho_no_local(mqtt_broker, paho_clients):
    c = paho_clients(mqtt_broker.address, "nl", protocol=mqtt.MQTTv5)
    await c.connect()
    await c.subscribe("t", options=SubscribeOptions(qos=1, noLocal=True))
    await c.subscribe("end", options=SubscribeOptions(qos=1))
    await c.publish("t", b"own", qos=1)
    await c.publish("end", b"x", qos=1)
    assert (await c.receive()).topic == "end"
    await c.disconnect()


async def test_unsubscribe(mqtt_broker):
    async with open_client(mqtt_broker.address, client_id="s", protocol=5) as c:
        await c.subscribe([("a", 1), ("b", 1)])
        ack = await c.unsubscribe(["a", "nope"])
        assert ack.reason_codes == [0x00, 0x11]
        await c.publish("a", b"1", qos=1)
        await c.publish("b", b"2", qos=1)
        assert (await c.receive()).topic == "b"
    async with open_client(mqtt_broker.address, client_id="s3", protocol=4) as c:
        await c.subscribe("a", qos=1)
        ack = await c.unsubscribe("a")
        assert ack.reason_codes == []


async def test_invalid_filter_gets_its_own_suback_code(mqtt_broker):
    async with open_client(mqtt_broker.address, client_id="s", protocol=5) as c:
        codes = await c.subscribe([("ok/+", 1), ("bad/#/x", 1), ("a+", 0)])
        assert codes == [1, 0x8F, 0x8F]
    async with open_client(mqtt_broker.address, client_id="s3", protocol=4) as c:
        codes = await c.subscribe([("ok", 2), ("bad/#/x", 1)])
        assert codes == [2, 0x80]


# --------------------------------------------------------------------------- retained


async def test_retained_set_replace_clear(mqtt_broker):
    address = mqtt_broker.address
    async with open_client(address, client_id="p") as pub:
        await pub.publish("r/1", b"first", qos=1, retain=True)
        await pub.publish("r/1", b"second", qos=1, retain=True)
        await pub.publish("r/2", b"other", qos=1, retain=True)
    async with open_client(address, client_id="s") as sub:
        await sub.subscribe("r/#", qos=1)
        got = {m.topic: m for m in await sub.receive_many(2)}
        assert got["r/1"].payload == b"second" and got["r/1"].retain
        assert got["r/2"].payload == b"other" and got["r/2"].retain
        # A live message to an existing subscription is not flagged retained (v3.1.1).
        async with open_client(address, client_id="p") as pub:
            await pub.publish("r/1", b"", qos=1, retain=True)  # clear
        cleared = await sub.receive()
        assert cleared.payload == b"" and cleared.retain is False
    async with open_client(address, client_id="s2") as sub:
        await sub.subscribe("r/#", qos=1)
        message = await sub.receive()
        assert message.topic == "r/2"
        assert sub.pending_messages() == []


async def test_retained_qos_is_min_of_stored_and_subscription(mqtt_broker):
    async with open_client(mqtt_broker.address, client_id="p") as pub:
        await pub.publish("rq", b"x", qos=2, retain=True)
        await pub.subscribe("rq", qos=1)
        message = await pub.receive()
        assert message.qos == 1 and message.retain


async def test_retain_handling_and_retain_as_published(mqtt_broker):
    address = mqtt_broker.address
    async with open_client(address, client_id="p", protocol=5) as pub:
        await pub.publish("rh", b"kept", qos=1, retain=True)
    async with open_client(address, client_id="s", protocol=5) as c:
        # 2: never send retained messages.
        await c.subscribe(Subscription("rh", 1, retain_handling=2))
        # 1: only for a new subscription (this one is new).
        await c.subscribe(Subscription("rh/#", 1, retain_handling=1))
        message = await c.receive()
        assert message.payload == b"kept" and message.retain
        # 1 again on the same filter: it exists, so nothing is sent.
        await c.subscribe(Subscription("rh/#", 1, retain_handling=1))
        # 0: send on every subscribe.
        await c.subscribe(Subscription("rh", 1, retain_handling=0, retain_as_published=True))
        message = await c.receive()
        assert message.payload == b"kept"
        # Retain as published: a live retained publish keeps its flag for that subscription.
        await c.publish("rh", b"live", qos=1, retain=True)
        message = await c.receive()
        assert message.payload == b"live" and message.retain is True
        assert c.pending_messages() == []


async def test_paho_retained_flag(mqtt_broker, paho_clients):
    pub = paho_clients(mqtt_broker.address, "rp", protocol=mqtt.MQTTv311)
    await pub.connect()
    await pub.publish("pr/x", b"retained!", qos=1, retain=True)
    sub = paho_clients(mqtt_broker.address, "rs", protocol=mqtt.MQTTv311)
    await sub.connect()
    await sub.subscribe("pr/+", qos=1)
    message = await sub.receive()
    assert message.retain and message.payload == b"retained!"
    await pub.disconnect()
    await sub.disconnect()


# --------------------------------------------------------------------------- shared


@pytest.mark.parametrize("protocol", [4, 5])
async def test_shared_subscription_round_robin(mqtt_broker, protocol):
    address = mqtt_broker.address
    async with (
        open_client(address, client_id="m1", protocol=protocol) as m1,
        open_client(address, client_id="m2", protocol=protocol) as m2,
        open_client(address, client_id="m3", protocol=protocol) as m3,
        open_client(address, client_id="plain", protocol=protocol) as plain,
    ):
        for m in (m1, m2, m3):
            assert await m.subscribe("$share/g/jobs/#", qos=1) == [1]
        await plain.subscribe("jobs/#", qos=1)
        for i in range(30):
            await plain.publish(f"jobs/{i}", str(i).encode(), qos=1)
        # Every message reaches the plain subscriber, and exactly one group member.
        assert len(await plain.receive_many(30)) == 30
        counts = Counter()
        seen = []
        for name, m in (("m1", m1), ("m2", m2), ("m3", m3)):
            got = await m.receive_many(10)
            counts[name] = len(got)
            seen += [int(x.payload) for x in got]
        assert sorted(seen) == list(range(30))
        assert counts == {"m1": 10, "m2": 10, "m3": 10}
        for m in (m1, m2, m3):
            assert m.pending_messages() == []


async def test_shared_subscription_random_policy():
    async with (
        run_broker(shared_subscription_policy="random") as broker,
        open_client(broker.address, client_id="m1") as m1,
        open_client(broker.address, client_id="m2") as m2,
    ):
        await m1.subscribe("$share/g/t", qos=1)
        await m2.subscribe("$share/g/t", qos=1)
        await m1.subscribe("done", qos=1)
        await m2.subscribe("done", qos=1)
        for i in range(200):
            await m1.publish("t", str(i).encode(), qos=1)
        await m1.publish("done", b"", qos=1)
        got1 = [m for m in await _until(m1, "done") if m.topic == "t"]
        got2 = [m for m in await _until(m2, "done") if m.topic == "t"]
        assert len(got1) + len(got2) == 200
        assert got1 and got2  # both members got some (probability 2**-199 of failing)


async def test_shared_subscription_offline_member_gets_queued_messages(mqtt_broker):
    address = mqtt_broker.address
    async with open_client(address, client_id="off", clean_start=False) as m:
        await m.subscribe("$share/g/q", qos=1)
        await m.disconnect()
    async with open_client(address, client_id="pub") as pub:
        for i in range(3):
            await pub.publish("q", str(i).encode(), qos=1)
    async with open_client(address, client_id="off", clean_start=False) as m:
        got = await m.receive_many(3)
        assert [x.payload for x in got] == [b"0", b"1", b"2"]


async def test_shared_subscription_prefers_online_members(mqtt_broker):
    address = mqtt_broker.address
    async with open_client(address, client_id="off", clean_start=False) as m:
        await m.subscribe("$share/g/q", qos=1)
        await m.disconnect()
    async with open_client(address, client_id="on") as on:
        await on.subscribe("$share/g/q", qos=1)
        for i in range(4):
            await on.publish("q", str(i).encode(), qos=1)
        assert len(await on.receive_many(4)) == 4
    async with open_client(address, client_id="off", clean_start=False) as m:
        await m.subscribe("nothing")
        assert m.pending_messages() == []


async def test_shared_subscription_with_paho_v5(mqtt_broker, paho_clients):
    members = [paho_clients(mqtt_broker.address, f"pm{i}", protocol=mqtt.MQTTv5) for i in range(2)]
    for m in members:
        await m.connect()
        await m.subscribe("$share/workers/w", qos=1)
    pub = paho_clients(mqtt_broker.address, "pp", protocol=mqtt.MQTTv5)
    await pub.connect()
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = ("k", "v")
    for i in range(10):
        await pub.publish("w", str(i), qos=1, properties=props)
    got = [await members[i % 2].receive() for i in range(10)]
    assert sorted(int(m.payload) for m in got) == list(range(10))
    for m in (*members, pub):
        await m.disconnect()


async def _until(client, topic):
    out = []
    with trio.fail_after(10):
        while True:
            message = await client.receive()
            out.append(message)
            if message.topic == topic:
                return out
