"""Run an in-process broker inside a test (public API for plugin authors).

::

    from plugin_host.testing import run_broker, open_client

    async def test_my_plugin():
        async with run_broker(plugins={"mine": my_plugin_module}) as broker:
            async with open_client(broker.address, username="u", password=b"p") as client:
                assert await client.subscribe("a/b", qos=1) == [1]

The broker listens on ``127.0.0.1`` on an ephemeral port, inside the calling task's context
(a nursery of its own), and is shut down gracefully when the block exits. Persistence is off
unless a test asks for it with a directory of its own (``persistence_dir=tmp_path``), so tests
never write into user directories.

With pytest, add ``pytest_plugins = ["plugin_host.testing.pytest_plugin"]`` to a conftest
and use the ``mqtt_broker`` fixture (a running broker with default settings) or the
``broker_factory`` fixture (``async with broker_factory(**settings) as broker``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from plugin_host.broker.broker import Broker, BrokerHost
from plugin_host.hooks.api import HookDispatch
from plugin_host.server import ServerInfo
from plugin_host.settings import BrokerConfig, Config, ListenerConfig

__all__ = ["RunningBroker", "make_config", "run_broker"]

_AUTH_HOOKS = ("auth_on_register", "auth_on_register_m5", "on_auth_m5")
_BROKER_FIELDS = {f.name for f in dataclasses.fields(BrokerConfig)}
_LISTENER_FIELDS = {f.name for f in dataclasses.fields(ListenerConfig)} - {
    "kind",
    "name",
    "host",
    "port",
}


class RunningBroker:
    """A broker started by :func:`run_broker`."""

    def __init__(self, info: ServerInfo, config: Config) -> None:
        self.info = info
        self.config = config

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` of the first listener."""
        return self.info.address()

    def listener_address(self, name: str) -> tuple[str, int]:
        """``(host, port)`` of the listener called ``name``."""
        return self.info.address(name)

    @property
    def broker(self) -> Broker:
        """The :class:`plugin_host.broker.broker.Broker` (sessions, counters, router)."""
        broker = self.info.broker
        assert broker is not None
        return broker

    @property
    def host(self) -> BrokerHost:
        """The :class:`plugin_host.hooks.api.Host` view plugins get."""
        return self.broker.host()

    @property
    def store(self) -> Any:
        """The :class:`plugin_host.store.Persistence` (None when persistence is off)."""
        return self.info.store

    @property
    def plugins(self) -> Any:
        """The :class:`plugin_host.plugins.manager.PluginManager` (None with ``hooks=``)."""
        return self.info.plugins

    def shutdown(self) -> None:
        """Start a graceful shutdown (what SIGTERM does)."""
        self.info.shutdown()


