"""The Lua modules: json, kv, log, crypto, bcrypt, obf, auth_cache (Lua side), vmq_api.

Most checks are Lua ``assert``s in the script's main chunk, as in VerneMQ's own module tests:
the script loads only if every assertion holds.
"""

from __future__ import annotations

import json

import bcrypt
import pytest
from structlog.testing import capture_logs

from plugin_host.settings import ConfigError

EQUALS = """
local function equals(a, b)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  for k, v in pairs(a) do if not equals(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end
"""

JSON = (
    EQUALS
    + r"""
assert(json.encode({awesome = true, format = "json"}) == '{"awesome":true,"format":"json"}')
assert(equals(json.decode('{"awesome":true,"format":"json"}'), {awesome = true, format = "json"}))
assert(json.encode({"a", "list", "of", "words"}) == '["a","list","of","words"]')
assert(equals(json.decode('{"a":{"b":{"c":"hello","d":[1,2,3,4,5]}}}'),
              {a = {b = {c = "hello", d = {1, 2, 3, 4, 5}}}}))
-- an empty table is an empty object; an empty array decodes to an empty table
assert(json.encode({}) == "{}")
assert(json.encode({a = {}}) == '{"a":{}}')
assert(equals(json.decode('{"a":[]}'), {a = {}}))
assert(json.decode("[1, 2.5, true]")[2] == 2.5)
assert(json.decode('"h\\u00e9"') == "h\195\169")
assert(json.decode("[123456789012345678901234567890]")[1] > 1e29)
-- what cannot be encoded/decoded gives nil
assert(json.encode({f = function() end}) == nil)
assert(json.encode({bad = "\255"}) == nil)
assert(json.decode("{not json") == nil)
assert(not pcall(json.decode, {}))
hooks = {}
"""
)

KV = r"""
kv.ensure_table({name = "kv_test"})
assert(kv.delete_all("kv_test"))
assert(kv.insert("kv_test", {hello = "world"}))
assert(kv.insert_new("kv_test", {hello = "earth"}) == false)
assert(kv.insert("kv_test", {hello = "earth"}))
assert(kv.lookup("kv_test", "hello")[1] == "earth")
assert(#kv.lookup("kv_test", "hello") == 1)
local obj = {a = {b = {c = {d = "hello"}}}}
assert(kv.insert("kv_test", obj))
assert(kv.lookup("kv_test", "a")[1].b.c.d == "hello")
kv.lookup("kv_test", "a")[1].b = "changed"            -- a copy: the stored value stays
assert(kv.lookup("kv_test", "a")[1].b.c.d == "hello")
assert(kv.delete("kv_test", "a"))
assert(#kv.lookup("kv_test", "a") == 0)

kv.ensure_table({name = "bag", type = "bag"})
kv.insert("bag", {k = "v1"}); kv.insert("bag", {k = "v1"}); kv.insert("bag", {k = "v2"})
assert(#kv.lookup("bag", "k") == 2)
kv.ensure_table({name = "dbag", type = "duplicate_bag"})
kv.insert("dbag", {k = "v1"}); kv.insert("dbag", {k = "v1"})
assert(#kv.lookup("dbag", "k") == 2)
kv.ensure_table({name = "ordered", type = "ordered_set"})
kv.insert("ordered", {b = 2, a = 1})
kv.insert("ordered", {a = 3})
assert(kv.lookup("ordered", "a")[1] == 3)
assert(kv.insert_new("ordered", {c = 1, z = 9}) == true)
assert(kv.insert_new("ordered", {y = 1, z = 0}) == false)   -- z exists: nothing inserted
assert(#kv.lookup("ordered", "y") == 0)
kv.ensure_table({})                                       -- name defaults to simple_kv
assert(kv.insert("simple_kv", {x = true}))

local ok, err = pcall(kv.insert, "no_such_table", {x = 1})
assert(not ok and string.find(err, "unknown table"), err)
-- module errors point at the script line that called the module
ok, err = pcall(function() kv.insert("no_such_table", {x = 1}) end)
assert(string.find(err, "^module_test.lua:%d+: kv: unknown table"), err)
ok, err = pcall(function() local _ = obf.decrypt(nil) end)
assert(string.find(err, "^module_test.lua:%d+: obf.decrypt must be a string"), err)
ok, err = pcall(function() local _ = bcrypt.hashpw("pw", "not a salt") end)
assert(string.find(err, "^module_test.lua:%d+: bcrypt.hashpw: invalid salt"), err)
ok, err = pcall(kv.ensure_table, {name = "t", type = "hash"})
assert(not ok and string.find(err, "type must be one of"), err)
hooks = {}
"""

CRYPTO = r"""
assert(crypto.hash("md5", "hello") ==
       "\x5d\x41\x40\x2a\xbc\x4b\x2a\x76\xb9\x71\x9d\x91\x10\x17\xc5\x92")
assert(crypto.hash("sha", "hello") ==
       "\xaa\xf4\xc6\x1d\xdc\xc5\xe8\xa2\xda\xbe\xde\x0f\x3b\x48\x2c\xd9\xae\xa9\x43\x4d")
assert(#crypto.hash("sha256", "hello") == 32 and #crypto.hash("sha3_512", "hello") == 64)
local ok, err = pcall(crypto.hash, "unknown_hash_method_xyz", "hello")
assert(not ok and string.find(err, "unknown algorithm"), err)
hooks = {}
"""

