"""The broker-wide keys, VerneMQ's plugin aliases and the VerneMQ keys accepted but ignored.

The key reference for operators is ``docs/configuration.md``; keep it in step with the tables
below (and with :data:`plugin_host.config.listeners.LISTENER_OPTIONS`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from plugin_host.config.values import (
    BadValue,
    format_bool,
    format_millis,
    format_period,
    format_seconds,
    format_value,
    parse_bool,
    parse_duration,
    parse_enum,
    parse_int,
    parse_list,
    parse_path,
    parse_period,
    parse_size,
    parse_str,
)
from plugin_host.settings import Origin

#: VerneMQ spells its plugins ``vmq_<name>``; here they are ``<name>`` (sections and plugins.*).
PLUGIN_ALIASES: dict[str, str] = {
    "vmq_webhooks": "webhooks",
    "vmq_diversity": "diversity",
    "vmq_passwd": "passwd",
    "vmq_acl": "acl",
}

_NOT_APPLICABLE = "ignored: not applicable to plugin-host"
_NOT_SUPPORTED = "ignored: not supported by plugin-host"

#: VerneMQ keys accepted with one warning each, so an operator's vernemq.conf loads unchanged.
#: Patterns are matched against the key after aliasing (``vmq_diversity.`` -> ``diversity.``),
#: segment by segment with shell wildcards; a final ``**`` matches any number of segments
#: (including none). Documented in docs/configuration.md ("Ignored VerneMQ keys").
IGNORED_KEYS: tuple[tuple[str, str], ...] = (
    # Erlang VM, clustering and distribution
    ("erlang.**", _NOT_APPLICABLE),
    ("distributed_cookie", _NOT_APPLICABLE),
    ("metadata_plugin", _NOT_APPLICABLE),
    ("vmq_swc.**", _NOT_APPLICABLE),
    ("vmq_plumtree.**", _NOT_APPLICABLE),
    ("leveldb.**", _NOT_APPLICABLE),
    ("coordinate_registrations", _NOT_APPLICABLE),
    ("allow_*_during_netsplit", _NOT_APPLICABLE),
    ("outgoing_clustering_buffer_size", _NOT_APPLICABLE),
    ("remote_enqueue_timeout", _NOT_APPLICABLE),
    ("max_drain_time", _NOT_APPLICABLE),
    ("max_msgs_per_drain_step", _NOT_APPLICABLE),
    ("queue_sup_sup_children", _NOT_APPLICABLE),
    ("default_reg_view", _NOT_APPLICABLE),
    ("reg_views", _NOT_APPLICABLE),
    ("accept_eula", _NOT_APPLICABLE),
    # Queue behaviours plugin-host does not have (one session per client id, FIFO queues)
    ("allow_multiple_sessions", _NOT_APPLICABLE),
    ("queue_deliver_mode", _NOT_APPLICABLE),
    ("queue_type", _NOT_APPLICABLE),
    # Erlang logging (use --log-level / --log-format, or log.level / log.format)
    ("log.console", _NOT_APPLICABLE),
    ("log.console.file", _NOT_APPLICABLE),
    ("log.console.**", _NOT_APPLICABLE),
    ("log.error.**", _NOT_APPLICABLE),
    ("log.syslog.**", _NOT_APPLICABLE),
    ("log.crash.**", _NOT_APPLICABLE),
    # Graphite reporter (metrics are served for Prometheus instead)
    ("graphite_*", _NOT_SUPPORTED),
    # Cluster listeners
    ("listener.vmq.**", _NOT_APPLICABLE),
    ("listener.vmqs.**", _NOT_APPLICABLE),
    # Plugins that do not exist here
    ("plugins.vmq_bridge.**", _NOT_SUPPORTED),
    ("vmq_bridge.**", _NOT_SUPPORTED),
    ("vmq_bcrypt.**", _NOT_APPLICABLE),
    # vmq_diversity database drivers and their bundled auth scripts
    ("diversity.auth_*.**", _NOT_SUPPORTED),
    ("diversity.postgres.**", _NOT_SUPPORTED),
    ("diversity.cockroachdb.**", _NOT_SUPPORTED),
    ("diversity.mysql.**", _NOT_SUPPORTED),
    ("diversity.mysql2.**", _NOT_SUPPORTED),
    ("diversity.mongodb.**", _NOT_SUPPORTED),
    ("diversity.redis.**", _NOT_SUPPORTED),
    ("diversity.memcache.**", _NOT_SUPPORTED),
)

#: Listener options of VerneMQ that have no effect here (any level: global, kind, listener).
IGNORED_LISTENER_OPTIONS: dict[str, str] = {
    "nr_of_acceptors": _NOT_APPLICABLE,
    "buffer_sizes": _NOT_APPLICABLE,
    "active_n": _NOT_APPLICABLE,
    "tcp_listen_options": _NOT_APPLICABLE,
    "eccs": _NOT_SUPPORTED,
    "psk_support": _NOT_SUPPORTED,
    "pskfile": _NOT_SUPPORTED,
    "psk_identity_hint": _NOT_SUPPORTED,
    "proxy_xff_support": _NOT_SUPPORTED,
    "proxy_xff_trusted_intermediate": _NOT_SUPPORTED,
    "proxy_xff_use_cn_as_username": _NOT_SUPPORTED,
    "proxy_xff_cn_header": _NOT_SUPPORTED,
    "http_modules": _NOT_APPLICABLE,
    "http_module": _NOT_APPLICABLE,  # http_module.<module>.<option>
    "config_mod": _NOT_APPLICABLE,
    "config_fun": _NOT_APPLICABLE,
}


def segments_match(pattern: Sequence[str], parts: Sequence[str]) -> bool:
    """Shell-wildcard match per segment; a final ``**`` matches zero or more segments."""
    if pattern and pattern[-1] == "**":
        head = pattern[:-1]
        return len(parts) >= len(head) and all(
            fnmatch.fnmatchcase(p, q) for p, q in zip(parts, head, strict=False)
        )
    return len(pattern) == len(parts) and all(
        fnmatch.fnmatchcase(p, q) for p, q in zip(parts, pattern, strict=True)
    )


_IGNORED_COMPILED = [(pattern.split("."), reason) for pattern, reason in IGNORED_KEYS]


def ignored_reason(parts: Sequence[str]) -> str | None:
    """Why the key ``parts`` (after aliasing) is ignored, or None when it is not."""
    for pattern, reason in _IGNORED_COMPILED:
        if segments_match(pattern, parts):
            return reason
    return None


# --------------------------------------------------------------------------------------------
# Broker-wide keys


@dataclass(frozen=True, slots=True)
class Setting:
    """One broker-wide key: where its value goes, how it parses and how it is written back."""

    target: str  # "<attribute of Config>.<field>" or "<attribute of Config>"
    parse: Callable[[Any, Origin], Any]
    render: Callable[[Any], str]
    secret: bool = False
    none_text: str | None = None  # how None is written, when None is a meaningful value


def _setting(
    target: str,
    parse: Callable[[Any], Any],
    render: Callable[[Any], str],
    none_text: str | None = None,
) -> Setting:
    return Setting(target, lambda value, _origin: parse(value), render, none_text=none_text)


def _shared_policy(value: Any) -> str:
    # One node: VerneMQ's locality policies all amount to "spread over the group members".
    mapping = {
        "prefer_local": "round_robin",
        "local_only": "round_robin",
        "prefer_online_before_local": "round_robin",
        "round_robin": "round_robin",
        "random": "random",
    }
    return mapping[parse_enum(value, mapping)]


def _nonempty(value: Any) -> str:
    text = parse_str(value).strip()
    if not text:
        raise BadValue("must not be empty")
    return text


#: Every broker-wide key, in the order ``check-config`` writes them.
BROKER_KEYS: dict[str, Setting] = {
    "allow_anonymous": _setting("broker.allow_anonymous", parse_bool, format_bool),
    "max_client_id_size": _setting(
        "broker.max_client_id_size", lambda v: parse_int(v, 1, 65535), str
    ),
    "retry_interval": _setting(
        "broker.retry_interval", lambda v: parse_duration(v, "s"), format_seconds
    ),
    "max_inflight_messages": _setting(
        "broker.max_inflight_messages", lambda v: parse_int(v, 0, 65535), str
    ),
    "max_online_messages": _setting("broker.max_online_messages", lambda v: parse_int(v, -1), str),
    "max_offline_messages": _setting(
        "broker.max_offline_messages", lambda v: parse_int(v, -1), str
    ),
    "max_message_size": _setting("broker.max_message_size", parse_size, str),
    "max_message_rate": _setting("broker.max_message_rate", lambda v: parse_int(v, 0), str),
    "upgrade_outgoing_qos": _setting("broker.upgrade_outgoing_qos", parse_bool, format_bool),
    "persistent_client_expiration": _setting(
        "broker.persistent_client_expiration",
        lambda v: parse_period(v, "never"),
        lambda v: format_period(v, "never"),
        none_text="never",
    ),
    "max_last_will_delay": _setting(
        "broker.max_last_will_delay",
        lambda v: parse_period(v, "client"),
        lambda v: format_period(v, "client"),
        none_text="client",
    ),
    "max_keepalive": _setting("broker.max_keepalive", lambda v: parse_int(v, 0, 65535), str),
    "max_subscriptions_per_client": _setting(
        "broker.max_subscriptions_per_client", lambda v: parse_int(v, 0), str
    ),
    "topic_max_depth": _setting("broker.topic_max_depth", lambda v: parse_int(v, 0), str),
    "receive_max_client": _setting(
        "broker.receive_max_client", lambda v: parse_int(v, 1, 65535), str
    ),
    "receive_max_broker": _setting(
        "broker.receive_max_broker", lambda v: parse_int(v, 1, 65535), str
    ),
    "topic_alias_max_client": _setting(
        "broker.topic_alias_max_client", lambda v: parse_int(v, 0, 65535), str
    ),
    "topic_alias_max_broker": _setting(
        "broker.topic_alias_max_broker", lambda v: parse_int(v, 0, 65535), str
    ),
    "suppress_lwt_on_session_takeover": _setting(
        "broker.suppress_lwt_on_session_takeover", parse_bool, format_bool
    ),
    "shared_subscription_policy": _setting(
        "broker.shared_subscription_policy", _shared_policy, str
    ),
    "max_outgoing_buffer": _setting("broker.max_outgoing_buffer", parse_size, str),
    "hook_timeout": _setting(
        "broker.hook_timeout", lambda v: parse_duration(v, "ms"), format_millis
    ),
    "systree_enabled": _setting("broker.systree_enabled", parse_bool, format_bool),
    "systree_interval": _setting(
        "broker.systree_interval", lambda v: parse_duration(v, "ms"), format_millis
    ),
    "nodename": _setting("broker.nodename", _nonempty, format_value),
    "mqtt_connect_timeout": _setting(
        "broker.mqtt_connect_timeout", lambda v: parse_duration(v, "ms"), format_millis
    ),
    "persistence": _setting("persistence.enabled", parse_bool, format_bool),
    "persistence.dir": Setting("persistence.dir", parse_path, format_value),
    "persistence.sync": _setting(
        "persistence.sync", lambda v: parse_enum(v, ("batch", "always", "off")), str
    ),
    "persistence.sync_delay": _setting(
        "persistence.sync_delay", lambda v: parse_duration(v, "ms"), format_millis
    ),
    "admin.api_key": Setting(
        "admin_api_key", lambda v, _o: _nonempty(v), format_value, secret=True
    ),
    "log.level": _setting(
        "log.level",
        lambda v: parse_enum(str(v).lower(), ("debug", "info", "warning", "error", "critical")),
        str,
    ),
    "log.format": _setting("log.format", lambda v: parse_enum(v, ("auto", "console", "json")), str),
    "plugins_dir": Setting(
        "plugins_dirs",
        lambda v, origin: [parse_path(item, origin) for item in parse_list(v)],
        format_value,
    ),
}

#: First key segments that are never plugin sections.
RESERVED_ROOTS = frozenset(
    {key.split(".", 1)[0] for key in BROKER_KEYS} | {"listener", "plugins", "admin", "log"}
)
