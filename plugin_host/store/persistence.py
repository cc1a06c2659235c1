"""Durable broker state: the broker's :class:`~plugin_host.broker.store.SessionStore` on disk.

:class:`Persistence` observes every state change of the *persistent* sessions (queue, in-flight
messages, incoming QoS 2 ids, subscriptions, expiry, a delayed will) and of the retained
messages, synchronously and cheaply on the event loop (:class:`~plugin_host.store.tracking.
Tracker`: a per-message event only counts the change and marks the session dirty; the rows
are worked out once per batch, net) and bumps :attr:`Persistence.seq`, the change sequence
number.

One writer task (owned by the server's nursery) commits each batch as one journal record, the
commit and its fsync in a worker thread (``trio.to_thread.run_sync`` with a
``CapacityLimiter(1)``): group commit, one transaction and one fsync for every change collected
during ``persistence.sync_delay``; :attr:`Persistence.durable` is the last sequence number on
disk. Every second it folds the journal into the tables (see :mod:`plugin_host.store.base` and
:mod:`plugin_host.store.tracking`).

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

from plugin_host.store.base import TABLES_MERGED, Batch, StoreBackend, encode, freeze, merge, split
from plugin_host.store.tracking import MAX_BATCH, Tracker

if TYPE_CHECKING:
    from plugin_host.broker.broker import Broker
    from plugin_host.broker.connection import Connection

log = structlog.get_logger(__name__)

#: Journaled changes are folded into the tables at least this often (seconds)...
FOLD_INTERVAL = 1.0
#: ... or as soon as about this many rows wait to be folded ...
FOLD_ROWS = 20_000
#: ... in transactions of at most this many rows (acknowledgements wait while one is written).
FOLD_PART = 2_000
#: Seconds between upkeep runs (free space returned to the file system, liveness stamp).
MAINTENANCE_INTERVAL = 60.0
#: Seconds before a failed commit is retried (acknowledgements wait meanwhile).
RETRY_DELAY = 1.0
#: Longest time the final commit at shutdown may take.
CLOSE_TIMEOUT = 30.0


class StoreStats:
    """Commit and fold figures (``/metrics``, ``$SYS``, and logged at shutdown: the benchmark
    reads them from the log)."""

    __slots__ = (
        "changes",
        "commit_seconds",
        "commits",
        "failures",
        "fold_seconds",
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
        self.fold_seconds = 0.0
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
            "fold_seconds": round(self.fold_seconds, 6),
            "commit_seconds": round(self.commit_seconds, 6),
            "mean_batch": round(self.changes / self.commits, 1) if self.commits else 0,
            "max_batch": self.max_batch,
            "commit_ms_mean": round(1000 * self.commit_seconds / self.commits, 3)
            if self.commits
            else 0,
            "batch_sizes": dict(self.sizes),
            "failures": self.failures,
        }


class Persistence(Tracker):
    """The broker's durable store (see the module docstring)."""

    def __init__(
        self,
        backend: StoreBackend,
        *,
        sync: str = "batch",
        sync_delay: float = 0.005,
        maintenance_interval: float = MAINTENANCE_INTERVAL,
    ) -> None:
        super().__init__()
        self.backend = backend
        self.sync = sync
        self.delay = 0.0 if sync == "always" else max(0.0, sync_delay)
        self.maintenance_interval = maintenance_interval
        #: Number of the last change known to be on disk.
        self.durable = 0
        self.stats = StoreStats()
        self._limiter = trio.CapacityLimiter(1)
        # One user of the database connection at a time (a commit spans the loop and a thread).
        self._db_lock = trio.Lock()
        self._sealed: deque[Batch] = deque()  # sync=always: one batch per PUBLISH
        self._committed = trio.Event()
        self._holding: set[Connection] = set()
        self._closed = False
        self._committing = 0  # commits in progress
        # The journal's range not folded into the tables yet.
        self._journal_upto = 0
        self._folded_upto = 0
        self._folded_at = trio.current_time()
        self._parts: deque[Batch] = deque()  # a fold in progress: the parts not written yet
        self._fold_lock = trio.Lock()
        self._parts_upto = 0

    def figures(self) -> dict[str, Any]:
        """:attr:`stats` with the store's size on disk (``size_bytes``) and the changes not on
        disk yet (``pending_changes``): what ``/metrics`` and ``$SYS`` show."""
        figures = self.stats.as_dict()
        try:
            figures["size_bytes"] = self.backend.size()
        except Exception:  # (a store being closed, a backend without files)
            figures["size_bytes"] = 0
        figures["pending_changes"] = self.seq - self.durable
        return figures

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
        if self.seq != self._taken:
            self._sealed.append(self._take())
            self._work.set()

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
            if self.seq == self._taken:
                if self._fold_due():
                    await self._fold()  # idle: a good time to fold
                    continue
                # Wake up for the next change, or to fold what the journal holds.
                wait = FOLD_INTERVAL if self._journal_upto > self._folded_upto else math.inf
                with trio.move_on_after(wait):
                    await self._work.wait()
                self._work = trio.Event()
                continue
            if self.delay > 0 and self.seq - self._taken < MAX_BATCH:
                # Group commit: collect what arrives during sync_delay (or until full).
                with trio.move_on_at(self._batch.opened + self.delay):
                    await self._full.wait()
                if self._sealed:
                    continue
            await self._commit(self._take())
            if self._fold_due():
                await self._fold()

    async def _commit(self, batch: Batch) -> None:
        """Make a batch durable: one journal record, one transaction (the acks wait for it)."""
        self._committing += 1
        try:
            await self._commit_batch(batch)
        finally:
            self._committing -= 1

    async def _commit_batch(self, batch: Batch) -> None:
        rows = batch.rows_written()
        t0 = time.perf_counter()
        if rows:
            freeze(batch, time.time() - time.monotonic())
            record = encode(batch)
            merge(self._folding, batch, TABLES_MERGED)
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
        return (
            self._fold_backlog() + self._folding.rows_written() >= FOLD_ROWS
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
            if not await self._settled():
                return
            t0 = time.perf_counter()
            folding = self._fold_snapshot()
            self._parts = deque(split(folding, FOLD_PART))
            self._parts_upto = self._journal_upto
            self._folded_at = trio.current_time()
            self.stats.folds += 1
            self.stats.folded_rows += folding.rows_written()
            self.stats.fold_seconds += time.perf_counter() - t0
        parts = self._parts
        while parts:
            last = len(parts) == 1
            # In the worker thread: a part can be thousands of rows, and deleting old rows
            # may have to read pages from the disk (the journal append stays on the loop).
            t0 = time.perf_counter()
            await self._transaction(
                self.backend.fold, parts[0], self._parts_upto if last else None, in_thread=True
            )
            self.stats.fold_seconds += time.perf_counter() - t0
            parts.popleft()
            if last:
                self._folded_upto = self._parts_upto
            else:
                while self._sealed:
                    await self._commit(self._sealed.popleft())
                if self.seq != self._taken:
                    await self._commit(self._take())

    async def _settled(self) -> bool:
        """Commit the batches cut and not committed yet (sync = always), and wait for one being
        committed by another task: a fold writes the state of the last cut, which must be
        journaled. False if a cut batch was given up (a failing disk at shutdown)."""
        while True:
            while self._sealed:
                await self._commit(self._sealed.popleft())
            if self.durable >= self._taken:
                return True
            if not self._committing:
                return False
            await self._committed.wait()

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
            if self.seq != self._taken:
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
