"""Load ``.toml`` and vernemq.conf-style ``.conf`` files into one validated :class:`Config`.

The public API:

* :func:`load_config` - read a file (or none: a local development broker), apply command-line
  :class:`ConfigOverrides`, return a :class:`~plugin_host.settings.Config`. Any problem raises
  :class:`~plugin_host.settings.ConfigError` reading ``file:line: key: reason``.
* :func:`apply_schema` - type and validate one plugin's section against the
  :class:`~plugin_host.settings.Key` list the plugin declares (called by the plugin manager).
* :func:`render_config` - the effective configuration as ``.conf`` text, secrets shown as ``***``
  (``plugin-host check-config``).

Both file formats become the same list of *entries* (dotted key, raw value, origin) first; all
validation happens on entries, so a key means the same thing in both formats. The key reference
for operators is ``docs/configuration.md``; keep it in step with the tables below.
"""

from __future__ import annotations

import difflib
import fnmatch
import ipaddress
import json
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

import structlog

from plugin_host.settings import (
    Config,
    ConfigError,
    ConfigWarning,
    Key,
    ListenerConfig,
    ListenerKind,
    Origin,
    PluginSection,
    PluginSettings,
)

__all__ = [
    "DEFAULT_LISTEN",
    "IGNORED_KEYS",
    "ConfigOverrides",
    "apply_schema",
    "load_config",
    "parse_address",
    "render_config",
]

#: The listener of a config without any MQTT listener (and of ``plugin-host serve`` alone).
DEFAULT_LISTEN = "127.0.0.1:1883"

LISTENER_KINDS: tuple[str, ...] = get_args(ListenerKind)
_MQTT_KINDS = frozenset({"tcp", "ssl", "ws", "wss"})
_TLS_KINDS = frozenset({"ssl", "wss", "https"})
_WS_KINDS = frozenset({"ws", "wss"})
_ALL_KINDS = frozenset(LISTENER_KINDS)

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

_SECRET_NAME = re.compile(
    r"(password|passwd|secret|api_?key|token|keypasswd|psk|cookie|credentials?)$", re.I
)
_KEY_SYNTAX = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


# --------------------------------------------------------------------------------------------
# Public types


@dataclass(slots=True)
class ConfigOverrides:
    """Command-line settings that win over the file.

    * ``listen``: ``HOST:PORT`` addresses (``--listen``, repeatable). They **replace** every
      ``listener.tcp.*`` listener of the file (other kinds stay); global and ``listener.tcp.*``
      options of the file still apply to them. They are named ``listen1``, ``listen2``, ...
    * ``allow_anonymous``: ``--allow-anonymous`` / ``--no-allow-anonymous``; None = as configured.
    * ``plugins_dirs``: ``--plugins-dir`` (repeatable), searched after the file's ``plugins_dir``.
    * ``log_level`` / ``log_format``: ``--log-level`` / ``--log-format``; None = as configured.
    """

    listen: Sequence[str] = ()
    allow_anonymous: bool | None = None
    plugins_dirs: Sequence[Path] = ()
    log_level: str | None = None
    log_format: str | None = None


# --------------------------------------------------------------------------------------------
# Value parsing (shared by the broker keys, listener options and plugin schemas)


class _BadValue(ValueError):
    """A value of the wrong shape; the caller adds file, line and key."""


_DURATION_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "f": 1209600.0,  # cuttlefish's fortnight
}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|f)")
_DURATION_FULL = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w|f))+")
# VerneMQ's own period syntax (persistent_client_expiration, max_last_will_delay): m = month of
# four weeks, y = twelve such months. Kept as VerneMQ computes it so old files mean the same.
_PERIOD_UNITS = {
    "s": 1.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "m": 4 * 604800.0,
    "y": 48 * 604800.0,
}
_PERIOD = re.compile(r"(\d+(?:\.\d+)?)([shdwmy]?)")
_SIZE = re.compile(r"(\d+)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?", re.I)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_bool(value: Any) -> bool:
    """``on``/``off``/``true``/``false`` (any case) or a TOML boolean."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("on", "true"):
            return True
        if word in ("off", "false"):
            return False
    raise _BadValue("expected on or off")


def parse_int(value: Any, lo: int | None = None, hi: int | None = None) -> int:
    """An integer (a TOML integer or decimal digits), optionally range-checked."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
        number = int(value.strip())
    else:
        raise _BadValue("expected an integer")
    if lo is not None and hi is not None and not lo <= number <= hi:
        raise _BadValue(f"must be between {lo} and {hi}")
    if lo is not None and number < lo:
        raise _BadValue(f"must be at least {lo}")
    if hi is not None and number > hi:
        raise _BadValue(f"must be at most {hi}")
    return number


def parse_float(value: Any) -> float:
    """A number (TOML integer or float, or its text)."""
    if _is_number(value):
        return float(value)
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return float(value.strip())
    raise _BadValue("expected a number")


def parse_duration(value: Any, unit: str) -> float:
    """A duration in seconds: a bare number is in ``unit`` (``s`` or ``ms``), or cuttlefish
    units ``ms s m h d w f`` that may be combined (``1h30m``)."""
    if _is_number(value):
        if value < 0:
            raise _BadValue("must not be negative")
        return float(value) * _DURATION_UNITS[unit]
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            if text.startswith("-"):
                raise _BadValue("must not be negative")
            return float(text) * _DURATION_UNITS[unit]
        if _DURATION_FULL.fullmatch(text):
            return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text))
    raise _BadValue(f"expected a duration: a number of {unit}, or with a unit like 500ms, 5s, 2m")


