"""Every hook point wired into the broker, with the deny outcomes of spec section 2.

Plugins here are small in-test Python objects registered through ``run_broker(plugins=...)``
(the real plugin manager and dispatcher).
"""

# Nested `async with` (broker, then its clients) reads better than one long header here.
# ruff: noqa: SIM117

from __future__ import annotations

from typing import Any

import paho.mqtt.client as mqtt
import pytest
import trio
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from plugin_host import Deny, hookimpl
from plugin_host.hooks.forward import forward_hooks
from plugin_host.hooks.specs import CHAIN_HOOKS
from plugin_host.mqtt import Auth, Connack, Puback, Pubrec, Subscription, Will
from plugin_host.settings import ListenerConfig
from plugin_host.testing import ConnectionRefused, HookRecorder, open_client, run_broker


@forward_hooks(CHAIN_HOOKS - {"on_auth_m5"}, to="_decide", awaits=False)
class AuthAll(HookRecorder):
    """Allows everything and records every chain hook call too (on_deliver* and
    on_unsubscribe* say next: unchanged)."""

    def _decide(self, hook: str, args: dict[str, Any]) -> bool | None:
        self.record(hook, **args)
        return True if hook.startswith("auth_on_") else None


def _names(recorder: HookRecorder) -> list[str]:
    return [name for name, _ in recorder.calls]


# ------------------------------------------------------------------------ every hook, once


async def test_every_hook_fires_once_v311_paho(paho_clients):
    rec = AuthAll()
    async with run_broker(plugins={"rec": rec}) as broker:
        c = paho_clients(broker.address, "h3", protocol=mqtt.MQTTv311)
        c.client.username_pw_set("alice", "secret")
        await c.connect()
        await rec.wait_for("on_client_wakeup", client_id="h3")
        assert await c.subscribe("h/#", qos=1)
        await rec.wait_for("on_subscribe")
        await c.publish("h/x", b"data", qos=1)
        message = await c.receive()
        assert message.payload == b"data"
        await rec.wait_for("on_publish")
        await c.unsubscribe("h/#")
        await rec.wait_for("on_topic_unsubscribed")
        await c.disconnect()
        await rec.wait_for("on_client_gone", client_id="h3")

        sid = {"mountpoint": "", "client_id": "h3"}
        calls = {name: args for name, args in rec.calls}
        assert sorted(_names(rec)) == sorted(set(_names(rec))), _names(rec)  # each once
        reg = calls["auth_on_register"]
        assert reg["peer_addr"] == "127.0.0.1" and isinstance(reg["peer_port"], int)
        assert reg | {"peer_port": 0} == {
            "peer_addr": "127.0.0.1",
            "peer_port": 0,
            **sid,
            "username": "alice",
            "password": b"secret",
            "clean_session": True,
            "listener_addr": None,
            "listener_port": None,
            "listener_type": None,
            "client_cert": None,
        }
        assert calls["on_register"] | {"peer_port": 0} == {
            "peer_addr": "127.0.0.1",
            "peer_port": 0,
            **sid,
            "username": "alice",
        }
        assert calls["on_client_wakeup"] == sid
        assert calls["auth_on_subscribe"] == {"username": "alice", **sid, "topics": [("h/#", 1)]}
        assert calls["on_subscribe"] == {"username": "alice", **sid, "topics": [("h/#", 1)]}
        publish = {
            "username": "alice",
            **sid,
            "qos": 1,
            "topic": "h/x",
            "payload": b"data",
            "retain": False,
        }
        assert calls["auth_on_publish"] == publish
        assert calls["on_publish"] == publish
        assert calls["on_deliver"] == publish
        assert calls["on_unsubscribe"] == {"username": "alice", **sid, "topics": ["h/#"]}
        assert calls["on_topic_unsubscribed"] == {**sid, "topics": ["h/#"]}
        assert calls["on_client_gone"] == sid
        assert set(calls) == {
            "auth_on_register",
            "on_register",
            "on_client_wakeup",
            "auth_on_subscribe",
            "on_subscribe",
            "auth_on_publish",
            "on_publish",
            "on_deliver",
            "on_unsubscribe",
            "on_topic_unsubscribed",
            "on_client_gone",
        }


