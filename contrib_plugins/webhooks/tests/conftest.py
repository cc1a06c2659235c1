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
from plugin_host_webhooks.config import schema
from plugin_host_webhooks.plugin import WebhooksPlugin
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


@pytest.fixture
def plugin() -> WebhooksPlugin:
    """A fresh plugin instance (what the manager makes per broker through
    ``plugin_host_plugin``); call its hookimpls like the dispatcher does."""
    return WebhooksPlugin()


Runner = Callable[..., AbstractAsyncContextManager[Webhooks]]


@pytest.fixture
def webhooks(tmp_path: Path, host: PluginHost, plugin: WebhooksPlugin) -> Runner:
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


# --------------------------------------------------------------------------------------------
# End to end: a real broker with the plugin, and paho-mqtt as an independent client (the
# ``paho`` fixture of plugin_host.testing.pytest_plugin).


@pytest.fixture
def broker(
    tmp_path: Path, plugin: WebhooksPlugin
) -> Callable[..., AbstractAsyncContextManager[Any]]:
    """``async with broker(conf_text, plugins={...}) as running``: a real broker on an
    ephemeral port with the webhooks plugin (plus ``plugins``), configured by ``conf_text``."""

    @asynccontextmanager
    async def run(text: str, plugins: dict[str, Any] | None = None) -> AsyncIterator[Any]:
        from plugin_host.testing import run_broker

        path = tmp_path / "broker.conf"
        path.write_text("listener.tcp.default = 127.0.0.1:0\n" + text)
        async with run_broker(
            load_config(path), plugins={"webhooks": plugin, **(plugins or {})}
        ) as running:
            yield running

    return run


class HookArgs:
    """Typical hook arguments (fresh dicts per test): a CONNECT and a PUBLISH of client c1."""

    def __init__(self) -> None:
        self.register: dict[str, Any] = {
            "peer_addr": "127.0.0.1",
            "peer_port": 5000,
            "mountpoint": "",
            "client_id": "c1",
            "username": "u",
            "password": b"p",
            "clean_session": True,
            "listener_addr": None,
            "listener_port": None,
            "listener_type": None,
            "client_cert": None,
        }
        self.message: dict[str, Any] = {
            "username": "u",
            "mountpoint": "",
            "client_id": "c1",
            "qos": 1,
            "topic": "a/b",
            "payload": b"x",
            "retain": False,
        }


@pytest.fixture
def args() -> HookArgs:
    return HookArgs()
