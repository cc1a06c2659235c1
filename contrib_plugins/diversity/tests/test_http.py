"""The Lua http module against real HTTP and HTTPS servers (trustme certificates)."""

from __future__ import annotations

from functools import partial
from typing import Any

import trio
import trustme
from structlog.testing import capture_logs

from plugin_host import Deny
from plugin_host.testing.http_server import Request, Response, open_http_server, server_tls_context

USERS = {"alice": "alice-pw", "bob": "bob-pw"}
#: What a script's ``return false`` from auth_on_register becomes (VerneMQ: invalid_credentials).
DENIED = Deny("invalid_credentials", invalid_credentials=True)


async def credentials(request: Request) -> Response:
    """The credentials service auth_https.lua talks to."""
    if request.client_cert is None:
        return Response.json({"result": "error", "reason": "no client certificate"}, status=403)
    doc = request.json()
    if USERS.get(doc.get("username")) == doc.get("password"):
        answer: dict[str, Any] = {"result": "ok"}
        if doc["username"] == "bob":
            answer["max_inflight"] = 7
        return Response.json(answer)
    return Response.json({"result": "error"})


async def _call_register(plugin, username: str, password: bytes) -> Any:
    return await plugin.auth_on_register(
        "10.1.2.3", 1234, "", f"{username}-dev", username, password, True, None, None, None, None
    )


async def test_auth_on_register_over_https_with_private_ca_and_client_cert(
    lua_dir, run, ca, tls_files
) -> None:
    tls = server_tls_context(ca, require_client_cert=True)
    async with open_http_server(credentials, tls=tls) as server:
        lua = lua_dir(
            "auth_https",
            settings={
                "auth_url": server.url("/auth", host="localhost"),
                "cafile": str(tls_files.cafile),
                "certfile": str(tls_files.certfile),
                "keyfile": str(tls_files.keyfile),
            },
        )
        async with run({"script_dir": str(lua)}) as plugin:
            with trio.fail_after(10):
                assert await _call_register(plugin, "alice", b"alice-pw") is True
                assert await _call_register(plugin, "bob", b"bob-pw") == {
                    "max_inflight_messages": 7
                }
                denied = await _call_register(plugin, "alice", b"wrong")
        assert denied == DENIED
        first = server.requests[0]
        assert first.json() == {
            "client_id": "alice-dev", "username": "alice", "password": "alice-pw",
            "peer": "10.1.2.3:1234",
        }  # fmt: skip
        assert first.client_cert is not None  # mutual TLS happened
        assert first.header("content-type") == "application/json"
        assert server.connections_opened == 1  # keep-alive pool reused the connection


async def test_global_default_ca_and_client_certificate(lua_dir, run, ca, tls_files) -> None:
    tls = server_tls_context(ca, require_client_cert=True)
    async with open_http_server(credentials, tls=tls) as server:
        lua = lua_dir(
            settings={"url": server.url("/auth", host="localhost")},
            plain="""
            local settings = require "lib.settings"
            http.ensure_pool({pool_id = "p"})  -- no TLS options: the plugin-wide defaults apply
            hooks = {auth_on_register = function(reg)
              local r = http.post("p", settings.url,
                json.encode({username = reg.username, password = obf.decrypt(reg.password)}))
              return r and json.decode(r.body).result == "ok"
            end}
            """,
        )
        values = {
            "script_dir": str(lua),
            "http.cafile": str(tls_files.cafile),
            "http.certfile": str(tls_files.certfile),
            "http.keyfile": str(tls_files.keyfile),
        }
        async with run(values) as plugin:
            with trio.fail_after(10):
                assert await _call_register(plugin, "alice", b"alice-pw") is True
        # Without the defaults the server's private CA is not trusted: the request fails.
        async with run({"script_dir": str(lua)}) as plugin:
            with capture_logs() as logs, trio.fail_after(10):
                assert await _call_register(plugin, "alice", b"alice-pw") == DENIED
        failure = next(e for e in logs if e["event"] == "lua_http_request_failed")
        assert failure["kind"] == "tls"
        assert "certificate verify failed" in failure["reason"]


