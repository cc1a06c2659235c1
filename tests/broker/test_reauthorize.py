"""Host.reauthorize_subscriptions: auth_on_subscribe asked again for a session's subscriptions,
those refused now are removed (VerneMQ's vmq_api.reauthorize_subscriptions)."""

# ruff: noqa: SIM117

from __future__ import annotations

import pytest
import trio

from plugin_host import Deny, hookimpl
from plugin_host.testing import open_client, run_broker


class Revocable:
    """auth_on_subscribe allowing the filters in ``allowed`` (as the user asking)."""

    def __init__(self) -> None:
        self.allowed = {"keep/#", "drop/#", "$share/g/shared/#", "lower/#"}
        self.asked: list[tuple[str | None, list]] = []
        self.unsubscribed: list[list[str]] = []
        self.notified = trio.Event()

    def _answer(self, username, topics):
        self.asked.append((username, list(topics)))
        if all(t[0] in self.allowed for t in topics):
            return True
        if len(topics) == 1 and topics[0][0] == "lower/#":
            return [(topics[0][0], 0x80)]  # a rejection slot, not a chain deny
        return Deny("revoked")

    @hookimpl
    def auth_on_subscribe(self, username, topics):
        return self._answer(username, topics)

    @hookimpl
    def auth_on_subscribe_m5(self, username, topics):
        return self._answer(username, topics)

    @hookimpl
    def on_topic_unsubscribed(self, topics):
        self.unsubscribed.append(topics)
        self.notified.set()


@pytest.mark.parametrize("protocol", [4, 5])
async def test_refused_subscriptions_are_removed_and_the_rest_kept(protocol):
    plugin = Revocable()
    async with run_broker(plugins={"r": plugin}) as broker:
        async with open_client(
            broker.address, client_id="c", protocol=protocol, username="alice"
        ) as client:
            codes = await client.subscribe(
                [("keep/#", 1), ("drop/#", 1), ("$share/g/shared/#", 0), ("lower/#", 0)]
            )
            assert codes == [1, 1, 0, 0]
            plugin.allowed = {"keep/#", "$share/g/shared/#"}
            plugin.asked.clear()
            removed = await broker.host.reauthorize_subscriptions("c", "", "bob")
            assert sorted(removed) == ["drop/#", "lower/#"]
            # one filter at a time, as the given user, in the hook form of the protocol
            assert [(u, [t[0] for t in ts]) for u, ts in plugin.asked] == [
                ("bob", ["keep/#"]),
                ("bob", ["drop/#"]),
                ("bob", ["$share/g/shared/#"]),
                ("bob", ["lower/#"]),
            ]
            assert all(len(ts[0]) == (3 if protocol == 5 else 2) for _, ts in plugin.asked)
            assert plugin.asked[0][1][0][1] == 1  # the granted QoS
            info = broker.host.session("c")
            assert info is not None
            assert sorted(f for f, _ in info.subscriptions) == ["$share/g/shared/#", "keep/#"]
            with trio.fail_after(5):
                await plugin.notified.wait()
            assert sorted(plugin.unsubscribed[0]) == ["drop/#", "lower/#"]
            # the removed filter no longer delivers; the kept one does
            async with open_client(broker.address, client_id="p") as publisher:
                await publisher.publish("drop/x", b"gone", qos=1)
                await publisher.publish("keep/x", b"kept", qos=1)
            message = await client.receive()
            assert (message.topic, message.payload) == ("keep/x", b"kept")


async def test_username_defaults_to_the_sessions_and_unknown_sessions_are_ignored():
    plugin = Revocable()
    async with run_broker(plugins={"r": plugin}) as broker:
        async with open_client(broker.address, client_id="c", username="alice") as client:
            await client.subscribe("keep/#", 0)
            plugin.asked.clear()
            assert await broker.host.reauthorize_subscriptions("c") == []
            assert plugin.asked == [("alice", [("keep/#", 0)])]
        assert await broker.host.reauthorize_subscriptions("nobody") == []


async def test_without_a_subscribe_hook_nothing_changes():
    async with run_broker() as broker:
        async with open_client(broker.address, client_id="c") as client:
            await client.subscribe("a/#", 0)
            assert await broker.host.reauthorize_subscriptions("c") == []
            info = broker.host.session("c")
            assert info is not None and info.subscriptions == [("a/#", 0)]