def parse_size(value: Any) -> int:
    """A size in bytes: a bare integer, or with ``KB``/``MB``/``GB`` (powers of 1024)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise _BadValue("must not be negative")
        return value
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if match:
            unit = (match.group(2) or "").lower()[:1]
            return int(match.group(1)) * _SIZE_UNITS[unit]
    raise _BadValue("expected a size in bytes, e.g. 65536, 64KB or 4MB")


def _parse_period(value: Any, none_word: str) -> float | None:
    """VerneMQ's ``<n><h|d|w|m|y>`` (m = 4 weeks) or ``none_word``; a bare number is seconds."""
    if _is_number(value):
        if value < 0:
            raise _BadValue("must not be negative")
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text == none_word:
            return None
        match = _PERIOD.fullmatch(text)
        if match:
            return float(match.group(1)) * _PERIOD_UNITS[match.group(2) or "s"]
    raise _BadValue(
        f"expected {none_word!r} or a number followed by s, h, d, w, m (month) or y, e.g. 1w"
    )


def parse_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if _is_number(value):
        return str(value)
    raise _BadValue("expected a string")


def parse_list(value: Any) -> list[str]:
    """A TOML array, or a comma-separated ``.conf`` value (``[a, b]`` Erlang brackets allowed)."""
    if isinstance(value, list):
        items = [parse_str(item) for item in value]
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        items = text.split(",")
    else:
        raise _BadValue("expected a list (comma-separated)")
    return [item.strip() for item in items if item.strip()]


def parse_enum(value: Any, choices: Iterable[str]) -> str:
    options = tuple(choices)
    text = parse_str(value).strip()
    if text not in options:
        raise _BadValue(f"expected one of {', '.join(options)}")
    return text


def parse_path(value: Any, origin: Origin | None, *, must_exist: bool = False) -> Path:
    """A path; a relative one is relative to the directory of the config file that set it."""
    text = parse_str(value).strip()
    if not text:
        raise _BadValue("expected a path")
    path = Path(text).expanduser()
    if not path.is_absolute() and origin is not None and origin.file:
        path = (Path(origin.file).parent / path).absolute()
    if must_exist and not path.exists():
        raise _BadValue(f"file not found: {path}")
    return path


def parse_address(text: str) -> tuple[str, int]:
    """``IPv4:PORT``, ``[IPv6]:PORT`` or ``localhost:PORT`` -> ``(host, port)``; port 0 is allowed
    (an ephemeral port, the bound one is logged). Raises ValueError with a readable reason."""
    example = "expected IP:PORT, e.g. 127.0.0.1:1883, 0.0.0.0:1883 or [::1]:1883"
    text = text.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"bad listener address {text!r}: {example}")
        try:
            is_v6 = ipaddress.ip_address(host).version == 6
        except ValueError:
            is_v6 = False
        if not is_v6:
            raise ValueError(f"bad listener address {text!r}: {host!r} is not an IPv6 address")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            if text.startswith("/"):
                raise ValueError(f"bad listener address {text!r}: unix sockets are not supported")
            raise ValueError(f"bad listener address {text!r}: {example}")
        if ":" in host:
            raise ValueError(
                f"bad listener address {text!r}: write IPv6 addresses in brackets, e.g. [::1]:1883"
            )
        if host != "localhost":
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise ValueError(
                    f"bad listener address {text!r}: {host!r} is not an IPv4 address"
                ) from None
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"bad listener address {text!r}: port must be 0..65535")
    return host, int(port_text)


# Renderers: each produces text its parser reads back (check-config output is loadable).


def _r_bool(value: bool) -> str:
    return "on" if value else "off"


def _r_seconds(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000, 6):g}ms"


def _r_millis(value: float) -> str:
    millis = round(value * 1000, 6)
    return str(int(millis)) if float(millis).is_integer() else f"{millis:g}ms"


def _r_period(value: float | None, none_word: str) -> str:
    if value is None:
        return none_word
    for unit, factor in (("w", 604800), ("d", 86400), ("h", 3600)):
        if value and float(value / factor).is_integer():
            return f"{int(value // factor)}{unit}"
    return f"{value:g}s"


def _r_value(value: Any) -> str:
    """Any raw or typed value as ``.conf`` text, quoted when needed to read back the same."""
    if isinstance(value, bool):
        return _r_bool(value)
    if isinstance(value, list | tuple | frozenset | set):
        return ", ".join(_r_value(item) for item in value)
    text = str(value)
    if text != text.strip() or "#" in text or not text or text[0] in "\"'":
        return json.dumps(text)
    return text


# --------------------------------------------------------------------------------------------
# Broker-wide keys


@dataclass(frozen=True, slots=True)
class _Setting:
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
) -> _Setting:
    return _Setting(target, lambda value, _origin: parse(value), render, none_text=none_text)


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
        raise _BadValue("must not be empty")
    return text


