"""$SYS/<nodename>/... published every systree_interval through the normal routing."""

from __future__ import annotations

from typing import Any

import trio

from plugin_host import hookimpl
from plugin_host.admin.systree import TOPICS
from plugin_host.testing import open_client


class SeesPublishes:
    def __init__(self) -> None:
        self.topics: list[str] = []
        self.seen_sys = trio.Event()

    @hookimpl
    def on_publish(self, topic: str) -> None:
        self.topics.append(topic)
        if topic.startswith("$SYS/"):
            self.seen_sys.set()


async def test_sys_topics_reach_subscribers_and_hooks(admin_broker: Any, paho: Any) -> None:
    hook = SeesPublishes()
    extra = "systree_interval = 100\nnodename = node-a\n"  # milliseconds
    async with (
        admin_broker(extra, plugins={"sees": hook}) as admin,
        open_client(admin.address, client_id="sys") as sys_sub,
        open_client(admin.address, client_id="all") as everything,
    ):
        await sys_sub.subscribe([("$SYS/node-a/#", 0)])
        await everything.subscribe([("#", 0), ("+/node-a/uptime", 0)])
        watcher = paho(admin.address, "paho-sys")
        await watcher.connect()
        await watcher.subscribe("$SYS/+/connections/current")
        await everything.publish("normal/topic", b"x", qos=1)

        # One full round: every topic arrives (QoS 0, not retained).
        expected = {f"$SYS/node-a/{t}" for t in ("version", *TOPICS)}
        got: dict[str, bytes] = {}
        with trio.fail_after(10):
            while not expected <= set(got):
                message = await sys_sub.receive()
                assert message.qos == 0
                assert not message.retain
                got[message.topic] = message.payload
        from_paho = await watcher.receive()
        with trio.fail_after(10):
            await hook.seen_sys.wait()
        # "#" and "+/..." do not match $SYS topics (MQTT 4.7.2): only the normal message.
        await everything.sync()
        leaked = [m.topic for m in everything.pending_messages()]
        await watcher.disconnect()

    assert from_paho.topic == "$SYS/node-a/connections/current"
    assert int(from_paho.payload) >= 3
    assert got["$SYS/node-a/version"]
    assert int(got["$SYS/node-a/connections/current"]) >= 2
    assert int(got["$SYS/node-a/messages/received"]) >= 1
    assert int(got["$SYS/node-a/sessions/online"]) >= 2
    assert int(got["$SYS/node-a/uptime"]) >= 0
    assert leaked == ["normal/topic"]
    assert any(t.startswith("$SYS/node-a/") for t in hook.topics)


async def test_systree_can_be_turned_off(admin_broker: Any) -> None:
    async with admin_broker("systree_enabled = off\nsystree_interval = 50\n") as admin:
        assert admin.running.info.admin.systree is None
    async with admin_broker("systree_interval = 0\n") as admin:
        assert admin.running.info.admin.systree is None
