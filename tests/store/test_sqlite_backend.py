"""The SQLite backend on a real file in tmp_path: schema, round trip, errors, upkeep."""

from __future__ import annotations

import sqlite3
import time

import pytest

from plugin_host.broker.message import Message
from plugin_host.store import sqlite as sqlite_store
from plugin_host.store.base import Batch, Changes, StoreError, encode, freeze
from plugin_host.store.sqlite import DB_NAME, SCHEMA_VERSION, SQLiteBackend, move_aside


def _open(path, sync="batch") -> SQLiteBackend:
    backend = SQLiteBackend(path, sync)
    backend.open()
    return backend


def _raw_execute(path, sql: str) -> None:
    """Change the file behind the backend's back (another program, or a newer version)."""
    conn = sqlite3.connect(path / DB_NAME)
    try:
        conn.execute(sql)
        conn.commit()
    finally:
        conn.close()


def test_a_new_store_is_wal_incremental_vacuum_and_versioned(tmp_path):
    store_dir = tmp_path / "nested" / "data"
    backend = _open(store_dir)
    conn = backend.conn
    assert conn is not None
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    backend.close()
    assert (store_dir / DB_NAME).exists()
    off = _open(store_dir, sync="off")
    assert off.conn.execute("PRAGMA synchronous").fetchone()[0] == 0
    off.close()


def _full_batch() -> Batch:
    batch = Batch()
    props = {
        "payload_format_indicator": 1,
        "content_type": "text/plain",
        "response_topic": "reply/here",
        "correlation_data": b"\x00\x01corr",
        "user_property": [("k", "v"), ("k", "v2")],
    }
    expires = time.monotonic() + 100
    m1 = Message("a/b", b"one", 1, False, props, expires, "mp/")
    m2 = Message("a/c", b"\x00\xffbinary", 2, True, None, None, "")
    will = Message("will/t", b"bye", 1, True, {"content_type": "x"}, None, "")
    batch.messages.put(1, m1, True)
    batch.messages.put(2, m2, True)
    batch.sessions.put(
        7, (7, "", "c1", "user", 5, 3600.0, time.time() + 3600, (will, True, 60.0, time.time() + 5))
    )
    batch.sessions.put(8, (8, "mp/", "c2", None, 4, None, None, None))
    batch.subscriptions.put((7, "a/#"), (7, "a/#", "a/#", None, 1, True, True, 2, 42))
    batch.subscriptions.put(
        (7, "$share/g/x/+"), (7, "$share/g/x/+", "x/+", "g", 2, False, False, 0, None)
    )
    batch.deliveries.put((7, 0), (7, 0, 1, 1, (42, 43), False, None, 0), True)
    batch.deliveries.put((7, 1), (7, 1, 2, 2, (), True, None, 0), True)
    batch.deliveries.put((8, 0), (8, 0, 2, 2, (), False, 5, 1), True)  # in flight, PUBREC'd
    batch.incoming.put((8, 9), True, True)
    batch.retained[("", "r/t")] = Message("r/t", b"kept", 1, True, props, expires, "")
    batch.retained[("mp/", "r/u")] = Message("r/u", b"also", 0, True, None, None, "mp/")
    batch.changes = 12
    freeze(batch, time.time() - time.monotonic())
    return batch


def test_everything_written_is_loaded_back(tmp_path):
    backend = _open(tmp_path)
    backend.apply(_full_batch())
    backend.close()
    snap = _open(tmp_path).load()
    topic, payload, qos, retain, props, expires = snap.messages[1][1:]
    assert (snap.messages[1][0], topic, payload, qos, retain) == ("mp/", "a/b", b"one", 1, False)
    assert props["user_property"] == [("k", "v"), ("k", "v2")]
    assert props["correlation_data"] == b"\x00\x01corr"
    assert props["content_type"] == "text/plain"
    assert time.time() + 90 < expires <= time.time() + 101  # wall clock
    assert snap.messages[2] == ("", "a/c", b"\x00\xffbinary", 2, True, None, None)
    s7, s8 = snap.sessions
    assert s7[:6] == (7, "", "c1", "user", 5, 3600.0)
    will = s7[7]
    assert will[:5] == ("", "will/t", b"bye", 1, True)
    assert will[5] == {"content_type": "x"}
    assert will[6:8] == (True, 60.0)
    assert s8 == (8, "mp/", "c2", None, 4, None, None, None)
    assert sorted(snap.subscriptions) == [
        (7, "$share/g/x/+", "x/+", "g", 2, False, False, 0, None),
        (7, "a/#", "a/#", None, 1, True, True, 2, 42),
    ]
    assert snap.deliveries == [
        (7, 0, 1, 1, (42, 43), False, None, 0),
        (7, 1, 2, 2, (), True, None, 0),
        (8, 0, 2, 2, (), False, 5, 1),
    ]
    assert snap.incoming == [(8, 9)]
    retained = {(r[0], r[1]): r for r in snap.retained}
    assert retained[("", "r/t")][2:5] == (b"kept", 1, retained[("", "r/t")][4])
    assert retained[("", "r/t")][4]["user_property"] == [("k", "v"), ("k", "v2")]
    assert retained[("mp/", "r/u")] == ("mp/", "r/u", b"also", 0, None, None)
    assert snap.alive_at is not None and snap.alive_at <= time.time()


