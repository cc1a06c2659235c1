"""The typed, validated configuration every part of the broker reads.

``plugin_host.config`` turns a ``.toml`` or vernemq.conf-style ``.conf`` file (plus command-line
overrides) into one :class:`Config`. Nothing else parses configuration text. Defaults follow
VerneMQ (spec section 5) unless a comment says why not.

Durations are stored in seconds (``float``), sizes in bytes (``int``). ``None`` means
"unlimited"/"never" where a comment says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ListenerKind = Literal["tcp", "ssl", "ws", "wss", "http", "https"]


class ConfigError(Exception):
    """A configuration problem, reported as ``file:line: key: reason``.

    The CLI prints ``str(error)`` and exits with status 2; it never shows a traceback.
    """

    def __init__(
        self,
        reason: str,
        *,
        key: str | None = None,
        file: str | None = None,
        line: int | None = None,
    ) -> None:
        self.reason = reason
        self.key = key
        self.file = file
        self.line = line
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        what = f"{self.key}: " if self.key else ""
        return f"{where}{what}{self.reason}"


@dataclass(slots=True)
class Origin:
    """Where a configured value came from (for error messages)."""

    file: str | None = None
    line: int | None = None


@dataclass(slots=True)
class ListenerConfig:
    """One listener: ``listener.<kind>.<name> = ip:port`` plus its options."""

    kind: ListenerKind
    name: str
    host: str
    port: int  # 0 = ephemeral (tests); the bound port is logged
    mountpoint: str = ""
    max_connections: int | None = None  # None = unlimited ("infinity")
    allowed_protocol_versions: frozenset[int] = frozenset({3, 4, 5, 131})
    max_connection_lifetime: float = 0.0  # seconds, 0 = off
    allow_anonymous_override: bool = False
    forward_connection_opts: bool = False
    proxy_protocol: bool = False
    proxy_protocol_use_cn_as_username: bool = True
    # TLS (ssl, wss, https)
    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    keypasswd: str | None = None
    ciphers: str | None = None
    tls_version: str | None = None  # e.g. "tlsv1.2": the minimum offered; None = 1.2
    require_certificate: bool = False
    use_identity_as_username: bool = False
    crlfile: Path | None = None
    depth: int = 1
    # WebSocket (ws, wss)
    max_ws_frame_size: int | None = None
    ws_path: str = "/mqtt"
    # Per-listener explicit plugin chains (spec 1.3); None = every enabled plugin, in order.
    auth_plugins: tuple[str, ...] | None = None  # auth_on_register(_m5), on_auth_m5
    authz_plugins: tuple[str, ...] | None = None  # auth_on_publish(_m5), auth_on_subscribe(_m5)
    origin: Origin = field(default_factory=Origin)
    #: option -> (the key that set it, as written; where): for problems found after parsing
    #: (e.g. a plugin chain naming a plugin that is not enabled).
    option_origins: dict[str, tuple[str, Origin]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(slots=True)
class BrokerConfig:
    """Session and protocol defaults (each may be overridden per client by auth_on_register)."""

    allow_anonymous: bool = False  # `plugin-host serve` without --config turns it on
    max_client_id_size: int = 100
    retry_interval: float = 20.0  # seconds (v3 resend of unacknowledged QoS 1/2)
    max_inflight_messages: int = 20  # 0 = unlimited
    max_online_messages: int = 1000  # -1 = unlimited
    max_offline_messages: int = 1000  # -1 = unlimited, 0 = none
    max_message_size: int = 0  # bytes, 0 = unlimited (incoming PUBLISH)
    max_message_rate: int = 0  # incoming publishes/s per client, 0 = off
    upgrade_outgoing_qos: bool = False
    persistent_client_expiration: float | None = None  # seconds; None = never (v3 sessions)
    max_last_will_delay: float | None = None  # seconds cap on v5 will delay; None = no cap
    max_keepalive: int = 0  # seconds; 0 = accept what clients ask (v5 server_keep_alive caps it)
    max_subscriptions_per_client: int = 0  # 0 = unlimited
    topic_max_depth: int = 10  # 0 = unlimited
    receive_max_client: int = 65535  # max unacked QoS 1/2 we send (capped by client's value)
    receive_max_broker: int = 65535  # what we announce in CONNACK (incoming window)
    topic_alias_max_client: int = 0  # aliases we may use towards a client (capped by its value)
    topic_alias_max_broker: int = 0  # aliases a client may use towards us (announced)
    suppress_lwt_on_session_takeover: bool = False
    shared_subscription_policy: str = "round_robin"  # round_robin | random (VerneMQ names map)
    max_outgoing_buffer: int = 4 * 1024 * 1024  # bytes queued to one socket before QoS 0 drops
    hook_timeout: float = 5.0  # seconds per auth hook call
    systree_enabled: bool = True
    systree_interval: float = 20.0  # seconds; 0 = off
    nodename: str = "plugin-host"
    mqtt_connect_timeout: float = 30.0  # seconds a new connection may take to send CONNECT


@dataclass(slots=True)
class PersistenceConfig:
    """The durable message store (SQLite by default)."""

    enabled: bool = True
    dir: Path | None = None  # None: `data/` next to the config file, else the platform data dir
    sync: Literal["batch", "always", "off"] = "batch"
    sync_delay: float = 0.005  # seconds: the longest a batch waits for more messages
    # `plugin-host serve --discard-store`: a corrupt or unreadable store is moved aside (and
    # logged) and the broker starts empty, instead of refusing to start
    discard_unreadable: bool = False


@dataclass(slots=True)
class PluginSettings:
    """``plugins.<name> = on|off``, ``plugins.<name>.priority``, ``plugins.<name>.on_error``."""

    name: str
    enabled: bool = True
    priority: int | None = None  # lower first; plugins without priority follow, by name
    on_error: Literal["deny", "next"] = "deny"
    origin: Origin = field(default_factory=Origin)  # where `plugins.<name>` was first set


@dataclass(slots=True)
class PluginSection:
    """One plugin's own keys (``webhooks.*``, ``diversity.*``, ...), dotted and flattened.

    ``values`` are typed by the plugin's schema when it declares one (see
    ``plugin_host_config_schema``), raw otherwise (strings from ``.conf``, TOML values as
    parsed). ``origins`` lets a plugin report ``file:line`` for a bad value via :meth:`error`.
    """

    plugin: str
    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, Origin] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def __contains__(self, key: object) -> bool:
        return key in self.values

    def group(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        """Group ``<name>.<key>`` entries under ``prefix`` by name: ``{name: {key: value}}``."""
        out: dict[str, dict[str, Any]] = {}
        start = f"{prefix}." if prefix else ""
        for dotted, value in self.values.items():
            if not dotted.startswith(start):
                continue
            rest = dotted[len(start) :]
            if "." not in rest:
                continue
            name, key = rest.split(".", 1)
            out.setdefault(name, {})[key] = value
        return out

    def error(self, key: str, reason: str) -> ConfigError:
        """A ConfigError pointing at where ``key`` was set."""
        origin = self.origins.get(key, Origin())
        return ConfigError(reason, key=f"{self.plugin}.{key}", file=origin.file, line=origin.line)


@dataclass(slots=True)
class LogSettings:
    """``log.level`` / ``log.format`` (``--log-level`` / ``--log-format`` override them)."""

    level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    format: Literal["auto", "console", "json"] = "auto"


@dataclass(frozen=True, slots=True)
class ConfigWarning:
    """A key that was accepted but has no effect (e.g. a VerneMQ-only setting).

    ``plugin_host.config.load_config`` collects these instead of logging them, because logging
    is configured from the loaded config; the CLI logs them once logging is set up.
    """

    key: str
    reason: str
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        return f"{where}{self.key}: {self.reason}"


@dataclass(slots=True)
class Config:
    """The whole validated configuration."""

    broker: BrokerConfig = field(default_factory=BrokerConfig)
    listeners: list[ListenerConfig] = field(default_factory=list)
    plugins: dict[str, PluginSettings] = field(default_factory=dict)
    sections: dict[str, PluginSection] = field(default_factory=dict)
    persistence: PersistenceConfig = field(default_factory=PersistenceConfig)
    admin_api_key: str | None = None
    plugins_dirs: list[Path] = field(default_factory=list)
    source: Path | None = None  # the config file, if any
    log: LogSettings = field(default_factory=LogSettings)
    warnings: list[ConfigWarning] = field(default_factory=list)  # ignored keys, in file order

    def plugin(self, name: str) -> PluginSettings:
        """Settings for ``name`` (defaults when the config does not mention it)."""
        return self.plugins.get(name) or PluginSettings(name=name)

    def section(self, name: str) -> PluginSection:
        """The plugin's own section (empty when the config does not mention it)."""
        return self.sections.get(name) or PluginSection(plugin=name)


