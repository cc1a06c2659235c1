"""One reload entry point for the whole server (SIGHUP, the admin API).

Trio delivers a signal to a single receiver, so the server owns SIGHUP and fans it out through
a :class:`ReloadRegistry` (``broker.reloads``): the TLS listeners register their certificate
reload, a plugin registers its own through ``host.on_reload(callback)`` (the diversity plugin
reloads its Lua scripts this way). ``await broker.reload()`` runs every callback, in
registration order, one reload at a time::

    unregister = host.on_reload(self.reload)   # in a plugin's lifespan
    ...
    unregister()                               # when the lifespan exits

A callback that fails is logged with its name and reported; the others still run.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
import trio

log = structlog.get_logger(__name__)

__all__ = ["ReloadCallback", "ReloadRegistry"]

#: A reload callback: sync or async, no arguments; its return value is reported.
ReloadCallback = Callable[[], Awaitable[Any] | Any]


class ReloadRegistry:
    """Named reload callbacks, run together by :meth:`run`."""

    def __init__(self) -> None:
        self._callbacks: list[tuple[str, ReloadCallback]] = []
        self._lock = trio.Lock()

    def register(self, name: str, callback: ReloadCallback) -> Callable[[], None]:
        """Add ``callback`` under ``name``; returns the function that removes it again."""
        entry = (name, callback)
        self._callbacks.append(entry)

        def unregister() -> None:
            if entry in self._callbacks:
                self._callbacks.remove(entry)

        return unregister

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._callbacks]

    async def run(self) -> dict[str, Any]:
        """Run every callback (one reload at a time); ``{name: result or "failed: ..."}``."""
        async with self._lock:
            log.info("reload_started", parts=self.names)
            report: dict[str, Any] = {}
            for name, callback in list(self._callbacks):
                try:
                    result = callback()
                    if inspect.isawaitable(result):
                        result = await result
                except Exception as exc:
                    log.exception("reload_failed", part=name)
                    result = f"failed: {exc}"
                report[name] = result
            log.info("reload_finished", parts=list(report))
            return report
