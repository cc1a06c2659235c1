"""The response cache (spec 3.6, fixed as spec section 6 asks): what is cached, for how long,
the key, the size bound, the background sweeper and the counters.

Time is trio's MockClock (pytest-trio's ``mock_clock`` fixture): it only moves when a test
jumps it, so expiry is checked to the exact second without sleeping.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio.testing

from plugin_host import Deny
from plugin_host.testing.http_server import Request, Response, open_http_server
from plugin_host_webhooks.cache import max_age


class Answer:
    """A handler whose answer and Cache-Control header the test changes as it goes."""

    def __init__(self, result: Any = None, cache_control: str | None = "max-age=10") -> None:
        self.result = result if result is not None else {"result": "ok"}
        self.cache_control = cache_control

    async def __call__(self, request: Request) -> Response:
        headers = [("Cache-Control", self.cache_control)] if self.cache_control else []
        return Response(body=json.dumps(self.result).encode(), headers=headers)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("max-age=10", 10),
        ("public, MAX-AGE=3600", 3600),
        ('max-age="7"', 7),
        ("max-age=0", None),
        ("max-age=10, no-store", None),
        ("no-cache, max-age=10", None),
        ("max-age=abc", None),
        ("max-age=-1", None),
        ("private", None),
        ("", None),
        (None, None),
    ],
)
def test_max_age_parsing(header: str | None, seconds: int | None) -> None:
    assert max_age(header) == seconds


async def test_ok_results_are_cached_for_max_age_seconds(
    webhooks: Any, mock_clock: trio.testing.MockClock, args: Any, plugin: Any
) -> None:
    async with open_http_server(Answer()) as server, webhooks() as runtime:
        await runtime.register("auth_on_publish", server.url("/"))
        assert await plugin.auth_on_publish(**args.message) is True
        mock_clock.jump(9.9)
        assert await plugin.auth_on_publish(**args.message) is True
        assert len(server.requests) == 1
        mock_clock.jump(0.1)  # exactly 10 s after the response: expired
        assert await plugin.auth_on_publish(**args.message) is True
        assert len(server.requests) == 2


async def test_cache_key_ignores_payload_and_peer_port_only(
    webhooks: Any, args: Any, plugin: Any
) -> None:
    async with open_http_server(Answer()) as server, webhooks() as runtime:
        await runtime.register("auth_on_publish", server.url("/pub"))
        await runtime.register("auth_on_register", server.url("/reg"))
        await plugin.auth_on_publish(**args.message)
        await plugin.auth_on_publish(**{**args.message, "payload": b"other payload"})
        assert len(server.requests) == 1
        for change in (
            {"topic": "a/c"},
            {"qos": 0},
            {"retain": True},
            {"client_id": "c2"},
            {"username": "v"},
            {"mountpoint": "m"},
        ):
            await plugin.auth_on_publish(**{**args.message, **change})
        assert len(server.requests) == 7

        await plugin.auth_on_register(**args.register)
        await plugin.auth_on_register(**{**args.register, "peer_port": 6000})
        assert len(server.requests) == 8
        for change in ({"peer_addr": "10.0.0.1"}, {"password": b"other"}, {"clean_session": False}):
            await plugin.auth_on_register(**{**args.register, **change})
        assert len(server.requests) == 11


@pytest.mark.parametrize(
    "cache_control", ["no-store, max-age=60", "max-age=60, no-cache", "max-age=0", None]
)
async def test_responses_that_forbid_caching_are_not_cached(
    webhooks: Any, cache_control: str | None, args: Any, plugin: Any
) -> None:
    answer = Answer(cache_control=cache_control)
    async with open_http_server(answer) as server, webhooks() as runtime:
        await runtime.register("auth_on_publish", server.url("/"))
        for _ in range(3):
            assert await plugin.auth_on_publish(**args.message) is True
        assert len(server.requests) == 3
        assert len(runtime.cache) == 0


@pytest.mark.parametrize(
    ("result", "expected"),
    [({"result": "next"}, None), ({"result": {"error": "no"}}, Deny("no"))],
)
async def test_only_ok_results_are_cached(
    webhooks: Any, result: Any, expected: Any, args: Any, plugin: Any
) -> None:
    async with open_http_server(Answer(result)) as server, webhooks() as runtime:
        await runtime.register("auth_on_register", server.url("/"))
        assert await plugin.auth_on_register(**args.register) == expected
        assert await plugin.auth_on_register(**args.register) == expected
        assert len(server.requests) == 2


async def test_only_auth_hooks_are_cached(webhooks: Any, args: Any, plugin: Any) -> None:
    async with open_http_server(Answer()) as server, webhooks() as runtime:
        await runtime.register("on_deliver", server.url("/"))
        await runtime.register("auth_on_subscribe", server.url("/"))
        subscribe = {"username": "u", "mountpoint": "", "client_id": "c", "topics": [("t", 1)]}
        for _ in range(2):
            await plugin.on_deliver(**args.message)
            await plugin.auth_on_subscribe(**subscribe)
        assert [r.header("vernemq-hook") for r in server.requests] == [
            "on_deliver",
            "auth_on_subscribe",
            "on_deliver",
        ]


async def test_modifiers_are_cached_without_the_payload(
    webhooks: Any, args: Any, plugin: Any
) -> None:
    answer = Answer({"result": "ok", "modifiers": {"payload": "bmV3", "qos": 0}})
    async with open_http_server(answer) as server, webhooks() as runtime:
        await runtime.register("auth_on_publish", server.url("/"))
        assert await plugin.auth_on_publish(**args.message) == {"payload": b"new", "qos": 0}
        # A payload computed for another message is never replayed.
        assert await plugin.auth_on_publish(**args.message) == {"qos": 0}
        answer.result = {"result": "ok", "modifiers": {"payload": "bmV3"}}
        assert await plugin.auth_on_publish(**{**args.message, "topic": "t2"}) == {
            "payload": b"new"
        }
        assert await plugin.auth_on_publish(**{**args.message, "topic": "t2"}) is True
        assert len(server.requests) == 2


async def test_size_bound_evicts_the_least_recently_used(
    webhooks: Any, conf: Any, args: Any, plugin: Any
) -> None:
    async with open_http_server(Answer()) as server:
        text = conf("vmq_webhooks.cache_max_entries = 2", a=f"auth_on_register {server.url('/')}")
        async with webhooks(text) as runtime:

            async def connect(client_id: str) -> None:
                await plugin.auth_on_register(**{**args.register, "client_id": client_id})

            await connect("c1")
            await connect("c2")
            await connect("c1")  # hit: c1 is now the most recently used
            await connect("c3")  # evicts c2
            assert len(runtime.cache) == 2
            assert len(server.requests) == 3
            await connect("c1")  # still cached
            assert len(server.requests) == 3
            await connect("c2")  # evicted: asked again
            assert len(server.requests) == 4


async def test_sweeper_removes_expired_entries_in_the_background(
    webhooks: Any,
    conf: Any,
    mock_clock: trio.testing.MockClock,
    args: Any,
    plugin: Any,
) -> None:
    answer = Answer(cache_control="max-age=5")
    async with open_http_server(answer) as server:
        text = conf(
            "vmq_webhooks.cache_sweep_interval = 1", a=f"auth_on_register {server.url('/')}"
        )
        async with webhooks(text) as runtime:
            await plugin.auth_on_register(**args.register)
            answer.cache_control = "max-age=60"
            await plugin.auth_on_register(**{**args.register, "client_id": "long-lived"})
            assert len(runtime.cache) == 2
            mock_clock.jump(5.5)
            await trio.testing.wait_all_tasks_blocked()
            # No lookup happened: the background sweeper dropped the expired entry.
            assert len(runtime.cache) == 1
            assert runtime.cache_show()[0]["entries"] == 1


async def test_cache_show_reset_and_clear(webhooks: Any, args: Any, plugin: Any) -> None:
    async with open_http_server(Answer()) as server, webhooks() as runtime:
        url = server.url("/")
        await runtime.register("auth_on_register", url)
        await runtime.register("auth_on_publish", url)
        for _ in range(3):
            await plugin.auth_on_register(**args.register)
        await plugin.auth_on_publish(**args.message)
        assert runtime.cache_show(reset=True) == [
            {"endpoint": url, "hook": "auth_on_publish", "hits": 0, "misses": 1, "entries": 1},
            {"endpoint": url, "hook": "auth_on_register", "hits": 2, "misses": 1, "entries": 1},
        ]
        assert [(r["hits"], r["misses"], r["entries"]) for r in runtime.cache_show()] == [
            (0, 0, 1),
            (0, 0, 1),
        ]
        runtime.cache_clear()
        assert len(runtime.cache) == 0
        await plugin.auth_on_register(**args.register)
        assert len(server.requests) == 3
        # Deregistering forgets that endpoint's entries and counters.
        assert [row["hook"] for row in runtime.cache_show()] == ["auth_on_register"]
        await runtime.deregister("auth_on_register", url)
        assert runtime.cache_show() == []
        await runtime.register("auth_on_register", url)
        await plugin.auth_on_register(**args.register)
        assert len(server.requests) == 4