BCRYPT = r"""
local salt = bcrypt.gen_salt()
assert(string.sub(salt, 1, 7) == "$2b$12$", salt)
local hash = bcrypt.hashpw("my-password", salt)
assert(bcrypt.hashpw("my-password", hash) == hash)
assert(bcrypt.hashpw("other", hash) ~= hash)
local ok, err = pcall(bcrypt.hashpw, "pw", "not a salt")
assert(not ok and string.find(err, "invalid salt"), err)
hooks = {}
"""


@pytest.mark.parametrize("source", [JSON, KV, CRYPTO], ids=["json", "kv", "crypto"])
async def test_module_script_loads(lua_dir, run, source: str) -> None:
    lua = lua_dir(module_test=source)
    async with run({"script_dir": str(lua)}) as plugin:
        assert [s.name for s in plugin.scripts] == ["module_test"]


async def test_bcrypt(lua_dir, run) -> None:
    lua = lua_dir(module_test=BCRYPT)
    async with run({"script_dir": str(lua), "bcrypt.default_log_rounds": 12}) as plugin:
        assert plugin.scripts


async def test_bcrypt_verifies_hashes_made_elsewhere(lua_dir, run) -> None:
    stored = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    lua = lua_dir(
        settings={"stored": stored},
        check="""
        local settings = require "lib.settings"
        hooks = {auth_on_register = function(reg)
          local pw = obf.decrypt(reg.password)
          return bcrypt.hashpw(pw, settings.stored) == settings.stored
        end}
        """,
    )
    async with run({"script_dir": str(lua)}) as plugin:
        call = plugin.auth_on_register
        assert await call("1.1.1.1", 1, "", "c", "u", b"pw", True, None, None, None, None) is True
        denied = await call("1.1.1.1", 1, "", "c", "u", b"no", True, None, None, None, None)
        assert denied is not True


async def test_kv_is_shared_between_scripts_and_states_but_not_plugins(lua_dir, run) -> None:
    lua = lua_dir("kv_json")
    values = {"script_dir": str(lua), "nr_lua_states": 3}
    async with run(values) as plugin:
        call = plugin.auth_on_register
        results = [
            await call("1.1.1.1", 1, "", f"c{i}", "bob", None, True, None, None, None, None)
            for i in range(4)
        ]
        assert results[:3] == [True, True, True]
        assert results[3] is not True  # refused after three registrations
        assert plugin.kv.lookup("registrations", b"bob") == [3]

        rewritten = await plugin.auth_on_publish("bob", "", "c0", 1, "t", b'{"temp": 21.5}', False)
        assert json.loads(rewritten["payload"]) == {"temp": 21.5, "checked": True, "by": "bob"}
        assert await plugin.auth_on_publish("bob", "", "c0", 1, "t", b"raw", False) is True
        await plugin.on_publish("bob", "", "c0", 1, "a/b", b"12345", False)
        await plugin.on_publish("bob", "", "c0", 0, "a/b", b"12345", False)
        audit = [json.loads(v) for v in plugin.kv.lookup("audit", b"c0")]
        assert audit == [
            {"qos": 1, "size": 5, "topic": "a/b"},
            {"qos": 0, "size": 5, "topic": "a/b"},
        ]
    # A new lifespan (another plugin instance or a restart) starts with empty tables.
    async with run(values) as plugin:
        assert plugin.kv.lookup("registrations", b"bob") == []


async def test_log_and_print(lua_dir, run) -> None:
    lua = lua_dir(
        logger="""
        hooks = {on_client_wakeup = function(c)
          log.info("woke " .. c.client_id)
          log.warning("careful")
          log.error("bad")
          log.debug("details")
          print("printed", 1, true, nil)
          assert(not pcall(log.info, {}))
        end}
        """
    )
    async with run({"script_dir": str(lua)}) as plugin:
        with capture_logs() as logs:
            await plugin.on_client_wakeup("", "c9")
        lua_logs = [(e["log_level"], e["message"]) for e in logs if e["event"] == "lua_log"]
        assert lua_logs == [
            ("info", "woke c9"),
            ("warning", "careful"),
            ("error", "bad"),
            ("debug", "details"),
            ("info", "printed\t1\ttrue\tnil"),
        ]
        assert all(e.get("script") == "logger" for e in logs if e["event"] == "lua_log")


