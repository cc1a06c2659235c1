"""Plugin lifespans: the per-plugin ``host`` view and entering/exiting the context managers.

Each plugin's ``plugin_host_lifespan(host, config)`` returns an async context manager (or
``None``). The manager enters them in chain order on one :class:`contextlib.AsyncExitStack`,
so they are exited in reverse order, also when start-up fails half-way.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from types import TracebackType
from typing import Any

import structlog

from plugin_host.hooks.api import Host, SessionInfo
from plugin_host.plugins.discovery import PluginLoadError
from plugin_host.settings import ConfigError

__all__ = ["PluginHost", "enter_lifespan"]

log = structlog.get_logger(__name__)


class PluginHost:
    """The ``host`` a plugin's lifespan receives: the broker's :class:`Host`, plus a logger
    bound with the plugin's name and a ``hooks_changed()`` that recompiles the dispatcher."""

    def __init__(self, host: Host, plugin: str, hooks_changed: Callable[[], None]) -> None:
        self._host = host
        self._hooks_changed = hooks_changed
        self.plugin = plugin
        self._log = structlog.get_logger(f"plugin_host.plugins.{plugin}").bind(plugin=plugin)

    @property
    def log(self) -> Any:
        """A structlog logger bound with ``plugin=<name>``."""
        return self._log

    @property
    def config(self) -> Any:
        """The broker's whole validated configuration (read-only)."""
        return self._host.config

    async def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Mapping[str, Any] | None = None,
        mountpoint: str = "",
    ) -> None:
        """Route a message as if a client had published it."""
        await self._host.publish(topic, payload, qos, retain, properties, mountpoint)

    async def disconnect(
        self, client_id: str, mountpoint: str = "", *, do_cleanup: bool = False
    ) -> bool:
        """Disconnect a client; False if it is not connected."""
        return await self._host.disconnect(client_id, mountpoint, do_cleanup=do_cleanup)

    async def reauthorize_subscriptions(
        self, client_id: str, mountpoint: str = "", username: str | None = None
    ) -> list[str]:
        """Re-run auth_on_subscribe for a session's subscriptions; drop those now refused."""
        return await self._host.reauthorize_subscriptions(client_id, mountpoint, username)

    def sessions(self) -> Sequence[SessionInfo]:
        """Every session the broker holds."""
        return self._host.sessions()

    def session(self, client_id: str, mountpoint: str = "") -> SessionInfo | None:
        """One session, or None."""
        return self._host.session(client_id, mountpoint)

    def hooks_changed(self) -> None:
        """Recompile the hook tables (call after ``plugin_host_active_hooks`` changed)."""
        self._hooks_changed()

    def on_reload(self, callback: Callable[[], Any]) -> Callable[[], None]:
        """Run ``callback`` (sync or async) on every reload: SIGHUP, or the admin API.

        The server owns SIGHUP (trio gives a signal to one receiver only): register here
        instead of opening a signal receiver. Returns the function that unregisters it.
        NotImplementedError when the host has no reloads (a test double, say).
        """
        on_reload = getattr(self._host, "on_reload", None)
        if on_reload is None:
            raise NotImplementedError("this host has no reload callbacks")
        unregister: Callable[[], None] = on_reload(callback, name=self.plugin)
        return unregister


class _NamedLifespan:
    """Wraps a plugin's context manager: errors on exit are logged with the plugin's name and
    do not stop the other plugins from shutting down."""

    def __init__(self, plugin: str, inner: AbstractAsyncContextManager[Any]) -> None:
        self.plugin = plugin
        self.inner = inner

    async def __aenter__(self) -> None:
        await self.inner.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        try:
            suppress = await self.inner.__aexit__(exc_type, exc, tb)
        except Exception as error:
            if error is exc:
                raise  # the body's own exception passing through
            log.error(
                "plugin_stop_failed",
                plugin=self.plugin,
                error=f"{type(error).__name__}: {error}",
                exc_info=error,
            )
            return False
        log.info("plugin_stopped", plugin=self.plugin)
        return bool(suppress)


def _failed_to_start(plugin: str, source: str, exc: Exception) -> PluginLoadError:
    return PluginLoadError(
        f"plugin {plugin!r} ({source}) failed to start: {type(exc).__name__}: {exc}",
        plugin=plugin,
        source=source,
    )


async def enter_lifespan(
    stack: AsyncExitStack,
    plugin: str,
    source: str,
    function: Callable[..., Any],
    argnames: Sequence[str],
    host: PluginHost,
    config: Any,
) -> bool:
    """Call one ``plugin_host_lifespan`` impl and enter its context manager on ``stack``.

    Returns False when the plugin returned ``None`` (nothing to enter). Raises
    :class:`PluginLoadError` naming the plugin when it fails, or the plugin's own
    :class:`~plugin_host.settings.ConfigError` unchanged (it names the key, file and line).
    """
    given = {"host": host, "config": config}
    try:
        cm = function(*[given[name] for name in argnames])
    except ConfigError:
        raise  # already says file, line and key (``section.error(...)``)
    except Exception as exc:
        raise _failed_to_start(plugin, source, exc) from exc
    if cm is None:
        return False
    if inspect.iscoroutine(cm) or not (hasattr(cm, "__aenter__") and hasattr(cm, "__aexit__")):
        if inspect.iscoroutine(cm):
            cm.close()
        raise PluginLoadError(
            f"plugin {plugin!r} ({source}): plugin_host_lifespan must return an async context "
            f"manager or None, not {type(cm).__name__} (decorate an async generator with "
            "contextlib.asynccontextmanager and return its call)",
            plugin=plugin,
            source=source,
        )
    try:
        await stack.enter_async_context(_NamedLifespan(plugin, cm))
    except ConfigError:
        raise  # already says file, line and key (``section.error(...)``)
    except Exception as exc:
        raise _failed_to_start(plugin, source, exc) from exc
    log.info("plugin_started", plugin=plugin)
    return True