def test_deletes_and_session_cascade(tmp_path):
    backend = _open(tmp_path)
    backend.apply(_full_batch())
    batch = Batch()
    batch.deliveries.delete((7, 0))
    batch.messages.delete(1)
    batch.retained[("", "r/t")] = None
    batch.subscriptions.delete((7, "a/#"))
    batch.deleted_sessions.append(8)  # its delivery and incoming id go too
    backend.apply(batch)
    snap = backend.load()
    assert list(snap.messages) == [2]
    assert [s[0] for s in snap.sessions] == [7]
    assert [s[1] for s in snap.subscriptions] == ["$share/g/x/+"]
    assert snap.deliveries == [(7, 1, 2, 2, (), True, None, 0)]
    assert snap.incoming == []
    assert [(r[0], r[1]) for r in snap.retained] == [("mp/", "r/u")]
    backend.close()


def test_changes_forget_rows_written_and_removed_in_the_same_batch():
    changes = Changes()
    changes.put("a", 1, True)
    changes.put("b", 2)  # an update of a stored row
    changes.delete("a")  # fresh: never reaches the store
    changes.delete("b")  # stored: a delete
    assert changes.rows == {"b": None}
    changes.put("b", 3, True)  # a new row under a key being deleted: not fresh
    changes.delete("b")
    assert changes.rows == {"b": None}
    changes.put("c", 4, True)
    changes.put("c", 5)  # an update of a fresh row keeps it fresh
    changes.delete("c")
    assert changes.rows == {"b": None}


def test_garbage_is_a_discardable_error(tmp_path):
    (tmp_path / DB_NAME).write_bytes(b"this is not a database at all " * 200)
    with pytest.raises(StoreError) as caught:
        _open(tmp_path)
    assert caught.value.discardable
    assert "corrupt or not a database" in str(caught.value)
    assert str(tmp_path / DB_NAME) in str(caught.value)


def test_a_schema_from_the_future_is_a_discardable_error(tmp_path):
    _open(tmp_path).close()
    _raw_execute(tmp_path, f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError) as caught:
        _open(tmp_path)
    assert caught.value.discardable
    assert f"schema version {SCHEMA_VERSION + 1}" in str(caught.value)
    assert "newer plugin-host" in str(caught.value)


def test_a_foreign_sqlite_file_is_not_taken_over(tmp_path):
    _raw_execute(tmp_path, "CREATE TABLE mine (x)")
    with pytest.raises(StoreError, match="not a plugin-host message store") as caught:
        _open(tmp_path)
    assert caught.value.discardable


def test_a_second_broker_on_the_same_store_is_refused(tmp_path):
    first = _open(tmp_path)
    with pytest.raises(StoreError, match="in use by another process") as caught:
        _open(tmp_path)
    assert not caught.value.discardable
    first.close()
    _open(tmp_path).close()  # free again


