"""The two interfaces that join the broker and the plugin system.

* :class:`HookDispatch` is what the broker calls at every hook point. The plugin system
  implements it (``plugin_host.hooks.runner``); :class:`NoHooks` is the do-nothing version used
  when no plugin is loaded and in broker unit tests.
* :class:`Host` is what the broker gives plugins (the ``host`` argument of
  ``plugin_host_lifespan``): publish, disconnect, look up sessions, log.

Rules the broker relies on:

* ``implemented(hook)`` is a set lookup. The broker checks it before building any argument
  dict, so a hook no plugin implements costs one lookup per packet.
* ``auth(hook, args)`` runs a chain (auth_on_*, on_auth_m5, on_deliver*, on_unsubscribe*) and
  returns an :class:`~plugin_host.hooks.results.Outcome` with validated modifiers. It never
  raises for plugin faults (they are contained, logged and mapped per ``on_error``) and is
  cancellable: cancelling the caller cancels the plugin calls.
* ``notify(hook, args)`` never blocks and never raises: notification hooks run off the client's
  packet path in a bounded queue owned by the dispatcher.
* Optional, for the per-message path (the plugin system's dispatcher has them; the broker falls
  back to ``auth`` and full argument dicts when a dispatcher lacks them):
  ``auth_now(hook, args)`` is ``auth`` without the coroutine when the chain answers at once (it
  returns the ``Outcome``, or an awaitable of it to await at once); ``arguments(hook)`` is the
  set of argument names the chain reads (the broker may leave the others out of ``args``);
  ``generation`` changes whenever ``implemented``/``arguments`` may answer differently;
  ``auth_caller(hook)`` is ``auth_now`` for one hook taking its arguments positionally
  (hookspec order), which the dispatcher compiles for the common one-hookimpl chain
  (:func:`positional_caller` is the plain version, for dispatchers without it).
* ``args`` uses the argument names and Python types of the plugin API (DESIGN section 4):
  ``peer_addr``, ``peer_port``, ``mountpoint``, ``client_id``, ``username``, ``password``
  (bytes), ``clean_session``/``clean_start``, ``qos``, ``topic``, ``payload`` (bytes),
  ``retain``, ``topics``, ``properties`` (``p_*`` keys), listener metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from plugin_host.hooks.results import ALLOW, Outcome
from plugin_host.hooks.specs import HOOK_ARGS


def positional_caller(auth: Callable[[str, dict[str, Any]], Any], hook: str) -> Callable[..., Any]:
    """``auth(hook, args)`` as a function of the hook's arguments passed positionally, in
    hookspec order (:data:`~plugin_host.hooks.specs.HOOK_ARGS`)."""
    names = HOOK_ARGS[hook]

    def caller(*values: Any) -> Any:
        return auth(hook, dict(zip(names, values, strict=True)))

    return caller


class HookDispatch(Protocol):
    """Called by the broker at each hook point."""

    def implemented(self, hook: str) -> bool:
        """True when at least one enabled plugin currently answers ``hook``."""
        ...

    async def auth(
        self, hook: str, args: dict[str, Any], plugins: tuple[str, ...] | None = None
    ) -> Outcome:
        """Run the conditional chain for ``hook`` and return what it decided.

        ``plugins`` (a listener's ``auth_plugins`` / ``authz_plugins``) restricts and orders
        the chain to those plugin names; the broker passes it only when a listener has one.
        """
        ...

    def notify(self, hook: str, args: dict[str, Any]) -> None:
        """Queue a notification hook call; returns at once."""
        ...


class NoHooks:
    """A dispatcher with no plugins: nothing is implemented, every chain allows."""

    generation = 0

    def implemented(self, hook: str) -> bool:
        return False

    def arguments(self, hook: str) -> frozenset[str]:
        return frozenset()

    async def auth(
        self, hook: str, args: dict[str, Any], plugins: tuple[str, ...] | None = None
    ) -> Outcome:
        return ALLOW

    def auth_now(
        self, hook: str, args: Mapping[str, Any], plugins: tuple[str, ...] | None = None
    ) -> Outcome:
        return ALLOW

    def notify(self, hook: str, args: dict[str, Any]) -> None:
        return None


@dataclass(slots=True)
class SessionInfo:
    """A read-only snapshot of one session, for plugins and the admin API."""

    client_id: str
    mountpoint: str
    username: str | None
    online: bool
    protocol_level: int
    clean_session: bool
    peer_addr: str | None = None
    peer_port: int | None = None
    subscriptions: list[tuple[str, int]] = field(default_factory=list)
    queued_messages: int = 0
    inflight_messages: int = 0
    expiry_interval: int | None = None


class Host(Protocol):
    """What a plugin may do with the running broker (given to ``plugin_host_lifespan``)."""

    @property
    def log(self) -> Any:
        """A structlog logger bound with the plugin's name."""
        ...

    @property
    def config(self) -> Any:
        """The broker's whole validated configuration (read-only)."""
        ...

    async def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Mapping[str, Any] | None = None,
        mountpoint: str = "",
    ) -> None:
        """Route a message as if a client had published it (hooks on_publish fire)."""
        ...

    async def disconnect(
        self, client_id: str, mountpoint: str = "", *, do_cleanup: bool = False
    ) -> bool:
        """Disconnect a client (v5 reason 0x98 administrative action); False if unknown."""
        ...

    async def reauthorize_subscriptions(
        self, client_id: str, mountpoint: str = "", username: str | None = None
    ) -> list[str]:
        """Ask auth_on_subscribe(_m5) again, as ``username`` (the session's when ``None``),
        for each subscription of a session; remove those refused now. Returns the removed
        filters (VerneMQ's ``vmq_api.reauthorize_subscriptions``)."""
        ...

    def sessions(self) -> Sequence[SessionInfo]:
        """Every session the broker holds, online and offline."""
        ...

    def session(self, client_id: str, mountpoint: str = "") -> SessionInfo | None:
        """One session, or None."""
        ...

    def hooks_changed(self) -> None:
        """Tell the dispatcher that this plugin's set of active hooks changed."""
        ...

    def on_reload(self, callback: Callable[[], Any]) -> Callable[[], None]:
        """Run ``callback`` (sync or async) on every reload (SIGHUP, admin ``reload``).

        Returns a function that unregisters it. The server owns SIGHUP: plugins must not open
        their own signal receiver (trio delivers a signal to one receiver only).
        """
        ...