_BROKER_KEYS: dict[str, _Setting] = {
    "allow_anonymous": _setting("broker.allow_anonymous", parse_bool, _r_bool),
    "max_client_id_size": _setting(
        "broker.max_client_id_size", lambda v: parse_int(v, 1, 65535), str
    ),
    "retry_interval": _setting(
        "broker.retry_interval", lambda v: parse_duration(v, "s"), _r_seconds
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
    "upgrade_outgoing_qos": _setting("broker.upgrade_outgoing_qos", parse_bool, _r_bool),
    "persistent_client_expiration": _setting(
        "broker.persistent_client_expiration",
        lambda v: _parse_period(v, "never"),
        lambda v: _r_period(v, "never"),
        none_text="never",
    ),
    "max_last_will_delay": _setting(
        "broker.max_last_will_delay",
        lambda v: _parse_period(v, "client"),
        lambda v: _r_period(v, "client"),
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
        "broker.suppress_lwt_on_session_takeover", parse_bool, _r_bool
    ),
    "shared_subscription_policy": _setting(
        "broker.shared_subscription_policy", _shared_policy, str
    ),
    "max_outgoing_buffer": _setting("broker.max_outgoing_buffer", parse_size, str),
    "hook_timeout": _setting("broker.hook_timeout", lambda v: parse_duration(v, "ms"), _r_millis),
    "systree_enabled": _setting("broker.systree_enabled", parse_bool, _r_bool),
    "systree_interval": _setting(
        "broker.systree_interval", lambda v: parse_duration(v, "ms"), _r_millis
    ),
    "nodename": _setting("broker.nodename", _nonempty, _r_value),
    "mqtt_connect_timeout": _setting(
        "broker.mqtt_connect_timeout", lambda v: parse_duration(v, "ms"), _r_millis
    ),
    "persistence": _setting("persistence.enabled", parse_bool, _r_bool),
    "persistence.dir": _Setting("persistence.dir", parse_path, _r_value),
    "persistence.sync": _setting(
        "persistence.sync", lambda v: parse_enum(v, ("batch", "always", "off")), str
    ),
    "persistence.sync_delay": _setting(
        "persistence.sync_delay", lambda v: parse_duration(v, "ms"), _r_millis
    ),
    "admin.api_key": _Setting("admin_api_key", lambda v, _o: _nonempty(v), _r_value, secret=True),
    "log.level": _setting(
        "log.level",
        lambda v: parse_enum(str(v).lower(), ("debug", "info", "warning", "error", "critical")),
        str,
    ),
    "log.format": _setting("log.format", lambda v: parse_enum(v, ("auto", "console", "json")), str),
    "plugins_dir": _Setting(
        "plugins_dirs",
        lambda v, origin: [parse_path(item, origin) for item in parse_list(v)],
        _r_value,
    ),
}

#: First key segments that are never plugin sections.
_RESERVED_ROOTS = frozenset(
    {key.split(".", 1)[0] for key in _BROKER_KEYS} | {"listener", "plugins", "admin", "log"}
)


# --------------------------------------------------------------------------------------------
# Listener options


@dataclass(frozen=True, slots=True)
class _ListenerOption:
    field: str
    parse: Callable[[Any, Origin], Any]
    render: Callable[[Any], str]
    kinds: frozenset[str]
    secret: bool = False


def _max_connections(value: Any) -> int | None:
    if isinstance(value, str) and value.strip() == "infinity":
        return None
    number = parse_int(value, -1)
    return None if number == -1 else number


def _protocol_versions(value: Any) -> frozenset[int]:
    items = value if isinstance(value, list) else parse_list(value)
    versions = frozenset(parse_int(item) for item in items)
    bad = versions - {3, 4, 5, 131, 132}
    if bad or not versions:
        raise _BadValue("expected a list of 3 (MQTT 3.1), 4 (3.1.1), 5 (5.0), 131, 132")
    return versions


def _plugin_chain(value: Any) -> tuple[str, ...]:
    names = [PLUGIN_ALIASES.get(name, name) for name in parse_list(value)]
    if len(set(names)) != len(names):
        raise _BadValue("a plugin is listed twice")
    return tuple(names)


def _ws_path(value: Any) -> str:
    text = parse_str(value).strip()
    if not text.startswith("/"):
        raise _BadValue("must start with /")
    return text


def _option(
    name: str,
    parse: Callable[[Any], Any],
    render: Callable[[Any], str],
    kinds: frozenset[str],
    *,
    secret: bool = False,
) -> _ListenerOption:
    return _ListenerOption(name, lambda value, _origin: parse(value), render, kinds, secret)


def _file_option(name: str) -> _ListenerOption:
    return _ListenerOption(
        name, lambda v, origin: parse_path(v, origin, must_exist=True), _r_value, _TLS_KINDS
    )


_LISTENER_OPTIONS: dict[str, _ListenerOption] = {
    "max_connections": _option(
        "max_connections",
        _max_connections,
        lambda v: "infinity" if v is None else str(v),
        _ALL_KINDS,
    ),
    "mountpoint": _option("mountpoint", parse_str, _r_value, _MQTT_KINDS),
    "allowed_protocol_versions": _option(
        "allowed_protocol_versions",
        _protocol_versions,
        lambda v: ",".join(str(n) for n in sorted(v)),
        _MQTT_KINDS,
    ),
    "max_connection_lifetime": _option(
        "max_connection_lifetime", lambda v: parse_duration(v, "s"), _r_seconds, _MQTT_KINDS
    ),
    "allow_anonymous_override": _option(
        "allow_anonymous_override", parse_bool, _r_bool, _MQTT_KINDS
    ),
    "forward_connection_opts": _option("forward_connection_opts", parse_bool, _r_bool, _MQTT_KINDS),
    "proxy_protocol": _option("proxy_protocol", parse_bool, _r_bool, _MQTT_KINDS),
    "proxy_protocol_use_cn_as_username": _option(
        "proxy_protocol_use_cn_as_username", parse_bool, _r_bool, _MQTT_KINDS
    ),
    "auth_plugins": _option("auth_plugins", _plugin_chain, _r_value, _MQTT_KINDS),
    "authz_plugins": _option("authz_plugins", _plugin_chain, _r_value, _MQTT_KINDS),
    "cafile": _file_option("cafile"),
    "certfile": _file_option("certfile"),
    "keyfile": _file_option("keyfile"),
    "crlfile": _file_option("crlfile"),
    "keypasswd": _option("keypasswd", parse_str, _r_value, _TLS_KINDS, secret=True),
    "ciphers": _option("ciphers", parse_str, _r_value, _TLS_KINDS),
    "tls_version": _option(
        "tls_version",
        lambda v: parse_enum(v, ("tlsv1", "tlsv1.1", "tlsv1.2", "tlsv1.3")),
        str,
        _TLS_KINDS,
    ),
    "require_certificate": _option("require_certificate", parse_bool, _r_bool, _TLS_KINDS),
    "use_identity_as_username": _option(
        "use_identity_as_username", parse_bool, _r_bool, _TLS_KINDS
    ),
    "depth": _option("depth", lambda v: parse_int(v, 0, 100), str, _TLS_KINDS),
    "max_ws_frame_size": _option("max_ws_frame_size", parse_size, str, _WS_KINDS),
    "ws_path": _option("ws_path", _ws_path, _r_value, _WS_KINDS),
}


# --------------------------------------------------------------------------------------------
# Reading files into entries


@dataclass(slots=True)
class _Entry:
    key: str  # as written (dotted)
    canon: str  # after aliasing: what the key means
    value: Any  # text from .conf, TOML value as parsed
    origin: Origin

    @property
    def parts(self) -> list[str]:
        return self.canon.split(".")

    def error(self, reason: str) -> ConfigError:
        return ConfigError(reason, key=self.key, file=self.origin.file, line=self.origin.line)

    def bad_value(self, problem: str, *, secret: bool = False) -> ConfigError:
        shown = "***" if secret else _r_shown(self.value)  # secrets stay out of error output
        return self.error(f"bad value {shown}: {problem}")


def _r_shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def _canonical(key: str) -> str:
    """The meaning of a key: VerneMQ aliases and the TOML-friendly spellings folded in."""
    parts = key.split(".")
    parts[0] = PLUGIN_ALIASES.get(parts[0], parts[0])
    if parts[0] == "plugins" and len(parts) >= 2:
        parts[1] = PLUGIN_ALIASES.get(parts[1], parts[1])
        if len(parts) == 3 and parts[2] == "enabled":
            del parts[2]
    elif parts[0] == "listener" and len(parts) == 4 and parts[3] == "address":
        del parts[3]
    elif parts == ["persistence", "enabled"]:
        del parts[1]
    elif parts == ["log", "console", "level"]:  # VerneMQ's level key
        parts = ["log", "level"]
    return ".".join(parts)


def _entry(key: str, value: Any, file: str, line: int | None) -> _Entry:
    origin = Origin(file=file, line=line)
    if not _KEY_SYNTAX.fullmatch(key):
        raise ConfigError(
            "invalid key (letters, digits, _ and - separated by dots)",
            key=key,
            file=file,
            line=line,
        )
    return _Entry(key=key, canon=_canonical(key), value=value, origin=origin)


def _read_conf(text: str, file: str) -> list[_Entry]:
    entries: list[_Entry] = []
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, rest = line.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError("expected 'key = value'", file=file, line=lineno)
        try:
            value = _conf_value(rest.strip())
        except ValueError as exc:
            raise ConfigError(str(exc), key=key, file=file, line=lineno) from None
        entries.append(_entry(key, value, file, lineno))
    return entries


def _conf_value(text: str) -> str:
    """The value part of a ``.conf`` line: quoted ("..." with \\ escapes, or '...') or bare up to
    a ``#`` comment. In a bare value ``#`` starts a comment only after whitespace, so MQTT
    filters such as ``a/#`` need no quotes."""
    if text[:1] in ("'", '"'):
        quote = text[0]
        out: list[str] = []
        i = 1
        while i < len(text) and text[i] != quote:
            if quote == '"' and text[i] == "\\" and i + 1 < len(text):
                escaped = text[i + 1]
                out.append({"n": "\n", "t": "\t"}.get(escaped, escaped))
                i += 2
                continue
            out.append(text[i])
            i += 1
        if i >= len(text):
            raise ValueError("unterminated quoted value")
        rest = text[i + 1 :].strip()
        if rest and not rest.startswith("#"):
            raise ValueError(f"unexpected text after the quoted value: {rest!r}")
        return "".join(out)
    return _TRAILING_COMMENT.split(text, maxsplit=1)[0].rstrip()


_TRAILING_COMMENT = re.compile(r"\s#")


class _TomlLines:
    """Finds the line of every key of a TOML document (tomllib reports none).

    A small scanner of table headers and ``key = value`` lines that skips over multi-line strings
    and arrays. Keys inside inline tables get the line of the table's own key.
    """

    _BARE = re.compile(r"[A-Za-z0-9_-]+")

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple[str, ...], int] = {}
        self.key_at: dict[int, tuple[str, ...]] = {}
        # line of a repeated key or table -> (that key, line of its first definition)
        self.repeated: dict[int, tuple[tuple[str, ...], int]] = {}
        self.headers: set[int] = set()  # lines of [table] headers
        self.assigned: dict[tuple[str, ...], int] = {}  # keys given a value (not a table)
        self._scan(text)

    def line_of(self, parts: Sequence[str]) -> int | None:
        for n in range(len(parts), 0, -1):
            line = self.lines.get(tuple(parts[:n]))
            if line is not None:
                return line
        return None

    def _record(self, key: tuple[str, ...], line: int) -> None:
        if key in self.lines:
            self.repeated.setdefault(line, (key, self.lines[key]))
        else:
            self.lines[key] = line
        self.key_at.setdefault(line, key)

    def _scan(self, text: str) -> None:
        table: tuple[str, ...] = ()
        state: str | None = None  # inside a multi-line string: '"""' or "'''"
        depth = 0  # open [ and { of a value spanning lines
        for lineno, line in enumerate(text.split("\n"), start=1):
            start = 0
            if state is None and depth == 0:
                stripped = line.lstrip()
                start = len(line) - len(stripped)
                if not stripped or stripped.startswith("#"):
                    continue
                if stripped.startswith("["):
                    array = stripped.startswith("[[")
                    parsed = self._key(line, start + (2 if array else 1))
                    if parsed is not None:
                        table = tuple(parsed[0])
                        if array:  # each [[x]] starts a fresh table: forget its old keys
                            for old in [k for k in self.lines if k[: len(table)] == table]:
                                if old != table:
                                    del self.lines[old]
                            self.lines.setdefault(table, lineno)
                        else:
                            self._record(table, lineno)
                            self.headers.add(lineno)
                    continue
                parsed = self._key(line, start)
                if parsed is None:
                    continue
                parts, start = parsed
                self._record(table + tuple(parts), lineno)
                self.assigned.setdefault(table + tuple(parts), lineno)
                start = line.find("=", start)
                if start < 0:
                    continue
                start += 1
            state, depth = self._lex(line, start, state, depth)

    def _key(self, line: str, i: int) -> tuple[list[str], int] | None:
        parts: list[str] = []
        n = len(line)
        while True:
            while i < n and line[i] in " \t":
                i += 1
            if i >= n:
                return None
            if line[i] == '"':
                j = i + 1
                while j < n and line[j] != '"':
                    j += 2 if line[j] == "\\" else 1
                if j >= n:
                    return None
                raw = line[i + 1 : j]
                try:
                    parts.append(json.loads(f'"{raw}"'))
                except ValueError:
                    parts.append(raw)
                i = j + 1
            elif line[i] == "'":
                j = line.find("'", i + 1)
                if j < 0:
                    return None
                parts.append(line[i + 1 : j])
                i = j + 1
            else:
                match = self._BARE.match(line, i)
                if match is None:
                    return None
                parts.append(match.group())
                i = match.end()
            while i < n and line[i] in " \t":
                i += 1
            if i < n and line[i] == ".":
                i += 1
                continue
            return parts, i

    @staticmethod
    def _lex(line: str, i: int, state: str | None, depth: int) -> tuple[str | None, int]:
        """Skip over one line of a value, tracking multi-line strings and bracket depth."""
        n = len(line)
        while i < n:
            if state == '"""':
                while i < n and not line.startswith('"""', i):
                    i += 2 if line[i] == "\\" else 1
                if i >= n:
                    return state, depth
                i += 3
                state = None
                continue
            if state == "'''":
                j = line.find("'''", i)
                if j < 0:
                    return state, depth
                i = j + 3
                state = None
                continue
            char = line[i]
            if char == "#":
                break
            if line.startswith('"""', i) or line.startswith("'''", i):
                state = line[i : i + 3]
                i += 3
                continue
            if char == '"':
                i += 1
                while i < n and line[i] != '"':
                    i += 2 if line[i] == "\\" else 1
            elif char == "'":
                j = line.find("'", i + 1)
                i = n if j < 0 else j
            elif char in "[{":
                depth += 1
            elif char in "]}":
                depth = max(0, depth - 1)
            i += 1
        return state, depth


