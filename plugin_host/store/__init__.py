"""Durable broker state: persistent sessions, offline queues, in-flight and retained messages.

* :mod:`plugin_host.store.base`: the backend interface (:class:`StoreBackend`), the batches it
  applies, :class:`StoreError`;
* :mod:`plugin_host.store.sqlite`: the embedded default backend (SQLite, WAL mode);
* :mod:`plugin_host.store.persistence`: :class:`Persistence`, the broker's store (observes state
  changes, group commit, acknowledgements held until durable, restore at start-up), and
  :func:`open_store`, which the server calls at start-up.

``docs/persistence.md`` describes the guarantees.
"""

from plugin_host.store.base import Batch, Snapshot, StoreBackend, StoreError
from plugin_host.store.persistence import Persistence, open_store, platform_data_dir, store_dir

__all__ = [
    "Batch",
    "Persistence",
    "Snapshot",
    "StoreBackend",
    "StoreError",
    "open_store",
    "platform_data_dir",
    "store_dir",
]
