"""The hook tests use the suite's ``host`` (a RecordingHost) and ``make_manager`` (real
PluginManagers of the test's own plugins, installed entry points left out) fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _default_logging(default_logging: None) -> None:
    """Each test starts and ends from structlog's defaults (it captures log events)."""
