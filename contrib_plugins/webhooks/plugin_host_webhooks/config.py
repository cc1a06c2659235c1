"""The ``webhooks.*`` config section (``vmq_webhooks.*`` is the same section, aliased by the
host): the schema the host types it with, and :func:`load_settings`, which turns the typed
section into :class:`WebhooksSettings`.

Keys as in VerneMQ (spec 3.1)::

    webhooks.<name>.hook = auth_on_register
    webhooks.<name>.endpoint = https://auth.internal/mqtt
    webhooks.<name>.base64encode = on          # also spelled base64payload (vmq-admin)
    webhooks.<name>.no_payload = off
    webhooks.<name>.response_timeout = 5000    # ms
    webhooks.connect_timeout = 2000            # ms; also per webhook (not in VerneMQ)
    webhooks.pool_max_connections = 100
    webhooks.pool_timeout = 60000              # ms an idle keep-alive connection is kept
    webhooks.cafile / certfile / keyfile / keyfile_password / tls_version / verify_peer / depth

Beyond VerneMQ: every TLS key may be set per webhook (``webhooks.<name>.cafile`` ...),
overriding the global one; ``use_system_cas`` (default: on when no cafile is set);
``server_name`` (SNI and host name checked instead of the URL's host);
``webhooks.<name>.topic_filter`` for publish/deliver hooks; ``cache_max_entries`` and
``cache_sweep_interval`` for the response cache; ``connect_timeout`` (global, or per webhook)
bounds opening a new connection: the TCP connect and the TLS handshake get that long each, so
an unreachable endpoint fails fast while a slow answer still has the whole
``response_timeout``. Unset (the default), only ``response_timeout`` bounds connecting.
``use_crls`` is accepted so a vernemq.conf
loads, but CRLs are not fetched (a warning says so when it is on).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plugin_host.http import TLSOptions
from plugin_host.settings import ConfigError, Key, PluginSection
from plugin_host_webhooks.topic_filter import TopicFilter
from plugin_host_webhooks.wire import TOPIC_HOOKS, WEBHOOK_HOOKS

TLS_VERSIONS = ("tlsv1", "tlsv1.1", "tlsv1.2", "tlsv1.3")

#: TLS keys allowed both globally and per webhook: config key -> TLSOptions field.
TLS_KEYS: dict[str, str] = {
    "cafile": "cafile",
    "certfile": "certfile",
    "keyfile": "keyfile",
    "keyfile_password": "keyfile_password",
    "tls_version": "tls_version",
    "verify_peer": "verify",
    "depth": "depth",
    "use_system_cas": "use_system_cas",
    "server_name": "server_name",
}

_TLS_DOCS: dict[str, tuple[str, str]] = {
    "cafile": ("path", "PEM bundle of CAs trusted for https endpoints"),
    "certfile": ("path", "client certificate (PEM) for mutual TLS"),
    "keyfile": ("path", "private key of the client certificate (PEM, may be encrypted)"),
    "keyfile_password": ("str", "password of an encrypted keyfile"),
    "tls_version": ("enum", "minimum TLS version offered"),
    "verify_peer": ("bool", "verify the server certificate and host name"),
    "depth": ("int", "most intermediate CAs allowed in the server's chain"),
    "use_system_cas": ("bool", "trust the system CAs (default: on when no cafile is set)"),
    "server_name": ("str", "name sent as SNI and checked against the certificate"),
}


def _tls_key(pattern: str, name: str, default: Any) -> Key:
    kind, doc = _TLS_DOCS[name]
    return Key(
        pattern,
        kind,  # type: ignore[arg-type]
        default=default,
        choices=TLS_VERSIONS if kind == "enum" else (),
        doc=doc,
        secret=name == "keyfile_password",
    )


def schema() -> list[Key]:
    """Every key of the section (the answer of ``plugin_host_config_schema``)."""
    hooks = tuple(sorted(WEBHOOK_HOOKS))
    keys = [
        Key("*.hook", "enum", choices=hooks, required=True, doc="the hook this webhook serves"),
        Key("*.endpoint", "str", required=True, doc="http:// or https:// URL called with POST"),
        Key("*.base64encode", "bool", doc="base64-encode payload and client_cert (default on)"),
        Key("*.base64payload", "bool", doc="same as base64encode (the vmq-admin spelling)"),
        Key("*.no_payload", "bool", default=False, doc="omit payload for auth_on_publish(_m5)"),
        Key("*.response_timeout", "duration_ms", default=5000, doc="per-request timeout"),
        Key("*.connect_timeout", "duration_ms", doc="connect/TLS bound (default: the global)"),
        Key(
            "connect_timeout",
            "duration_ms",
            doc="bound on the TCP connect and the TLS handshake, each (default: unset, only "
            "response_timeout bounds them)",
        ),
        Key("*.topic_filter", "str", doc="call only for matching topics (publish/deliver hooks)"),
        Key("pool_max_connections", "int", default=100, doc="connections per endpoint pool"),
        Key("pool_timeout", "duration_ms", default=60000, doc="idle keep-alive time"),
        Key("cache_max_entries", "int", default=100000, doc="response cache size bound (LRU)"),
        Key("cache_sweep_interval", "duration_s", default=10, doc="expired-entry sweep period"),
        Key("use_crls", "bool", doc="accepted for vernemq.conf compatibility; no effect"),
    ]
    defaults = {"tls_version": "tlsv1.2", "verify_peer": True, "depth": 100}
    for name in TLS_KEYS:
        keys.append(_tls_key(name, name, defaults.get(name)))
        # Per-webhook overrides have no default: unset means "use the global value".
        keys.append(_tls_key(f"*.{name}", name, None))
    return keys


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """One webhook: a hook, an endpoint and how to call it."""

    hook: str
    endpoint: str
    name: str = ""
    base64payload: bool = True
    no_payload: bool = False
    response_timeout: float = 5.0
    #: seconds for the TCP connect and the TLS handshake of a new connection (None: unbounded
    #: but for response_timeout)
    connect_timeout: float | None = None
    topic_filter: str | None = None
    tls: TLSOptions = field(default_factory=TLSOptions)
    #: config keys the TLS options came from (for error messages), TLSOptions field -> key
    tls_keys: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class WebhooksSettings:
    """The whole section, validated."""

    webhooks: tuple[WebhookConfig, ...] = ()
    pool_max_connections: int = 100
    pool_timeout: float = 60.0
    connect_timeout: float | None = None
    cache_max_entries: int = 100_000
    cache_sweep_interval: float = 10.0
    tls: TLSOptions = field(default_factory=TLSOptions)
    use_crls: bool | None = None


def check_endpoint(endpoint: str) -> str | None:
    """Why ``endpoint`` is not a usable webhook URL, or None when it is."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return f"endpoint must be an http:// or https:// URL, got {endpoint!r}"
    if not rest or rest.startswith(("/", "?", "#", ":")):
        return f"endpoint has no host: {endpoint!r}"
    return None