TLS_CALLBACK = """
local settings = require "lib.settings"
kv.ensure_table({name = "tls_errors", type = "duplicate_bag"})
http.ensure_pool({
  pool_id = "callback",
  on_tls_error = function(info)
    kv.insert("tls_errors", {[info.pool_id] = info.url .. " | " .. info.error})
    log.warning("TLS problem with " .. info.url .. ": " .. info.error)
    return settings.allow
  end,
})
http.ensure_pool({pool_id = "no_callback"})
hooks = {auth_on_register = function(reg)
  local r = http.get(reg.username, settings.url)
  if r == false then return false end
  return r.status == 200
end}
"""


async def test_on_tls_error_callback_decides(lua_dir, run) -> None:
    untrusted = trustme.CA()  # the server's CA is not trusted by the pools
    tls = server_tls_context(untrusted)
    async with open_http_server(tls=tls) as server:
        url = server.url("/", host="localhost")
        for allow, expected in ((True, True), (False, DENIED)):
            lua = lua_dir(settings={"url": url, "allow": allow}, tls_cb=TLS_CALLBACK)
            async with run({"script_dir": str(lua)}) as plugin:
                with capture_logs() as logs, trio.fail_after(10):
                    assert await _call_register(plugin, "callback", b"") == expected
                    # A pool without a callback just fails.
                    assert await _call_register(plugin, "no_callback", b"") == DENIED
                (seen,) = plugin.kv.lookup("tls_errors", b"callback")
                assert seen.startswith(url.encode() + b" | certificate verify failed")
                events = [e["event"] for e in logs]
                assert ("lua_http_tls_error_allowed" in events) is allow
        assert len(server.requests) == 1  # only the request the callback allowed


async def test_bad_pool_options_are_clear_lua_errors(lua_dir, run, tls_files) -> None:
    cases = {
        "{cafle = 'x.pem'}": "unknown option 'cafle'",
        "{size = 0}": "size must be an integer from 1 to 10000",
        "{size = 'ten'}": "size must be an integer",
        "{verify = 'yes'}": "verify must be true or false",
        "{timeout_ms = -5}": "timeout_ms must be > 0",
        "{timeout_ms = 100, connect_timeout_ms = 500}": "connect_timeout_ms must not be longer",
        "{cafile = 'missing.pem'}": "cafile: file not found",
        "{certfile = 'missing.pem'}": "certfile: file not found",
        f"{{cafile = '{tls_files.certfile}', certfile = '{tls_files.cafile}'}}": "certfile",
        "{verify = true, use_system_cas = false}": "nothing is trusted",
        "{on_tls_error = 'log it'}": "on_tls_error must be a function",
        "'pool'": "table of options expected",
    }
    checks = "\n".join(
        f"""
        do
          local ok, err = pcall(function() http.ensure_pool({options}) end)
          assert(not ok, "accepted: {options}")
          assert(string.find(err, "{message}", 1, true), err)
          assert(string.find(err, "options.lua:", 1, true), "error position: " .. err)
        end"""
        for options, message in cases.items()
    )
    lua = lua_dir(options=checks + "\nhooks = {}")
    async with run({"script_dir": str(lua)}) as plugin:
        assert plugin.scripts


