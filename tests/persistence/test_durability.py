"""The durability rule: a QoS 1/2 PUBLISH that reached a persistent session is acknowledged only
once stored, without stopping the publisher's reader; everything else is acknowledged at once."""

from __future__ import annotations

import trio

from plugin_host.mqtt import Puback, Pubrel, encode_publish, encode_pubrec
from plugin_host.settings import Config, PersistenceConfig
from plugin_host.testing import open_client, run_broker

#: Long enough that an acknowledgement waiting for the timed commit would fail the test.
LONG = 60.0


def _config(sync_delay: float, sync: str = "batch") -> Config:
    return Config(persistence=PersistenceConfig(sync=sync, sync_delay=sync_delay))


async def _persistent_subscriber(address, client_id="s", topic="q", qos=1):
    async with open_client(address, client_id=client_id, clean_start=False) as s:
        await s.subscribe(topic, qos)
        await s.disconnect()


async def test_an_acknowledgement_comes_after_the_commit(store_dir):
    async with run_broker(_config(0.2), persistence_dir=store_dir, allow_anonymous=True) as b:
        await _persistent_subscriber(b.address)
        store = b.store
        async with open_client(b.address, client_id="p") as p:
            for qos in (1, 2, 1):
                before = store.seq
                await p.publish("q", b"m", qos=qos)  # the PUBACK, or PUBREC then PUBCOMP
                assert store.durable > before
            stored = b.broker.sessions[("", "s")]
            assert len(stored.queue) == 3


async def test_a_publish_that_reached_no_persistent_session_is_acknowledged_at_once(store_dir):
    async with run_broker(_config(LONG), persistence_dir=store_dir, allow_anonymous=True) as b:
        await _persistent_subscriber(b.address)  # (its changes wait for the long commit)
        async with (
            open_client(b.address, client_id="c") as c,
            open_client(b.address, client_id="p") as p,
        ):
            await c.subscribe("c", 1)
            with trio.fail_after(10):
                await p.publish("c", b"at once", qos=1)
                await p.publish("c", b"at once", qos=2)
                await p.publish("nobody", b"at once", qos=1)
            assert b.store.durable < b.store.seq  # nothing was committed meanwhile


async def test_the_reader_goes_on_while_acknowledgements_wait_in_order(store_dir):
    async with run_broker(_config(LONG), persistence_dir=store_dir, allow_anonymous=True) as b:
        await _persistent_subscriber(b.address)
        async with (
            open_client(b.address, client_id="c") as c,
            open_client(b.address, client_id="p", auto_ack=False) as p,
        ):
            await c.subscribe("c", 1)
            await p.send_raw(
                encode_publish("q", b"stored", 1, False, False, 1, None, 4)
                + encode_publish("c", b"not stored", 1, False, False, 2, None, 4)
                + encode_publish("c", b"qos 0", 0, False, False, None, None, 4)
            )
            with trio.fail_after(10):  # routed at once: the reader did not wait for the disk
                got = await c.receive_many(2)
            assert [m.payload for m in got] == [b"not stored", b"qos 0"]
            await p.sync()  # PINGRESP is not held
            conn = b.broker.sessions[("", "p")].conn
            # Both acknowledgements are held: the second one only to stay behind the first.
            assert [data[3] for _, data in conn.held] == [1, 2]
            await b.store.flush()
            first = await p.receive_packet(Puback)
            second = await p.receive_packet(Puback)
            assert (first.packet_id, second.packet_id) == (1, 2)


async def test_qos2_to_a_stored_online_session_waits_for_the_commit(store_dir):
    async with (
        run_broker(_config(LONG), persistence_dir=store_dir, allow_anonymous=True) as b,
        open_client(b.address, client_id="s", clean_start=False, auto_ack=False) as s,
        open_client(b.address, client_id="p") as p,
    ):
        await s.subscribe("q", 2)
        await p.send_raw(encode_publish("q", b"exactly once", 2, False, False, 5, None, 4))
        await p.sync()
        await s.sync()
        # Sent only once its in-flight record is durable (after a crash it is re-sent with
        # the same packet id, never as a new message).
        assert s.pending_messages() == []
        await b.store.flush()
        message = await s.receive()
        assert message.payload == b"exactly once"
        await s.send_raw(encode_pubrec(message.packet_id, 4))
        await s.sync()
        conn = b.broker.sessions[("", "s")].conn
        assert [data[0] >> 4 for _, data in conn.held] == [6]  # the PUBREL waits too
        await b.store.flush()
        rel = await s.receive_packet(Pubrel)
        assert rel.packet_id == message.packet_id


async def test_sync_always_commits_every_publish_on_its_own(store_dir):
    async with run_broker(
        _config(LONG, "always"), persistence_dir=store_dir, allow_anonymous=True
    ) as b:
        await _persistent_subscriber(b.address)
        commits = b.store.stats.commits
        async with open_client(b.address, client_id="p") as p:
            with trio.fail_after(10):  # no waiting for a batch to fill
                for i in range(5):
                    await p.publish("q", str(i).encode(), qos=1)
        assert b.store.stats.commits >= commits + 5


async def test_sync_off_does_not_wait_for_the_disk(store_dir):
    async with run_broker(
        _config(LONG, "off"), persistence_dir=store_dir, allow_anonymous=True
    ) as b:
        await _persistent_subscriber(b.address)
        async with open_client(b.address, client_id="p") as p:
            with trio.fail_after(10):
                await p.publish("q", b"m", qos=1)
                await p.publish("q", b"m", qos=2)
            assert b.store.durable < b.store.seq
    async with run_broker(persistence_dir=store_dir) as b:  # written at shutdown all the same
        assert len(b.broker.sessions[("", "s")].queue) == 2
