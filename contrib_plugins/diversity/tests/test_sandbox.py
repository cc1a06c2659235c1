"""The sandbox, the per-state memory limit, the per-call budget, script errors and load errors."""

from __future__ import annotations

import time

import pytest
import trio

from plugin_host import Deny
from plugin_host.settings import ConfigError

PROBE = """
-- Each check returns a string describing the escape it found, or nil.
local checks = {}
checks.io = function() return io and "io" end
checks.debug = function() return debug and "debug" end
checks.python = function() return python and "python" end
checks.os_execute = function() return os.execute and "os.execute" end
checks.os_exit = function() return os.exit and "os.exit" end
checks.os_remove = function() return os.remove and "os.remove" end
checks.os_getenv = function() return os.getenv and "os.getenv" end
checks.string_dump = function() return string.dump and "string.dump" end
checks.string_meta_dump = function() return ("x").dump and "(''):dump" end
checks.loadlib = function() return package.loadlib and "package.loadlib" end
checks.searchers = function() return package.searchers and "package.searchers" end
checks.g_python = function() return _G.python and "_G.python" end
checks.bytecode = function()
  local f, err = load("\\27Lua\\84\\0", "x", "b")
  if f then return "binary chunk accepted" end
end
checks.bytecode_default_mode = function()
  local f = load("\\27LuaT\\0\\25\\147\\13\\10\\26\\10")
  if f then return "binary chunk accepted in default mode" end
end
checks.dofile_outside = function()
  local ok = pcall(dofile, "/etc/hostname")
  if ok then return "dofile outside the script dir" end
end
checks.loadfile_outside = function()
  if loadfile("/etc/passwd") then return "loadfile outside the script dir" end
end
checks.require_outside = function()
  package.path = "/usr/share/lua/5.4/?.lua;/etc/?"
  local ok = pcall(require, "passwd")
  if ok then return "require outside the script dir" end
end
checks.gc_metamethod = function()
  local ok = pcall(setmetatable, {}, {__gc = function() while true do end end})
  if ok then return "__gc accepted" end
end
checks.env_metatable = function()
  local ok = pcall(setmetatable, _G, {})
  if ok then return "setmetatable(_G) accepted" end
end
checks.collect_stop = function()
  local ok = pcall(collectgarbage, "stop")
  if ok then return "collectgarbage('stop') accepted" end
end
checks.foreign_coroutine = function()
  local me = coroutine.running()
  local ok = coroutine.resume(me)
  if ok then return "resumed the driver's coroutine" end
end
hooks = {auth_on_publish = function(p)
  local check = checks[p.topic]
  if check == nil then return "unknown check" end
  local found = check()
  if found then return {payload = found} end
  return true
end}
names = {}
for name in pairs(checks) do names[#names + 1] = name end
"""

CHECKS = [
    "io", "debug", "python", "os_execute", "os_exit", "os_remove", "os_getenv", "string_dump",
    "string_meta_dump", "loadlib", "searchers", "g_python", "bytecode", "bytecode_default_mode",
    "dofile_outside", "loadfile_outside", "require_outside", "gc_metamethod", "env_metatable",
    "collect_stop", "foreign_coroutine",
]  # fmt: skip


async def test_forbidden_globals_and_escapes(lua_dir, run) -> None:
    lua = lua_dir(probe=PROBE)
    async with run({"script_dir": str(lua)}) as plugin:
        for check in CHECKS:
            result = await plugin.auth_on_publish("u", "", "c", 0, check, b"", False)
            assert result is True, f"{check}: {result}"


async def test_what_scripts_do_have(lua_dir, run) -> None:
    lua = lua_dir(
        ok="""
        local lib = require "lib.helper"
        assert(lib.double(21) == 42)
        assert(dofile("lib/helper.lua").double(1) == 2)
        assert(load("return 1 + 1")() == 2)
        assert(string.format("%d", 7) == "7" and table.concat({1, 2}, ",") == "1,2")
        assert(math.max(1, 2) == 2 and utf8.char(72) == "H" and os.time() > 0)
        local co = coroutine.wrap(function(a) local b = coroutine.yield(a + 1); return b * 2 end)
        assert(co(1) == 2 and co(5) == 10)
        assert(type(collectgarbage("count")) == "number")
        assert(_VERSION == "Lua 5.4")
        hooks = {}
        """,
    )
    (lua / "lib").mkdir()
    (lua / "lib" / "helper.lua").write_text("return {double = function(x) return 2 * x end}")
    async with run({"script_dir": str(lua)}) as plugin:
        assert [s.name for s in plugin.scripts] == ["ok"]


LOOPS = """
hooks = {
  auth_on_publish = function(p)
    if p.topic == "loop" then while true do end end
    if p.topic == "pcall_loop" then
      while true do pcall(function() while true do end end) end
    end
    if p.topic == "nested" then
      local co = coroutine.create(function() while true do end end)
      while true do coroutine.resume(co) end
    end
    if p.topic == "hog" then
      local t = {}
      for i = 1, 1e9 do t[i] = string.rep("x", 1024) .. i end
    end
    if p.topic == "big_string" then return {payload = string.rep("x", 1e9)} end
    if p.topic == "error" then error("the script failed on purpose") end
    if p.topic == "error_table" then error({code = 1}) end
    return {payload = "fine"}
  end,
}
"""