_TOML_POSITION = re.compile(r"\s*\(at line (\d+), column \d+\)|\s*\(at end of document\)")


def _value_table_conflict(lines: _TomlLines, line: int | None, file: str) -> ConfigError | None:
    """A key used as a value and then as a table (``x = 1`` then ``[x]`` or ``x.y = 2``): the
    usual TOML mistake when moving from ``.conf``; explain the table-friendly spelling."""
    if line is None:
        return None
    here = lines.repeated[line][0] if line in lines.repeated else lines.key_at.get(line)
    if here is None:
        return None
    for n in range(len(here), 0, -1):
        prefix = here[:n]
        first = lines.assigned.get(prefix)
        if first is None or first >= line:
            continue
        if n == len(here) and line not in lines.headers:
            return None  # the same key twice: a plain duplicate
        dotted = ".".join(prefix)
        if prefix[0] == "listener" and len(prefix) == 3:
            hint = f'; write address = "ip:port" inside [{dotted}]'
        elif (prefix[0] == "plugins" and len(prefix) == 2) or prefix == ("persistence",):
            hint = f"; write enabled = true inside [{dotted}]"
        else:
            hint = ""
        return ConfigError(
            f"{dotted} already has a value (line {first}), so it cannot also be a table{hint}",
            key=".".join(here),
            file=file,
            line=line,
        )
    return None


