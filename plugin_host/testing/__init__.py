"""Helpers for testing plugins and the broker itself: a public API for plugin authors.

* :func:`run_broker` starts an in-process broker (with your plugins) on an ephemeral port;
* :func:`open_client` connects a small MQTT client (3.1, 3.1.1 or 5) to it;
* :class:`PahoClient` drives paho-mqtt (an independent client; needs paho-mqtt) from trio;
* :class:`HookRecorder` is a plugin that records notification hook calls;
* :class:`RecordingHost` and :func:`plugin_manager` run plugins without a broker;
* ``pytest_plugins = ["plugin_host.testing.pytest_plugin"]`` provides the ``mqtt_broker``,
  ``broker_factory`` and ``paho`` fixtures.
"""

from plugin_host.testing.broker import RunningBroker, make_config, run_broker
from plugin_host.testing.client import (
    ClientSession,
    ConnectionRefused,
    MQTTClient,
    open_client,
)
from plugin_host.testing.host import RecordingHost, plugin_manager
from plugin_host.testing.paho import PahoClient
from plugin_host.testing.recorder import HookRecorder

__all__ = [
    "ClientSession",
    "ConnectionRefused",
    "HookRecorder",
    "MQTTClient",
    "PahoClient",
    "RecordingHost",
    "RunningBroker",
    "make_config",
    "open_client",
    "plugin_manager",
    "run_broker",
]
