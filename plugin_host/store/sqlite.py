"""The embedded default store: one SQLite file (stdlib ``sqlite3``) in WAL mode.

One task uses the connection at a time (``check_same_thread`` is off for that reason only):
:meth:`SQLiteBackend.journal` (append one record) fills its transaction on the event loop,
:meth:`SQLiteBackend.commit` and everything else run in a worker thread
(``trio.to_thread.run_sync`` with the store's ``CapacityLimiter(1)``). See
:mod:`plugin_host.store.base` for the journal and fold design.

* **Durability**: ``persistence.sync = batch|always`` run with ``synchronous=FULL`` (the WAL is
  fsync'ed at every commit), ``off`` with ``synchronous=OFF``.
* **One broker per store**: ``locking_mode=EXCLUSIVE``; a second broker pointed at the same
  directory fails at start-up ("in use by another process") instead of sharing it.
* **Schema**: versioned with ``PRAGMA user_version`` (:data:`SCHEMA_VERSION`), tagged with
  ``PRAGMA application_id``; older versions are upgraded by the functions in
  :data:`MIGRATIONS`; a newer version, a file that is not a plugin-host store, or one that
  fails ``PRAGMA quick_check`` raises a discardable :class:`~plugin_host.store.base.StoreError`.
* **Space**: created with ``auto_vacuum=INCREMENTAL``; :meth:`SQLiteBackend.maintain` returns
  free pages to the file system (``incremental_vacuum``) and truncates the WAL.

Messages are stored once in ``messages`` and referenced by ``deliveries`` rows, so a message
queued for 1000 offline sessions is written once (see ``docs/persistence.md``).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import structlog

from plugin_host.mqtt import PacketType
from plugin_host.mqtt.errors import MQTTError
from plugin_host.mqtt.properties import decode_properties, encode_property_block
from plugin_host.store.base import Batch, Snapshot, StoreError, decode

log = structlog.get_logger(__name__)

#: The store file inside ``persistence.dir`` (plus ``-wal`` / ``-shm`` while open).
DB_NAME = "plugin-host.db"
#: The schema this version writes (``PRAGMA user_version``).
SCHEMA_VERSION = 1
#: ``PRAGMA application_id``: "PLHS", so a foreign SQLite file is recognised as such.
APPLICATION_ID = 0x504C4853
#: Free pages below which :meth:`SQLiteBackend.maintain` leaves the file alone.
VACUUM_MIN_PAGES = 64
#: SQLite page cache (KiB).
CACHE_KIB = 32 * 1024
#: The WAL is truncated back to this size after checkpoints.
JOURNAL_SIZE_LIMIT = 16 * 1024 * 1024

#: Upgrades: ``MIGRATIONS[n](connection)`` turns schema ``n`` into ``n + 1`` (inside one
#: transaction; ``user_version`` is set by the caller). Add one per schema change.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {}

_SCHEMA = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value
);
-- Recent changes, one record per commit (plugin_host.store.base.encode): what acknowledgements
-- wait for. Folded into the tables below in the background, and at start-up.
CREATE TABLE journal (
    seq INTEGER PRIMARY KEY,
    record BLOB NOT NULL
);
-- One row per stored message, referenced by queue and inflight rows (stored once however many
-- sessions it waits for). Times are wall-clock (time.time()) so they survive a restart.
CREATE TABLE messages (
    id INTEGER PRIMARY KEY,
    mountpoint TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    properties BLOB,          -- MQTT 5 PUBLISH property block, NULL when none
    expires_at REAL           -- message expiry deadline, NULL = never
);
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    mountpoint TEXT NOT NULL,
    client_id TEXT NOT NULL,
    username TEXT,
    protocol_level INTEGER NOT NULL,
    expiry_interval REAL,     -- seconds it outlives its connection, NULL = forever
    expires_at REAL,          -- deadline of an offline session, NULL = none running
    will_topic TEXT,          -- a will waiting for its delay (NULL: none)
    will_payload BLOB,
    will_qos INTEGER,
    will_retain INTEGER,
    will_properties BLOB,
    will_v5 INTEGER,
    will_expiry REAL,         -- message expiry interval once published
    will_due REAL             -- when the will is published
);
CREATE TABLE subscriptions (
    session INTEGER NOT NULL,
    filter TEXT NOT NULL,     -- as the client wrote it ($share/<group>/... included)
    topic_filter TEXT NOT NULL,
    share_group TEXT,
    qos INTEGER NOT NULL,
    no_local INTEGER NOT NULL,
    rap INTEGER NOT NULL,
    retain_handling INTEGER NOT NULL,
    sub_id INTEGER,
    PRIMARY KEY (session, filter)
) WITHOUT ROWID;
-- Queued messages (packet_id NULL) and messages in flight (sent, not acknowledged), in seq
-- order per session (a queued message that is sent becomes an in-flight row).
CREATE TABLE deliveries (
    session INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    message INTEGER NOT NULL,
    qos INTEGER NOT NULL,
    sub_ids TEXT,
    retain INTEGER NOT NULL,
    packet_id INTEGER,
    state INTEGER NOT NULL,   -- 0 PUBLISH sent, 1 PUBREC received (PUBREL is re-sent)
    PRIMARY KEY (session, seq)
) WITHOUT ROWID;
CREATE TABLE incoming_qos2 (
    session INTEGER NOT NULL,
    packet_id INTEGER NOT NULL,
    PRIMARY KEY (session, packet_id)
) WITHOUT ROWID;
CREATE TABLE retained (
    mountpoint TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    properties BLOB,
    expires_at REAL,
    PRIMARY KEY (mountpoint, topic)
);
"""

