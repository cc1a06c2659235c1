"""The Lua scripts through a real broker, with paho-mqtt clients (MQTT 3.1.1 and 5)."""

from __future__ import annotations

import pytest
import trio

from plugin_host import Deny, hookimpl
from plugin_host.settings import Config, PluginSection, PluginSettings
from plugin_host.testing import run_broker
from plugin_host.testing.http_server import Request, Response, open_http_server, server_tls_context
from plugin_host_diversity.plugin import DiversityPlugin

V5 = pytest.mark.parametrize("v5", [False, True], ids=["v3.1.1", "v5"])


def config(script_dir, **values) -> Config:
    cfg = Config()
    cfg.sections["diversity"] = PluginSection(
        plugin="diversity",
        values={"script_dir": str(script_dir), "reload_on_sighup": False, **values},
    )
    return cfg


async def credentials(request: Request) -> Response:
    doc = request.json()
    ok = request.client_cert is not None and (doc["username"], doc["password"]) == (
        "alice",
        "wonderland",
    )
    return Response.json({"result": "ok" if ok else "error"})


@V5
async def test_register_over_https_mtls(lua_dir, paho, ca, tls_files, v5) -> None:
    tls = server_tls_context(ca, require_client_cert=True)
    async with open_http_server(credentials, tls=tls) as server:
        server.delay = 0.05
        lua = lua_dir(
            "auth_https",
            settings={
                "auth_url": server.url("/auth", host="localhost"),
                "cafile": str(tls_files.cafile),
                "certfile": str(tls_files.certfile),
                "keyfile": str(tls_files.keyfile),
            },
        )
        async with run_broker(
            config(lua), plugins={"diversity": DiversityPlugin()}, allow_anonymous=False
        ) as broker:
            good = paho(broker.address, "good", v5=v5, username="alice", password="wonderland")
            assert await good.connect() == 0
            wrong = paho(broker.address, "bad", v5=v5, username="alice", password="nope")
            # false from the script: MQTT 3.1.1 CONNACK 4 / MQTT 5 0x86 (paho: 0x86 for both)
            assert await wrong.connect() == 0x86
        assert len(server.requests) == 2


@V5
async def test_publish_rewrite_subscribe_filter_and_deliver(lua_dir, paho, v5) -> None:
    lua = lua_dir("publish_rewrite", "subscribe_filter", "deliver")
    async with run_broker(
        config(lua), plugins={"diversity": DiversityPlugin()}, allow_anonymous=True
    ) as broker:
        client = paho(broker.address, "reader", v5=v5)
        assert await client.connect() == 0
        # auth_on_subscribe: secret/# rejected in its slot, qos capped at 1
        assert await client.subscribe("secret/plans", 1) == [0x87 if v5 else 0x80]
        assert await client.subscribe("shout/#", 2) == [1]
        assert await client.subscribe("news/#", 1) == [1]

        # auth_on_publish: the payload is rewritten before routing
        assert await client.publish("shout/hi", b"hello there", qos=1) == 0
        message = await client.receive()
        assert (message.topic, message.payload) == ("shout/hi", b"HELLO THERE")
        if v5:
            assert ("checked_by", "lua") in message.properties.UserProperty
            assert message.properties.ContentType == "text/upper"

        # on_deliver: stamped with the receiving client's id
        assert await client.publish("news/today", b"sunny", qos=1) == 0
        message = await client.receive()
        assert message.payload == b"[reader] sunny"


@V5
async def test_auth_cache_acls(lua_dir, paho, v5) -> None:
    lua = lua_dir("acl_cache")
    async with run_broker(
        config(lua), plugins={"diversity": DiversityPlugin()}, allow_anonymous=False
    ) as broker:
        alice = paho(broker.address, "dev1", v5=v5, username="alice", password="alice-pw")
        assert await alice.connect() == 0
        assert await alice.subscribe("devices/alice/#", 1) == [1]
        assert await alice.subscribe("broadcast/+", 1) == [1]
        assert await alice.subscribe("elsewhere/#", 1) == [0x87 if v5 else 0x80]
        assert await alice.publish("devices/alice/dev1/temp", b"21", qos=1) == 0
        message = await alice.receive()
        assert (message.topic, message.payload) == ("devices/alice/dev1/temp", b"21")
        if v5:
            # MQTT 5: a denied QoS 1 publish gets PUBACK 0x87, the client stays connected
            assert await alice.publish("devices/bob/x/temp", b"21", qos=1) == 0x87
        else:
            # MQTT 3.1.1: a denied publish disconnects the client
            await alice.publish("devices/bob/x/temp", b"21", qos=0)
            with trio.fail_after(10):
                await alice.wait_disconnected()


