"""The auth cache in front of the Lua hooks (spec 4.4), with the VerneMQ-style acl_cache.lua."""

from __future__ import annotations

from plugin_host import Deny
from plugin_host.hooks.modifiers import validate_modifiers, validate_topics


async def _login(plugin, client_id: str = "dev1", mountpoint: str = "") -> object:
    return await plugin.auth_on_register(
        "127.0.0.1", 1, mountpoint, client_id, "alice", b"alice-pw", True, None, None, None, None
    )


async def test_acl_patterns_decide_publish(lua_dir, run, host) -> None:
    lua = lua_dir("acl_cache")
    async with run({"script_dir": str(lua)}, host=host) as plugin:
        pub = plugin.auth_on_publish
        # Before registration there is no cache entry: the Lua hook answers (false here).
        assert await pub("alice", "", "dev1", 0, "devices/alice/dev1/temp", b"1", False) is False
        active_before = plugin.plugin_host_active_hooks()
        assert await _login(plugin) is True
        assert host.hooks_changed_calls == 1  # the cache hooks became active
        assert plugin.plugin_host_active_hooks() > active_before
        assert "on_session_expired" in plugin.plugin_host_active_hooks()

        assert await pub("alice", "", "dev1", 2, "devices/alice/dev1/temp", b"1", True) is True
        # %u and %c are the registering client's: another client id does not match
        assert await pub("alice", "", "dev1", 0, "devices/alice/dev2/temp", b"1", False) == Deny(
            "not_authorized"
        )
        # %m: the mountpoint ("" here) fills a whole level
        assert await pub("alice", "", "dev1", 1, "mp//status", b"", False) is True
        assert await pub("alice", "", "dev1", 2, "mp//status", b"", False) == Deny(
            "not_authorized"
        )  # max_qos 1
        assert await pub("alice", "", "dev1", 1, "limited/a", b"12345", False) is True
        assert await pub("alice", "", "dev1", 1, "limited/a", b"123456", False) == Deny(
            "not_authorized"
        )  # max_payload_size
        assert await pub("alice", "", "dev1", 1, "limited/a", b"1", True) == Deny(
            "not_authorized"
        )  # allowed_retain false
        mods = await pub("alice", "", "dev1", 0, "rewrite/me", b"x", False)
        assert mods == {"topic": "rewritten/topic", "payload": b"changed", "qos": 1}
        assert validate_modifiers("auth_on_publish", mods) == mods


async def test_acl_patterns_decide_subscribe_and_unsubscribe(lua_dir, run, host) -> None:
    lua = lua_dir("acl_cache")
    async with run({"script_dir": str(lua)}, host=host) as plugin:
        await _login(plugin)
        sub = plugin.auth_on_subscribe
        assert await sub("alice", "", "dev1", [("devices/alice/#", 2), ("broadcast/x", 1)]) is True
        # every topic must match; one miss denies the whole request
        denied = await sub("alice", "", "dev1", [("devices/alice/#", 2), ("other", 0)])
        assert denied == Deny("not_authorized")
        assert await sub("alice", "", "dev1", [("broadcast/x", 2)]) == Deny("not_authorized")
        # a subscription filter's own wildcard only matches the same wildcard in the ACL
        assert await sub("alice", "", "dev1", [("broadcast/+", 0)]) is True
        assert await sub("alice", "", "dev1", [("broadcast/#", 0)]) == Deny("not_authorized")
        request = [("alias/in", 0), ("broadcast/y", 1)]
        rewritten = await sub("alice", "", "dev1", request)
        assert rewritten == [("alias/out", 1), ("broadcast/y", 1)]
        assert validate_topics("auth_on_subscribe", rewritten, {"topics": request}) == rewritten
        options = {"no_local": False, "rap": True, "retain_handling": "send_retain"}
        assert (
            await plugin.auth_on_subscribe_m5(
                "alice", "", "dev1", [("broadcast/z", 1, options)], {}
            )
            is True
        )
        unsub = plugin.on_unsubscribe
        assert await unsub("alice", "", "dev1", ["devices/alice/x"]) is True
        assert await unsub("alice", "", "dev1", ["alias/in"]) == ["alias/out"]
        assert await unsub("alice", "", "dev1", ["nope"]) is False  # host: unchanged


async def test_cache_is_dropped_when_the_client_goes(lua_dir, run, host) -> None:
    lua = lua_dir("acl_cache")
    async with run({"script_dir": str(lua)}, host=host) as plugin:
        pub = plugin.auth_on_publish
        topic = "devices/alice/dev1/t"
        for hook in (plugin.on_client_gone, plugin.on_client_offline, plugin.on_session_expired):
            await _login(plugin)
            assert await pub("alice", "", "dev1", 0, topic, b"", False) is True
            await hook("", "dev1")
            # back to the Lua hook, which says false
            assert ("", "dev1") not in plugin.auth_cache
            assert await pub("alice", "", "dev1", 0, topic, b"", False) is False
        # A notification that arrives after the client came back keeps the new entry.
        await _login(plugin)
        host.known_clients.add(("", "dev1"))
        host.online.add(("", "dev1"))
        await plugin.on_client_gone("", "dev1")
        assert await pub("alice", "", "dev1", 0, topic, b"", False) is True


async def test_cache_entries_are_per_subscriber_id(lua_dir, run, host) -> None:
    lua = lua_dir("acl_cache")
    async with run({"script_dir": str(lua)}, host=host) as plugin:
        await _login(plugin, "dev1", mountpoint="m1")
        pub = plugin.auth_on_publish
        assert await pub("alice", "m1", "dev1", 1, "mp/m1/status", b"", False) is True
        # Same client id, other mountpoint: no entry, so the Lua hook answers.
        assert await pub("alice", "m2", "dev1", 1, "mp/m1/status", b"", False) is False


async def test_cache_modifiers_for_mqtt5_publish(lua_dir, run) -> None:
    lua = lua_dir(
        m5="""
        function auth_on_register_m5(reg)
          auth_cache.insert(reg.mountpoint, reg.client_id, reg.username, {
            {pattern = "t/#", modifiers = {properties = {p_user_property = {{a = "new"}}}}},
          }, {})
          return true
        end
        hooks = {auth_on_register_m5 = auth_on_register_m5}
        """
    )
    async with run({"script_dir": str(lua)}) as plugin:
        await plugin.auth_on_register_m5(
            "127.0.0.1", 1, "", "c", "u", None, True, {}, None, None, None, None
        )
        result = await plugin.auth_on_publish_m5(
            "u", "", "c", 0, "t/1", b"", False,
            {"p_user_property": [("a", "old"), ("b", "kept")], "p_content_type": "x"},
        )  # fmt: skip
        assert result == {
            "properties": {
                "p_user_property": [("b", "kept"), ("a", "new")],
                "p_content_type": "x",
            }
        }
        validate_modifiers("auth_on_publish_m5", result)
        # The same ACL for an MQTT 3 publish: no properties in MQTT 3.
        assert await plugin.auth_on_publish("u", "", "c", 0, "t/1", b"", False) == {}
