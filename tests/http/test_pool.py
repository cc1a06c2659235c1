"""HTTPPool against a real trio/h11 server: keep-alive, bounds, stale connections, errors."""

from __future__ import annotations

import socket
from functools import partial

import pytest
import trio
import trio.testing

from plugin_host.http import HTTPPool, HTTPRequestError, PoolSet
from plugin_host.testing.http_server import Request, Response, open_http_server

JSON = [("content-type", "application/json")]


async def test_request_and_response_round_trip() -> None:
    async def handler(request: Request) -> Response:
        return Response(
            status=201,
            body=request.body[::-1],
            headers=[("X-Echo", request.header("x-test") or ""), ("Set-Cookie", "a=1")],
        )

    async with open_http_server(handler) as server, HTTPPool(size=2) as pool:
        response = await pool.request(
            "POST", server.url("/hook?x=1"), body=b"abc", headers={"x-test": "yes"}
        )
        assert response.status == 201
        assert response.body == b"cba"
        assert response.header("X-ECHO") == "yes"
        assert response.header("missing") is None
        received = server.requests[0]
        assert received.method == "POST"
        assert received.target == "/hook?x=1"
        assert received.header("content-length") == "3"
        assert received.header("connection") is None  # keep-alive is HTTP/1.1's default
        # No cookie jar: a Set-Cookie never comes back on later requests.
        await pool.request("GET", server.url("/"))
        assert server.requests[1].header("cookie") is None


async def test_keep_alive_reuses_one_connection() -> None:
    async with open_http_server() as server, HTTPPool(size=10) as pool:
        for _ in range(25):
            response = await pool.request("POST", server.url("/"), body=b"{}", headers=JSON)
            assert response.status == 200
        assert len(server.requests) == 25
        assert server.connections_opened == 1
        assert {r.connection for r in server.requests} == {1}
        assert pool.open_connections == 1


async def test_pool_is_bounded_and_requests_wait_for_a_connection() -> None:
    gate = trio.Event()
    two_in_handler = trio.Event()
    in_handler = 0
    most_in_handler = 0

    async def handler(request: Request) -> Response:
        nonlocal in_handler, most_in_handler
        in_handler += 1
        most_in_handler = max(most_in_handler, in_handler)
        if in_handler == 2:
            two_in_handler.set()
        await gate.wait()
        in_handler -= 1
        return Response.json({"result": "ok"})

    async with open_http_server(handler) as server, HTTPPool(size=2) as pool:
        statuses: list[int] = []

        async def one() -> None:
            statuses.append((await pool.request("POST", server.url("/"), body=b"{}")).status)

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for _ in range(6):
                    nursery.start_soon(one)
                await two_in_handler.wait()
                # Every task has had the chance to run: none got a third connection.
                await trio.testing.wait_all_tasks_blocked()
                assert server.connections_opened == 2
                gate.set()
        assert statuses == [200] * 6
        assert most_in_handler == 2
        assert server.connections_opened == 2


