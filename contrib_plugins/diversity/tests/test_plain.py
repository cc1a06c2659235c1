"""Plain calls: a script that cannot yield runs its hooks without a coroutine.

Whether a script can yield is decided from its source (``plugin_host_diversity.yields``).
The plain path must keep every guarantee of the coroutine path: the call budget (an infinite
loop ends that call, script ``pcall`` cannot swallow it, the next call has its full budget),
per-call globals with ``keep_state`` off, the memory limit, and the same error messages and
tracebacks. Each case runs the same script twice: as is (plain) and with a ``coroutine``
mention that sends it down the coroutine path, and compares.
"""

from __future__ import annotations

import time

import pytest
import trio
from structlog.testing import capture_logs

from plugin_host import Deny
from plugin_host.testing.http_server import Request, Response, open_http_server
from plugin_host_diversity.direct import SAMPLE
from plugin_host_diversity.yields import may_yield

HOOKS = """
counter_seen = "load"
local function fail(p)
  error("the script failed on purpose")
end
hooks = {
  auth_on_publish = function(p)
    if p.topic == "loop" then while true do end end
    if p.topic == "pcall_loop" then
      while true do pcall(function() while true do end end) end
    end
    if p.topic == "xpcall_loop" then
      while true do xpcall(function() while true do end end, function(e) return e end) end
    end
    if p.topic == "hog" then
      local t = {}
      for i = 1, 1e9 do t[i] = string.rep("x", 1024) .. i end
    end
    if p.topic == "error" then fail(p) end
    if p.topic == "error_table" then error({code = 1}) end
    if p.topic == "busy" then
      local n = 0
      for i = 1, 150000 do n = n + i end  -- about 600k instructions
      return {payload = tostring(n)}
    end
    if p.topic == "write" then
      local before = counter_seen
      counter_seen = p.client_id
      return {payload = before}
    end
    return {payload = "fine"}
  end,
}
"""

#: Naming ``coroutine`` (here in dead code) is enough to take the coroutine path.
COROUTINE = "\nlocal _unused = false and coroutine\n"


def _publish(plugin, topic: str, client_id: str = "c"):
    return plugin.auth_on_publish("u", "", client_id, 0, topic, b"", False)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("hooks = {auth_on_publish = function(p) return true end}", False),
        ("-- http.get(...) in a comment\nhooks = {}", False),
        ("--[==[ require 'x'\n coroutine.yield() ]==]\nhooks = {}", False),
        ("local s = 'http' .. \"load\" .. [[_G]] .. [=[ _ENV ]=]\nhooks = {}", False),
        ("local s = 'it\\'s http'\nlocal n = 0x1p4\nhooks = {}", False),
        ("local r = http.get('pool', 'x')", True),
        ("local h = bcrypt.hashpw('a', 'b')", True),
        ("vmq_api.disconnect_by_subscriber_id({}, {})", True),
        ("local m = require 'lib.settings'", True),
        ("dofile('x.lua')", True),
        ("loadfile('x.lua')", True),
        ("load('return 1')()", True),
        ("coroutine.yield()", True),
        ("local g = _G", True),
        ("local e = _ENV", True),
        ("local l = package.loaded", True),
        ("local t = {}; t.http = 1", True),  # conservative: a field with the name counts
        ("local s = 'unterminated\nhttp.get()", True),  # not understood: read as code
    ],
)
def test_may_yield_reads_names_outside_comments_and_strings(source: str, expected: bool) -> None:
    assert may_yield(source.encode()) is expected


@pytest.mark.parametrize("path", ["plain", "coroutine"])
@pytest.mark.parametrize(
    ("topic", "event"),
    [
        ("loop", "lua_call_budget_exceeded"),
        ("pcall_loop", "lua_call_budget_exceeded"),
        ("xpcall_loop", "lua_call_budget_exceeded"),
        ("hog", "lua_memory_limit_reached"),
        ("error", "lua_hook_failed"),
        ("error_table", "lua_hook_failed"),
    ],
)
async def test_failing_calls_are_contained_on_both_paths(
    lua_dir, run, path: str, topic: str, event: str
) -> None:
    lua = lua_dir(limits=HOOKS + (COROUTINE if path == "coroutine" else ""))
    values = {"script_dir": str(lua), "max_memory": "16MB", "max_instructions": 1_000_000}
    async with run(values) as plugin:
        assert plugin.scripts[0].plain is (path == "plain")
        began = time.perf_counter()
        with trio.fail_after(10), capture_logs() as logs:
            result = await _publish(plugin, topic)
        assert result == Deny("lua_script_error")
        assert time.perf_counter() - began < 5
        assert [e["event"] for e in logs if e["log_level"] == "error"] == [event]
        # The next calls work and get their whole budget again (after a tripped budget the
        # instruction count is back to normal, not one hook call per instruction).
        for _ in range(3):
            assert await _publish(plugin, "busy") == {"payload": b"11250075000"}
        assert await _publish(plugin, "x") == {"payload": b"fine"}