def test_an_unwritable_directory_is_reported(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create the store directory") as caught:
        _open(blocker / "data")
    assert not caught.value.discardable


def test_migrations_upgrade_an_older_schema(tmp_path, monkeypatch):
    _open(tmp_path).close()
    calls = []

    def add_column(conn):
        calls.append(conn.execute("PRAGMA user_version").fetchone()[0])
        conn.execute("ALTER TABLE sessions ADD COLUMN note TEXT")

    monkeypatch.setattr(sqlite_store, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setitem(sqlite_store.MIGRATIONS, SCHEMA_VERSION, add_column)
    backend = _open(tmp_path)
    assert calls == [SCHEMA_VERSION]
    assert backend.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    columns = [row[1] for row in backend.conn.execute("PRAGMA table_info(sessions)")]
    assert "note" in columns
    backend.close()


def test_a_schema_without_a_migration_is_refused(tmp_path, monkeypatch):
    _open(tmp_path).close()
    monkeypatch.setattr(sqlite_store, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match="cannot upgrade"):
        _open(tmp_path)


def test_move_aside_keeps_the_bad_files(tmp_path):
    (tmp_path / DB_NAME).write_bytes(b"junk")
    (tmp_path / f"{DB_NAME}-wal").write_bytes(b"wal junk")
    moved = move_aside(tmp_path)
    assert not (tmp_path / DB_NAME).exists()
    assert moved.read_bytes() == b"junk"
    assert moved.with_name(moved.name + "-wal").read_bytes() == b"wal junk"
    assert moved.name.startswith(f"{DB_NAME}.bad-")


def test_deleted_space_is_given_back(tmp_path):
    backend = _open(tmp_path)
    batch = Batch()
    for i in range(1, 401):
        batch.messages.put(i, Message("t", bytes(8000), 1), True)
    freeze(batch, 0.0)
    backend.apply(batch)
    backend.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the pages are in the file now
    size_full = (tmp_path / DB_NAME).stat().st_size
    batch = Batch()
    for i in range(1, 401):
        batch.messages.delete(i)
    backend.apply(batch)
    figures = backend.maintain()
    assert figures["reclaimed_pages"] > 500
    assert (tmp_path / DB_NAME).stat().st_size < size_full / 4
    backend.close()


def test_journal_records_are_replayed_into_the_tables_at_load(tmp_path):
    backend = _open(tmp_path)
    backend.journal(1, encode(_full_batch()))
    backend.commit()
    later = Batch()
    later.deliveries.delete((7, 0))
    later.messages.delete(1)
    backend.journal(2, encode(later))
    backend.commit()
    backend.close()  # as if the broker died before folding
    backend = _open(tmp_path)
    snap = backend.load()
    assert snap.replayed == 2
    assert list(snap.messages) == [2]
    assert snap.deliveries[:2] == [(7, 1, 2, 2, (), True, None, 0), (8, 0, 2, 2, (), False, 5, 1)]
    assert backend.conn.execute("SELECT count(*) FROM journal").fetchone()[0] == 0
    assert backend.load().replayed == 0
    backend.close()


def test_a_fold_drops_the_journal_it_covers(tmp_path):
    backend = _open(tmp_path)
    for seq in (1, 2, 3):
        backend.journal(seq, encode(Batch()))
        backend.commit()
    part = Batch()
    part.incoming.put((1, 5), True)
    backend.fold(part, 2)
    backend.commit()
    seqs = [row[0] for row in backend.conn.execute("SELECT seq FROM journal")]
    assert seqs == [3]
    assert backend.conn.execute("SELECT * FROM incoming_qos2").fetchall() == [(1, 5)]
    backend.close()


def test_a_damaged_journal_record_is_a_discardable_error(tmp_path):
    backend = _open(tmp_path)
    backend.journal(1, b"\x80\x05garbage")
    backend.commit()
    backend.close()
    backend = _open(tmp_path)
    with pytest.raises(StoreError, match="unreadable journal record") as caught:
        backend.load()
    assert caught.value.discardable
    backend.close()


def _msg(payload: bytes) -> tuple:
    return ("", "t", payload, 1, False, None, None)


def test_queue_heads_in_the_journal_remove_the_rows_below_and_release_their_messages(tmp_path):
    backend = _open(tmp_path)
    first = Batch()
    for mid in (1, 2, 3):
        first.messages.put(mid, _msg(b"%d" % mid), True)
    # Session 7 queues three messages (seq 0-2) and has one in flight (seq 3, packet id 9).
    first.queued.extend((7, seq, seq + 1, 1, (), False, None, 0) for seq in range(3))
    first.deliveries.put((7, 3), (7, 3, 1, 1, (), False, 9, 0), True)
    backend.journal(1, encode(first))
    backend.commit()
    second = Batch()
    second.heads[7] = 2  # seq 0 and 1 left the queue (no delete per row, no message delete)
    second.queued.append((7, 4, 3, 1, (5,), True, None, 0))
    backend.journal(2, encode(second))
    backend.commit()
    backend.close()  # as if the broker died before folding
    backend = _open(tmp_path)
    snap = backend.load()
    assert snap.replayed == 2
    assert snap.deliveries == [
        (7, 2, 3, 1, (), False, None, 0),
        (7, 3, 1, 1, (), False, 9, 0),  # in flight: a queue head never removes it
        (7, 4, 3, 1, (5,), True, None, 0),
    ]
    assert sorted(snap.messages) == [1, 3]  # message 2 was referenced by seq 1 only
    backend.close()


def test_journal_records_of_the_first_format_are_still_read(tmp_path):
    import pickle

    backend = _open(tmp_path)
    tables = [
        {1: _msg(b"old")},
        {},
        {},
        {(7, 0): (7, 0, 1, 1, (), False, None, 0)},
        {},
    ]
    backend.journal(1, pickle.dumps((1, tables, {}, []), protocol=5))
    backend.commit()
    backend.close()
    backend = _open(tmp_path)
    snap = backend.load()
    assert snap.deliveries == [(7, 0, 1, 1, (), False, None, 0)]
    assert snap.messages[1][2] == b"old"
    backend.close()
