"""The VerneMQ webhook wire format (spec 3.2 / 3.3): Python hook arguments to a JSON request
body, and a JSON response back to the Python return forms of ``docs/reference/python-forms.md``.

Requests: field names and order as VerneMQ sends them. ``payload`` and ``client_cert`` are
base64 (standard alphabet, padded) unless the webhook has ``base64encode = off``; user
properties (key and value) and ``p_authentication_data`` are always base64.

Responses: HTTP 200 with a JSON object whose ``result`` is ``"ok"`` (with ``modifiers``, or
the top-level ``topics`` of auth_on_subscribe / on_unsubscribe), ``"next"`` or
``{"error": "<reason>"}``. Any other result is a deny (VerneMQ crashed on
``{"result": "error"}``). Modifiers are translated, not validated: the host validates every
modifier dict with ``plugin_host.hooks.modifiers``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from plugin_host import Deny
from plugin_host.hooks.specs import CHAIN_HOOKS

_REGISTER = ("peer_addr", "peer_port", "mountpoint", "client_id", "username")
_MESSAGE = ("username", "mountpoint", "client_id", "qos", "topic", "payload", "retain")
_SUBSCRIBER = ("username", "mountpoint", "client_id")
_SESSION = ("mountpoint", "client_id")

#: The request fields of every hook a webhook may serve, in VerneMQ's order.
FIELDS: dict[str, tuple[str, ...]] = {
    "auth_on_register": (*_REGISTER, "password", "clean_session"),
    "auth_on_register_m5": (*_REGISTER, "password", "clean_start", "properties"),
    "on_register": _REGISTER,
    "on_register_m5": (*_REGISTER, "properties"),
    "auth_on_publish": _MESSAGE,
    "auth_on_publish_m5": (*_MESSAGE, "properties"),
    "on_publish": _MESSAGE,
    "on_publish_m5": (*_MESSAGE, "properties"),
    "auth_on_subscribe": (*_SUBSCRIBER, "topics"),
    "auth_on_subscribe_m5": (*_SUBSCRIBER, "topics", "properties"),
    "on_subscribe": (*_SUBSCRIBER, "topics"),
    "on_subscribe_m5": (*_SUBSCRIBER, "topics", "properties"),
    "on_unsubscribe": (*_SUBSCRIBER, "topics"),
    "on_unsubscribe_m5": (*_SUBSCRIBER, "topics", "properties"),
    # VerneMQ sends the message properties for v3 deliveries too (an empty object).
    "on_deliver": (*_MESSAGE, "properties"),
    "on_deliver_m5": (*_MESSAGE, "properties"),
    "on_auth_m5": (*_SUBSCRIBER, "properties"),
    "on_offline_message": (*_SESSION, "qos", "topic", "payload", "retain"),
    "on_client_wakeup": _SESSION,
    "on_client_offline": _SESSION,
    "on_client_gone": _SESSION,
    "on_session_expired": _SESSION,
}

#: Every hook a webhook can be registered for (spec 3.1).
WEBHOOK_HOOKS: frozenset[str] = frozenset(FIELDS)

#: Hooks whose arguments include a message topic (a webhook ``topic_filter`` applies).
TOPIC_HOOKS: frozenset[str] = frozenset(
    {
        "auth_on_publish",
        "auth_on_publish_m5",
        "on_publish",
        "on_publish_m5",
        "on_deliver",
        "on_deliver_m5",
        "on_offline_message",
    }
)

_REGISTER_HOOKS = frozenset({"auth_on_register", "auth_on_register_m5"})
_SUBSCRIBE_M5 = frozenset({"auth_on_subscribe_m5", "on_subscribe_m5"})
_SUBSCRIBE_V3 = frozenset({"auth_on_subscribe", "on_subscribe"})
_NO_PAYLOAD_HOOKS = frozenset({"auth_on_publish", "auth_on_publish_m5"})


class ResponseError(Exception):
    """The webhook answered something unusable; ``reason`` is a short code, the text details."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(detail)


