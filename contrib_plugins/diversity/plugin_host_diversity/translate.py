"""Hook arguments to the Lua argument table, and Lua results to the Python forms (spec 4.3).

Arguments: each hook function receives one table with VerneMQ's keys: ``addr`` / ``port``
(not ``peer_addr``), ``mountpoint``, ``client_id``, ``username`` (nil when absent),
``password`` (obfuscated: scripts call ``obf.decrypt``), ``clean_session`` / ``clean_start``,
``qos``, ``topic``, ``payload`` (raw), ``retain``, ``topics``, ``properties`` and, when the
listener forwards them, ``listener_addr`` / ``listener_port`` / ``listener_type`` /
``client_cert``. Shapes:

* subscribe topics ``{{"a/b", 1}, ...}``; ``_m5``: ``{{"a/b", {1, {no_local=false, rap=false,
  retain_handling="send_retain"}}}}``; unsubscribe topics ``{"a/b", ...}``;
* properties: ``p_*`` keys, ``p_user_property = {{k1="v1"}, {k2="v2"}}`` (ordered, one pair
  per table), ``p_subscription_id`` an array.

Results (:func:`result`): ``true`` = ok, ``false`` = deny (``invalid_credentials`` for
``auth_on_register``), a table = modifiers (or a topic list for the subscribe/unsubscribe
hooks), anything else (``nil``, ``"next"`` ...) = next. The modifiers are only converted to
the Python forms here; the host validates them (``plugin_host.hooks.modifiers``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from plugin_host import Deny
from plugin_host.hooks.modifiers import DELIVER_M5_PROPERTIES, PUBLISH_M5_PROPERTIES
from plugin_host_diversity.convert import ConversionError, from_lua, number

__all__ = [
    "CACHE_HOOKS",
    "CHAIN_HOOKS",
    "HOOK_ARGS",
    "LUA_HOOKS",
    "TABLE_ARGS",
    "ConversionError",
    "argument_expressions",
    "converted",
    "lua_arguments",
    "lua_key_names",
    "merge_properties",
    "properties_from_lua",
    "result",
    "topics_result",
]

#: Every hook a script may define, with the Python argument names in hookimpl order.
HOOK_ARGS: dict[str, tuple[str, ...]] = {
    "auth_on_register": (
        "peer_addr", "peer_port", "mountpoint", "client_id", "username", "password",
        "clean_session", "listener_addr", "listener_port", "listener_type", "client_cert",
    ),
    "auth_on_register_m5": (
        "peer_addr", "peer_port", "mountpoint", "client_id", "username", "password",
        "clean_start", "properties", "listener_addr", "listener_port", "listener_type",
        "client_cert",
    ),
    "on_auth_m5": ("username", "mountpoint", "client_id", "properties"),
    "on_register": ("peer_addr", "peer_port", "mountpoint", "client_id", "username"),
    "on_register_m5": (
        "peer_addr", "peer_port", "mountpoint", "client_id", "username", "properties",
    ),
    "auth_on_publish": (
        "username", "mountpoint", "client_id", "qos", "topic", "payload", "retain",
    ),
    "auth_on_publish_m5": (
        "username", "mountpoint", "client_id", "qos", "topic", "payload", "retain", "properties",
    ),
    "on_publish": ("username", "mountpoint", "client_id", "qos", "topic", "payload", "retain"),
    "on_publish_m5": (
        "username", "mountpoint", "client_id", "qos", "topic", "payload", "retain", "properties",
    ),
    "auth_on_subscribe": ("username", "mountpoint", "client_id", "topics"),
    "auth_on_subscribe_m5": ("username", "mountpoint", "client_id", "topics", "properties"),
    "on_subscribe": ("username", "mountpoint", "client_id", "topics"),
    "on_subscribe_m5": ("username", "mountpoint", "client_id", "topics", "properties"),
    "on_unsubscribe": ("username", "mountpoint", "client_id", "topics"),
    "on_unsubscribe_m5": ("username", "mountpoint", "client_id", "topics", "properties"),
    "on_deliver": ("username", "mountpoint", "client_id", "qos", "topic", "payload", "retain"),
    "on_deliver_m5": (
        "username", "mountpoint", "client_id", "qos", "topic", "payload", "retain", "properties",
    ),
    "on_offline_message": ("mountpoint", "client_id", "qos", "topic", "payload", "retain"),
    "on_client_wakeup": ("mountpoint", "client_id"),
    "on_client_offline": ("mountpoint", "client_id"),
    "on_client_gone": ("mountpoint", "client_id"),
    "on_session_expired": ("mountpoint", "client_id"),
}  # fmt: skip

LUA_HOOKS: frozenset[str] = frozenset(HOOK_ARGS)

#: Hooks answered by a chain: the first script returning something other than nil decides.
CHAIN_HOOKS: frozenset[str] = frozenset(
    {
        "auth_on_register", "auth_on_register_m5", "on_auth_m5", "auth_on_publish",
        "auth_on_publish_m5", "auth_on_subscribe", "auth_on_subscribe_m5", "on_unsubscribe",
        "on_unsubscribe_m5", "on_deliver", "on_deliver_m5",
    }
)  # fmt: skip

#: Hooks the auth cache answers (or that drop its entries), whether or not a script defines them.
CACHE_HOOKS: frozenset[str] = frozenset(
    {
        "auth_on_publish", "auth_on_publish_m5", "auth_on_subscribe", "auth_on_subscribe_m5",
        "on_unsubscribe", "on_unsubscribe_m5", "on_client_offline", "on_client_gone",
        "on_session_expired",
    }
)  # fmt: skip

_LUA_NAMES = {"peer_addr": "addr", "peer_port": "port"}


def lua_key_names(hook: str) -> list[bytes]:
    """The keys of the argument table of ``hook``, in :data:`HOOK_ARGS` order."""
    return [_LUA_NAMES.get(name, name).encode() for name in HOOK_ARGS[hook]]


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------


def _text(value: Any) -> Any:
    return value.encode("utf-8") if isinstance(value, str) else value


def _sub_topics(topics: Any) -> Any:
    return [[_text(t[0]), t[1]] for t in topics]


def _sub_topics_m5(topics: Any) -> Any:
    out = []
    for entry in topics:
        options = entry[2] if len(entry) > 2 else {}
        out.append(
            [
                _text(entry[0]),
                [
                    entry[1],
                    {
                        b"no_local": bool(options.get("no_local", False)),
                        b"rap": bool(options.get("rap", False)),
                        b"retain_handling": _text(options.get("retain_handling", "send_retain")),
                    },
                ],
            ]
        )
    return out


def _unsub_topics(topics: Any) -> Any:
    return [_text(t) for t in topics]


def properties_to_lua(properties: Mapping[str, Any] | None) -> Any:
    """Python properties to the plain form of a Lua properties table (bytes keys)."""
    out: dict[bytes, Any] = {}
    for key, value in (properties or {}).items():
        if key == "p_user_property":
            out[b"p_user_property"] = [{_text(k): _text(v)} for k, v in value]
        elif isinstance(value, list | tuple):
            out[key.encode()] = [_text(v) for v in value]
        else:
            out[key.encode()] = _text(value)
    return out


Converter = Callable[[Any], Any]

#: Arguments passed through as they are (bytes, numbers, booleans).
#: Text arguments that are never None.
_ALWAYS_STR = frozenset({"peer_addr", "mountpoint", "client_id", "topic"})
_AS_IS = frozenset(
    {"payload", "client_cert", "password", "qos", "retain", "peer_port", "listener_port",
     "clean_session", "clean_start"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to turn one hook's Python arguments into Lua values (precomputed per hook)."""

    text: tuple[int, ...]  # positions of str arguments (encoded to UTF-8)
    tables: tuple[tuple[int, Converter], ...]  # positions of topics/properties
    password: int  # position of the password (obfuscated), or -1


