"""Validation and normalisation of what chain hooks return: THE one validator.

Every plugin (Python hookimpls, the webhooks plugin, Lua scripts) hands the host results in the
Python forms of ``docs/reference/python-forms.md``; the chain runner passes modifier dicts and
topic lists through this module before anything reaches the broker. Unknown keys, wrong types
and invalid topics raise :class:`InvalidModifiers`, which the runner turns into a deny logged
with the plugin name (spec section 3.4).

Normalised forms (what the broker receives in :class:`~plugin_host.hooks.results.Outcome`):

* ``auth_on_register(_m5)``: ``subscriber_id`` is flattened into ``mountpoint`` /
  ``client_id``; in ``_m5`` a ``clean_session`` key becomes ``clean_start``; numbers are
  ``int`` (integral floats from JSON/Lua are accepted and rounded).
* ``auth_on_publish(_m5)`` / ``on_deliver(_m5)``: ``payload`` is ``bytes``; ``properties`` keys
  are ``p_*`` names with the value types of the properties table, ``p_user_property`` a list of
  ``(str, str)`` tuples, ``p_payload_format_indicator`` ``"utf8"`` or ``"unspecified"``.
* ``auth_on_subscribe``: a list of ``(filter, qos)``; ``_m5``: ``(filter, qos, options)`` with
  all three options filled in (from the request when the plugin left them out).
* ``on_unsubscribe(_m5)``: a list of filters.
* ``on_auth_m5``: ``reason_code`` is ``0`` or ``24``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from plugin_host.mqtt.errors import MQTTError
from plugin_host.mqtt.topics import validate_topic_filter, validate_topic_name

__all__ = [
    "DEFAULT_SUBSCRIPTION_OPTIONS",
    "DENY_PROPERTIES",
    "InvalidModifiers",
    "InvalidResult",
    "validate_deny_properties",
    "validate_modifiers",
    "validate_properties",
    "validate_subscribe_topics",
    "validate_topics",
    "validate_unsubscribe_topics",
]

U16 = 0xFFFF
U32 = 0xFFFF_FFFF
MAX_SUBSCRIPTION_ID = 268_435_455


class InvalidResult(ValueError):
    """A hook returned something the host cannot accept (the request is denied)."""


class InvalidModifiers(InvalidResult):
    """A modifier dict or topic list broke the rules of spec section 3.4."""


Checker = Callable[[Any, str], Any]


# --------------------------------------------------------------------------------------------
# Scalar checkers: each takes (value, where) and returns the normalised value or raises.
# --------------------------------------------------------------------------------------------


def _fail(where: str, reason: str) -> InvalidModifiers:
    return InvalidModifiers(f"{where}: {reason}")


def _type_name(value: Any) -> str:
    return type(value).__name__


def check_bool(value: Any, where: str) -> bool:
    if value is True or value is False:
        return value
    raise _fail(where, f"expected a bool, got {_type_name(value)}")


def check_str(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    raise _fail(where, f"expected a str, got {_type_name(value)}")


def check_nonempty_str(value: Any, where: str) -> str:
    text = check_str(value, where)
    if not text:
        raise _fail(where, "must not be empty")
    return text


def check_bytes(value: Any, where: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise _fail(where, f"expected bytes, got {_type_name(value)}")


def _to_int(value: Any, where: str) -> int:
    # bool is an int subclass but never a number here; JSON/Lua may hand integral floats.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return round(value)
    raise _fail(where, f"expected an int, got {_type_name(value)}")


def int_range(low: int, high: int | None = None) -> Checker:
    """A checker for an integer in ``[low, high]`` (``high`` None = no upper bound)."""

    def check(value: Any, where: str) -> int:
        number = _to_int(value, where)
        if number < low or (high is not None and number > high):
            bound = f"{low}..{high}" if high is not None else f">= {low}"
            raise _fail(where, f"{number} out of range ({bound})")
        return number

    return check


def choice(*choices: str, aliases: Mapping[str, str] | None = None) -> Checker:
    """A checker for a string among ``choices`` (``aliases`` map other accepted spellings)."""
    accepted = dict.fromkeys(choices, "")
    mapping = dict(aliases or {})

    def check(value: Any, where: str) -> str:
        text = check_str(value, where)
        if text in accepted:
            return text
        if text in mapping:
            return mapping[text]
        raise _fail(where, f"{text!r} is not one of {', '.join(choices)}")

    return check


def check_topic_name(value: Any, where: str) -> str:
    topic = check_str(value, where)
    try:
        validate_topic_name(topic)
    except MQTTError as exc:
        raise _fail(where, exc.message) from None
    return topic


def check_topic_filter(value: Any, where: str) -> str:
    topic_filter = check_str(value, where)
    try:
        validate_topic_filter(topic_filter)
    except MQTTError as exc:
        raise _fail(where, exc.message) from None
    return topic_filter


def check_user_properties(value: Any, where: str) -> list[tuple[str, str]]:
    if not isinstance(value, list | tuple):
        raise _fail(where, f"expected a list of (key, value) pairs, got {_type_name(value)}")
    out: list[tuple[str, str]] = []
    for index, pair in enumerate(value):
        here = f"{where}[{index}]"
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise _fail(here, "expected a (key, value) pair of str")
        out.append((check_str(pair[0], here), check_str(pair[1], here)))
    return out


def check_subscription_ids(value: Any, where: str) -> list[int]:
    if not isinstance(value, list | tuple):
        raise _fail(where, f"expected a list of int, got {_type_name(value)}")
    check = int_range(1, MAX_SUBSCRIPTION_ID)
    return [check(item, f"{where}[{i}]") for i, item in enumerate(value)]


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

#: Value checker of every MQTT 5 property a hook may return (python-forms properties table).
PROPERTY_CHECKS: dict[str, Checker] = {
    "p_payload_format_indicator": choice(
        "utf8", "unspecified", aliases={"undefined": "unspecified"}
    ),
    "p_message_expiry_interval": int_range(0, U32),
    "p_content_type": check_str,
    "p_response_topic": check_topic_name,
    "p_correlation_data": check_bytes,
    "p_subscription_id": check_subscription_ids,
    "p_session_expiry_interval": int_range(0, U32),
    "p_assigned_client_id": check_str,
    "p_server_keep_alive": int_range(0, U16),
    "p_authentication_method": check_str,
    "p_authentication_data": check_bytes,
    "p_request_problem_info": check_bool,
    "p_will_delay_interval": int_range(0, U32),
    "p_request_response_info": check_bool,
    "p_response_info": check_str,
    "p_server_ref": check_str,
    "p_reason_string": check_str,
    "p_receive_max": int_range(1, U16),
    "p_topic_alias_max": int_range(0, U16),
    "p_max_qos": int_range(0, 1),
    "p_retain_available": check_bool,
    "p_user_property": check_user_properties,
    "p_max_packet_size": int_range(1, U32),
    "p_wildcard_subs_available": check_bool,
    "p_sub_ids_available": check_bool,
    "p_shared_subs_available": check_bool,
}


def validate_properties(
    properties: Any, allowed: frozenset[str], where: str = "properties"
) -> dict[str, Any]:
    """Check a ``p_*`` properties dict against ``allowed`` keys; return a normalised copy."""
    if not isinstance(properties, Mapping):
        raise _fail(where, f"expected a dict, got {_type_name(properties)}")
    out: dict[str, Any] = {}
    for key, value in properties.items():
        if key not in allowed:
            raise _fail(
                f"{where}.{key}", f"not allowed here (allowed: {', '.join(sorted(allowed))})"
            )
        out[key] = PROPERTY_CHECKS[key](value, f"{where}.{key}")
    return out


REGISTER_M5_PROPERTIES = frozenset({"p_user_property", "p_session_expiry_interval"})
PUBLISH_M5_PROPERTIES = frozenset(
    {
        "p_user_property",
        "p_message_expiry_interval",
        "p_content_type",
        "p_payload_format_indicator",
        "p_response_topic",
        "p_correlation_data",
        # Not in the python-forms table but in VerneMQ's validator (spec 2.4): accepted so
        # that existing webhook services keep working.
        "p_will_delay_interval",
    }
)
DELIVER_M5_PROPERTIES = frozenset(
    {
        "p_content_type",
        "p_payload_format_indicator",
        "p_user_property",
        "p_response_topic",
        "p_correlation_data",
    }
)
ACK_PROPERTIES = frozenset({"p_reason_string", "p_user_property"})
AUTH_PROPERTIES = frozenset({"p_authentication_method", "p_authentication_data", "p_reason_string"})
#: Properties a :class:`~plugin_host.Deny` may carry to the client.
DENY_PROPERTIES = frozenset({"p_reason_string", "p_server_ref", "p_user_property"})


def validate_deny_properties(properties: Any) -> dict[str, Any]:
    """Check the ``properties`` of a :class:`~plugin_host.Deny`."""
    return validate_properties(properties, DENY_PROPERTIES, "Deny.properties")


# --------------------------------------------------------------------------------------------
# Topic lists
# --------------------------------------------------------------------------------------------

#: MQTT 5 subscription options of a request that says nothing else.
DEFAULT_SUBSCRIPTION_OPTIONS: dict[str, Any] = {
    "no_local": False,
    "rap": False,
    "retain_handling": "send_retain",
}

_SUBOPT_CHECKS: dict[str, Checker] = {
    "no_local": check_bool,
    "rap": check_bool,
    "retain_handling": choice("send_retain", "send_if_new_sub", "dont_send"),
}


def _check_subscribe_qos(value: Any, where: str) -> int:
    qos = _to_int(value, where)
    # 0-2 subscribe; 128 and above reject that slot (the value becomes its SUBACK code).
    if 0 <= qos <= 2 or 0x80 <= qos <= 0xFF:
        return qos
    raise _fail(where, f"qos {qos} is neither 0-2 nor a rejection code (128-255)")


def _check_options(value: Any, base: Mapping[str, Any], where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(where, f"expected a dict of subscription options, got {_type_name(value)}")
    merged = dict(base)
    for key, item in value.items():
        check = _SUBOPT_CHECKS.get(key)
        if check is None:
            raise _fail(
                f"{where}.{key}", "unknown subscription option (no_local, rap, retain_handling)"
            )
        merged[key] = check(item, f"{where}.{key}")
    return merged


def validate_subscribe_topics(
    topics: Any, *, m5: bool, requested: Sequence[Any] | None = None, where: str = "topics"
) -> list[tuple[Any, ...]]:
    """Check a rewritten subscription list (``auth_on_subscribe(_m5)``).

    ``requested`` is the hook's ``topics`` argument: when given, the list must have one entry
    per requested topic (SUBACK positions), and MQTT 5 entries without (all) options take the
    requested ones.
    """
    if not isinstance(topics, list | tuple):
        raise _fail(where, f"expected a list, got {_type_name(topics)}")
    if requested is not None and len(topics) != len(requested):
        raise _fail(
            where, f"{len(topics)} entries for {len(requested)} requested topics (keep it 1:1)"
        )
    sizes = (2, 3) if m5 else (2,)
    out: list[tuple[Any, ...]] = []
    for index, entry in enumerate(topics):
        here = f"{where}[{index}]"
        if not isinstance(entry, list | tuple) or len(entry) not in sizes:
            shape = "(filter, qos[, options])" if m5 else "(filter, qos)"
            raise _fail(here, f"expected a {shape} tuple, got {entry!r}")
        qos = _check_subscribe_qos(entry[1], f"{here}.qos")
        if qos <= 2:
            topic_filter = check_topic_filter(entry[0], f"{here}.filter")
        else:
            # A rejected slot is never subscribed: its filter only needs to be a string.
            topic_filter = check_str(entry[0], f"{here}.filter")
        if not m5:
            out.append((topic_filter, qos))
            continue
        base: Mapping[str, Any] = DEFAULT_SUBSCRIPTION_OPTIONS
        if requested is not None:
            original = requested[index]
            if isinstance(original, list | tuple) and len(original) > 2:
                base = original[2]
        options = _check_options(entry[2], base, f"{here}.options") if len(entry) == 3 else base
        out.append((topic_filter, qos, dict(options)))
    return out


def validate_unsubscribe_topics(topics: Any, where: str = "topics") -> list[str]:
    """Check a rewritten unsubscribe list (``on_unsubscribe(_m5)``): valid filters."""
    if not isinstance(topics, list | tuple):
        raise _fail(where, f"expected a list of filters, got {_type_name(topics)}")
    return [check_topic_filter(item, f"{where}[{i}]") for i, item in enumerate(topics)]


# --------------------------------------------------------------------------------------------
# Modifier dicts per hook
# --------------------------------------------------------------------------------------------

_REGISTER: dict[str, Checker] = {
    "mountpoint": check_str,
    "client_id": check_nonempty_str,
    "username": check_str,
    "max_message_size": int_range(0),
    "max_inflight_messages": int_range(0, U16),
    "retry_interval": int_range(0),
    "upgrade_qos": check_bool,
    "max_online_messages": int_range(-1),
    "max_offline_messages": int_range(-1),
    "max_message_rate": int_range(0),
    "max_connection_lifetime": int_range(0),
    # Accepted for VerneMQ compatibility, type-checked, no effect.
    "allow_register": check_bool,
    "allow_publish": check_bool,
    "allow_subscribe": check_bool,
    "allow_unsubscribe": check_bool,
    "queue_type": choice("fifo", "lifo"),
    "max_drain_time": int_range(0),
    "max_msgs_per_drain_step": int_range(0),
    "shared_subscription_policy": choice(
        "prefer_local", "local_only", "random", "prefer_online_before_local"
    ),
}

_PUBLISH: dict[str, Checker] = {
    "topic": check_topic_name,
    "payload": check_bytes,
    "qos": int_range(0, 2),
    "retain": check_bool,
    "mountpoint": check_str,
    "throttle": int_range(0),
}

_DELIVER: dict[str, Checker] = {"topic": check_topic_name, "payload": check_bytes}


def _props(allowed: frozenset[str]) -> Checker:
    def check(value: Any, where: str) -> dict[str, Any]:
        return validate_properties(value, allowed, where)

    return check


def _auth_reason_code(value: Any, where: str) -> int:
    if value in ("success", "continue_authentication"):
        return 0 if value == "success" else 0x18
    if isinstance(value, int | float) and not isinstance(value, bool):
        code = _to_int(value, where)
        if code in (0, 0x18):
            return code
    raise _fail(where, f"{value!r} is not 0, 24, 'success' or 'continue_authentication'")


#: Allowed keys and their checkers, per dict-returning hook.
MODIFIER_CHECKS: dict[str, dict[str, Checker]] = {
    "auth_on_register": {**_REGISTER, "clean_session": check_bool},
    "auth_on_register_m5": {
        **_REGISTER,
        "clean_start": check_bool,
        "clean_session": check_bool,
        "properties": _props(REGISTER_M5_PROPERTIES),
    },
    "auth_on_publish": _PUBLISH,
    "auth_on_publish_m5": {**_PUBLISH, "properties": _props(PUBLISH_M5_PROPERTIES)},
    "on_deliver": _DELIVER,
    "on_deliver_m5": {**_DELIVER, "properties": _props(DELIVER_M5_PROPERTIES)},
    "on_auth_m5": {"reason_code": _auth_reason_code, "properties": _props(AUTH_PROPERTIES)},
}

_SUBSCRIBE_HOOKS = {"auth_on_subscribe": False, "auth_on_subscribe_m5": True}
_UNSUBSCRIBE_HOOKS = {"on_unsubscribe": False, "on_unsubscribe_m5": True}


def _check_keys(modifiers: Mapping[str, Any], checks: Mapping[str, Checker]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in modifiers.items():
        check = checks.get(key)
        if check is None:
            raise _fail(
                str(key), f"unknown modifier (allowed: {', '.join(sorted(map(str, checks)))})"
            )
        out[key] = check(value, key)
    return out


def _register(hook: str, modifiers: Mapping[str, Any]) -> dict[str, Any]:
    subscriber_id = modifiers.get("subscriber_id")
    rest = {k: v for k, v in modifiers.items() if k != "subscriber_id"}
    out = _check_keys(rest, MODIFIER_CHECKS[hook])
    if subscriber_id is not None or "subscriber_id" in modifiers:
        if not isinstance(subscriber_id, Mapping) or set(subscriber_id) - {
            "mountpoint",
            "client_id",
        }:
            raise _fail("subscriber_id", "expected {'mountpoint': str, 'client_id': str}")
        for key in ("mountpoint", "client_id"):
            if key not in subscriber_id:
                continue
            checker = MODIFIER_CHECKS[hook][key]
            value = checker(subscriber_id[key], f"subscriber_id.{key}")
            if key in out and out[key] != value:
                raise _fail(key, "contradicts subscriber_id")
            out[key] = value
    if hook == "auth_on_register_m5" and "clean_session" in out:
        flag = out.pop("clean_session")
        if out.setdefault("clean_start", flag) != flag:
            raise _fail("clean_session", "contradicts clean_start")
    return out


def validate_modifiers(
    hook: str, modifiers: Mapping[str, Any], args: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Validate and normalise the dict a chain hook returned; raise :class:`InvalidModifiers`.

    ``args`` are the hook's arguments (used for subscribe hooks: the requested topics).
    For ``auth_on_subscribe(_m5)`` / ``on_unsubscribe(_m5)`` the dict form is
    ``{"topics": [...], "properties": {...}}`` and the result has the same keys, normalised.
    An empty dict means "ok, no change".
    """
    if not isinstance(modifiers, Mapping):
        raise InvalidModifiers(f"expected a dict of modifiers, got {_type_name(modifiers)}")
    if hook in ("auth_on_register", "auth_on_register_m5"):
        return _register(hook, modifiers)
    checks = MODIFIER_CHECKS.get(hook)
    if checks is not None:
        out = _check_keys(modifiers, checks)
        if hook == "on_auth_m5" and out:
            out.setdefault("reason_code", 0)
        return out
    if hook in _SUBSCRIBE_HOOKS or hook in _UNSUBSCRIBE_HOOKS:
        return _topics_dict(hook, modifiers, args)
    raise InvalidModifiers(f"{hook} takes no modifiers")


