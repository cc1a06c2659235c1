"""The bundled plugins' metrics: webhooks (with a real webhook server) and Lua scripts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
import trio.testing

from plugin_host.testing import open_client
from plugin_host.testing.http_server import Request, Response, open_http_server
from plugin_host_diversity.plugin import DiversityPlugin
from plugin_host_webhooks.plugin import WebhooksPlugin


async def test_webhook_counters_and_cache_after_real_calls(admin_broker: Any) -> None:
    async def handler(request: Request) -> Response:
        return Response.json({"result": "ok"}, headers=[("cache-control", "max-age=60")])

    async with open_http_server(handler) as server:
        url = server.url("/publish")
        extra = f"webhooks.w1.hook = auth_on_publish\nwebhooks.w1.endpoint = {url}\n"
        async with (
            admin_broker(extra, plugins={"webhooks": WebhooksPlugin()}) as admin,
            open_client(admin.address, client_id="wh") as client,
        ):
            # Same client and topic: the second answer comes from the cache.
            await client.publish("a/b", b"first", qos=1)
            await client.publish("a/b", b"second", qos=1)
            m = await admin.scrape()
        body_bytes = sum(len(r.body) for r in server.requests)

    assert len(server.requests) == 1
    assert m.value("webhooks_auth_on_publish_requests_total") == 1
    assert m.value("webhooks_auth_on_publish_errors_total") == 0
    assert m.value("webhooks_auth_on_publish_bytes_sent_total") == body_bytes
    assert m.value("webhooks_auth_on_publish_timeouts_total") == 0
    assert m.value("webhooks_auth_on_publish_cancelled_total") == 0
    assert m.value("webhooks_auth_on_publish_elapsed_seconds_total") > 0
    key = {"endpoint": url, "hook": "auth_on_publish"}
    assert m.value("webhooks_cache_hits_total", **key) == 1
    assert m.value("webhooks_cache_misses_total", **key) == 1
    assert m.value("webhooks_cache_entries", **key) == 1
    # The broker's own view of the same hook (plugin "webhooks").
    hook = {"plugin": "webhooks", "hook": "auth_on_publish"}
    assert m.value("plugin_host_hook_calls_total", **hook) == 2


async def test_webhook_errors_are_counted(admin_broker: Any) -> None:
    async def handler(request: Request) -> Response:
        return Response(status=500, body=b"down")

    async with open_http_server(handler) as server:
        url = server.url("/sub")
        extra = f"webhooks.w1.hook = auth_on_subscribe\nwebhooks.w1.endpoint = {url}\n"
        async with (
            admin_broker(extra, plugins={"webhooks": WebhooksPlugin()}) as admin,
            open_client(admin.address, client_id="wh") as client,
        ):
            assert await client.subscribe([("a", 0)]) == [0x80]
            m = await admin.scrape()
    assert m.value("webhooks_auth_on_subscribe_requests_total") == 1
    assert m.value("webhooks_auth_on_subscribe_errors_total") == 1


LUA = """
function auth_on_publish_m5(pub)
    if pub.topic == "lua/fail" then
        error("refused by a bug")
    end
    return true
end

function on_publish_m5(pub)
end

hooks = {auth_on_publish_m5 = auth_on_publish_m5, on_publish_m5 = on_publish_m5}
"""


async def test_lua_calls_errors_and_time_per_script_and_hook(
    admin_broker: Any, tmp_path: Path
) -> None:
    scripts = tmp_path / "lua"
    scripts.mkdir()
    (scripts / "acl.lua").write_text(LUA)
    extra = f"diversity.script_dir = {scripts}\ndiversity.reload_on_sighup = off\n"
    async with (
        admin_broker(extra, plugins={"diversity": DiversityPlugin()}) as admin,
        open_client(admin.address, client_id="lua", protocol=5) as client,
    ):
        for _ in range(3):
            await client.publish("lua/ok", b"x", qos=1)
        ack = await client.publish("lua/fail", b"x", qos=1)
        assert ack.reason_code == 0x87  # the script failed: deny (on_error = deny)
        assert (await client.publish("lua/io", b"x", qos=1)).reason_code == 0
        # on_publish is a notification: wait until the workers are idle.
        await trio.testing.wait_all_tasks_blocked()
        m = await admin.scrape()
    assert m.value("diversity_hook_calls_total", script="acl", hook="on_publish_m5") == 4
    publish = {"script": "acl", "hook": "auth_on_publish_m5"}
    assert m.value("diversity_hook_calls_total", **publish) == 5
    assert m.value("diversity_hook_errors_total", **publish) == 1
    assert m.value("diversity_hook_duration_seconds_count", **publish) == 5
    assert m.value("diversity_hook_duration_seconds_sum", **publish) > 0
    assert m.value("diversity_scripts") == 1
