"""Durable broker state: persistent sessions, offline queues, in-flight and retained messages.

* :mod:`plugin_host.store.base`: the backend interface (:class:`StoreBackend`), the batches it
  applies, :class:`StoreError`;
* :mod:`plugin_host.store.sqlite`: the embedded default backend (SQLite, WAL mode);
* :mod:`plugin_host.store.persistence`: :class:`Persistence`, the broker's store (observes state
  changes, group commit, acknowledgements held until durable, folds);
* :mod:`plugin_host.store.restore`: the broker's state rebuilt from a store at start-up;
* :mod:`plugin_host.store.startup`: :func:`open_store` (what the server calls at start-up) and
  where the store lives (:func:`store_dir`).

``docs/persistence.md`` describes the guarantees.
"""

from plugin_host.store.base import Batch, Snapshot, StoreBackend, StoreError
from plugin_host.store.persistence import Persistence
from plugin_host.store.startup import open_store, platform_data_dir, store_dir

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
