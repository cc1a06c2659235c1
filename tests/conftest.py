"""Suite-wide test set-up."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
import structlog

from plugin_host.plugins.manager import PluginManager
from plugin_host.testing import RecordingHost, plugin_manager


@pytest.fixture(autouse=True, scope="session")
def _private_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """``plugin-host serve`` without a config keeps its message store in the platform data dir
    (``$XDG_DATA_HOME/plugin-host``): point that at a temporary directory for the whole run, so
    tests (and the processes they start) never write into the user's directories, and two test
    runs on one machine never share (and lock) one store."""
    saved = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg-data"))
    yield
    if saved is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = saved


# --------------------------------------------------------------------------------------------
# Plugins without a broker (tests/hooks, tests/plugins)


@pytest.fixture
def default_logging() -> Iterator[None]:
    """Start and end a test from structlog's defaults. Tests that capture log events
    (structlog.testing.capture_logs) use it: a CLI test elsewhere may have configured logging
    at another level."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture
def host() -> RecordingHost:
    """A Host without a broker, recording what plugins ask of it."""
    return RecordingHost()


@pytest.fixture
def make_manager() -> Callable[..., PluginManager]:
    """``make_manager({"name": plugin, ...}, priorities=..., on_error=..., trace=..., ...)``:
    a real PluginManager of just those plugins (:func:`plugin_host.testing.plugin_manager`)."""
    return plugin_manager