async def test_every_hook_fires_once_v5_paho(paho_clients):
    rec = AuthAll()
    async with run_broker(plugins={"rec": rec}) as broker:
        c = paho_clients(broker.address, "h5", protocol=mqtt.MQTTv5)
        c.client.username_pw_set("bob", "pw")
        props = Properties(PacketTypes.CONNECT)
        props.UserProperty = ("hello", "world")
        await c.connect(properties=props)
        await rec.wait_for("on_client_wakeup", client_id="h5")
        sprops = Properties(PacketTypes.SUBSCRIBE)
        sprops.SubscriptionIdentifier = 5
        from paho.mqtt.subscribeoptions import SubscribeOptions

        await c.subscribe("h/#", options=SubscribeOptions(qos=2, noLocal=False), properties=sprops)
        await rec.wait_for("on_subscribe_m5")
        pprops = Properties(PacketTypes.PUBLISH)
        pprops.UserProperty = [("a", "1"), ("b", "2")]
        await c.publish("h/y", b"v5data", qos=2, properties=pprops)
        message = await c.receive()
        assert message.payload == b"v5data"
        await rec.wait_for("on_publish_m5")
        await c.unsubscribe("h/#")
        await rec.wait_for("on_topic_unsubscribed")
        await c.disconnect()
        await rec.wait_for("on_client_gone", client_id="h5")

        sid = {"mountpoint": "", "client_id": "h5"}
        calls = {name: args for name, args in rec.calls}
        assert sorted(_names(rec)) == sorted(set(_names(rec))), _names(rec)
        reg = calls["auth_on_register_m5"]
        assert reg["username"] == "bob" and reg["password"] == b"pw"
        assert reg["clean_start"] is True
        assert reg["properties"]["p_user_property"] == [("hello", "world")]
        assert calls["on_register_m5"]["client_id"] == "h5"
        assert isinstance(calls["on_register_m5"]["properties"], dict)
        sub = calls["auth_on_subscribe_m5"]
        assert sub["topics"] == [
            ("h/#", 2, {"no_local": False, "rap": False, "retain_handling": "send_retain"})
        ]
        assert sub["properties"] == {"p_subscription_id": [5]}
        assert calls["on_subscribe_m5"]["topics"] == sub["topics"]
        pub = calls["auth_on_publish_m5"]
        assert pub | {"properties": None} == {
            "username": "bob",
            **sid,
            "qos": 2,
            "topic": "h/y",
            "payload": b"v5data",
            "retain": False,
            "properties": None,
        }
        assert pub["properties"] == {"p_user_property": [("a", "1"), ("b", "2")]}
        assert calls["on_publish_m5"]["properties"]["p_user_property"] == [("a", "1"), ("b", "2")]
        deliver = calls["on_deliver_m5"]
        assert deliver["qos"] == 2 and deliver["topic"] == "h/y"
        assert deliver["properties"]["p_user_property"] == [("a", "1"), ("b", "2")]
        assert calls["on_unsubscribe_m5"]["topics"] == ["h/#"]
        assert set(calls) == {
            "auth_on_register_m5",
            "on_register_m5",
            "on_client_wakeup",
            "auth_on_subscribe_m5",
            "on_subscribe_m5",
            "auth_on_publish_m5",
            "on_publish_m5",
            "on_deliver_m5",
            "on_unsubscribe_m5",
            "on_topic_unsubscribed",
            "on_client_gone",
        }


async def test_offline_and_expiry_hooks():
    rec = HookRecorder()
    async with run_broker(plugins={"rec": rec}, max_offline_messages=1) as broker:
        props = {"session_expiry_interval": 1}
        async with open_client(
            broker.address, client_id="o", protocol=5, clean_start=False, properties=props
        ) as c:
            await c.subscribe("o", qos=1)
            await c.close()
        await rec.wait_for("on_client_offline", client_id="o")
        async with open_client(broker.address, client_id="p") as p:
            await p.publish("o", b"1", qos=1)
            await p.publish("o", b"2", qos=1)
        offline = await rec.wait_for("on_offline_message", payload=b"1")
        assert offline == {
            "mountpoint": "",
            "client_id": "o",
            "qos": 1,
            "topic": "o",
            "payload": b"1",
            "retain": False,
        }
        drop = await rec.wait_for("on_message_drop", reason="queue_full")
        assert drop["payload"] == b"1" and drop["client_id"] == "o"
        await rec.wait_for("on_session_expired", client_id="o", timeout=5)
        assert len(rec.of("on_session_expired")) == 1


