"""Calling several webhooks: order, next, failures, timeouts, cancellation, topic filters,
active hooks, the management API and the per-endpoint keep-alive pools."""

from __future__ import annotations

import socket
from functools import partial
from typing import Any

import pytest
import structlog
import trio
import trio.testing

from plugin_host import Deny
from plugin_host.testing.http_server import Request, Response, open_http_server
from plugin_host_webhooks.runtime import WebhookError


def answers(**by_path: Any) -> Any:
    """A handler answering each path with its JSON (a dict) or Response."""

    async def handler(request: Request) -> Response:
        answer = by_path[request.path.strip("/")]
        return answer if isinstance(answer, Response) else Response.json(answer)

    return handler


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_webhooks_are_called_in_name_order_and_next_moves_on(
    webhooks: Any, conf: Any, args: Any, plugin: Any
) -> None:
    handler = answers(a={"result": "next"}, b={"result": "next"}, c={"result": "ok"}, d={})
    async with open_http_server(handler) as server:
        # Declared out of order: VerneMQ registers webhooks sorted by name.
        text = conf(
            c=f"auth_on_register {server.url('/c')}",
            a=f"auth_on_register {server.url('/a')}",
            d=f"auth_on_register {server.url('/d')}",
            b=f"auth_on_register {server.url('/b')}",
        )
        async with webhooks(text) as runtime:
            assert [row["name"] for row in runtime.show()] == ["a", "b", "c", "d"]
            assert await plugin.auth_on_register(**args.register) is True
        assert [r.path for r in server.requests] == ["/a", "/b", "/c"]


async def test_all_next_is_next(webhooks: Any, conf: Any, args: Any, plugin: Any) -> None:
    async with open_http_server(answers(a={"result": "next"})) as server, webhooks() as runtime:
        await runtime.register("auth_on_register", server.url("/a"))
        assert await plugin.auth_on_register(**args.register) is None


async def test_an_error_stops_the_chain(webhooks: Any, conf: Any, args: Any, plugin: Any) -> None:
    handler = answers(a={"result": {"error": "banned"}}, b={"result": "ok"})
    async with open_http_server(handler) as server:
        text = conf(
            a=f"auth_on_publish {server.url('/a')}", b=f"auth_on_publish {server.url('/b')}"
        )
        async with webhooks(text) as runtime:
            assert await plugin.auth_on_publish(**args.message) == Deny("banned")
            assert runtime.counters["auth_on_publish"].errors == 1
        assert [r.path for r in server.requests] == ["/a"]


async def test_runtime_registrations_come_after_configured_ones(
    webhooks: Any, conf: Any, args: Any, plugin: Any
) -> None:
    handler = answers(z={"result": "next"}, a={"result": "ok"})
    async with open_http_server(handler) as server:
        async with webhooks(conf(z=f"auth_on_register {server.url('/z')}")) as runtime:
            await runtime.register("auth_on_register", server.url("/a"))
            assert await plugin.auth_on_register(**args.register) is True
        assert [r.path for r in server.requests] == ["/z", "/a"]


async def test_notifications_reach_every_endpoint_and_failures_are_counted(
    webhooks: Any, conf: Any, args: Any, plugin: Any
) -> None:
    handler = answers(a=Response(status=503), b={}, c=Response(body=b"not json"))
    async with open_http_server(handler) as server:
        text = conf(
            a=f"on_publish {server.url('/a')}",
            b=f"on_publish {server.url('/b')}",
            c=f"on_publish {server.url('/c')}",
        )
        async with webhooks(text) as runtime:
            with structlog.testing.capture_logs() as logs:
                assert await plugin.on_publish(**args.message) is None
            counters = runtime.counters["on_publish"]
            assert (counters.requests, counters.errors) == (3, 2)
            failed = [e for e in logs if e["event"] == "webhook_failed"]
            assert [(e["endpoint"], e["outcome"]) for e in failed] == [
                (server.url("/a"), "ignored"),
                (server.url("/c"), "ignored"),
            ]
            assert runtime.stats()["on_publish"]["bytes_sent"] == counters.bytes_sent > 0
        assert [r.path for r in server.requests] == ["/a", "/b", "/c"]


