"""The Host a plugin's lifespan receives: publish, disconnect, sessions, log, config."""

from __future__ import annotations

from contextlib import asynccontextmanager

import pytest
import trio

from plugin_host import hookimpl
from plugin_host.testing import HookRecorder, open_client, run_broker


class HostGrabber(HookRecorder):
    """Keeps the host its lifespan was given."""

    def __init__(self) -> None:
        super().__init__()
        self.host = None

    @hookimpl
    def plugin_host_lifespan(self, host, config):
        @asynccontextmanager
        async def lifespan():
            self.host = host
            yield

        return lifespan()


async def test_host_publish_reaches_subscribers_and_fires_on_publish():
    plugin = HostGrabber()
    async with run_broker(plugins={"grab": plugin}) as broker:
        host = plugin.host
        assert host is not None
        assert host.config is broker.config
        host.log.info("plugin_says_hello")
        async with (
            open_client(broker.address, client_id="s5", protocol=5) as s5,
            open_client(broker.address, client_id="s3", protocol=4) as s3,
        ):
            await s5.subscribe("from/host", qos=1)
            await s3.subscribe("from/host", qos=1)
            await host.publish(
                "from/host",
                b"hello",
                qos=1,
                properties={"p_user_property": [("k", "v")], "p_content_type": "text/plain"},
            )
            m5, m3 = await s5.receive(), await s3.receive()
            assert m5.payload == m3.payload == b"hello"
            assert m5.properties["user_property"] == [("k", "v")]
            assert m5.properties["content_type"] == "text/plain"
            assert m3.qos == 1
        published = await plugin.wait_for("on_publish_m5", topic="from/host")
        assert published["client_id"] == "" and published["payload"] == b"hello"


async def test_host_publish_retained_and_mountpoint():
    plugin = HostGrabber()
    async with run_broker(plugins={"grab": plugin}, mountpoint="m/") as broker:
        await plugin.host.publish("cfg", b"v1", qos=1, retain=True, mountpoint="m/")
        await plugin.host.publish("cfg", b"other tenant", qos=1, retain=True)
        async with open_client(broker.address, client_id="c") as c:
            await c.subscribe("cfg", qos=1)
            message = await c.receive()
            assert message.payload == b"v1" and message.retain
            await c.sync()
            assert c.pending_messages() == []


async def test_host_publish_rejects_bad_topics():
    plugin = HostGrabber()
    async with run_broker(plugins={"grab": plugin}):
        with pytest.raises(Exception, match="wildcard"):
            await plugin.host.publish("a/#", b"x")
        with pytest.raises(ValueError):
            await plugin.host.publish("a", b"x", qos=3)


async def test_host_sessions_and_disconnect():
    plugin = HostGrabber()
    async with run_broker(plugins={"grab": plugin}) as broker:
        host = plugin.host
        async with (
            open_client(broker.address, client_id="v5", protocol=5, username="u5") as v5,
            open_client(broker.address, client_id="keep", clean_start=False) as keep,
        ):
            await keep.subscribe("k/#", qos=1)
            infos = {s.client_id: s for s in host.sessions()}
            assert set(infos) == {"v5", "keep"}
            assert infos["v5"].online and infos["v5"].protocol_level == 5
            assert infos["v5"].username == "u5"
            assert infos["keep"].subscriptions == [("k/#", 1)]
            assert infos["keep"].clean_session is False
            assert host.session("nobody") is None

            assert await host.disconnect("v5") is True
            await v5.wait_closed()
            assert v5.server_disconnect.reason_code == 0x98
            assert await host.disconnect("nobody") is False

            assert await host.disconnect("keep") is True
            await keep.wait_closed()
            info = host.session("keep")
            assert info is not None and not info.online  # persistent: kept
            assert await host.disconnect("keep", do_cleanup=True) is True
            assert host.session("keep") is None


async def test_disconnect_by_host_during_traffic_is_clean():
    plugin = HostGrabber()
    async with run_broker(plugins={"grab": plugin}) as broker:
        async with open_client(broker.address, client_id="busy") as busy:
            await busy.subscribe("t", qos=1)

            async def traffic() -> None:
                async with open_client(broker.address, client_id="pub") as pub:
                    for i in range(200):
                        await pub.publish("t", str(i).encode(), qos=1)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(traffic)
                await busy.receive()
                await plugin.host.disconnect("busy", do_cleanup=True)
            await busy.wait_closed()
        assert plugin.host.session("busy") is None
