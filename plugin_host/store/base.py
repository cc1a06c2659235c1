"""The message store interface: batches of state changes, the backend protocol, errors.

The broker never talks to a backend directly. :class:`~plugin_host.store.persistence.Persistence`
observes the broker's state changes (it is the broker's
:class:`~plugin_host.broker.store.SessionStore`) and collects them into a :class:`Batch`: the
*net* change since the previous batch (a row added and removed within one batch, say a message
delivered and acknowledged within one commit window, is simply forgotten).

How a batch reaches the disk (a small log-structured design, all inside one SQLite file):

1. **Journal** (the durable part, on the acknowledgement path): the batch is frozen to plain
   values (:func:`freeze`), encoded (:func:`encode`) and appended as *one* record in one
   transaction. Acknowledgements wait for this commit only.
2. **Fold** (in the background): the journaled batches are merged in memory (:func:`merge`),
   where most short-lived rows cancel out (a message queued in one batch and delivered in the
   next), and what is left is written into the tables, in parts (:func:`split`); then the
   journal records it covers are dropped.
3. **Start-up**: journal records not folded yet are replayed into the tables, then the tables
   are loaded (:class:`Snapshot`).

Replaying a record is idempotent (rows are upserts and deletes by key; session ids are never
reused), so a crash at any point (in a fold, between its parts) loses nothing that was
committed.

Journal records are pickled plain values (tuples, lists, dicts, bytes, str, numbers, None) and
read back with an unpickler that refuses every class or function, so a damaged or crafted
store file cannot run code.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from plugin_host.broker.message import Message

#: Version of the journal record layout (:func:`encode`); :func:`decode` reads this one and
#: format 1 (no ``queued`` / ``heads``).
RECORD_FORMAT = 2


class StoreError(Exception):
    """The store cannot be used (start-up stops with a clear message, see ``plugin-host serve``).

    ``discardable``: the file exists but cannot be read as a store of this version (corrupt,
    not a plugin-host store, written by a newer version). ``plugin-host serve --discard-store``
    then moves it aside and starts empty; other problems (a locked or unwritable store) are
    never discarded.
    """

    def __init__(self, message: str, *, path: Any = None, discardable: bool = False) -> None:
        super().__init__(message)
        self.path = path
        self.discardable = discardable


class Changes:
    """Row changes of one table: ``rows[key]`` is the new row, or ``None`` (delete).

    A key first written here (``new=True`` and no pending delete) is *fresh*: deleting it again
    simply forgets it, so the table never sees it.
    """

    __slots__ = ("fresh", "rows")

    def __init__(self) -> None:
        self.rows: dict[Any, Any] = {}
        self.fresh: set[Any] = set()

    def put(self, key: Any, row: Any, new: bool = False) -> None:
        rows = self.rows
        if new and key not in rows:
            self.fresh.add(key)
        rows[key] = row

    def delete(self, key: Any) -> None:
        fresh = self.fresh
        if key in fresh:
            fresh.discard(key)
            del self.rows[key]
        else:
            self.rows[key] = None

    def merge(self, other: Changes) -> None:
        """Apply ``other`` (the changes that came after these) on top (put/delete, inlined)."""
        rows = self.rows
        fresh = self.fresh
        other_fresh = other.fresh
        for key, row in other.rows.items():
            if row is None:
                if key in fresh:
                    fresh.discard(key)
                    del rows[key]
                else:
                    rows[key] = None
            else:
                if key in other_fresh and key not in rows:
                    fresh.add(key)
                rows[key] = row

    def __len__(self) -> int:
        return len(self.rows)


_TABLES = ("messages", "sessions", "subscriptions", "deliveries", "incoming")
#: The tables whose journaled changes :class:`~plugin_host.store.persistence.Persistence` merges
#: for its folds (deliveries and messages are folded from its own bookkeeping instead).
TABLES_MERGED = ("sessions", "subscriptions", "incoming")


@dataclass(slots=True, eq=False)
class Batch:
    """A net state change (rows by table).

    Row layouts (times are wall-clock, ``time.time()``, once frozen):

    * ``messages``: id -> message (stored once, referenced by delivery rows)
    * ``sessions``: id -> ``(id, mountpoint, client_id, username, protocol_level,
      expiry_interval, expires_at, will)``; ``will`` is ``None`` or ``(message, v5,
      expiry_interval, due_at)``
    * ``subscriptions``: (session, full filter) -> ``(session, full_filter, topic_filter, group,
      qos, no_local, rap, retain_handling, sub_id)``
    * ``deliveries``: (session, seq) -> ``(session, seq, message id, qos, sub_ids, retain,
      packet_id, state)``: a queued message (``packet_id`` None) or one in flight (sent, not
      acknowledged; ``state`` 1 once PUBREC'd), in ``seq`` order per session
    * ``incoming``: (session, packet id) -> ``True``
    * ``retained``: (mountpoint, topic) -> message
    * ``queued``: new queued ``deliveries`` rows (fresh keys: never a replacement), as a list
    * ``heads``: session id -> seq: the session's queued ``deliveries`` rows (``packet_id``
      None) numbered below it went (taken from the head of its queue); applied after
      ``queued``, so a merged batch may hold a row and the head that removes it
    * ``deleted_sessions``: session ids whose rows (of every table) go, applied last

    The journal of the per-message path (:mod:`plugin_host.store.tracking`) writes queue
    appends to ``queued`` and queue pops as ``heads`` (one number per session instead of a
    delete per row), and leaves out the deletes of the message rows they release: replaying
    the journal at start-up ends by deleting every message no delivery references (see
    ``SQLiteBackend.load``).

    A *message* is the broker's :class:`~plugin_host.broker.message.Message` while the batch is
    collected and the tuple ``(mountpoint, topic, payload, qos, retain, properties,
    expires_at)`` once :func:`frozen <freeze>`.
    """

    messages: Changes = field(default_factory=Changes)
    sessions: Changes = field(default_factory=Changes)
    subscriptions: Changes = field(default_factory=Changes)
    deliveries: Changes = field(default_factory=Changes)
    incoming: Changes = field(default_factory=Changes)
    retained: dict[tuple[str, str], Any] = field(default_factory=dict)
    queued: list[tuple[Any, ...]] = field(default_factory=list)
    heads: dict[int, int] = field(default_factory=dict)
    deleted_sessions: list[int] = field(default_factory=list)
    #: Number of observed changes in this batch (before cancellation).
    changes: int = 0
    #: The change sequence number this batch makes durable.
    last_seq: int = 0
    #: trio time of the first change (the batch commits at most ``sync_delay`` after it).
    opened: float = 0.0

    def rows_written(self) -> int:
        """How many rows this batch writes or deletes."""
        return (
            len(self.messages)
            + len(self.sessions)
            + len(self.subscriptions)
            + len(self.deliveries)
            + len(self.incoming)
            + len(self.retained)
            + len(self.queued)
            + len(self.heads)
            + len(self.deleted_sessions)
        )


def frozen_message(m: Message, wall: float) -> tuple[Any, ...]:
    """A message as a plain tuple (``wall``: see :func:`freeze`)."""
    expires = None if m.expires_at is None else m.expires_at + wall
    return (m.mountpoint, m.topic, m.payload, m.qos, m.retain, m.properties, expires)


def freeze(batch: Batch, wall: float) -> None:
    """Replace the batch's messages by plain tuples, in place.

    ``wall`` converts the messages' ``time.monotonic()`` expiry deadlines to wall-clock time
    (``time.time() - time.monotonic()``). Messages are immutable once routed, so freezing later
    than the change that referenced them is fine (the tracker leaves it to the commit).
    """
    rows = batch.messages.rows
    for key, m in rows.items():
        if m is not None and type(m) is not tuple:
            rows[key] = frozen_message(m, wall)
    retained = batch.retained
    for key, m in retained.items():
        if m is not None and type(m) is not tuple:
            retained[key] = frozen_message(m, wall)
    sessions = batch.sessions.rows
    for key, row in sessions.items():
        if row is not None and row[7] is not None and type(row[7][0]) is not tuple:
            m, v5, expiry, due = row[7]
            sessions[key] = (*row[:7], (frozen_message(m, wall), v5, expiry, due))


def merge(into: Batch, later: Batch, tables: tuple[str, ...] = _TABLES) -> None:
    """Fold ``later`` (frozen) into ``into``: ``into`` then holds both, net (of ``tables``, with
    ``queued`` and ``heads`` going with ``deliveries``; plus the retained messages and deleted
    sessions)."""
    for name in tables:
        getattr(into, name).merge(getattr(later, name))
    into.retained.update(later.retained)
    if "deliveries" in tables:
        into.queued.extend(later.queued)
        into.heads.update(later.heads)  # (heads only move forward)
    into.deleted_sessions.extend(later.deleted_sessions)
    into.changes += later.changes
    into.last_seq = max(into.last_seq, later.last_seq)


def split(batch: Batch, max_rows: int) -> list[Batch]:
    """Cut a (frozen) batch into parts of at most ``max_rows`` rows, in table order.

    Queue heads and session deletions go into the last part (they remove rows of earlier parts
    too). Always at least one part.
    """
    parts = [Batch()]
    room = max_rows
    for name in _TABLES:
        for key, row in getattr(batch, name).rows.items():
            if room == 0:
                parts.append(Batch())
                room = max_rows
            getattr(parts[-1], name).rows[key] = row
            room -= 1
    for row in batch.queued:
        if room == 0:
            parts.append(Batch())
            room = max_rows
        parts[-1].queued.append(row)
        room -= 1
    for key, m in batch.retained.items():
        if room == 0:
            parts.append(Batch())
            room = max_rows
        parts[-1].retained[key] = m
        room -= 1
    parts[-1].heads = dict(batch.heads)
    parts[-1].deleted_sessions = list(batch.deleted_sessions)
    return parts


def encode(batch: Batch) -> bytes:
    """A frozen batch as one journal record."""
    return pickle.dumps(
        (
            RECORD_FORMAT,
            [getattr(batch, name).rows for name in _TABLES],
            batch.retained,
            batch.deleted_sessions,
            batch.queued,
            batch.heads,
        ),
        protocol=5,
    )


class _PlainUnpickler(pickle.Unpickler):
    """Plain values only: any class or function in the data is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a journal record")


