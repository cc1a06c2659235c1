"""Start-up: rebuild the broker's state from a store :class:`~plugin_host.store.base.Snapshot`.

Sessions (with their expiry deadlines and delayed wills), subscriptions, queued and in-flight
messages, incoming QoS 2 packet ids and retained messages go back into the broker as they were,
and the :class:`~plugin_host.store.persistence.Persistence` bookkeeping (session rows, message
references, delivery numbers) is filled in to match. What expired while the broker was down is
left out and deleted from the store by the first commit.

Times in the store are wall-clock; in memory they are ``time.monotonic()`` (messages) and trio
time (timers): converted here.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import TYPE_CHECKING

from plugin_host.broker.message import Message
from plugin_host.broker.session import Inflight, Session
from plugin_host.broker.trie import SubOptions
from plugin_host.store.tracking import Record

if TYPE_CHECKING:
    from plugin_host.broker.broker import Broker
    from plugin_host.store.base import Snapshot
    from plugin_host.store.persistence import Persistence

#: Restored counts logged even when zero.
_ALWAYS_REPORTED = ("sessions", "subscriptions", "queued", "inflight", "retained")


class RestoredWill:
    """A will rebuilt from the store (what ``Broker._publish_will`` reads)."""

    __slots__ = ("delay", "expiry", "message")

    def __init__(self, message: Message, expiry: float | None) -> None:
        self.message = message
        self.delay = 0.0
        self.expiry = expiry


def restore(store: Persistence, broker: Broker, snap: Snapshot) -> dict[str, int]:
    """Rebuild the broker's state from ``snap``; what was restored and removed, by kind."""
    counts: Counter[str] = Counter()
    wall = time.time()
    mono = time.monotonic()
    to_mono = mono - wall
    batch = store._batch
    messages: dict[int, Message] = {}
    for mid, (mp, topic, payload, qos, retain, props, expires) in snap.messages.items():
        expires_at = None if expires is None else expires + to_mono
        messages[mid] = Message(topic, payload, qos, retain, props, expires_at, mp)
    store._next_message = max(snap.messages, default=0) + 1
    for mp, topic, payload, qos, props, expires in snap.retained:
        if expires is not None and expires <= wall:
            batch.retained[(mp, topic)] = None
            counts["retained_expired"] += 1
            continue
        expires_at = None if expires is None else expires + to_mono
        message = Message(topic, payload, qos, True, props, expires_at, mp)
        broker.router.retained_store(mp).set(topic, message)
        counts["retained"] += 1
    alive = snap.alive_at if snap.alive_at is not None else wall
    newest = {(row[1], row[2]): row[0] for row in snap.sessions}
    sessions: dict[int, tuple[Session, Record]] = {}
    due_wills: list[tuple[Session, RestoredWill, str | None, bool, float]] = []
    for sid, mp, client_id, username, level, interval, expires, will in snap.sessions:
        store._next_session = max(store._next_session, sid + 1)
        if newest[(mp, client_id)] != sid:  # a leftover duplicate: the newest row wins
            batch.deleted_sessions.append(sid)
            continue
        deadline = expires
        if deadline is None and interval is not None:
            deadline = alive + interval  # online when the broker stopped
        session = Session(broker, mp, client_id)
        session.username = username
        session.protocol_level = level
        session.expiry_interval = interval
        restored_will = None
        if will is not None:
            _mp, topic, payload, qos, retain, props, v5, expiry, due = will
            message = Message(topic, payload, qos, retain, props, None, mp)
            restored_will = (session, RestoredWill(message, expiry), username, v5, due - wall)
        if deadline is not None and deadline <= wall:
            # Expired while the broker was down; a will still waiting goes out now.
            batch.deleted_sessions.append(sid)
            counts["sessions_expired"] += 1
            if restored_will is not None:
                due_wills.append((*restored_will[:4], 0.0))
            continue
        broker.sessions[session.sid] = session
        rec = Record(sid, session)
        store._recs[session] = rec
        sessions[sid] = (session, rec)
        if deadline is not None:
            broker.expire_later(session, deadline - wall)
        if restored_will is not None:
            due_wills.append(restored_will)
        counts["sessions"] += 1
    for (
        s,
        full_filter,
        topic_filter,
        group,
        qos,
        no_local,
        rap,
        rh,
        sub_id,
    ) in snap.subscriptions:
        found = sessions.get(s)
        if found is None:
            batch.subscriptions.delete((s, full_filter))
            continue
        found[0].add_subscription(
            SubOptions(
                topic_filter,
                qos,
                no_local=no_local,
                rap=rap,
                retain_handling=rh,
                sub_id=sub_id,
                group=group,
            )
        )
        counts["subscriptions"] += 1
    used: Counter[int] = Counter()

    def gone(key: tuple[int, int]) -> None:
        # Deleted from the tables by the first fold (and journaled for a crash before it).
        batch.deliveries.delete(key)
        store._gone_rows.append(key)

    for s, seq, mid, qos, sub_ids, retain, pid, state in snap.deliveries:
        found = sessions.get(s)
        stored = messages.get(mid)
        if found is None or stored is None:
            gone((s, seq))
            continue
        message = stored
        session, rec = found
        rec.qtail = seq + 1
        if pid is not None:
            # In flight: re-sent with DUP (or PUBREL) when the client comes back, even
            # if it expired meanwhile (its delivery had started).
            entry = Inflight(message, qos, sub_ids, retain, mono)
            entry.state = state
            session.inflight[pid] = entry
            session.next_pid = max(session.next_pid, pid % 0xFFFF + 1)
            row = (s, seq, mid, qos, sub_ids, retain, pid, state)
            rec.inflight[pid] = (seq, id(message), row, entry)
            counts["inflight"] += 1
        elif message.expired(mono):
            gone((s, seq))
            counts["messages_expired"] += 1
            continue
        else:
            if not session.queue:
                session.queue = deque()
            session.queue.append((message, qos, sub_ids, retain))
            rec.queue.append((seq, id(message), (s, seq, mid, qos, sub_ids, retain, None, 0)))
            counts["queued"] += 1
        used[mid] += 1
    mid_of = {id(message): mid for mid, message in messages.items()}
    for session, rec in sessions.values():
        # The configured limit may have shrunk since: keep the newest.
        limit = session.max_offline
        while limit > 0 and len(session.queue) > limit:
            session.queue.popleft()
            seq, key, _row = rec.queue.popleft()
            gone((rec.row, seq))
            used[mid_of[key]] -= 1
            counts["queued"] -= 1
            counts["queue_dropped"] += 1
    for s, pid in snap.incoming:
        found = sessions.get(s)
        if found is None:
            batch.incoming.delete((s, pid))
            continue
        if not found[0].incoming_qos2:
            found[0].incoming_qos2 = set()
        found[0].incoming_qos2.add(pid)
        counts["incoming_qos2"] += 1
    for mid, message in messages.items():
        if used[mid] > 0:
            store._msgs[id(message)] = [mid, used[mid], message]
        else:
            batch.messages.delete(mid)
            store._gone_msgs.append(mid)
    for _session, rec in sessions.values():
        rec.fold_qtail = rec.qtail
    store._fold_mid = store._next_message
    for session, will_obj, username, v5, delay in due_wills:
        broker.will_later(session, will_obj, username, session.client_id, v5, delay)
        counts["wills"] += 1
    if batch.rows_written():
        store._changed()  # the clean-up is committed by the writer
    report = {key: counts[key] for key in _ALWAYS_REPORTED}
    report.update((k, v) for k, v in counts.items() if v)
    return report
