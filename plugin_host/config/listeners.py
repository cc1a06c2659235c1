"""Listeners: the listener options and the assembly of :class:`ListenerConfig` objects.

A file declares listeners as ``listener.<kind>.<name> = ip:port`` and sets options at three
levels: ``listener.<option>`` (every listener of a kind the option applies to),
``listener.<kind>.<option>`` and ``listener.<kind>.<name>.<option>``; the most specific wins.
The builder collects them in a :class:`ListenerDeclarations`; :meth:`~ListenerDeclarations.build`
applies the layers, ``--listen`` and the default listener.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

from plugin_host.config.entries import Entry, where
from plugin_host.config.keys import PLUGIN_ALIASES
from plugin_host.config.values import (
    BadValue,
    format_bool,
    format_seconds,
    format_value,
    parse_address,
    parse_bool,
    parse_duration,
    parse_enum,
    parse_int,
    parse_list,
    parse_path,
    parse_size,
    parse_str,
)
from plugin_host.settings import ConfigError, ListenerConfig, ListenerKind, Origin

#: The listener of a config without any MQTT listener (and of ``plugin-host serve`` alone).
DEFAULT_LISTEN = "127.0.0.1:1883"

LISTENER_KINDS: tuple[str, ...] = get_args(ListenerKind)
MQTT_KINDS = frozenset({"tcp", "ssl", "ws", "wss"})
TLS_KINDS = frozenset({"ssl", "wss", "https"})
_WS_KINDS = frozenset({"ws", "wss"})
_ALL_KINDS = frozenset(LISTENER_KINDS)


@dataclass(frozen=True, slots=True)
class ListenerOption:
    """One listener option: its ListenerConfig field, parser, formatter and listener kinds."""

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
        raise BadValue("expected a list of 3 (MQTT 3.1), 4 (3.1.1), 5 (5.0), 131, 132")
    return versions


def _plugin_chain(value: Any) -> tuple[str, ...]:
    names = [PLUGIN_ALIASES.get(name, name) for name in parse_list(value)]
    if len(set(names)) != len(names):
        raise BadValue("a plugin is listed twice")
    return tuple(names)


def _ws_path(value: Any) -> str:
    text = parse_str(value).strip()
    if not text.startswith("/"):
        raise BadValue("must start with /")
    return text


def _option(
    name: str,
    parse: Callable[[Any], Any],
    render: Callable[[Any], str],
    kinds: frozenset[str],
    *,
    secret: bool = False,
) -> ListenerOption:
    return ListenerOption(name, lambda value, _origin: parse(value), render, kinds, secret)


def _file_option(name: str) -> ListenerOption:
    return ListenerOption(
        name, lambda v, origin: parse_path(v, origin, must_exist=True), format_value, TLS_KINDS
    )


#: Every listener option, in the order ``check-config`` writes them.
LISTENER_OPTIONS: dict[str, ListenerOption] = {
    "max_connections": _option(
        "max_connections",
        _max_connections,
        lambda v: "infinity" if v is None else str(v),
        _ALL_KINDS,
    ),
    "mountpoint": _option("mountpoint", parse_str, format_value, MQTT_KINDS),
    "allowed_protocol_versions": _option(
        "allowed_protocol_versions",
        _protocol_versions,
        lambda v: ",".join(str(n) for n in sorted(v)),
        MQTT_KINDS,
    ),
    "max_connection_lifetime": _option(
        "max_connection_lifetime", lambda v: parse_duration(v, "s"), format_seconds, MQTT_KINDS
    ),
    "allow_anonymous_override": _option(
        "allow_anonymous_override", parse_bool, format_bool, MQTT_KINDS
    ),
    "forward_connection_opts": _option(
        "forward_connection_opts", parse_bool, format_bool, MQTT_KINDS
    ),
    "proxy_protocol": _option("proxy_protocol", parse_bool, format_bool, MQTT_KINDS),
    "proxy_protocol_use_cn_as_username": _option(
        "proxy_protocol_use_cn_as_username", parse_bool, format_bool, MQTT_KINDS
    ),
    "auth_plugins": _option("auth_plugins", _plugin_chain, format_value, MQTT_KINDS),
    "authz_plugins": _option("authz_plugins", _plugin_chain, format_value, MQTT_KINDS),
    "cafile": _file_option("cafile"),
    "certfile": _file_option("certfile"),
    "keyfile": _file_option("keyfile"),
    "crlfile": _file_option("crlfile"),
    "keypasswd": _option("keypasswd", parse_str, format_value, TLS_KINDS, secret=True),
    "ciphers": _option("ciphers", parse_str, format_value, TLS_KINDS),
    "tls_version": _option(
        "tls_version",
        lambda v: parse_enum(v, ("tlsv1", "tlsv1.1", "tlsv1.2", "tlsv1.3")),
        str,
        TLS_KINDS,
    ),
    "require_certificate": _option("require_certificate", parse_bool, format_bool, TLS_KINDS),
    "use_identity_as_username": _option(
        "use_identity_as_username", parse_bool, format_bool, TLS_KINDS
    ),
    "depth": _option("depth", lambda v: parse_int(v, 0, 100), str, TLS_KINDS),
    "max_ws_frame_size": _option("max_ws_frame_size", parse_size, str, _WS_KINDS),
    "ws_path": _option("ws_path", _ws_path, format_value, _WS_KINDS),
}

#: Parsed option values of one level, by option name, with the entry that set each.
OptionLayer = dict[str, tuple[Any, Entry]]


@dataclass(slots=True)
class ListenerDeclarations:
    """What a file says about listeners, collected entry by entry, then :meth:`build`."""

    #: (kind, name) -> (host, port, entry of the address)
    addresses: dict[tuple[str, str], tuple[str, int, Entry]] = field(default_factory=dict)
    global_opts: OptionLayer = field(default_factory=dict)  # listener.<option>
    kind_opts: dict[str, OptionLayer] = field(default_factory=dict)  # listener.<kind>.<option>
    #: listener.<kind>.<name>.<option>
    listener_opts: dict[tuple[str, str], OptionLayer] = field(default_factory=dict)

    def build(self, listen: Sequence[str]) -> list[ListenerConfig]:
        """The listeners: ``listen`` (``--listen``) replaces the file's tcp listeners; without
        any MQTT listener there is one on :data:`DEFAULT_LISTEN`."""
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
        if not any(kind in MQTT_KINDS for kind, *_ in declared):
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
                {k: v for k, v in self.global_opts.items() if kind in LISTENER_OPTIONS[k].kinds},
                self.kind_opts.get(kind, {}),
                self.listener_opts.get((kind, name), {}) if origin.file else {},
            ]
            for layer in layers:  # most specific last, so it wins
                for option, (value, entry) in layer.items():
                    setattr(listener, LISTENER_OPTIONS[option].field, value)
                    listener.option_origins[option] = (entry.key, entry.origin)
            if kind in TLS_KINDS and (listener.certfile is None or listener.keyfile is None):
                raise ConfigError(
                    f"a {kind} listener needs certfile and keyfile (listener.{kind}.{name}.certfile"
                    f" or listener.{kind}.certfile, and the same for keyfile)",
                    key=f"listener.{kind}.{name}",
                    file=origin.file,
                    line=origin.line,
                )
            listeners.append(listener)
        _check_unique_addresses(listeners)
        return listeners


def check_plugin_chains(listeners: Sequence[ListenerConfig], enabled: Sequence[str]) -> None:
    """Every plugin a listener's ``auth_plugins`` / ``authz_plugins`` names must be enabled
    (spec 1.3); raises the :class:`ConfigError` of the first one that is not. Checked once
    the plugins are discovered (``serve``, ``check-config``)."""
    for listener in listeners:
        for option in ("auth_plugins", "authz_plugins"):
            chain = getattr(listener, option)
            unknown = [name for name in chain or () if name not in enabled]
            if not unknown:
                continue
            key, origin = listener.option_origins.get(
                option, (f"listener.{listener.kind}.{listener.name}.{option}", listener.origin)
            )
            raise ConfigError(
                f"{', '.join(unknown)}: not an enabled plugin (enabled: "
                f"{', '.join(enabled) or 'none'}) in the chain of listener "
                f"{listener.kind}.{listener.name}",
                key=key,
                file=origin.file,
                line=origin.line,
            )


def _check_unique_addresses(listeners: Sequence[ListenerConfig]) -> None:
    used: dict[tuple[str, int], ListenerConfig] = {}
    for listener in listeners:
        if listener.port == 0:
            continue
        other = used.setdefault((listener.host, listener.port), listener)
        if other is not listener:
            key = (
                f"listener.{listener.kind}.{listener.name}" if listener.origin.file else "--listen"
            )
            raise ConfigError(
                f"address {listener.address} is already used by listener "
                f"{other.kind}.{other.name} ({where(other.origin, listener.origin)})",
                key=key,
                file=listener.origin.file,
                line=listener.origin.line,
            )