def decode(record: bytes) -> Batch:
    """The batch of a journal record; :class:`StoreError` (discardable) when unreadable."""
    try:
        version, tables, retained, deleted, *rest = _PlainUnpickler(io.BytesIO(record)).load()
        if version not in (1, RECORD_FORMAT) or len(rest) != (0 if version == 1 else 2):
            raise ValueError(f"record format {version}")
        batch = Batch()
        if rest:
            batch.queued.extend(rest[0])
            batch.heads.update(rest[1])
        for name, rows in zip(_TABLES, tables, strict=True):
            getattr(batch, name).rows.update(rows)
        batch.retained.update(retained)
        batch.deleted_sessions.extend(deleted)
    except Exception as exc:
        raise StoreError(f"unreadable journal record ({exc})", discardable=True) from None
    return batch


@dataclass(slots=True)
class Snapshot:
    """Everything a backend holds, as loaded at start-up (rows as in :class:`Batch`).

    ``messages`` maps id -> ``(mountpoint, topic, payload, qos, retain, properties, expires_at)``
    (properties decoded to a dict or ``None``); ``retained`` rows are ``(mountpoint, topic,
    payload, qos, properties, expires_at)``; ``sessions`` rows carry ``will`` as ``None`` or
    ``(mountpoint, topic, payload, qos, retain, properties, v5, expiry_interval, due_at)``.
    ``alive_at`` is the last wall-clock time the store was known to be written by a running
    broker (the crash happened after it). ``replayed``: journal records folded in at load.
    """

    sessions: list[tuple[Any, ...]] = field(default_factory=list)
    subscriptions: list[tuple[Any, ...]] = field(default_factory=list)
    deliveries: list[tuple[Any, ...]] = field(default_factory=list)  # by (session, seq)
    incoming: list[tuple[int, int]] = field(default_factory=list)
    messages: dict[int, tuple[Any, ...]] = field(default_factory=dict)
    retained: list[tuple[Any, ...]] = field(default_factory=list)
    alive_at: float | None = None
    replayed: int = 0


