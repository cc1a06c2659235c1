"""``plugin_host_fast_hook``: a plugin hands the dispatcher a callable to use instead of a
hookimpl (same arguments, same answers), asked again at every rebuild of the chains."""

from __future__ import annotations

import trio
from structlog.testing import capture_logs

from plugin_host import Deny, hookimpl
from plugin_host.hooks.results import ALLOW

PUBLISH = {
    "username": "u",
    "mountpoint": "",
    "client_id": "c1",
    "qos": 1,
    "topic": "a/b",
    "payload": b"hello",
    "retain": False,
}


class Specialised:
    """auth_on_publish and on_publish hookimpls, and fast callables standing in for them."""

    def __init__(self) -> None:
        self.fast: dict[str, object] = {}
        self.seen: list[tuple[str, str, str]] = []
        self.delivered = trio.Event()

    @hookimpl
    def auth_on_publish(self, client_id, topic):
        self.seen.append(("hookimpl", client_id, topic))
        return True

    @hookimpl
    def on_publish(self, topic):
        self.seen.append(("hookimpl", "-", topic))
        self.delivered.set()

    def plugin_host_fast_hook(self, hook):
        return self.fast.get(hook)


async def test_the_fast_callable_replaces_the_hookimpl_until_the_next_rebuild(
    make_manager, host
) -> None:
    plugin = Specialised()

    def fast_publish(client_id, topic):
        plugin.seen.append(("fast", client_id, topic))
        return Deny("not_authorized") if topic == "deny/me" else True

    plugin.fast["auth_on_publish"] = fast_publish
    async with make_manager({"p": plugin}).running(host) as dispatcher:
        # Called with the hookimpl's arguments; its answers count like the hookimpl's.
        assert dispatcher.auth_now("auth_on_publish", dict(PUBLISH)) is ALLOW
        denied = dispatcher.auth_now("auth_on_publish", {**PUBLISH, "topic": "deny/me"})
        assert not denied.allowed and denied.reason == "not_authorized"
        assert dispatcher.stats[("p", "auth_on_publish")].calls == 2
        assert plugin.seen == [("fast", "c1", "a/b"), ("fast", "c1", "deny/me")]
        # The plugin takes it back and says so: the hookimpl answers again.
        plugin.fast.clear()
        dispatcher.hooks_changed()
        plugin.seen.clear()
        assert dispatcher.auth_now("auth_on_publish", dict(PUBLISH)) is ALLOW
        assert plugin.seen == [("hookimpl", "c1", "a/b")]


async def test_a_fast_callable_may_answer_later_and_serve_notifications(make_manager, host) -> None:
    plugin = Specialised()

    async def later(topic):
        await trio.lowlevel.checkpoint()
        return topic == "a/b"

    def fast_on_publish(topic):
        plugin.seen.append(("fast", "-", topic))
        plugin.delivered.set()

    plugin.fast = {"auth_on_publish": lambda client_id, topic: later(topic)}
    plugin.fast["on_publish"] = fast_on_publish
    async with make_manager({"p": plugin}).running(host) as dispatcher:
        with trio.fail_after(5):
            assert await dispatcher.auth("auth_on_publish", dict(PUBLISH)) is ALLOW
            dispatcher.notify("on_publish", dict(PUBLISH))
            await plugin.delivered.wait()
    assert plugin.seen == [("fast", "-", "a/b")]


async def test_a_failing_plugin_host_fast_hook_keeps_the_hookimpl(make_manager, host) -> None:
    plugin = Specialised()

    def broken(hook):
        raise RuntimeError("no fast path today")

    plugin.plugin_host_fast_hook = broken  # type: ignore[method-assign]
    with capture_logs() as logs:
        async with make_manager({"p": plugin}).running(host) as dispatcher:
            assert dispatcher.auth_now("auth_on_publish", dict(PUBLISH)) is ALLOW
    assert plugin.seen == [("hookimpl", "c1", "a/b")]
    failures = [e for e in logs if e["event"] == "plugin_fast_hook_failed"]
    assert failures and failures[0]["plugin"] == "p"
