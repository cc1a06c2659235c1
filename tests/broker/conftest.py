"""Shared helpers for the broker tests: paho-mqtt clients, a hook recorder, raw socket reads.

``paho_clients(address, client_id, protocol=..., clean=..., session_expiry=...)`` is the
``paho`` fixture of ``plugin_host.testing.pytest_plugin``: :class:`plugin_host.testing.PahoClient`
objects (paho's callbacks waited for in worker threads, never a sleep), stopped after the test.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio

from plugin_host.testing import HookRecorder, PahoClient


@pytest.fixture
def paho_clients(paho: Callable[..., PahoClient]) -> Callable[..., PahoClient]:
    """Create PahoClients that are stopped after the test."""
    return paho


@pytest.fixture
def recorder() -> HookRecorder:
    return HookRecorder()


async def _read_until_closed(stream: trio.SocketStream) -> bytes:
    data = b""
    with trio.fail_after(10):
        while True:
            try:
                chunk = await stream.receive_some(4096)
            except trio.BrokenResourceError:
                return data
            if not chunk:
                return data
            data += chunk


@pytest.fixture
def read_until_closed() -> Callable[[trio.SocketStream], Awaitable[bytes]]:
    """``await read_until_closed(stream)``: every byte the broker sends on a raw socket until
    it closes the connection (reset included), within 10 s."""
    return _read_until_closed
