"""``plugin-host admin ...`` against a broker started in the test (in-process and subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from plugin_host.mqtt import Disconnect
from plugin_host.testing import open_client
from plugin_host.testing.http_server import Request, Response, open_http_server
from plugin_host_diversity.plugin import DiversityPlugin
from plugin_host_webhooks.plugin import WebhooksPlugin


def parsed(result: Any) -> Any:
    return json.loads(result.stdout)


async def test_status_plugin_show_and_metrics_show(admin_broker: Any, cli: Any) -> None:
    class Quiet:
        pass

    async with (
        admin_broker(plugins={"quiet": Quiet()}) as admin,
        open_client(admin.address, client_id="c") as client,
    ):
        await client.publish("t", b"x", qos=1)
        status = parsed(await admin.cli("status", "--json"))
        status_text = (await admin.cli("status")).stdout
        plugins = parsed(await admin.cli("plugin", "show", "--json"))
        plugins_text = (await admin.cli("plugin", "show")).stdout
        samples = parsed(await admin.cli("metrics", "show", "publishes_received", "--json"))
        metrics_text = (await admin.cli("metrics", "show", "connects")).stdout
    assert status["node"] == "plugin-host"
    assert status["connects"] == 1
    assert status["publishes_received"] == 1
    assert "sessions_online" in status_text
    assert [p["name"] for p in plugins] == ["quiet"]
    assert plugins[0]["enabled"] is True
    assert plugins_text.splitlines()[0].split()[:3] == ["plugin", "enabled", "priority"]
    assert "quiet" in plugins_text
    assert {
        "name": "plugin_host_publishes_received_total",
        "labels": {"qos": "1"},
        "value": 1.0,
    } in (samples)
    assert all("publishes_received" in s["name"] for s in samples)
    assert "plugin_host_connects_total" in metrics_text


async def test_session_show_and_disconnect_seen_by_the_clients(
    admin_broker: Any, cli: Any, paho: Any
) -> None:
    async with (
        admin_broker() as admin,
        open_client(admin.address, client_id="dev-1", protocol=5) as v5,
    ):
        legacy = paho(admin.address, "dev-2", clean=False)
        await legacy.connect()
        rows = parsed(await admin.cli("session", "show", "--json"))
        table = (await admin.cli("session", "show", "--online")).stdout
        assert [r["client_id"] for r in rows] == ["dev-1", "dev-2"]
        assert table.splitlines()[0].split()[0] == "client_id"
        assert "dev-1" in table and "dev-2" in table

        # MQTT 5: DISCONNECT 0x98 (administrative action).
        out = parsed(await admin.cli("session", "disconnect", "dev-1", "--json"))
        assert out == {
            "client_id": "dev-1",
            "mountpoint": "",
            "disconnected": True,
            "cleanup": False,
        }
        packet = await v5.receive_packet(Disconnect)
        assert packet.reason_code == 0x98
        await v5.wait_closed()

        # MQTT 3.1.1 persistent session: disconnected, kept offline...
        await admin.cli("session", "disconnect", "dev-2")
        await legacy.wait_disconnected()
        legacy.stop()
        offline = parsed(await admin.cli("session", "show", "--offline", "--json"))
        assert [r["client_id"] for r in offline] == ["dev-2"]
        # ... until --cleanup deletes it.
        await admin.cli("session", "disconnect", "dev-2", "--cleanup")
        assert parsed(await admin.cli("session", "show", "--json")) == []
        missing = await admin.cli("session", "disconnect", "dev-2", ok=False)
    assert missing.exit_code == 1
    assert "no session 'dev-2' (HTTP 404, not_found)" in missing.stderr


async def test_webhooks_register_real_call_show_cache_deregister(
    admin_broker: Any, cli: Any
) -> None:
    async def handler(request: Request) -> Response:
        return Response.json({"result": "ok"}, headers=[("cache-control", "max-age=60")])

    async with open_http_server(handler) as server:
        url = server.url("/hook")
        async with admin_broker(plugins={"webhooks": WebhooksPlugin()}) as admin:
            assert parsed(await admin.cli("webhooks", "show", "--json")) == []
            # vmq-admin's key=value form
            row = parsed(
                await admin.cli(
                    "webhooks", "register", "hook=auth_on_publish", f"endpoint={url}", "--json"
                )
            )
            assert row["endpoint"] == url
            async with open_client(admin.address, client_id="wh") as client:
                await client.publish("a/b", b"1", qos=1)
                await client.publish("a/b", b"2", qos=1)  # answered from the cache
                assert len(server.requests) == 1
                request = server.requests[0]
                assert request.header("vernemq-hook") == "auth_on_publish"
                assert request.json()["topic"] == "a/b"

                shown = parsed(await admin.cli("webhooks", "show", "--json"))
                assert [(w["hook"], w["endpoint"]) for w in shown] == [("auth_on_publish", url)]
                assert shown[0]["stats"]["requests"] == 1
                assert "auth_on_publish" in (await admin.cli("webhooks", "show")).stdout

                again = await admin.cli(
                    "webhooks", "register", "--hook", "auth_on_publish", "--endpoint", url, ok=False
                )
                assert again.exit_code == 1
                assert "(HTTP 409, already_registered)" in again.stderr

                cache = parsed(await admin.cli("webhooks", "cache", "show", "--json"))
                assert cache == [
                    {
                        "endpoint": url,
                        "hook": "auth_on_publish",
                        "hits": 1,
                        "misses": 1,
                        "entries": 1,
                    }
                ]
                reset = parsed(await admin.cli("webhooks", "cache", "show", "--reset", "--json"))
                assert reset[0]["hits"] == 1
                zeroed = parsed(await admin.cli("webhooks", "cache", "show", "--json"))
                assert (zeroed[0]["hits"], zeroed[0]["entries"]) == (0, 1)
                await admin.cli("webhooks", "cache", "clear")
                cache = parsed(await admin.cli("webhooks", "cache", "show", "--json"))
                assert all(row["entries"] == 0 for row in cache)
                await client.publish("a/b", b"3", qos=1)  # cache cleared: a real call again
                assert len(server.requests) == 2

                out = await admin.cli(
                    "webhooks", "deregister", "--hook", "auth_on_publish", "--endpoint", url
                )
                assert out.stdout.startswith("deregistered")
                await client.publish("a/b", b"4", qos=1)  # no webhook left: no call
                await client.sync()
                assert len(server.requests) == 2
                gone = await admin.cli(
                    "webhooks", "deregister", "hook=auth_on_publish", f"endpoint={url}", ok=False
                )
    assert gone.exit_code == 1
    assert "(HTTP 404, not_found)" in gone.stderr


SCRIPT = """
function auth_on_publish_m5(pub)
    return {verdict}
