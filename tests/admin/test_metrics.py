"""GET /metrics scraped over a real socket after real MQTT traffic (prometheus-client parser)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from plugin_host import Deny, hookimpl
from plugin_host.mqtt import (
    Connack,
    Connect,
    Disconnect,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
)
from plugin_host.mqtt.packets import PacketType
from plugin_host.plugins.manager import PluginLoadError, PluginManager
from plugin_host.settings import Config
from plugin_host.testing import open_client

P = "plugin_host_"


async def test_counters_match_the_bytes_and_packets_sent(admin_broker: Any, raw: Any) -> None:
    async with (
        admin_broker() as admin,
        raw(admin.address) as sub,
        raw(admin.address) as pub,
        raw(admin.address) as bad,
    ):
        await sub.send(Connect(client_id="sub"))
        await sub.expect(Connack)
        await sub.send(Subscribe(packet_id=1, subscriptions=[Subscription("t/#", qos=2)]))
        await sub.expect(Suback)

        # A v3.1 CONNECT with an empty client id is refused (return code 2).
        await bad.send(Connect(protocol_name="MQIsdp", protocol_level=3, client_id=""))
        refused = await bad.expect(Connack)
        assert refused.reason_code == 2
        await bad.closed()

        await pub.send(Connect(client_id="pub"))
        await pub.expect(Connack)
        for i in range(3):
            await pub.send(Publish("t/0", b"zero %d" % i))
        await pub.send(Publish("t/1", b"one", qos=1, packet_id=1))
        await pub.send(Publish("t/1", b"one again", qos=1, packet_id=2))
        await pub.expect(Puback)
        await pub.expect(Puback)
        await pub.send(Publish("t/2", b"two" * 100, qos=2, packet_id=3))
        await pub.expect(Pubrec)
        await pub.send(Pubrel(packet_id=3))
        await pub.expect(Pubcomp)
        await pub.send(Pingreq())
        await pub.expect(Pingresp)
        # Open connections count too (their parsers' and delivery figures, added at scrape),
        # with the closed one of `bad`.
        live = await admin.scrape()
        for ptype in ("connect", "publish", "pubrel", "pingreq"):
            number = int(getattr(PacketType, ptype.upper()))
            expected = sum(c.sent_by_type[number] for c in (sub, pub, bad))
            assert live.value(P + "packet_bytes_received_total", type=ptype) == expected, ptype
        await pub.send(Disconnect())
        await pub.closed()

        received = [await sub.expect(Publish) for _ in range(6)]
        assert [m.qos for m in received] == [0, 0, 0, 1, 1, 2]
        for message in received[3:5]:
            await sub.send(Puback(packet_id=message.packet_id))
        await sub.send(Pubrec(packet_id=received[5].packet_id))
        await sub.expect(Pubrel)
        await sub.send(Pubcomp(packet_id=received[5].packet_id))
        await sub.send(Disconnect())
        await sub.closed()

        # Every broker task has finished its work (writers counted what they sent).
        await trio.testing.wait_all_tasks_blocked()
        m = await admin.scrape()
        sent = sub.sent + pub.sent + bad.sent
        got = sub.received + pub.received + bad.received
        clients = (sub, pub, bad)
        sent_by_type = [sum(c.sent_by_type[n] for c in clients) for n in range(16)]
        got_by_type = [sum(c.parser.bytes_by_type[n] for c in clients) for n in range(16)]

    assert m.value(P + "bytes_received_total") == sent
    assert m.value(P + "bytes_sent_total") == got
    assert m.value(P + "connects_total") == 2
    assert m.value(P + "connects_refused_total", reason="client_identifier_not_valid") == 1
    for qos, count in ((0, 3), (1, 2), (2, 1)):
        assert m.value(P + "publishes_received_total", qos=str(qos)) == count
        assert m.value(P + "publishes_sent_total", qos=str(qos)) == count
    assert m.value(P + "messages_routed_total") == 6
    expected_in = {
        "connect": 3,
        "subscribe": 1,
        "publish": 6,
        "puback": 2,
        "pubrec": 1,
        "pubrel": 1,
        "pubcomp": 1,
        "pingreq": 1,
        "disconnect": 2,
        "unsubscribe": 0,
    }
    for ptype, count in expected_in.items():
        assert m.value(P + "packets_received_total", type=ptype) == count, ptype
    expected_out = {
        "connack": 3,
        "suback": 1,
        "publish": 6,
        "puback": 2,
        "pubrec": 1,
        "pubrel": 1,
        "pubcomp": 1,
        "pingresp": 1,
        "disconnect": 0,
    }
    for ptype, count in expected_out.items():
        assert m.value(P + "packets_sent_total", type=ptype) == count, ptype
    # Bytes by packet type: exactly what the clients sent and received of each type.
    for ptype in expected_in:
        number = int(getattr(PacketType, ptype.upper()))
        assert m.value(P + "packet_bytes_received_total", type=ptype) == sent_by_type[number]
    for ptype in expected_out:
        number = int(getattr(PacketType, ptype.upper()))
        assert m.value(P + "packet_bytes_sent_total", type=ptype) == got_by_type[number]
    assert sum(sent_by_type) == sent and sum(got_by_type) == got
    assert m.value(P + "packet_bytes_received_total", type="pingreq") == 2
    assert m.types[P + "bytes_received"] == "counter"
    assert m.value(P + "connections") == 0
    assert m.value(P + "sessions", state="online") == 0


class DenyTopic:
    """Denies publishes to deny/... (a drop with reason not_authorized)."""

    @hookimpl
    def auth_on_register(self) -> bool:
        return True

    @hookimpl
    def auth_on_register_m5(self) -> bool:
        return True

    @hookimpl
    def auth_on_publish(self, topic: str) -> Any:
        return Deny("no") if topic.startswith("deny/") else True

    @hookimpl
    def auth_on_publish_m5(self, topic: str) -> Any:
        return Deny("no") if topic.startswith("deny/") else True


async def test_drops_queues_sessions_and_retained_with_paho_and_trio_clients(
    admin_broker: Any, paho: Any
) -> None:
    extra = "max_offline_messages = 1\n"
    async with admin_broker(extra, plugins={"deny": DenyTopic()}) as admin:
        # An offline persistent session (v3.1.1, clean session off) with one queued message.
        async with open_client(admin.address, client_id="offline", clean_start=False) as c:
            await c.subscribe([("q/#", 1)])
            await c.disconnect()
        # An MQTT 5 client that accepts packets of at most 40 bytes.
        async with open_client(
            admin.address, client_id="small", protocol=5, properties={"maximum_packet_size": 40}
        ) as small:
            await small.subscribe([("big/#", 0)])
            publisher = paho(admin.address, "paho-pub", v5=True)
            await publisher.connect()
            await publisher.publish("big/x", b"x" * 100, qos=1)  # too big for "small": dropped
            await publisher.publish("big/y", b"ok", qos=0)
            assert (await small.receive()).payload == b"ok"
            for i in range(3):  # the queue holds one: two dropped (queue_full)
                await publisher.publish("q/a", b"%d" % i, qos=1)
            legacy = paho(admin.address, "paho-v3")
            await legacy.connect()
            legacy.client.publish("deny/me", b"no", qos=1)  # v3.1.1 deny: disconnected
            await legacy.wait_disconnected()
            retained = paho(admin.address, "paho-retain")
            await retained.connect()
            await retained.publish("r/kept", b"retained", qos=1, retain=True)
            await retained.disconnect()
            await publisher.disconnect()
            await small.sync()
            m = await admin.scrape()

    assert m.value(P + "messages_dropped_total", reason="max_packet_size_exceeded") == 1
    assert m.value(P + "messages_dropped_total", reason="queue_full") == 2
    assert m.value(P + "messages_dropped_total", reason="not_authorized") == 1
    assert m.value(P + "publishes_received_total", qos="1") == 6
    assert m.value(P + "publishes_received_total", qos="0") == 1
    assert m.value(P + "publishes_sent_total", qos="0") == 1  # to "small", still connected
    assert m.value(P + "queued_messages") == 1
    assert m.value(P + "sessions", state="offline") == 1
    assert m.value(P + "sessions", state="online") == 1  # "small"
    assert m.value(P + "retained_messages") == 1
    assert m.value(P + "subscriptions") == 2
    assert m.value(P + "connects_total") == 5


class Recorded:
    """A small Python plugin: a sync chain hook, an async notification, one that fails."""

    def __init__(self) -> None:
        self.notified = trio.Event()

    @hookimpl
    def auth_on_subscribe(self, topics: Any) -> Any:
        if any(t == "boom" for t, _q in topics):
            raise RuntimeError("boom")
        return True

    @hookimpl
    async def on_publish(self, topic: str) -> None:
        await trio.lowlevel.checkpoint()
        if topic == "last":
            self.notified.set()


async def test_hook_calls_errors_and_latency_per_plugin_and_hook(admin_broker: Any) -> None:
    plugin = Recorded()
    async with (
        admin_broker(plugins={"recorded": plugin}) as admin,
        open_client(admin.address, client_id="h") as client,
    ):
        assert await client.subscribe([("a", 0)]) == [0]
        assert await client.subscribe([("boom", 0)]) == [0x80]
        for topic in ("x", "y", "last"):
            await client.publish(topic, b"p")
        with trio.fail_after(10):
            await plugin.notified.wait()
        await trio.testing.wait_all_tasks_blocked()
        m = await admin.scrape()
    labels = {"plugin": "recorded", "hook": "auth_on_subscribe"}
    assert m.value(P + "hook_calls_total", **labels) == 2
    assert m.value(P + "hook_errors_total", **labels) == 1
    assert m.value(P + "hook_duration_seconds_count", **labels) == 2
    assert m.value(P + "hook_duration_seconds_sum", **labels) >= 0
    notify = {"plugin": "recorded", "hook": "on_publish"}
    assert m.value(P + "hook_calls_total", **notify) == 3
    assert m.value(P + "hook_errors_total", **notify) == 0
    assert m.types[P + "hook_duration_seconds"] == "summary"


class Contributes:
    """Metrics through plugin_host_metrics (the documented way)."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def plugin_host_metrics(self) -> list[Any]:
        self.calls += 1
        return [
            CounterMetricFamily("contrib_things", "Things done.", value=self.calls),
            GaugeMetricFamily("plugin_host_connections", "A name the broker owns.", value=-1),
        ]


