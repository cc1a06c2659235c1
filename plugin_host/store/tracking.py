"""Change tracking: what the broker's state changes mean for the store's rows.

:class:`Tracker` is the part of :class:`~plugin_host.store.persistence.Persistence` that observes
the broker (the :class:`~plugin_host.broker.store.SessionStore` events) and turns changes into
rows. It is built for the per-message path, where a QoS 1/2 delivery to a persistent session
makes four events (queued, sent, unqueued, acknowledged):

* **The per-message events only count.** Each one bumps :attr:`Tracker.seq` (what
  acknowledgements wait for) and marks the session's :class:`Record` dirty, nothing more.
* **Rows are worked out when the batch is cut** (:meth:`Tracker._take`, once per commit):
  each dirty session's queue and in-flight messages are compared with the record's *mirror*
  of what the journal already says, and only the difference becomes rows. A delivery queued,
  sent and acknowledged between two cuts never becomes a row at all.
* **Folds are worked out from the mirrors too** (:meth:`Tracker._fold_snapshot`): the tables
  are brought to the state of the last cut by writing the deliveries and messages that appeared
  since the previous fold and are still there, and deleting those of the tables that went
  (``Record.gone``, ``Tracker._gone_msgs``). A row that came and went between two folds costs
  nothing there (no merging of journal records). Sessions, subscriptions, incoming QoS 2 ids
  and retained messages change rarely: their journaled changes are merged
  (:func:`~plugin_host.store.base.merge`) as they are committed.

Folding the state of the last cut is only right once that cut is journaled: the writer folds
after its commits, never with a cut batch still uncommitted (``Persistence._settled``). A crash
in the middle of a fold is safe: the journal records still there are replayed over the tables at
start-up, and since they are row upserts and deletes by key (last write wins) the result is the
state of the last record whatever part of the fold was written.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

import trio

from plugin_host.store.base import Batch, frozen_message

if TYPE_CHECKING:
    from plugin_host.broker.message import Message
    from plugin_host.broker.session import Inflight, Queued, Session
    from plugin_host.broker.trie import SubOptions

#: A batch with this many changes commits without waiting for the rest of ``sync_delay``.
MAX_BATCH = 10_000


class Record:
    """What the store remembers about one stored session.

    Its deliveries (queued and in-flight messages, one table) are numbered per session
    (``qtail`` is the next number). The *mirror* is what the journal says as of the last cut:
    ``queue`` holds one ``(seq, message key, row)`` per entry of the session's queue
    (``(None, None, None)`` for a QoS 0 entry, which is not kept), ``inflight`` maps packet ids
    to ``(seq, message key, row, Inflight)``.

    The per-message events only count what happened since (``added`` entries appended to the
    queue, ``popped`` taken from its head, packet ids ``touched``) and mark the record
    ``dirty``; :meth:`Tracker._settle` compares the mirror with the session at the cut.

    For folds: rows numbered from ``fold_qtail`` on are not in the tables yet; ``gone`` lists
    the numbers of rows in the tables that left the mirror since the last fold.
    """

    __slots__ = (
        "added",
        "dirty",
        "fold_dirty",
        "fold_qtail",
        "forgotten",
        "gone",
        "inflight",
        "popped",
        "qtail",
        "queue",
        "row",
        "session",
        "touched",
    )

    def __init__(self, row: int, session: Session) -> None:
        self.row = row
        self.session = session
        self.qtail = 0  # the next delivery seq
        self.queue: deque[tuple[Any, Any, Any]] = deque()
        self.inflight: dict[int, tuple[int, int, tuple[Any, ...], Inflight]] = {}
        self.added = 0
        self.popped = 0
        self.touched: dict[int, None] = {}
        self.dirty = False
        self.fold_qtail = 0
        self.fold_dirty = False
        self.gone: list[int] = []
        self.forgotten = False


class Tracker:
    """Observes the broker's state changes and keeps the rows they make (module docstring)."""

    def __init__(self) -> None:
        #: Number of the last observed change.
        self.seq = 0
        self._batch = Batch()
        #: ``seq`` when the batch was last cut (the open batch holds the changes after it).
        self._taken = 0
        self._open = False  # the open batch has changes (the writer was woken for it)
        self._dirty: list[Record] = []  # records with changes since the last cut
        self._recs: dict[Session, Record] = {}
        #: id(message) -> [row id, references, message]
        self._msgs: dict[int, list[Any]] = {}
        self._next_session = 1
        self._next_message = 1
        self._work = trio.Event()
        self._full = trio.Event()
        # What the next fold writes: merged changes of the rarely changing tables, and for
        # deliveries and messages what changed since the last fold.
        self._folding = Batch()
        self._fold_recs: list[Record] = []
        self._fold_mid = 1  # message rows numbered below this may be in the tables
        self._gone_msgs: list[int] = []  # message rows in the tables to delete
        self._gone_rows: list[tuple[int, int]] = []  # delivery rows to delete (start-up)

    # ------------------------------------------------------------------------------ counting

    def _changed(self) -> Batch:
        """Count one change (not a per-message one); the batch its rows go into."""
        seq = self.seq = self.seq + 1
        if not self._open:
            self._opened()
        elif seq - self._taken >= MAX_BATCH:
            self._full.set()
        return self._batch

    def _opened(self) -> None:
        """The first change since the batch was last cut: wake the writer."""
        self._open = True
        self._batch.opened = trio.current_time()
        self._work.set()

    def _dirtied(self, rec: Record) -> None:
        rec.dirty = True
        self._dirty.append(rec)
        if not self._open:
            self._opened()

    # ------------------------------------------------------------------------------ cutting

    def _take(self) -> Batch:
        """Cut the open batch: the rows of the sessions changed since the last cut go in (the
        state as it is now, which covers every change up to ``seq``); a new batch opens."""
        batch = self._batch
        dirty = self._dirty
        if dirty:
            wall = time.time() - time.monotonic()
            settle = self._settle
            for rec in dirty:
                settle(batch, rec, wall)
            self._dirty = []
        batch.changes = self.seq - self._taken
        batch.last_seq = self._taken = self.seq
        self._batch = Batch()
        self._open = False
        self._full = trio.Event()
        return batch

    def _ref(self, batch: Batch, message: Message, wall: float) -> int:
        """The row id of ``message``, stored (frozen with ``wall``) with one more reference."""
        key = id(message)
        entry = self._msgs.get(key)
        if entry is None:
            mid = self._next_message
            self._next_message = mid + 1
            self._msgs[key] = [mid, 1, message]
            batch.messages.rows[mid] = message  # (frozen by the commit: freeze)
            return mid
        entry[1] += 1
        return int(entry[0])

    def _unref(self, batch: Batch, key: int) -> None:
        """One reference less to the message ``key`` (its row goes with the last one)."""
        entry = self._msgs[key]
        entry[1] -= 1
        if entry[1] == 0:
            del self._msgs[key]
            mid = entry[0]
            batch.messages.rows[mid] = None
            if mid < self._fold_mid:
                self._gone_msgs.append(mid)

    def _drop_row(self, batch: Batch, rec: Record, seq: int, key: int) -> None:
        """A delivery row of the mirror goes (from the journal, and from the tables later)."""
        batch.deliveries.rows[(rec.row, seq)] = None
        if seq < rec.fold_qtail:
            rec.gone.append(seq)
        self._unref(batch, key)

    def _settle(self, batch: Batch, rec: Record, wall: float) -> None:
        """Put into ``batch`` what changed in the deliveries of ``rec``'s session since the
        last cut (see :class:`Record`), and bring the mirror up to date.

        This is where the per-message work is (once per batch): :meth:`_ref`, :meth:`_unref`
        and :meth:`_drop_row` are inlined in the loops on purpose.
        """
        rec.dirty = False
        if rec.forgotten:
            return
        if not rec.fold_dirty:
            rec.fold_dirty = True
            self._fold_recs.append(rec)
        session = rec.session
        sid = rec.row
        rows = batch.deliveries.rows
        messages = batch.messages.rows
        msgs = self._msgs
        fold_mid = self._fold_mid
        mirror = rec.queue
        added = rec.added
        popped = rec.popped
        rec.added = rec.popped = 0
        touched = rec.touched
        if touched:
            # In-flight changes first: a message sent from the queue gets its in-flight row
            # (and reference) before its queued row goes, so it is never deleted and re-added.
            current = session.inflight
            mirrored = rec.inflight
            for pid in touched:
                entry = current.get(pid)
                old = mirrored.get(pid)
                if old is not None:
                    if entry is old[3]:
                        if entry.state != old[2][7]:  # PUBREC'd: PUBREL is what is re-sent now
                            seq = old[0]
                            row = (*old[2][:7], entry.state)
                            rows[(sid, seq)] = row
                            mirrored[pid] = (seq, old[1], row, entry)
                        continue
                    del mirrored[pid]  # acknowledged (or replaced)
                    self._drop_row(batch, rec, old[0], old[1])
                if entry is None:
                    continue  # (sent and acknowledged since the last cut: nothing to write)
                message = entry.message
                seq = rec.qtail
                rec.qtail = seq + 1
                row = (
                    sid,
                    seq,
                    self._ref(batch, message, wall),
                    entry.qos,
                    entry.sub_ids,
                    entry.retain,
                    pid,
                    entry.state,
                )
                rows[(sid, seq)] = row
                mirrored[pid] = (seq, id(message), row, entry)
            touched.clear()
        if popped:
            if popped > len(mirror):
                # Entries queued since the last cut were taken too: they never got a row.
                added -= popped - len(mirror)
                popped = len(mirror)
            fold_qtail = rec.fold_qtail
            gone = rec.gone
            popleft = mirror.popleft
            released = False
            # The journal gets one number for these rows (batch.heads), and no deletes for the
            # message rows they release (start-up deletes unreferenced messages after replay).
            for _ in range(popped):
                seq, key, _row = popleft()
                if seq is None:
                    continue  # a QoS 0 entry
                released = True
                if seq < fold_qtail:
                    gone.append(seq)
                ref = msgs[key]
                ref[1] -= 1
                if ref[1] == 0:
                    del msgs[key]
                    if ref[0] < fold_mid:
                        self._gone_msgs.append(ref[0])
            if released:
                head = rec.qtail  # (the rows queued below are numbered from here)
                for seq, _key, _row in mirror:
                    if seq is not None:
                        head = seq
                        break
                batch.heads[sid] = head
        if added > 0:
            queue = session.queue
            added = min(added, len(queue))  # (smaller only if it changed without events)
            qtail = rec.qtail
            append = mirror.append
            put = batch.queued.append
            for i in range(-added, 0):
                message, qos, sub_ids, retain = queue[i]
                if not qos:
                    append((None, None, None))  # QoS 0 is not kept (at most once)
                    continue
                key = id(message)
                ref = msgs.get(key)
                if ref is None:
                    mid = self._next_message
                    self._next_message = mid + 1
                    msgs[key] = [mid, 1, message]
                    messages[mid] = message  # (frozen by the commit: freeze)
                else:
                    ref[1] += 1
                    mid = ref[0]
                row = (sid, qtail, mid, qos, sub_ids, retain, None, 0)
                put(row)
                append((qtail, key, row))
                qtail += 1
            rec.qtail = qtail

    # ------------------------------------------------------------------------------ folding

    def _fold_snapshot(self) -> Batch:
        """What the next fold writes: the tables brought to the state of the last cut (call
        only when that cut is journaled). Starts counting for the fold after it."""
        folding, self._folding = self._folding, Batch()
        messages = folding.messages.rows
        for mid in self._gone_msgs:
            messages[mid] = None
        msgs = self._msgs
        fold_mid = self._fold_mid
        wall = time.time() - time.monotonic()

        def message_of(key: int, mid: int) -> None:
            # Rows written here reference messages stored since the last fold, or before it
            # (already in the tables).
            if mid >= fold_mid and mid not in messages:
                messages[mid] = frozen_message(msgs[key][2], wall)

        deliveries = folding.deliveries.rows
        for key in self._gone_rows:
            deliveries[key] = None
        for rec in self._fold_recs:
            rec.fold_dirty = False
            if rec.forgotten:
                continue  # (its rows go with deleted_sessions)
            sid = rec.row
            for seq in rec.gone:
                deliveries[(sid, seq)] = None
            rec.gone = []
            fold_qtail = rec.fold_qtail
            # In-flight rows change in place (sent, PUBREC'd): they are all written again.
            for seq, key, row, _entry in rec.inflight.values():
                deliveries[(sid, seq)] = row
                message_of(key, row[2])
            # Queued rows are numbered in order: the new ones are at the tail.
            for seq, key, row in reversed(rec.queue):
                if seq is None:
                    continue
                if seq < fold_qtail:
                    break
                deliveries[(sid, seq)] = row
                message_of(key, row[2])
            rec.fold_qtail = rec.qtail
        self._fold_recs = []
        self._gone_msgs = []
        self._gone_rows = []
        self._fold_mid = self._next_message
        return folding

    def _fold_backlog(self) -> int:
        """About how many rows the next fold writes or deletes (at most)."""
        return self._next_message - self._fold_mid + len(self._gone_msgs) + len(self._fold_recs)

    # ------------------------------------------------------------------------------ sessions

    def _session_row(self, rec: Record, session: Session) -> tuple[Any, ...]:
        now = trio.current_time()
        wall = time.time()
        expires = None
        timer = session.expiry_timer
        if timer is not None and not timer.cancelled:
            expires = wall + (timer.deadline - now)
        will = None
        timer = session.will_timer
        if timer is not None and not timer.cancelled:
            w, _username, _client_id, v5 = timer.args[1]
            will = (w.message, bool(v5), w.expiry, wall + (timer.deadline - now))
        return (
            rec.row,
            session.mountpoint,
            session.client_id,
            session.username,
            session.protocol_level,
            session.expiry_interval,
            expires,
            will,
        )

    def _track(self, session: Session) -> Record:
        """Start storing a session, with everything it holds already."""
        rec = Record(self._next_session, session)
        self._next_session += 1
        self._recs[session] = rec
        batch = self._changed()
        row = rec.row
        for opts in session.subscriptions.values():
            batch.subscriptions.put((row, opts.full_filter), sub_row(row, opts))
        for pid in session.incoming_qos2:
            batch.incoming.put((row, pid), True, True)
        # Its queued and in-flight messages get their rows when the batch is cut.
        rec.added = len(session.queue)
        rec.touched = dict.fromkeys(session.inflight)
        self._dirtied(rec)
        return rec

    def _forget(self, rec: Record) -> None:
        """Stop storing a session: its rows go (``deleted_sessions``), messages are released."""
        batch = self._changed()
        rec.forgotten = True
        unref = self._unref
        for seq, key, _row in rec.queue:
            if seq is not None:
                unref(batch, key)
        for _seq, key, _row, _entry in rec.inflight.values():
            unref(batch, key)
        rec.queue.clear()
        rec.inflight.clear()
        rec.touched.clear()
        rec.added = rec.popped = 0
        batch.sessions.delete(rec.row)
        batch.deleted_sessions.append(rec.row)

    # -- SessionStore (called by the broker on the event loop) --------------------------------

    def session_saved(self, session: Session) -> None:
        rec = self._recs.get(session)
        if not session.persistent:
            if rec is not None:
                del self._recs[session]
                self._forget(rec)
            return
        if rec is None:
            rec = self._track(session)
        batch = self._changed()
        batch.sessions.put(rec.row, self._session_row(rec, session))

    def session_deleted(self, session: Session) -> None:
        rec = self._recs.pop(session, None)
        if rec is not None:
            self._forget(rec)

    def subscription_added(self, session: Session, opts: SubOptions) -> None:
        rec = self._recs.get(session)
        if rec is not None:
            row = rec.row
            self._changed().subscriptions.put((row, opts.full_filter), sub_row(row, opts))

    def subscription_removed(self, session: Session, full_filter: str) -> None:
        rec = self._recs.get(session)
        if rec is not None:
            self._changed().subscriptions.delete((rec.row, full_filter))

    # The per-message events: count, mark dirty (see the module docstring).

    def message_queued(self, session: Session, entry: Queued) -> None:
        rec = self._recs.get(session)
        if rec is not None:
            rec.added += 1
            if entry[1]:  # (a QoS 0 entry is only counted: it is not kept)
                seq = self.seq = self.seq + 1
                if not rec.dirty:
                    self._dirtied(rec)
                if seq - self._taken >= MAX_BATCH:
                    self._full.set()

    def message_unqueued(self, session: Session, entry: Queued, reason: str) -> None:
        rec = self._recs.get(session)
        if rec is not None:
            rec.popped += 1
            if entry[1]:
                self.seq += 1
                if not rec.dirty:
                    self._dirtied(rec)

    def inflight_added(self, session: Session, packet_id: int, entry: Inflight) -> None:
        self._inflight_touched(session, packet_id)

    # A changed in-flight entry is journaled like a new one: the row is worked out at the cut.
    inflight_changed = inflight_added

    def inflight_removed(self, session: Session, packet_id: int) -> None:
        self._inflight_touched(session, packet_id)

    def _inflight_touched(self, session: Session, packet_id: int) -> None:
        """An in-flight entry was added, changed or removed: its row (or its deletion) is
        worked out at the next cut."""
        rec = self._recs.get(session)
        if rec is not None:
            rec.touched[packet_id] = None
            self.seq += 1
            if not rec.dirty:
                self._dirtied(rec)

    def incoming_qos2_changed(self, session: Session, packet_id: int, present: bool) -> None:
        rec = self._recs.get(session)
        if rec is not None:
            batch = self._changed()
            if present:
                batch.incoming.put((rec.row, packet_id), True, True)
            else:
                batch.incoming.delete((rec.row, packet_id))

    def retained_changed(self, mountpoint: str, topic: str, message: Message | None) -> None:
        self._changed().retained[(mountpoint, topic)] = message


def sub_row(row: int, opts: SubOptions) -> tuple[Any, ...]:
    """The ``subscriptions`` row of a subscription of session ``row``."""
    return (
        row,
        opts.full_filter,
        opts.topic_filter,
        opts.group,
        opts.qos,
        opts.no_local,
        opts.rap,
        opts.retain_handling,
        opts.sub_id,
    )


__all__ = ["MAX_BATCH", "Record", "Tracker", "sub_row"]
