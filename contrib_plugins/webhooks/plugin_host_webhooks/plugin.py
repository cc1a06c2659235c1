"""Entry point of the webhooks plugin (``plugin_host`` entry point ``webhooks``).

VerneMQ-compatible webhooks: each hook with configured endpoints POSTs the hook's arguments
as JSON to them and turns the answers into hook results (see ``docs/webhooks.md``).

This module is imported at broker start-up whether or not webhooks are configured, so it
imports nothing heavy: the runtime (and httpx2 with it) is loaded when the lifespan starts.

The plugin's state lives in the :class:`~plugin_host_webhooks.runtime.Webhooks` object its
lifespan creates (and yields); :func:`runtime` returns it for management calls
(``register``, ``deregister``, ``show``, ``cache_show``, ``cache_clear``, ``stats``). The hook
implementations below only forward to it, and answer ``next`` while no lifespan runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from plugin_host import hookimpl
from plugin_host.settings import Key, PluginSection

if TYPE_CHECKING:  # pragma: no cover
    from plugin_host_webhooks.runtime import Webhooks


class _Slot:
    """The running Webhooks object of this process (a module is one plugin instance)."""

    current: Webhooks | None = None


_slot = _Slot()


def runtime() -> Webhooks:
    """The running plugin's :class:`~plugin_host_webhooks.runtime.Webhooks` object."""
    if _slot.current is None:
        raise RuntimeError("the webhooks plugin is not running (its lifespan has not started)")
    return _slot.current


# --------------------------------------------------------------------------------------------
# Plugin lifecycle


@hookimpl
def plugin_host_config_schema() -> list[Key]:
    from plugin_host_webhooks.config import schema

    return schema()


@hookimpl
def plugin_host_lifespan(host: Any, config: PluginSection) -> Any:
    return lifespan(host, config)


