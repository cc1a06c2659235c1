"""auth_on_publish on the per-message path: the synchronous answer of plain hookimpls, the
awaited answer of async ones, no argument dict for chains that read none, and hook changes."""

# ruff: noqa: SIM117

from __future__ import annotations

import trio

from plugin_host import Deny, hookimpl
from plugin_host.hooks.results import Outcome
from plugin_host.mqtt import Puback
from plugin_host.testing import open_client, run_broker


class NoArgs:
    """The cheapest hook: takes nothing, allows everything (what the benchmark measures)."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def auth_on_publish(self):
        self.calls += 1
        return True

    @hookimpl
    def auth_on_publish_m5(self):
        self.calls += 1
        return True


class Rewrite:
    """A plain hookimpl that reads arguments and answers with modifiers or a deny."""

    @hookimpl
    def auth_on_publish(self, topic, payload, client_id):
        if topic == "deny/me":
            return Deny("no")
        if topic == "rewrite":
            return {"topic": f"rewritten/{client_id}", "payload": payload.upper()}
        return True

    @hookimpl
    def auth_on_publish_m5(self, topic, payload, client_id):
        return self.auth_on_publish(topic, payload, client_id)


class Slow:
    """An async hookimpl answering later: the client's reader waits for it, in order."""

    @hookimpl
    async def auth_on_publish(self, payload):
        await trio.sleep(0.01)
        return {"payload": payload + b"!"}


async def test_a_hook_reading_no_argument_sees_every_message_in_order():
    plugin = NoArgs()
    async with run_broker(plugins={"p": plugin}) as broker:
        async with open_client(broker.address, client_id="sub") as sub:
            await sub.subscribe("t/#", 1)
            async with open_client(broker.address, client_id="pub") as pub:
                for i in range(50):
                    await pub.publish(f"t/{i}", str(i), qos=0)
                ack = await pub.publish("t/last", b"end", qos=1)
                assert isinstance(ack, Puback) and ack.reason_code == 0
                received = await sub.receive_many(51)
    assert [m.payload for m in received] == [str(i).encode() for i in range(50)] + [b"end"]
    assert plugin.calls == 51


async def test_plain_hook_modifiers_and_denials_take_effect():
    async with run_broker(plugins={"r": Rewrite()}, allow_anonymous=True) as broker:
        async with open_client(broker.address, client_id="sub") as sub:
            await sub.subscribe([("rewritten/#", 0), ("deny/#", 0), ("plain", 0)])
            async with open_client(broker.address, client_id="v5", protocol=5) as pub:
                ack = await pub.publish("deny/me", b"x", qos=1)
                assert isinstance(ack, Puback) and ack.reason_code == 0x87
                await pub.publish("rewrite", b"abc", qos=1)
                await pub.publish("plain", b"as is", qos=1)
            first, second = await sub.receive_many(2)
    assert (first.topic, first.payload) == ("rewritten/v5", b"ABC")
    assert (second.topic, second.payload) == ("plain", b"as is")


async def test_async_hook_answers_are_awaited_in_order():
    async with run_broker(plugins={"s": Slow()}) as broker:
        async with open_client(broker.address, client_id="sub") as sub:
            await sub.subscribe("q", 0)
            async with open_client(broker.address, client_id="pub") as pub:
                for i in range(5):
                    await pub.publish("q", str(i), qos=0)
                received = await sub.receive_many(5)
    assert [m.payload for m in received] == [f"{i}!".encode() for i in range(5)]


async def test_hooks_changed_switches_the_publish_path_from_the_next_batch():
    class Toggle:
        active = True
        calls = 0

        @hookimpl
        def plugin_host_active_hooks(self):
            return {"auth_on_publish_m5"} if self.active else set()

        @hookimpl
        def auth_on_publish_m5(self, topic):
            self.calls += 1
            return Deny("off") if topic == "blocked" else True

    toggle = Toggle()
    async with run_broker(plugins={"t": toggle}) as broker:
        async with open_client(broker.address, client_id="sub") as sub:
            await sub.subscribe("blocked", 0)
            async with open_client(broker.address, client_id="pub", protocol=5) as pub:
                ack = await pub.publish("blocked", b"1", qos=1)
                assert isinstance(ack, Puback) and ack.reason_code == 0x87
                toggle.active = False
                broker.host.hooks_changed()
                ack = await pub.publish("blocked", b"2", qos=1)
                assert isinstance(ack, Puback) and ack.reason_code == 0
                message = await sub.receive()
    assert message.payload == b"2"
    assert toggle.calls == 1


