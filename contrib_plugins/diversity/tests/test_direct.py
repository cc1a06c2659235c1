"""The direct callers (plugin_host_diversity.direct) answer exactly like the general path.

A hook that one script with one Lua state defines is called through a compiled direct caller;
several states (or ``keep_state``) take the general path. The same script is run both ways and
every kind of answer is compared: allow, deny, no answer, modifiers, a failure under each
``on_error``, and a call that waits for I/O (bcrypt runs in a worker thread).
"""

from __future__ import annotations

import pytest

from plugin_host import Deny
from plugin_host_diversity.runtime import Later

#: The answers every test script picks from by client id; ``wait`` is added where a call
#: waiting for I/O is wanted (a script naming bcrypt is not a plain one).
ANSWERS = """
  allow = function() return true end,
  deny = function() return false end,
  none = function() return nil end,
  rewrite = function(pub) return {topic = "rewritten/" .. pub.topic, qos = 1} end,
  fail = function() error("boom") end,
"""

SCRIPT = (
    "num_states = %d\nlocal answers = {"
    + ANSWERS
    + """  wait = function(pub)
    local hash = bcrypt.hashpw("pw", bcrypt.gen_salt())
    return bcrypt.hashpw("pw", hash) == hash
  end,
}
hooks = {
  auth_on_publish = function(pub) return answers[pub.client_id](pub) end,
  on_deliver = function(d) return answers[d.client_id](d) end,
}
"""
)

CASES = ["allow", "deny", "none", "rewrite", "fail", "wait"]


async def _answers(plugin, hook: str) -> list:
    answers = []
    for client_id in CASES:
        result = getattr(plugin.plugin, hook)(None, "", client_id, 0, "a/b", b"payload", False)
        if isinstance(result, Later):
            answers.append(("later", await result))
        else:
            answers.append(("now", result))
    return answers


@pytest.mark.parametrize("on_error", ["deny", "next"])
async def test_direct_and_general_path_agree(lua_dir, run, host, on_error) -> None:
    host.on_error = on_error
    seen = {}
    for states in (1, 2):
        lua = lua_dir(hooks=SCRIPT % states)
        async with run({"script_dir": str(lua)}, host=host) as plugin:
            direct = set(plugin.plugin._direct)
            assert direct == ({"auth_on_publish", "on_deliver"} if states == 1 else set())
            seen[states] = {h: await _answers(plugin, h) for h in ("auth_on_publish", "on_deliver")}
            stats = plugin.plugin._scripts.by_hook["auth_on_publish"][0].stats["auth_on_publish"]
            assert stats.calls == len(CASES)  # every call counted, failures and waits too
    assert seen[1] == seen[2]
    publish = dict(zip(CASES, seen[1]["auth_on_publish"], strict=True))
    assert publish["allow"] == ("now", True)
    assert publish["deny"] == ("now", False)
    assert publish["none"] == ("now", None)
    assert publish["rewrite"] == ("now", {"topic": "rewritten/a/b", "qos": 1})
    assert publish["wait"] == ("later", True)
    fail = publish["fail"]
    if on_error == "next":
        assert fail == ("now", None)
    else:
        assert fail[0] == "now" and isinstance(fail[1], Deny)


async def test_keep_state_takes_the_general_path(lua_dir, run) -> None:
    lua = lua_dir(hooks="keep_state = true\n" + SCRIPT % 1)
    async with run({"script_dir": str(lua)}) as plugin:
        assert plugin.plugin._direct == {}
        assert plugin.plugin.auth_on_publish(None, "", "allow", 0, "a", b"", False) is True


async def test_two_scripts_on_one_hook_take_the_general_path(lua_dir, run) -> None:
    first = "hooks = {auth_on_publish = function() return nil end}"
    second = "hooks = {auth_on_publish = function() return true end}"
    async with run({"script_dir": str(lua_dir(a=first, b=second))}) as plugin:
        assert "auth_on_publish" not in plugin.plugin._direct
        assert plugin.plugin.auth_on_publish(None, "", "c", 0, "a", b"", False) is True


CACHED = """
hooks = {
  auth_on_register = function(r)
    auth_cache.insert(r.mountpoint, r.client_id, r.username, {{pattern = "allowed/#"}}, {})
    return true
  end,
  auth_on_publish = function(p) return {payload = "%s"} end,
}
"""

REGISTER = {
    "peer_addr": "127.0.0.1", "peer_port": 1, "mountpoint": "", "client_id": "c",
    "username": "u", "password": b"pw", "clean_session": True,
}  # fmt: skip
PUBLISH = {
    "username": "u", "mountpoint": "", "client_id": "c", "qos": 0, "topic": "other/t",
    "payload": b"x", "retain": False,
}  # fmt: skip