async def test_on_deliver_for_retained_and_offline_replays():
    rec = AuthAll()
    async with run_broker(plugins={"rec": rec}) as broker:
        async with open_client(broker.address, client_id="s", clean_start=False) as s:
            await s.subscribe("q", qos=1)
            await s.disconnect()
        async with open_client(broker.address, client_id="p") as p:
            await p.publish("r", b"retained", qos=1, retain=True)
            await p.publish("q", b"queued", qos=1)
        async with open_client(broker.address, client_id="s", clean_start=False) as s:
            assert (await s.receive()).payload == b"queued"
            await s.subscribe("r", qos=1)
            message = await s.receive()
            assert message.payload == b"retained" and message.retain
        delivered = [a for a in rec.of("on_deliver") if a["client_id"] == "s"]
        assert [(d["payload"], d["retain"]) for d in delivered] == [
            (b"queued", False),
            (b"retained", True),
        ]


# ------------------------------------------------------------------------ auth_on_register


class Register:
    def __init__(self, result):
        self.result = result
        self.calls = 0

    @hookimpl
    def auth_on_register(self, client_id):
        self.calls += 1
        return self.result

    @hookimpl
    def auth_on_register_m5(self, client_id):
        self.calls += 1
        return self.result


@pytest.mark.parametrize(
    ("result", "v3", "v5"),
    [
        (False, 5, 0x86),
        (None, 5, 0x86),  # chain exhausted: default deny
        (Deny("bad password", invalid_credentials=True), 4, 0x86),
        (Deny("banned", reason_code=0x8A), 5, 0x8A),
        ("nonsense", 5, 0x86),  # invalid result: deny
    ],
)
async def test_auth_on_register_deny(result, v3, v5):
    async with run_broker(plugins={"reg": Register(result)}) as broker:
        with pytest.raises(ConnectionRefused) as info:
            async with open_client(broker.address, client_id="x", protocol=4):
                pass
        assert info.value.reason_code == v3
        with pytest.raises(ConnectionRefused) as info:
            async with open_client(broker.address, client_id="x", protocol=5):
                pass
        assert info.value.reason_code == v5


async def test_auth_on_register_deny_reason_string_v5():
    plugin = Register(Deny("go away", reason_code=0x9C, properties={"p_server_ref": "other"}))
    async with run_broker(plugins={"reg": plugin}) as broker:
        with pytest.raises(ConnectionRefused) as info:
            async with open_client(broker.address, client_id="x", protocol=5):
                pass
        connack = info.value.connack
        assert connack.reason_code == 0x9C
        assert connack.properties["server_reference"] == "other"
        assert connack.properties["reason_string"] == "go away"


async def test_allow_anonymous_skips_auth_on_register():
    plugin = Register(False)
    async with run_broker(plugins={"reg": plugin}, allow_anonymous=True) as broker:
        async with open_client(broker.address, client_id="x"):
            pass
    assert plugin.calls == 0


async def test_listener_allow_anonymous_override():
    plugin = Register(False)
    listeners = [
        ListenerConfig(
            kind="tcp", name="open", host="127.0.0.1", port=0, allow_anonymous_override=True
        ),
        ListenerConfig(kind="tcp", name="closed", host="127.0.0.1", port=0),
    ]
    async with run_broker(plugins={"reg": plugin}, listeners=listeners) as broker:
        async with open_client(broker.listener_address("open"), client_id="x"):
            pass
        with pytest.raises(ConnectionRefused):
            async with open_client(broker.listener_address("closed"), client_id="y"):
                pass
    assert plugin.calls == 1


async def test_no_auth_plugin_and_no_anonymous_refuses():
    async with run_broker(allow_anonymous=False) as broker:
        with pytest.raises(ConnectionRefused) as info:
            async with open_client(broker.address, client_id="x"):
                pass
        assert info.value.reason_code == 5