async def test_timeout_denies_and_is_counted(
    webhooks: Any, conf: Any, args: Any, plugin: Any
) -> None:
    release = trio.Event()

    async def slow(request: Request) -> Response:
        await release.wait()
        return Response.json({"result": "ok"})

    async with open_http_server(slow) as server:
        text = conf(
            "vmq_webhooks.a.response_timeout = 100ms", a=f"auth_on_register {server.url('/a')}"
        )
        async with webhooks(text) as runtime:
            with structlog.testing.capture_logs() as logs:
                start = trio.current_time()
                assert await plugin.auth_on_register(**args.register) == Deny("timeout")
                assert 0.1 <= trio.current_time() - start < 3
            [line] = [e for e in logs if e["event"] == "webhook_failed"]
            assert line["kind"] == "timeout"
            assert line["reason"] == "timed out after 0.1s waiting for the response"
            counters = runtime.counters["auth_on_register"]
            assert (counters.requests, counters.timeouts, counters.errors) == (1, 1, 1)
            assert counters.elapsed >= 0.1
            release.set()


async def test_unreachable_endpoint_denies_with_the_reason(
    webhooks: Any, conf: Any, args: Any, plugin: Any
) -> None:
    url = f"http://127.0.0.1:{free_port()}/auth"
    async with webhooks(conf(a=f"auth_on_register {url}")):
        with structlog.testing.capture_logs() as logs:
            assert await plugin.auth_on_register(**args.register) == Deny("connection_failed")
    [line] = [e for e in logs if e["event"] == "webhook_failed"]
    assert line["endpoint"] == url
    assert line["kind"] == "connect"
    assert "Connection refused" in line["reason"]


async def test_failure_log_lines_are_rate_limited_per_endpoint(
    webhooks: Any, conf: Any, args: Any, mock_clock: trio.testing.MockClock, plugin: Any
) -> None:
    url = f"http://127.0.0.1:{free_port()}/auth"
    async with webhooks(conf(a=f"auth_on_publish {url}")) as runtime:
        with structlog.testing.capture_logs() as logs:
            for _ in range(5):
                assert await plugin.auth_on_publish(**args.message) == Deny("connection_failed")
            mock_clock.jump(1.0)
            assert await plugin.auth_on_publish(**args.message) == Deny("connection_failed")
        assert runtime.counters["auth_on_publish"].errors == 6
    # One line per second: the failures in between are counted in the next line.
    lines = [e for e in logs if e["event"] == "webhook_failed"]
    assert [line["suppressed"] for line in lines] == [0, 4]


async def test_cancelled_auth_call_propagates_and_is_counted(
    webhooks: Any, conf: Any, args: Any, plugin: Any
) -> None:
    arrived = trio.Event()

    async def slow(request: Request) -> Response:
        arrived.set()
        await trio.sleep_forever()
        raise AssertionError

    async with open_http_server(slow) as server, webhooks() as runtime:
        await runtime.register("auth_on_register", server.url("/a"))
        # What the broker does when the client's socket closes during authentication.
        with trio.CancelScope() as client_scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: plugin.auth_on_register(**args.register))
                with trio.fail_after(5):
                    await arrived.wait()
                client_scope.cancel()
        assert client_scope.cancelled_caught
        with trio.fail_after(5):  # the HTTP request was aborted, not left running
            await server.wait_until(lambda: len(server.abandoned) == 1)
        counters = runtime.counters["auth_on_register"]
        assert (counters.requests, counters.cancelled, counters.errors) == (1, 1, 0)
        # The pool is intact: the abandoned connection was closed, a new one serves.
        server.handler = answers(a={"result": "ok"})
        assert await plugin.auth_on_register(**args.register) is True


async def test_topic_filter_limits_calls_to_matching_topics(
    webhooks: Any, conf: Any, args: Any, plugin: Any
) -> None:
    handler = answers(f={"result": {"error": "filtered"}}, all={"result": "ok"})
    async with open_http_server(handler) as server:
        text = conf(
            "vmq_webhooks.a.topic_filter = sensors/+/temp",
            'vmq_webhooks.n.topic_filter = "logs/#"',  # a bare # starts a comment
            a=f"auth_on_publish {server.url('/f')}",
            b=f"auth_on_publish {server.url('/all')}",
            n=f"on_publish {server.url('/all')}",
        )
        async with webhooks(text):
            msg = {**args.message, "topic": "sensors/kitchen/temp"}
            assert await plugin.auth_on_publish(**msg) == Deny("filtered")
            assert await plugin.auth_on_publish(**{**msg, "topic": "sensors/kitchen"}) is True
            await plugin.on_publish(**{**msg, "topic": "logs"})
            await plugin.on_publish(**{**msg, "topic": "logs/x/y"})
            await plugin.on_publish(**{**msg, "topic": "other"})
        assert [(r.path, r.json()["topic"]) for r in server.requests] == [
            ("/f", "sensors/kitchen/temp"),
            ("/all", "sensors/kitchen"),
            ("/all", "logs"),
            ("/all", "logs/x/y"),
        ]