end
hooks = {{auth_on_publish_m5 = auth_on_publish_m5}}
"""


async def test_script_show_and_reload(admin_broker: Any, cli: Any, tmp_path: Path) -> None:
    scripts = tmp_path / "lua"
    scripts.mkdir()
    script = scripts / "gate.lua"
    script.write_text(SCRIPT.format(verdict="true"))
    extra = f"diversity.script_dir = {scripts}\ndiversity.reload_on_sighup = off\n"
    async with (
        admin_broker(extra, plugins={"diversity": DiversityPlugin()}) as admin,
        open_client(admin.address, client_id="lua", protocol=5) as client,
    ):
        assert (await client.publish("t", b"x", qos=1)).reason_code == 0
        shown = parsed(await admin.cli("script", "show", "--json"))
        assert [s["name"] for s in shown] == ["gate"]
        assert shown[0]["hooks"][0]["hook"] == "auth_on_publish_m5"
        assert shown[0]["hooks"][0]["calls"] == 1
        assert "gate" in (await admin.cli("script", "show")).stdout

        script.write_text(SCRIPT.format(verdict="false"))
        report = parsed(await admin.cli("script", "reload", "--json"))
        assert report == {"plugin": "diversity", "scripts": {"gate": "reloaded"}}
        assert (await client.publish("t", b"x", qos=1)).reason_code == 0x87

        script.write_text("this is not lua")
        text = (await admin.cli("script", "reload")).stdout
        assert "kept previous version" in text
        assert (await client.publish("t", b"x", qos=1)).reason_code == 0x87
        calls = parsed(await admin.cli("script", "show", "--json"))[0]["hooks"][0]["calls"]
    assert calls == 3  # counted across reloads


async def test_wrong_or_missing_key_exit_1(admin_broker: Any, cli: Any) -> None:
    async with admin_broker() as admin:
        wrong = await admin.cli("session", "show", key="wrong", ok=False)
        missing = await admin.cli("session", "show", key=None, ok=False)
        nowhere = await cli("--url", "http://127.0.0.1:1", "status", ok=False)
    assert wrong.exit_code == missing.exit_code == nowhere.exit_code == 1
    assert "wrong API key (HTTP 401, unauthorized)" in wrong.stderr
    assert "missing API key" in missing.stderr
    assert "cannot reach the broker at http://127.0.0.1:1" in nowhere.stderr


async def test_key_from_the_config_file_or_the_environment(
    admin_broker: Any, cli: Any, api_key: str
) -> None:
    async with admin_broker() as admin:
        from_config = await cli(
            "--config", str(admin.config_path), "--url", admin.url, "status", "--json"
        )
        from_env = await cli(
            "--url", admin.url, "status", "--json", env={"PLUGIN_HOST_API_KEY": api_key}
        )
    assert parsed(from_config)["node"] == parsed(from_env)["node"] == "plugin-host"


async def test_url_from_the_config_file(cli: Any, tmp_path: Path) -> None:
    conf = tmp_path / "b.conf"
    conf.write_text("listener.http.admin = 0.0.0.0:1\nadmin.api_key = k\n")
    result = await cli("--config", str(conf), "status", ok=False)
    assert result.exit_code == 1
    assert "cannot reach the broker at http://127.0.0.1:1" in result.stderr


async def test_admin_as_a_real_subprocess(admin_broker: Any, api_key: str) -> None:
    async with admin_broker() as admin, open_client(admin.address, client_id="sub-proc"):
        command = [
            sys.executable,
            "-c",
            "from plugin_host.cli import main; main()",
            "admin",
            "--url",
            admin.url,
            "session",
            "show",
            "--json",
        ]
        with trio.fail_after(60):
            done = await trio.run_process(
                command,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env={"PLUGIN_HOST_API_KEY": api_key, "PATH": "/usr/bin:/bin"},
                stdin=subprocess.DEVNULL,
            )
    assert done.returncode == 0, done.stderr
    assert [s["client_id"] for s in json.loads(done.stdout)] == ["sub-proc"]
