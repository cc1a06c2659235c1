"""Script model and argument/return conventions (spec 4.2-4.3), through the hookimpls."""

from __future__ import annotations

import inspect
import json

import pytest

from plugin_host import Deny
from plugin_host.hooks import specs
from plugin_host.hooks.modifiers import validate_modifiers, validate_topics
from plugin_host_diversity import plugin as plugin_module
from plugin_host_diversity.plugin import DiversityPlugin
from plugin_host_diversity.translate import HOOK_ARGS

ECHO = """
-- Every hook stores what it received (as JSON) in kv and returns what kv says to return.
kv.ensure_table({name = "seen"})
kv.ensure_table({name = "answer"})
local function handler(name)
  return function(args)
    kv.insert("seen", {[name] = json.encode(args)})
    local answer = kv.lookup("answer", name)[1]
    if answer ~= nil then return json.decode(answer).value end
  end
end
hooks = {}
for _, name in ipairs({%s}) do hooks[name] = handler(name) end
"""


def echo_script(hooks: list[str]) -> str:
    return ECHO % ", ".join(f'"{h}"' for h in hooks)


def test_hookimpl_signatures_match_the_hookspecs() -> None:
    # pluggy passes arguments by name: every hookimpl takes exactly the spec's arguments.
    for hook, names in HOOK_ARGS.items():
        assert specs.HOOK_ARGS[hook] == names, hook
        method = getattr(DiversityPlugin, hook)
        params = list(inspect.signature(method).parameters)[1:]
        assert tuple(params) == names, hook
    assert plugin_module.plugin_host_plugin is DiversityPlugin  # one instance per broker
    # Everything a script may define except the Erlang-only hooks (spec 2.9, on_message_drop).
    assert set(HOOK_ARGS) == set(specs.HOOK_ARGS) - {"on_topic_unsubscribed", "on_message_drop"}


async def test_no_scripts_means_no_active_hooks(lua_dir, run, register) -> None:
    async with run({"script_dir": str(lua_dir())}) as plugin:
        assert plugin.plugin_host_active_hooks() == frozenset()
        assert await register(plugin) is None


async def test_active_hooks_are_the_scripts_hooks(lua_dir, run) -> None:
    lua = lua_dir("publish_rewrite", "deliver")
    async with run({"script_dir": str(lua)}) as plugin:
        assert plugin.plugin_host_active_hooks() == {
            "auth_on_publish",
            "auth_on_publish_m5",
            "on_deliver",
            "on_deliver_m5",
        }


async def test_register_arguments_and_password_obfuscation(lua_dir, run, register) -> None:
    lua = lua_dir(
        check="""
        function auth_on_register(reg)
          assert(reg.addr == "10.0.0.7" and reg.port == 4242, "peer")
          assert(reg.mountpoint == "" and reg.client_id == "dev-1", "sid")
          assert(reg.username == "alice" and reg.clean_session == true, "user")
          assert(reg.password ~= "pw\\0bin", "the password must reach scripts obfuscated")
          assert(obf.decrypt(reg.password) == "pw\\0bin", "obf.decrypt gives the plaintext")
          assert(obf.decrypt("plain") == "plain", "decrypt passes plain input through")
          assert(obf.decrypt(obf.encrypt("x")) == "x")
          assert(reg.listener_type == "mqtts" and reg.listener_port == 8883)
          assert(reg.client_cert == "\\48\\130DER")
          assert(reg.peer_addr == nil and reg.properties == nil)
          return true
        end
        function auth_on_register_m5(reg)
          assert(reg.clean_start == true and reg.clean_session == nil)
          assert(reg.username == nil and reg.password == nil, "absent credentials are nil")
          local up = reg.properties.p_user_property
          assert(#up == 3 and up[1].a == "1" and up[2].b == "2" and up[3].a == "3")
          assert(reg.properties.p_session_expiry_interval == 60)
          return true
        end
        hooks = {auth_on_register = auth_on_register, auth_on_register_m5 = auth_on_register_m5}
        """,
    )
    async with run({"script_dir": str(lua)}) as plugin:
        result = await plugin.auth_on_register(
            "10.0.0.7", 4242, "", "dev-1", "alice", b"pw\x00bin", True,
            "127.0.0.1", 8883, "mqtts", b"\x30\x82DER",
        )  # fmt: skip
        assert result is True
        properties = {
            "p_user_property": [("a", "1"), ("b", "2"), ("a", "3")],
            "p_session_expiry_interval": 60,
        }
        assert await register(plugin, username=None, password=None, m5=True, properties=properties)


