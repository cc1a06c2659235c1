"""Helpers for testing plugins and the broker itself: a public API for plugin authors.

* :func:`run_broker` starts an in-process broker (with your plugins) on an ephemeral port;
* :func:`open_client` connects a small MQTT client (3.1, 3.1.1 or 5) to it;
* :class:`HookRecorder` is a plugin that records notification hook calls;
* ``pytest_plugins = ["plugin_host.testing.pytest_plugin"]`` provides the ``mqtt_broker`` and
  ``broker_factory`` fixtures.
"""

from plugin_host.testing.broker import RunningBroker, make_config, run_broker
from plugin_host.testing.client import (
    ClientSession,
    ConnectionRefused,
    MQTTClient,
    open_client,
)
from plugin_host.testing.recorder import HookRecorder

__all__ = [
    "ClientSession",
    "ConnectionRefused",
    "HookRecorder",
    "MQTTClient",
    "RunningBroker",
    "make_config",
    "open_client",
    "run_broker",
]
