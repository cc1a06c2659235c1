"""Soak: 200 clients, QoS 0/1/2, random abrupt disconnects, then the delivery guarantees.

Every QoS 1/2 message the broker accepted (PUBACK / PUBCOMP received by the publisher) must
reach every persistent subscriber of its group, and QoS 2 messages exactly once. QoS 0 may be
lost while a subscriber is offline. Bounded: the whole test runs in well under 60 s.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest
import trio

from plugin_host.testing import ClientSession, open_client, run_broker

SUBSCRIBERS = 120
PUBLISHERS = 80
GROUPS = 10
MESSAGES_PER_PUBLISHER = 30
SEED = 20261127


@pytest.mark.slow
async def test_soak_200_clients_random_disconnects():
    rng = random.Random(SEED)
    accepted: dict[int, set[str]] = defaultdict(set)  # group -> payloads accepted at QoS 1/2
    qos_of: dict[str, int] = {}
    received: dict[str, list[tuple[str, int]]] = defaultdict(list)  # sub -> (payload, qos)
    subscribed = {f"sub{i}": trio.Event() for i in range(SUBSCRIBERS)}
    publishing_done = trio.Event()
    stats = Counter()

    async with run_broker(max_offline_messages=-1, max_online_messages=-1) as broker:
        address = broker.address

        async def subscriber(name: str, group: int, protocol: int, seed: int) -> None:
            r = random.Random(seed)
            state = ClientSession()
            props = {"session_expiry_interval": 3600} if protocol == 5 else None
            first = True
            while True:
                async with open_client(
                    address,
                    client_id=name,
                    protocol=protocol,
                    clean_start=False,
                    properties=props,
                    session=state,
                ) as c:
                    if first:
                        assert await c.subscribe(f"soak/{group}/#", qos=2) == [2]
                        subscribed[name].set()
                        first = False
                    if publishing_done.is_set():
                        return await _drain_until_complete(c, name, group)
                    with trio.move_on_after(r.uniform(0.1, 0.6)):
                        while True:
                            message = await c.receive()
                            received[name].append((message.payload.decode(), message.qos))
                    stats["subscriber_drops"] += 1
                    await c.close()  # abrupt: no DISCONNECT
                    # Messages the client took in (and acknowledged) up to the close.
                    for message in c.pending_messages():
                        received[name].append((message.payload.decode(), message.qos))

        async def _drain_until_complete(c, name: str, group: int) -> None:
            want = accepted[group]
            with trio.move_on_after(30) as scope:
                while not want <= {p for p, _ in received[name]}:
                    message = await c.receive()
                    received[name].append((message.payload.decode(), message.qos))
            if scope.cancelled_caught:
                missing = sorted(want - {p for p, _ in received[name]})
                raise AssertionError(f"{name} is missing {len(missing)}: {missing[:5]}")
            await c.sync()
            for message in c.pending_messages():
                received[name].append((message.payload.decode(), message.qos))
            await c.disconnect()

        async def publisher(name: str, seed: int) -> None:
            r = random.Random(seed)
            protocol = r.choice([4, 5])
            seq = 0
            while seq < MESSAGES_PER_PUBLISHER:
                async with open_client(address, client_id=name, protocol=protocol) as c:
                    while seq < MESSAGES_PER_PUBLISHER:
                        group = r.randrange(GROUPS)
                        qos = r.choice([0, 1, 2])
                        payload = f"{name}:{seq}:{qos}"
                        seq += 1
                        try:
                            await c.publish(f"soak/{group}/{name}", payload, qos=qos)
                        except ConnectionError:
                            break
                        if qos:
                            accepted[group].add(payload)
                            qos_of[payload] = qos
                        stats["published"] += 1
                        await trio.sleep(r.uniform(0, 0.02))
                        if r.random() < 0.1:
                            stats["publisher_drops"] += 1
                            await c.close()
                            break

        with trio.fail_after(55):
            async with trio.open_nursery() as subs:
                for i in range(SUBSCRIBERS):
                    subs.start_soon(
                        subscriber, f"sub{i}", i % GROUPS, 5 if i % 2 else 4, rng.randrange(1 << 30)
                    )
                for event in subscribed.values():
                    await event.wait()
                async with trio.open_nursery() as pubs:
                    for i in range(PUBLISHERS):
                        pubs.start_soon(publisher, f"pub{i}", rng.randrange(1 << 30))
                publishing_done.set()

        # Every accepted QoS 1/2 message reached every subscriber of its group; QoS 2 once.
        assert stats["published"] == PUBLISHERS * MESSAGES_PER_PUBLISHER
        assert stats["subscriber_drops"] > SUBSCRIBERS  # the disconnects really happened
        total_checked = 0
        for i in range(SUBSCRIBERS):
            name = f"sub{i}"
            counts = Counter(p for p, _ in received[name])
            for payload in accepted[i % GROUPS]:
                assert counts[payload] >= 1, f"{name} never got {payload}"
                if qos_of[payload] == 2:
                    assert counts[payload] == 1, f"{name} got QoS 2 {payload} {counts[payload]}x"
                total_checked += 1
            # Nothing from another group leaked in.
            assert all(p.split(":")[0].startswith("pub") for p in counts)
        assert total_checked > 1000
        assert broker.broker.counters.dropped.get("queue_full", 0) == 0
