"""Batches: net changes, merging journaled batches, splitting a fold, journal records."""

from __future__ import annotations

import pickle

import pytest

from plugin_host.broker.message import Message
from plugin_host.store.base import Batch, StoreError, decode, encode, freeze, merge, split


def test_merging_cancels_rows_added_in_one_batch_and_removed_in_a_later_one():
    folding = Batch()
    first = Batch()
    first.messages.put(1, ("", "t", b"p", 1, False, None, None), True)
    first.deliveries.put((1, 0), (1, 0, 1, 1, (), False, None, 0), True)
    first.deliveries.put((1, 1), (1, 1, 1, 1, (), False, None, 0), True)
    merge(folding, first)
    second = Batch()
    second.deliveries.delete((1, 0))  # delivered: gone before it ever reached the tables
    second.deliveries.delete((1, 9))  # an older row: a delete for the tables
    second.retained[("", "r")] = None
    merge(folding, second)
    assert folding.deliveries.rows == {(1, 1): (1, 1, 1, 1, (), False, None, 0), (1, 9): None}
    assert folding.messages.rows == {1: ("", "t", b"p", 1, False, None, None)}
    assert folding.retained == {("", "r"): None}
    third = Batch()
    third.deliveries.delete((1, 1))
    third.messages.delete(1)
    merge(folding, third)
    assert folding.deliveries.rows == {(1, 9): None} and folding.messages.rows == {}


def test_split_keeps_every_row_and_deletes_sessions_last():
    batch = Batch()
    for i in range(25):
        batch.deliveries.put((1, i), (1, i, 1, 1, (), False, None, 0), True)
    for i in range(7):
        batch.incoming.put((2, i), True, True)
    batch.retained[("", "r")] = None
    batch.deleted_sessions.append(3)
    parts = split(batch, 10)
    assert [p.rows_written() for p in parts] == [10, 10, 10, 4]
    assert [p.deleted_sessions for p in parts] == [[], [], [], [3]]
    rows = {}
    for p in parts:
        rows.update(p.deliveries.rows)
        rows.update(p.incoming.rows)
    assert len(rows) == 32
    assert split(Batch(), 10)[0].rows_written() == 0


def test_records_round_trip_plain_values():
    batch = Batch()
    message = Message("a", b"\x00", 2, True, {"user_property": [("k", "v")]}, 50.0, "m/")
    batch.messages.put(1, message, True)
    batch.retained[("m/", "a")] = message
    batch.sessions.put(3, (3, "", "c", None, 5, None, None, (message, True, None, 9.0)))
    batch.deleted_sessions.append(4)
    freeze(batch, 1000.0)
    frozen = ("m/", "a", b"\x00", 2, True, {"user_property": [("k", "v")]}, 1050.0)
    assert batch.messages.rows[1] == frozen
    back = decode(encode(batch))
    assert back.messages.rows == {1: frozen}
    assert back.retained == {("m/", "a"): frozen}
    assert back.sessions.rows[3][7] == (frozen, True, None, 9.0)
    assert back.deleted_sessions == [4]


def test_a_record_naming_a_class_is_refused():
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    record = pickle.dumps((1, [[]] * 6, [("k", Evil())], []))
    with pytest.raises(StoreError, match="not allowed in a journal record"):
        decode(record)


def test_queued_rows_and_queue_heads_merge_split_and_round_trip():
    first = Batch()
    first.queued.extend((1, seq, 1, 1, (), False, None, 0) for seq in range(5))
    second = Batch()
    second.heads[1] = 3
    second.queued.append((1, 5, 2, 1, (), False, None, 0))
    folding = Batch()
    merge(folding, first, ("sessions", "subscriptions", "incoming"))
    assert folding.queued == [] and folding.heads == {}  # not the tables merged
    merge(folding, first)
    merge(folding, second)
    assert len(folding.queued) == 6 and folding.heads == {1: 3}
    assert folding.rows_written() == 7
    parts = split(folding, 4)
    assert [len(p.queued) for p in parts] == [4, 2]
    assert [p.heads for p in parts] == [{}, {1: 3}]  # applied last, after the rows below it
    back = decode(encode(folding))
    assert back.queued == folding.queued and back.heads == {1: 3}
