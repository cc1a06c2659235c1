"""A broker restarted on the same store comes back with its sessions, queues and retained
messages (graceful restarts, in-process; crashes are in test_crash.py)."""

from __future__ import annotations

import time

import pytest

from plugin_host.mqtt import Pubrel, Subscription, encode_publish, encode_pubrec
from plugin_host.settings import Config, PersistenceConfig
from plugin_host.testing import open_client, run_broker

V5_SESSION = {"session_expiry_interval": 3600}


@pytest.mark.parametrize("sync", ["batch", "always", "off"])
async def test_sessions_queues_and_retained_messages_survive_a_restart(store_dir, sync):
    props = {
        "content_type": "text/plain",
        "user_property": [("a", "1"), ("a", "2")],
        "correlation_data": b"\x00c",
        "message_expiry_interval": 3600,
    }
    async with run_broker(persistence_dir=store_dir, persistence_sync=sync) as broker:
        async with open_client(broker.address, client_id="v3", clean_start=False) as s:
            assert await s.subscribe([("q/#", 2), ("x", 1)]) == [2, 1]
            await s.disconnect()
        async with open_client(
            broker.address, client_id="v5", protocol=5, clean_start=False, properties=V5_SESSION
        ) as s:
            sub = Subscription("q/+", 1, no_local=True, retain_as_published=True)
            assert await s.subscribe(sub, properties={"subscription_identifier": 7}) == [1]
            assert await s.subscribe("$share/g/q/#", 2) == [2]
            await s.disconnect()
        async with open_client(broker.address, client_id="pub", protocol=5) as p:
            await p.publish("q/a", b"one", qos=1, properties=props)
            await p.publish("q/a", b"two", qos=2)
            await p.publish("q/a", b"zero", qos=0)  # not kept for offline sessions
            await p.publish("r/t", b"kept", qos=1, retain=True, properties=props)
            await p.publish("r/gone", b"x", qos=1, retain=True)
            await p.publish("r/gone", b"", qos=1, retain=True)  # cleared
    assert (store_dir / "plugin-host.db").exists()

    async with run_broker(persistence_dir=store_dir, persistence_sync=sync) as broker:
        assert set(broker.broker.sessions) == {("", "v3"), ("", "v5")}
        async with open_client(broker.address, client_id="v3", clean_start=False) as s:
            assert s.connack.session_present
            got = await s.receive_many(2)
            assert [(m.payload, m.qos) for m in got] == [(b"one", 1), (b"two", 2)]
            await s.sync()
            assert s.pending_messages() == []
        async with open_client(
            broker.address, client_id="v5", protocol=5, clean_start=False, properties=V5_SESSION
        ) as s:
            assert s.connack.session_present
            got = await s.receive_many(4)
            by_payload = {m.payload: m for m in got}
            assert sorted(by_payload) == [b"one", b"two"]  # via q/+ and via $share/g/q/#
            one = next(m for m in got if m.payload == b"one" and m.qos == 1)
            assert one.properties["subscription_identifier"] == [7]
            assert one.properties["user_property"] == [("a", "1"), ("a", "2")]
            assert one.properties["content_type"] == "text/plain"
            assert one.properties["correlation_data"] == b"\x00c"
            assert 3500 < one.properties["message_expiry_interval"] <= 3600
            # The subscriptions came back without resubscribing: new messages arrive.
            async with open_client(broker.address, client_id="pub2") as p:
                await p.publish("q/b", b"after", qos=1)
            after = await s.receive_many(2)
            assert {m.payload for m in after} == {b"after"}
        async with open_client(broker.address, client_id="fresh", protocol=5) as c:
            await c.subscribe("r/#", 1)
            kept = await c.receive()
            assert (kept.topic, kept.payload, kept.retain) == ("r/t", b"kept", True)
            assert kept.properties["user_property"] == [("a", "1"), ("a", "2")]
            assert 3500 < kept.properties["message_expiry_interval"] <= 3600
            await c.sync()
            assert c.pending_messages() == []