def _read_toml(text: str, file: str) -> list[_Entry]:
    lines = _TomlLines(text)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        found = re.search(r"at line (\d+)", message)
        reason = _TOML_POSITION.sub("", message).strip() or "invalid TOML"
        line = int(found.group(1)) if found else None
        conflict = _value_table_conflict(lines, line, file)
        if conflict is not None:
            raise conflict from None
        if line is not None and line in lines.repeated:
            key, first = lines.repeated[line]
            what = "table" if line in lines.headers else "key"
            raise ConfigError(
                f"duplicate {what} (already set on line {first})",
                key=".".join(key),
                file=file,
                line=line,
            ) from None
        key_here = lines.key_at.get(line) if line is not None else None
        raise ConfigError(
            f"TOML syntax error: {reason}",
            key=".".join(key_here) if key_here else None,
            file=file,
            line=line,
        ) from None

    entries: list[_Entry] = []

    def walk(table: Mapping[str, Any], prefix: tuple[str, ...]) -> None:
        for name, value in table.items():
            parts = (*prefix, name)
            if isinstance(value, dict):
                walk(value, parts)
                continue
            line = lines.line_of(parts)
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                raise ConfigError(
                    "arrays of tables are not supported: use named tables ([a.name])",
                    key=".".join(parts),
                    file=file,
                    line=line,
                )
            entries.append(_entry(".".join(parts), value, file, line))

    walk(document, ())
    entries.sort(key=lambda e: e.origin.line or 0)  # stable: file order for warnings
    return entries


def _read_file(path: Path) -> list[_Entry]:
    file = str(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".conf"):
        raise ConfigError(
            f"unsupported config file type {suffix or '(none)'!r}: use a .toml or .conf file",
            file=file,
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror or exc}", file=file) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", file=file) from None
    text = text.replace("\r\n", "\n")
    return _read_toml(text, file) if suffix == ".toml" else _read_conf(text, file)


# --------------------------------------------------------------------------------------------
# Entries -> Config


def _segments_match(pattern: Sequence[str], parts: Sequence[str]) -> bool:
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


def _ignored_reason(entry: _Entry) -> str | None:
    parts = entry.parts
    for pattern, reason in _IGNORED_COMPILED:
        if _segments_match(pattern, parts):
            return reason
    return None


def _where(origin: Origin, here: Origin) -> str:
    if origin.file == here.file and origin.line:
        return f"line {origin.line}"
    if origin.file:
        return f"{origin.file}:{origin.line}" if origin.line else origin.file
    return "the command line"


def _unknown(entry: _Entry, candidates: Iterable[str], what: str = "unknown key") -> ConfigError:
    depth = entry.canon.count(".")
    same_shape = [c for c in candidates if c.count(".") == depth]
    close = difflib.get_close_matches(entry.canon, same_shape, n=1, cutoff=0.75)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return entry.error(f"{what}{hint}")


def _known_keys() -> list[str]:
    return [
        *_BROKER_KEYS,
        *(f"listener.{option}" for option in _LISTENER_OPTIONS),
        "plugins.<name>",
    ]


