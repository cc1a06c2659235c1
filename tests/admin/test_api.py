"""The admin HTTP API itself: authentication, error answers, /health (over real sockets)."""

from __future__ import annotations

import json
from typing import Any

from plugin_host.testing import open_client


async def test_requests_without_or_with_a_wrong_key_are_refused(
    admin_broker: Any, api_key: str
) -> None:
    async with admin_broker() as admin:
        missing = await admin.request("GET", "/api/v1/sessions", key=None)
        wrong = await admin.request("GET", "/api/v1/sessions", key="not-the-key")
        wrong_header = await admin.request(
            "GET", "/api/v1/sessions", key=None, headers=[("x-api-key", "nope")]
        )
        basic = await admin.request(
            "GET", "/api/v1/status", key=None, headers=[("authorization", f"Basic {api_key}")]
        )
        prefix = await admin.request("GET", "/api/v1/status", key=api_key[:-1])
        by_header = await admin.request(
            "GET", "/api/v1/status", key=None, headers=[("x-api-key", api_key)]
        )
        by_bearer = await admin.request("GET", "/api/v1/status")
        health = await admin.request("GET", "/health", key=None)
        metrics = await admin.request("GET", "/metrics", key=None)
    for response in (missing, wrong, wrong_header, basic, prefix):
        assert response.status == 401, response.body
        assert json.loads(response.body)["error"] == "unauthorized"
        assert response.header("www-authenticate") == "Bearer"
        assert api_key.encode() not in response.body
    assert json.loads(missing.body)["message"].startswith("missing API key")
    assert json.loads(wrong.body)["message"] == "wrong API key"
    assert by_header.status == by_bearer.status == 200
    assert json.loads(by_bearer.body)["node"] == "plugin-host"
    assert health.status == metrics.status == 200


async def test_without_a_configured_key_only_health_and_metrics_are_served(
    admin_broker: Any,
) -> None:
    async with admin_broker(api_key=None) as admin:
        api = await admin.request("GET", "/api/v1/status", key="anything")
        health = await admin.request("GET", "/health", key=None)
        metrics = await admin.request("GET", "/metrics", key=None)
    assert api.status == 403
    body = json.loads(api.body)
    assert body["error"] == "admin_api_disabled"
    assert "admin.api_key" in body["message"]
    assert health.status == 200
    assert metrics.status == 200


async def test_clean_json_errors(admin_broker: Any) -> None:
    async with admin_broker() as admin:
        answers = {
            "unknown path": await admin.request("GET", "/api/v1/nothing"),
            "outside api": await admin.request("GET", "/nothing", key=None),
            "method": await admin.request("DELETE", "/api/v1/sessions"),
            "bad json": await admin.request(
                "POST", "/api/v1/sessions/x/disconnect", raw_body=b"{not json"
            ),
            "not an object": await admin.request(
                "POST", "/api/v1/sessions/x/disconnect", raw_body=b"[1]"
            ),
            "unknown session": await admin.request("GET", "/api/v1/sessions/ghost"),
            "disconnect unknown": await admin.request("POST", "/api/v1/sessions/ghost/disconnect"),
            "bad limit": await admin.request("GET", "/api/v1/sessions?limit=many"),
            "bad flag": await admin.request("GET", "/api/v1/sessions?online=perhaps"),
            "no webhooks plugin": await admin.request("GET", "/api/v1/webhooks"),
            "no scripts plugin": await admin.request("POST", "/api/v1/scripts/reload"),
            "missing hook": await admin.request("POST", "/api/v1/webhooks", body={"x": 1}),
        }
    expected = {
        "unknown path": (404, "not_found"),
        "outside api": (404, "not_found"),
        "method": (405, "method_not_allowed"),
        "bad json": (400, "invalid_json"),
        "not an object": (400, "invalid_json"),
        "unknown session": (404, "not_found"),
        "disconnect unknown": (404, "not_found"),
        "bad limit": (400, "invalid"),
        "bad flag": (400, "invalid"),
        "no webhooks plugin": (404, "plugin_not_enabled"),
        "no scripts plugin": (404, "plugin_not_enabled"),
        "missing hook": (400, "invalid"),
    }
    assert answers["method"].header("allow") == "GET"
    for what, (status, code) in expected.items():
        response = answers[what]
        assert response.status == status, (what, response.status, response.body)
        assert response.header("content-type") == "application/json", what
        body = json.loads(response.body)
        assert body["error"] == code, (what, body)
        assert body["message"], what


async def test_sessions_filters_and_client_ids_with_slashes(admin_broker: Any) -> None:
    async with (
        admin_broker() as admin,
        open_client(admin.address, client_id="room/1") as one,
        open_client(admin.address, client_id="two", clean_start=False) as two,
    ):
        await one.subscribe([("a/#", 1), ("b", 0)])
        await two.disconnect()
        every = await admin.api("GET", "/api/v1/sessions")
        online = await admin.api("GET", "/api/v1/sessions?online=true")
        offline = await admin.api("GET", "/api/v1/sessions?online=false")
        limited = await admin.api("GET", "/api/v1/sessions?limit=1")
        single = await admin.api("GET", "/api/v1/sessions/room%2F1")
    assert [s["client_id"] for s in every] == ["room/1", "two"]
    assert [s["client_id"] for s in online] == ["room/1"]
    assert [s["client_id"] for s in offline] == ["two"]
    assert len(limited) == 1
    assert single["client_id"] == "room/1"
    assert single["online"] is True
    assert single["subscriptions"] == [{"topic": "a/#", "qos": 1}, {"topic": "b", "qos": 0}]
    assert single["peer_addr"] == "127.0.0.1"


async def test_health_reports_every_mqtt_listener(admin_broker: Any) -> None:
    async with admin_broker("listener.tcp.second = 127.0.0.1:0\n") as admin:
        response = await admin.request("GET", "/health", key=None)
    body = json.loads(response.body)
    assert response.status == 200
    assert body["status"] == "ok"
    assert body["listeners"] == {"tcp.default": "up", "tcp.second": "up"}
