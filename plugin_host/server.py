"""Run the broker: bind the configured listeners, serve until SIGINT/SIGTERM, shut down cleanly.

``plugin-host serve`` calls ``trio.run(plugin_host.server.serve, config)``. Tests and embedders
use ``await nursery.start(serve, config)``, which returns a :class:`ServerInfo` with the real
bound addresses once every listener accepts connections.

The MQTT listeners (tcp, ssl, ws, wss) run in a
:class:`~plugin_host.listeners.manager.ListenerManager`, reachable as ``broker.listeners``
(start/stop/show at runtime). SIGHUP runs ``broker.reload()``: TLS certificates and whatever
plugins registered with ``host.on_reload``.
"""

from __future__ import annotations

import importlib.metadata
import signal
from collections.abc import Iterable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio

from plugin_host.broker.broker import Broker
from plugin_host.config.listeners import check_plugin_chains
from plugin_host.hooks.api import HookDispatch
from plugin_host.listeners.manager import MQTT_KINDS, ListenerManager, bind_listener
from plugin_host.listeners.tcp import BoundListener
from plugin_host.settings import Config, ListenerConfig
from plugin_host.store import open_store

log = structlog.get_logger(__name__)

#: Listener kinds this module can serve today; others are reported and skipped.
SUPPORTED_KINDS = MQTT_KINDS


@dataclass(slots=True, eq=False)
class ServerInfo:
    """What :func:`serve` reports once it is listening."""

    listeners: list[BoundListener] = field(default_factory=list)
    broker: Broker | None = None
    plugins: Any = None  # the PluginManager, when plugins were discovered
    shutdown_requested: trio.Event = field(default_factory=trio.Event)
    force_stop: trio.CancelScope = field(default_factory=trio.CancelScope)
    admin: Any = None  # plugin_host.admin.serving.AdminServer: http(s) listeners, $SYS
    store: Any = None  # the plugin_host.store.Persistence, when persistence is on

    def address(self, name: str | None = None) -> tuple[str, int]:
        """The first bound ``(host, port)`` of listener ``name`` (default: the first one)."""
        for bound in self.listeners:
            if name is None or bound.name == name:
                return bound.address
        raise KeyError(name)

    def shutdown(self) -> None:
        """Ask the server to shut down gracefully (what SIGINT/SIGTERM do)."""
        self.shutdown_requested.set()


def _default_listeners(config: Config) -> list[ListenerConfig]:
    if config.listeners:
        return config.listeners
    return [ListenerConfig(kind="tcp", name="default", host="127.0.0.1", port=1883)]


async def bind_listeners(config: Config) -> list[BoundListener]:
    """Bind every configured MQTT listener; a bind failure is a ConfigError naming it."""
    bound: list[BoundListener] = []
    try:
        for lc in _default_listeners(config):
            if lc.kind in ("http", "https"):
                continue  # served by plugin_host.admin (serve_admin below)
            if lc.kind not in SUPPORTED_KINDS:
                log.warning("listener_kind_unsupported", listener=lc.name, kind=lc.kind)
                continue
            bound.append(await bind_listener(lc))  # ConfigError: address taken, TLS files
    except BaseException:
        for b in bound:
            await b.aclose()
        raise
    return bound


async def serve(
    config: Config,
    *,
    handle_signals: bool = True,
    hooks: HookDispatch | None = None,
    plugins: Mapping[str, Any] | None = None,
    entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
    task_status: trio.TaskStatus[ServerInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve MQTT on every configured listener until asked to stop.

    Start-up: discover and register the plugins (installed entry points, ``--plugins-dir``,
    plus ``plugins``: in-process plugin objects by name), bind every listener, enter the
    plugin lifespans, then accept clients. ``entry_points=()`` ignores installed plugins;
    ``hooks`` replaces the whole plugin system with a given dispatcher (broker tests).

    Returns (without a traceback) after a graceful shutdown triggered by SIGINT, SIGTERM or
    :meth:`ServerInfo.shutdown`: listeners stop accepting, every client is disconnected (MQTT 5
    clients get DISCONNECT 0x8B), queued hook notifications are delivered, the plugin
    lifespans exit in reverse order. ``handle_signals=False`` leaves signals to the caller.
    """
    manager = None
    if hooks is None:
        from plugin_host.plugins.manager import PluginManager

        manager = PluginManager.discover(config, entry_points=entry_points, extra_plugins=plugins)
        log.info("plugins_loaded", plugins=list(manager.names))
        check_plugin_chains(_default_listeners(config), manager.names)
    broker = Broker(config, hooks)
    # Durable state comes back first: before listeners open, plugins start or anything publishes
    # (a store that cannot be read stops start-up here: plugin_host.store.StoreError).
    store = await open_store(config, broker)
    try:
        listeners = await bind_listeners(config)
    except BaseException:
        if store is not None:
            await store.aclose()
        raise
    info = ServerInfo(listeners=listeners, broker=broker)
    info.store = store
    try:
        with info.force_stop:
            async with AsyncExitStack() as stack:
                if manager is not None:
                    dispatcher = await stack.enter_async_context(manager.running(broker.host()))
                    broker.set_hooks(dispatcher)
                    info.plugins = manager
                await _serve_listeners(info, broker, listeners, handle_signals, task_status)
    finally:
        for bound in listeners:
            with trio.CancelScope(shield=True):
                await bound.aclose()
        if store is not None:
            await store.aclose()  # the last changes (sessions going offline) are committed
    log.info("stopped")


async def _serve_listeners(
    info: ServerInfo,
    broker: Broker,
    listeners: list[BoundListener],
    handle_signals: bool,
    task_status: trio.TaskStatus[ServerInfo],
) -> None:
    async with trio.open_nursery() as nursery:
        if handle_signals:
            nursery.start_soon(_watch_signals, info, nursery)
        await nursery.start(broker.run)
        from plugin_host.admin.serving import serve_admin

        admin = await nursery.start(serve_admin, info)  # http(s) listeners, metrics, $SYS
        if info.store is not None:
            await nursery.start(info.store.run)  # the store's writer: until after shutdown
        manager = ListenerManager(broker, listeners)
        broker.listeners = manager
        broker.reloads.register("listeners", manager.reload_tls)
        async with trio.open_nursery() as serving:
            await serving.start(manager.run)
            task_status.started(info)
            await info.shutdown_requested.wait()
            log.info("shutting_down", connections=len(broker.connections))
            manager.stop_accepting_all()
            await broker.shutdown()
            serving.cancel_scope.cancel()
        await admin.aclose()  # in-flight admin requests may finish
        nursery.cancel_scope.cancel()


async def _watch_signals(info: ServerInfo, nursery: trio.Nursery) -> None:
    """First SIGINT/SIGTERM: graceful shutdown. Another one while draining: stop at once.

    SIGHUP: ``broker.reload()`` in its own task (a slow reload must not delay SIGTERM).
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("signal_received", signal=signal.Signals(signum).name)
            if signum == signal.SIGHUP:
                if info.broker is not None and not info.shutdown_requested.is_set():
                    nursery.start_soon(info.broker.reload)
                continue
            if info.shutdown_requested.is_set():
                info.force_stop.cancel()
            info.shutdown()
