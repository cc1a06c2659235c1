"""Start-up: where the store lives, and opening it (restore, discard) for the server."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import structlog
import trio

from plugin_host.store.base import StoreError
from plugin_host.store.persistence import Persistence

if TYPE_CHECKING:
    from plugin_host.broker.broker import Broker
    from plugin_host.settings import Config

log = structlog.get_logger(__name__)


def platform_data_dir() -> Path:
    """Where plugin-host keeps data without a config file (per user, per platform)."""
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "plugin-host"
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "plugin-host"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "plugin-host"
    return Path.home() / ".local" / "share" / "plugin-host"


def store_dir(config: Config) -> Path:
    """``persistence.dir``; else ``data/`` next to the config file; else the platform data dir."""
    if config.persistence.dir is not None:
        return Path(config.persistence.dir)
    if config.source is not None:
        return Path(config.source).absolute().parent / "data"
    return platform_data_dir()


async def open_store(config: Config, broker: Broker) -> Persistence | None:
    """Open the configured store, restore the broker's state from it and attach it.

    Returns None with ``persistence = off``. Raises :class:`StoreError` when the store cannot
    be used; with ``persistence.discard_unreadable`` (``serve --discard-store``) a corrupt or
    unreadable one is moved aside (and logged) and the broker starts empty instead.
    The caller runs :meth:`Persistence.run` in its nursery and calls :meth:`Persistence.aclose`.
    """
    from plugin_host.store.sqlite import SQLiteBackend, move_aside

    pc = config.persistence
    if not pc.enabled:
        log.info("persistence_off")
        return None
    directory = store_dir(config)
    backend = SQLiteBackend(directory, pc.sync)
    persistence = Persistence(backend, sync=pc.sync, sync_delay=pc.sync_delay)
    limiter = persistence._limiter
    try:
        try:
            await trio.to_thread.run_sync(backend.open, limiter=limiter)
            counts = await persistence.restore(broker)
        except StoreError as exc:
            if not (exc.discardable and pc.discard_unreadable):
                raise
            await trio.to_thread.run_sync(backend.close, limiter=limiter)
            moved = await trio.to_thread.run_sync(move_aside, directory)
            log.warning(
                "store_discarded", path=str(backend.path), moved_to=str(moved), error=str(exc)
            )
            broker.sessions.clear()
            broker.router.retained.clear()
            broker.router.tries.clear()
            persistence = Persistence(backend, sync=pc.sync, sync_delay=pc.sync_delay)
            await trio.to_thread.run_sync(backend.open, limiter=persistence._limiter)
            counts = await persistence.restore(broker)
    except BaseException:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(backend.close)
        raise
    log.info("store_restored", path=str(backend.path), sync=pc.sync, **counts)
    broker.attach_store(persistence)
    return persistence
