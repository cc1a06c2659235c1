"""Installed but unconfigured plugins cost nothing: with the installed plugins loaded (the
contrib webhooks and diversity plugins, the example distribution, the built-in passwd and acl)
and none of them configured, no hook is implemented, so the broker never builds an argument
dict, queues a notification or calls a plugin per message."""

from __future__ import annotations

from importlib.metadata import entry_points

from plugin_host.hooks.specs import ALL_HOOKS
from plugin_host.testing import open_client, run_broker


async def test_no_hook_is_implemented_by_unconfigured_installed_plugins():
    installed = {ep.name for ep in entry_points(group="plugin_host")}
    async with run_broker(installed_plugins=True, allow_anonymous=True) as running:
        broker = running.broker
        loaded = set(running.plugins.names)
        assert loaded == installed  # every installed plugin is loaded and running...
        hooks = broker.hooks
        # ...and none answers any hook, notification hooks included
        assert [hook for hook in ALL_HOOKS if hooks.implemented(hook)] == []
        assert broker.publish_hooked == broker.published_hooked == (False, False)
        assert broker.deliver_hooked == (False, False)
        async with open_client(running.address, client_id="c") as client:
            await client.subscribe("t", 0)
            await client.publish("t", b"x", qos=1)
            assert (await client.receive()).payload == b"x"
        assert hooks.queued() == 0 and hooks.dropped == 0
        assert all(stats.calls == 0 for stats in hooks.stats.values())
