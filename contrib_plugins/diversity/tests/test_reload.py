"""Hot reload: ``reload()`` (admin API) and SIGHUP; a script that fails keeps its old version."""

from __future__ import annotations

import os
import signal
from typing import Any

import trio
from structlog.testing import capture_logs

from plugin_host.settings import Config, PluginSection
from plugin_host.testing import open_client, run_broker
from plugin_host.testing.http_server import Response, open_http_server
from plugin_host_diversity.plugin import DiversityPlugin

V1 = 'hooks = {auth_on_publish = function(p) return {payload = "v1"} end}'
V2 = 'hooks = {auth_on_publish = function(p) return {payload = "v2"} end}'
BROKEN = 'hooks = {auth_on_publish = function(p)\n  return {payload = "v3" end}'


async def _payload(plugin) -> bytes | None:
    result = await plugin.auth_on_publish("u", "", "c", 0, "t", b"", False)
    return result["payload"] if isinstance(result, dict) else result


async def test_reload_applies_changes_and_keeps_old_version_on_error(lua_dir, run, host) -> None:
    lua = lua_dir(main=V1)
    async with run({"script_dir": str(lua)}, host=host) as plugin:
        assert await _payload(plugin) == b"v1"
        (lua / "main.lua").write_text(V2)
        assert await plugin.reload() == {"main": "reloaded"}
        assert await _payload(plugin) == b"v2"

        (lua / "main.lua").write_text(BROKEN)
        with capture_logs() as logs:
            report = await plugin.reload()
        assert report["main"].startswith("kept previous version: ")
        assert "main.lua:2:" in report["main"]
        assert await _payload(plugin) == b"v2"  # still running the old version
        failure = next(e for e in logs if e["event"] == "lua_script_reload_failed")
        assert failure["file"] == str(lua / "main.lua") and failure["line"] == 2
        assert failure["kept_previous"] is True


async def test_reload_adds_and_removes_scripts(lua_dir, run, host) -> None:
    lua = lua_dir(main=V1)
    async with run({"script_dir": str(lua)}, host=host) as plugin:
        assert plugin.plugin_host_active_hooks() == {"auth_on_publish"}
        (lua / "extra.lua").write_text("hooks = {on_deliver = function(m) return true end}")
        (lua / "bad_new.lua").write_text("this is not lua")
        calls = host.hooks_changed_calls
        report = await plugin.reload()
        assert report["extra"] == "loaded" and report["main"] == "reloaded"
        assert report["bad_new"].startswith("not loaded: ")
        assert plugin.plugin_host_active_hooks() == {"auth_on_publish", "on_deliver"}
        assert host.hooks_changed_calls == calls + 1
        (lua / "main.lua").unlink()
        (lua / "bad_new.lua").unlink()
        report = await plugin.reload()
        assert report == {"extra": "reloaded", "main": "unloaded"}
        assert plugin.plugin_host_active_hooks() == {"on_deliver"}
        assert await plugin.auth_on_publish("u", "", "c", 0, "t", b"", False) is None


async def test_kv_and_auth_cache_survive_reload(lua_dir, run, host) -> None:
    lua = lua_dir(
        "acl_cache",
        counter="kv.ensure_table({name = 'n'}); kv.insert('n', {loads = 1}); hooks = {}",
    )
    async with run({"script_dir": str(lua)}, host=host) as plugin:
        await plugin.auth_on_register(
            "127.0.0.1", 1, "", "dev1", "alice", b"alice-pw", True, None, None, None, None
        )
        await plugin.reload()
        assert ("", "dev1") in plugin.auth_cache
        topic = "devices/alice/dev1/x"
        assert await plugin.auth_on_publish("alice", "", "dev1", 0, topic, b"", False) is True
        assert plugin.kv.lookup("n", b"loads") == [1]


async def test_calls_in_flight_finish_on_the_old_version(lua_dir, run) -> None:
    async def slow(request):
        return Response(body=b"from server")

    async with open_http_server(slow) as server:
        server.delay = 0.5
        source = """
        local settings = require "lib.settings"
        http.ensure_pool({})
        hooks = {auth_on_publish = function(p)
          if p.topic == "slow" then http.get("pool_http", settings.url) end
          return {payload = "%s"}
        end}
        """
        lua = lua_dir(settings={"url": server.url("/")}, main=source % "old")
        async with run({"script_dir": str(lua)}) as plugin:
            results: list[object] = []

            async def slow_call() -> None:
                results.append(await plugin.auth_on_publish("u", "", "c", 0, "slow", b"", False))

            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(slow_call)
                    await server.wait_until(lambda: server.connections_opened > 0)
                    (lua / "main.lua").write_text(source % "new")
                    assert await plugin.reload() == {"main": "reloaded"}
                    assert await _payload(plugin) == b"new"
            assert results == [{"payload": b"old"}]


async def test_sighup_reloads(lua_dir, run, host) -> None:
    lua = lua_dir(main=V1)
    async with run({"script_dir": str(lua), "reload_on_sighup": True}, host=host) as plugin:
        (lua / "main.lua").write_text(V2 + "\nhooks.on_deliver = function(m) end")
        changed = host.hooks_changed_event
        os.kill(os.getpid(), signal.SIGHUP)
        with trio.fail_after(10):
            await changed.wait()
        assert await _payload(plugin) == b"v2"


async def test_sighup_goes_through_the_server_when_the_host_offers_reloads(
    lua_dir, run, host
) -> None:
    """Under the server, SIGHUP is the server's: the plugin registers a reload callback and
    opens no signal receiver of its own (trio would give the signal to one receiver only)."""
    callbacks: list[Any] = []

    def on_reload(callback: Any) -> Any:
        callbacks.append(callback)
        return lambda: callbacks.remove(callback)

    host.on_reload = on_reload  # what the broker's host offers
    lua = lua_dir(main=V1)
    handler_before = signal.getsignal(signal.SIGHUP)
    async with run({"script_dir": str(lua), "reload_on_sighup": True}, host=host) as plugin:
        assert signal.getsignal(signal.SIGHUP) == handler_before  # no receiver of its own
        (callback,) = callbacks
        (lua / "main.lua").write_text(V2)
        assert await callback() == {"main": "reloaded"}
        assert await _payload(plugin) == b"v2"
    assert callbacks == []  # unregistered when the lifespan ends


async def test_broker_reload_reloads_the_scripts(lua_dir) -> None:
    """Through a real broker: ``broker.reload()`` is what the server's SIGHUP handler runs."""
    lua = lua_dir(main=V1)
    cfg = Config()
    cfg.sections["diversity"] = PluginSection(
        plugin="diversity", values={"script_dir": str(lua), "reload_on_sighup": True}
    )
    plugins = {"diversity": DiversityPlugin()}
    async with (
        run_broker(cfg, plugins=plugins, allow_anonymous=True) as broker,
        open_client(broker.address, client_id="c") as client,
    ):
        await client.subscribe("t", qos=1)
        await client.publish("t", b"original", qos=1)
        assert (await client.receive()).payload == b"v1"
        (lua / "main.lua").write_text(V2)
        report = await broker.broker.reload()
        assert report["diversity"] == {"main": "reloaded"}
        await client.publish("t", b"original", qos=1)
        assert (await client.receive()).payload == b"v2"
    assert "diversity" not in broker.broker.reloads.names
