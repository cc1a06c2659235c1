"""``GET /metrics``: the broker's counters as Prometheus metric families, read at scrape time.

Nothing here runs per message. The broker keeps plain integers
(:class:`plugin_host.broker.broker.Counters`, :class:`plugin_host.hooks.runner.HookStats`,
the listeners' connection counts) and :class:`BrokerCollector` turns them into
``prometheus_client`` families when Prometheus asks. Each broker gets its own
:class:`prometheus_client.CollectorRegistry` (:func:`build_registry`), so several brokers in one
process (tests, embedders) never share or clash, and the process-wide default registry is not
touched.

Plugins contribute families through the ``plugin_host_metrics()`` hook (see
:func:`plugin_host.hooks.specs.plugin_host_metrics` and ``docs/metrics.md``); a family whose name
is already taken is skipped with a warning, a plugin that raises is logged and left out of that
scrape.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import CollectorRegistry, Metric
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from plugin_host.mqtt.packets import PacketType
from plugin_host.mqtt.reason_codes import ReasonCode

if TYPE_CHECKING:
    from plugin_host.broker.broker import Broker
    from plugin_host.server import ServerInfo

__all__ = [
    "CONTENT_TYPE",
    "BrokerCollector",
    "build_registry",
    "reason_name",
    "render",
    "snapshot",
    "store_families",
    "store_figures",
]

log = structlog.get_logger(__name__)

#: The ``Content-Type`` of :func:`render`'s output (Prometheus text format 0.0.4).
CONTENT_TYPE = CONTENT_TYPE_LATEST

PREFIX = "plugin_host_"

_PACKET_NAMES = {int(t): t.name.lower() for t in PacketType}
_BOTH_WAYS = {"publish", "puback", "pubrec", "pubrel", "pubcomp", "disconnect", "auth"}
#: Packet types a client sends / a server sends (the others are always 0).
_FROM_CLIENT = _BOTH_WAYS | {"connect", "subscribe", "unsubscribe", "pingreq"}
_TO_CLIENT = _BOTH_WAYS | {"connack", "suback", "unsuback", "pingresp"}


def publishes_sent(broker: Broker) -> list[int]:
    """Deliveries per QoS (QoS 0 of open connections is still in their own counter)."""
    sent = list(broker.counters.publishes_sent)
    sent[0] += sum(conn.delivered for conn in broker.connections)
    return sent


def traffic_by_type(broker: Broker) -> tuple[list[int], list[int]]:
    """Wire bytes (received, sent) by packet type number, open connections included."""
    counters = broker.counters
    received = list(counters.bytes_received_by_type)
    sent = list(counters.bytes_sent_by_type)
    for conn in broker.connections:
        for kind, size in enumerate(conn.parser.bytes_by_type):
            received[kind] += size
        sent[3] += conn.delivered_bytes
    return received, sent


def reason_name(code: int) -> str:
    """``0x87`` -> ``"not_authorized"`` (the MQTT 5 name; hex for unknown codes)."""
    try:
        return ReasonCode(code).name.lower()
    except ValueError:
        return f"0x{code:02x}"


def _counter(name: str, doc: str, value: float | None = None, labels: Iterable[str] = ()) -> Any:
    return CounterMetricFamily(PREFIX + name, doc, value=value, labels=list(labels) or None)


def _gauge(name: str, doc: str, value: float | None = None, labels: Iterable[str] = ()) -> Any:
    return GaugeMetricFamily(PREFIX + name, doc, value=value, labels=list(labels) or None)


class BrokerCollector:
    """The broker's families plus the plugins' (``plugin_host_metrics``), deduplicated by name.

    ``info`` is the :class:`~plugin_host.server.ServerInfo` of the running server: its
    broker, MQTT listeners and plugin manager are looked up at every scrape (so listeners
    started or stopped later are seen).
    """

    def __init__(self, info: ServerInfo) -> None:
        self.info = info

    # prometheus_client calls collect() on every scrape (generate_latest).
    def collect(self) -> Iterator[Metric]:
        seen: set[str] = set()
        for family in self._all():
            if family.name in seen:
                continue
            seen.add(family.name)
            yield family

    def _all(self) -> Iterator[Metric]:
        broker = self.info.broker
        if broker is None:
            return
        yield from broker_families(broker, self.info)
        dispatcher = _dispatcher(self.info)
        if dispatcher is not None:
            yield from hook_families(dispatcher)
        yield from self._plugin_families()

    def _plugin_families(self) -> Iterator[Metric]:
        manager = self.info.plugins
        if manager is None:
            return
        caller = getattr(manager.pm.hook, "plugin_host_metrics", None)
        if caller is None:
            return
        enabled = set(manager.names)
        reserved = {PREFIX}
        taken: dict[str, str] = {}
        for impl in caller.get_hookimpls():
            plugin = impl.plugin_name
            if plugin not in enabled:
                continue
            try:
                families = list(impl.function() or ())
            except Exception as exc:
                log.error(
                    "plugin_metrics_failed",
                    plugin=plugin,
                    error=f"{type(exc).__name__}: {exc}",
                    exc_info=exc,
                )
                continue
            for family in families:
                if not isinstance(family, Metric):
                    log.error(
                        "plugin_metrics_invalid",
                        plugin=plugin,
                        got=type(family).__name__,
                        expected="prometheus_client metric family",
                    )
                    break
                owner = taken.get(family.name)
                if owner is not None or any(family.name.startswith(p) for p in reserved):
                    log.warning(
                        "plugin_metric_name_taken",
                        plugin=plugin,
                        metric=family.name,
                        owner=owner or "broker",
                    )
                    continue
                taken[family.name] = plugin
                yield family


def _dispatcher(info: ServerInfo) -> Any:
    manager = info.plugins
    if manager is not None:
        return manager.dispatcher
    broker = info.broker
    hooks = broker.hooks if broker is not None else None
    return hooks if hasattr(hooks, "stats") else None


def _mqtt_listeners(info: ServerInfo) -> list[Any]:
    """The MQTT listeners with ``name``, ``kind``, ``active``, ``rejected`` (running or not)."""
    broker = info.broker
    manager = getattr(broker, "listeners", None) if broker is not None else None
    if manager is not None:
        return list(manager.listeners)
    return list(info.listeners)


def broker_families(broker: Broker, info: ServerInfo | None = None) -> Iterator[Metric]:
    """Families for the broker's counters and state (connections, traffic, sessions ...)."""
    c = broker.counters
    listeners = _mqtt_listeners(info) if info is not None else []

    yield _gauge("connections", "Open client network connections.", len(broker.connections))
    per_listener = _gauge(
        "listener_connections", "Open connections per MQTT listener.", labels=("listener", "kind")
    )
    for bound in listeners:
        per_listener.add_metric([bound.name, bound.kind], bound.active)
    yield per_listener
    yield _counter("connects", "CONNECT packets accepted (CONNACK success).", c.connects)
    refused = _counter(
        "connects_refused",
        "Connections refused, by reason (MQTT 5 reason code name, or max_connections).",
        labels=("reason",),
    )
    by_reason: dict[str, int] = {}
    for code, count in c.connects_refused_by.items():
        name = reason_name(code)
        by_reason[name] = by_reason.get(name, 0) + count
    rejected = sum(getattr(bound, "rejected", 0) for bound in listeners)
    if rejected:
        by_reason["max_connections"] = by_reason.get("max_connections", 0) + rejected
    for name, count in sorted(by_reason.items()):
        refused.add_metric([name], count)
    yield refused
    yield _counter("session_takeovers", "Sessions taken over by a new connection.", c.takeovers)
    yield _counter(
        "auth_cancelled",
        "CONNECT authentications abandoned because the client went away.",
        c.auth_cancelled,
    )
    yield _counter(
        "protocol_errors", "Connections closed for a protocol violation.", c.protocol_errors
    )

    received = _counter("packets_received", "MQTT packets received, by type.", labels=("type",))
    for cls, count in c.packets_received.items():
        ptype = cls.packet_type.name.lower()
        if ptype in _FROM_CLIENT:
            received.add_metric([ptype], count)
    yield received
    sent = _counter("packets_sent", "MQTT packets sent (buffered), by type.", labels=("type",))
    publish = int(PacketType.PUBLISH)
    deliveries = publishes_sent(broker)
    for number, count in enumerate(c.packets_sent):
        out_type = _PACKET_NAMES.get(number)
        if out_type in _TO_CLIENT:
            extra = sum(deliveries) if number == publish else 0
            sent.add_metric([out_type], count + extra)
    yield sent
    yield _counter("bytes_received", "Bytes read from client sockets.", c.bytes_received)
    yield _counter("bytes_sent", "Bytes written to client sockets.", c.bytes_sent)
    bytes_in, bytes_out = traffic_by_type(broker)
    received_bytes = _counter(
        "packet_bytes_received",
        "Wire bytes of the MQTT packets received, by type.",
        labels=("type",),
    )
    sent_bytes = _counter(
        "packet_bytes_sent",
        "Wire bytes of the MQTT packets sent (buffered), by type.",
        labels=("type",),
    )
    for number in range(1, 16):
        name = _PACKET_NAMES.get(number)
        if name in _FROM_CLIENT:
            received_bytes.add_metric([name], bytes_in[number])
        if name in _TO_CLIENT:
            sent_bytes.add_metric([name], bytes_out[number])
    yield received_bytes
    yield sent_bytes

    pub_in = _counter(
        "publishes_received", "PUBLISH packets received from clients, by QoS.", labels=("qos",)
    )
    for qos, count in enumerate(c.publishes_received):
        pub_in.add_metric([str(qos)], count)
    yield pub_in
    pub_out = _counter(
        "publishes_sent",
        "Messages delivered to clients (first PUBLISH of each delivery, no re-sends), by QoS.",
        labels=("qos",),
    )
    for qos, count in enumerate(deliveries):
        pub_out.add_metric([str(qos)], count)
    yield pub_out
    yield _counter(
        "messages_routed",
        "Deliveries made by the router (one per matching subscription).",
        c.messages_routed,
    )
    dropped = _counter(
        "messages_dropped",
        "Messages dropped, by reason (not_authorized: publishes an auth_on_publish refused).",
        labels=("reason",),
    )
    reasons = dict(c.dropped)
    reasons["not_authorized"] = reasons.get("not_authorized", 0) + c.publishes_denied
    for name, count in sorted(reasons.items()):
        dropped.add_metric([name], count)
    yield dropped
    yield _counter(
        "subscribes_denied", "SUBSCRIBE packets an auth_on_subscribe refused.", c.subscribes_denied
    )

    state = session_state(broker)
    sessions = _gauge("sessions", "Sessions held, online or offline.", labels=("state",))
    sessions.add_metric(["online"], state["online"])
    sessions.add_metric(["offline"], state["offline"])
    yield sessions
    yield _gauge("queued_messages", "Messages waiting in session queues.", state["queued"])
    yield _gauge(
        "inflight_messages", "QoS 1/2 messages sent and not yet acknowledged.", state["inflight"]
    )
    yield _gauge("subscriptions", "Subscriptions (shared ones included).", state["subscriptions"])
    yield _gauge("retained_messages", "Retained messages stored.", state["retained"])
    yield _gauge("uptime_seconds", "Seconds since the broker started.", state["uptime"])
    yield from store_families(broker)