def make_config(
    config: Config | None = None,
    *,
    listeners: Sequence[ListenerConfig] | None = None,
    allow_anonymous: bool | None = None,
    plugins_present: bool = False,  # an authenticating plugin is present
    persistence: bool | None = None,
    persistence_dir: str | Path | None = None,
    persistence_sync: str | None = None,
    **settings: Any,
) -> Config:
    """A test config: ``config`` (or defaults) with ``settings`` applied.

    Persistence is off unless ``persistence_dir`` is given (or ``config`` enables it with an
    explicit ``persistence.dir``); ``persistence_sync`` sets ``persistence.sync``.

    ``settings`` are :class:`~plugin_host.settings.BrokerConfig` fields (``max_inflight_messages
    = 5``) or :class:`~plugin_host.settings.ListenerConfig` options applied to the default
    listener (``mountpoint = "m/"``). Without listeners one TCP listener on 127.0.0.1:0 is
    used. ``allow_anonymous`` defaults to True unless a plugin that authenticates clients
    (implements ``auth_on_register``, ``auth_on_register_m5`` or ``on_auth_m5``) is given.
    """
    cfg = dataclasses.replace(config) if config is not None else Config()
    broker_changes = {k: v for k, v in settings.items() if k in _BROKER_FIELDS}
    listener_changes = {k: v for k, v in settings.items() if k in _LISTENER_FIELDS}
    unknown = set(settings) - set(broker_changes) - set(listener_changes)
    if unknown:
        raise TypeError(f"unknown broker/listener settings: {', '.join(sorted(unknown))}")
    if allow_anonymous is None and "allow_anonymous" not in broker_changes and config is None:
        allow_anonymous = not plugins_present
    if allow_anonymous is not None:
        broker_changes["allow_anonymous"] = allow_anonymous
    cfg.broker = dataclasses.replace(cfg.broker, **broker_changes)
    pc = cfg.persistence
    if persistence is None:
        persistence = persistence_dir is not None or (
            config is not None and pc.enabled and pc.dir is not None
        )
    if persistence:
        directory = persistence_dir if persistence_dir is not None else pc.dir
        if directory is None:
            raise ValueError("persistence needs persistence_dir (a directory of the test's own)")
        cfg.persistence = dataclasses.replace(
            pc, enabled=True, dir=Path(directory), sync=persistence_sync or pc.sync
        )
    else:
        cfg.persistence = dataclasses.replace(pc, enabled=False)
    if listeners is not None:
        cfg.listeners = list(listeners)
    elif not cfg.listeners:
        cfg.listeners = [ListenerConfig(kind="tcp", name="test", host="127.0.0.1", port=0)]
    if listener_changes:
        cfg.listeners = [dataclasses.replace(lc, **listener_changes) for lc in cfg.listeners]
    return cfg


@asynccontextmanager
async def run_broker(
    config: Config | None = None,
    *,
    plugins: Mapping[str, Any] | Sequence[Any] | None = None,
    hooks: HookDispatch | None = None,
    installed_plugins: bool = False,
    listeners: Sequence[ListenerConfig] | None = None,
    allow_anonymous: bool | None = None,
    persistence_dir: str | Path | None = None,
    persistence_sync: str | None = None,
    **settings: Any,
) -> AsyncIterator[RunningBroker]:
    """Start a broker for the duration of the ``async with`` block.

    ``plugins``: in-process plugins (modules, classes or instances with ``@hookimpl``
    functions), as ``{name: plugin}`` or a list (named ``plugin00``, ``plugin01``... in chain
    order unless a ``plugins.<name>.priority`` says otherwise). ``installed_plugins=True``
    also loads the installed entry-point plugins (off by default, so tests are isolated).
    ``hooks`` replaces the plugin system with a :class:`~plugin_host.hooks.api.HookDispatch`.
    ``persistence_dir``: keep durable state there (persistence is off without it), e.g. to
    restart a broker on the same directory. Other keyword arguments: see :func:`make_config`.
    """
    from plugin_host import server

    if plugins is None:
        named: dict[str, Any] = {}
    elif isinstance(plugins, Mapping):
        named = dict(plugins)
    else:
        named = {f"plugin{i:02d}": p for i, p in enumerate(plugins)}
    cfg = make_config(
        config,
        listeners=listeners,
        allow_anonymous=allow_anonymous,
        plugins_present=hooks is not None
        or any(hasattr(p, h) for p in named.values() for h in _AUTH_HOOKS),
        persistence_dir=persistence_dir,
        persistence_sync=persistence_sync,
        **settings,
    )
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            info = await nursery.start(
                _serve,
                server.serve,
                cfg,
                hooks,
                named,
                None if installed_plugins else (),
            )
            try:
                yield RunningBroker(info, cfg)
            except BaseException as exc:
                body_error = exc
                raise
            finally:
                info.shutdown()
    except BaseExceptionGroup as group:
        # Give the test its own exception, not a group made by the broker's nursery.
        if body_error is not None and list(group.exceptions) == [body_error]:
            raise body_error from None
        raise


async def _serve(
    serve: Any,
    cfg: Config,
    hooks: HookDispatch | None,
    named: dict[str, Any],
    entry_points: Any,
    *,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    await serve(
        cfg,
        handle_signals=False,
        hooks=hooks,
        plugins=named,
        entry_points=entry_points,
        task_status=task_status,
    )