# --------------------------------------------------------------------------------------------
# Requests


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _text(data: bytes) -> str:
    # JSON carries text; MQTT binary fields that are not UTF-8 cannot go through unchanged
    # (VerneMQ's JSON encoder cannot send them either), so bad bytes become U+FFFD.
    return data.decode("utf-8", "replace")


def encode_properties(properties: Mapping[str, Any] | None) -> dict[str, Any]:
    """MQTT 5 properties in the webhook form (user properties and auth data base64)."""
    out: dict[str, Any] = {}
    for key, value in (properties or {}).items():
        if key == "p_user_property":
            out[key] = [{"key": _b64(k.encode()), "val": _b64(v.encode())} for k, v in value]
        elif key == "p_authentication_data":
            out[key] = _b64(value)
        elif isinstance(value, bytes):
            out[key] = _text(value)
        else:
            out[key] = value
    return out


def _subscribe_topics(topics: list[Any], m5: bool) -> list[dict[str, Any]]:
    out = []
    for entry in topics:
        item: dict[str, Any] = {"topic": entry[0], "qos": entry[1]}
        if m5 and len(entry) > 2 and entry[2] is not None and 0 <= entry[1] <= 2:
            options = entry[2]
            item["no_local"] = bool(options.get("no_local", False))
            item["rap"] = bool(options.get("rap", False))
            item["retain_handling"] = options.get("retain_handling", "send_retain")
        out.append(item)
    return out


def encode_request(
    hook: str,
    args: Mapping[str, Any],
    *,
    base64payload: bool = True,
    no_payload: bool = False,
) -> dict[str, Any]:
    """The JSON object (as a dict) VerneMQ would POST for ``hook`` called with ``args``.

    ``args`` holds the hook's arguments by name (missing ones count as ``None``).
    """
    body: dict[str, Any] = {}
    for name in FIELDS[hook]:
        value = args.get(name)
        if name == "payload":
            if no_payload and hook in _NO_PAYLOAD_HOOKS:
                continue
            value = _b64(value or b"") if base64payload else _text(value or b"")
        elif name == "password":
            value = None if value is None else _text(value)
        elif name == "properties":
            value = encode_properties(value)
        elif name == "topics":
            if hook in _SUBSCRIBE_V3:
                value = _subscribe_topics(value or [], m5=False)
            elif hook in _SUBSCRIBE_M5:
                value = _subscribe_topics(value or [], m5=True)
            else:
                value = list(value or [])
        elif name == "mountpoint":
            value = value or ""
        body[name] = value
    if hook in _REGISTER_HOOKS:
        # Listener metadata only when the listener forwards it (forward_connection_opts).
        if any(
            args.get(k) is not None for k in ("listener_addr", "listener_port", "listener_type")
        ):
            body["listener_addr"] = args.get("listener_addr")
            body["listener_port"] = args.get("listener_port")
            body["listener_type"] = args.get("listener_type")
        cert = args.get("client_cert")
        if cert is not None:
            body["client_cert"] = _b64(cert) if base64payload else _text(cert)
    return body