def store_figures(broker: Broker) -> dict[str, Any] | None:
    """The message store's figures (``Persistence.figures()``), None without a store."""
    figures = getattr(broker.store, "figures", None)
    return figures() if callable(figures) else None


def store_families(broker: Broker) -> Iterator[Metric]:
    """The message store's commits, folds and size (nothing with ``persistence = off``)."""
    f = store_figures(broker)
    if f is None:
        return
    yield _counter(
        "store_commits", "Journal commits (one transaction, one fsync each).", f["commits"]
    )
    yield _counter(
        "store_changes",
        "State changes made durable (queued, sent, acknowledged ...).",
        f["changes"],
    )
    yield _counter("store_rows_journaled", "Rows written to the journal.", f["rows_journaled"])
    yield _counter("store_journal_bytes", "Bytes of journal records written.", f["journal_bytes"])
    commit = SummaryMetricFamily(
        PREFIX + "store_commit_seconds",
        "Time from a batch being cut to its commit (sum / count = average commit time).",
    )
    commit.add_metric([], f["commits"], f["commit_seconds"])
    yield commit
    batches = _counter(
        "store_commit_batches",
        "Commits by number of changes they made durable (group commit sizes).",
        labels=("changes",),
    )
    for size in ("1", "2-9", "10-99", "100-999", "1000+"):
        batches.add_metric([size], f["batch_sizes"].get(size, 0))
    yield batches
    yield _gauge("store_max_batch_changes", "Most changes in one commit so far.", f["max_batch"])
    yield _counter("store_folds", "Folds of the journal into the tables.", f["folds"])
    yield _counter("store_rows_folded", "Rows written or deleted by folds.", f["rows_folded"])
    yield _counter(
        "store_fold_seconds", "Time spent folding (snapshot and transactions).", f["fold_seconds"]
    )
    yield _counter(
        "store_write_failures", "Failed commits or folds (retried every second).", f["failures"]
    )
    yield _gauge(
        "store_pending_changes",
        "State changes not on disk yet (their acknowledgements wait).",
        f["pending_changes"],
    )
    yield _gauge("store_size_bytes", "Size of the store on disk (file and WAL).", f["size_bytes"])