async def test_active_hooks_follow_registrations(
    webhooks: Any, conf: Any, host: Any, args: Any, plugin: Any
) -> None:
    async with open_http_server() as server:
        url = server.url("/")
        async with webhooks(conf(a=f"auth_on_register {url}")) as runtime:
            assert plugin.plugin_host_active_hooks() == {"auth_on_register"}
            assert host.hooks_changed_calls == 0
            await runtime.register("on_publish", url)
            assert plugin.plugin_host_active_hooks() == {"auth_on_register", "on_publish"}
            assert host.hooks_changed_calls == 1
            await runtime.register("on_publish", server.url("/second"))
            assert host.hooks_changed_calls == 1  # the set did not change
            await runtime.deregister("on_publish", url)
            await runtime.deregister("on_publish", server.url("/second"))
            assert plugin.plugin_host_active_hooks() == {"auth_on_register"}
            assert host.hooks_changed_calls == 2
        # Outside the lifespan the plugin answers nothing.
        assert plugin.plugin_host_active_hooks() == frozenset()
        assert await plugin.auth_on_register(**args.register) is None
        with pytest.raises(RuntimeError, match="not running"):
            plugin.runtime()


async def test_management_api(webhooks: Any, plugin: Any) -> None:
    async with open_http_server() as server, webhooks() as runtime:
        assert plugin.runtime() is runtime
        url = server.url("/hook")
        row = await runtime.register(
            "auth_on_publish", url, base64payload=False, no_payload=True, response_timeout=2.5
        )
        assert row == {
            "hook": "auth_on_publish",
            "endpoint": url,
            "name": "",
            "base64payload": False,
            "no_payload": True,
            "response_timeout": 2.5,
            "connect_timeout": None,
            "topic_filter": None,
        }
        assert runtime.show() == [row]
        with pytest.raises(WebhookError) as info:
            await runtime.register("auth_on_publish", url)
        assert info.value.code == "already_registered"
        for bad in (
            {"hook": "on_topic_unsubscribed", "endpoint": url},
            {"hook": "on_publish", "endpoint": "ftp://x/"},
            {"hook": "on_publish", "endpoint": "http:///nohost"},
            {"hook": "on_register", "endpoint": url, "topic_filter": "a/#"},
            {"hook": "on_publish", "endpoint": url, "topic_filter": "a/#/b"},
            {"hook": "on_publish", "endpoint": url, "cafile_typo": "x"},
        ):
            with pytest.raises(WebhookError) as info:
                await runtime.register(**bad)
            assert info.value.code == "invalid"
        with pytest.raises(WebhookError) as info:
            await runtime.deregister("on_publish", url)
        assert info.value.code == "not_found"
        await runtime.deregister("auth_on_publish", url)
        assert runtime.show() == []


async def test_one_keep_alive_pool_per_endpoint(
    webhooks: Any, conf: Any, args: Any, plugin: Any
) -> None:
    async with open_http_server() as server:
        url = server.url("/shared")
        text = conf(a=f"auth_on_publish {url}", b=f"on_publish {url}")
        async with webhooks(text) as runtime:
            for _ in range(20):
                assert await plugin.auth_on_publish(**args.message) is True
                await plugin.on_publish(**args.message)
            assert len(server.requests) == 40
            assert server.connections_opened == 1
            # Deregistering one user of the endpoint keeps its pool open for the other.
            await runtime.deregister("on_publish", url)
            assert await plugin.auth_on_publish(**args.message) is True
            assert server.connections_opened == 1
            await runtime.deregister("auth_on_publish", url)
            with trio.fail_after(5):
                await server.wait_until(lambda: server.connections_open == 0)


