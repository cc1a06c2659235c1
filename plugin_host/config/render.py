"""``render_config``: the effective configuration as ``.conf`` text (``check-config``)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from plugin_host.config.keys import BROKER_KEYS, segments_match
from plugin_host.config.listeners import LISTENER_OPTIONS
from plugin_host.config.values import format_bool, format_value
from plugin_host.settings import Config, Key, ListenerConfig

_SECRET_NAME = re.compile(
    r"(password|passwd|secret|api_?key|token|keypasswd|psk|cookie|credentials?)$", re.I
)


def _is_secret(key: str, schema: Sequence[Key] | None) -> bool:
    if _SECRET_NAME.search(key.rsplit(".", 1)[-1]):
        return True
    parts = key.split(".")
    return any(k.secret and segments_match(k.pattern.split("."), parts) for k in schema or ())


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
        for option_name, option in LISTENER_OPTIONS.items():
            value = getattr(listener, option.field)
            if listener.kind in option.kinds and value != getattr(default, option.field):
                shown = "***" if option.secret else option.render(value)
                out.append(f"{prefix}.{option_name} = {shown}")

    out.append("\n## broker")
    for name, setting in BROKER_KEYS.items():
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
            out.append(f"plugins.{plugin_name} = {format_bool(plugin.enabled)}")
            if plugin.priority is not None:
                out.append(f"plugins.{plugin_name}.priority = {plugin.priority}")
            if plugin.on_error != "deny":
                out.append(f"plugins.{plugin_name}.on_error = {plugin.on_error}")

    for plugin_name, section in config.sections.items():
        out.append(f"\n## {plugin_name}")
        schema = (schemas or {}).get(plugin_name)
        for key, value in section.values.items():
            dotted = f"{plugin_name}.{key}"
            shown = "***" if _is_secret(key, schema) else format_value(value)
            out.append(f"{dotted} = {shown}")
    return "\n".join(out) + "\n"
