"""End to end: paho-mqtt clients, the real broker, the plugin and real webhook endpoints.

What the broker does with the answers: CONNACK for a denied register (5 for MQTT 3, 0x86 for
MQTT 5), payload/topic rewrites, the SUBACK slot of a rejected topic, the chain order with a
Python plugin by priority, and cancelling the webhook call when the client goes away.
"""

from __future__ import annotations

import base64
from typing import Any

import trio
import trio.testing

from plugin_host import hookimpl
from plugin_host.testing.http_server import Request, Response, open_http_server


def raw_connect(client_id: str, username: str, password: str) -> bytes:
    """An MQTT 3.1.1 CONNECT packet with a user name and password, clean session."""

    def field(text: str) -> bytes:
        data = text.encode()
        return len(data).to_bytes(2, "big") + data

    rest = field("MQTT") + bytes([4, 0xC2, 0, 60]) + field(client_id)
    rest += field(username) + field(password)
    assert len(rest) < 128
    return bytes([0x10, len(rest)]) + rest


async def connack_return_code(address: tuple[str, int], username: str) -> int:
    """The MQTT 3.1.1 CONNACK return code byte for a CONNECT as ``username``."""
    async with await trio.open_tcp_stream(*address) as stream:
        await stream.send_all(raw_connect("raw-" + username, username, "x"))
        data = b""
        with trio.fail_after(10):
            while len(data) < 4:
                chunk = await stream.receive_some()
                assert chunk, "connection closed before CONNACK"
                data += chunk
    assert data[:2] == b"\x20\x02"
    return data[3]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def webhook_lines(**hooks: str) -> str:
    return "".join(
        f"webhooks.{name}.hook = {hook}\nwebhooks.{name}.endpoint = {url}\n"
        for name, (hook, url) in ((n, s.split()) for n, s in hooks.items())
    )


async def test_register_bodies_and_denials_for_mqtt3_and_mqtt5(broker: Any, paho: Any) -> None:
    async def handler(request: Request) -> Response:
        if request.json()["username"] == "mallory":
            return Response.json({"result": {"error": "not_allowed"}})
        return Response.json({"result": "ok"})

    async with open_http_server(handler) as server:
        text = webhook_lines(
            v3=f"auth_on_register {server.url('/v3')}",
            v5=f"auth_on_register_m5 {server.url('/v5')}",
        )
        async with broker(text) as running:
            address = running.address

            def login(client_id: str, username: str, password: str, v5: bool = False) -> Any:
                return paho(address, client_id, v5=v5, username=username, password=password)

            assert await login("alice-3", "alice", "pw3").connect() == 0
            assert await login("alice-5", "alice", "pw5", v5=True).connect() == 0
            # MQTT 3: return code 5 (paho names it "Not authorized"); MQTT 5: 0x86.
            assert await login("mallory-3", "mallory", "x").connect() == "Not authorized"
            assert await connack_return_code(address, "mallory") == 5
            reason = await login("mallory-5", "mallory", "x", v5=True).connect()
            assert reason.value == 0x86

    v3, v5 = server.requests[:2]
    assert v3.header("vernemq-hook") == "auth_on_register"
    body = v3.json()
    assert isinstance(body.pop("peer_port"), int)
    assert body == {
        "peer_addr": "127.0.0.1",
        "mountpoint": "",
        "client_id": "alice-3",
        "username": "alice",
        "password": "pw3",
        "clean_session": True,
    }
    assert v5.header("vernemq-hook") == "auth_on_register_m5"
    body = v5.json()
    assert list(body) == [
        "peer_addr",
        "peer_port",
        "mountpoint",
        "client_id",
        "username",
        "password",
        "clean_start",
        "properties",
    ]
    assert (body["client_id"], body["password"], body["clean_start"]) == ("alice-5", "pw5", True)
    assert isinstance(body["properties"], dict)


