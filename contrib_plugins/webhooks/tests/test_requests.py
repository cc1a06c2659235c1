"""The exact request every hook sends (spec 3.2): body fields and order, base64 rules, headers.

Each hook is registered on a real HTTP server and called through the plugin's hookimpl with
the arguments an MQTT 3.1.1 or MQTT 5 client produces.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from plugin_host.testing.http_server import Request, Response, open_http_server


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


CERT = bytes(range(40))  # stands in for a DER certificate: any bytes, not UTF-8
PAYLOAD = b"\x00\xffhello"  # binary payload: only base64 can carry it

REGISTER_V3 = {
    "peer_addr": "192.0.2.10",
    "peer_port": 53001,
    "mountpoint": "",
    "client_id": "client-1",
    "username": "alice",
    "password": b"s3cret",
    "clean_session": True,
    "listener_addr": None,
    "listener_port": None,
    "listener_type": None,
    "client_cert": None,
}
CONNECT_PROPS = {
    "p_session_expiry_interval": 3600,
    "p_receive_max": 20,
    "p_user_property": [("region", "eu"), ("region", "us"), ("ünï", "cödé")],
    "p_request_problem_info": True,
}
CONNECT_PROPS_WIRE = {
    "p_session_expiry_interval": 3600,
    "p_receive_max": 20,
    "p_user_property": [
        {"key": b64(b"region"), "val": b64(b"eu")},
        {"key": b64(b"region"), "val": b64(b"us")},
        {"key": b64("ünï".encode()), "val": b64("cödé".encode())},
    ],
    "p_request_problem_info": True,
}
REGISTER_V5 = {
    **{k: v for k, v in REGISTER_V3.items() if k != "clean_session"},
    "clean_start": False,
    "properties": CONNECT_PROPS,
}
MESSAGE = {
    "username": "alice",
    "mountpoint": "mp1",
    "client_id": "client-1",
    "qos": 1,
    "topic": "a/b/c",
    "payload": PAYLOAD,
    "retain": False,
}
PUBLISH_PROPS = {
    "p_payload_format_indicator": "utf8",
    "p_message_expiry_interval": 60,
    "p_content_type": "text/plain",
    "p_response_topic": "reply/here",
    "p_correlation_data": b"corr-1",
    "p_user_property": [("k", "v")],
}
PUBLISH_PROPS_WIRE = {
    "p_payload_format_indicator": "utf8",
    "p_message_expiry_interval": 60,
    "p_content_type": "text/plain",
    "p_response_topic": "reply/here",
    "p_correlation_data": "corr-1",
    "p_user_property": [{"key": b64(b"k"), "val": b64(b"v")}],
}
MESSAGE_WIRE = {
    "username": "alice",
    "mountpoint": "mp1",
    "client_id": "client-1",
    "qos": 1,
    "topic": "a/b/c",
    "payload": b64(PAYLOAD),
    "retain": False,
}
SUBSCRIBER = {"username": None, "mountpoint": "", "client_id": "client-2"}
SUB_OPTIONS = {"no_local": True, "rap": False, "retain_handling": "send_if_new_sub"}

# (hook, arguments, expected body)
CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "auth_on_register",
        REGISTER_V3,
        {
            "peer_addr": "192.0.2.10",
            "peer_port": 53001,
            "mountpoint": "",
            "client_id": "client-1",
            "username": "alice",
            "password": "s3cret",
            "clean_session": True,
        },
    ),
    (
        "auth_on_register",
        {**REGISTER_V3, "username": None, "password": None},
        {
            "peer_addr": "192.0.2.10",
            "peer_port": 53001,
            "mountpoint": "",
            "client_id": "client-1",
            "username": None,
            "password": None,
            "clean_session": True,
        },
    ),
    (
        "auth_on_register",
        {
            **REGISTER_V3,
            "listener_addr": "127.0.0.1",
            "listener_port": 8883,
            "listener_type": "mqtts",
            "client_cert": CERT,
        },
        {
            "peer_addr": "192.0.2.10",
            "peer_port": 53001,
            "mountpoint": "",
            "client_id": "client-1",
            "username": "alice",
            "password": "s3cret",
            "clean_session": True,
            "listener_addr": "127.0.0.1",
            "listener_port": 8883,
            "listener_type": "mqtts",
            "client_cert": b64(CERT),
        },
    ),
    (
        "auth_on_register_m5",
        REGISTER_V5,
        {
            "peer_addr": "192.0.2.10",
            "peer_port": 53001,
            "mountpoint": "",
            "client_id": "client-1",
            "username": "alice",
            "password": "s3cret",
            "clean_start": False,
            "properties": CONNECT_PROPS_WIRE,
        },
    ),
    (
        "on_register",
        {k: REGISTER_V3[k] for k in ("peer_addr", "peer_port", "mountpoint", "client_id")}
        | {"username": "alice"},
        {
            "peer_addr": "192.0.2.10",
            "peer_port": 53001,
            "mountpoint": "",
            "client_id": "client-1",
            "username": "alice",
        },
    ),
    (
        "on_register_m5",
        {k: REGISTER_V3[k] for k in ("peer_addr", "peer_port", "mountpoint", "client_id")}
        | {"username": "alice", "properties": {"p_assigned_client_id": "gen-1"}},
        {
            "peer_addr": "192.0.2.10",
            "peer_port": 53001,
            "mountpoint": "",
            "client_id": "client-1",
            "username": "alice",
            "properties": {"p_assigned_client_id": "gen-1"},
        },
    ),
    ("auth_on_publish", MESSAGE, MESSAGE_WIRE),
    (
        "auth_on_publish_m5",
        {**MESSAGE, "properties": PUBLISH_PROPS},
        {**MESSAGE_WIRE, "properties": PUBLISH_PROPS_WIRE},
    ),
    ("on_publish", MESSAGE, MESSAGE_WIRE),
    (
        "on_publish_m5",
        {**MESSAGE, "properties": {}},
        {**MESSAGE_WIRE, "properties": {}},
    ),
    (
        "auth_on_subscribe",
        {**SUBSCRIBER, "topics": [("a/+", 1), ("$share/g/b/#", 2)]},
        {**SUBSCRIBER, "topics": [{"topic": "a/+", "qos": 1}, {"topic": "$share/g/b/#", "qos": 2}]},
    ),
    (
        "auth_on_subscribe_m5",
        {
            **SUBSCRIBER,
            "topics": [
                ("a/+", 1, SUB_OPTIONS),
                ("b", 0, {"no_local": False, "rap": True, "retain_handling": "dont_send"}),
            ],
            "properties": {"p_subscription_id": [7], "p_user_property": [("x", "y")]},
        },
        {
            **SUBSCRIBER,
            "topics": [
                {
                    "topic": "a/+",
                    "qos": 1,
                    "no_local": True,
                    "rap": False,
                    "retain_handling": "send_if_new_sub",
                },
                {
                    "topic": "b",
                    "qos": 0,
                    "no_local": False,
                    "rap": True,
                    "retain_handling": "dont_send",
                },
            ],
            "properties": {
                "p_subscription_id": [7],
                "p_user_property": [{"key": b64(b"x"), "val": b64(b"y")}],
            },
        },
    ),
    (
        "on_subscribe",
        {**SUBSCRIBER, "topics": [("a/+", 1), ("forbidden", 128)]},
        {**SUBSCRIBER, "topics": [{"topic": "a/+", "qos": 1}, {"topic": "forbidden", "qos": 128}]},
    ),
    (
        "on_subscribe_m5",
        {
            **SUBSCRIBER,
            "topics": [("a/+", 2, SUB_OPTIONS), ("forbidden", 135, None)],
            "properties": {},
        },
        {
            **SUBSCRIBER,
            "topics": [
                {
                    "topic": "a/+",
                    "qos": 2,
                    "no_local": True,
                    "rap": False,
                    "retain_handling": "send_if_new_sub",
                },
                {"topic": "forbidden", "qos": 135},
            ],
            "properties": {},
        },
    ),
    (
        "on_unsubscribe",
        {**SUBSCRIBER, "topics": ["a/+", "b/#"]},
        {**SUBSCRIBER, "topics": ["a/+", "b/#"]},
    ),
    (
        "on_unsubscribe_m5",
        {**SUBSCRIBER, "topics": ["a/+"], "properties": {"p_user_property": [("k", "v")]}},
        {
            **SUBSCRIBER,
            "topics": ["a/+"],
            "properties": {"p_user_property": [{"key": b64(b"k"), "val": b64(b"v")}]},
        },
    ),
    # VerneMQ sends an (empty) properties object for MQTT 3 deliveries too.
    ("on_deliver", MESSAGE, {**MESSAGE_WIRE, "properties": {}}),
    (
        "on_deliver_m5",
        {**MESSAGE, "properties": PUBLISH_PROPS},
        {**MESSAGE_WIRE, "properties": PUBLISH_PROPS_WIRE},
    ),
    (
        "on_auth_m5",
        {
            **SUBSCRIBER,
            "properties": {"p_authentication_method": "SCRAM-SHA-1", "p_authentication_data": CERT},
        },
        {
            **SUBSCRIBER,
            "properties": {
                "p_authentication_method": "SCRAM-SHA-1",
                "p_authentication_data": b64(CERT),
            },
        },
    ),
    (
        "on_offline_message",
        {k: MESSAGE[k] for k in ("mountpoint", "client_id", "qos", "topic", "payload", "retain")},
        {
            k: MESSAGE_WIRE[k]
            for k in ("mountpoint", "client_id", "qos", "topic", "payload", "retain")
        },
    ),
    (
        "on_client_wakeup",
        {"mountpoint": "", "client_id": "c"},
        {"mountpoint": "", "client_id": "c"},
    ),
    (
        "on_client_offline",
        {"mountpoint": "m", "client_id": "c"},
        {"mountpoint": "m", "client_id": "c"},
    ),
    ("on_client_gone", {"mountpoint": "", "client_id": "c"}, {"mountpoint": "", "client_id": "c"}),
    (
        "on_session_expired",
        {"mountpoint": "", "client_id": "c"},
        {"mountpoint": "", "client_id": "c"},
    ),
]


def _ids() -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for hook, _, _ in CASES:
        seen[hook] = seen.get(hook, 0) + 1
        out.append(f"{hook}-{seen[hook]}")
    return out


@pytest.mark.parametrize(("hook", "args", "expected"), CASES, ids=_ids())
async def test_request_body_and_headers(
    webhooks: Any, hook: str, args: dict[str, Any], expected: dict[str, Any], plugin: Any
) -> None:
    async with open_http_server() as server, webhooks() as runtime:
        await runtime.register(hook, server.url(f"/{hook}"))
        await getattr(plugin, hook)(**args)
        [request] = server.requests
        assert request.method == "POST"
        assert request.path == f"/{hook}"
        assert request.header("content-type") == "application/json"
        assert request.header("vernemq-hook") == hook
        assert request.header("connection") is None  # keep-alive
        body = request.json()
        assert body == expected
        assert list(body) == list(expected)  # VerneMQ's field order
        assert b'": ' not in request.body and b', "' not in request.body  # compact JSON


async def test_base64encode_off_sends_payload_and_cert_as_text(
    webhooks: Any, conf: Any, plugin: Any
) -> None:
    async def handler(request: Request) -> Response:
        return Response.json({"result": "ok"})

    async with open_http_server(handler) as server:
        text = conf(
            "vmq_webhooks.reg.base64encode = off",
            "webhooks.pub.base64payload = false",
            reg=f"auth_on_register {server.url('/reg')}",
            pub=f"auth_on_publish_m5 {server.url('/pub')}",
        )
        async with webhooks(text):
            await plugin.auth_on_register(**{**REGISTER_V3, "client_cert": b"CERT-TEXT"})
            await plugin.auth_on_publish_m5(
                **{**MESSAGE, "payload": b"plain", "properties": {"p_user_property": [("k", "v")]}}
            )
        reg, pub = (r.json() for r in server.requests)
        assert reg["client_cert"] == "CERT-TEXT"
        assert pub["payload"] == "plain"
        # User properties are base64 whatever base64encode says (spec 3.2).
        assert pub["properties"]["p_user_property"] == [{"key": b64(b"k"), "val": b64(b"v")}]


async def test_no_payload_omits_payload_for_auth_on_publish_only(
    webhooks: Any, conf: Any, plugin: Any
) -> None:
    async with open_http_server() as server:
        text = conf(
            "vmq_webhooks.a.no_payload = on",
            "vmq_webhooks.b.no_payload = on",
            a=f"auth_on_publish {server.url('/a')}",
            b=f"on_publish {server.url('/b')}",
        )
        async with webhooks(text):
            await plugin.auth_on_publish(**MESSAGE)
            await plugin.on_publish(**MESSAGE)
        a, b = (r.json() for r in server.requests)
        assert "payload" not in a
        assert list(a) == ["username", "mountpoint", "client_id", "qos", "topic", "retain"]
        assert b["payload"] == b64(PAYLOAD)


async def test_non_utf8_password_is_sent_with_replacement_characters(
    webhooks: Any, plugin: Any
) -> None:
    async with open_http_server() as server, webhooks() as runtime:
        await runtime.register("auth_on_register", server.url("/"))
        await plugin.auth_on_register(**{**REGISTER_V3, "password": b"pw\xff"})
        assert server.requests[0].json()["password"] == "pw\ufffd"