async def test_mqtt5_properties_reach_a_hook_that_reads_them():
    class Props:
        def __init__(self) -> None:
            self.seen: list[dict] = []

        @hookimpl
        def auth_on_publish_m5(self, topic, properties):
            self.seen.append(properties)
            if topic == "tag":
                return {"properties": {**properties, "p_user_property": [("tagged", "yes")]}}
            return True

    class TopicOnly:
        @hookimpl
        def auth_on_publish_m5(self, topic):
            return True

    props = Props()
    user = {"user_property": [("k", "v")], "content_type": "text/plain"}
    async with run_broker(plugins={"p": props}) as broker:
        # the chain reads the properties: the broker converts them for it
        assert broker.broker.publish_props
        async with open_client(broker.address, client_id="sub", protocol=5) as sub:
            await sub.subscribe("tag", 0)
            async with open_client(broker.address, client_id="pub", protocol=5) as pub:
                await pub.publish("plain", b"1", qos=1, properties=user)
                await pub.publish("tag", b"2", qos=1, properties=user)
            message = await sub.receive()
    assert props.seen == [
        {"p_user_property": [("k", "v")], "p_content_type": "text/plain"},
        {"p_user_property": [("k", "v")], "p_content_type": "text/plain"},
    ]
    assert message.properties["user_property"] == [("tagged", "yes")]
    async with run_broker(plugins={"t": TopicOnly()}) as broker:
        # nobody reads them: not converted per message
        assert not broker.broker.publish_props
        async with open_client(broker.address, client_id="pub", protocol=5) as pub:
            ack = await pub.publish("x", b"1", qos=1, properties=user)
            assert isinstance(ack, Puback) and ack.reason_code == 0


class MinimalDispatch:
    """A HookDispatch with only the three required methods (no auth_now / auth_caller /
    arguments): the broker falls back to ``auth`` with full argument dicts."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def implemented(self, hook: str) -> bool:
        return hook.startswith(("auth_on_publish", "on_deliver"))

    async def auth(self, hook: str, args: dict) -> Outcome:
        self.calls.append((hook, args))
        if hook.startswith("auth_on_publish"):
            return Outcome(allowed=True, modifiers={"payload": args["payload"] + b"+p"})
        return Outcome(allowed=True, modifiers={"payload": args["payload"] + b"+d"})

    def notify(self, hook: str, args: dict) -> None:
        pass


async def test_a_dispatcher_without_the_fast_entry_points_gets_full_argument_dicts():
    hooks = MinimalDispatch()
    async with run_broker(hooks=hooks, allow_anonymous=True) as broker:
        for protocol in (4, 5):
            async with open_client(
                broker.address, client_id=f"s{protocol}", protocol=protocol
            ) as sub:
                await sub.subscribe("m", 0)
                async with open_client(
                    broker.address, client_id=f"p{protocol}", protocol=protocol
                ) as pub:
                    await pub.publish("m", b"x", qos=1)
                message = await sub.receive()
            assert message.payload == b"x+p+d"
    published = [args for hook, args in hooks.calls if hook.startswith("auth_on_publish")]
    delivered = [args for hook, args in hooks.calls if hook.startswith("on_deliver")]
    assert [set(a) for a in published] == [
        {"username", "mountpoint", "client_id", "qos", "topic", "payload", "retain"},
        {"username", "mountpoint", "client_id", "qos", "topic", "payload", "retain", "properties"},
    ]
    assert [a["client_id"] for a in delivered] == ["s4", "s5"]
    assert "properties" in delivered[1]