async def test_auth_on_register_modifiers():
    class Mods:
        @hookimpl
        def auth_on_register_m5(self, client_id):
            return {
                "mountpoint": "tenant/",
                "client_id": "renamed-" + client_id,
                "username": "mapped",
                "max_inflight_messages": 1,
                "properties": {"p_user_property": [("tier", "gold")]},
            }

        @hookimpl
        def auth_on_register(self, client_id):
            return {"subscriber_id": {"mountpoint": "tenant/", "client_id": "v3-" + client_id}}

    async with (
        run_broker(plugins={"mods": Mods()}) as broker,
        open_client(broker.address, client_id="c", protocol=5, auto_ack=False) as c,
    ):
        assert c.connack.properties["user_property"] == [("tier", "gold")]
        info = broker.host.session("renamed-c", "tenant/")
        assert info is not None and info.username == "mapped"
        await c.subscribe("t", qos=1)
        async with open_client(broker.address, client_id="d") as d:
            # Same mountpoint: d (renamed v3-d) reaches c.
            assert broker.host.session("v3-d", "tenant/") is not None
            await d.publish("t", b"1", qos=1)
            await d.publish("t", b"2", qos=1)
        first = await c.receive()
        await c.sync()
        assert c.pending_messages() == []  # max_inflight_messages = 1
        await c.ack(first)
        assert (await c.receive()).payload == b"2"


async def test_auth_on_register_cancelled_when_client_goes_away():
    state = {"started": trio.Event(), "cancelled": trio.Event()}

    class Slow:
        @hookimpl
        async def auth_on_register(self, client_id):
            state["started"].set()
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                state["cancelled"].set()
                raise

    async with run_broker(plugins={"slow": Slow()}, hook_timeout=30) as broker:
        async with open_client(broker.address, client_id="x", wait_connack=False) as c:
            with trio.fail_after(5):
                await state["started"].wait()
            await c.close()
        with trio.fail_after(5):
            await state["cancelled"].wait()
        assert broker.broker.counters.auth_cancelled == 1


async def test_slow_auth_hook_blocks_only_its_client():
    release = trio.Event()

    class SlowFor:
        @hookimpl
        async def auth_on_publish(self, client_id, topic):
            if client_id == "slow":
                await release.wait()
            return True

    async with run_broker(plugins={"s": SlowFor()}, hook_timeout=30) as broker:
        async with (
            open_client(broker.address, client_id="slow") as slow,
            open_client(broker.address, client_id="fast") as fast,
        ):
            await fast.subscribe("t", qos=1)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow.publish, "t", b"slow", 1)
                for i in range(5):
                    assert isinstance(await fast.publish("t", str(i).encode(), qos=1), Puback)
                got = await fast.receive_many(5)
                assert [m.payload for m in got] == [b"0", b"1", b"2", b"3", b"4"]
                release.set()
            assert (await fast.receive()).payload == b"slow"


# ------------------------------------------------------------------------ auth_on_publish


class PublishPolicy:
    def __init__(self, result):
        self.result = result

    @hookimpl
    def auth_on_publish(self, topic):
        return self.result if topic.startswith("deny") else True

    @hookimpl
    def auth_on_publish_m5(self, topic):
        return self.result if topic.startswith("deny") else True


async def test_publish_deny_v311_disconnects():
    async with run_broker(plugins={"p": PublishPolicy(False)}) as broker:
        async with open_client(broker.address, client_id="c", protocol=4) as c:
            await c.publish("deny/x", b"1", qos=0)
            await c.wait_closed()


async def test_publish_deny_v31_pretends_success():
    async with run_broker(plugins={"p": PublishPolicy(False)}) as broker:
        async with open_client(broker.address, client_id="c", protocol=3) as c:
            await c.subscribe("#", qos=2)
            assert isinstance(await c.publish("deny/1", b"1", qos=1), Puback)
            assert (await c.publish("deny/2", b"2", qos=2)).reason_code == 0
            await c.publish("ok", b"3", qos=1)
            assert (await c.receive()).topic == "ok"  # the denied ones were dropped


async def test_publish_deny_v5_reason_codes():
    async with run_broker(plugins={"p": PublishPolicy(Deny("nope"))}) as broker:
        async with open_client(broker.address, client_id="c", protocol=5) as c:
            await c.subscribe("#", qos=1)
            ack = await c.publish("deny/1", b"1", qos=1)
            assert isinstance(ack, Puback) and ack.reason_code == 0x87
            assert ack.properties["reason_string"] == "nope"
            rec = await c.publish("deny/2", b"2", qos=2)
            assert isinstance(rec, Pubrec) and rec.reason_code == 0x87
            await c.publish("deny/0", b"0", qos=0)  # silently dropped
            await c.publish("ok", b"ok", qos=1)
            assert (await c.receive()).topic == "ok"
            assert not c.closed.is_set()
    async with run_broker(plugins={"p": PublishPolicy(Deny("quota", reason_code=0x97))}) as b:
        async with open_client(
            b.address, client_id="c", protocol=5, properties={"request_problem_information": 0}
        ) as c:
            ack = await c.publish("deny/1", b"1", qos=1)
            assert ack.reason_code == 0x97 and "reason_string" not in ack.properties


