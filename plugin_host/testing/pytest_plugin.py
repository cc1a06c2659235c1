"""pytest fixtures for plugin-host (needs pytest-trio in trio mode).

Enable them in a ``conftest.py``::

    pytest_plugins = ["plugin_host.testing.pytest_plugin"]

* ``mqtt_broker``: a running :class:`~plugin_host.testing.RunningBroker` (anonymous clients
  allowed, no plugins), shut down after the test.
* ``broker_factory``: ``async with broker_factory(plugins=..., **settings) as broker`` for
  brokers with plugins or settings (the arguments of :func:`plugin_host.testing.run_broker`).
* ``paho``: ``paho(address, client_id, **options)`` makes
  :class:`~plugin_host.testing.PahoClient` s (needs paho-mqtt), all stopped after the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from plugin_host.testing.broker import RunningBroker, run_broker
from plugin_host.testing.paho import PahoClient


@pytest.fixture
async def mqtt_broker() -> AsyncIterator[RunningBroker]:
    """A broker with default settings and anonymous access, on an ephemeral port."""
    async with run_broker() as broker:
        yield broker


@pytest.fixture
def broker_factory() -> Callable[..., Any]:
    """``run_broker`` itself: ``async with broker_factory(**kwargs) as broker``."""
    return run_broker


@pytest.fixture
def paho() -> Iterator[Callable[..., PahoClient]]:
    """``paho(address, client_id, **options)``: a :class:`~plugin_host.testing.PahoClient`;
    every client made is stopped after the test."""
    made: list[PahoClient] = []

    def make(*args: Any, **kwargs: Any) -> PahoClient:
        client = PahoClient(*args, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.stop()