@pytest.mark.parametrize(
    ("lua_value", "expected"),
    [
        ("true", True),
        ("false", Deny("invalid_credentials", invalid_credentials=True)),
        ("nil", None),
        ('"next"', None),
        ("42", None),
        ("{max_inflight_messages = 5, retry_interval = 1000, upgrade_qos = true}",
         {"max_inflight_messages": 5, "retry_interval": 1000, "upgrade_qos": True}),
        ('{subscriber_id = {mountpoint = "mp", client_id = "other"}, username = "bob"}',
         {"subscriber_id": {"mountpoint": "mp", "client_id": "other"}, "username": "bob"}),
    ],
)  # fmt: skip
async def test_register_return_conventions(
    lua_dir, run, register, lua_value: str, expected: object
) -> None:
    lua = lua_dir(r=f"hooks = {{auth_on_register = function(reg) return {lua_value} end}}")
    async with run({"script_dir": str(lua)}) as plugin:
        result = await register(plugin)
        assert result == expected
        if isinstance(result, dict):
            validate_modifiers("auth_on_register", result)  # the host accepts it as is


async def test_false_stops_the_chain_and_nil_asks_the_next_script(lua_dir, run) -> None:
    lua = lua_dir(
        a_first="""
        hooks = {auth_on_publish = function(p)
          if p.topic == "a/deny" then return false end
          return nil
        end}
        """,
        b_second="""
        kv.ensure_table({name = "calls"})
        hooks = {auth_on_publish = function(p)
          kv.insert("calls", {[p.topic] = true})
          return {payload = "from b"}
        end}
        """,
    )
    async with run({"script_dir": str(lua)}) as plugin:
        assert [s.name for s in plugin.scripts] == ["a_first", "b_second"]
        denied = await plugin.auth_on_publish("u", "", "c", 0, "a/deny", b"x", False)
        assert denied is False
        assert plugin.kv.lookup("calls", b"a/deny") == []  # b_second was never asked
        passed = await plugin.auth_on_publish("u", "", "c", 0, "a/other", b"x", False)
        assert passed == {"payload": b"from b"}


async def test_publish_rewrite_script(lua_dir, run) -> None:
    lua = lua_dir("publish_rewrite")
    async with run({"script_dir": str(lua)}) as plugin:
        shout = await plugin.auth_on_publish("u", "", "c", 1, "shout/x", b"hello \xff", False)
        assert shout == {"payload": b"HELLO \xff"}  # binary-safe
        moved = await plugin.auth_on_publish("u", "", "c", 1, "old/a/b", b"p", True)
        assert moved == {"topic": "new/a/b", "qos": 0}
        assert validate_modifiers("auth_on_publish", moved) == moved
        assert await plugin.auth_on_publish("u", "", "c", 1, "plain", b"p", False) is True

        # MQTT 5: returned user properties replace same-key entries and are merged with the
        # message's other (allowed) properties (spec 4.3).
        properties = {
            "p_user_property": [("checked_by", "someone"), ("keep", "me")],
            "p_content_type": "text/plain",
            "p_message_expiry_interval": 30,
        }
        result = await plugin.auth_on_publish_m5(
            "u", "", "c", 1, "shout/y", b"abc", False, properties
        )
        assert result == {
            "payload": b"ABC",
            "properties": {
                "p_user_property": [("keep", "me"), ("checked_by", "lua")],
                "p_content_type": "text/upper",
                "p_message_expiry_interval": 30,
            },
        }
        validate_modifiers("auth_on_publish_m5", result)