async def test_publish_modifiers():
    class Rewrite:
        @hookimpl
        def auth_on_publish(self, topic, payload):
            if topic == "in":
                return {"topic": "out", "payload": payload.upper(), "qos": 0, "retain": True}
            return True

        @hookimpl
        def auth_on_publish_m5(self, topic):
            if topic == "in5":
                return {"topic": "out", "properties": {"p_user_property": [("set", "by hook")]}}
            return True

    async with run_broker(plugins={"r": Rewrite()}) as broker:
        async with (
            open_client(broker.address, client_id="s", protocol=5) as s,
            open_client(broker.address, client_id="p3", protocol=4) as p3,
            open_client(broker.address, client_id="p5", protocol=5) as p5,
        ):
            await s.subscribe(Subscription("out", 1, retain_as_published=True))
            await p3.publish("in", b"hello", qos=1)
            message = await s.receive()
            assert (message.topic, message.payload, message.qos, message.retain) == (
                "out",
                b"HELLO",
                0,
                True,
            )
            await p5.publish("in5", b"x", qos=1, properties={"user_property": [("a", "b")]})
            message = await s.receive()
            assert message.topic == "out"
            assert message.properties["user_property"] == [("set", "by hook")]


async def test_will_authorised_at_connect():
    async with run_broker(plugins={"p": PublishPolicy(False)}) as broker:
        with pytest.raises(ConnectionRefused) as info:
            async with open_client(
                broker.address, client_id="w", protocol=4, will=Will("deny/will", b"x")
            ):
                pass
        assert info.value.reason_code == 5
        with pytest.raises(ConnectionRefused) as info:
            async with open_client(
                broker.address, client_id="w", protocol=5, will=Will("deny/will", b"x")
            ):
                pass
        assert info.value.reason_code == 0x87
        async with open_client(broker.address, client_id="w", will=Will("fine", b"x")):
            pass


# ------------------------------------------------------------------------ subscribe


async def test_subscribe_deny_and_rewrite():
    class Sub:
        @hookimpl
        def auth_on_subscribe(self, topics):
            if topics[0][0] == "deny":
                return False
            return [("rewritten/" + t, q) if t != "reject" else (t, 128) for t, q in topics]

        @hookimpl
        def auth_on_subscribe_m5(self, topics):
            if topics[0][0] == "deny":
                return Deny("no", reason_code=0x97)
            return [(t, 0x87 if t == "reject" else q, o) for t, q, o in topics]

    async with run_broker(plugins={"s": Sub()}) as broker:
        async with open_client(broker.address, client_id="c3", protocol=4) as c:
            assert await c.subscribe([("deny", 1), ("x", 1)]) == [0x80, 0x80]
            assert await c.subscribe([("a", 1), ("reject", 2), ("b", 2)]) == [1, 0x80, 2]
            info = broker.host.session("c3")
            assert sorted(f for f, _ in info.subscriptions) == ["rewritten/a", "rewritten/b"]
            assert not c.closed.is_set()
        async with open_client(broker.address, client_id="c5", protocol=5) as c:
            assert await c.subscribe([("deny", 1)]) == [0x97]
            assert await c.subscribe([("a", 1), ("reject", 1)]) == [1, 0x87]


async def test_on_unsubscribe_rewrite():
    class Unsub:
        @hookimpl
        def on_unsubscribe(self, topics):
            return ["real/" + t for t in topics]

    async with run_broker(plugins={"u": Unsub()}) as broker:
        async with open_client(broker.address, client_id="c") as c:
            await c.subscribe([("real/a", 1), ("a", 1)])
            await c.unsubscribe("a")
            info = broker.host.session("c")
            assert [f for f, _ in info.subscriptions] == ["a"]