_SESSION_TABLES = ("subscriptions", "deliveries", "incoming_qos2")

# sqlite3 error names that mean "this file is not (or no longer) a readable database".
_CORRUPT = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_FORMAT"})
_BUSY = frozenset({"SQLITE_BUSY", "SQLITE_LOCKED"})


def _encode_props(props: dict[str, Any] | None) -> bytes | None:
    if not props:
        return None
    try:
        return encode_property_block(props, PacketType.PUBLISH)
    except (ValueError, TypeError) as exc:
        # A plugin put something unencodable in; keep the message, lose the properties.
        log.warning("store_properties_dropped", error=str(exc))
        return None


def _decode_props(data: bytes | None) -> dict[str, Any] | None:
    if not data:
        return None
    try:
        props, _ = decode_properties(data, 0, len(data), PacketType.PUBLISH)
    except MQTTError as exc:
        raise StoreError(f"bad stored MQTT properties: {exc}", discardable=True) from None
    return props or None


def _sub_ids(text: str | None) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",")) if text else ()


_INSERT_DELIVERIES = "INSERT OR REPLACE INTO deliveries VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


def _delivery_rows(rows: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Delivery rows as stored: subscription ids as one comma-separated text (or NULL)."""
    return [
        (s, seq, m, q, ",".join(map(str, ids)) if ids else None, r, pid, st)
        for s, seq, m, q, ids, r, pid, st in rows
    ]


class SQLiteBackend:
    """The SQLite :class:`~plugin_host.store.base.StoreBackend` (see the module docstring)."""

    def __init__(self, directory: Path, sync: str = "batch") -> None:
        self.directory = Path(directory)
        self.path = self.directory / DB_NAME
        self.sync = sync
        self.conn: sqlite3.Connection | None = None

    # ------------------------------------------------------------------------------ opening

    def open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the store directory {self.directory}: {exc.strerror or exc}",
                path=self.path,
            ) from None
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=0
            )
        except sqlite3.Error as exc:
            raise self._error(exc, "cannot open") from None
        try:
            self._prepare(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise self._error(exc, "cannot read") from None
        except BaseException:
            conn.close()
            raise
        self.conn = conn

    def _error(self, exc: sqlite3.Error, doing: str) -> StoreError:
        name = getattr(exc, "sqlite_errorname", "")
        if name in _BUSY or "locked" in str(exc):
            return StoreError(
                f"the message store {self.path} is in use by another process ({exc})",
                path=self.path,
            )
        if name in _CORRUPT or "not a database" in str(exc) or "malformed" in str(exc):
            return StoreError(
                f"the message store {self.path} is corrupt or not a database ({exc})",
                path=self.path,
                discardable=True,
            )
        return StoreError(f"{doing} the message store {self.path}: {exc}", path=self.path)

    def _prepare(self, conn: sqlite3.Connection) -> None:
        # auto_vacuum only takes effect on a database without tables (a new one): set it first.
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"cannot use WAL mode for {self.path} (got {mode})", path=self.path)
        conn.execute(f"PRAGMA synchronous={'OFF' if self.sync == 'off' else 'FULL'}")
        conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        conn.execute("PRAGMA temp_store=MEMORY")
        # Hot pages stay cached (the journal is appended on the event loop, see journal()).
        conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        # Take the (exclusive, kept) lock now: a second broker fails here, not later.
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._check_schema(conn)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        bad = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
        if bad != ["ok"]:
            raise StoreError(
                f"the message store {self.path} is corrupt (quick_check: {'; '.join(bad[:3])})",
                path=self.path,
                discardable=True,
            )

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if version == 0 and app_id == 0 and tables == 0:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute(
                "INSERT INTO meta VALUES ('created_at', ?), ('alive_at', ?)",
                (time.time(), time.time()),
            )
            return
        if app_id != APPLICATION_ID:
            raise StoreError(
                f"{self.path} is not a plugin-host message store (application_id {app_id:#x})",
                path=self.path,
                discardable=True,
            )
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the message store {self.path} was written by a newer plugin-host (schema "
                f"version {version}; this version reads up to {SCHEMA_VERSION})",
                path=self.path,
                discardable=True,
            )
        while version < SCHEMA_VERSION:
            migrate = MIGRATIONS.get(version)
            if migrate is None:
                raise StoreError(
                    f"the message store {self.path} has schema version {version}, which this "
                    f"version cannot upgrade",
                    path=self.path,
                    discardable=True,
                )
            migrate(conn)
            version += 1
            conn.execute(f"PRAGMA user_version={version}")
            log.info("store_migrated", path=str(self.path), schema_version=version)

    # ------------------------------------------------------------------------------ loading

    def load(self) -> Snapshot:
        conn = self._conn()
        snap = Snapshot()
        try:
            snap.replayed = self._replay(conn)
            for mid, mp, topic, payload, qos, retain, props, expires in conn.execute(
                "SELECT id, mountpoint, topic, payload, qos, retain, properties, expires_at "
                "FROM messages"
            ):
                snap.messages[mid] = (
                    mp,
                    topic,
                    bytes(payload),
                    qos,
                    bool(retain),
                    _decode_props(props),
                    expires,
                )
            for row in conn.execute("SELECT * FROM sessions ORDER BY id"):
                sid, mp, cid, user, level, interval, expires = row[:7]
                w_topic, w_payload, w_qos, w_retain, w_props, w_v5, w_expiry, w_due = row[7:]
                will = None
                if w_topic is not None:
                    will = (
                        mp,
                        w_topic,
                        bytes(w_payload),
                        w_qos,
                        bool(w_retain),
                        _decode_props(w_props),
                        bool(w_v5),
                        w_expiry,
                        w_due,
                    )
                snap.sessions.append((sid, mp, cid, user, level, interval, expires, will))
            snap.subscriptions = [
                (s, f, tf, g, q, bool(nl), bool(rap), rh, sub_id)
                for s, f, tf, g, q, nl, rap, rh, sub_id in conn.execute(
                    "SELECT session, filter, topic_filter, share_group, qos, no_local, rap, "
                    "retain_handling, sub_id FROM subscriptions"
                )
            ]
            snap.deliveries = [
                (s, seq, m, q, _sub_ids(ids), bool(r), pid, state)
                for s, seq, m, q, ids, r, pid, state in conn.execute(
                    "SELECT session, seq, message, qos, sub_ids, retain, packet_id, state "
                    "FROM deliveries ORDER BY session, seq"
                )
            ]
            snap.incoming = list(conn.execute("SELECT session, packet_id FROM incoming_qos2"))
            snap.retained = [
                (mp, topic, bytes(payload), qos, _decode_props(props), expires)
                for mp, topic, payload, qos, props, expires in conn.execute(
                    "SELECT mountpoint, topic, payload, qos, properties, expires_at FROM retained"
                )
            ]
            row = conn.execute("SELECT value FROM meta WHERE key = 'alive_at'").fetchone()
            snap.alive_at = row[0] if row else None
        except sqlite3.Error as exc:
            raise self._error(exc, "cannot read") from None
        return snap

    # ------------------------------------------------------------------------------ writing

    def journal(self, seq: int, record: bytes) -> None:
        """Begin a transaction appending one journal record.

        Called on the event loop: one INSERT of one blob at the end of the journal (hot pages),
        where a worker thread would have to take the GIL back for it anyway.
        """
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            conn.execute("INSERT OR REPLACE INTO journal VALUES (?, ?)", (seq, record))
            conn.execute("UPDATE meta SET value = ? WHERE key = 'alive_at'", (time.time(),))
        except BaseException:
            self.rollback()
            raise

    def fold(self, part: Batch, upto: int | None) -> None:
        """Begin a transaction writing ``part`` (frozen) into the tables (in a worker thread).

        With ``upto``, the journal records up to it are dropped too (the fold is complete).
        """
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            self._write(conn, part)
            if upto is not None:
                conn.execute("DELETE FROM journal WHERE seq <= ?", (upto,))
            conn.execute("UPDATE meta SET value = ? WHERE key = 'alive_at'", (time.time(),))
        except BaseException:
            self.rollback()
            raise

    def apply(self, batch: Batch) -> None:
        """Write a frozen batch into the tables in one transaction (start-up clean-up, tests)."""
        self.fold(batch, None)
        self.commit()

    def commit(self) -> None:
        """Commit the open transaction (durable on return unless sync is off)."""
        conn = self._conn()
        try:
            conn.execute("COMMIT")
        except BaseException:
            self.rollback()
            raise

    def rollback(self) -> None:
        conn = self.conn
        if conn is not None and conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    def _replay(self, conn: sqlite3.Connection) -> int:
        """Fold every journal record into the tables (start-up); how many there were."""
        records = conn.execute("SELECT record FROM journal ORDER BY seq").fetchall()
        if not records:
            return 0
        conn.execute("BEGIN")
        try:
            for (record,) in records:
                self._write(conn, decode(bytes(record)))
            # Records leave out the deletes of the messages their queue heads released.
            conn.execute("DELETE FROM messages WHERE id NOT IN (SELECT message FROM deliveries)")
            conn.execute("DELETE FROM journal")
            conn.execute("COMMIT")
        except BaseException:
            self.rollback()
            raise
        return len(records)

    def _write(self, conn: sqlite3.Connection, batch: Batch) -> None:
        ex = conn.executemany
        messages = batch.messages.rows
        if messages:
            ex(
                "INSERT OR REPLACE INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (mid, mp, topic, payload, qos, retain, _encode_props(props), expires)
                    for mid, (mp, topic, payload, qos, retain, props, expires) in (
                        item for item in messages.items() if item[1] is not None
                    )
                ],
            )
        if batch.retained:
            put, gone = [], []
            for key, m in batch.retained.items():
                if m is None:
                    gone.append(key)
                else:
                    mp, topic, payload, qos, _retain, props, expires = m
                    put.append((mp, topic, payload, qos, _encode_props(props), expires))
            ex("DELETE FROM retained WHERE mountpoint = ? AND topic = ?", gone)
            ex("INSERT OR REPLACE INTO retained VALUES (?, ?, ?, ?, ?, ?)", put)
        sessions = batch.sessions.rows
        if sessions:
            rows = []
            for row in sessions.values():
                if row is None:
                    continue
                will = row[7]
                if will is None:
                    rows.append((*row[:7], None, None, None, None, None, None, None, None))
                else:
                    (_mp, topic, payload, qos, retain, props, _expires), v5, expiry, due = will
                    rows.append(
                        (
                            *row[:7],
                            topic,
                            payload,
                            qos,
                            retain,
                            _encode_props(props),
                            v5,
                            expiry,
                            due,
                        )
                    )
            ex(f"INSERT OR REPLACE INTO sessions VALUES ({', '.join('?' * 15)})", rows)
        subs = batch.subscriptions.rows
        if subs:
            ex(
                "DELETE FROM subscriptions WHERE session = ? AND filter = ?",
                [key for key, row in subs.items() if row is None],
            )
            ex(
                "INSERT OR REPLACE INTO subscriptions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [row for row in subs.values() if row is not None],
            )
        deliveries = batch.deliveries.rows
        if deliveries:
            ex(
                "DELETE FROM deliveries WHERE session = ? AND seq = ?",
                [key for key, row in deliveries.items() if row is None],
            )
            ex(_INSERT_DELIVERIES, _delivery_rows(r for r in deliveries.values() if r is not None))
        if batch.queued:
            ex(_INSERT_DELIVERIES, _delivery_rows(batch.queued))
        if batch.heads:
            # (after the rows above: a merged batch may hold a row and the head past it)
            ex(
                "DELETE FROM deliveries WHERE session = ? AND seq < ? AND packet_id IS NULL",
                list(batch.heads.items()),
            )
        incoming = batch.incoming.rows
        if incoming:
            ex(
                "DELETE FROM incoming_qos2 WHERE session = ? AND packet_id = ?",
                [key for key, row in incoming.items() if row is None],
            )
            ex(
                "INSERT OR IGNORE INTO incoming_qos2 VALUES (?, ?)",
                [key for key, row in incoming.items() if row is not None],
            )
        if messages:
            ex(
                "DELETE FROM messages WHERE id = ?",
                [(mid,) for mid, m in messages.items() if m is None],
            )
        if batch.deleted_sessions:
            ids = [(sid,) for sid in batch.deleted_sessions]
            for table in _SESSION_TABLES:
                ex(f"DELETE FROM {table} WHERE session = ?", ids)
            ex("DELETE FROM sessions WHERE id = ?", ids)

    # ------------------------------------------------------------------------------ upkeep

    def maintain(self) -> dict[str, int]:
        conn = self._conn()
        conn.execute("UPDATE meta SET value = ? WHERE key = 'alive_at'", (time.time(),))
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        reclaimed = 0
        if free >= VACUUM_MIN_PAGES:
            # (executescript steps the pragma to the end; execute() frees one page per call)
            conn.executescript("PRAGMA incremental_vacuum;")
            reclaimed = free - conn.execute("PRAGMA freelist_count").fetchone()[0]
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        return {"free_pages": free, "reclaimed_pages": reclaimed, "pages": pages}

    def size(self) -> int:
        """Bytes of the store file and its WAL (two ``stat`` calls)."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    def close(self) -> None:
        conn = self.conn
        if conn is None:
            return
        self.conn = None
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            log.warning("store_checkpoint_failed", error=str(exc))
        finally:
            conn.close()

    def _conn(self) -> sqlite3.Connection:
        if self.conn is None:
            raise StoreError("the message store is not open", path=self.path)
        return self.conn


def move_aside(directory: Path) -> Path:
    """Rename the store file (and its WAL) to ``<name>.bad-<UTC time>``; returns the new path."""
    path = Path(directory) / DB_NAME
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = path.with_name(f"{DB_NAME}.bad-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{DB_NAME}.bad-{stamp}-{n}")
        n += 1
    for suffix in ("", "-wal", "-shm"):
        src = path.with_name(DB_NAME + suffix)
        if src.exists():
            src.rename(target.with_name(target.name + suffix))
    return target