def _plan(hook: str) -> _Plan:
    text: list[int] = []
    tables: list[tuple[int, Converter]] = []
    for i, name in enumerate(HOOK_ARGS[hook]):
        if name == "topics":
            if hook.startswith("on_unsubscribe"):
                tables.append((i, _unsub_topics))
            elif hook.endswith("_m5"):
                tables.append((i, _sub_topics_m5))
            else:
                tables.append((i, _sub_topics))
        elif name == "properties":
            tables.append((i, properties_to_lua))
        elif name not in _AS_IS:
            text.append(i)
    names = HOOK_ARGS[hook]
    password = names.index("password") if "password" in names else -1
    return _Plan(tuple(text), tuple(tables), password)


_PLANS: dict[str, _Plan] = {hook: _plan(hook) for hook in HOOK_ARGS}

#: Argument positions (per hook) holding tables, which must be built in each Lua state.
TABLE_ARGS: dict[str, tuple[int, ...]] = {
    hook: tuple(i for i, _ in plan.tables) for hook, plan in _PLANS.items()
}


def argument_expressions(
    hook: str, names: Sequence[str], obfuscate: str = "obfuscate"
) -> tuple[list[str], dict[str, Any]]:
    """Python expressions converting the arguments of ``hook`` (held in the variables
    ``names``, in :data:`HOOK_ARGS` order) to Lua values, and the namespace they need
    (``obfuscate`` is the name of the password obfuscation function, supplied by the caller).

    Compiled into the per-hook converters below and the plugin's direct callers: this runs
    per hook call (per message for publish hooks), and one expression per argument with the
    conversion inlined costs a fraction of a loop over the plan.
    """
    plan = _PLANS[hook]
    tables = dict(plan.tables)
    namespace: dict[str, Any] = {"_encode": str.encode}
    items = []
    for i, value in enumerate(names):
        if i in plan.text:
            # The Python forms are str (or None where the table says so, docs/reference/
            # python-forms.md); str.encode called directly is the cheapest conversion.
            if HOOK_ARGS[hook][i] in _ALWAYS_STR:
                items.append(f"_encode({value})")
            else:
                items.append(f"(None if {value} is None else _encode({value}))")
        elif i in tables:
            namespace[f"table{i}"] = tables[i]
            items.append(f"(None if {value} is None else table{i}({value}))")
        elif i == plan.password:
            items.append(f"(None if {value} is None else {obfuscate}({value}))")
        else:
            items.append(value)
    return items, namespace