async def test_on_deliver_modifies_per_subscriber():
    class Deliver:
        @hookimpl
        def on_deliver(self, client_id, payload):
            if client_id == "changed":
                return {"payload": b"[" + payload + b"]", "topic": "new/topic"}
            return None

    async with run_broker(plugins={"d": Deliver()}) as broker:
        async with (
            open_client(broker.address, client_id="changed") as a,
            open_client(broker.address, client_id="plain") as b,
        ):
            await a.subscribe("t", qos=1)
            await b.subscribe("t", qos=1)
            await b.publish("t", b"x", qos=1)
            ma, mb = await a.receive(), await b.receive()
            assert (ma.topic, ma.payload) == ("new/topic", b"[x]")
            assert (mb.topic, mb.payload) == ("t", b"x")


async def test_hook_exception_is_a_deny_and_contained():
    class Broken:
        @hookimpl
        def auth_on_publish(self, topic):
            raise RuntimeError("plugin bug")

        @hookimpl
        def auth_on_publish_m5(self, topic):
            raise RuntimeError("plugin bug")

    async with run_broker(plugins={"b": Broken()}) as broker:
        async with open_client(broker.address, client_id="c", protocol=3) as c:
            ack = await c.publish("x", b"1", qos=1)
            assert isinstance(ack, Puback)  # v3.1: pretend success, message dropped
        async with open_client(broker.address, client_id="c5", protocol=5) as c:
            ack = await c.publish("x", b"1", qos=1)
            assert ack.reason_code == 0x87


# ------------------------------------------------------------------------ on_auth_m5


class Challenge:
    """SCRAM-like toy: first round asks for a response, the second checks it."""

    @hookimpl
    def on_auth_m5(self, properties):
        data = properties.get("p_authentication_data")
        if properties["p_authentication_method"] != "toy":
            return Deny("bad method", reason_code=0x8C)
        if data == b"hello":
            return {
                "reason_code": "continue_authentication",
                "properties": {"p_authentication_method": "toy", "p_authentication_data": b"?"},
            }
        if data == b"answer":
            return {"reason_code": 0, "properties": {"p_authentication_data": b"welcome"}}
        return Deny("wrong", reason_code=0x87)

    @hookimpl
    def auth_on_register_m5(self):
        return True


async def test_enhanced_authentication_exchange_and_reauth():
    async with run_broker(plugins={"c": Challenge()}) as broker:
        props = {"authentication_method": "toy", "authentication_data": b"hello"}
        async with open_client(
            broker.address, client_id="e", protocol=5, properties=props, wait_connack=False
        ) as c:
            challenge = await c.receive_packet(Auth)
            assert challenge.reason_code == 0x18
            assert challenge.properties["authentication_data"] == b"?"
            await c.send_packet(
                Auth(0x18, {"authentication_method": "toy", "authentication_data": b"answer"})
            )
            connack = await c.receive_packet(Connack)
            assert connack.reason_code == 0
            assert connack.properties["authentication_method"] == "toy"
            assert connack.properties["authentication_data"] == b"welcome"
            # Re-authentication while connected.
            await c.send_packet(
                Auth(0x19, {"authentication_method": "toy", "authentication_data": b"answer"})
            )
            done = await c.receive_packet(Auth)
            assert done.reason_code == 0
            await c.send_packet(
                Auth(0x19, {"authentication_method": "toy", "authentication_data": b"bad"})
            )
            await c.wait_closed()
            assert c.server_disconnect.reason_code == 0x87


async def test_enhanced_authentication_failures():
    async with run_broker(plugins={"c": Challenge()}) as broker:
        props = {"authentication_method": "other"}
        with pytest.raises(ConnectionRefused) as info:
            async with open_client(broker.address, client_id="e", protocol=5, properties=props):
                pass
        assert info.value.reason_code == 0x8C
    async with run_broker() as broker:
        with pytest.raises(ConnectionRefused) as info:
            async with open_client(
                broker.address,
                client_id="e",
                protocol=5,
                properties={"authentication_method": "toy"},
            ):
                pass
        assert info.value.reason_code == 0x8C  # nobody implements on_auth_m5


async def test_forward_connection_opts():
    rec = AuthAll()
    listeners = [
        ListenerConfig(
            kind="tcp", name="fwd", host="127.0.0.1", port=0, forward_connection_opts=True
        )
    ]
    async with run_broker(plugins={"rec": rec}, listeners=listeners) as broker:
        async with open_client(broker.address, client_id="f"):
            pass
        (args,) = rec.of("auth_on_register")
        assert args["listener_addr"] == "127.0.0.1"
        assert args["listener_port"] == broker.address[1]
        assert args["listener_type"] == "mqtt"
        assert args["client_cert"] is None