async def test_subscribe_filter_script(lua_dir, run) -> None:
    lua = lua_dir("subscribe_filter")
    async with run({"script_dir": str(lua)}) as plugin:
        request = [("a/b", 2), ("secret/plans", 1), ("c/+", 0)]
        result = await plugin.auth_on_subscribe("u", "", "c", request)
        assert result == [("a/b", 1), ("secret/plans", 128), ("c/+", 0)]
        assert validate_topics("auth_on_subscribe", result, {"topics": request}) == result

        options = {"no_local": True, "rap": False, "retain_handling": "dont_send"}
        request5 = [("a/b", 2, options), ("secret/x", 0, options)]
        result5 = await plugin.auth_on_subscribe_m5("u", "", "c", request5, {})
        assert result5 == {
            "topics": [("a/b", 1, options), ("secret/x", 135, options)],
            "properties": {"p_reason_string": "checked by lua"},
        }
        validate_modifiers("auth_on_subscribe_m5", result5, {"topics": request5})


async def test_deliver_script(lua_dir, run) -> None:
    lua = lua_dir("deliver")
    async with run({"script_dir": str(lua)}) as plugin:
        stamped = await plugin.on_deliver("sub", "", "reader", 1, "news/today", b"hi", False)
        assert stamped == {"payload": b"[reader] hi"}
        assert await plugin.on_deliver("sub", "", "reader", 1, "other", b"hi", False) is None
        stamped5 = await plugin.on_deliver_m5(
            "sub", "", "r5", 0, "news/x", b"m", True, {"p_subscription_id": [3]}
        )
        assert stamped5 == {
            "payload": b"[r5] m",
            "properties": {"p_user_property": [("stamp", "lua")]},
        }
        validate_modifiers("on_deliver_m5", stamped5)


async def test_every_hook_receives_its_table(lua_dir, run) -> None:
    hooks = sorted(HOOK_ARGS)
    lua = lua_dir(echo=echo_script(hooks))
    async with run({"script_dir": str(lua)}) as plugin:
        await plugin.on_register("1.2.3.4", 1, "", "c", "u")
        options = {"no_local": True, "rap": True, "retain_handling": "dont_send"}
        await plugin.on_subscribe_m5(
            "u", "", "c", [("t/1", 1, options)], {"p_subscription_id": [7]}
        )
        await plugin.on_unsubscribe("u", "", "c", ["t/1", "t/2"])
        await plugin.on_offline_message("", "c", 2, "t", b"p", True)
        await plugin.on_auth_m5("u", "", "c", {"p_authentication_method": "SCRAM"})
        await plugin.on_session_expired("", "c")
        seen = {k.decode(): v[0] for k, v in _seen(plugin).items()}
        assert json.loads(seen["on_register"]) == {
            "addr": "1.2.3.4", "port": 1, "mountpoint": "", "client_id": "c", "username": "u",
        }  # fmt: skip
        assert json.loads(seen["on_subscribe_m5"]) == {
            "username": "u", "mountpoint": "", "client_id": "c",
            "topics": [["t/1", [1, options]]],
            "properties": {"p_subscription_id": [7]},
        }  # fmt: skip
        assert json.loads(seen["on_unsubscribe"])["topics"] == ["t/1", "t/2"]
        assert json.loads(seen["on_offline_message"]) == {
            "mountpoint": "", "client_id": "c", "qos": 2, "topic": "t", "payload": "p",
            "retain": True,
        }  # fmt: skip
        assert json.loads(seen["on_auth_m5"])["properties"] == {"p_authentication_method": "SCRAM"}
        assert json.loads(seen["on_session_expired"]) == {"mountpoint": "", "client_id": "c"}


def _seen(plugin: DiversityPlugin) -> dict[bytes, list[bytes]]:
    return {key: plugin.kv.lookup("seen", key) for key in plugin.kv.keys("seen")}


