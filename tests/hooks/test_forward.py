"""forward_hooks: generated hookimpls with the hookspecs' argument names, through the real
manager and dispatcher."""

from __future__ import annotations

import inspect
from typing import Any

import pluggy
import pytest
import trio

from plugin_host.hooks import specs
from plugin_host.hooks.forward import forward_hooks, forwarding_hookimpl
from plugin_host.hooks.markers import PROJECT
from plugin_host.hooks.specs import CHAIN_HOOKS, HOOK_ARGS, NOTIFY_HOOKS

#: auth_on_publish arguments (any values: the plugin only records them).
PUBLISH = {name: f"<{name}>" for name in HOOK_ARGS["auth_on_publish"]}


@forward_hooks(CHAIN_HOOKS, to="_chain")
@forward_hooks(NOTIFY_HOOKS, to="_notify")
class Forwarding:
    """Every MQTT hook forwarded: chains answer ok, notifications are recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.notified = trio.Event()

    async def _chain(self, hook: str, args: dict[str, Any]) -> Any:
        self.calls.append((hook, args))
        return True

    async def _notify(self, hook: str, args: dict[str, Any]) -> None:
        self.calls.append((hook, args))
        self.notified.set()


def test_generated_hookimpls_have_the_hookspec_argument_names() -> None:
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(specs)
    plugin = Forwarding()
    pm.register(plugin)
    for hook, names in HOOK_ARGS.items():
        (impl,) = getattr(pm.hook, hook).get_hookimpls()
        assert tuple(impl.argnames) == names, hook
        method = getattr(plugin, hook)
        assert inspect.iscoroutinefunction(method)
        assert method.__qualname__ == f"Forwarding.{hook}"
        assert method.plugin_host_impl is not None  # marked as a hookimpl


async def test_dispatched_chain_and_notification_reach_the_method(make_manager, host) -> None:
    plugin = Forwarding()
    async with make_manager({"fwd": plugin}).running(host) as dispatcher:
        assert dispatcher.implemented("auth_on_publish")
        outcome = await dispatcher.auth("auth_on_publish", dict(PUBLISH))
        assert outcome.allowed
        dispatcher.notify("on_client_gone", {"mountpoint": "", "client_id": "c1"})
        with trio.fail_after(10):
            await plugin.notified.wait()
    assert plugin.calls == [
        ("auth_on_publish", PUBLISH),
        ("on_client_gone", {"mountpoint": "", "client_id": "c1"}),
    ]


def test_plain_and_positional_forms() -> None:
    class Plain:
        def _call(self, hook: str, args: tuple[Any, ...]) -> Any:
            return hook, args

    impl = forwarding_hookimpl("on_client_gone", to="_call", awaits=False, positional=True)
    assert not inspect.iscoroutinefunction(impl)
    assert impl(Plain(), "m", "c1") == ("on_client_gone", ("m", "c1"))
    assert impl(Plain(), client_id="c2", mountpoint="") == ("on_client_gone", ("", "c2"))


def test_mistakes_are_refused() -> None:
    with pytest.raises(ValueError, match="not an MQTT hook"):
        forwarding_hookimpl("on_nothing", to="_call")
    with pytest.raises(ValueError, match="not an MQTT hook"):
        forwarding_hookimpl("plugin_host_lifespan", to="_call")
    with pytest.raises(ValueError, match="not a method name"):
        forwarding_hookimpl("on_client_gone", to="x; import os")

    with pytest.raises(TypeError, match="defines on_client_gone itself"):

        @forward_hooks(["on_client_gone"], to="_call")
        class Twice:
            def on_client_gone(self, client_id: str) -> None:
                pass