class Broken:
    @hookimpl
    def plugin_host_metrics(self) -> list[Any]:
        raise ValueError("cannot count")


class Clashing:
    @hookimpl
    def plugin_host_metrics(self) -> list[Any]:
        return [CounterMetricFamily("contrib_things", "Same name again.", value=99)]


async def test_plugins_contribute_families_and_faults_are_contained(admin_broker: Any) -> None:
    plugins = {"a_contrib": Contributes(), "b_broken": Broken(), "c_clash": Clashing()}
    async with admin_broker(plugins=plugins) as admin:
        first = await admin.scrape()
        second = await admin.scrape()
    assert first.value("contrib_things_total") == 1
    assert second.value("contrib_things_total") == 2  # read at every scrape
    assert second.value(P + "connections") == 0  # the broker's, not the plugin's -1
    assert list(second.text.split("\n")).count("# TYPE contrib_things_total counter") <= 1


async def test_two_brokers_in_one_process_have_their_own_registries(admin_broker: Any) -> None:
    async with (
        admin_broker(name="one.conf") as one,
        admin_broker(name="two.conf") as two,
        open_client(one.address, client_id="only-on-one") as client,
    ):
        await client.publish("t", b"x", qos=1)
        m1 = await one.scrape()
        m2 = await two.scrape()
    assert m1.value(P + "connects_total") == 1
    assert m2.value(P + "connects_total") == 0
    assert m1.value(P + "publishes_received_total", qos="1") == 1
    assert m2.value(P + "publishes_received_total", qos="1") == 0


async def test_an_async_plugin_host_metrics_is_refused_at_start_up() -> None:
    class AsyncMetrics:
        @hookimpl
        async def plugin_host_metrics(self) -> list[Any]:
            return []

    with pytest.raises(PluginLoadError, match="plugin_host_metrics must be a plain function"):
        PluginManager.discover(Config(), entry_points=(), extra_plugins={"am": AsyncMetrics()})