async def test_publish_rewrites_reach_subscribers(broker: Any, paho: Any) -> None:
    async def handler(request: Request) -> Response:
        body = request.json()
        assert base64.b64decode(body["payload"]) == b"original"
        modifiers: dict[str, Any] = {"topic": "out/" + body["topic"], "payload": b64(b"rewritten")}
        if request.header("vernemq-hook") == "auth_on_publish_m5":
            modifiers["properties"] = {
                "p_user_property": [{"key": b64(b"by"), "val": b64(b"hook")}]
            }
        return Response.json({"result": "ok", "modifiers": modifiers})

    async with open_http_server(handler) as server:
        text = "allow_anonymous = on\n" + webhook_lines(
            v3=f"auth_on_publish {server.url('/')}", v5=f"auth_on_publish_m5 {server.url('/')}"
        )
        async with broker(text) as running:
            subscriber = paho(running.address, "sub", v5=True)
            assert await subscriber.connect() == 0
            assert await subscriber.subscribe([("out/#", 1)]) == [1]
            for client_id, v5 in (("pub-3", False), ("pub-5", True)):
                publisher = paho(running.address, client_id, v5=v5)
                await publisher.connect()
                await publisher.publish(f"in/{client_id}", b"original", qos=1)
                message = await subscriber.receive()
                assert (message.topic, message.payload) == (f"out/in/{client_id}", b"rewritten")
                user_properties = getattr(message.properties, "UserProperty", [])
                assert user_properties == ([("by", "hook")] if v5 else [])


async def test_rejected_topic_gets_its_suback_slot(broker: Any, paho: Any) -> None:
    async def handler(request: Request) -> Response:
        if request.header("vernemq-hook") == "auth_on_subscribe":
            topics = [{"topic": "allowed", "qos": 1}, {"topic": "secret", "qos": 128}]
            return Response.json({"result": "ok", "topics": topics})
        topics = [{"topic": "allowed", "qos": 1}, {"topic": "secret", "qos": 135}]
        return Response.json({"result": "ok", "modifiers": {"topics": topics}})

    async with open_http_server(handler) as server:
        text = "allow_anonymous = on\n" + webhook_lines(
            v3=f"auth_on_subscribe {server.url('/')}", v5=f"auth_on_subscribe_m5 {server.url('/')}"
        )
        async with broker(text) as running:
            v3 = paho(running.address, "s3")
            await v3.connect()
            assert await v3.subscribe([("allowed", 1), ("secret", 1)]) == [1, 0x80]
            v5 = paho(running.address, "s5", v5=True)
            await v5.connect()
            assert await v5.subscribe([("allowed", 1), ("secret", 1)]) == [1, 0x87]


class Gate:
    """A Python plugin in the same chain: decides for "vip", says next for everyone else."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def auth_on_register(self, username: str | None) -> bool | None:
        self.calls.append(username or "")
        return True if username == "vip" else None


async def test_chain_order_with_a_python_plugin_follows_priorities(broker: Any, paho: Any) -> None:
    async def handler(request: Request) -> Response:
        if request.json()["username"] == "guest":
            return Response.json({"result": "next"})
        return Response.json({"result": {"error": "not_allowed"}})

    async with open_http_server(handler) as server:
        hooks = webhook_lines(a=f"auth_on_register {server.url('/')}")
        # The Python plugin first: it lets "vip" in without asking the webhook.
        gate = Gate()
        text = "plugins.gate.priority = 1\nplugins.webhooks.priority = 2\n" + hooks
        async with broker(text, plugins={"gate": gate}) as running:
            assert await paho(running.address, "c1", username="vip", password="x").connect() == 0
            assert await connack_return_code(running.address, "other") == 5
        assert [r.json()["username"] for r in server.requests] == ["other"]
        assert gate.calls == ["vip", "other"]

        # The webhook first: "next" passes the decision on to the Python plugin.
        gate = Gate()
        text = "plugins.gate.priority = 2\nplugins.webhooks.priority = 1\n" + hooks
        async with broker(text, plugins={"gate": gate}) as running:
            assert await connack_return_code(running.address, "vip") == 5
            # guest: webhook says next, the gate says next too: the chain is exhausted
            assert await connack_return_code(running.address, "guest") == 5
        assert gate.calls == ["guest"]


async def test_auth_call_is_cancelled_when_the_client_goes_away(broker: Any, plugin: Any) -> None:
    arrived = trio.Event()

    async def never(request: Request) -> Response:
        arrived.set()
        await trio.sleep_forever()
        raise AssertionError

    async with open_http_server(never) as server:
        async with broker(webhook_lines(a=f"auth_on_register {server.url('/')}")) as running:
            client = await trio.open_tcp_stream(*running.address)
            await client.send_all(raw_connect("c1", "u", "p"))
            with trio.fail_after(10):
                # The webhook call is out and waiting; the client hangs up.
                await arrived.wait()
                await client.aclose()
                # The broker cancels the auth call, which closes the HTTP request.
                await server.wait_until(lambda: len(server.abandoned) == 1)
            await trio.testing.wait_all_tasks_blocked()
            counters = plugin.runtime().counters["auth_on_register"]
            assert (counters.requests, counters.cancelled, counters.errors) == (1, 1, 0)
        assert server.abandoned[0].json()["client_id"] == "c1"
