"""The one conversion between MQTT property dicts and the ``p_*`` dicts plugins see.

The protocol package names properties with the snake_case MQTT 5 names
(``message_expiry_interval``, ``user_property``, ...); hooks use VerneMQ's ``p_*`` keys
(``p_message_expiry_interval``, ``p_user_property``, ...) with the Python types of
``docs/reference/python-forms.md``. Everything that crosses that boundary goes through
:func:`to_hook` and :func:`from_hook`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# mqtt name -> p_* name. ``topic_alias`` is a transport detail and never shown to hooks.
_TO_HOOK: dict[str, str] = {
    "payload_format_indicator": "p_payload_format_indicator",
    "message_expiry_interval": "p_message_expiry_interval",
    "content_type": "p_content_type",
    "response_topic": "p_response_topic",
    "correlation_data": "p_correlation_data",
    "subscription_identifier": "p_subscription_id",
    "session_expiry_interval": "p_session_expiry_interval",
    "assigned_client_identifier": "p_assigned_client_id",
    "server_keep_alive": "p_server_keep_alive",
    "authentication_method": "p_authentication_method",
    "authentication_data": "p_authentication_data",
    "request_problem_information": "p_request_problem_info",
    "will_delay_interval": "p_will_delay_interval",
    "request_response_information": "p_request_response_info",
    "response_information": "p_response_info",
    "server_reference": "p_server_ref",
    "reason_string": "p_reason_string",
    "receive_maximum": "p_receive_max",
    "topic_alias_maximum": "p_topic_alias_max",
    "maximum_qos": "p_max_qos",
    "retain_available": "p_retain_available",
    "user_property": "p_user_property",
    "maximum_packet_size": "p_max_packet_size",
    "wildcard_subscription_available": "p_wildcard_subs_available",
    "subscription_identifier_available": "p_sub_ids_available",
    "shared_subscription_available": "p_shared_subs_available",
}
_FROM_HOOK: dict[str, str] = {v: k for k, v in _TO_HOOK.items()}

# 0/1 byte properties shown to hooks as bool.
_BOOLS = frozenset(
    {
        "request_problem_information",
        "request_response_information",
        "retain_available",
        "wildcard_subscription_available",
        "subscription_identifier_available",
        "shared_subscription_available",
    }
)

#: A shared empty mapping for "no properties" (never mutate it).
EMPTY: Mapping[str, Any] = {}


def to_hook(props: Mapping[str, Any] | None) -> dict[str, Any]:
    """MQTT properties -> a fresh ``p_*`` dict (unknown and transport-only keys dropped)."""
    out: dict[str, Any] = {}
    if not props:
        return out
    for name, raw in props.items():
        key = _TO_HOOK.get(name)
        if key is None:
            continue
        value: Any = raw
        if name == "payload_format_indicator":
            value = "utf8" if raw == 1 else "unspecified"
        elif name in _BOOLS:
            value = bool(raw)
        elif name == "user_property":
            value = [(k, v) for k, v in raw]
        elif name == "subscription_identifier":
            value = list(raw) if isinstance(raw, list | tuple) else [raw]
        out[key] = value
    return out


def from_hook(props: Mapping[str, Any] | None) -> dict[str, Any]:
    """``p_*`` dict -> MQTT properties (inverse of :func:`to_hook`; unknown keys dropped).

    ``p_payload_format_indicator`` accepts ``"utf8"`` / ``"unspecified"`` / ``"undefined"`` (or
    0/1); ``p_subscription_id`` is never taken from a hook (the broker sets it per delivery).
    """
    out: dict[str, Any] = {}
    if not props:
        return out
    for key, raw in props.items():
        name = _FROM_HOOK.get(key)
        if name is None or name == "subscription_identifier":
            continue
        value: Any = raw
        if name == "payload_format_indicator":
            if raw in ("utf8", 1, True):
                value = 1
            elif raw in ("unspecified", "undefined", 0, False, None):
                value = 0
            else:
                continue
        elif name in _BOOLS:
            value = 1 if raw else 0
        elif name == "user_property":
            value = [(str(k), str(v)) for k, v in raw]
        elif name in ("correlation_data", "authentication_data"):
            value = raw.encode() if isinstance(raw, str) else bytes(raw)
        out[name] = value
    return out


def hook_name(mqtt_name: str) -> str | None:
    """The ``p_*`` key of an MQTT property name (None for transport-only ones)."""
    return _TO_HOOK.get(mqtt_name)