class _Builder:
    """Turns the entries of one file (plus overrides) into a Config."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.seen: dict[str, _Entry] = {}
        self.warned: set[str] = set()
        self.addresses: dict[tuple[str, str], tuple[str, int, _Entry]] = {}
        self.global_opts: dict[str, tuple[Any, _Entry]] = {}
        self.kind_opts: dict[str, dict[str, tuple[Any, _Entry]]] = {}
        self.listener_opts: dict[tuple[str, str], dict[str, tuple[Any, _Entry]]] = {}

    def warn(self, entry: _Entry, reason: str) -> None:
        if entry.canon in self.warned:
            return
        self.warned.add(entry.canon)
        self.config.warnings.append(
            ConfigWarning(
                key=entry.key, reason=reason, file=entry.origin.file, line=entry.origin.line
            )
        )

    def add(self, entry: _Entry) -> None:
        reason = _ignored_reason(entry)
        if reason is not None:
            self.warn(entry, reason)
            return
        first = self.seen.get(entry.canon)
        if first is not None:
            spelled = f" as {first.key}" if first.key != entry.key else ""
            raise entry.error(
                f"duplicate key (already set on {_where(first.origin, entry.origin)}{spelled})"
            )
        self.seen[entry.canon] = entry

        parts = entry.parts
        root = parts[0]
        if root == "listener":
            self.listener(entry, parts[1:])
        elif root == "plugins" and len(parts) >= 2:
            self.plugin(entry, parts[1], parts[2:])
        elif entry.canon in _BROKER_KEYS:
            self.broker(entry, _BROKER_KEYS[entry.canon])
        elif root in _RESERVED_ROOTS or len(parts) == 1:
            raise _unknown(entry, _known_keys())
        else:
            self.section(entry, root, ".".join(parts[1:]))

    def broker(self, entry: _Entry, setting: _Setting) -> None:
        try:
            value = setting.parse(entry.value, entry.origin)
        except _BadValue as exc:
            raise entry.bad_value(str(exc), secret=setting.secret) from None
        owner, _, attr = setting.target.rpartition(".")
        target = getattr(self.config, owner) if owner else self.config
        setattr(target, attr, value)

    def section(self, entry: _Entry, plugin: str, key: str) -> None:
        section = self.config.sections.setdefault(plugin, PluginSection(plugin=plugin))
        section.values[key] = entry.value
        section.origins[key] = entry.origin

    def plugin(self, entry: _Entry, name: str, rest: list[str]) -> None:
        settings = self.config.plugins.get(name)
        if settings is None:
            settings = self.config.plugins[name] = PluginSettings(name=name, origin=entry.origin)
        option = ".".join(rest)
        try:
            if not option:
                settings.enabled = parse_bool(entry.value)
            elif option == "priority":
                settings.priority = parse_int(entry.value)
            elif option == "on_error":
                settings.on_error = parse_enum(entry.value, ("deny", "next"))  # type: ignore[assignment]
            elif option == "path":
                self.warn(
                    entry,
                    "ignored: plugins are Python distributions (pip install) or "
                    "--plugins-dir files",
                )
            else:
                raise entry.error(
                    "unknown plugin option (expected plugins.<name> = on|off, or "
                    "plugins.<name>.priority, .on_error, .path)"
                )
        except _BadValue as exc:
            raise entry.bad_value(str(exc)) from None

    # listener.X | listener.<kind>.X | listener.<kind>.<name> | listener.<kind>.<name>.X
    def listener(self, entry: _Entry, rest: list[str]) -> None:
        if not rest:
            raise _unknown(entry, _known_keys())
        head = rest[0]
        if head in LISTENER_KINDS:
            kind = head
            if len(rest) == 1:
                raise entry.error("expected listener.<kind>.<name> = ip:port")
            name = rest[1]
            if name in _LISTENER_OPTIONS or name in IGNORED_LISTENER_OPTIONS:
                self.listener_option(entry, rest[1:], kind, self.kind_opts.setdefault(kind, {}))
            elif len(rest) == 2:
                self.address(entry, kind, name)
            else:
                self.listener_option(
                    entry, rest[2:], kind, self.listener_opts.setdefault((kind, name), {})
                )
        elif head in _LISTENER_OPTIONS or head in IGNORED_LISTENER_OPTIONS:
            self.listener_option(entry, rest, None, self.global_opts)
        else:
            raise entry.error(
                f"unknown listener kind or option {head!r} (kinds: {', '.join(LISTENER_KINDS)})"
            )

    def address(self, entry: _Entry, kind: str, name: str) -> None:
        if not isinstance(entry.value, str):
            raise entry.bad_value('expected an address string like "127.0.0.1:1883"')
        try:
            host, port = parse_address(entry.value)
        except ValueError as exc:
            raise entry.error(str(exc)) from None
        self.addresses[(kind, name)] = (host, port, entry)

    def listener_option(
        self,
        entry: _Entry,
        option_parts: list[str],
        kind: str | None,
        into: dict[str, tuple[Any, _Entry]],
    ) -> None:
        name = option_parts[0]
        if name in IGNORED_LISTENER_OPTIONS:
            self.warn(entry, IGNORED_LISTENER_OPTIONS[name])
            return
        option = _LISTENER_OPTIONS.get(name) if len(option_parts) == 1 else None
        if option is None:
            raise _unknown(entry, _known_keys(), "unknown listener option")
        if kind is not None and kind not in option.kinds:
            raise entry.error(f"option {name} does not apply to {kind} listeners")
        try:
            into[name] = (option.parse(entry.value, entry.origin), entry)
        except _BadValue as exc:
            raise entry.bad_value(str(exc), secret=option.secret) from None

    def build_listeners(self, listen: Sequence[str]) -> list[ListenerConfig]:
        for (kind, name), options in self.listener_opts.items():
            if options and (kind, name) not in self.addresses:
                entry = next(iter(options.values()))[1]
                raise entry.error(
                    f"no listener {kind}.{name} is declared (add listener.{kind}.{name} = ip:port)"
                )
        declared: list[tuple[str, str, str, int, Origin]] = [
            (kind, name, host, port, entry.origin)
            for (kind, name), (host, port, entry) in self.addresses.items()
        ]
        if listen:
            declared = [d for d in declared if d[0] != "tcp"]
            for index, text in enumerate(listen, start=1):
                try:
                    host, port = parse_address(text)
                except ValueError as exc:
                    raise ConfigError(str(exc), key="--listen") from None
                declared.append(("tcp", f"listen{index}", host, port, Origin()))
        if not any(kind in _MQTT_KINDS for kind, *_ in declared):
            host, port = parse_address(DEFAULT_LISTEN)
            declared.append(("tcp", "default", host, port, Origin()))

        listeners: list[ListenerConfig] = []
        for kind, name, host, port, origin in declared:
            listener = ListenerConfig(
                kind=kind,  # type: ignore[arg-type]
                name=name,
                host=host,
                port=port,
                origin=origin,
            )
            layers = [
                {k: v for k, v in self.global_opts.items() if kind in _LISTENER_OPTIONS[k].kinds},
                self.kind_opts.get(kind, {}),
                self.listener_opts.get((kind, name), {}) if origin.file else {},
            ]
            for layer in layers:  # most specific last, so it wins
                for option, (value, _entry) in layer.items():
                    setattr(listener, _LISTENER_OPTIONS[option].field, value)
            if kind in _TLS_KINDS and (listener.certfile is None or listener.keyfile is None):
                raise ConfigError(
                    f"a {kind} listener needs certfile and keyfile (listener.{kind}.{name}.certfile"
                    f" or listener.{kind}.certfile, and the same for keyfile)",
                    key=f"listener.{kind}.{name}",
                    file=origin.file,
                    line=origin.line,
                )
            listeners.append(listener)
        self._check_unique_addresses(listeners)
        return listeners

    @staticmethod
    def _check_unique_addresses(listeners: Sequence[ListenerConfig]) -> None:
        used: dict[tuple[str, int], ListenerConfig] = {}
        for listener in listeners:
            if listener.port == 0:
                continue
            other = used.setdefault((listener.host, listener.port), listener)
            if other is not listener:
                key = (
                    f"listener.{listener.kind}.{listener.name}"
                    if listener.origin.file
                    else "--listen"
                )
                raise ConfigError(
                    f"address {listener.address} is already used by listener "
                    f"{other.kind}.{other.name} ({_where(other.origin, listener.origin)})",
                    key=key,
                    file=listener.origin.file,
                    line=listener.origin.line,
                )


def load_config(path: Path | None, *, overrides: ConfigOverrides | None = None) -> Config:
    """Read ``path`` (``.toml`` or ``.conf``), apply ``overrides``, return the validated Config.

    Without a file: the defaults, one listener ``tcp.default`` on ``127.0.0.1:1883`` and
    ``allow_anonymous = on`` (a working local broker). A file without any MQTT listener gets the
    same default listener; ``allow_anonymous`` then stays as configured (default off).

    Keys that are accepted but have no effect (VerneMQ-only settings) are collected in
    ``Config.warnings``; the caller logs them once logging is configured. Raises
    :class:`ConfigError` (``file:line: key: reason``) for an unreadable file, a syntax error,
    an unknown key, a bad value, a duplicate key (also through an alias spelling) or a bad
    listener address. Plugin sections are kept raw: see :func:`apply_schema`.
    """
    overrides = overrides or ConfigOverrides()
    config = Config()
    builder = _Builder(config)
    if path is None:
        config.broker.allow_anonymous = True
    else:
        config.source = path
        for entry in _read_file(path):
            builder.add(entry)
    config.listeners = builder.build_listeners(overrides.listen)

    if overrides.allow_anonymous is not None:
        config.broker.allow_anonymous = overrides.allow_anonymous
    config.plugins_dirs.extend(Path(p) for p in overrides.plugins_dirs)
    if overrides.log_level is not None:
        level = overrides.log_level.lower()
        level = "warning" if level == "warn" else level
        if level not in ("debug", "info", "warning", "error", "critical"):
            raise ConfigError(f"unknown log level {overrides.log_level!r}", key="--log-level")
        config.log.level = level  # type: ignore[assignment]
    if overrides.log_format is not None:
        if overrides.log_format not in ("auto", "console", "json"):
            raise ConfigError(f"unknown log format {overrides.log_format!r}", key="--log-format")
        config.log.format = overrides.log_format  # type: ignore[assignment]
    return config


# --------------------------------------------------------------------------------------------
# Plugin sections


def _convert(key: Key, value: Any, origin: Origin | None) -> Any:
    kind = key.type
    if kind == "bool":
        return parse_bool(value)
    if kind == "int":
        return parse_int(value)
    if kind == "float":
        return parse_float(value)
    if kind == "str":
        return parse_str(value)
    if kind == "path":
        return parse_path(value, origin)
    if kind == "duration_ms":
        return parse_duration(value, "ms")
    if kind == "duration_s":
        return parse_duration(value, "s")
    if kind == "size":
        return parse_size(value)
    if kind == "enum":
        return parse_enum(value, key.choices)
    if kind == "list":
        return parse_list(value)
    raise TypeError(f"unknown Key type {kind!r}")  # a plugin bug, not a config error


def _bindings(pattern: Sequence[str], parts: Sequence[str]) -> tuple[str, ...]:
    """The names matched by the ``*`` segments of ``pattern`` in ``parts``."""
    return tuple(part for part, segment in zip(parts, pattern, strict=False) if segment == "*")


def _fill(pattern: Sequence[str], names: Sequence[str]) -> str:
    it = iter(names)
    return ".".join(next(it) if segment == "*" else segment for segment in pattern)


def apply_schema(section: PluginSection, keys: Sequence[Key]) -> PluginSection:
    """Type and validate ``section`` against a plugin's declared ``keys``; return a new section.

    Each configured key must match one pattern (``*`` = any one name segment; a pattern without
    ``*`` wins over one with). Values are converted per :class:`Key` type (durations to seconds,
    sizes to bytes, relative paths against the config file's directory). Defaults are written
    like config values (``Key("*.response_timeout", "duration_ms", default=5000)`` = 5 s) and
    are filled in for keys without ``*``, and for each name in use for ``*`` patterns (e.g. each
    webhook). Raises :class:`ConfigError` with the file and line of the offending key for an
    unknown key, a bad value or a missing required key.
    """
    compiled = sorted(
        ((key, key.pattern.split(".")) for key in keys), key=lambda kp: kp[1].count("*")
    )
    result = PluginSection(plugin=section.plugin, origins=dict(section.origins))
    matched: dict[str, tuple[Key, list[str]]] = {}
    for dotted, raw in section.values.items():
        parts = dotted.split(".")
        found = next(((k, p) for k, p in compiled if _segments_match(p, parts)), None)
        if found is None:
            close = difflib.get_close_matches(dotted, [k.pattern for k in keys], n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise section.error(dotted, f"unknown key{hint}")
        key, pattern = found
        try:
            result.values[dotted] = _convert(key, raw, section.origins.get(dotted))
        except _BadValue as exc:
            shown = "***" if key.secret else _r_shown(raw)
            raise section.error(dotted, f"bad value {shown}: {exc}") from None
        matched[dotted] = (key, pattern)

    any_file = next((o.file for o in section.origins.values() if o.file), None)

    def complete(key: Key, concrete: str, near: str | None) -> None:
        if concrete in result.values:
            return
        if key.required:
            # Point at the key that made this one necessary (e.g. the webhook's .hook line).
            origin = section.origins.get(near) if near else None
            raise ConfigError(
                "required key is missing",
                key=f"{section.plugin}.{concrete}",
                file=origin.file if origin else any_file,
                line=origin.line if origin else None,
            )
        if key.default is not None:
            try:
                result.values[concrete] = _convert(key, key.default, None)
            except _BadValue as exc:  # a plugin bug: its own default does not parse
                raise TypeError(f"default of {key.pattern!r}: {exc}") from None

    for key, pattern in compiled:
        if "*" not in pattern:
            complete(key, key.pattern, None)
            continue
        # Names in use for this pattern: from keys that matched a pattern with the same
        # segments up to its last "*" (so "w1.hook" makes webhook w1 need its "w1.endpoint").
        last = max(i for i, segment in enumerate(pattern) if segment == "*")
        prefix = pattern[: last + 1]
        instances: dict[tuple[str, ...], str] = {}
        for dotted, (_other, other_pattern) in matched.items():
            if other_pattern[: last + 1] == prefix:
                names = _bindings(prefix, dotted.split("."))
                instances.setdefault(names, dotted)
        for names, near in instances.items():
            complete(key, _fill(pattern, names), near)
    return result


# --------------------------------------------------------------------------------------------
# Rendering (check-config)


def _is_secret(key: str, schema: Sequence[Key] | None) -> bool:
    if _SECRET_NAME.search(key.rsplit(".", 1)[-1]):
        return True
    parts = key.split(".")
    return any(k.secret and _segments_match(k.pattern.split("."), parts) for k in schema or ())


def render_config(config: Config, *, schemas: Mapping[str, Sequence[Key]] | None = None) -> str:
    """The effective configuration as ``.conf`` text that :func:`load_config` reads back.

    Secrets (``admin.api_key``, TLS ``keypasswd``, plugin keys marked ``secret`` in ``schemas``
    or named like a password/secret/token) are shown as ``***``. Listener options are shown
    where they differ from the built-in defaults, after global/kind/listener inheritance.
    """
    out: list[str] = ["# plugin-host effective configuration"]
    out.append(f"# source: {config.source}" if config.source else "# source: built-in defaults")

    out.append("\n## listeners")
    for listener in config.listeners:
        prefix = f"listener.{listener.kind}.{listener.name}"
        out.append(f"{prefix} = {listener.address}")
        default = ListenerConfig(kind=listener.kind, name="", host="", port=0)
        for option_name, option in _LISTENER_OPTIONS.items():
            value = getattr(listener, option.field)
            if listener.kind in option.kinds and value != getattr(default, option.field):
                shown = "***" if option.secret else option.render(value)
                out.append(f"{prefix}.{option_name} = {shown}")

    out.append("\n## broker")
    for name, setting in _BROKER_KEYS.items():
        if name == "persistence":
            out.append("\n## persistence")
        elif name == "admin.api_key":
            out.append("\n## admin, logging, plugin discovery")
        owner, _, attr = setting.target.rpartition(".")
        value = getattr(getattr(config, owner) if owner else config, attr)
        if value is None and setting.none_text is not None:
            out.append(f"{name} = {setting.none_text}")
        elif value is None or value == []:
            out.append(f"# {name} = (not set)")
        else:
            out.append(f"{name} = {'***' if setting.secret else setting.render(value)}")

    if config.plugins:
        out.append("\n## plugins")
        for plugin_name, plugin in sorted(config.plugins.items()):
            out.append(f"plugins.{plugin_name} = {_r_bool(plugin.enabled)}")
            if plugin.priority is not None:
                out.append(f"plugins.{plugin_name}.priority = {plugin.priority}")
            if plugin.on_error != "deny":
                out.append(f"plugins.{plugin_name}.on_error = {plugin.on_error}")

    for plugin_name, section in config.sections.items():
        out.append(f"\n## {plugin_name}")
        schema = (schemas or {}).get(plugin_name)
        for key, value in section.values.items():
            dotted = f"{plugin_name}.{key}"
            shown = "***" if _is_secret(key, schema) else _r_value(value)
            out.append(f"{dotted} = {shown}")
    return "\n".join(out) + "\n"


def log_warnings(config: Config) -> None:
    """Log each collected :class:`ConfigWarning` once (after logging is configured)."""
    log = structlog.get_logger(__name__)
    for warning in config.warnings:
        where = f"{warning.file}:{warning.line}" if warning.file and warning.line else warning.file
        log.warning("config_key_ignored", key=warning.key, where=where, reason=warning.reason)