async def test_waiting_for_a_full_pool_times_out_with_kind_pool() -> None:
    gate = trio.Event()

    async def handler(request: Request) -> Response:
        await gate.wait()
        return Response.json({})

    async with (
        open_http_server(handler) as server,
        HTTPPool(size=1) as pool,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(pool.request, "POST", server.url("/"))
        with trio.fail_after(5):
            await server.wait_until(lambda: server.connections_opened == 1)
        with pytest.raises(HTTPRequestError) as info:
            await pool.request("POST", server.url("/"), timeout=0.2)
        assert info.value.kind == "pool"
        assert "no free connection in the pool (size 1) within 0.2s" in str(info.value)
        gate.set()


async def test_server_closing_idle_connections_is_transparent() -> None:
    async with open_http_server() as server, HTTPPool(size=4) as pool:
        await pool.request("POST", server.url("/"), body=b"1")
        with trio.fail_after(5):
            assert await server.close_idle_connections() == 1
        # The pool notices the closed socket before reusing it.
        response = await pool.request("POST", server.url("/"), body=b"2")
        assert response.status == 200
        assert server.connections_opened == 2
        assert server.dropped == []


async def test_server_idle_timeout_is_transparent() -> None:
    async with open_http_server(idle_timeout=0.05) as server, HTTPPool(size=4) as pool:
        for expected_connections in (1, 2, 3):
            assert (await pool.request("GET", server.url("/"))).status == 200
            assert server.connections_opened == expected_connections
            with trio.fail_after(5):
                await server.wait_until(lambda: server.connections_open == 0)


async def test_close_racing_the_request_is_retried_once_on_a_fresh_connection() -> None:
    async with open_http_server() as server, HTTPPool(size=4) as pool:
        await pool.request("POST", server.url("/"), body=b"first")
        # The server reads the next request on the reused connection and hangs up unanswered,
        # what a client sees when the server's idle close crosses the request on the wire.
        server.drop_reused = 1
        response = await pool.request("POST", server.url("/"), body=b"second")
        assert response.status == 200
        assert [r.body for r in server.dropped] == [b"second"]
        assert [r.body for r in server.requests] == [b"first", b"second"]
        assert server.requests[1].connection == 2


async def test_no_retry_when_a_fresh_connection_is_dropped() -> None:
    async with open_http_server() as server, HTTPPool(size=4) as pool:
        server.drop_next = 1
        with pytest.raises(HTTPRequestError) as info:
            await pool.request("POST", server.url("/"), body=b"x")
        assert info.value.kind == "protocol"
        assert "Server disconnected without sending a response" in str(info.value)
        assert len(server.dropped) == 1
        assert server.requests == []


async def test_no_response_in_time_is_a_timeout() -> None:
    async def handler(request: Request) -> Response:
        await trio.sleep_forever()
        raise AssertionError

    async with open_http_server(handler) as server, HTTPPool(size=1, timeout=0.2) as pool:
        start = trio.current_time()
        with pytest.raises(HTTPRequestError) as info:
            await pool.request("POST", server.url("/"))
        assert info.value.kind == "timeout"
        assert str(info.value) == "timed out after 0.2s waiting for the response"
        assert 0.2 <= trio.current_time() - start < 3
        # The timed-out connection is closed, not returned to the pool; the pool still works.
        server.handler = lambda request: _ok()  # type: ignore[assignment]
        assert (await pool.request("GET", server.url("/"), timeout=5)).status == 200
        assert server.connections_opened == 2


async def _ok() -> Response:
    return Response.json({"result": "ok"})


async def test_delayed_response_within_the_timeout_succeeds() -> None:
    async with open_http_server() as server, HTTPPool(size=1) as pool:
        server.delay = 0.05
        response = await pool.request("GET", server.url("/"), timeout=5)
        assert response.status == 200


async def test_connection_refused_is_kind_connect() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with HTTPPool(size=1) as pool:
        with pytest.raises(HTTPRequestError) as info:
            await pool.request("POST", f"http://127.0.0.1:{port}/", timeout=5)
    assert info.value.kind == "connect"
    assert "refused" in str(info.value).lower()
    assert info.value.url == f"http://127.0.0.1:{port}/"


@pytest.mark.parametrize(
    "url", ["ftp://example.test/", "not a url", "http:///nohost", "https://[::1/"]
)
async def test_invalid_urls_are_kind_protocol(url: str) -> None:
    async with HTTPPool(size=1) as pool:
        with pytest.raises(HTTPRequestError) as info:
            await pool.request("GET", url)
    assert info.value.kind == "protocol"
    assert "invalid URL" in str(info.value)


async def test_invalid_header_is_kind_protocol() -> None:
    async with open_http_server() as server, HTTPPool(size=1) as pool:
        for headers in ([("x-bad", "a\r\nb")], [("x-bad", "\u20ac")], [("bad name", "x")]):
            with pytest.raises(HTTPRequestError) as info:
                await pool.request("GET", server.url("/"), headers=headers)
            assert info.value.kind == "protocol"
        assert (await pool.request("GET", server.url("/"))).status == 200


async def test_response_size_limit() -> None:
    async def handler(request: Request) -> Response:
        return Response(body=b"x" * 5000)

    async with open_http_server(handler) as server, HTTPPool(max_response_size=4096) as pool:
        with pytest.raises(HTTPRequestError) as info:
            await pool.request("GET", server.url("/"))
        assert info.value.kind == "protocol"
        assert "larger than 4096 bytes" in str(info.value)


async def test_cancellation_propagates_and_the_pool_recovers() -> None:
    started = trio.Event()

    async def slow(request: Request) -> Response:
        started.set()
        await trio.sleep_forever()
        raise AssertionError

    async with open_http_server(slow) as server, HTTPPool(size=1) as pool:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pool.request, "GET", server.url("/"))
                with trio.fail_after(5):
                    await started.wait()
                scope.cancel()
        assert scope.cancelled_caught
        # The cancelled request's connection was closed and released: the one-connection
        # pool serves the next request on a new connection.
        server.handler = lambda request: _ok()  # type: ignore[assignment]
        assert pool.open_connections == 0
        assert (await pool.request("GET", server.url("/"), timeout=5)).status == 200
        assert server.connections_opened == 2