async def test_errors_read_the_same_on_both_paths(lua_dir, run) -> None:
    seen = {}
    for path in ("plain", "coroutine"):
        lua = lua_dir(errors=HOOKS + (COROUTINE if path == "coroutine" else ""))
        async with run({"script_dir": str(lua), "max_instructions": 1_000_000}) as plugin:
            assert plugin.scripts[0].plain is (path == "plain")
            events = []
            for topic in ("error", "error_table", "loop"):
                with capture_logs() as logs:
                    await _publish(plugin, topic)
                (failure,) = [e for e in logs if e["log_level"] == "error"]
                events.append(failure)
            seen[path] = events
    for plain, coroutine in zip(seen["plain"], seen["coroutine"], strict=True):
        for key in ("event", "error", "file", "line"):
            assert plain[key] == coroutine[key], key
    error = seen["plain"][0]
    assert error["error"] == "errors.lua:4: the script failed on purpose" and error["line"] == 4
    # Same frames, from the error up to the hook function (which the coroutine's trace names
    # after the driver's local variable, "local 'fn'"); the coroutine's trace also shows the
    # driver's worker function below them, the plain one stops at the hook.
    plain_trace = seen["plain"][0]["traceback"].splitlines()
    coroutine_trace = seen["coroutine"][0]["traceback"].splitlines()
    hook_frame = len(plain_trace) - 1
    assert plain_trace[:hook_frame] == coroutine_trace[:hook_frame]
    assert plain_trace[hook_frame] == "\terrors.lua:19: in function <errors.lua:7>"
    assert coroutine_trace[hook_frame] == "\terrors.lua:19: in local 'fn'"
    assert plain_trace[:2] == ["stack traceback:", "\t[C]: in function 'error'"]
    assert "errors.lua:4: in upvalue 'fail'" in plain_trace[2]
    assert not any("prelude" in line or "xpcall" in line for line in plain_trace)
    assert seen["plain"][1]["error"] == "(error object is a table value)"
    budget = seen["plain"][2]
    assert "call budget exceeded: more than 1000000 instructions" in budget["error"]
    assert budget["line"] == 8  # the loop


async def test_globals_written_by_a_call_are_not_seen_by_the_next(lua_dir, run) -> None:
    lua = lua_dir(globals=HOOKS)
    async with run({"script_dir": str(lua)}) as plugin:
        assert plugin.scripts[0].plain
        for client_id in ("a", "b", "c"):
            # Every call starts from the post-load globals (keep_state off).
            assert await _publish(plugin, "write", client_id) == {"payload": b"load"}
        assert plugin.scripts[0].states[0].global_value("counter_seen") == b"load"
    lua = lua_dir(globals="keep_state = true\n" + HOOKS)
    async with run({"script_dir": str(lua)}) as plugin:
        assert plugin.scripts[0].plain
        answers = [await _publish(plugin, "write", client_id) for client_id in ("a", "b")]
        assert answers == [{"payload": b"load"}, {"payload": b"a"}]


async def test_a_script_using_http_takes_the_coroutine_path(lua_dir, run) -> None:
    async def answer(request: Request) -> Response:
        return Response(body=b"from-http")

    async with open_http_server(answer) as server:
        lua = lua_dir(
            fetch=f"""
            http.ensure_pool({{}})
            hooks = {{auth_on_publish = function(p)
              local r = http.get("pool_http", "{server.url("/x")}")
              return {{payload = r.ref}}
            end}}
            """
        )
        async with run({"script_dir": str(lua)}) as plugin:
            assert not plugin.scripts[0].plain
            with trio.fail_after(10):
                assert await _publish(plugin, "t") == {"payload": b"from-http"}


async def test_plain_calls_are_all_counted_and_their_time_estimated(lua_dir, run) -> None:
    # A plain script's direct caller times one call in SAMPLE and counts it SAMPLE times.
    lua = lua_dir(busy=HOOKS)
    async with run({"script_dir": str(lua)}) as plugin:
        began = time.perf_counter()
        for _ in range(SAMPLE * 4):
            assert await _publish(plugin, "busy") == {"payload": b"11250075000"}
        wall = time.perf_counter() - began
        assert await _publish(plugin, "error") == Deny("lua_script_error")
        stats = plugin.scripts[0].stats["auth_on_publish"]
        assert stats.calls == SAMPLE * 4 + 1 and stats.errors == 1
        # Every call does the same work (some milliseconds): the estimate is close to the
        # time the loop took.
        assert 0.3 * wall < stats.seconds < 3 * wall
