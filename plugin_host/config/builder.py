"""Entries -> Config: every key checked, typed and put in its place, or a ConfigError."""

from __future__ import annotations

from plugin_host.config.entries import Entry, unknown, where
from plugin_host.config.keys import (
    BROKER_KEYS,
    IGNORED_LISTENER_OPTIONS,
    RESERVED_ROOTS,
    Setting,
    ignored_reason,
)
from plugin_host.config.listeners import (
    LISTENER_KINDS,
    LISTENER_OPTIONS,
    ListenerDeclarations,
    OptionLayer,
)
from plugin_host.config.values import BadValue, parse_address, parse_bool, parse_enum, parse_int
from plugin_host.settings import Config, ConfigWarning, PluginSection, PluginSettings


def known_keys() -> list[str]:
    """Every key shape a file may set (the candidates of "did you mean" hints)."""
    return [
        *BROKER_KEYS,
        *(f"listener.{option}" for option in LISTENER_OPTIONS),
        "plugins.<name>",
    ]


class Builder:
    """Turns the entries of one file (plus overrides) into a Config."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.seen: dict[str, Entry] = {}
        self.warned: set[str] = set()
        self.listeners = ListenerDeclarations()

    def warn(self, entry: Entry, reason: str) -> None:
        if entry.canon in self.warned:
            return
        self.warned.add(entry.canon)
        self.config.warnings.append(
            ConfigWarning(
                key=entry.key, reason=reason, file=entry.origin.file, line=entry.origin.line
            )
        )

    def add(self, entry: Entry) -> None:
        reason = ignored_reason(entry.parts)
        if reason is not None:
            self.warn(entry, reason)
            return
        first = self.seen.get(entry.canon)
        if first is not None:
            spelled = f" as {first.key}" if first.key != entry.key else ""
            raise entry.error(
                f"duplicate key (already set on {where(first.origin, entry.origin)}{spelled})"
            )
        self.seen[entry.canon] = entry

        parts = entry.parts
        root = parts[0]
        if root == "listener":
            self.listener(entry, parts[1:])
        elif root == "plugins" and len(parts) >= 2:
            self.plugin(entry, parts[1], parts[2:])
        elif entry.canon in BROKER_KEYS:
            self.broker(entry, BROKER_KEYS[entry.canon])
        elif root in RESERVED_ROOTS or len(parts) == 1:
            raise unknown(entry, known_keys())
        else:
            self.section(entry, root, ".".join(parts[1:]))

    def broker(self, entry: Entry, setting: Setting) -> None:
        try:
            value = setting.parse(entry.value, entry.origin)
        except BadValue as exc:
            raise entry.bad_value(str(exc), secret=setting.secret) from None
        owner, _, attr = setting.target.rpartition(".")
        target = getattr(self.config, owner) if owner else self.config
        setattr(target, attr, value)

    def section(self, entry: Entry, plugin: str, key: str) -> None:
        section = self.config.sections.setdefault(plugin, PluginSection(plugin=plugin))
        section.values[key] = entry.value
        section.origins[key] = entry.origin

    def plugin(self, entry: Entry, name: str, rest: list[str]) -> None:
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
        except BadValue as exc:
            raise entry.bad_value(str(exc)) from None

    # listener.X | listener.<kind>.X | listener.<kind>.<name> | listener.<kind>.<name>.X
    def listener(self, entry: Entry, rest: list[str]) -> None:
        if not rest:
            raise unknown(entry, known_keys())
        declared = self.listeners
        head = rest[0]
        if head in LISTENER_KINDS:
            kind = head
            if len(rest) == 1:
                raise entry.error("expected listener.<kind>.<name> = ip:port")
            name = rest[1]
            if name in LISTENER_OPTIONS or name in IGNORED_LISTENER_OPTIONS:
                self.listener_option(entry, rest[1:], kind, declared.kind_opts.setdefault(kind, {}))
            elif len(rest) == 2:
                self.address(entry, kind, name)
            else:
                self.listener_option(
                    entry, rest[2:], kind, declared.listener_opts.setdefault((kind, name), {})
                )
        elif head in LISTENER_OPTIONS or head in IGNORED_LISTENER_OPTIONS:
            self.listener_option(entry, rest, None, declared.global_opts)
        else:
            raise entry.error(
                f"unknown listener kind or option {head!r} (kinds: {', '.join(LISTENER_KINDS)})"
            )

    def address(self, entry: Entry, kind: str, name: str) -> None:
        if not isinstance(entry.value, str):
            raise entry.bad_value('expected an address string like "127.0.0.1:1883"')
        try:
            host, port = parse_address(entry.value)
        except ValueError as exc:
            raise entry.error(str(exc)) from None
        self.listeners.addresses[(kind, name)] = (host, port, entry)

    def listener_option(
        self, entry: Entry, option_parts: list[str], kind: str | None, into: OptionLayer
    ) -> None:
        name = option_parts[0]
        if name in IGNORED_LISTENER_OPTIONS:
            self.warn(entry, IGNORED_LISTENER_OPTIONS[name])
            return
        option = LISTENER_OPTIONS.get(name) if len(option_parts) == 1 else None
        if option is None:
            raise unknown(entry, known_keys(), "unknown listener option")
        if kind is not None and kind not in option.kinds:
            raise entry.error(f"option {name} does not apply to {kind} listeners")
        try:
            into[name] = (option.parse(entry.value, entry.origin), entry)
        except BadValue as exc:
            raise entry.bad_value(str(exc), secret=option.secret) from None