KeyType = Literal[
    "bool", "int", "float", "str", "path", "duration_ms", "duration_s", "size", "enum", "list"
]


@dataclass(frozen=True, slots=True)
class Key:
    """One key of a plugin's config schema (returned by ``plugin_host_config_schema``).

    ``pattern`` is the dotted key inside the plugin's section; a ``*`` segment matches any one
    name, e.g. ``"*.endpoint"`` for ``webhooks.<name>.endpoint``. ``duration_ms`` /
    ``duration_s`` accept a bare integer in that unit or a value with a unit suffix
    (``500ms``, ``5s``, ``2m``, ``1h``, ``1d``, ``1w``) and are stored in seconds; ``size``
    accepts ``KB``/``MB``/``GB`` suffixes and is stored in bytes; ``enum`` checks ``choices``;
    ``list`` splits a comma-separated ``.conf`` value (TOML arrays as they are). ``secret``
    values are never logged nor printed by ``check-config``. ``default`` is written like a
    configured value and converted the same way (``duration_ms`` with ``default=5000`` is
    5 seconds). ``plugin_host.config.apply_schema`` applies a list of keys to a section.
    """

    pattern: str
    type: KeyType = "str"
    default: Any = None
    choices: tuple[str, ...] = ()
    doc: str = ""
    secret: bool = False
    required: bool = False
