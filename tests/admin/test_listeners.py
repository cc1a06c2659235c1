"""``plugin-host admin listener ...`` and /health against the broker's listener manager."""

from __future__ import annotations

import json
from typing import Any

from plugin_host.mqtt import Disconnect
from plugin_host.testing import open_client
from plugin_host.testing.client import ConnectionRefused


def parsed(result: Any) -> Any:
    return json.loads(result.stdout)


async def test_listener_show_stop_start(admin_broker: Any, cli: Any) -> None:
    async with admin_broker("listener.tcp.second = 127.0.0.1:0\n") as admin:
        second = admin.running.listener_address("second")
        rows = parsed(await admin.cli("listener", "show", "--json"))
        assert [(r["id"], r["state"]) for r in rows] == [
            ("tcp.default", "running"),
            ("tcp.second", "running"),
            ("http.admin", "running"),
        ]
        async with open_client(admin.address, client_id="stays") as stays:
            stopped = parsed(await admin.cli("listener", "stop", "tcp.second", "--json"))
            assert stopped["state"] == "stopped"
            health = await admin.request("GET", "/health", key=None)
            assert health.status == 503
            assert json.loads(health.body)["listeners"]["tcp.second"] == "stopped"
            try:
                async with open_client(second, client_id="refused", timeout=2):
                    raise AssertionError("connected to a stopped listener")
            except (OSError, ConnectionRefused, TimeoutError):
                pass
            await stays.publish("still/here", b"x", qos=1)  # other listeners untouched

            started = await admin.cli("listener", "start", "second")
            assert started.stdout.strip() == "tcp.second: running"
            async with open_client(second, client_id="back") as back:
                await back.publish("t", b"x", qos=1)
            assert (await admin.request("GET", "/health", key=None)).status == 200
            unknown = await admin.cli("listener", "stop", "nope", ok=False)
    assert unknown.exit_code == 1
    assert "(HTTP 404, not_found)" in unknown.stderr


async def test_listener_stop_with_kill_sessions(admin_broker: Any, cli: Any) -> None:
    async with admin_broker("listener.tcp.second = 127.0.0.1:0\n") as admin:
        second = admin.running.listener_address("second")
        async with (
            open_client(admin.address, client_id="elsewhere") as elsewhere,
            open_client(second, client_id="victim", protocol=5) as victim,
        ):
            await admin.cli("listener", "stop", "tcp.second", "--kill-sessions")
            packet = await victim.receive_packet(Disconnect)
            assert packet.reason_code == 0x98
            await victim.wait_closed()
            await elsewhere.publish("t", b"x", qos=1)  # another listener's client stays
            rows = parsed(await admin.cli("listener", "show", "--json"))
    states = {r["id"]: (r["state"], r["connections"]) for r in rows}
    assert states["tcp.second"] == ("stopped", 0)
    assert states["tcp.default"] == ("running", 1)
