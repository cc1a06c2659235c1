"""``$SYS/<nodename>/...``: the main counters published every ``systree_interval``.

Each value is published as its own message (QoS 0, not retained, the number as UTF-8 text)
through the broker's normal routing, so subscribers get them like any message and
``on_publish`` hooks see them. Per the MQTT specification a filter starting with a wildcard
(``#``, ``+/...``) does not match ``$SYS`` topics: subscribe to ``$SYS/#``.

Topics (``TOPICS`` maps each to its counter; see ``docs/metrics.md``)::

    $SYS/<node>/version                     plugin-host version
    $SYS/<node>/uptime                      seconds since start
    $SYS/<node>/connections/current         open client connections
    $SYS/<node>/connections/accepted        CONNECTs accepted since start
    $SYS/<node>/connections/refused         CONNECTs refused since start
    $SYS/<node>/sessions/online             sessions with a connection
    $SYS/<node>/sessions/offline            persistent sessions without one
    $SYS/<node>/subscriptions/count         subscriptions
    $SYS/<node>/retained/count              retained messages
    $SYS/<node>/messages/received           PUBLISH received from clients
    $SYS/<node>/messages/sent               messages delivered to clients
    $SYS/<node>/messages/routed             deliveries made by the router
    $SYS/<node>/messages/dropped            messages dropped (any reason)
    $SYS/<node>/messages/queued             messages waiting in session queues
    $SYS/<node>/messages/inflight           QoS 1/2 messages not yet acknowledged
    $SYS/<node>/bytes/received              bytes read from clients
    $SYS/<node>/bytes/sent                  bytes written to clients
    $SYS/<node>/store/commits               message store commits (persistence on)
    $SYS/<node>/store/changes               state changes made durable
    $SYS/<node>/store/pending               state changes not on disk yet
    $SYS/<node>/store/size                  bytes the store takes on disk
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
import trio

import plugin_host
from plugin_host.admin.metrics import snapshot

if TYPE_CHECKING:
    from plugin_host.broker.broker import Broker

__all__ = ["STORE_TOPICS", "TOPICS", "SysTree"]

log = structlog.get_logger(__name__)

#: Topic (after ``$SYS/<node>/``) -> key of :func:`plugin_host.admin.metrics.snapshot`.
TOPICS: dict[str, str] = {
    "uptime": "uptime",
    "connections/current": "connections",
    "connections/accepted": "connects",
    "connections/refused": "connects_refused",
    "sessions/online": "sessions_online",
    "sessions/offline": "sessions_offline",
    "subscriptions/count": "subscriptions",
    "retained/count": "retained",
    "messages/received": "publishes_received",
    "messages/sent": "publishes_sent",
    "messages/routed": "messages_routed",
    "messages/dropped": "messages_dropped",
    "messages/queued": "queued",
    "messages/inflight": "inflight",
    "bytes/received": "bytes_received",
    "bytes/sent": "bytes_sent",
}

#: The same for the message store's figures, published only with ``persistence = on``.
STORE_TOPICS: dict[str, str] = {
    "store/commits": "store_commits",
    "store/changes": "store_changes",
    "store/pending": "store_pending",
    "store/size": "store_size",
}


class SysTree:
    """Publishes the ``$SYS`` tree of ``broker`` every ``interval`` seconds."""

    def __init__(self, broker: Broker, interval: float) -> None:
        self.broker = broker
        self.interval = interval
        self.prefix = f"$SYS/{broker.cfg.nodename}/"
        #: Rounds published so far.
        self.rounds = 0

    async def run(self, stop: trio.Event) -> None:
        """Publish every ``interval`` until ``stop`` is set (the first round after one
        interval, like VerneMQ)."""
        while True:
            with trio.move_on_after(self.interval):
                await stop.wait()
            if stop.is_set() or self.broker.shutting_down:
                return
            try:
                await self.publish_once()
            except Exception:
                # A bug here must not take the broker down; it is logged and retried.
                log.exception("systree_failed")

    async def publish_once(self) -> None:
        """Publish every topic once (QoS 0, not retained)."""
        broker = self.broker
        values = snapshot(broker)
        publish = broker.host_publish
        prefix = self.prefix
        await publish(prefix + "version", plugin_host.__version__.encode())
        for topic, key in TOPICS.items():
            await publish(prefix + topic, str(values[key]).encode())
        if "store_commits" in values:
            for topic, key in STORE_TOPICS.items():
                await publish(prefix + topic, str(values[key]).encode())
        self.rounds += 1
