"""The store's change tracking against the broker's real Session methods, on a real SQLite file.

Random sequences of what sessions go through (messages queued, sent, acknowledged, PUBREC'd,
refused, dropped from a full queue, fanned out to several sessions, sessions that stop and start
being persistent), cut into batches, committed and folded at random points. After every commit
the store as a restart would read it (journal replayed over the tables) must hold exactly the
sessions' state at the cut; after every fold the tables alone must, without a message row that
no delivery references.
"""

from __future__ import annotations

import random
import shutil
from collections import deque

import pytest
import trio

from plugin_host.broker.broker import Broker
from plugin_host.broker.message import Message
from plugin_host.broker.session import AWAIT_ACK, AWAIT_COMP, Inflight, Session
from plugin_host.settings import Config
from plugin_host.store.persistence import Persistence
from plugin_host.store.sqlite import DB_NAME, SQLiteBackend


def _state(broker: Broker, store: Persistence) -> dict:
    """What the store must hold now: per stored session row id, its QoS 1/2 queue (in order)
    and in-flight messages."""
    out = {}
    for session, rec in store._recs.items():
        queue = [(m.payload, qos) for m, qos, _ids, _retain in session.queue if qos]
        inflight = {pid: (e.message.payload, e.qos, e.state) for pid, e in session.inflight.items()}
        out[rec.row] = (queue, inflight)
    return out


def _read(directory, tmp_path, name: str):
    """The store as a restart reads it, from a copy of its files (journal replayed)."""
    copy = tmp_path / name
    copy.mkdir()
    for suffix in ("", "-wal"):
        src = directory / (DB_NAME + suffix)
        if src.exists():
            shutil.copy(src, copy / (DB_NAME + suffix))
    backend = SQLiteBackend(copy)
    backend.open()
    try:
        return backend.load()
    finally:
        backend.close()


def _stored(snap) -> dict:
    out: dict = {}
    for s, _seq, mid, qos, _ids, _retain, pid, state in snap.deliveries:
        queue, inflight = out.setdefault(s, ([], {}))
        payload = snap.messages[mid][2]
        if pid is None:
            queue.append((payload, qos))
        else:
            inflight[pid] = (payload, qos, state)
    return out


@pytest.mark.parametrize("seed", range(6))
async def test_journal_and_folds_hold_the_state_of_every_cut(tmp_path, seed):
    rng = random.Random(seed)
    directory = tmp_path / "data"
    backend = SQLiteBackend(directory)
    backend.open()
    store = Persistence(backend)
    broker = Broker(Config())
    broker.attach_store(store)
    sessions = []
    for i in range(3):
        session = Session(broker, "", f"c{i}")
        session.max_offline = session.max_online = rng.choice([3, 6, 1000])
        broker.sessions[session.sid] = session
        session.set_expiry(None)
        sessions.append(session)
    counter = 0
    reads = 0
    expected_at_cut: dict | None = None
    for _step in range(400):
        op = rng.random()
        session = rng.choice(sessions)
        if op < 0.30:  # a message routed to one or more sessions
            counter += 1
            qos = rng.choice([0, 1, 1, 2])
            message = Message("t", b"m%d" % counter, qos, False, None, None, "")
            for target in rng.sample(sessions, rng.choice([1, 1, 2, 3])):
                target.enqueue(message, qos, (), False)
        elif op < 0.50:  # the head of a queue is sent (QoS 0 just leaves)
            if session.queue:
                message, qos, ids, retain = session.queue[0]
                if qos:
                    pid = session.alloc_packet_id()
                    session.add_inflight(pid, Inflight(message, qos, ids, retain, 0.0))
                session.unqueue()
        elif op < 0.55:  # sent at once (empty queue)
            counter += 1
            message = Message("t", b"d%d" % counter, 1, False, None, None, "")
            pid = session.alloc_packet_id()
            session.add_inflight(pid, Inflight(message, 1, (), False, 0.0))
        elif op < 0.72:  # an acknowledgement
            if session.inflight:
                pid = rng.choice(list(session.inflight))
                entry = session.inflight[pid]
                if entry.qos == 1:
                    session.ack(pid, 1)
                elif entry.state == AWAIT_ACK:
                    session.pubrec(pid, 0.0)
                else:
                    assert entry.state == AWAIT_COMP
                    session.ack(pid, 2)
        elif op < 0.74:  # refused (v5 PUBREC with an error code)
            if session.inflight:
                session.drop_inflight(rng.choice(list(session.inflight)))
        elif op < 0.76:  # no longer persistent, or persistent again (a new stored session)
            session.set_expiry(0 if session.persistent else None)
        elif op < 0.90:
            expected_at_cut = _state(broker, store)
            await store._commit(store._take())
            reads += 1
            assert _stored(_read(directory, tmp_path, f"r{reads}")) == {
                k: v for k, v in expected_at_cut.items() if v != ([], {})
            }
        else:
            if store.seq != store._taken:
                expected_at_cut = _state(broker, store)
                await store._commit(store._take())
            await store.fold()
            assert store._journal_upto == store._folded_upto
            reads += 1
            snap = _read(directory, tmp_path, f"r{reads}")
            assert snap.replayed == 0  # the tables alone
            if expected_at_cut is not None:
                assert _stored(snap) == {k: v for k, v in expected_at_cut.items() if v != ([], {})}
            assert set(snap.messages) == {row[2] for row in snap.deliveries}  # no leak
            live = {id(m) for s in sessions for m, *_ in s.queue} | {
                id(e.message) for s in sessions for e in s.inflight.values()
            }
            assert set(store._msgs) <= live
    await trio.lowlevel.checkpoint()
    backend.close()