async def test_persistence_off_keeps_nothing(tmp_path):
    directory = tmp_path / "data"
    config = Config(persistence=PersistenceConfig(enabled=False, dir=directory))
    async with run_broker(config, allow_anonymous=True) as broker:
        assert broker.store is None
        async with open_client(broker.address, client_id="s", clean_start=False) as s:
            await s.subscribe("q", 1)
        async with open_client(broker.address) as p:
            await p.publish("q", b"m", qos=1)
            await p.publish("r", b"kept", qos=1, retain=True)
    async with (
        run_broker(config, allow_anonymous=True) as broker,
        open_client(broker.address, client_id="s", clean_start=False) as s,
    ):
        assert not s.connack.session_present  # lost with the restart
        await s.subscribe("r", 1)
        await s.sync()
        assert s.pending_messages() == []  # the queued and the retained message too
    assert not directory.exists()


async def test_messages_in_flight_to_a_client_are_resent_with_dup_after_a_restart(store_dir):
    async with (
        run_broker(persistence_dir=store_dir) as broker,
        open_client(broker.address, client_id="s", clean_start=False, auto_ack=False) as s,
    ):
        await s.subscribe([("one", 1), ("two", 2), ("three", 2)])
        async with open_client(broker.address) as p:
            await p.publish("one", b"1", qos=1)
            await p.publish("two", b"2", qos=2)
            await p.publish("three", b"3", qos=2)
        first = await s.receive_many(3)
        pids = {m.payload: m.packet_id for m in first}
        # PUBREC for "3": the broker records it and answers PUBREL (once durable).
        await s.send_raw(encode_pubrec(pids[b"3"], 4))
        rel = await s.receive_packet(Pubrel)
        assert rel.packet_id == pids[b"3"]
    # (a fresh client-side session, so that the test sees the re-sent QoS 2 PUBLISH too)
    async with (
        run_broker(persistence_dir=store_dir) as broker,
        open_client(broker.address, client_id="s", clean_start=False, auto_ack=False) as s,
    ):
        assert s.connack.session_present
        rel = await s.receive_packet(Pubrel)
        assert rel.packet_id == pids[b"3"]
        resent = {m.payload: m for m in await s.receive_many(2)}
        for payload in (b"1", b"2"):
            assert resent[payload].dup
            assert resent[payload].packet_id == pids[payload]
        await s.sync()
        assert s.pending_messages() == []


async def test_a_qos2_publish_waiting_for_pubrel_survives_a_restart(store_dir):
    async with run_broker(persistence_dir=store_dir) as broker:
        async with open_client(broker.address, client_id="s", clean_start=False) as s:
            await s.subscribe("q", 2)
            await s.disconnect()
        async with open_client(broker.address, client_id="p", clean_start=False) as p:
            await p.send_raw(encode_publish("q", b"once", 2, False, False, 77))
            from plugin_host.mqtt import Pubrec

            rec = await p.receive_packet(Pubrec)
            assert rec.packet_id == 77
            # no PUBREL yet: the broker must remember packet id 77
    async with run_broker(persistence_dir=store_dir) as broker:
        async with open_client(broker.address, client_id="p", clean_start=False) as p:
            assert p.connack.session_present
            # The publisher did not see the PUBREC: it re-sends the PUBLISH (DUP).
            reply = await p.publish("q", b"once", qos=2, packet_id=77, dup=True)
            assert reply.packet_id == 77  # PUBREC, then PUBCOMP after our PUBREL
        async with open_client(broker.address, client_id="s", clean_start=False) as s:
            message = await s.receive()
            assert message.payload == b"once"
            await s.sync()
            assert s.pending_messages() == []  # routed once only


