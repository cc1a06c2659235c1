"""Response decoding (spec 3.3): results, where modifiers are, base64, error handling.

A real HTTP server answers each case; the hookimpl's return value must be the Python form of
``docs/reference/python-forms.md``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import structlog

from plugin_host import Deny
from plugin_host.testing.http_server import Request, Response, open_http_server


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


REGISTER = {
    "peer_addr": "127.0.0.1",
    "peer_port": 5000,
    "mountpoint": "",
    "client_id": "c1",
    "username": "u",
    "password": b"p",
    "clean_session": True,
    "listener_addr": None,
    "listener_port": None,
    "listener_type": None,
    "client_cert": None,
}
REGISTER_M5 = {
    **{k: v for k, v in REGISTER.items() if k != "clean_session"},
    "clean_start": True,
    "properties": {},
}
MESSAGE = {
    "username": "u",
    "mountpoint": "",
    "client_id": "c1",
    "qos": 1,
    "topic": "a/b",
    "payload": b"in",
    "retain": False,
}
SUBSCRIBE = {"username": "u", "mountpoint": "", "client_id": "c1", "topics": [("a/b", 1)]}
ARGS: dict[str, dict[str, Any]] = {
    "auth_on_register": REGISTER,
    "auth_on_register_m5": REGISTER_M5,
    "auth_on_publish": MESSAGE,
    "auth_on_publish_m5": {**MESSAGE, "properties": {}},
    "on_deliver": MESSAGE,
    "on_deliver_m5": {**MESSAGE, "properties": {}},
    "auth_on_subscribe": SUBSCRIBE,
    "auth_on_subscribe_m5": {
        **SUBSCRIBE,
        "topics": [("a/b", 1, {"no_local": False, "rap": False, "retain_handling": "send_retain"})],
        "properties": {},
    },
    "on_unsubscribe": {**SUBSCRIBE, "topics": ["a/b"]},
    "on_unsubscribe_m5": {**SUBSCRIBE, "topics": ["a/b"], "properties": {}},
    "on_auth_m5": {
        "username": "u",
        "mountpoint": "",
        "client_id": "c1",
        "properties": {"p_authentication_method": "X", "p_authentication_data": b"hi"},
    },
    "on_publish": MESSAGE,
    "on_client_gone": {"mountpoint": "", "client_id": "c1"},
}

OK = {"result": "ok"}
USER_PROPS_WIRE = [{"key": b64(b"k"), "val": b64(b"v")}]

# (hook, JSON answer, expected return value)
CASES: list[tuple[str, Any, Any]] = [
    # results
    ("auth_on_register", OK, True),
    ("auth_on_register", {"result": "next"}, None),
    ("auth_on_register", {"result": {"error": "not_allowed"}}, Deny("not_allowed")),
    ("auth_on_register", {"result": {}}, Deny("unknown_error")),
    ("auth_on_register", {"result": "ok", "modifiers": {}}, True),
    ("auth_on_register", {"result": "ok", "modifiers": []}, True),
    # modifiers pass through (the host validates them)
    (
        "auth_on_register",
        {
            "result": "ok",
            "modifiers": {"mountpoint": "mp", "client_id": "new", "max_inflight_messages": 5},
        },
        {"mountpoint": "mp", "client_id": "new", "max_inflight_messages": 5},
    ),
    (
        "auth_on_register_m5",
        {
            "result": "ok",
            "modifiers": {
                "clean_start": False,
                "properties": {"p_user_property": USER_PROPS_WIRE, "p_session_expiry_interval": 30},
            },
        },
        {
            "clean_start": False,
            "properties": {"p_user_property": [("k", "v")], "p_session_expiry_interval": 30},
        },
    ),
    # payload modifiers are base64 (publish and deliver)
    (
        "auth_on_publish",
        {"result": "ok", "modifiers": {"payload": b64(b"\x00new"), "topic": "x/y", "qos": 0}},
        {"payload": b"\x00new", "topic": "x/y", "qos": 0},
    ),
    (
        "auth_on_publish_m5",
        {
            "result": "ok",
            "modifiers": {
                "payload": b64(b"rewritten"),
                "properties": {
                    "p_user_property": USER_PROPS_WIRE,
                    "p_content_type": "text/plain",
                    "p_correlation_data": "abc",
                    "p_payload_format_indicator": "utf8",
                },
            },
        },
        {
            "payload": b"rewritten",
            "properties": {
                "p_user_property": [("k", "v")],
                "p_content_type": "text/plain",
                "p_correlation_data": b"abc",
                "p_payload_format_indicator": "utf8",
            },
        },
    ),
    ("on_deliver", {"result": "ok", "modifiers": {"payload": b64(b"d")}}, {"payload": b"d"}),
    ("on_deliver_m5", {"result": "next"}, None),
    # subscribe: v3 top-level topics, m5 inside modifiers; qos 128 rejects a slot
    ("auth_on_subscribe", OK, True),
    ("auth_on_subscribe", {"result": "ok", "topics": []}, True),
    (
        "auth_on_subscribe",
        {"result": "ok", "topics": [{"topic": "a/b", "qos": 0}, {"topic": "c", "qos": 128}]},
        [("a/b", 0), ("c", 128)],
    ),
    (
        "auth_on_subscribe_m5",
        {
            "result": "ok",
            "modifiers": {
                "topics": [
                    {"topic": "a/b", "qos": 2, "no_local": True, "retain_handling": "dont_send"},
                    {"topic": "c", "qos": 135},
                ],
                "properties": {"p_reason_string": "partly"},
            },
        },
        {
            "topics": [("a/b", 2, {"no_local": True, "retain_handling": "dont_send"}), ("c", 135)],
            "properties": {"p_reason_string": "partly"},
        },
    ),
    ("auth_on_subscribe", {"result": {"error": "no"}}, Deny("no")),
    # unsubscribe
    ("on_unsubscribe", {"result": "ok", "topics": ["x/#"]}, ["x/#"]),
    ("on_unsubscribe", OK, True),
    (
        "on_unsubscribe_m5",
        {"result": "ok", "modifiers": {"topics": ["x/#"]}},
        {"topics": ["x/#"]},
    ),
    # on_auth_m5: integer or named reason codes, base64 authentication data
    (
        "on_auth_m5",
        {
            "result": "ok",
            "modifiers": {
                "reason_code": 24,
                "properties": {"p_authentication_method": "X", "p_authentication_data": b64(b"ch")},
            },
        },
        {
            "reason_code": 24,
            "properties": {"p_authentication_method": "X", "p_authentication_data": b"ch"},
        },
    ),
    (
        "on_auth_m5",
        {"result": "ok", "modifiers": {"reason_code": "success"}},
        {"reason_code": "success"},
    ),
    # failures of a chain hook deny
    ("auth_on_register", {"result": "error"}, Deny("invalid_response")),
    ("auth_on_register", {"result": "maybe"}, Deny("invalid_response")),
    ("auth_on_register", {"modifiers": {}}, Deny("invalid_response")),
    ("auth_on_register", ["ok"], Deny("invalid_response")),
    (
        "auth_on_publish",
        {"result": "ok", "modifiers": {"payload": "%%%"}},
        Deny("invalid_modifiers"),
    ),
    ("auth_on_publish", {"result": "ok", "modifiers": "payload"}, Deny("invalid_modifiers")),
    (
        "auth_on_subscribe",
        {"result": "ok", "topics": [{"topic": "a"}]},
        Deny("invalid_modifiers"),
    ),
    (
        "auth_on_register_m5",
        {"result": "ok", "modifiers": {"properties": {"p_user_property": [{"key": "!"}]}}},
        Deny("invalid_modifiers"),
    ),
    # notification hooks: only "200 with JSON" matters; the result is ignored
    ("on_publish", {}, None),
    ("on_publish", {"result": {"error": "x"}}, None),
    ("on_client_gone", {"result": "ok"}, None),
]


def _ids() -> list[str]:
    return [f"{hook}-{i}" for i, (hook, _, _) in enumerate(CASES)]


@pytest.mark.parametrize(("hook", "answer", "expected"), CASES, ids=_ids())
async def test_response_decoding(
    webhooks: Any, hook: str, answer: Any, expected: Any, plugin: Any
) -> None:
    async def handler(request: Request) -> Response:
        return Response(body=json.dumps(answer).encode())

    async with open_http_server(handler) as server, webhooks() as runtime:
        await runtime.register(hook, server.url("/"))
        result = await getattr(plugin, hook)(**ARGS[hook])
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("status", "body", "reason", "detail"),
    [
        (500, b'{"result":"ok"}', "invalid_response_code", "HTTP status 500 (expected 200)"),
        (201, b'{"result":"ok"}', "invalid_response_code", "HTTP status 201 (expected 200)"),
        (200, b"<html>nope</html>", "received_payload_not_json", "body is not JSON"),
        (200, b"", "received_payload_not_json", "body is not JSON"),
    ],
)
async def test_bad_answers_deny_auth_hooks_with_a_log_line(
    webhooks: Any, status: int, body: bytes, reason: str, detail: str, plugin: Any
) -> None:
    async def handler(request: Request) -> Response:
        return Response(status=status, body=body)

    async with open_http_server(handler) as server, webhooks() as runtime:
        await runtime.register("auth_on_register", server.url("/auth"))
        with structlog.testing.capture_logs() as logs:
            result = await plugin.auth_on_register(**REGISTER)
        assert result == Deny(reason)
        [line] = [entry for entry in logs if entry["event"] == "webhook_failed"]
        assert line["endpoint"] == server.url("/auth")
        assert line["hook"] == "auth_on_register"
        assert line["outcome"] == "deny"
        assert detail in line["reason"]
        assert runtime.counters["auth_on_register"].errors == 1


async def test_payload_modifier_is_not_decoded_when_base64encode_is_off(
    webhooks: Any, conf: Any, plugin: Any
) -> None:
    async def handler(request: Request) -> Response:
        return Response.json({"result": "ok", "modifiers": {"payload": "plain text"}})

    async with open_http_server(handler) as server:
        text = conf("vmq_webhooks.pub.base64encode = off", pub=f"auth_on_publish {server.url('/')}")
        async with webhooks(text):
            assert await plugin.auth_on_publish(**MESSAGE) == {"payload": b"plain text"}
