"""Persistence (journal, fold, crash between fold parts) on a real SQLite file, driven by the
broker's SessionStore events from a real broker in-process."""

from __future__ import annotations

import sqlite3

import trio

from plugin_host.broker.broker import Broker
from plugin_host.broker.session import Session
from plugin_host.settings import Config
from plugin_host.store import persistence as persistence_module
from plugin_host.store.sqlite import SQLiteBackend
from plugin_host.testing import open_client, run_broker


async def _queue_messages(broker, count: int, payload: bytes = b"x") -> None:
    async with open_client(broker.address, client_id="s", clean_start=False) as s:
        await s.subscribe("q", 1)
        await s.disconnect()
    async with open_client(broker.address, client_id="p") as p:
        for i in range(count):
            await p.publish("q", payload + str(i).encode(), qos=1)


async def test_a_crash_in_the_middle_of_a_fold_loses_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(persistence_module, "FOLD_PART", 7)  # many small parts
    directory = tmp_path / "data"
    async with run_broker(persistence_dir=directory) as broker:
        await _queue_messages(broker, 40)
        store = broker.store
        await store.flush()
        assert store._journal_upto > store._folded_upto  # all of it still in the journal
        # Fold only the first two parts, then "crash": the backend goes away mid-fold.
        folding = store._fold_snapshot()  # (what the writer's next fold would write)
        parts = persistence_module.split(folding, 7)
        assert len(parts) > 3
        for part in parts[:2]:
            store.backend.fold(part, None)
            await trio.to_thread.run_sync(store.backend.commit)
        backend = SQLiteBackend(directory)
        store.backend.close()  # the file as a crash leaves it (journal intact)
        store._closed = True  # (the broker's own shutdown must not write any more)
    snapshot_backend = backend
    snapshot_backend.open()
    snap = snapshot_backend.load()
    snapshot_backend.close()
    assert snap.replayed > 0
    payloads = sorted(snap.messages[row[2]][2] for row in snap.deliveries)
    assert payloads == sorted(b"x" + str(i).encode() for i in range(40))


async def test_free_space_is_reclaimed_after_a_backlog_is_delivered(tmp_path):
    directory = tmp_path / "data"
    async with run_broker(persistence_dir=directory) as broker:
        await _queue_messages(broker, 300, payload=bytes(4000))
        store = broker.store
        await store.flush()
        await store.fold()
        size_full = (directory / "plugin-host.db").stat().st_size
        async with open_client(broker.address, client_id="s", clean_start=False) as s:
            await s.receive_many(300)
            await s.sync()
        await store.flush()
        await store.fold()
        figures = await store.maintain()
        assert figures["reclaimed_pages"] > 200
        assert (directory / "plugin-host.db").stat().st_size < size_full / 2


class FlakyBackend(SQLiteBackend):
    """A real SQLite backend whose first commits fail (a full or failing disk)."""

    def __init__(self, directory, failures: int) -> None:
        super().__init__(directory)
        self.failures = failures

    def commit(self) -> None:
        if self.failures:
            self.failures -= 1
            self.rollback()
            raise sqlite3.OperationalError("disk I/O error")
        super().commit()


async def test_a_failed_commit_is_retried_and_acknowledgements_wait_for_it(tmp_path, monkeypatch):
    monkeypatch.setattr(persistence_module, "RETRY_DELAY", 0.01)
    backend = FlakyBackend(tmp_path, failures=3)
    backend.open()
    store = persistence_module.Persistence(backend, sync_delay=0.0)
    broker = Broker(Config())
    session = Session(broker, "", "c")
    session.expiry_interval = None  # persistent
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        before = store.seq
        store.session_saved(session)
        need = store.commit_point(before)
        assert need > 0
        with trio.fail_after(10):
            await store.wait_durable(need)
        assert store.stats.failures == 3
        nursery.cancel_scope.cancel()
    await store.aclose()
    backend = SQLiteBackend(tmp_path)
    backend.open()
    assert [s[2] for s in backend.load().sessions] == ["c"]
    backend.close()