async def test_on_auth_m5_and_unsubscribe_results(lua_dir, run) -> None:
    lua = lua_dir(
        r="""
        hooks = {
          on_auth_m5 = function(a)
            return {reason_code = 0, properties = {p_authentication_method = "X",
                                                   p_authentication_data = "\\1\\2"}}
          end,
          on_unsubscribe = function(u) return {"x/" .. u.topics[1]} end,
          on_unsubscribe_m5 = function(u) return {topics = u.topics} end,
        }
        """,
    )
    async with run({"script_dir": str(lua)}) as plugin:
        auth = await plugin.on_auth_m5("u", "", "c", {"p_authentication_method": "X"})
        assert auth == {
            "reason_code": 0,
            "properties": {"p_authentication_method": "X", "p_authentication_data": b"\x01\x02"},
        }
        validate_modifiers("on_auth_m5", auth)
        assert await plugin.on_unsubscribe("u", "", "c", ["a"]) == ["x/a"]
        assert await plugin.on_unsubscribe_m5("u", "", "c", ["a", "b"], {}) == {
            "topics": ["a", "b"]
        }


async def test_globals_are_fresh_for_every_call_without_keep_state(lua_dir, run) -> None:
    counter = """
    counter = 0
    hooks = {auth_on_publish = function(p)
      counter = counter + 1
      return {payload = tostring(counter) .. "/" .. tostring(__SCRIPT_INSTANCE_ID__)}
    end}
    """
    lua = lua_dir(counter=counter)
    async with run({"script_dir": str(lua)}) as plugin:
        for _ in range(3):
            assert await plugin.auth_on_publish("u", "", "c", 0, "t", b"", False) == {
                "payload": b"1/1"
            }
    async with run({"script_dir": str(lua), "keep_state": True}) as plugin:
        results = [await plugin.auth_on_publish("u", "", "c", 0, "t", b"", False) for _ in range(3)]
        assert [r["payload"] for r in results] == [b"1/1", b"2/1", b"3/1"]


async def test_script_globals_num_states_and_keep_state_win(lua_dir, run) -> None:
    lua = lua_dir(
        s="""
        num_states = 3
        keep_state = true
        n = 0
        hooks = {auth_on_publish = function(p) n = n + 1; return true end}
        """,
    )
    async with run({"script_dir": str(lua), "nr_lua_states": 5}) as plugin:
        (script,) = plugin.scripts
        assert len(script.states) == 3 and script.keep_state
        assert [state.instance_id for state in script.states] == [1, 2, 3]


async def test_file_scripts_load_after_script_dir_in_name_order(lua_dir, run, tmp_path) -> None:
    lua = lua_dir(b="hooks = {}", a="hooks = {}")
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "z.lua").write_text("hooks = {}")
    (extra / "y.lua").write_text("hooks = {}")
    values = {
        "script_dir": str(lua),
        "zz.file": str(extra / "y.lua"),
        "aa.file": str(extra / "z.lua"),
    }
    async with run(values) as plugin:
        assert [s.name for s in plugin.scripts] == ["a", "b", "aa", "zz"]


async def test_lifecycle_hooks_run_all_scripts_even_after_errors(lua_dir, run, host) -> None:
    lua = lua_dir(
        a="hooks = {on_client_wakeup = function(c) error('boom') end}",
        b="""
        kv.ensure_table({name = "woken"})
        hooks = {on_client_wakeup = function(c) kv.insert("woken", {[c.client_id] = true}) end}
        """,
    )
    async with run({"script_dir": str(lua)}, host=host) as plugin:
        await plugin.on_client_wakeup("", "c1")
        assert plugin.kv.lookup("woken", b"c1") == [True]


async def test_hooks_answer_at_once_without_io(lua_dir, host) -> None:
    """No I/O: the hookimpl returns the answer itself (the host's fast path, no coroutine)."""
    from plugin_host.settings import PluginSection

    lua = lua_dir("publish_rewrite")
    plugin = DiversityPlugin()
    section = PluginSection("diversity", {"script_dir": str(lua), "reload_on_sighup": False})
    with pytest.raises(KeyError):  # the body's own exception, not an exception group
        async with plugin.plugin_host_lifespan(host, section):
            assert plugin.auth_on_publish("u", "", "c", 0, "shout/a", b"x", False) == {
                "payload": b"X"
            }
            raise KeyError("from the body")