async def test_a_delivery_that_comes_and_goes_between_two_cuts_writes_nothing(tmp_path):
    backend = SQLiteBackend(tmp_path / "data")
    backend.open()
    store = Persistence(backend)
    broker = Broker(Config())
    broker.attach_store(store)
    session = Session(broker, "", "s")
    broker.sessions[session.sid] = session
    session.set_expiry(None)
    await store._commit(store._take())
    before = store.stats.rows
    for i in range(100):
        message = Message("t", b"%d" % i, 1, False, None, None, "")
        session.enqueue(message, 1, (), False)
        session.add_inflight(i + 1, Inflight(message, 1, (), False, 0.0))
        session.unqueue()
        session.ack(i + 1, 1)
    assert store.seq > store._taken  # the acknowledgements still wait for a commit
    batch = store._take()
    assert batch.rows_written() == 0
    await store._commit(batch)
    assert store.stats.rows == before
    assert store._msgs == {}
    assert session.queue == deque() and not session.inflight
    backend.close()


async def test_queue_pops_are_journaled_as_one_head_per_session(tmp_path):
    directory = tmp_path / "data"
    backend = SQLiteBackend(directory)
    backend.open()
    store = Persistence(backend)
    broker = Broker(Config())
    broker.attach_store(store)
    session = Session(broker, "", "s")
    broker.sessions[session.sid] = session
    session.set_expiry(None)
    for i in range(10):
        session.enqueue(Message("t", b"%d" % i, 1, False, None, None, ""), 1, (), False)
    first = store._take()
    assert len(first.queued) == 10 and len(first.messages) == 10
    await store._commit(first)
    for _ in range(4):  # sent and acknowledged
        message, qos, ids, retain = session.queue[0]
        session.add_inflight(1, Inflight(message, qos, ids, retain, 0.0))
        session.unqueue()
        session.ack(1, 1)
    batch = store._take()
    rec = store._recs[session]
    assert batch.heads == {rec.row: 4}
    assert batch.deliveries.rows == {} and batch.messages.rows == {}  # no delete per row
    assert batch.rows_written() == 1
    await store._commit(batch)
    snap = _read(directory, tmp_path, "r")
    assert [snap.messages[row[2]][2] for row in snap.deliveries] == [
        b"%d" % i for i in range(4, 10)
    ]
    assert len(snap.messages) == 6  # the released messages went with the replay
    backend.close()