async def test_pool_is_bounded_by_pool_max_connections(
    webhooks: Any, conf: Any, args: Any, plugin: Any
) -> None:
    gate = trio.Event()

    async def handler(request: Request) -> Response:
        await gate.wait()
        return Response.json({"result": "ok"})

    async with open_http_server(handler) as server:
        text = conf("vmq_webhooks.pool_max_connections = 2", a=f"auth_on_publish {server.url('/')}")
        async with webhooks(text):
            results: list[Any] = []

            async def publish() -> None:
                results.append(await plugin.auth_on_publish(**args.message))

            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    for _ in range(5):
                        nursery.start_soon(publish)
                    await server.wait_until(lambda: server.connections_opened == 2)
                    await trio.testing.wait_all_tasks_blocked()
                    assert server.connections_opened == 2
                    gate.set()
            assert results == [True] * 5
            assert server.connections_opened == 2


async def test_pool_survives_a_server_that_closes_idle_connections(
    webhooks: Any, conf: Any, args: Any, plugin: Any
) -> None:
    async with open_http_server(idle_timeout=0.05) as server, webhooks() as runtime:
        await runtime.register("auth_on_register", server.url("/"))
        for _ in range(3):
            assert await plugin.auth_on_register(**args.register) is True
            closed = server.connections_closed + 1
            with trio.fail_after(5):
                await server.wait_until(lambda: server.connections_closed >= closed)  # noqa: B023
        assert runtime.counters["auth_on_register"].errors == 0
        assert server.connections_opened == 3


async def test_close_crossing_a_request_is_repeated_on_a_fresh_connection(
    webhooks: Any, conf: Any, args: Any, plugin: Any
) -> None:
    async with open_http_server() as server, webhooks() as runtime:
        await runtime.register("auth_on_register", server.url("/"))
        assert await plugin.auth_on_register(**args.register) is True
        server.drop_reused = 1
        assert await plugin.auth_on_register(**args.register) is True
        assert len(server.dropped) == 1
        assert server.connections_opened == 2
        assert runtime.counters["auth_on_register"].errors == 0


async def test_connect_timeout_fails_fast_on_a_silent_tls_endpoint(
    webhooks: Any, conf: Any, args: Any, plugin: Any
) -> None:
    async def hold_open(stream: trio.SocketStream) -> None:
        async with stream:
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, hold_open, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        text = conf(
            "vmq_webhooks.connect_timeout = 200",
            "vmq_webhooks.a.response_timeout = 30000",
            a=f"auth_on_register https://127.0.0.1:{port}/auth",
        )
        async with webhooks(text) as runtime:
            with structlog.testing.capture_logs() as logs:
                start = trio.current_time()
                assert await plugin.auth_on_register(**args.register) == Deny("timeout")
                assert trio.current_time() - start < 10  # not the 30 s response timeout
            [line] = [e for e in logs if e["event"] == "webhook_failed"]
            assert line["reason"] == "connect timed out after 0.2s during the TLS handshake"
            assert runtime.show()[0]["connect_timeout"] == 0.2
        nursery.cancel_scope.cancel()


async def test_two_plugin_instances_run_side_by_side(conf: Any, args: Any, tmp_path: Any) -> None:
    """No module state: two brokers in one process each get their own webhooks."""
    from plugin_host.config import apply_schema, load_config
    from plugin_host_webhooks.config import schema
    from plugin_host_webhooks.plugin import WebhooksPlugin, plugin_host_plugin

    assert plugin_host_plugin is WebhooksPlugin
    first, second = plugin_host_plugin(), plugin_host_plugin()
    handler = answers(a={"result": "ok"}, b={"result": {"error": "no"}})
    async with open_http_server(handler) as server:
        sections = []
        for name in ("a", "b"):
            path = tmp_path / f"{name}.conf"
            path.write_text(conf(**{name: f"auth_on_register {server.url('/' + name)}"}))
            sections.append(apply_schema(load_config(path).section("webhooks"), schema()))
        host = type("Host", (), {"log": structlog.get_logger(), "hooks_changed": lambda s: None})()
        async with first.lifespan(host, sections[0]), second.lifespan(host, sections[1]):
            assert first.runtime() is not second.runtime()
            assert first.plugin_host_active_hooks() == frozenset({"auth_on_register"})
            assert await first.auth_on_register(**args.register) is True
            assert await second.auth_on_register(**args.register) == Deny("no")
        assert not first.running and not second.running
        with pytest.raises(RuntimeError, match="not running"):
            first.runtime()