def session_state(broker: Broker) -> dict[str, Any]:
    """Gauges computed from the broker's state (O(sessions): scrape time only)."""
    online = offline = queued = inflight = 0
    for session in broker.sessions.values():
        if session.conn is not None:
            online += 1
        else:
            offline += 1
        queued += len(session.queue)
        inflight += len(session.inflight)
    return {
        "online": online,
        "offline": offline,
        "queued": queued,
        "inflight": inflight,
        "subscriptions": broker.router.subscription_count(),
        "retained": broker.router.retained_count(),
        "uptime": round(time.monotonic() - broker.counters.started_at, 3),
    }


def hook_families(dispatcher: Any) -> Iterator[Metric]:
    """Per (plugin, hook) calls, errors and latency; notification queue figures."""
    labels = ("plugin", "hook")
    calls = _counter("hook_calls", "Hook implementation calls.", labels=labels)
    errors = _counter(
        "hook_errors",
        "Hook implementation calls that raised, timed out or returned an invalid result.",
        labels=labels,
    )
    duration = SummaryMetricFamily(
        PREFIX + "hook_duration_seconds",
        "Time spent in hook implementations (sum / count = average).",
        labels=list(labels),
    )
    for (plugin, hook), stats in sorted(dispatcher.stats.items()):
        calls.add_metric([plugin, hook], stats.calls)
        errors.add_metric([plugin, hook], stats.errors)
        duration.add_metric([plugin, hook], stats.calls, stats.seconds)
    yield calls
    yield errors
    yield duration
    dropped = _counter(
        "hook_notifications_dropped",
        "Notification hook calls dropped because the queue was full.",
        labels=("hook",),
    )
    for hook, count in sorted(dispatcher.dropped_by_hook.items()):
        dropped.add_metric([hook], count)
    yield dropped
    queued = getattr(dispatcher, "queued", None)
    if callable(queued):
        yield _gauge("hook_notifications_queued", "Notifications waiting for a worker.", queued())


