"""Start-up: what is restored is logged; a store that cannot be read stops start-up with a clear
message and exit code 3 (never an empty broker by accident) unless --discard-store is given."""

from __future__ import annotations

import pytest

from plugin_host.settings import Config, PersistenceConfig
from plugin_host.store import StoreError
from plugin_host.store.sqlite import DB_NAME, SCHEMA_VERSION
from plugin_host.testing import open_client, run_broker

GARBAGE = b"\x13\x37 definitely not SQLite " * 500


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


async def test_a_corrupt_store_stops_an_in_process_broker(store_dir):
    store_dir.mkdir()
    (store_dir / DB_NAME).write_bytes(GARBAGE)
    with pytest.raises(BaseException) as caught:  # (a group: checked below)
        async with run_broker(persistence_dir=store_dir):
            pytest.fail("the broker started on a corrupt store")
    [error] = [e for e in _leaves(caught.value) if isinstance(e, StoreError)]
    assert error.discardable
    assert (store_dir / DB_NAME).read_bytes() == GARBAGE  # left alone


async def test_discarding_a_corrupt_store_moves_it_aside_and_starts_empty(store_dir):
    store_dir.mkdir()
    (store_dir / DB_NAME).write_bytes(GARBAGE)
    config = Config(persistence=PersistenceConfig(discard_unreadable=True))
    async with (
        run_broker(config, persistence_dir=store_dir, allow_anonymous=True) as b,
        open_client(b.address, client_id="s", clean_start=False) as s,
    ):
        assert not s.connack.session_present
    moved = [p for p in store_dir.iterdir() if p.name.startswith(f"{DB_NAME}.bad-")]
    assert [p.read_bytes() for p in moved] == [GARBAGE]


def test_serve_refuses_a_corrupt_store_with_exit_code_3(broker_process, store_dir):
    store_dir.mkdir()
    (store_dir / DB_NAME).write_bytes(GARBAGE)
    broker = broker_process()
    assert broker.finish() == 3
    lines = [line for line in broker.stderr.splitlines() if line.startswith("plugin-host: ")]
    assert len(lines) == 1, broker.stderr
    assert f"the message store {store_dir / DB_NAME} is corrupt or not a database" in lines[0]
    assert "start with --discard-store to move it aside and start empty" in lines[0]
    assert "Traceback" not in broker.stderr
    assert (store_dir / DB_NAME).read_bytes() == GARBAGE


def test_serve_refuses_a_store_from_a_newer_version(broker_process, store_dir, store_file):
    broker = broker_process()
    broker.address()
    assert broker.terminate() == 0
    store_file.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    broker = broker_process()
    assert broker.finish() == 3
    assert "was written by a newer plugin-host" in broker.stderr
    assert f"schema version {SCHEMA_VERSION + 5}" in broker.stderr


def test_serve_discard_store_moves_the_bad_store_aside(broker_process, store_dir):
    store_dir.mkdir()
    (store_dir / DB_NAME).write_bytes(GARBAGE)
    broker = broker_process("--discard-store")
    discarded = broker.wait_for("store_discarded")
    assert discarded["level"] == "warning"
    assert discarded["path"] == str(store_dir / DB_NAME)
    restored = broker.wait_for("store_restored")
    assert restored["sessions"] == 0
    broker.address()
    assert broker.terminate() == 0
    moved = store_dir / discarded["moved_to"].rsplit("/", 1)[-1]
    assert moved.read_bytes() == GARBAGE
    assert (store_dir / DB_NAME).exists()  # a new, empty store


def test_a_second_broker_on_the_same_store_is_refused(broker_process):
    first = broker_process()
    first.address()
    second = broker_process()
    assert second.finish() == 3
    assert "is in use by another process" in second.stderr
    assert "--discard-store" not in second.stderr  # never offered for a store in use
    assert first.terminate() == 0


def test_start_up_logs_what_it_restored(broker_process):
    broker = broker_process()
    host, port = broker.address()
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="s", clean_session=False)
    client.connect(host, port)
    client.loop_start()
    try:
        info = client.subscribe("a/#", 1)
        assert info[0] == mqtt.MQTT_ERR_SUCCESS
        published = client.publish("r", b"kept", qos=1, retain=True)
        published.wait_for_publish(10)
        assert published.is_published()
    finally:
        client.disconnect()
        client.loop_stop()
    assert broker.terminate() == 0
    broker = broker_process()
    restored = broker.wait_for("store_restored")
    assert (restored["sessions"], restored["subscriptions"], restored["retained"]) == (1, 1, 1)
    assert restored["level"] == "info"
    broker.address()
    assert broker.terminate() == 0
