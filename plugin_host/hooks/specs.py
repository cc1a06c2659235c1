"""The hook specifications: the documented plugin API of plugin-host.

Every hook below is a pluggy hookspec of the ``plugin_host`` project. A plugin implements a hook
by defining a function (or ``async def``) of the same name marked with
:data:`plugin_host.hookimpl`. An implementation may declare **any subset** of the hook's
arguments, in any order (pluggy's rule); only those are passed. Arguments the broker has no
value for (for example ``listener_addr`` on a listener without ``forward_connection_opts``)
are passed as ``None``.

Hook names are VerneMQ's. There are two kinds:

* **Chain hooks** (``auth_on_*``, ``on_auth_m5``, ``on_deliver*``, ``on_unsubscribe*``): the
  host calls the plugins in chain order (``plugins.<name>.priority``, lower first, then the
  plugins without priority by name) until one returns something other than ``None``. Return
  ``None`` for *next* (ask the next plugin), ``True`` for *ok*, a ``dict`` of modifiers for *ok
  with changes*, ``False`` or :class:`plugin_host.Deny` to refuse. When every plugin says next,
  the request is refused (default deny). Anything else, an invalid modifier, an exception or a
  timeout (``hook_timeout``, default 5 s) is a deny logged with the plugin name;
  ``plugins.<name>.on_error = next`` makes that plugin's faults (exceptions, timeouts,
  invalid results) count as next instead.
* **Notification hooks** (every other ``on_*`` hook): every plugin is called, results are
  ignored. They run off the client's packet path, in a bounded queue: a slow plugin never delays
  a client, and when the queue is full notifications are dropped (counted and logged).

Implementations may be plain functions or coroutines. A plain function runs on the event loop,
so it **must be quick** (no blocking I/O; use ``async def`` and ``trio.to_thread.run_sync``
for blocking work). ``async def`` implementations are bounded by ``hook_timeout`` and are
cancelled when the client goes away.

Argument types (see :doc:`reference/python-forms` for the complete table): ``peer_addr: str``,
``peer_port: int``, ``mountpoint: str`` (``""`` when none), ``client_id: str``,
``username: str | None``, ``password: bytes | None``, ``clean_session`` / ``clean_start: bool``,
``qos: int``, ``topic: str``, ``payload: bytes``, ``retain: bool``, ``topics`` (a list whose
shape depends on the hook), ``properties: dict`` (MQTT 5 properties, ``p_*`` keys),
``listener_addr: str | None``, ``listener_port: int | None``, ``listener_type: str | None``,
``client_cert: bytes | None`` (DER).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any

from plugin_host.hooks.markers import hookspec
from plugin_host.settings import Key, PluginSection

Topics = list[Any]
Properties = dict[str, Any]
Result = Any

# --------------------------------------------------------------------------------------------
# Registration (CONNECT)
# --------------------------------------------------------------------------------------------


@hookspec
def auth_on_register(
    peer_addr: str,
    peer_port: int,
    mountpoint: str,
    client_id: str,
    username: str | None,
    password: bytes | None,
    clean_session: bool,
    listener_addr: str | None,
    listener_port: int | None,
    listener_type: str | None,
    client_cert: bytes | None,
) -> Result:
    """Authenticate an MQTT 3.1 / 3.1.1 client (chain hook).

    **When:** after a CONNECT was parsed and its client id checked, before the session is
    created. Not called when ``allow_anonymous`` is on (globally or for the listener).

    **Arguments:** the peer address and port, the subscriber id (``mountpoint``,
    ``client_id``), the credentials (``username``, ``password`` as sent, ``None`` when absent),
    ``clean_session``; ``listener_addr``, ``listener_port``, ``listener_type`` and the TLS peer
    certificate ``client_cert`` (DER) when the listener has ``forward_connection_opts = on``.

    **Returns:** ``None`` (next), ``True`` (ok), ``False`` / :class:`~plugin_host.Deny` (deny),
    or a dict of modifiers: ``mountpoint``, ``client_id`` (or ``subscriber_id``), ``username``,
    ``clean_session``, ``max_message_size``, ``max_inflight_messages``, ``retry_interval`` (ms),
    ``upgrade_qos``, ``max_online_messages``, ``max_offline_messages``, ``max_message_rate``,
    ``max_connection_lifetime`` and the accepted-for-compatibility VerneMQ keys.

    **On deny:** ``Deny(..., invalid_credentials=True)`` gives CONNACK return code 4 (bad user
    name or password); any other deny, and an exhausted chain, give CONNACK 5 (not
    authorised). The connection is then closed.
    """


@hookspec
def auth_on_register_m5(
    peer_addr: str,
    peer_port: int,
    mountpoint: str,
    client_id: str,
    username: str | None,
    password: bytes | None,
    clean_start: bool,
    properties: Properties,
    listener_addr: str | None,
    listener_port: int | None,
    listener_type: str | None,
    client_cert: bytes | None,
) -> Result:
    """Authenticate an MQTT 5 client (chain hook).

    **When:** as :func:`auth_on_register`, for MQTT 5 clients (after :func:`on_auth_m5` when the
    CONNECT carries an authentication method).

    **Arguments:** as :func:`auth_on_register` with ``clean_start`` instead of
    ``clean_session``, plus the CONNECT ``properties``.

    **Returns:** as :func:`auth_on_register` (``clean_start`` instead of ``clean_session``,
    ``clean_session`` is accepted and mapped), plus the modifier ``properties`` with
    ``p_user_property`` (sent in CONNACK) and ``p_session_expiry_interval``.

    **On deny:** CONNACK with the ``Deny``'s ``reason_code`` (and its ``p_reason_string`` /
    ``p_server_ref`` properties) when given, else 0x86 (bad user name or password); an
    exhausted chain gives 0x86 as well. The connection is then closed.
    """


@hookspec
def on_auth_m5(
    username: str | None,
    mountpoint: str,
    client_id: str,
    properties: Properties,
) -> Result:
    """Enhanced authentication of an MQTT 5 client (chain hook).

    **When:** the CONNECT carries ``p_authentication_method`` (before
    :func:`auth_on_register_m5`), on every AUTH packet of the exchange, and on
    re-authentication of a connected client.

    **Arguments:** ``username``, the subscriber id, and ``properties`` holding
    ``p_authentication_method`` and ``p_authentication_data``.

    **Returns:** a dict ``{"reason_code": 0 | 24 | "success" | "continue_authentication",
    "properties": {"p_authentication_method": str, "p_authentication_data": bytes}}``
    (reason code 0 = authentication done, 24 = send AUTH and continue), ``True`` (success
    without data), ``None`` (next), or a deny.

    **On deny:** with a ``reason_code`` the client gets CONNACK (or DISCONNECT when
    re-authenticating) with that code; without one the connection is closed.
    """


@hookspec
def on_register(
    peer_addr: str, peer_port: int, mountpoint: str, client_id: str, username: str | None
) -> None:
    """An MQTT 3 client was authenticated and its session registered (notification).

    **When:** after :func:`auth_on_register` allowed the client and the session exists, before
    CONNACK is sent.

    **Arguments:** peer address and port, the (possibly rewritten) subscriber id and user name.
    """


@hookspec
def on_register_m5(
    peer_addr: str,
    peer_port: int,
    mountpoint: str,
    client_id: str,
    username: str | None,
    properties: Properties,
) -> None:
    """An MQTT 5 client was authenticated and its session registered (notification).

    **When:** as :func:`on_register`, for MQTT 5 clients.

    **Arguments:** as :func:`on_register`, plus the CONNACK ``properties`` assembled so far.
    """


# --------------------------------------------------------------------------------------------
# Publish
# --------------------------------------------------------------------------------------------


@hookspec
def auth_on_publish(
    username: str | None,
    mountpoint: str,
    client_id: str,
    qos: int,
    topic: str,
    payload: bytes,
    retain: bool,
) -> Result:
    """Authorise a PUBLISH of an MQTT 3 client (chain hook).

    **When:** for every incoming PUBLISH, and once at CONNECT for the client's will message
    (a deny then refuses the connection).

    **Arguments:** the publisher's ``username`` and subscriber id, and the message: ``qos``,
    ``topic`` (without mountpoint), ``payload``, ``retain``.

    **Returns:** ``None`` / ``True`` / deny, bare ``bytes`` (a new payload), or modifiers
    ``topic`` (a valid topic name), ``payload``, ``qos`` (0-2), ``retain``, ``mountpoint``,
    ``throttle`` (ms to pause reading from the client).

    **On deny:** an MQTT 3.1.1 client is disconnected; an MQTT 3.1 client gets its
    PUBACK/PUBREC as usual and the message is dropped. For the will message: CONNACK 5.
    """


@hookspec
def auth_on_publish_m5(
    username: str | None,
    mountpoint: str,
    client_id: str,
    qos: int,
    topic: str,
    payload: bytes,
    retain: bool,
    properties: Properties,
) -> Result:
    """Authorise a PUBLISH of an MQTT 5 client (chain hook).

    **When:** as :func:`auth_on_publish`, for MQTT 5 clients.

    **Arguments:** as :func:`auth_on_publish`, plus the PUBLISH ``properties``.

    **Returns:** as :func:`auth_on_publish` (no bare ``bytes``), plus the modifier
    ``properties`` (replaces the message's properties; keys ``p_user_property``,
    ``p_message_expiry_interval``, ``p_content_type``, ``p_payload_format_indicator``,
    ``p_response_topic``, ``p_correlation_data``).

    **On deny:** QoS 1/2: PUBACK/PUBREC with the ``Deny``'s ``reason_code`` (default 0x87 not
    authorised) and reason string; QoS 0: the message is dropped silently. For the will
    message: CONNACK 0x87.
    """


@hookspec
def on_publish(
    username: str | None,
    mountpoint: str,
    client_id: str,
    qos: int,
    topic: str,
    payload: bytes,
    retain: bool,
) -> None:
    """A message of an MQTT 3 client was accepted and routed (notification).

    **When:** after the (possibly modified) message was routed, also for the will message
    published at an unexpected disconnect.

    **Arguments:** as :func:`auth_on_publish`, with the modified values.
    """


@hookspec
def on_publish_m5(
    username: str | None,
    mountpoint: str,
    client_id: str,
    qos: int,
    topic: str,
    payload: bytes,
    retain: bool,
    properties: Properties,
) -> None:
    """A message of an MQTT 5 client was accepted and routed (notification).

    **When:** as :func:`on_publish`, for MQTT 5 clients.

    **Arguments:** as :func:`auth_on_publish_m5`, with the modified values.
    """


# --------------------------------------------------------------------------------------------
# Subscribe / unsubscribe
# --------------------------------------------------------------------------------------------


@hookspec
def auth_on_subscribe(
    username: str | None, mountpoint: str, client_id: str, topics: Topics
) -> Result:
    """Authorise a SUBSCRIBE of an MQTT 3 client (chain hook).

    **When:** for every incoming SUBSCRIBE, before anything is subscribed.

    **Arguments:** ``username``, the subscriber id, and ``topics``: a list of
    ``(filter, qos)`` tuples as requested (shared subscriptions as ``$share/<group>/<filter>``).

    **Returns:** ``None`` / ``True`` / deny, or a list of ``(filter, qos)`` replacing the
    request, one entry per requested topic: a qos of 0-2 subscribes with that qos, any other
    value (convention 128) rejects that topic.

    **On deny:** SUBACK with 0x80 (failure) for every topic. The client stays connected.
    """


@hookspec
def auth_on_subscribe_m5(
    username: str | None,
    mountpoint: str,
    client_id: str,
    topics: Topics,
    properties: Properties,
) -> Result:
    """Authorise a SUBSCRIBE of an MQTT 5 client (chain hook).

    **When:** as :func:`auth_on_subscribe`, for MQTT 5 clients.

    **Arguments:** ``topics`` is a list of ``(filter, qos, options)`` tuples where
    ``options`` is ``{"no_local": bool, "rap": bool, "retain_handling": "send_retain" |
    "send_if_new_sub" | "dont_send"}``; ``properties`` are the SUBSCRIBE properties
    (``p_subscription_id``, ``p_user_property``).

    **Returns:** as :func:`auth_on_subscribe` with ``(filter, qos[, options])`` entries (a
    missing or partial ``options`` keeps the requested ones), or a dict ``{"topics": [...],
    "properties": {"p_reason_string": ..., "p_user_property": [...]}}``. A rejecting qos value
    (128, 0x87, ...) becomes that slot's SUBACK reason code.

    **On deny:** SUBACK with the ``Deny``'s ``reason_code`` when it is one of 0x80, 0x85, 0x87,
    0x97, else 0x87 (not authorised), for every topic. The client stays connected.
    """


@hookspec
def on_subscribe(username: str | None, mountpoint: str, client_id: str, topics: Topics) -> None:
    """Subscriptions of an MQTT 3 client were stored (notification).

    **Arguments:** as :func:`auth_on_subscribe`; ``topics`` holds the final (possibly
    rewritten) ``(filter, qos)`` entries, 128 for rejected ones.
    """


@hookspec
def on_subscribe_m5(
    username: str | None,
    mountpoint: str,
    client_id: str,
    topics: Topics,
    properties: Properties,
) -> None:
    """Subscriptions of an MQTT 5 client were stored (notification).

    **Arguments:** as :func:`auth_on_subscribe_m5`, with the final topics.
    """


@hookspec
def on_unsubscribe(username: str | None, mountpoint: str, client_id: str, topics: Topics) -> Result:
    """An MQTT 3 client unsubscribes (chain hook, result optional).

    **When:** for every UNSUBSCRIBE, before it is applied.

    **Arguments:** ``username``, the subscriber id and ``topics``: the list of filters
    (``str``).

    **Returns:** ``None`` / ``True``, or a list of filters to unsubscribe instead.

    **On deny, error or an exhausted chain:** the requested filters are unsubscribed unchanged.
    """


@hookspec
def on_unsubscribe_m5(
    username: str | None,
    mountpoint: str,
    client_id: str,
    topics: Topics,
    properties: Properties,
) -> Result:
    """An MQTT 5 client unsubscribes (chain hook, result optional).

    **Arguments:** as :func:`on_unsubscribe`, plus the UNSUBSCRIBE ``properties``.

    **Returns:** as :func:`on_unsubscribe`, or ``{"topics": [...], "properties":
    {"p_reason_string": ..., "p_user_property": [...]}}`` (the properties go into UNSUBACK).

    **On deny, error or an exhausted chain:** the requested filters are unsubscribed unchanged.
    """


@hookspec
def on_topic_unsubscribed(mountpoint: str, client_id: str, topics: Topics | None) -> None:
    """Subscriptions of a session were removed (notification).

    **When:** after an UNSUBSCRIBE was applied, and when a session's subscriptions go away
    (clean session ended, session expired, administrative disconnect with clean-up).

    **Arguments:** the subscriber id and ``topics``: the removed filters, or ``None`` for
    all of the session's subscriptions.
    """


# --------------------------------------------------------------------------------------------
# Delivery
# --------------------------------------------------------------------------------------------


@hookspec
def on_deliver(
    username: str | None,
    mountpoint: str,
    client_id: str,
    qos: int,
    topic: str,
    payload: bytes,
    retain: bool,
) -> Result:
    """A message is about to be sent to an MQTT 3 subscriber (chain hook, result optional).

    **When:** just before every PUBLISH to a subscriber, including retained messages and
    offline-queue replays.

    **Arguments:** the *subscriber's* ``username`` and subscriber id; the message ``qos``
    (the delivery QoS), ``topic``, ``payload`` and ``retain``.

    **Returns:** ``None`` / ``True``, bare ``bytes`` (a new payload), or modifiers ``topic``
    and ``payload``.

    **On deny, error or an exhausted chain:** the message is delivered unchanged.
    """


@hookspec
def on_deliver_m5(
    username: str | None,
    mountpoint: str,
    client_id: str,
    qos: int,
    topic: str,
    payload: bytes,
    retain: bool,
    properties: Properties,
) -> Result:
    """A message is about to be sent to an MQTT 5 subscriber (chain hook, result optional).

    **Arguments:** as :func:`on_deliver`, plus the message ``properties``.

    **Returns:** as :func:`on_deliver` (no bare ``bytes``), plus the modifier ``properties``
    (replaces the message's; keys ``p_content_type``, ``p_payload_format_indicator``,
    ``p_user_property``, ``p_response_topic``, ``p_correlation_data``).

    **On deny, error or an exhausted chain:** the message is delivered unchanged.
    """


@hookspec
def on_offline_message(
    mountpoint: str, client_id: str, qos: int, topic: str, payload: bytes, retain: bool
) -> None:
    """A QoS 1/2 message was queued for an offline session (notification).

    **Arguments:** the subscriber id of the offline session and the message.
    """


@hookspec
def on_message_drop(
    mountpoint: str,
    client_id: str,
    topic: str,
    qos: int,
    payload: bytes,
    properties: Properties,
    reason: str,
) -> None:
    """A message for a session was dropped (notification).

    **Arguments:** the subscriber id, the message (``topic``, ``qos``, ``payload``,
    ``properties``) and ``reason``: ``expired``, ``queue_full``,
    ``max_packet_size_exceeded`` or ``buffer_full``.
    """


# --------------------------------------------------------------------------------------------
# Session lifecycle
# --------------------------------------------------------------------------------------------


@hookspec
def on_client_wakeup(mountpoint: str, client_id: str) -> None:
    """A client's session is attached and ready (notification).

    **When:** after CONNACK, once offline messages were taken over and any older connection
    with the same client id was closed.
    """


@hookspec
def on_client_offline(mountpoint: str, client_id: str) -> None:
    """The connection of a persistent session went away; the session stays (notification).

    Persistent: MQTT 3 ``clean_session = false``, MQTT 5 session expiry interval > 0.
    """


@hookspec
def on_client_gone(mountpoint: str, client_id: str) -> None:
    """The connection of a non-persistent session went away with its session (notification)."""


@hookspec
def on_session_expired(mountpoint: str, client_id: str) -> None:
    """A persistent session expired while offline and was deleted (notification)."""


# --------------------------------------------------------------------------------------------
# Plugin lifecycle (not MQTT hooks)
# --------------------------------------------------------------------------------------------


@hookspec
def plugin_host_lifespan(
    host: Any, config: PluginSection
) -> AbstractAsyncContextManager[Any] | None:
    """Return an async context manager that owns the plugin's resources, or ``None``.

    **When:** once at start-up, in chain order, before any client is served; the context is
    exited in reverse order at shutdown (after the last notification was delivered or the
    drain deadline passed). Open HTTP clients, database pools, Lua states, background tasks
    (in a nursery of your own) there. An exception while entering stops start-up with an error
    naming the plugin.

    **Arguments:** ``host`` (:class:`plugin_host.hooks.api.Host`): publish messages,
    disconnect clients, look up sessions, a logger bound with the plugin's name, and
    ``host.hooks_changed()`` to call when :func:`plugin_host_active_hooks` would now answer
    differently. ``config``: the plugin's own section (:class:`plugin_host.settings.PluginSection`),
    typed by its :func:`plugin_host_config_schema` when it declares one.
    """


@hookspec
def plugin_host_config_schema() -> list[Key] | None:
    """Return the keys of the plugin's own config section (``<name>.*``), or ``None``.

    Each :class:`plugin_host.settings.Key` gives a dotted pattern, a type, a default and
    documentation. The host validates the section against it at start-up (unknown keys and bad
    values stop start-up with file, line and key) and hands the typed section to
    :func:`plugin_host_lifespan`. Without a schema the section is passed as read.
    """


@hookspec
def plugin_host_active_hooks() -> set[str] | frozenset[str] | None:
    """Return the names of the hooks this plugin currently answers (optional).

    ``None`` (or not implementing this hook) means every hook the plugin implements. Plugins
    that implement hooks generically but answer only some of them (webhooks with endpoints for
    a few hooks, Lua scripts) return the configured ones so that the others cost nothing: a
    hook that no plugin answers is not called at all, and for ``auth_on_*`` the broker then
    applies its own default. Called at start-up (after the lifespans were entered) and again
    whenever the plugin calls ``host.hooks_changed()``. It must be quick and must not raise.
    """


@hookspec
def plugin_host_metrics() -> Iterable[Any] | None:
    """Return the plugin's own metrics for a scrape of ``GET /metrics`` (optional).

    Return an iterable of ``prometheus_client`` metric families
    (``prometheus_client.core.CounterMetricFamily``, ``GaugeMetricFamily``,
    ``SummaryMetricFamily`` ...) built from the plugin's plain counters, or ``None``. Called on
    every scrape, on the event loop: read numbers, do no I/O. Name the families after the
    plugin (``webhooks_...``). A family whose name another plugin or the broker already
    uses is skipped with a warning; an exception is logged with the plugin name and the
    scrape goes on without that plugin's metrics. See ``docs/metrics.md``.
    """


# --------------------------------------------------------------------------------------------
# The catalogue the runner and the manager use
# --------------------------------------------------------------------------------------------

#: Hooks dispatched as conditional chains (VerneMQ ``all_till_ok``).
CHAIN_HOOKS: frozenset[str] = frozenset(
    {
        "auth_on_register",
        "auth_on_register_m5",
        "on_auth_m5",
        "auth_on_publish",
        "auth_on_publish_m5",
        "auth_on_subscribe",
        "auth_on_subscribe_m5",
        "on_unsubscribe",
        "on_unsubscribe_m5",
        "on_deliver",
        "on_deliver_m5",
    }
)

#: Chain hooks whose deny, error or exhaustion means "proceed unchanged", never a refusal.
RESULT_OPTIONAL_HOOKS: frozenset[str] = frozenset(
    {"on_deliver", "on_deliver_m5", "on_unsubscribe", "on_unsubscribe_m5"}
)

#: Hooks about the plugin itself, not MQTT events; never dispatched by the broker.
META_HOOKS: frozenset[str] = frozenset(
    {
        "plugin_host_lifespan",
        "plugin_host_config_schema",
        "plugin_host_active_hooks",
        "plugin_host_metrics",
    }
)


def _mqtt_hooks() -> dict[str, tuple[str, ...]]:
    found: dict[str, tuple[str, ...]] = {}
    for name, obj in globals().items():
        if name in META_HOOKS or not callable(obj) or not hasattr(obj, "plugin_host_spec"):
            continue
        found[name] = tuple(inspect.signature(obj).parameters)
    return found


#: Every MQTT hook and its argument names, in declaration order.
HOOK_ARGS: dict[str, tuple[str, ...]] = _mqtt_hooks()

#: Notification hooks (VerneMQ ``all``): every plugin is called, results ignored.
NOTIFY_HOOKS: frozenset[str] = frozenset(HOOK_ARGS) - CHAIN_HOOKS

ALL_HOOKS: tuple[str, ...] = tuple(HOOK_ARGS)