async def test_plain_http_methods_bodies_and_headers(lua_dir, run) -> None:
    async def echo(request: Request) -> Response:
        body = f"{request.method} {request.target} {request.body.decode()}"
        return Response(status=201, body=body.encode(), headers=[("x-answer", "yes")])

    async with open_http_server(echo) as server:
        lua = lua_dir(
            settings={"base": server.url("")},
            methods="""
            local settings = require "lib.settings"
            http.ensure_pool({})
            kv.ensure_table({name = "answers"})
            hooks = {on_client_wakeup = function(c)
              local out = {}
              for _, m in ipairs({"get", "post", "put", "delete", "patch"}) do
                local r = http[m]("pool_http", settings.base .. "/" .. m, "body-" .. m)
                assert(r.status == 201 and r.headers["x-answer"] == "yes")
                assert(http.body(r.ref) == r.ref)
                out[#out + 1] = r.ref
              end
              local form = http.post("pool_http", settings.base .. "/form", {a = "1 2", b = "&"},
                                     {["x-custom"] = "v"})
              out[#out + 1] = form.ref
              local ok, err = pcall(http.get, "unknown_pool", settings.base)
              assert(not ok and string.find(err, "unknown pool 'unknown_pool'"), err)
              kv.insert("answers", {all = out})
            end}
            """,
        )
        async with run({"script_dir": str(lua)}) as plugin:
            with trio.fail_after(10):
                await plugin.on_client_wakeup("", "c")
            (answers,) = plugin.kv.lookup("answers", b"all")
        assert answers[:5] == [
            b"GET /get body-get", b"POST /post body-post", b"PUT /put body-put",
            b"DELETE /delete body-delete", b"PATCH /patch body-patch",
        ]  # fmt: skip
        assert answers[5] in (b"POST /form a=1+2&b=%26", b"POST /form b=%26&a=1+2")
        form = server.requests[5]
        assert form.header("content-type") == "application/x-www-form-urlencoded"
        assert form.header("x-custom") == "v"


async def test_transport_failures_return_false(lua_dir, run) -> None:
    async with open_http_server() as server:
        server.delay = 1.0
        slow_url = server.url("/slow")
    # the server is gone now: connection refused
    refused_url = slow_url
    async with open_http_server() as server:
        server.delay = 2.0
        lua = lua_dir(
            settings={"slow": server.url("/slow"), "refused": refused_url},
            fail="""
            local settings = require "lib.settings"
            http.ensure_pool({pool_id = "quick", timeout_ms = 100})
            hooks = {auth_on_register = function(reg)
              return http.get("quick", settings[reg.username]) == false
            end}
            """,
        )
        async with run({"script_dir": str(lua)}) as plugin:
            with capture_logs() as logs, trio.fail_after(10):
                assert await _call_register(plugin, "slow", b"") is True
                assert await _call_register(plugin, "refused", b"") is True
        kinds = [e["kind"] for e in logs if e["event"] == "lua_http_request_failed"]
        assert kinds == ["timeout", "connect"]


async def test_connect_timeout_ms_bounds_connecting_separately(lua_dir, run) -> None:
    async def hold_open(stream: trio.SocketStream) -> None:
        async with stream:
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, hold_open, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        async with open_http_server() as server:
            server.delay = 0.3  # slower than the connect timeout, well within timeout_ms
            lua = lua_dir(
                settings={"silent": f"https://127.0.0.1:{port}/", "slow": server.url("/slow")},
                fail="""
                local settings = require "lib.settings"
                http.ensure_pool({pool_id = "p", timeout_ms = 30000, connect_timeout_ms = 100})
                hooks = {auth_on_register = function(reg)
                  local r = http.get("p", settings[reg.username])
                  return r ~= false and r.status == 200
                end}
                """,
            )
            async with run({"script_dir": str(lua)}) as plugin:
                with capture_logs() as logs, trio.fail_after(10):  # not the 30 s timeout_ms
                    assert await _call_register(plugin, "silent", b"") == DENIED
                    assert await _call_register(plugin, "slow", b"") is True
        nursery.cancel_scope.cancel()
    [failure] = [e for e in logs if e["event"] == "lua_http_request_failed"]
    assert failure["kind"] == "timeout"
    assert failure["reason"] == "connect timed out after 0.1s during the TLS handshake"