def build_registry(info: ServerInfo) -> CollectorRegistry:
    """A registry of this server's own (never the process-wide default registry)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(info))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The Prometheus text exposition of ``registry``."""
    return generate_latest(registry)


def snapshot(broker: Broker) -> dict[str, Any]:
    """The main counters as plain numbers (for ``$SYS``)."""
    c = broker.counters
    state = session_state(broker)
    dropped = sum(c.dropped.values()) + c.publishes_denied
    return {
        "uptime": int(state["uptime"]),
        "connections": len(broker.connections),
        "connects": c.connects,
        "connects_refused": c.connects_refused,
        "sessions_online": state["online"],
        "sessions_offline": state["offline"],
        "subscriptions": state["subscriptions"],
        "retained": state["retained"],
        "queued": state["queued"],
        "inflight": state["inflight"],
        "publishes_received": sum(c.publishes_received),
        "publishes_sent": sum(publishes_sent(broker)),
        "messages_routed": c.messages_routed,
        "messages_dropped": dropped,
        "bytes_received": c.bytes_received,
        "bytes_sent": c.bytes_sent,
        **_store_snapshot(broker),
    }


def _store_snapshot(broker: Broker) -> dict[str, Any]:
    """``store_*`` keys of :func:`snapshot` (none with ``persistence = off``)."""
    f = store_figures(broker)
    if f is None:
        return {}
    return {
        "store_commits": f["commits"],
        "store_changes": f["changes"],
        "store_pending": f["pending_changes"],
        "store_size": f["size_bytes"],
    }