def _topics_dict(
    hook: str, modifiers: Mapping[str, Any], args: Mapping[str, Any] | None
) -> dict[str, Any]:
    m5 = _SUBSCRIBE_HOOKS.get(hook, _UNSUBSCRIBE_HOOKS.get(hook, False))
    allowed = {"topics", "properties"} if m5 else {"topics"}
    for key in modifiers:
        if key not in allowed:
            raise _fail(str(key), f"unknown key (allowed: {', '.join(sorted(allowed))})")
    out: dict[str, Any] = {}
    if "topics" in modifiers:
        out["topics"] = validate_topics(hook, modifiers["topics"], args)
    if "properties" in modifiers:
        out["properties"] = validate_properties(modifiers["properties"], ACK_PROPERTIES)
    return out


def validate_topics(hook: str, topics: Any, args: Mapping[str, Any] | None = None) -> list[Any]:
    """Validate a topic list returned by a subscribe or unsubscribe hook."""
    if hook in _SUBSCRIBE_HOOKS:
        requested = args.get("topics") if args is not None else None
        return validate_subscribe_topics(
            topics,
            m5=_SUBSCRIBE_HOOKS[hook],
            requested=requested if isinstance(requested, list | tuple) else None,
        )
    if hook in _UNSUBSCRIBE_HOOKS:
        return validate_unsubscribe_topics(topics)
    raise InvalidModifiers(f"{hook} does not take a topic list")


#: Hooks that accept a ``list`` result (a rewritten topic list).
LIST_RESULT_HOOKS: frozenset[str] = frozenset({*_SUBSCRIBE_HOOKS, *_UNSUBSCRIBE_HOOKS})
#: Hooks that accept bare ``bytes`` (a new payload): the MQTT 3 forms only.
BYTES_RESULT_HOOKS: frozenset[str] = frozenset({"auth_on_publish", "on_deliver"})
