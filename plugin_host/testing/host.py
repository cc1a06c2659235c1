"""Plugins without a broker: a recording :class:`Host` and a plugin manager of chosen plugins.

For tests of a plugin's lifespan and hook chains that need no MQTT traffic::

    from plugin_host.testing import RecordingHost, plugin_manager

    async def test_my_plugin_greets_at_start():
        host = RecordingHost()
        async with plugin_manager({"mine": MyPlugin()}).running(host) as dispatcher:
            assert dispatcher.implemented("auth_on_register")
        assert host.published == [("hello", b"world", 0, False)]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import structlog

from plugin_host.hooks.api import SessionInfo
from plugin_host.plugins.manager import PluginManager
from plugin_host.settings import Config, PluginSection, PluginSettings

__all__ = ["RecordingHost", "plugin_manager"]


class RecordingHost:
    """A :class:`~plugin_host.hooks.api.Host` without a broker: records what plugins ask of it.

    * ``published``: ``(topic, payload, qos, retain)`` of each :meth:`publish`;
    * ``disconnects``: ``(mountpoint, client_id, do_cleanup)`` of each :meth:`disconnect`
      (True for a client in ``sessions``, else False, like the broker);
    * ``reauthorized``: ``(mountpoint, client_id, username)`` of each
      :meth:`reauthorize_subscriptions` (nothing is removed);
    * ``hooks_changed_calls``: how often :meth:`hooks_changed` was called;
    * ``reload_callbacks``: the callbacks given to :meth:`on_reload`.

    ``config`` is what plugins read as ``host.config`` (defaults when None); ``sessions`` the
    sessions :meth:`sessions` and :meth:`session` know.
    """

    def __init__(self, config: Config | None = None, *, sessions: Iterable[SessionInfo] = ()):
        self._config = config or Config()
        self.known = {(s.mountpoint, s.client_id): s for s in sessions}
        self.published: list[tuple[str, bytes, int, bool]] = []
        self.disconnects: list[tuple[str, str, bool]] = []
        self.reauthorized: list[tuple[str, str, str | None]] = []
        self.hooks_changed_calls = 0
        self.reload_callbacks: list[Callable[[], Any]] = []

    @property
    def log(self) -> Any:
        # Looked up on use, so structlog.testing.capture_logs() sees the lines.
        return structlog.get_logger("plugin_host.testing.host")

    @property
    def config(self) -> Config:
        return self._config

    async def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Mapping[str, Any] | None = None,
        mountpoint: str = "",
    ) -> None:
        self.published.append((topic, payload, qos, retain))

    async def disconnect(
        self, client_id: str, mountpoint: str = "", *, do_cleanup: bool = False
    ) -> bool:
        self.disconnects.append((mountpoint, client_id, do_cleanup))
        return (mountpoint, client_id) in self.known

    async def reauthorize_subscriptions(
        self, client_id: str, mountpoint: str = "", username: str | None = None
    ) -> list[str]:
        self.reauthorized.append((mountpoint, client_id, username))
        return []

    def sessions(self) -> Sequence[SessionInfo]:
        return list(self.known.values())

    def session(self, client_id: str, mountpoint: str = "") -> SessionInfo | None:
        return self.known.get((mountpoint, client_id))

    def hooks_changed(self) -> None:
        self.hooks_changed_calls += 1

    def on_reload(self, callback: Callable[[], Any]) -> Callable[[], None]:
        self.reload_callbacks.append(callback)
        return lambda: self.reload_callbacks.remove(callback)


def plugin_manager(
    plugins: Mapping[str, Any],
    *,
    priorities: Mapping[str, int] | None = None,
    on_error: Mapping[str, str] | None = None,
    disabled: Sequence[str] = (),
    sections: Mapping[str, Mapping[str, Any]] | None = None,
    hook_timeout: float | None = None,
    notify_queue_size: int = 10_000,
    notify_workers: int = 4,
    trace: bool = False,
) -> PluginManager:
    """A real :class:`~plugin_host.plugins.manager.PluginManager` of just ``plugins``.

    ``plugins``: ``{name: module, class or instance}``, registered like discovered plugins
    (installed entry points are left out). ``priorities``, ``on_error`` and ``disabled`` are
    the ``plugins.<name>.*`` settings; ``sections`` the plugins' raw config sections
    (``{"name": {"key": "value"}}``); ``hook_timeout`` in seconds. Use it with
    ``async with manager.running(host) as dispatcher``.
    """
    config = Config()
    for name, priority in (priorities or {}).items():
        config.plugins.setdefault(name, PluginSettings(name=name)).priority = priority
    for name, mode in (on_error or {}).items():
        config.plugins.setdefault(name, PluginSettings(name=name)).on_error = mode  # type: ignore[assignment]
    for name in disabled:
        config.plugins.setdefault(name, PluginSettings(name=name)).enabled = False
    for name, values in (sections or {}).items():
        config.sections[name] = PluginSection(plugin=name, values=dict(values))
    if hook_timeout is not None:
        config.broker.hook_timeout = hook_timeout
    return PluginManager.discover(
        config,
        entry_points=(),
        extra_plugins=plugins,
        notify_queue_size=notify_queue_size,
        notify_workers=notify_workers,
        trace=trace,
    )