def dumps(body: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON, as VerneMQ sends it."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


# --------------------------------------------------------------------------------------------
# Responses


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ResponseError("invalid_modifiers", f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ResponseError("invalid_modifiers", f"{what} is not valid base64") from None


def decode_properties(properties: Any) -> dict[str, Any]:
    """Webhook properties to the Python forms (base64 fields decoded)."""
    if not isinstance(properties, dict):
        raise ResponseError("invalid_modifiers", "properties must be an object")
    out: dict[str, Any] = {}
    for key, value in properties.items():
        if key == "p_user_property":
            if not isinstance(value, list):
                raise ResponseError("invalid_modifiers", "p_user_property must be a list")
            pairs = []
            for item in value:
                if not isinstance(item, dict) or "key" not in item or "val" not in item:
                    raise ResponseError(
                        "invalid_modifiers", 'p_user_property entries are {"key", "val"} objects'
                    )
                try:
                    pairs.append(
                        (
                            _unb64(item["key"], "p_user_property key").decode(),
                            _unb64(item["val"], "p_user_property val").decode(),
                        )
                    )
                except UnicodeDecodeError:
                    raise ResponseError(
                        "invalid_modifiers", "p_user_property is not UTF-8 once decoded"
                    ) from None
            out[key] = pairs
        elif key == "p_authentication_data":
            out[key] = _unb64(value, key)
        elif key == "p_correlation_data" and isinstance(value, str):
            out[key] = value.encode()
        else:
            out[key] = value
    return out


def _modifiers(hook: str, modifiers: Any, base64payload: bool) -> dict[str, Any]:
    if not isinstance(modifiers, dict):
        raise ResponseError("invalid_modifiers", "modifiers must be an object")
    out = dict(modifiers)
    if "payload" in out and hook in (
        "auth_on_publish",
        "auth_on_publish_m5",
        "on_deliver",
        "on_deliver_m5",
    ):
        payload = out["payload"]
        if base64payload:
            out["payload"] = _unb64(payload, "payload")
        elif isinstance(payload, str):
            out["payload"] = payload.encode()
    if "properties" in out and hook.endswith("_m5"):
        out["properties"] = decode_properties(out["properties"])
    if "topics" in out and hook == "auth_on_subscribe_m5":
        out["topics"] = _response_subscribe_topics(out["topics"])
    return out


def _response_subscribe_topics(topics: Any) -> list[tuple[Any, ...]]:
    if not isinstance(topics, list):
        raise ResponseError("invalid_modifiers", "topics must be a list")
    out: list[tuple[Any, ...]] = []
    for item in topics:
        if not isinstance(item, dict) or "topic" not in item or "qos" not in item:
            raise ResponseError("invalid_modifiers", 'topics entries are {"topic", "qos"} objects')
        options = {k: item[k] for k in ("no_local", "rap", "retain_handling") if k in item}
        # A partial set of options keeps the requested values for the rest (python-forms).
        out.append(
            (item["topic"], item["qos"], options) if options else (item["topic"], item["qos"])
        )
    return out


def _error_reason(error: Any) -> str:
    if isinstance(error, dict):
        error = error.get("error", "unknown_error")
    if isinstance(error, str):
        return error or "unknown_error"
    return json.dumps(error)


def decode_response(hook: str, status: int, body: bytes, *, base64payload: bool = True) -> Any:
    """Turn a webhook response into the hook's Python return value.

    ``None`` = next, ``True`` = ok, a dict / list = ok with changes, :class:`Deny` = the
    webhook refused. Raises :class:`ResponseError` for a response that is not a valid answer
    (non-200 status, not JSON, unknown result, malformed modifiers). Notification hooks only
    need a 200 with JSON; their result is always ``None``.
    """
    if status != 200:
        raise ResponseError("invalid_response_code", f"HTTP status {status} (expected 200)")
    try:
        decoded = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        shown = body[:60].decode("utf-8", "replace")
        raise ResponseError("received_payload_not_json", f"body is not JSON: {shown!r}") from None
    if hook not in CHAIN_HOOKS:
        return None
    if not isinstance(decoded, dict) or "result" not in decoded:
        raise ResponseError("invalid_response", 'response is not an object with a "result"')
    result = decoded["result"]
    if result == "next":
        return None
    if isinstance(result, dict):
        return Deny(_error_reason(result))
    if result != "ok":
        raise ResponseError("invalid_response", f"unknown result {result!r}")

    if hook in ("auth_on_subscribe", "on_unsubscribe"):
        topics = decoded.get("topics")
        if not topics:
            return True
        if not isinstance(topics, list):
            raise ResponseError("invalid_modifiers", "topics must be a list")
        if hook == "on_unsubscribe":
            return list(topics)
        return [(t, q) for t, q, *_ in _response_subscribe_topics(topics)]

    modifiers = decoded.get("modifiers")
    if not modifiers:  # absent, null, {} or []: a plain ok
        return True
    return _modifiers(hook, modifiers, base64payload)