async def test_expiry_counts_across_a_restart(store_dir, store_file):
    async with run_broker(persistence_dir=store_dir) as broker:
        for client_id in ("keeps", "expired", "was-online"):
            async with open_client(
                broker.address,
                client_id=client_id,
                protocol=5,
                clean_start=False,
                properties=V5_SESSION,
            ) as s:
                await s.subscribe("q/#", 1)
                await s.disconnect()
        async with open_client(broker.address, protocol=5) as p:
            await p.publish("q/old", b"old", qos=1, properties={"message_expiry_interval": 3600})
            await p.publish("q/new", b"new", qos=1, properties={"message_expiry_interval": 3600})
            await p.publish(
                "r/old", b"r", qos=1, retain=True, properties={"message_expiry_interval": 3600}
            )
    past = time.time() - 10
    store_file.execute("UPDATE sessions SET expires_at = ? WHERE client_id = 'expired'", (past,))
    # "was-online": connected when the broker died (no deadline), broker down for 2 hours.
    store_file.execute("UPDATE sessions SET expires_at = NULL WHERE client_id = 'was-online'")
    store_file.execute("UPDATE meta SET value = ? WHERE key = 'alive_at'", (time.time() - 7200,))
    store_file.execute("UPDATE messages SET expires_at = ? WHERE topic = 'q/old'", (past,))
    store_file.execute("UPDATE retained SET expires_at = ? WHERE topic = 'r/old'", (past,))
    async with run_broker(persistence_dir=store_dir) as broker:
        assert set(broker.broker.sessions) == {("", "keeps")}
        async with open_client(
            broker.address, client_id="expired", protocol=5, clean_start=False
        ) as s:
            assert not s.connack.session_present
        async with open_client(
            broker.address,
            client_id="keeps",
            protocol=5,
            clean_start=False,
            properties=V5_SESSION,
        ) as s:
            assert s.connack.session_present
            message = await s.receive()
            assert message.payload == b"new"
            assert 3500 < message.properties["message_expiry_interval"] <= 3600
            await s.sync()
            assert s.pending_messages() == []
            await s.subscribe("r/#", 1)
            await s.sync()
            assert s.pending_messages() == []
    # What expired is gone from the store as well.
    assert store_file.query("SELECT client_id FROM sessions") == [("keeps",)]
    assert store_file.count("retained") == 0
    assert store_file.query("SELECT topic FROM messages") == []


async def test_the_offline_queue_on_disk_is_bounded_by_max_offline_messages(store_dir, store_file):
    async with run_broker(persistence_dir=store_dir, max_offline_messages=5) as broker:
        async with open_client(broker.address, client_id="s", clean_start=False) as s:
            await s.subscribe("q", 1)
            await s.disconnect()
        async with open_client(broker.address) as p:
            for i in range(50):
                await p.publish("q", str(i).encode(), qos=1)
    assert store_file.count("deliveries") == 5
    assert sorted(int(p) for (p,) in store_file.query("SELECT payload FROM messages")) == [
        45,
        46,
        47,
        48,
        49,
    ]
    async with (
        run_broker(persistence_dir=store_dir, max_offline_messages=3) as broker,
        open_client(broker.address, client_id="s", clean_start=False) as s,
    ):
        got = await s.receive_many(3)  # the limit shrank: the newest three are kept
        assert [m.payload for m in got] == [b"47", b"48", b"49"]
        await s.sync()
    assert store_file.count("deliveries") == 0
    assert store_file.count("messages") == 0


async def test_a_delayed_will_is_kept_and_sent_when_due(store_dir, store_file):
    from plugin_host.mqtt import Will

    async with run_broker(persistence_dir=store_dir) as broker:
        async with open_client(broker.address, client_id="watch", clean_start=False) as w:
            await w.subscribe("wills/#", 1)
            await w.disconnect()
        will = Will("wills/c", b"gone", 1, False, {"will_delay_interval": 3600})
        async with open_client(
            broker.address,
            client_id="c",
            protocol=5,
            clean_start=False,
            properties={"session_expiry_interval": 7200},
            will=will,
        ) as c:
            await c.close()  # abrupt: the will waits for its delay
        async with open_client(broker.address) as probe:
            await probe.sync()
    rows = store_file.query("SELECT will_topic, will_payload, will_due FROM sessions")
    due = [r for r in rows if r[0] is not None]
    assert [(t, p) for t, p, _ in due] == [("wills/c", b"gone")]
    assert due[0][2] > time.time() + 3000
    store_file.execute("UPDATE sessions SET will_due = ? WHERE will_topic IS NOT NULL", (0,))
    async with (
        run_broker(persistence_dir=store_dir) as broker,
        open_client(broker.address, client_id="watch", clean_start=False) as w,
    ):
        message = await w.receive()
        assert (message.topic, message.payload) == ("wills/c", b"gone")
    assert store_file.query("SELECT will_topic FROM sessions WHERE will_topic IS NOT NULL") == []