@pytest.mark.parametrize(
    ("topic", "event_kind"),
    [
        ("loop", "budget"),
        ("pcall_loop", "budget"),
        ("nested", "budget"),
        ("hog", "memory"),
        ("big_string", "memory"),
        ("error", "error"),
        ("error_table", "error"),
    ],
)
async def test_failing_calls_are_contained(lua_dir, run, topic: str, event_kind: str) -> None:
    lua = lua_dir(limits=LOOPS)
    values = {"script_dir": str(lua), "max_memory": "16MB", "max_instructions": 5_000_000}
    async with run(values) as plugin:
        began = time.perf_counter()
        with trio.fail_after(10):
            result = await plugin.auth_on_publish("u", "", "c", 0, topic, b"", False)
        elapsed = time.perf_counter() - began
        assert result == Deny("lua_script_error")  # on_error = deny (the default)
        assert elapsed < 5
        # The state is still usable, and its memory came back.
        assert await plugin.auth_on_publish("u", "", "c", 0, "x", b"", False) == {
            "payload": b"fine"
        }
        state = plugin.scripts[0].states[0]
        state.lua.execute("collectgarbage()")
        assert state.lua.get_memory_used() < 2 * 1024 * 1024


async def test_time_budget_stops_slow_calls(lua_dir, run) -> None:
    lua = lua_dir(
        slow="""
        hooks = {auth_on_publish = function(p)
          local s = string.rep("ab", 20000)
          while true do local _ = s:upper():lower() end  -- few instructions, much C work
        end}
        """
    )
    values = {"script_dir": str(lua), "max_instructions": 0, "max_call_time": "200ms"}
    async with run(values) as plugin:
        began = time.perf_counter()
        with trio.fail_after(10):
            result = await plugin.auth_on_publish("u", "", "c", 0, "t", b"", False)
        assert result == Deny("lua_script_error")
        assert time.perf_counter() - began < 3


async def test_script_error_is_logged_and_mapped_per_on_error(lua_dir, run, host) -> None:
    lua = lua_dir(
        a_broken="hooks = {auth_on_register = function(r) error('db offline') end}",
        b_fallback="hooks = {auth_on_register = function(r) return r.username == 'alice' end}",
    )
    from structlog.testing import capture_logs

    # deny (default): fail closed, later scripts are not asked.
    async with run({"script_dir": str(lua)}, host=host) as plugin:
        with capture_logs() as logs:
            result = await plugin.auth_on_register(
                "127.0.0.1", 1, "", "c", "alice", b"pw", True, None, None, None, None
            )
        assert result == Deny("lua_script_error")
        failure = next(e for e in logs if e["event"] == "lua_hook_failed")
        assert failure["script"] == "a_broken" and failure["hook"] == "auth_on_register"
        assert "db offline" in failure["error"] and failure["line"] == 1
    # next (VerneMQ's behaviour for auth hooks, #2502): logged, then the next script decides.
    host.on_error = "next"
    async with run({"script_dir": str(lua)}, host=host) as plugin:
        result = await plugin.auth_on_register(
            "127.0.0.1", 1, "", "c", "alice", b"pw", True, None, None, None, None
        )
        assert result is True


@pytest.mark.parametrize(
    ("source", "line", "words"),
    [
        ("x = 1\nfunction broken(\n  return 1\nend\n", 3, "expected near 'return'"),
        ("x = 1\n\nlocal t = nil\nprint(t.field)\n", 4, "attempt to index a nil value"),
        ("while true do end", 1, "call budget exceeded"),
        ("hooks = 42", None, "'hooks' must be a table"),
    ],
)
async def test_load_failure_at_start_up_names_file_and_line(
    lua_dir, run, source: str, line: int | None, words: str
) -> None:
    lua = lua_dir(good="hooks = {}", bad=source)
    with pytest.raises(ConfigError) as caught:
        async with run({"script_dir": str(lua)}):
            pytest.fail("start-up must fail")
    error = caught.value
    assert error.file == str(lua / "bad.lua")
    assert error.line == line
    assert words in error.reason
    assert str(lua / "bad.lua") in str(error)


async def test_missing_module_at_load(lua_dir, run) -> None:
    lua = lua_dir(needs='local m = require "nowhere"\nhooks = {}')
    with pytest.raises(ConfigError) as caught:
        async with run({"script_dir": str(lua)}):
            pass
    assert "module 'nowhere' not found" in caught.value.reason
    assert caught.value.line == 1


async def test_cancelled_call_leaves_the_state_usable(lua_dir, run) -> None:
    lua = lua_dir(
        slow="""
        hooks = {auth_on_publish = function(p)
          if p.topic == "slow" then bcrypt.hashpw("pw", bcrypt.gen_salt(14)) end
          return {payload = "done"}
        end}
        """
    )
    async with run({"script_dir": str(lua)}) as plugin:
        state = plugin.scripts[0].states[0]
        services = plugin._running.services
        with trio.move_on_after(0.05) as scope:
            await plugin.auth_on_publish("u", "", "c", 0, "slow", b"", False)
        assert scope.cancelled_caught
        assert state.inflight == 0
        assert await plugin.auth_on_publish("u", "", "c", 0, "fast", b"", False) == {
            "payload": b"done"
        }
    # The abandoned hashing thread is still owned: the lifespan exit waited for it.
    assert services._threads_running == 0


async def test_every_call_gets_a_full_budget(lua_dir, run) -> None:
    # Calls reuse pooled coroutines: each must start with the whole budget again.
    lua = lua_dir(
        busy="""
        hooks = {auth_on_publish = function(p)
          local n = 0
          for i = 1, 150000 do n = n + i end  -- about 600k instructions
          return {payload = tostring(n)}
        end}
        """
    )
    async with run({"script_dir": str(lua), "max_instructions": 1_000_000}) as plugin:
        for _ in range(5):
            result = await plugin.auth_on_publish("u", "", "c", 0, "t", b"", False)
            assert result == {"payload": b"11250075000"}
