"""Entry point of the webhooks plugin (``plugin_host`` entry point ``webhooks``).

VerneMQ-compatible webhooks: each hook with configured endpoints POSTs the hook's arguments
as JSON to them and turns the answers into hook results (see ``docs/webhooks.md``).

This module is imported at broker start-up whether or not webhooks are configured, so it
imports nothing heavy: the runtime (and httpx2 with it) is loaded when the lifespan starts.

The entry point names this module; its ``plugin_host_plugin`` tells the plugin manager to
register a fresh :class:`WebhooksPlugin` per broker, so two brokers in one process (tests,
embedding) each have their own webhooks, pools and cache. The state of a running plugin
lives in the :class:`~plugin_host_webhooks.runtime.Webhooks` object its lifespan creates (and
yields); :meth:`WebhooksPlugin.runtime` returns it for management calls (``register``,
``deregister``, ``show``, ``cache_show``, ``cache_clear``, ``stats``). The hook
implementations only forward to it, and answer ``next`` while no lifespan runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from plugin_host import hookimpl
from plugin_host.hooks.forward import forward_hooks
from plugin_host.hooks.specs import CHAIN_HOOKS
from plugin_host.settings import Key, PluginSection
from plugin_host_webhooks.wire import WEBHOOK_HOOKS

if TYPE_CHECKING:  # pragma: no cover
    from plugin_host_webhooks.runtime import Webhooks

__all__ = ["WebhooksPlugin", "plugin_host_plugin"]


@forward_hooks(WEBHOOK_HOOKS & CHAIN_HOOKS, to="_chain")
@forward_hooks(WEBHOOK_HOOKS - CHAIN_HOOKS, to="_notify")
class WebhooksPlugin:
    """The webhooks plugin; one instance per broker (see the module docstring).

    Its MQTT hookimpls (one per hook a webhook can serve, ``WEBHOOK_HOOKS``) are generated
    by :func:`plugin_host.hooks.forward.forward_hooks` with the hookspecs' argument names.
    """

    def __init__(self) -> None:
        self._current: Webhooks | None = None

    # (Attributes must not raise: pluggy looks at every one when registering.)

    @property
    def running(self) -> bool:
        """True while the lifespan runs."""
        return self._current is not None

    def runtime(self) -> Webhooks:
        """The running :class:`~plugin_host_webhooks.runtime.Webhooks` object."""
        if self._current is None:
            raise RuntimeError("the webhooks plugin is not running (its lifespan has not started)")
        return self._current

    # ----------------------------------------------------------------------------------------
    # Plugin lifecycle

    @hookimpl
    def plugin_host_config_schema(self) -> list[Key]:
        from plugin_host_webhooks.config import schema

        return schema()

    @hookimpl
    def plugin_host_lifespan(self, host: Any, config: PluginSection) -> Any:
        return self.lifespan(host, config)

    @asynccontextmanager
    async def lifespan(self, host: Any, config: PluginSection) -> AsyncIterator[Webhooks]:
        """Open the endpoint pools, start the cache sweeper; close everything at the end.

        Raises ConfigError (file, line, key) for invalid settings or unusable TLS files.
        """
        import trio

        from plugin_host_webhooks.config import load_settings
        from plugin_host_webhooks.runtime import Webhooks

        if self._current is not None:
            raise RuntimeError("this webhooks plugin instance is already running")
        # Configuration errors must reach the host as ConfigError, so everything that can
        # fail happens before the nursery (which would wrap them in an ExceptionGroup).
        webhooks = Webhooks(load_settings(config), host=host)
        try:
            webhooks.load(config)
        except BaseException:
            await webhooks.aclose()
            raise
        try:
            async with webhooks, trio.open_nursery() as nursery:
                await nursery.start(webhooks.run)
                self._current = webhooks
                try:
                    yield webhooks
                finally:
                    self._current = None
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # Only an exception thrown in at the yield (the host's) or a crash of the sweeper
            # gets here: hand it on as it was, not wrapped by this plugin's nursery.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    @hookimpl
    def plugin_host_metrics(self) -> list[Any]:
        """``webhooks_<hook>_requests|errors|...`` and cache families (docs/metrics.md)."""
        current = self._current
        if current is None:
            return []
        from plugin_host_webhooks.metrics import families

        return families(current)

    @hookimpl
    def plugin_host_active_hooks(self) -> frozenset[str]:
        current = self._current
        return current.active_hooks() if current is not None else frozenset()

    # ----------------------------------------------------------------------------------------
    # Hooks: every hook a webhook can serve is a hookimpl made by the class's forward_hooks
    # decorators, with the hookspec's argument names; it hands its arguments, as a dict by
    # name, to one of these two. The request encoder picks each hook's fields by name.

    async def _chain(self, hook: str, args: dict[str, Any]) -> Any:
        """A chain hook: the webhooks' answer (``None``, next, while no lifespan runs)."""
        current = self._current
        return None if current is None else await current.chain(hook, args)

    async def _notify(self, hook: str, args: dict[str, Any]) -> None:
        """A notification hook: posted to its webhooks (nothing while no lifespan runs)."""
        current = self._current
        if current is not None:
            await current.notify(hook, args)


#: The manager instantiates this for each broker (the entry point names this module).
plugin_host_plugin = WebhooksPlugin