def _converter(hook: str) -> Callable[[Sequence[Any], Callable[[bytes], bytes]], list[Any]]:
    """The arguments of ``hook`` as one list display (``lambda v, obfuscate: [...]``)."""
    items, namespace = argument_expressions(hook, [f"v[{i}]" for i in range(len(HOOK_ARGS[hook]))])
    source = f"lambda v, obfuscate: [{', '.join(items)}]"
    return eval(source, namespace)  # type: ignore[no-any-return]  # (our own text)


_CONVERTERS = {hook: _converter(hook) for hook in HOOK_ARGS}


def lua_arguments(
    hook: str, values: Sequence[Any], obfuscate: Callable[[bytes], bytes]
) -> list[Any]:
    """The values of the argument table, in :data:`HOOK_ARGS` order.

    Scalars are ready for any Lua state; table arguments (``topics``, ``properties``) are
    plain Python data that :func:`plugin_host_diversity.convert.to_lua` turns into a table
    of the state the call runs in. The password is obfuscated.
    """
    return _CONVERTERS[hook](values, obfuscate)


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------

#: Modifier and property keys whose values are binary (all other strings are text).
_BINARY_KEYS = frozenset({"payload", "p_correlation_data", "p_authentication_data"})

_SUBSCRIBE = {"auth_on_subscribe": False, "auth_on_subscribe_m5": True}
_UNSUBSCRIBE = frozenset({"on_unsubscribe", "on_unsubscribe_m5"})

#: What ``false`` from a script means, per hook (VerneMQ: invalid_credentials at register).
_REGISTER_DENY = Deny("invalid_credentials", invalid_credentials=True)