def check_topic_filter(hook: str, topic_filter: str) -> str | None:
    """Why ``topic_filter`` cannot be used for ``hook``, or None."""
    if hook not in TOPIC_HOOKS:
        return f"topic_filter only applies to {', '.join(sorted(TOPIC_HOOKS))}, not {hook}"
    try:
        TopicFilter(topic_filter)
    except ValueError as exc:
        return str(exc)
    return None


def _tls_options(values: dict[str, Any]) -> TLSOptions:
    fields = {TLS_KEYS[k]: v for k, v in values.items() if k in TLS_KEYS and v is not None}
    for path_field in ("cafile", "certfile", "keyfile"):
        if isinstance(fields.get(path_field), str):
            fields[path_field] = Path(fields[path_field])
    return TLSOptions(**fields)


def load_settings(section: PluginSection) -> WebhooksSettings:
    """Validate the typed section (see :func:`schema`); raises ConfigError with file and line."""
    values = section.values
    global_tls = {k: values[k] for k in TLS_KEYS if values.get(k) is not None}
    global_connect = values.get("connect_timeout")
    if global_connect is not None and global_connect <= 0:
        raise section.error("connect_timeout", "must be > 0")
    webhooks = []
    for name, keys in sorted(section.group().items()):
        if "hook" not in keys or "endpoint" not in keys:
            missing = "hook" if "hook" not in keys else "endpoint"
            near = next(iter(keys))
            raise section.error(f"{name}.{near}", f"webhook {name!r} has no {missing}")
        hook, endpoint = keys["hook"], keys["endpoint"]
        problem = check_endpoint(endpoint)
        if problem:
            raise section.error(f"{name}.endpoint", problem)
        if "base64encode" in keys and "base64payload" in keys:
            raise section.error(
                f"{name}.base64payload", "set base64encode or base64payload, not both"
            )
        base64payload = keys.get("base64encode", keys.get("base64payload"))
        topic_filter = keys.get("topic_filter")
        if topic_filter is not None:
            problem = check_topic_filter(hook, topic_filter)
            if problem:
                raise section.error(f"{name}.topic_filter", problem)
        connect_timeout = keys.get("connect_timeout", global_connect)
        if connect_timeout is not None and connect_timeout <= 0:
            raise section.error(f"{name}.connect_timeout", "must be > 0")
        merged = dict(global_tls)
        origin = {TLS_KEYS[k]: k for k in global_tls}
        for key, option in TLS_KEYS.items():
            if keys.get(key) is not None:
                merged[key] = keys[key]
                origin[option] = f"{name}.{key}"
        webhooks.append(
            WebhookConfig(
                hook=hook,
                endpoint=endpoint,
                name=name,
                base64payload=True if base64payload is None else base64payload,
                no_payload=bool(keys.get("no_payload", False)),
                response_timeout=float(keys.get("response_timeout", 5.0)),
                connect_timeout=None if connect_timeout is None else float(connect_timeout),
                topic_filter=topic_filter,
                tls=_tls_options(merged),
                tls_keys=tuple(sorted(origin.items())),
            )
        )
    numbers = {
        "pool_max_connections": values.get("pool_max_connections", 100),
        "cache_max_entries": values.get("cache_max_entries", 100_000),
    }
    for key, value in numbers.items():
        if value < (1 if key == "pool_max_connections" else 0):
            raise section.error(key, f"must be >= {1 if key == 'pool_max_connections' else 0}")
    sweep = float(values.get("cache_sweep_interval", 10.0))
    if sweep <= 0:
        raise section.error("cache_sweep_interval", "must be > 0")
    return WebhooksSettings(
        webhooks=tuple(webhooks),
        pool_max_connections=numbers["pool_max_connections"],
        pool_timeout=float(values.get("pool_timeout", 60.0)),
        connect_timeout=None if global_connect is None else float(global_connect),
        cache_max_entries=numbers["cache_max_entries"],
        cache_sweep_interval=sweep,
        tls=_tls_options(global_tls),
        use_crls=values.get("use_crls"),
    )


def tls_error(
    section: PluginSection | None, webhook: WebhookConfig, option: str, reason: str
) -> Exception:
    """A ConfigError at the key that set TLS ``option`` for ``webhook`` (a plain one at runtime)."""
    key = dict(webhook.tls_keys).get(option)
    if section is not None and key is not None:
        return section.error(key, reason)
    where = f"webhook {webhook.name or webhook.endpoint}"
    return ConfigError(f"{where}: TLS {option}: {reason}")
