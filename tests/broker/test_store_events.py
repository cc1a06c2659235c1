"""The state-change events a durable store observes (plugin_host.broker.store.SessionStore)."""

from __future__ import annotations

from typing import Any

from plugin_host.broker.store import StoreObserver
from plugin_host.mqtt import encode_publish
from plugin_host.testing import open_client, run_broker


class RecordingStore(StoreObserver):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def session_saved(self, session):
        self.events.append(("saved", session.client_id, session.expiry_interval))

    def session_deleted(self, session):
        self.events.append(("deleted", session.client_id))

    def subscription_added(self, session, opts):
        self.events.append(("sub+", session.client_id, opts.full_filter, opts.qos))

    def subscription_removed(self, session, full_filter):
        self.events.append(("sub-", session.client_id, full_filter))

    def message_queued(self, session, entry):
        self.events.append(("queued", session.client_id, entry[0].payload, entry[1]))

    def message_unqueued(self, session, entry, reason):
        self.events.append(("unqueued", session.client_id, entry[0].payload, reason))

    def inflight_added(self, session, packet_id, entry):
        self.events.append(("inflight+", session.client_id, entry.message.payload))

    def inflight_changed(self, session, packet_id, entry):
        self.events.append(("pubrec", session.client_id, entry.message.payload))

    def inflight_removed(self, session, packet_id):
        self.events.append(("inflight-", session.client_id))

    def incoming_qos2_changed(self, session, packet_id, present):
        self.events.append(("in-qos2", session.client_id, packet_id, present))

    def retained_changed(self, mountpoint, topic, message):
        self.events.append(("retained", topic, None if message is None else message.payload))


async def test_store_sees_every_state_change():
    store = RecordingStore()
    async with run_broker() as broker:
        broker.broker.attach_store(store)
        async with open_client(broker.address, client_id="s", clean_start=False) as s:
            await s.subscribe("q", qos=2)
            await s.disconnect()
        async with open_client(broker.address, client_id="p") as p:
            await p.publish("q", b"one", qos=1)
            await p.send_raw(encode_publish("q", b"two", 2, False, False, 9))
            await p.release(9)
            await p.publish("r", b"kept", qos=1, retain=True)
            await p.publish("r", b"", qos=1, retain=True)
        async with open_client(broker.address, client_id="s", clean_start=False) as s:
            got = await s.receive_many(2)
            assert [m.payload for m in got] == [b"one", b"two"]
            await s.sync()
            await s.unsubscribe("q")
        async with open_client(broker.address, client_id="s", clean_start=True) as s:
            await s.disconnect()
    events = store.events
    s_events = [e for e in events if e[1] == "s"]
    # saved at CONNECT, again once online (attach), and when it goes offline (deadline, will)
    assert s_events[:3] == [("saved", "s", None), ("saved", "s", None), ("sub+", "s", "q", 2)]
    assert s_events[3] == ("saved", "s", None)
    assert ("queued", "s", b"one", 1) in s_events
    assert ("queued", "s", b"two", 2) in s_events
    assert ("unqueued", "s", b"one", "sent") in s_events
    assert ("inflight+", "s", b"two") in s_events
    assert ("pubrec", "s", b"two") in s_events
    assert s_events.count(("inflight-", "s")) == 2
    assert ("sub-", "s", "q") in s_events
    assert ("deleted", "s") in s_events
    assert ("in-qos2", "p", 9, True) in events and ("in-qos2", "p", 9, False) in events
    assert ("retained", "r", b"kept") in events and ("retained", "r", None) in events
