"""Helpers for the hook tests: a recording Host and a factory for real PluginManagers.

The plugin objects are registered through the real manager (the same path as discovered
plugins); installed entry points are left out so the tests see only their own plugins.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
import structlog

from plugin_host.hooks.api import SessionInfo
from plugin_host.plugins.manager import PluginManager
from plugin_host.settings import Config, PluginSection, PluginSettings


class RecordingHost:
    """A Host without a broker: records what plugins ask it to do."""

    def __init__(self, config: Config | None = None) -> None:
        self._config = config or Config()
        self.published: list[tuple[str, bytes, int, bool]] = []
        self.changed = 0

    @property
    def log(self) -> Any:
        return structlog.get_logger("test.host")

    @property
    def config(self) -> Any:
        return self._config

    async def publish(self, topic, payload, qos=0, retain=False, properties=None, mountpoint=""):
        self.published.append((topic, payload, qos, retain))

    async def disconnect(self, client_id, mountpoint="", *, do_cleanup=False):
        return False

    def sessions(self) -> Sequence[SessionInfo]:
        return []

    def session(self, client_id, mountpoint=""):
        return None

    def hooks_changed(self) -> None:
        self.changed += 1


def make_config(
    *,
    priorities: Mapping[str, int] | None = None,
    on_error: Mapping[str, str] | None = None,
    disabled: Sequence[str] = (),
    sections: Mapping[str, Mapping[str, Any]] | None = None,
    hook_timeout: float | None = None,
) -> Config:
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
    return config


@pytest.fixture(autouse=True)
def _default_logging():
    """Tests capture log events (structlog.testing.capture_logs); a CLI test elsewhere may
    have configured logging at another level, so start and end from structlog's defaults."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture
def host() -> RecordingHost:
    return RecordingHost()


@pytest.fixture
def make_manager() -> Callable[..., PluginManager]:
    """``make_manager({"name": plugin, ...}, priorities=..., on_error=..., trace=..., ...)``."""

    def build(
        plugins: Mapping[str, Any],
        *,
        notify_queue_size: int = 10_000,
        notify_workers: int = 4,
        trace: bool = False,
        **config_options: Any,
    ) -> PluginManager:
        return PluginManager.discover(
            make_config(**config_options),
            entry_points=(),
            extra_plugins=plugins,
            notify_queue_size=notify_queue_size,
            notify_workers=notify_workers,
            trace=trace,
        )

    return build