async def test_vmq_api(lua_dir, run, host) -> None:
    host.known_clients.add(("mp", "known"))
    lua = lua_dir(
        api="""
        hooks = {on_client_wakeup = function(c)
          local r1 = vmq_api.disconnect_by_subscriber_id({mountpoint = "mp", client_id = "known"},
                                                         {do_cleanup = true})
          local r2 = vmq_api.disconnect_by_subscriber_id({mountpoint = "mp", client_id = "x"}, {})
          local sid = {mountpoint = "", client_id = "c"}
          local r3 = vmq_api.reauthorize_subscriptions("alice", sid, {})
          kv.ensure_table({name = "r"})
          kv.insert("r", {r = r1 .. "," .. r2 .. "," .. r3})
          assert(not pcall(vmq_api.disconnect_by_subscriber_id, "nope", {}))
        end}
        """
    )
    async with run({"script_dir": str(lua)}, host=host) as plugin:
        await plugin.on_client_wakeup("", "c")
        assert plugin.kv.lookup("r", b"r") == [b"ok,not_found,ok"]
    assert host.disconnects == [("mp", "known", True), ("mp", "x", False)]
    assert host.reauthorized == [("", "c", "alice")]


AUTH_CACHE = """
local mountpoint, client_id, user = "", "test-client", "test-user"
local acls = {{pattern = "a/+/c"}, {pattern = "c/#"}}
assert(auth_cache.insert(mountpoint, client_id, user, acls, acls) == true)
assert(auth_cache.match_subscribe(mountpoint, client_id, "a/+/c", 1) == true)
assert(auth_cache.match_subscribe(mountpoint, client_id, "a/b/c", 1) == true)
assert(auth_cache.match_subscribe(mountpoint, client_id, "c/b/a", 1) == true)
assert(auth_cache.match_subscribe(mountpoint, client_id, "a/b/d", 1) == false)
assert(auth_cache.match_publish(mountpoint, client_id, "a/b/c", 1, "hello", false) == true)
assert(auth_cache.match_publish(mountpoint, client_id, "d/d/d", 1, "hello", false) == false)

local complex = {{pattern = "a/+/c", max_qos = 1, max_payload_size = 5, allowed_retain = false}}
assert(auth_cache.insert(mountpoint, "complex", user, complex, complex))
assert(auth_cache.match_subscribe(mountpoint, "complex", "a/+/c", 2) == false)
assert(auth_cache.match_subscribe(mountpoint, "complex", "a/+/c", 1) == true)
assert(auth_cache.match_publish(mountpoint, "complex", "a/b/c", 2, "hello", false) == false)
assert(auth_cache.match_publish(mountpoint, "complex", "a/b/c", 1, "hello world", false) == false)
assert(auth_cache.match_publish(mountpoint, "complex", "a/b/c", 1, "hello", true) == false)
assert(auth_cache.match_publish(mountpoint, "complex", "a/b/c", 1, "hello", false) == true)

local pub_mods = {{pattern = "a/+/c", modifiers = {topic = "hello/world", payload = "hello world",
  qos = 1, retain = true, properties = {p_content_type = "cache-content-type"}}}}
local sub_mods = {{pattern = "a/+/c", modifiers = {{"hello/world", 2}}}}
assert(auth_cache.insert(mountpoint, "mods", user, pub_mods, sub_mods))
local ret = auth_cache.match_subscribe(mountpoint, "mods", "a/+/c", 1)
assert(ret[1][1] == "hello/world" and ret[1][2] == 2)
ret = auth_cache.match_publish(mountpoint, "mods", "a/b/c", 2, "hello", false)
assert(ret.topic == "hello/world" and ret.payload == "hello world" and ret.qos == 1)
assert(ret.retain == true and ret.properties.p_content_type == "cache-content-type")

-- %u / %c / %m are replaced by whole topic levels
assert(auth_cache.insert("mp1", "cid", "usr", {{pattern = "x/%m/%u/%c/+/#"}}, {}))
assert(auth_cache.match_publish("mp1", "cid", "x/mp1/usr/cid/any/more", 0, "", false) == true)
assert(auth_cache.match_publish("mp1", "cid", "x/mp1/usr/other/any", 0, "", false) == false)
-- no entry: no match
assert(auth_cache.match_publish("", "nobody", "a/b/c", 0, "", false) == false)
assert(not pcall(auth_cache.insert, "", "x", "u", "not a table", {}))
hooks = {}
"""


async def test_auth_cache_module(lua_dir, run, host) -> None:
    lua = lua_dir(cache_test=AUTH_CACHE)
    async with run({"script_dir": str(lua)}, host=host) as plugin:
        assert len(plugin.auth_cache) == 4
        # The cache is now in use: the plugin answers the ACL-checked hooks.
        assert "auth_on_publish" in plugin.plugin_host_active_hooks()


async def test_database_modules_are_absent(lua_dir, run) -> None:
    lua = lua_dir(
        db="""
        for _, name in ipairs({"mysql", "mysql2", "postgres", "cockroachdb", "mongodb", "redis",
                               "memcached"}) do
          assert(_G[name] == nil, name)
        end
        hooks = {}
        """
    )
    async with run({"script_dir": str(lua)}) as plugin:
        assert plugin.scripts
    with pytest.raises(ConfigError) as caught:
        async with run({"script_dir": str(lua), "auth_postgres.enabled": True}):
            pass
    assert caught.value.key == "diversity.auth_postgres.enabled"
    assert "database modules" in caught.value.reason