class StoreBackend(Protocol):
    """A synchronous store used by one task at a time.

    :meth:`journal` opens a transaction appending one record and runs on the event loop (CPU
    work on a hot page, no waiting for the disk); :meth:`commit` ends it in a worker thread (the
    WAL write and its fsync); everything else (:meth:`fold` and its commit included) runs in a
    worker thread.
    """

    def open(self) -> None:
        """Open (creating or migrating) the store; raise :class:`StoreError` when unusable."""

    def load(self) -> Snapshot:
        """Replay the journal into the tables, then everything stored."""

    def journal(self, seq: int, record: bytes) -> None:
        """Begin a transaction that appends journal record ``seq``."""

    def fold(self, part: Batch, upto: int | None) -> None:
        """Begin a transaction that writes ``part`` (frozen) into the tables; with ``upto``,
        also drop the journal records up to that one (the fold is complete)."""

    def commit(self) -> None:
        """Commit the open transaction (durable on return unless sync is off)."""

    def rollback(self) -> None:
        """Abandon the open transaction, if any."""

    def maintain(self) -> dict[str, int]:
        """Periodic upkeep (reclaim free space, note that the broker is alive); figures."""

    def size(self) -> int:
        """Bytes the store takes on disk now (cheap: for metrics)."""

    def close(self) -> None:
        """Flush and close."""