async def test_closed_pool_refuses_requests() -> None:
    async with open_http_server() as server:
        pool = HTTPPool(size=1)
        await pool.request("GET", server.url("/"))
        await pool.aclose()
        assert pool.closed
        with pytest.raises(HTTPRequestError) as info:
            await pool.request("GET", server.url("/"))
        assert info.value.kind == "pool"
        with trio.fail_after(5):
            await server.wait_until(lambda: server.connections_open == 0)


async def test_pool_set_owns_and_closes_its_pools() -> None:
    async with open_http_server() as server:
        async with PoolSet() as pools:
            a = pools.add("a", HTTPPool(size=1))
            pools.add("b", HTTPPool(size=1))
            with pytest.raises(ValueError, match="already exists"):
                pools.add("a", HTTPPool(size=1))
            assert pools.get("a") is a
            assert sorted(pools) == ["a", "b"]
            await a.request("GET", server.url("/"))
            await pools.remove("b")
            assert "b" not in pools and len(pools) == 1
        assert a.closed
        with trio.fail_after(5):
            await server.wait_until(lambda: server.connections_open == 0)


def test_pool_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="pool size"):
        HTTPPool(size=0)


async def _silent_tcp_server(nursery: trio.Nursery) -> int:
    """A TCP server that accepts connections and never says anything (a stuck TLS peer)."""
    listeners = await nursery.start(partial(trio.serve_tcp, _hold_open, 0, host="127.0.0.1"))
    return int(listeners[0].socket.getsockname()[1])


async def _hold_open(stream: trio.SocketStream) -> None:
    async with stream:
        await trio.sleep_forever()


async def test_connect_timeout_bounds_the_tls_handshake() -> None:
    async with trio.open_nursery() as nursery:
        port = await _silent_tcp_server(nursery)
        async with HTTPPool(size=1, timeout=30, connect_timeout=0.2) as pool:
            start = trio.current_time()
            with pytest.raises(HTTPRequestError) as info:
                await pool.request("GET", f"https://127.0.0.1:{port}/")
            elapsed = trio.current_time() - start
        nursery.cancel_scope.cancel()
    assert info.value.kind == "timeout"
    assert str(info.value) == "connect timed out after 0.2s during the TLS handshake"
    assert 0.2 <= elapsed < 10  # the 30 s request timeout did not apply


async def test_per_request_connect_timeout_overrides_the_pool_default() -> None:
    async with trio.open_nursery() as nursery:
        port = await _silent_tcp_server(nursery)
        async with HTTPPool(size=1, timeout=30, connect_timeout=20) as pool:
            with pytest.raises(HTTPRequestError) as info:
                await pool.request("GET", f"https://127.0.0.1:{port}/", connect_timeout=0.1)
        nursery.cancel_scope.cancel()
    assert str(info.value) == "connect timed out after 0.1s during the TLS handshake"


async def test_connect_timeout_does_not_bound_a_slow_response() -> None:
    async with open_http_server() as server, HTTPPool(size=1, connect_timeout=0.05) as pool:
        server.delay = 0.3  # longer than the connect timeout, well within the request timeout
        response = await pool.request("GET", server.url("/"), timeout=10)
    assert response.status == 200


async def test_without_connect_timeout_the_request_timeout_bounds_connecting() -> None:
    async with trio.open_nursery() as nursery:
        port = await _silent_tcp_server(nursery)
        async with HTTPPool(size=1, timeout=0.2) as pool:
            assert pool.connect_timeout is None
            with pytest.raises(HTTPRequestError) as info:
                await pool.request("GET", f"https://127.0.0.1:{port}/")
        nursery.cancel_scope.cancel()
    assert info.value.kind == "timeout"
    assert str(info.value) == "timed out after 0.2s during the TLS handshake"


@pytest.mark.parametrize("value", [0, -1.0])
def test_connect_timeout_must_be_positive(value: float) -> None:
    with pytest.raises(ValueError, match="connect_timeout must be > 0"):
        HTTPPool(connect_timeout=value)
