"""Durable broker state: the broker's :class:`~plugin_host.broker.store.SessionStore` on disk.

:class:`Persistence` observes every state change of the *persistent* sessions (queue, in-flight
messages, incoming QoS 2 ids, subscriptions, expiry, a delayed will) and of the retained
messages, synchronously and cheaply on the event loop: each change becomes a row in the open
:class:`~plugin_host.store.base.Batch` (net changes only: a row written and removed within one
batch never reaches the disk) and bumps :attr:`Persistence.seq`, the change sequence number.

One writer task (owned by the server's nursery) commits each batch as one journal record, the
commit and its fsync in a worker thread (``trio.to_thread.run_sync`` with a
``CapacityLimiter(1)``): group commit, one transaction and one fsync for every change collected
during ``persistence.sync_delay``; :attr:`Persistence.durable` is the last sequence number on
disk. Every second it folds the journal into the tables (see :mod:`plugin_host.store.base`).

The durability rule (QoS 1/2 acknowledgements wait for the disk) lives in the connection:
it notes :meth:`commit_point` after routing a PUBLISH and *holds* the PUBACK/PUBREC until
``durable`` reaches it (``Connection.send_durable``); the writer hands held bytes back to their
connections after each commit (:meth:`hold` / ``Connection.release_held``). The reader never
waits. A PUBLISH that changed nothing durable (no persistent session got it) is acknowledged at
once.

Start-up (:func:`plugin_host.store.startup.open_store`, :mod:`plugin_host.store.restore`) loads
the store in a thread, rebuilds sessions, subscriptions, queues, in-flight state and retained
messages in the broker (dropping what expired meanwhile), logs what it restored and attaches the
store, all before plugins start and clients connect.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
import trio

from plugin_host.broker.message import Message
from plugin_host.broker.session import Inflight, Session
from plugin_host.broker.trie import SubOptions
from plugin_host.store.base import Batch, StoreBackend, encode, freeze, merge, split

if TYPE_CHECKING:
    from plugin_host.broker.broker import Broker
    from plugin_host.broker.connection import Connection
    from plugin_host.broker.session import Queued

log = structlog.get_logger(__name__)

#: A batch with this many changes commits without waiting for the rest of ``sync_delay``.
MAX_BATCH = 10_000
#: Journaled changes are folded into the tables at least this often (seconds)...
FOLD_INTERVAL = 1.0
#: ... or as soon as this many net rows wait to be folded ...
FOLD_ROWS = 20_000
#: ... in transactions of at most this many rows (acknowledgements wait while one is written).
FOLD_PART = 2_000
#: Seconds between upkeep runs (free space returned to the file system, liveness stamp).
MAINTENANCE_INTERVAL = 60.0
#: Seconds before a failed commit is retried (acknowledgements wait meanwhile).
RETRY_DELAY = 1.0
#: Longest time the final commit at shutdown may take.
CLOSE_TIMEOUT = 30.0


class _Rec:
    """What the store remembers about one stored session.

    Its deliveries (queued and in-flight messages, one table) are numbered per session:
    ``queue`` mirrors the session's queue (QoS 1/2 entries) as ``(seq, message key)``,
    ``inflight`` maps packet ids to ``(seq, message key)``. A queued message that is sent keeps
    its row (and seq): ``moved`` is the seq of the queue head being sent, until it is unqueued.
    """

    __slots__ = ("inflight", "moved", "qtail", "queue", "row")

    def __init__(self, row: int) -> None:
        self.row = row
        self.qtail = 0  # the next delivery seq
        self.queue: deque[tuple[int, int]] = deque()
        self.inflight: dict[int, tuple[int, int]] = {}
        self.moved = -1


class StoreStats:
    """Commit figures (logged at shutdown; the benchmark reads them from the log)."""

    __slots__ = (
        "changes",
        "commit_seconds",
        "commits",
        "failures",
        "folded_rows",
        "folds",
        "journal_bytes",
        "max_batch",
        "rows",
        "sizes",
    )

    def __init__(self) -> None:
        self.folds = 0
        self.folded_rows = 0
        self.journal_bytes = 0
        self.commits = 0
        self.changes = 0
        self.rows = 0
        self.max_batch = 0
        self.commit_seconds = 0.0
        self.failures = 0
        #: Commits by number of changes: "1", "2-9", "10-99", "100-999", "1000+".
        self.sizes: Counter[str] = Counter()

    def record(self, batch: Batch, rows: int, seconds: float) -> None:
        n = batch.changes
        self.commits += 1
        self.changes += n
        self.rows += rows
        self.commit_seconds += seconds
        self.max_batch = max(self.max_batch, n)
        bucket = "1" if n < 2 else "2-9" if n < 10 else "10-99" if n < 100 else "100-999"
        self.sizes[bucket if n < 1000 else "1000+"] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "commits": self.commits,
            "changes": self.changes,
            "rows_journaled": self.rows,
            "journal_bytes": self.journal_bytes,
            "folds": self.folds,
            "rows_folded": self.folded_rows,
            "mean_batch": round(self.changes / self.commits, 1) if self.commits else 0,
            "max_batch": self.max_batch,
            "commit_ms_mean": round(1000 * self.commit_seconds / self.commits, 3)
            if self.commits
            else 0,
            "batch_sizes": dict(self.sizes),
            "failures": self.failures,
        }


class Persistence:
    """The broker's durable store (see the module docstring)."""

    def __init__(
        self,
        backend: StoreBackend,
        *,
        sync: str = "batch",
        sync_delay: float = 0.005,
        maintenance_interval: float = MAINTENANCE_INTERVAL,
    ) -> None:
        self.backend = backend
        self.sync = sync
        self.delay = 0.0 if sync == "always" else max(0.0, sync_delay)
        self.maintenance_interval = maintenance_interval
        #: Number of the last observed change.
        self.seq = 0
        #: Number of the last change known to be on disk.
        self.durable = 0
        self.stats = StoreStats()
        self._limiter = trio.CapacityLimiter(1)
        # One user of the database connection at a time (a commit spans the loop and a thread).
        self._db_lock = trio.Lock()
        self._batch = Batch()
        self._sealed: deque[Batch] = deque()  # sync=always: one batch per PUBLISH
        self._recs: dict[Session, _Rec] = {}
        self._msgs: dict[int, list[Any]] = {}  # id(message) -> [row id, references, message]
        self._next_session = 1
        self._next_message = 1
        self._work = trio.Event()
        self._full = trio.Event()
        self._committed = trio.Event()
        self._holding: set[Connection] = set()
        self._closed = False
        # Journaled batches not folded into the tables yet, merged (net), and their range.
        self._folding = Batch()
        self._journal_upto = 0
        self._folded_upto = 0
        self._folded_at = trio.current_time()
        self._parts: deque[Batch] = deque()  # a fold in progress: the parts not written yet
        self._fold_lock = trio.Lock()
        self._parts_upto = 0

    # ------------------------------------------------------------------------------ changes
    #
    # The per-message events (queued, in flight, acknowledged) are on the broker's hot path:
    # they are written out flat (no helper calls) on purpose.

    def _changed(self) -> Batch:
        """Count one change; the batch it goes into."""
        batch = self._batch
        self.seq += 1
        n = batch.changes = batch.changes + 1
        if n == 1:
            batch.opened = trio.current_time()
            self._work.set()
        elif n == MAX_BATCH:
            self._full.set()
        return batch

    def _ref(self, batch: Batch, message: Message) -> int:
        """The row id of ``message``, stored with one more reference."""
        entry = self._msgs.get(id(message))
        if entry is None:
            mid = self._next_message
            self._next_message = mid + 1
            self._msgs[id(message)] = [mid, 1, message]
            batch.messages.put(mid, message, True)
            return mid
        entry[1] += 1
        return int(entry[0])

    def _unref(self, batch: Batch, key: int) -> None:
        """One reference less to the message ``key`` (its row goes with the last one)."""
        entry = self._msgs[key]
        entry[1] -= 1
        if entry[1] == 0:
            del self._msgs[key]
            batch.messages.delete(entry[0])

    def _add_delivery(self, batch: Batch, rec: _Rec, message: Message, row: tuple[Any, ...]) -> int:
        """A new delivery row (``row`` without its first three columns); its seq."""
        seq = rec.qtail
        rec.qtail = seq + 1
        sid = rec.row
        batch.deliveries.put((sid, seq), (sid, seq, self._ref(batch, message), *row), True)
        return seq

    def _session_row(self, rec: _Rec, session: Session) -> tuple[Any, ...]:
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

    def _track(self, session: Session) -> _Rec:
        """Start storing a session, with everything it holds already."""
        rec = _Rec(self._next_session)
        self._next_session += 1
        self._recs[session] = rec
        batch = self._changed()
        row = rec.row
        for opts in session.subscriptions.values():
            batch.subscriptions.put((row, opts.full_filter), _sub_row(row, opts))
        for pid in session.incoming_qos2:
            batch.incoming.put((row, pid), True, True)
        for message, qos, sub_ids, retain in session.queue:
            if qos:  # QoS 0 is not kept (at most once)
                seq = self._add_delivery(batch, rec, message, (qos, sub_ids, retain, None, 0))
                rec.queue.append((seq, id(message)))
        for pid, e in session.inflight.items():
            seq = self._add_delivery(
                batch, rec, e.message, (e.qos, e.sub_ids, e.retain, pid, e.state)
            )
            rec.inflight[pid] = (seq, id(e.message))
        return rec

    def _forget(self, rec: _Rec) -> None:
        batch = self._changed()
        unref = self._unref
        for _, key in rec.queue:
            unref(batch, key)
        for _, key in rec.inflight.values():
            unref(batch, key)
        rec.queue.clear()
        rec.inflight.clear()
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
            self._changed().subscriptions.put((row, opts.full_filter), _sub_row(row, opts))

    def subscription_removed(self, session: Session, full_filter: str) -> None:
        rec = self._recs.get(session)
        if rec is not None:
            self._changed().subscriptions.delete((rec.row, full_filter))

    def message_queued(self, session: Session, entry: Queued) -> None:
        rec = self._recs.get(session)
        if rec is None:
            return
        message, qos, sub_ids, retain = entry
        if not qos:
            return  # QoS 0 is not kept (at most once)
        batch = self._changed()
        # (_ref and _add_delivery inlined: this runs for every message a stored session gets;
        # message ids and delivery seqs are never reused, so new rows are always fresh)
        key = id(message)
        ref = self._msgs.get(key)
        if ref is None:
            mid = self._next_message
            self._next_message = mid + 1
            self._msgs[key] = [mid, 1, message]
            batch.messages.rows[mid] = message
            batch.messages.fresh.add(mid)
        else:
            ref[1] += 1
            mid = ref[0]
        sid = rec.row
        seq = rec.qtail
        rec.qtail = seq + 1
        deliveries = batch.deliveries
        k = (sid, seq)
        deliveries.rows[k] = (sid, seq, mid, qos, sub_ids, retain, None, 0)
        deliveries.fresh.add(k)
        rec.queue.append((seq, key))

    def message_unqueued(self, session: Session, entry: Queued, reason: str) -> None:
        rec = self._recs.get(session)
        if rec is None or not entry[1] or not rec.queue:
            return
        seq, key = rec.queue.popleft()
        if seq == rec.moved:
            # Sent: its row already became the in-flight one (inflight_added).
            rec.moved = -1
            return
        batch = self._changed()
        batch.deliveries.delete((rec.row, seq))
        self._unref(batch, key)

    def inflight_added(self, session: Session, packet_id: int, entry: Inflight) -> None:
        rec = self._recs.get(session)
        if rec is None:
            return
        batch = self._changed()
        message = entry.message
        queue = rec.queue
        key = id(message)
        sid = rec.row
        if queue and queue[0][1] == key:
            # The head of the queue is being sent (the broker unqueues it right after): the
            # same row becomes the in-flight one, with its packet id.
            seq = rec.moved = queue[0][0]
            batch.deliveries.rows[(sid, seq)] = (
                sid,
                seq,
                self._msgs[key][0],
                entry.qos,
                entry.sub_ids,
                entry.retain,
                packet_id,
                entry.state,
            )
        else:
            seq = self._add_delivery(
                batch, rec, message, (entry.qos, entry.sub_ids, entry.retain, packet_id, 0)
            )
        old = rec.inflight.get(packet_id)
        if old is not None:  # not expected: the broker forgets an id before reusing it
            batch.deliveries.delete((sid, old[0]))
            self._unref(batch, old[1])
        rec.inflight[packet_id] = (seq, key)

    def inflight_changed(self, session: Session, packet_id: int, entry: Inflight) -> None:
        rec = self._recs.get(session)
        if rec is None:
            return
        found = rec.inflight.get(packet_id)
        if found is not None:
            seq, key = found
            sid = rec.row
            self._changed().deliveries.put(
                (sid, seq),
                (
                    sid,
                    seq,
                    self._msgs[key][0],
                    entry.qos,
                    entry.sub_ids,
                    entry.retain,
                    packet_id,
                    entry.state,
                ),
            )

    def inflight_removed(self, session: Session, packet_id: int) -> None:
        rec = self._recs.get(session)
        if rec is None:
            return
        found = rec.inflight.pop(packet_id, None)
        if found is not None:
            batch = self._changed()
            # (Changes.delete and _unref inlined: every acknowledged message comes here)
            k = (rec.row, found[0])
            deliveries = batch.deliveries
            if k in deliveries.fresh:
                deliveries.fresh.discard(k)
                del deliveries.rows[k]
            else:
                deliveries.rows[k] = None
            ref = self._msgs[found[1]]
            ref[1] -= 1
            if ref[1] == 0:
                del self._msgs[found[1]]
                batch.messages.delete(ref[0])

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

    # ------------------------------------------------------------------------------ durability

    def commit_point(self, before: int) -> int:
        """The change number to wait for, after changes made since ``seq`` was ``before``.

        0 when nothing durable changed (or ``sync = off``): acknowledge at once. With
        ``sync = always`` the changes are sealed into a batch (a transaction) of their own.
        """
        seq = self.seq
        if seq == before or self.sync == "off":
            return 0
        if self.sync == "always":
            self._seal()
        return seq

    def barrier(self) -> int:
        """Every change made so far (0 with ``sync = off``)."""
        return 0 if self.sync == "off" else self.seq

    def hold(self, conn: Connection) -> None:
        """``conn`` holds bytes waiting for the disk: call its ``release_held`` after commits."""
        self._holding.add(conn)

    async def wait_durable(self, seq: int) -> None:
        """Return once change ``seq`` is on disk."""
        while self.durable < seq:
            await self._committed.wait()

    async def flush(self) -> None:
        """Return once every change made so far is on disk (the writer must be running)."""
        target = self.seq
        if self.sync == "always":
            self._seal()
        self._work.set()
        self._full.set()
        await self.wait_durable(target)

    def _seal(self) -> None:
        if self._batch.changes:
            self._sealed.append(self._take())
            self._work.set()

    def _take(self) -> Batch:
        batch = self._batch
        batch.last_seq = self.seq
        self._batch = Batch()
        self._full = trio.Event()
        return batch

    # ------------------------------------------------------------------------------ the writer

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer (and upkeep) task: commit batches until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._maintain_loop)
            task_status.started()
            await self._write_loop()

    async def _write_loop(self) -> None:
        while True:
            if self._sealed:
                await self._commit(self._sealed.popleft())
                continue
            batch = self._batch
            if not batch.changes:
                if self._fold_due():
                    await self._fold()  # idle: a good time to fold
                    continue
                # Wake up for the next change, or to fold what the journal holds.
                wait = FOLD_INTERVAL if self._journal_upto > self._folded_upto else math.inf
                with trio.move_on_after(wait):
                    await self._work.wait()
                self._work = trio.Event()
                continue
            if self.delay > 0 and batch.changes < MAX_BATCH:
                # Group commit: collect what arrives during sync_delay (or until full).
                with trio.move_on_at(batch.opened + self.delay):
                    await self._full.wait()
                if self._sealed:
                    continue
            await self._commit(self._take())
            if self._fold_due():
                await self._fold()

    async def _commit(self, batch: Batch) -> None:
        """Make a batch durable: one journal record, one transaction (the acks wait for it)."""
        rows = batch.rows_written()
        t0 = time.perf_counter()
        if rows:
            freeze(batch, time.time() - time.monotonic())
            record = encode(batch)
            merge(self._folding, batch)
            seq = batch.last_seq
            await self._transaction(self.backend.journal, seq, record)
            self._journal_upto = seq
            self.stats.journal_bytes += len(record)
        self.stats.record(batch, rows, time.perf_counter() - t0)
        self.durable = batch.last_seq
        self._release()

    def _fold_due(self) -> bool:
        if self._parts:
            return True
        if self._journal_upto <= self._folded_upto:
            return False
        folding = self._folding
        return (
            folding.rows_written() >= FOLD_ROWS
            or trio.current_time() - self._folded_at >= FOLD_INTERVAL
        )

    async def fold(self) -> None:
        """Fold everything journaled so far into the tables now (the writer task does it on its
        own every ``FOLD_INTERVAL``; this is for tests and tools). Commit first with
        :meth:`flush` to include the latest changes."""
        while self._parts or self._journal_upto > self._folded_upto:
            await self._fold()

    async def _fold(self) -> None:
        """Write the net changes of the journaled batches into the tables, drop the journal.

        In parts of ``FOLD_PART`` rows, one transaction each, with pending batches committed
        between parts so that acknowledgements keep flowing. A crash between parts loses
        nothing: start-up replays the journal records (still there) over the tables. A fold
        interrupted by shutdown is resumed (its parts are kept until written).
        """
        async with self._fold_lock:  # (one fold at a time: the writer, fold(), aclose())
            await self._fold_parts()

    async def _fold_parts(self) -> None:
        if not self._parts:
            folding, self._folding = self._folding, Batch()
            self._parts = deque(split(folding, FOLD_PART))
            self._parts_upto = self._journal_upto
            self._folded_at = trio.current_time()
            self.stats.folds += 1
            self.stats.folded_rows += folding.rows_written()
        parts = self._parts
        while parts:
            last = len(parts) == 1
            # In the worker thread: a part can be thousands of rows, and deleting old rows
            # may have to read pages from the disk (the journal append stays on the loop).
            await self._transaction(
                self.backend.fold, parts[0], self._parts_upto if last else None, in_thread=True
            )
            parts.popleft()
            if last:
                self._folded_upto = self._parts_upto
            else:
                while self._sealed:
                    await self._commit(self._sealed.popleft())
                if self._batch.changes:
                    await self._commit(self._take())

    async def _transaction(
        self, begin: Callable[..., None], *args: Any, in_thread: bool = False
    ) -> None:
        """``begin(*args)`` (fills a transaction) on the loop, or in the worker thread with
        ``in_thread``; the commit in the worker thread.

        An attempt is shielded (once started, its outcome decides what is durable); a failed one
        is retried until it succeeds (acknowledgements keep waiting meanwhile), but the wait
        between attempts can be cancelled: a shutdown stops retrying (the final fold in
        :meth:`aclose` writes the same rows, if the disk came back).
        """
        while True:
            try:
                with trio.CancelScope(shield=True):
                    async with self._db_lock:
                        if in_thread:
                            await trio.to_thread.run_sync(
                                _begin_commit, self.backend, begin, args, limiter=self._limiter
                            )
                        else:
                            begin(*args)
                            await trio.to_thread.run_sync(
                                self.backend.commit, limiter=self._limiter
                            )
                return
            except Exception as exc:
                self.stats.failures += 1
                log.error(
                    "store_write_failed",
                    error=str(exc),
                    error_type=type(exc).__name__,
                    retry_in=RETRY_DELAY,
                )
            await trio.sleep(RETRY_DELAY)

    def _release(self) -> None:
        durable = self.durable
        holding = self._holding
        if holding:
            done = [conn for conn in holding if conn.release_held(durable)]
            for conn in done:
                holding.discard(conn)
        committed = self._committed
        self._committed = trio.Event()
        committed.set()

    async def _maintain_loop(self) -> None:
        while True:
            await trio.sleep(self.maintenance_interval)
            await self.maintain()

    async def maintain(self) -> dict[str, int]:
        """Upkeep (what the writer task does every ``maintenance_interval``): return free pages
        to the file system, truncate the WAL, note that the broker is alive. Its figures."""
        try:
            async with self._db_lock:
                figures = await trio.to_thread.run_sync(
                    self.backend.maintain, limiter=self._limiter
                )
        except Exception as exc:
            log.warning("store_maintenance_failed", error=str(exc))
            return {}
        if figures.get("reclaimed_pages"):
            log.info("store_vacuumed", **figures)
        return figures

    async def aclose(self) -> None:
        """Commit what is pending and close the backend (idempotent; runs even when cancelled)."""
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT) as scope:
            while self._sealed:
                await self._commit(self._sealed.popleft())
            if self._batch.changes:
                await self._commit(self._take())
            await self.fold()  # a clean stop leaves an empty journal
            async with self._db_lock:
                await trio.to_thread.run_sync(self.backend.close, limiter=self._limiter)
        if scope.cancelled_caught:
            log.error("store_close_timeout", pending=self.seq - self.durable)
        log.info("store_closed", **self.stats.as_dict())

    # ------------------------------------------------------------------------------ restore

    async def restore(self, broker: Broker) -> dict[str, int]:
        """Load the store and rebuild the broker's state (before anything connects).

        Expired sessions, messages and retained messages are removed (from the store too).
        Returns what was restored and removed, by kind (see :mod:`plugin_host.store.restore`).
        """
        from plugin_host.store.restore import restore

        snap = await trio.to_thread.run_sync(self.backend.load, limiter=self._limiter)
        return restore(self, broker, snap)


def _begin_commit(backend: StoreBackend, begin: Callable[..., None], args: tuple[Any, ...]) -> None:
    """A whole transaction in the worker thread."""
    begin(*args)
    backend.commit()


def _sub_row(row: int, opts: SubOptions) -> tuple[Any, ...]:
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
