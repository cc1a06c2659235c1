"""Non-blocking calls: a slow HTTPS call in one script call never blocks the others.

VerneMQ queues calls to a script and runs them one at a time per Lua state (#589, #807): 200
registrations that each wait 100 ms for an auth service take 20 s on one state. Here every
call runs in its own coroutine, suspended while its request is in flight.
"""

from __future__ import annotations

import time
from functools import partial

import trio

from plugin_host.testing.http_server import Request, Response, open_http_server, server_tls_context

CALLS = 200
LATENCY = 0.1
POOL = 50  # connections: 4 rounds of 100 ms; fewer TLS handshakes than one per call

FAST_PATH = """
-- A second script on the same plugin: answers at once, no I/O.
hooks = {auth_on_publish = function(pub) return {payload = "fast"} end}
"""


async def answer_ok(request: Request) -> Response:
    return Response.json({"result": "ok"})


async def test_200_https_registrations_in_parallel(lua_dir, run, ca, tls_files) -> None:
    tls = server_tls_context(ca, require_client_cert=True)
    async with open_http_server(answer_ok, tls=tls) as server:
        server.delay = LATENCY
        lua = lua_dir(
            "auth_https",
            settings={
                "auth_url": server.url("/auth", host="localhost"),
                "cafile": str(tls_files.cafile),
                "certfile": str(tls_files.certfile),
                "keyfile": str(tls_files.keyfile),
                "pool_size": POOL,
            },
            fast_path=FAST_PATH,
        )
        async with run({"script_dir": str(lua)}) as plugin:
            # Steady state: the keep-alive pool holds its POOL connections (TLS handshakes done),
            # as in a broker that has been running for a while.
            async with trio.open_nursery() as nursery:
                for i in range(POOL):
                    nursery.start_soon(_register, plugin, -1 - i)
            assert server.connections_opened == POOL
            before = len(server.requests)
            results: list[object] = []
            side_latencies: list[float] = []
            done = trio.Event()

            async def one(i: int) -> None:
                results.append(await _register(plugin, i))
                if len(results) == CALLS:
                    done.set()

            async def other_clients() -> None:
                # Meanwhile other calls keep being served promptly.
                while not done.is_set():
                    began = time.perf_counter()
                    outcome = await plugin.auth_on_publish("u", "", "pub", 0, "t", b"", False)
                    side_latencies.append(time.perf_counter() - began)
                    assert outcome == {"payload": b"fast"}
                    await trio.sleep(0.01)

            began = time.perf_counter()
            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(other_clients)
                    for i in range(1, CALLS + 1):
                        nursery.start_soon(one, i)
            elapsed = time.perf_counter() - began
        print(
            f"\n{CALLS} concurrent auth_on_register calls over HTTPS (mTLS, {LATENCY * 1000:.0f} ms"
            f" server latency, pool of {POOL}): {elapsed:.3f} s; {len(side_latencies)} other calls"
            f" meanwhile, slowest {max(side_latencies) * 1000:.1f} ms;"
            f" {server.connections_opened - POOL} new TLS connections"
        )
        assert results == [True] * CALLS
        assert elapsed < 2.0  # sequential would be CALLS * LATENCY = 20 s
        assert len(server.requests) == before + CALLS
        assert len(side_latencies) >= 3
        assert max(side_latencies) < 0.5


async def _register(plugin, i: int) -> object:
    return await plugin.auth_on_register(
        "127.0.0.1", 1000 + i, "", f"c{i}", "alice", b"pw", True, None, None, None, None
    )


SLOW_AND_FAST = """
local settings = require "lib.settings"
http.ensure_pool({pool_id = "slow"})
hooks = {auth_on_register = function(reg)
  if reg.username == "slow" then
    return http.get("slow", settings.url).status == 200
  end
  return true
end}
"""


async def test_slow_call_does_not_block_the_same_script(lua_dir, run) -> None:
    async with open_http_server(answer_ok) as server:
        server.delay = 1.0
        lua = lua_dir(settings={"url": server.url("/")}, slow_fast=SLOW_AND_FAST)
        for keep_state, states in ((False, 1), (True, 2)):
            values = {"script_dir": str(lua), "keep_state": keep_state, "nr_lua_states": states}
            async with run(values) as plugin:
                slow_done = trio.Event()
                count = len(server.requests)
                opened = server.connections_opened
                with trio.fail_after(10):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(_slow_register, plugin, slow_done)
                        # Once the slow call is talking to the server, the same script answers
                        # other calls at once.
                        await server.wait_until(partial(_more_connections, server, opened))
                        began = time.perf_counter()
                        for i in range(20):
                            call = plugin.auth_on_register
                            result = await call(
                                "1.1.1.1", 2, "", f"f{i}", "fast", None, True, *[None] * 4
                            )
                            assert result is True
                        assert time.perf_counter() - began < 0.5
                        assert not slow_done.is_set()
                assert slow_done.is_set() and len(server.requests) == count + 1


def _more_connections(server, than: int) -> bool:
    return server.connections_opened > than


async def _slow_register(plugin, done: trio.Event) -> None:
    result = await plugin.auth_on_register("1.1.1.1", 1, "", "s", "slow", None, True, *[None] * 4)
    assert result is True
    done.set()


async def test_cancelling_the_caller_cancels_the_http_call(lua_dir, run) -> None:
    async with open_http_server(answer_ok) as server:
        server.delay = 5.0
        lua = lua_dir(settings={"url": server.url("/")}, slow_fast=SLOW_AND_FAST)
        async with run({"script_dir": str(lua)}) as plugin:
            state = plugin.scripts[0].states[0]
            with trio.move_on_after(0.2) as scope:
                await plugin.auth_on_register(
                    "1.1.1.1", 1, "", "s", "slow", None, True, *[None] * 4
                )
            assert scope.cancelled_caught
            assert state.inflight == 0
            with trio.fail_after(5):
                # the server sees the client go away (its handler is cancelled)
                await server.wait_until(lambda: server.connections_open == 0)
                fast = await plugin.auth_on_register(
                    "1.1.1.1", 1, "", "f", "fast", None, True, *[None] * 4
                )
            assert fast is True