class Gate:
    """A Python plugin before the Lua scripts in the chain (priority 1)."""

    @hookimpl
    def auth_on_register(self, username):
        if username == "blocked":
            return Deny("blocked by the gate")
        if username == "vip":
            return True
        return None  # next: the Lua script decides

    @hookimpl
    def auth_on_register_m5(self, username):
        return self.auth_on_register(username)


@V5
async def test_priority_chain_with_a_python_plugin(lua_dir, paho, v5) -> None:
    lua = lua_dir("acl_cache")
    cfg = config(lua)
    cfg.plugins["gate"] = PluginSettings(name="gate", priority=1)
    cfg.plugins["diversity"] = PluginSettings(name="diversity", priority=2)
    plugins = {"gate": Gate(), "diversity": DiversityPlugin()}
    async with run_broker(cfg, plugins=plugins, allow_anonymous=False) as broker:
        vip = paho(broker.address, "v", v5=v5, username="vip", password="x")
        assert await vip.connect() == 0  # the gate said ok: Lua was not asked
        blocked = paho(broker.address, "b", v5=v5, username="blocked", password="alice-pw")
        assert await blocked.connect() >= 0x80
        alice = paho(broker.address, "a", v5=v5, username="alice", password="alice-pw")
        assert await alice.connect() == 0  # gate said next, Lua said ok


async def test_installed_entry_point_and_vernemq_conf(lua_dir, paho, tmp_path) -> None:
    """Discovery through the ``diversity`` entry point, configured by vernemq.conf lines."""
    from importlib.metadata import entry_points

    from plugin_host.config import load_config

    lua = lua_dir("publish_rewrite")
    conf = tmp_path / "vernemq.conf"
    conf.write_text(
        "allow_anonymous = on\n"
        "plugins.vmq_diversity = on\n"
        f"vmq_diversity.script_dir = {lua}\n"
        "vmq_diversity.reload_on_sighup = off\n"
    )
    cfg = load_config(conf)
    for ep in entry_points(group="plugin_host"):
        if ep.name != "diversity":  # keep the other installed plugins out of this broker
            cfg.plugins[ep.name] = PluginSettings(name=ep.name, enabled=False)
    async with run_broker(cfg, installed_plugins=True) as broker:
        assert broker.plugins.names == ("diversity",)
        plugin = broker.plugins.plugin("diversity")
        assert isinstance(plugin, DiversityPlugin)
        assert [s.name for s in plugin.scripts] == ["publish_rewrite"]
        client = paho(broker.address, "c")
        assert await client.connect() == 0
        assert await client.subscribe("shout/#", 1) == [1]
        assert await client.publish("shout/x", b"quiet", qos=1) == 0
        assert (await client.receive()).payload == b"QUIET"


REVOKE = """
kv.ensure_table({name = "revoked", type = "set"})

local function allowed(username, topic)
  return kv.lookup("revoked", username .. " " .. topic)[1] == nil
end

hooks = {
  auth_on_subscribe = function(sub)
    for _, t in ipairs(sub.topics) do
      if not allowed(sub.username, t[1]) then return false end
    end
    return true
  end,
  auth_on_publish = function(pub)
    if pub.topic == "admin/revoke" then
      -- payload "<client id> <topic>": revoke it and re-check that client's subscriptions
      local client_id, topic = string.match(pub.payload, "^(%S+) (%S+)$")
      kv.insert("revoked", {[pub.username .. " " .. topic] = true})
      local r = vmq_api.reauthorize_subscriptions(pub.username,
                                                  {mountpoint = "", client_id = client_id}, {})
      return {payload = r}
    end
    return true
  end,
}
"""


async def test_vmq_api_reauthorize_subscriptions_through_the_broker(lua_dir, paho) -> None:
    lua = lua_dir(revoke=REVOKE)
    async with run_broker(
        config(lua), plugins={"diversity": DiversityPlugin()}, allow_anonymous=True
    ) as broker:
        sub = paho(broker.address, "sub", username="alice", password="x")
        assert await sub.connect() == 0
        assert await sub.subscribe("news/#", 1) == [1]
        assert await sub.subscribe("admin/#", 1) == [1]
        admin = paho(broker.address, "admin", username="alice", password="x")
        assert await admin.connect() == 0
        assert await admin.publish("admin/revoke", b"sub news/#") == 0
        message = await sub.receive()
        assert (message.topic, message.payload) == ("admin/revoke", b"ok")
        info = broker.host.session("sub")
        assert info is not None and info.subscriptions == [("admin/#", 1)]
        assert await admin.publish("news/today", b"not for sub") == 0
        assert await admin.publish("admin/note", b"still for sub") == 0
        message = await sub.receive()
        assert (message.topic, message.payload) == ("admin/note", b"still for sub")