async def test_the_dispatcher_calls_the_direct_caller_while_it_stays_valid(lua_dir) -> None:
    # The host's dispatcher is handed the direct caller of auth_on_publish (no hookimpl
    # frame per message), and asks again when it changes: on reload, and when the auth
    # cache comes into use (the direct caller does not consult it).
    from plugin_host.testing import plugin_manager
    from plugin_host.testing.host import RecordingHost
    from plugin_host_diversity.plugin import DiversityPlugin

    lua = lua_dir(cached=CACHED % "v1")
    plugin = DiversityPlugin()
    manager = plugin_manager({"diversity": plugin}, sections={"diversity": {
        "script_dir": str(lua), "reload_on_sighup": False,
    }})  # fmt: skip

    def chain_function():
        (call,) = manager.dispatcher._chains["auth_on_publish"]
        return call.function

    async with manager.running(RecordingHost()) as dispatcher:
        assert chain_function() is plugin._direct["auth_on_publish"]
        assert dispatcher.auth_now("auth_on_publish", PUBLISH).modifiers == {"payload": b"v1"}
        (lua / "cached.lua").write_text(CACHED % "v2")
        await plugin.reload()
        assert chain_function() is plugin._direct["auth_on_publish"]
        assert dispatcher.auth_now("auth_on_publish", PUBLISH).modifiers == {"payload": b"v2"}
        # The cache is used from now on: the hookimpl (cache first) answers again.
        own = dispatcher.auth_caller("auth_on_publish")
        assert own.__code__.co_filename.startswith("<diversity auth caller")
        assert (await dispatcher.auth("auth_on_register", REGISTER)).allowed
        assert chain_function() == plugin.auth_on_publish
        denied = dispatcher.auth_now("auth_on_publish", PUBLISH)
        assert not denied.allowed and denied.reason == "not_authorized"
        # ... and the positional caller is the dispatcher's again, around the hookimpl
        caller = dispatcher.auth_caller("auth_on_publish")
        assert not caller.__code__.co_filename.startswith("<diversity")
        assert not caller(*PUBLISH.values()).allowed

    # Stopped while the dispatcher held a direct caller: it is told, and keeps none.
    plugin = DiversityPlugin()
    manager = plugin_manager({"diversity": plugin}, sections={"diversity": {
        "script_dir": str(lua), "reload_on_sighup": False,
    }})  # fmt: skip
    async with manager.running(RecordingHost()):
        assert chain_function() is plugin._direct["auth_on_publish"]
    assert "auth_on_publish" not in manager.dispatcher._chains


PLAIN = (
    "local answers = {"
    + ANSWERS
    + "}\nhooks = {auth_on_publish = function(pub) return answers[pub.client_id](pub) end}\n"
)


def _summary(outcome) -> tuple:
    return (outcome.allowed, outcome.plugin, outcome.reason, dict(outcome.modifiers or {}))


@pytest.mark.parametrize("on_error", ["deny", "next"])
async def test_the_dispatchers_positional_caller_is_the_plugins_own(lua_dir, on_error) -> None:
    # For a plain script the dispatcher's auth_caller is the plugin's direct caller built
    # with the dispatcher's ChainLink (one frame less): it decides exactly what auth_now
    # (through the fast hook) decides, and counts in both statistics.
    from plugin_host.testing import plugin_manager
    from plugin_host.testing.host import RecordingHost
    from plugin_host_diversity.plugin import DiversityPlugin

    plugin = DiversityPlugin()
    manager = plugin_manager(
        {"diversity": plugin},
        on_error={"diversity": on_error},
        sections={"diversity": {"script_dir": str(lua_dir(p=PLAIN)), "reload_on_sighup": False}},
    )
    async with manager.running(RecordingHost(manager.config)) as dispatcher:
        caller = dispatcher.auth_caller("auth_on_publish")
        assert caller.__code__.co_filename == "<diversity auth caller of auth_on_publish>"
        calls = 0
        for _ in range(2):  # 2 x 20 positional calls: the timed path is taken too
            for case in ("allow", "deny", "none", "rewrite", "fail") * 4:
                args = {**PUBLISH, "client_id": case}
                positional = caller(*args.values())
                by_dict = dispatcher.auth_now("auth_on_publish", args)
                assert _summary(positional) == _summary(by_dict), case
                calls += 2
        script = plugin._scripts.by_hook["auth_on_publish"][0]
        assert script.stats["auth_on_publish"].calls == calls
        assert dispatcher.stats[("diversity", "auth_on_publish")].calls == calls
        assert dispatcher.stats[("diversity", "auth_on_publish")].seconds > 0
        fail = caller(*{**PUBLISH, "client_id": "fail"}.values())
        assert not fail.allowed and fail.exhausted is (on_error == "next")
