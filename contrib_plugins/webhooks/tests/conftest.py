"""Shared helpers of the webhooks tests: certificates, a host for the plugin, and a way to run
the real plugin (its real lifespan, configured through the real config loader).

The broker and the dispatcher are not part of these tests: hooks are called the way the
dispatcher will call them, through the plugin module's hookimpls inside its lifespan.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog
import trustme

from plugin_host.config import apply_schema, load_config
from plugin_host.testing.http_server import TLSFiles, write_tls_files
from plugin_host_webhooks import plugin
from plugin_host_webhooks.config import schema
from plugin_host_webhooks.runtime import Webhooks


class PluginHost:
    """The part of the broker's Host the webhooks plugin uses: a log and hooks_changed()."""

    def __init__(self) -> None:
        self.hooks_changed_calls = 0

    @property
    def log(self) -> Any:
        # Looked up on use, so structlog.testing.capture_logs() sees the lines.
        return structlog.get_logger("plugin_host_webhooks").bind(plugin="webhooks")

    def hooks_changed(self) -> None:
        self.hooks_changed_calls += 1


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_files(ca: trustme.CA, tmp_path: Path) -> TLSFiles:
    return write_tls_files(ca, tmp_path, common_name="webhooks-client")


@pytest.fixture
def host() -> PluginHost:
    return PluginHost()


Runner = Callable[..., AbstractAsyncContextManager[Webhooks]]


@pytest.fixture
def webhooks(tmp_path: Path, host: PluginHost) -> Runner:
    """``async with webhooks(conf_text, suffix=".conf") as runtime:`` runs the plugin with
    that configuration file (vernemq.conf style or TOML)."""
    counter = iter(range(1000))

    @asynccontextmanager
    async def run(text: str = "", suffix: str = ".conf") -> AsyncIterator[Webhooks]:
        path = tmp_path / f"config{next(counter)}{suffix}"
        path.write_text(text)
        section = apply_schema(load_config(path).section("webhooks"), schema())
        async with plugin.lifespan(host, section) as runtime:
            yield runtime

    return run


def _conf(*lines: str, **hooks: str) -> str:
    out = list(lines)
    for name, spec in hooks.items():
        hook, endpoint = spec.split()
        out += [f"vmq_webhooks.{name}.hook = {hook}", f"vmq_webhooks.{name}.endpoint = {endpoint}"]
    return "\n".join(out) + "\n"


@pytest.fixture
def conf() -> Callable[..., str]:
    """``conf(*lines, name="hook url", ...)``: config text with those lines and webhooks."""
    return _conf
