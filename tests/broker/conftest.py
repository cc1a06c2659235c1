"""Shared helpers for the broker tests: paho-mqtt clients and a hook recorder.

``paho_clients(address, client_id, protocol=..., clean=..., session_expiry=...)`` is the
``paho`` fixture of ``plugin_host.testing.pytest_plugin``: :class:`plugin_host.testing.PahoClient`
objects (paho's callbacks waited for in worker threads, never a sleep), stopped after the test.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from plugin_host.testing import HookRecorder, PahoClient


@pytest.fixture
def paho_clients(paho: Callable[..., PahoClient]) -> Callable[..., PahoClient]:
    """Create PahoClients that are stopped after the test."""
    return paho


@pytest.fixture
def recorder() -> HookRecorder:
    return HookRecorder()