def _str(value: Any) -> Any:
    """Lua string to ``str`` when it is UTF-8; otherwise left as bytes (the validator says no)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value


def _value(key: str, value: Any) -> Any:
    if isinstance(value, bytes):
        return value if key in _BINARY_KEYS else _str(value)
    if isinstance(value, float):
        return number(value)
    if isinstance(value, dict):
        out = {}
        for raw_key, item in value.items():
            name = _str(raw_key)
            out[name] = _value(name if isinstance(name, str) else "", item)
        return out
    if isinstance(value, list):
        return [_value("", v) for v in value]
    return value


def _user_properties(value: Any) -> Any:
    # Lua: {{k1="v1"}, {k2="v2"}}; also accepted: {{"k", "v"}} pairs and a plain {k="v"} map.
    if isinstance(value, dict):
        return [(_str(k), _str(v)) for k, v in value.items()]
    if not isinstance(value, list):
        return value
    out: list[Any] = []
    for item in value:
        if isinstance(item, dict):
            out.extend((_str(k), _str(v)) for k, v in item.items())
        elif isinstance(item, list) and len(item) == 2:
            out.append((_str(item[0]), _str(item[1])))
        else:
            out.append(item)  # left for the validator to reject with its position
    return out


def properties_from_lua(value: Any) -> Any:
    """A plain (``from_lua``) properties table to the Python properties dict."""
    if not isinstance(value, dict):
        return _value("", value)
    out: dict[Any, Any] = {}
    for raw_key, item in value.items():
        key = _str(raw_key)
        if key == "p_user_property":
            out[key] = _user_properties(item)
        else:
            out[key] = _value(key if isinstance(key, str) else "", item)
    return out


def _modifiers(value: Any) -> Any:
    if not isinstance(value, dict):
        return _value("", value)
    out: dict[Any, Any] = {}
    for raw_key, item in value.items():
        key = _str(raw_key)
        if key == "properties":
            out[key] = properties_from_lua(item)
        else:
            out[key] = _value(key if isinstance(key, str) else "", item)
    return out


def _subscribe_entry(entry: Any, m5: bool) -> Any:
    # v3: {"topic", qos}; m5: {"topic", {qos, {options}}} or {"topic", qos}.
    if not isinstance(entry, list) or len(entry) != 2:
        return _value("", entry)
    topic, spec = _str(entry[0]), entry[1]
    if m5 and isinstance(spec, list) and spec:
        qos = number(spec[0]) if isinstance(spec[0], float) else spec[0]
        if len(spec) > 1 and isinstance(spec[1], dict):
            return (topic, qos, {_str(k): _str(v) for k, v in spec[1].items()})
        return (topic, qos)
    return (topic, number(spec) if isinstance(spec, float) else spec)


def _topics(hook: str, value: Any) -> Any:
    if not isinstance(value, list):
        return _value("", value)
    if hook in _UNSUBSCRIBE:
        return [_str(t) for t in value]
    m5 = _SUBSCRIBE[hook]
    return [_subscribe_entry(entry, m5) for entry in value]


def topics_result(hook: str, value: Any) -> Any:
    """A subscribe/unsubscribe table result: a topic list, or ``{topics=, properties=}``."""
    if isinstance(value, dict):
        if not value:
            return []
        out: dict[Any, Any] = {}
        for raw_key, item in value.items():
            key = _str(raw_key)
            if key == "topics":
                out[key] = _topics(hook, item)
            elif key == "properties":
                out[key] = properties_from_lua(item)
            else:
                out[key] = _value("", item)
        return out
    return _topics(hook, value)


def result(hook: str, raw: Any) -> Any:
    """Translate what a script's hook returned into the Python return form.

    Raises :class:`~plugin_host_diversity.convert.ConversionError` for a table that cannot
    be read (functions inside, cycles ...).
    """
    if raw is True:
        return True
    if raw is False:
        return _REGISTER_DENY if hook.startswith("auth_on_register") else False
    if raw is None or isinstance(raw, bytes | int | float):
        return None
    plain = from_lua(raw)
    return converted(hook, plain)


def converted(hook: str, plain: Any) -> Any:
    """Plain data (a converted Lua table) to the Python form of ``hook``'s modifiers."""
    if hook in _SUBSCRIBE or hook in _UNSUBSCRIBE:
        return topics_result(hook, plain)
    return _modifiers(plain)


def merge_properties(hook: str, modifiers: Any, current: Mapping[str, Any] | None) -> Any:
    """VerneMQ's rule for ``auth_on_publish_m5`` / ``on_deliver_m5`` property modifiers.

    The returned properties are merged into the message's: returned keys win, and returned
    ``p_user_property`` entries replace the message's entries *with the same key* (others are
    kept, in order). The message's properties the hook may not set are left out, since the
    merged map replaces the message's and must pass the host's validation.
    """
    if not isinstance(modifiers, dict):
        return modifiers
    mine = modifiers.get("properties")
    if not isinstance(mine, dict):
        return modifiers
    allowed = PUBLISH_M5_PROPERTIES if hook == "auth_on_publish_m5" else DELIVER_M5_PROPERTIES
    merged = {k: v for k, v in (current or {}).items() if k in allowed}
    returned_users = mine.get("p_user_property")
    merged.update(mine)
    if isinstance(returned_users, list):
        replaced = {pair[0] for pair in returned_users if isinstance(pair, tuple)}
        kept = [p for p in (current or {}).get("p_user_property", []) if p[0] not in replaced]
        merged["p_user_property"] = kept + returned_users
    return {**modifiers, "properties": merged}