@asynccontextmanager
async def lifespan(host: Any, config: PluginSection) -> AsyncIterator[Webhooks]:
    """Open the endpoint pools, start the cache sweeper; close everything at the end.

    Raises ConfigError (file, line, key) for invalid settings or unusable TLS files.
    """
    import trio

    from plugin_host_webhooks.config import load_settings
    from plugin_host_webhooks.runtime import Webhooks

    if _slot.current is not None:
        raise RuntimeError("the webhooks plugin is already running in this process")
    # Configuration errors must reach the host as ConfigError, so everything that can fail
    # happens before the nursery (which would wrap them in an ExceptionGroup).
    webhooks = Webhooks(load_settings(config), host=host)
    try:
        webhooks.load(config)
    except BaseException:
        await webhooks.aclose()
        raise
    try:
        async with webhooks, trio.open_nursery() as nursery:
            await nursery.start(webhooks.run)
            _slot.current = webhooks
            try:
                yield webhooks
            finally:
                _slot.current = None
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Only an exception thrown in at the yield (the host's) or a crash of the sweeper gets
        # here: hand it on as it was, not wrapped by this plugin's nursery.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


@hookimpl
def plugin_host_active_hooks() -> frozenset[str]:
    current = _slot.current
    return current.active_hooks() if current is not None else frozenset()


# --------------------------------------------------------------------------------------------
# Hooks. Each passes its arguments by name: ``locals()`` taken first thing is exactly them.


async def _chain(hook: str, args: dict[str, Any]) -> Any:
    current = _slot.current
    return None if current is None else await current.chain(hook, args)


async def _notify(hook: str, args: dict[str, Any]) -> None:
    current = _slot.current
    if current is not None:
        await current.notify(hook, args)


@hookimpl
async def auth_on_register(
    peer_addr: str,
    peer_port: int,
    mountpoint: str,
    client_id: str,
    username: str | None,
    password: bytes | None,
    clean_session: bool,
    listener_addr: str | None,
    listener_port: int | None,
    listener_type: str | None,
    client_cert: bytes | None,
) -> Any:
    return await _chain("auth_on_register", locals())


@hookimpl
async def auth_on_register_m5(
    peer_addr: str,
    peer_port: int,
    mountpoint: str,
    client_id: str,
    username: str | None,
    password: bytes | None,
    clean_start: bool,
    properties: dict[str, Any],
    listener_addr: str | None,
    listener_port: int | None,
    listener_type: str | None,
    client_cert: bytes | None,
) -> Any:
    return await _chain("auth_on_register_m5", locals())


@hookimpl
async def on_auth_m5(
    username: str | None, mountpoint: str, client_id: str, properties: dict[str, Any]
) -> Any:
    return await _chain("on_auth_m5", locals())


@hookimpl
async def on_register(
    peer_addr: str, peer_port: int, mountpoint: str, client_id: str, username: str | None
) -> None:
    await _notify("on_register", locals())


@hookimpl
async def on_register_m5(
    peer_addr: str,
    peer_port: int,
    mountpoint: str,
    client_id: str,
    username: str | None,
    properties: dict[str, Any],
) -> None:
    await _notify("on_register_m5", locals())


@hookimpl
async def auth_on_publish(
    username: str | None,
    mountpoint: str,
    client_id: str,
    qos: int,
    topic: str,
    payload: bytes,
    retain: bool,
) -> Any:
    return await _chain("auth_on_publish", locals())


@hookimpl
async def auth_on_publish_m5(
    username: str | None,
    mountpoint: str,
    client_id: str,
    qos: int,
    topic: str,
    payload: bytes,
    retain: bool,
    properties: dict[str, Any],
) -> Any:
    return await _chain("auth_on_publish_m5", locals())


@hookimpl
async def on_publish(
    username: str | None,
    mountpoint: str,
    client_id: str,
    qos: int,
    topic: str,
    payload: bytes,
    retain: bool,
) -> None:
    await _notify("on_publish", locals())


@hookimpl
async def on_publish_m5(
    username: str | None,
    mountpoint: str,
    client_id: str,
    qos: int,
    topic: str,
    payload: bytes,
    retain: bool,
    properties: dict[str, Any],
) -> None:
    await _notify("on_publish_m5", locals())


@hookimpl
async def auth_on_subscribe(
    username: str | None, mountpoint: str, client_id: str, topics: list[Any]
) -> Any:
    return await _chain("auth_on_subscribe", locals())


@hookimpl
async def auth_on_subscribe_m5(
    username: str | None,
    mountpoint: str,
    client_id: str,
    topics: list[Any],
    properties: dict[str, Any],
) -> Any:
    return await _chain("auth_on_subscribe_m5", locals())


@hookimpl
async def on_subscribe(
    username: str | None, mountpoint: str, client_id: str, topics: list[Any]
) -> None:
    await _notify("on_subscribe", locals())


@hookimpl
async def on_subscribe_m5(
    username: str | None,
    mountpoint: str,
    client_id: str,
    topics: list[Any],
    properties: dict[str, Any],
) -> None:
    await _notify("on_subscribe_m5", locals())


@hookimpl
async def on_unsubscribe(
    username: str | None, mountpoint: str, client_id: str, topics: list[str]
) -> Any:
    return await _chain("on_unsubscribe", locals())


@hookimpl
async def on_unsubscribe_m5(
    username: str | None,
    mountpoint: str,
    client_id: str,
    topics: list[str],
    properties: dict[str, Any],
) -> Any:
    return await _chain("on_unsubscribe_m5", locals())


@hookimpl
async def on_deliver(
    username: str | None,
    mountpoint: str,
    client_id: str,
    qos: int,
    topic: str,
    payload: bytes,
    retain: bool,
) -> Any:
    return await _chain("on_deliver", locals())


@hookimpl
async def on_deliver_m5(
    username: str | None,
    mountpoint: str,
    client_id: str,
    qos: int,
    topic: str,
    payload: bytes,
    retain: bool,
    properties: dict[str, Any],
) -> Any:
    return await _chain("on_deliver_m5", locals())


@hookimpl
async def on_offline_message(
    mountpoint: str, client_id: str, qos: int, topic: str, payload: bytes, retain: bool
) -> None:
    await _notify("on_offline_message", locals())


@hookimpl
async def on_client_wakeup(mountpoint: str, client_id: str) -> None:
    await _notify("on_client_wakeup", locals())


@hookimpl
async def on_client_offline(mountpoint: str, client_id: str) -> None:
    await _notify("on_client_offline", locals())


@hookimpl
async def on_client_gone(mountpoint: str, client_id: str) -> None:
    await _notify("on_client_gone", locals())


@hookimpl
async def on_session_expired(mountpoint: str, client_id: str) -> None:
    await _notify("on_session_expired", locals())
