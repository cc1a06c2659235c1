"""The diversity plugin: VerneMQ ``vmq_diversity``-compatible Lua hooks (entry point ``diversity``).

:class:`DiversityPlugin` holds everything one running plugin owns: its Lua scripts and
states, ``kv`` tables, ``auth_cache``, HTTP pools, the obfuscation key. All of it is created
in :meth:`DiversityPlugin.plugin_host_lifespan` and released when the lifespan ends.

The entry point names this module; its ``plugin_host_plugin`` tells the plugin manager to
register a fresh :class:`DiversityPlugin` instance per broker (no module-level state).

Chain semantics (spec 4.2-4.4): scripts are asked in load order; the first that returns
something other than nil decides; ``false`` denies and stops the chain (no later script or
plugin is asked). For ``auth_on_publish(_m5)`` / ``auth_on_subscribe(_m5)`` /
``on_unsubscribe(_m5)`` the auth cache is consulted first. A failing script (runtime error,
call budget exceeded, memory limit) is logged and then treated per ``plugins.diversity.on_error``:
``deny`` (the default, fail closed) answers ``Deny("lua_script_error")``; ``next`` moves on to
the next script and then the next plugin, which is VerneMQ's behaviour for auth hooks.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import structlog
import trio

from plugin_host import Deny, hookimpl
from plugin_host.hooks.specs import HOOK_ARGS
from plugin_host.settings import ConfigError, Key, PluginSection
from plugin_host_diversity import translate
from plugin_host_diversity.auth_cache import AuthCache
from plugin_host_diversity.config import DiversityConfig, ScriptSource, parse, schema
from plugin_host_diversity.convert import ConversionError
from plugin_host_diversity.direct import direct_caller, direct_state
from plugin_host_diversity.kv import KVStore
from plugin_host_diversity.lua_http import LuaHTTP
from plugin_host_diversity.obf import Obfuscator
from plugin_host_diversity.runtime import Deferred, Later, ScriptError, Then
from plugin_host_diversity.scripts import Script, ScriptLoadError, ScriptSet, load_script
from plugin_host_diversity.services import PluginServices

__all__ = ["DiversityPlugin", "plugin_host_plugin"]

_SCRIPT_ERROR = Deny("lua_script_error")
_CACHE_DENY = Deny("not_authorized")
_EMPTY = ScriptSet()
#: The per-message hooks whose hookimpl does nothing but call the direct caller (after the
#: auth cache, for auth_on_publish): the host may call that caller itself.
_FAST_HOOKS = frozenset({"auth_on_publish", "on_publish", "on_deliver"})
_CACHE_DROP_HOOKS = ("on_client_offline", "on_client_gone", "on_session_expired")


def _merged(hook: str, outcome: Any, properties: dict[str, Any]) -> Any:
    if isinstance(outcome, Later):
        return Then(outcome, partial(translate.merge_properties, hook, current=properties))
    return translate.merge_properties(hook, outcome, properties)


def _on_server_reload(host: Any, callback: Callable[[], Any]) -> Callable[[], None] | None:
    """Register ``callback`` with the server's reloads (SIGHUP); None if the host has none."""
    on_reload = getattr(host, "on_reload", None)
    if on_reload is None:
        return None
    try:
        unregister: Callable[[], None] = on_reload(callback)
    except NotImplementedError:
        return None
    return unregister


class _Running:
    """What one lifespan of the plugin owns."""

    def __init__(
        self,
        host: Any,
        config: DiversityConfig,
        services: PluginServices,
        log: Any,
        on_error: str,
    ) -> None:
        self.host = host
        self.config = config
        self.services = services
        self.log = log
        self.on_error = on_error
        self.reload_lock = trio.Lock()


class DiversityPlugin:
    """Lua scripts as hooks. One instance = one running plugin (see the module docstring)."""

    def __init__(self, name: str = "diversity") -> None:
        self.name = name
        self._scripts: ScriptSet = _EMPTY
        self._running: _Running | None = None
        self._cache: AuthCache | None = None
        self._active: frozenset[str] = frozenset()
        #: hook -> its direct caller (see plugin_host_diversity.direct), for the hooks that
        #: one script answers from one state. Rebuilt with every new set of scripts.
        self._direct: dict[str, Callable[..., Any]] = {}
        #: The hooks whose direct caller the host was last handed (plugin_host_fast_hook):
        #: the host must rebuild its chains when those callers change.
        self._fast_handed: set[str] = set()

    # ------------------------------------------------------------------------------------
    # Plugin lifecycle hooks
    # ------------------------------------------------------------------------------------

    @hookimpl
    def plugin_host_config_schema(self) -> list[Key]:
        return schema()

    @hookimpl
    def plugin_host_lifespan(self, host: Any, config: PluginSection) -> Any:
        return self._lifespan(host, config)

    @hookimpl
    def plugin_host_metrics(self) -> list[Any]:
        """Per script and hook calls, errors and time (``diversity_*`` families)."""
        from plugin_host_diversity.metrics import families

        return families(self)

    @hookimpl
    def plugin_host_active_hooks(self) -> frozenset[str]:
        """The hooks some loaded script defines (plus the auth cache's once it is used)."""
        return self._active

    def plugin_host_fast_hook(self, hook: str) -> Callable[..., Any] | None:
        """Not a hook: the dispatcher asks for it when it (re)builds its chains.

        For the per-message hooks (``auth_on_publish`` while the auth cache is unused,
        ``on_publish``, ``on_deliver``) answered by a direct caller, that caller: the
        hookimpl's arguments and answers, without the hookimpl's frame. ``None`` otherwise.
        Whenever the direct callers change (reload, the auth cache comes into use) the plugin
        calls ``host.hooks_changed()`` so that the host asks again.
        """
        caller = self._direct.get(hook) if hook in _FAST_HOOKS else None
        if caller is not None and hook in translate.CACHE_HOOKS:
            cache = self._cache
            if cache is None or cache.used:
                caller = None
        if caller is None:
            self._fast_handed.discard(hook)
        else:
            self._fast_handed.add(hook)
        return caller

    def plugin_host_auth_caller(self, hook: str, link: Any) -> Callable[..., Any] | None:
        """Not a hook: the dispatcher asks for it when a chain of ``hook`` is this plugin
        alone (see ``plugin_host.hooks.runner.ChainLink``).

        For a chain hook :meth:`plugin_host_fast_hook` would answer with the direct caller of
        a plain script, that caller built as the dispatcher's positional caller: one Python
        frame per call less. ``None`` otherwise (the dispatcher then calls the fast hook).
        """
        if self.plugin_host_fast_hook(hook) is None or hook not in translate.CHAIN_HOOKS:
            return None
        running = self._running
        [script] = self._scripts.by_hook[hook]
        if running is None or not script.plain or translate.HOOK_ARGS[hook] != HOOK_ARGS[hook]:
            return None
        return self._direct_caller(running, script, hook, link)

    @property
    def scripts(self) -> tuple[Script, ...]:
        """The loaded scripts, in call order."""
        return self._scripts.scripts

    # (Properties must not raise: pluggy looks at every attribute when registering.)

    @property
    def kv(self) -> KVStore | None:
        """The ``kv`` tables while running (``None`` otherwise)."""
        return self._running.services.kv if self._running is not None else None

    @property
    def auth_cache(self) -> AuthCache | None:
        """The auth cache while running (``None`` otherwise)."""
        return self._cache

    @asynccontextmanager
    async def _lifespan(self, host: Any, section: PluginSection) -> AsyncIterator[DiversityPlugin]:
        if self._running is not None:
            raise RuntimeError(f"plugin {self.name!r} is already running")
        config = parse(section if section is not None else PluginSection(plugin=self.name))
        log = getattr(host, "log", None) or structlog.get_logger(__name__).bind(plugin=self.name)
        on_error = "deny"
        host_config = getattr(host, "config", None)
        if host_config is not None and hasattr(host_config, "plugin"):
            on_error = host_config.plugin(self.name).on_error
        limiter = trio.CapacityLimiter(config.bcrypt_threads)
        http = LuaHTTP(config.tls, limiter)
        cache = AuthCache(log)
        services = PluginServices(
            host=host,
            kv=KVStore(),
            cache=cache,
            obf=Obfuscator(),
            http=http,
            bcrypt_rounds=config.bcrypt_rounds,
            limiter=limiter,
            script_dir=config.script_dir,
            on_cache_used=self._cache_used,
        )
        running = _Running(host, config, services, log, on_error)
        self._running, self._cache = running, cache
        try:
            scripts: list[Script] = []
            for source in config.scripts():
                try:
                    scripts.append(await self._load(source))
                except ScriptLoadError as exc:
                    raise ConfigError(
                        f"Lua script failed to load: {exc.message}", file=exc.file, line=exc.line
                    ) from None
            self._set_scripts(ScriptSet(scripts), notify=False)
            log.info("diversity_started", scripts=[s.name for s in scripts])
            body_error: BaseException | None = None
            try:
                async with trio.open_nursery() as nursery:
                    # The server owns SIGHUP and runs its reload callbacks (trio gives a signal
                    # to one receiver only); a host without them leaves the signal to us.
                    unregister = (
                        _on_server_reload(host, self.reload) if config.reload_on_sighup else None
                    )
                    if (
                        config.reload_on_sighup
                        and unregister is None
                        and threading.current_thread() is threading.main_thread()
                    ):
                        await nursery.start(self._watch_sighup)
                    try:
                        yield self
                    except BaseException as exc:
                        body_error = exc
                        raise
                    finally:
                        if unregister is not None:
                            unregister()
                        nursery.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                # The nursery wraps what the lifespan's body raised: hand it back unwrapped.
                if body_error is not None and list(group.exceptions) == [body_error]:
                    raise body_error from None
                raise
        finally:
            self._scripts, self._active, self._direct = _EMPTY, frozenset(), {}
            if self._fast_handed:
                self._hooks_changed()  # the host must not keep calling the old scripts
            self._running, self._cache = None, None
            await services.wait_for_threads()
            await http.aclose()

    async def _load(self, source: ScriptSource) -> Script:
        assert self._running is not None
        running = self._running
        return await load_script(
            source, config=running.config, services=running.services, log=running.log
        )

    def _set_scripts(self, scripts: ScriptSet, *, notify: bool = True) -> None:
        self._scripts, self._direct = scripts, self._direct_callers(scripts)
        active = scripts.hooks
        if self._cache is not None and self._cache.used:
            active = active | translate.CACHE_HOOKS
        changed = active != self._active
        self._active = active
        # The host holds the direct callers it was handed: they changed too.
        if (changed or self._fast_handed) and notify:
            self._hooks_changed()

    def _direct_callers(self, scripts: ScriptSet) -> dict[str, Callable[..., Any]]:
        running = self._running
        if running is None:
            return {}
        callers: dict[str, Callable[..., Any]] = {}
        for hook, defining in scripts.by_hook.items():
            if len(defining) != 1 or direct_state(defining[0], hook) is None:
                continue
            callers[hook] = self._direct_caller(running, defining[0], hook)
        return callers

    def _direct_caller(
        self, running: _Running, script: Script, hook: str, link: Any = None
    ) -> Callable[..., Any]:
        chain = hook in translate.CHAIN_HOOKS
        if chain:
            on_failure = partial(self._direct_failed, running, script, hook)
            on_pending = partial(self._direct_chain_pending, running, script, hook)
        else:
            on_failure = partial(self._direct_notify_failed, script, hook)
            on_pending = partial(self._direct_notify_pending, script, hook)
        return direct_caller(
            hook,
            script,
            chain=chain,
            obfuscate=running.services.obf.encrypt,
            on_failure=on_failure,
            on_pending=on_pending,
            link=link,
        )

    def _hooks_changed(self) -> None:
        host = self._running.host if self._running is not None else None
        hooks_changed = getattr(host, "hooks_changed", None)
        if hooks_changed is not None:
            hooks_changed()

    def _cache_used(self) -> None:
        # The cache's hooks become active, and the host must stop calling a direct caller
        # of auth_on_publish (which does not consult the cache).
        if not self._active >= translate.CACHE_HOOKS or self._fast_handed & translate.CACHE_HOOKS:
            self._set_scripts(self._scripts)

    async def _watch_sighup(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        # Only for a host without reload callbacks (see _on_server_reload).
        with trio.open_signal_receiver(signal.SIGHUP) as signals:
            task_status.started()
            async for _ in signals:
                await self.reload()

    async def reload(self) -> dict[str, str]:
        """Reload every script (and pick up scripts added to or removed from ``script_dir``).

        A script that fails to load keeps its previous version running (the error is
        logged). Returns ``{script name: outcome}`` with outcomes ``"reloaded"``,
        ``"loaded"`` (new), ``"unloaded"`` (gone), ``"kept previous version: <error>"`` or
        ``"not loaded: <error>"``.
        """
        running = self._running
        if running is None:
            raise RuntimeError("the diversity plugin is not running")
        async with running.reload_lock:
            current = {script.source.path: script for script in self._scripts.scripts}
            report: dict[str, str] = {}
            scripts: list[Script] = []
            sources = running.config.scripts()
            for source in sources:
                old = current.get(source.path)
                try:
                    loaded = await self._load(source)
                    if old is not None:
                        loaded.keep_stats(old)  # the metrics go on across reloads
                    scripts.append(loaded)
                    report[source.name] = "reloaded" if old is not None else "loaded"
                except ScriptLoadError as exc:
                    running.log.error(
                        "lua_script_reload_failed",
                        script=source.name,
                        file=exc.file,
                        line=exc.line,
                        error=exc.message,
                        kept_previous=old is not None,
                    )
                    if old is not None:
                        scripts.append(old)
                        report[source.name] = f"kept previous version: {exc}"
                    else:
                        report[source.name] = f"not loaded: {exc}"
            paths = {source.path for source in sources}
            for path, script in current.items():
                if path not in paths:
                    report[script.name] = "unloaded"
            self._set_scripts(ScriptSet(scripts))
            running.log.info("diversity_reloaded", outcome=report)
            return report

    # ------------------------------------------------------------------------------------
    # Calling scripts
    # ------------------------------------------------------------------------------------

    def _failed(self, script: Script, hook: str, exc: Exception) -> None:
        script.count_error(hook)
        running = self._running
        log = running.log if running is not None else structlog.get_logger(__name__)
        if isinstance(exc, ScriptError):
            event = {
                "budget": "lua_call_budget_exceeded",
                "memory": "lua_memory_limit_reached",
            }.get(exc.kind, "lua_hook_failed")
            log.error(
                event,
                script=script.name,
                hook=hook,
                error=exc.message,
                file=exc.file,
                line=exc.line,
                traceback=exc.traceback or None,
            )
        else:
            log.error("lua_hook_result_invalid", script=script.name, hook=hook, error=str(exc))

    # Hook calls are "sync first": when no script waits for I/O (the usual case for publish
    # and deliver hooks) the hookimpl returns its answer at once, and the host calls it like a
    # plain function (no coroutine, no cancel scope). When a script waits for I/O the
    # hookimpl returns a Later, which the host awaits under hook_timeout like an async hook.

    def _chain(self, hook: str, values: Sequence[Any]) -> Any:
        direct = self._direct.get(hook)
        if direct is not None:
            return direct(*values)
        scripts = self._scripts.by_hook.get(hook)
        running = self._running
        if not scripts or running is None:
            return None
        args = translate.lua_arguments(hook, values, running.services.obf.encrypt)
        if len(scripts) == 1:
            # One script (the usual case): _chain_from's loop, unrolled for the hot path.
            script = scripts[0]
            try:
                raw = script.start(hook, args)
                if isinstance(raw, Later):
                    return Deferred(self._chain_wait(running, hook, args, scripts, 0, raw))
                return translate.result(hook, raw)
            except (ScriptError, ConversionError) as exc:
                self._failed(script, hook, exc)
                return None if running.on_error == "next" else _SCRIPT_ERROR
        return self._chain_from(running, hook, args, scripts, 0)

    def _chain_from(
        self,
        running: _Running,
        hook: str,
        args: Sequence[Any],
        scripts: tuple[Script, ...],
        index: int,
    ) -> Any:
        for position in range(index, len(scripts)):
            script = scripts[position]
            try:
                raw = script.start(hook, args)
                if isinstance(raw, Later):
                    return Deferred(self._chain_wait(running, hook, args, scripts, position, raw))
                outcome = translate.result(hook, raw)
            except (ScriptError, ConversionError) as exc:
                self._failed(script, hook, exc)
                if running.on_error == "next":
                    continue
                return _SCRIPT_ERROR
            if outcome is not None:
                return outcome
        return None

    async def _chain_wait(
        self,
        running: _Running,
        hook: str,
        args: Sequence[Any],
        scripts: tuple[Script, ...],
        position: int,
        pending: Later,
    ) -> Any:
        try:
            outcome = translate.result(hook, await pending)
        except (ScriptError, ConversionError) as exc:
            self._failed(scripts[position], hook, exc)
            if running.on_error != "next":
                return _SCRIPT_ERROR
            outcome = None
        if outcome is not None:
            return outcome
        rest = self._chain_from(running, hook, args, scripts, position + 1)
        if isinstance(rest, Later):
            return await rest
        return rest

    def _notify(self, hook: str, values: Sequence[Any]) -> Any:
        direct = self._direct.get(hook)
        if direct is not None:
            return direct(*values)
        scripts = self._scripts.by_hook.get(hook)
        running = self._running
        if not scripts or running is None:
            return None
        args = translate.lua_arguments(hook, values, running.services.obf.encrypt)
        return self._notify_from(hook, args, scripts, 0)

    def _notify_from(
        self, hook: str, args: Sequence[Any], scripts: tuple[Script, ...], index: int
    ) -> Any:
        for position in range(index, len(scripts)):
            try:
                raw = scripts[position].start(hook, args)
            except ScriptError as exc:
                self._failed(scripts[position], hook, exc)
                continue
            if isinstance(raw, Later):
                return Deferred(self._notify_wait(hook, args, scripts, position, raw))
        return None

    async def _notify_wait(
        self,
        hook: str,
        args: Sequence[Any],
        scripts: tuple[Script, ...],
        position: int,
        pending: Later,
    ) -> None:
        try:
            await pending
        except ScriptError as exc:
            self._failed(scripts[position], hook, exc)
        rest = self._notify_from(hook, args, scripts, position + 1)
        if isinstance(rest, Later):
            await rest

    # -- what a direct caller hands back (see plugin_host_diversity.direct) -------------

    def _direct_failed(self, running: _Running, script: Script, hook: str, exc: Exception) -> Any:
        self._failed(script, hook, exc)
        return None if running.on_error == "next" else _SCRIPT_ERROR

    def _direct_chain_pending(
        self, running: _Running, script: Script, hook: str, pending: Later
    ) -> Any:
        return Deferred(self._chain_wait(running, hook, (), (script,), 0, pending))

    def _direct_notify_failed(self, script: Script, hook: str, exc: Exception) -> None:
        self._failed(script, hook, exc)

    def _direct_notify_pending(self, script: Script, hook: str, pending: Later) -> Any:
        return Deferred(self._notify_wait(hook, (), (script,), 0, pending))

    # -- the auth cache in front of the scripts (spec 4.4) -----------------------------

    def _cached_publish(
        self,
        hook: str,
        mountpoint: str,
        client_id: str,
        qos: int,
        topic: str,
        payload: bytes,
        retain: bool,
        properties: dict[str, Any] | None,
    ) -> Any:
        """``None`` when the cache has no entry, else the cache's answer (python form)."""
        cache = self._cache
        if cache is None or not cache.used:
            return None
        found = cache.match_publish(mountpoint, client_id, topic, qos, len(payload), retain)
        if found is None:
            return None
        if found is True:
            return True
        if found is False:
            return _CACHE_DENY
        modifiers = translate.converted(hook, found)
        if hook == "auth_on_publish":
            if isinstance(modifiers, dict):
                modifiers.pop("properties", None)  # MQTT 3 messages have no properties
            return modifiers
        return translate.merge_properties(hook, modifiers, properties)

    def _cached_subscribe(
        self, hook: str, mountpoint: str, client_id: str, topics: Sequence[Any]
    ) -> Any:
        cache = self._cache
        if cache is None or not cache.used or (mountpoint, client_id) not in cache:
            return None
        rewritten: list[Any] = []
        changed = False
        for entry in topics:
            found = cache.match_subscribe(mountpoint, client_id, entry[0], entry[1])
            if found is None:
                return None
            if found is False:
                return _CACHE_DENY
            if found is True:
                rewritten.append(tuple(entry))
                continue
            changed = True
            rewritten.extend(translate.topics_result(hook, found))
        return rewritten if changed else True

    def _cached_unsubscribe(
        self, hook: str, mountpoint: str, client_id: str, topics: Sequence[str]
    ) -> Any:
        cache = self._cache
        if cache is None or not cache.used or (mountpoint, client_id) not in cache:
            return None
        rewritten: list[str] = []
        changed = False
        for topic in topics:
            found = cache.match_subscribe(mountpoint, client_id, topic, 0)
            if found is None:
                return None
            if found is False:
                return False  # unsubscribe hooks: the host then unsubscribes unchanged
            if found is True:
                rewritten.append(topic)
                continue
            changed = True
            rewritten.extend(
                entry[0] for entry in translate.topics_result("auth_on_subscribe", found)
            )
        return rewritten if changed else True

    def _drop_cache(self, mountpoint: str, client_id: str) -> None:
        cache = self._cache
        if cache is None or not cache.used:
            return
        host = self._running.host if self._running is not None else None
        lookup = getattr(host, "session", None)
        if lookup is not None:
            session = lookup(client_id, mountpoint)
            if session is not None and session.online:
                # The client is back (this notification was queued before it reconnected):
                # its new registration may already have filled the cache again.
                return
        cache.drop(mountpoint, client_id)

    # ------------------------------------------------------------------------------------
    # MQTT hooks (argument names and order as plugin_host.hooks.specs)
    # ------------------------------------------------------------------------------------

    @hookimpl
    def auth_on_register(
        self,
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
        return self._chain(
            "auth_on_register",
            (
                peer_addr, peer_port, mountpoint, client_id, username, password, clean_session,
                listener_addr, listener_port, listener_type, client_cert,
            ),
        )  # fmt: skip

    @hookimpl
    def auth_on_register_m5(
        self,
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
        return self._chain(
            "auth_on_register_m5",
            (
                peer_addr, peer_port, mountpoint, client_id, username, password, clean_start,
                properties, listener_addr, listener_port, listener_type, client_cert,
            ),
        )  # fmt: skip

    @hookimpl
    def on_auth_m5(
        self, username: str | None, mountpoint: str, client_id: str, properties: dict[str, Any]
    ) -> Any:
        return self._chain("on_auth_m5", (username, mountpoint, client_id, properties))

    @hookimpl
    def on_register(
        self, peer_addr: str, peer_port: int, mountpoint: str, client_id: str, username: str | None
    ) -> Any:
        return self._notify("on_register", (peer_addr, peer_port, mountpoint, client_id, username))

    @hookimpl
    def on_register_m5(
        self,
        peer_addr: str,
        peer_port: int,
        mountpoint: str,
        client_id: str,
        username: str | None,
        properties: dict[str, Any],
    ) -> Any:
        return self._notify(
            "on_register_m5", (peer_addr, peer_port, mountpoint, client_id, username, properties)
        )

    @hookimpl
    def auth_on_publish(
        self,
        username: str | None,
        mountpoint: str,
        client_id: str,
        qos: int,
        topic: str,
        payload: bytes,
        retain: bool,
    ) -> Any:
        cache = self._cache
        if cache is not None and cache.used:
            cached = self._cached_publish(
                "auth_on_publish", mountpoint, client_id, qos, topic, payload, retain, None
            )
            if cached is not None:
                return cached
        # Per message: the direct caller without _chain's tuple and frame.
        direct = self._direct.get("auth_on_publish")
        if direct is not None:
            return direct(username, mountpoint, client_id, qos, topic, payload, retain)
        return self._chain(
            "auth_on_publish", (username, mountpoint, client_id, qos, topic, payload, retain)
        )

    @hookimpl
    def auth_on_publish_m5(
        self,
        username: str | None,
        mountpoint: str,
        client_id: str,
        qos: int,
        topic: str,
        payload: bytes,
        retain: bool,
        properties: dict[str, Any],
    ) -> Any:
        hook = "auth_on_publish_m5"
        cache = self._cache
        if cache is not None and cache.used:
            cached = self._cached_publish(
                hook, mountpoint, client_id, qos, topic, payload, retain, properties
            )
            if cached is not None:
                return cached
        outcome = self._chain(
            hook, (username, mountpoint, client_id, qos, topic, payload, retain, properties)
        )
        return _merged(hook, outcome, properties)

    @hookimpl
    def on_publish(
        self,
        username: str | None,
        mountpoint: str,
        client_id: str,
        qos: int,
        topic: str,
        payload: bytes,
        retain: bool,
    ) -> Any:
        direct = self._direct.get("on_publish")  # per message (see auth_on_publish)
        if direct is not None:
            return direct(username, mountpoint, client_id, qos, topic, payload, retain)
        return self._notify(
            "on_publish", (username, mountpoint, client_id, qos, topic, payload, retain)
        )

    @hookimpl
    def on_publish_m5(
        self,
        username: str | None,
        mountpoint: str,
        client_id: str,
        qos: int,
        topic: str,
        payload: bytes,
        retain: bool,
        properties: dict[str, Any],
    ) -> Any:
        return self._notify(
            "on_publish_m5",
            (username, mountpoint, client_id, qos, topic, payload, retain, properties),
        )

    @hookimpl
    def auth_on_subscribe(
        self, username: str | None, mountpoint: str, client_id: str, topics: list[Any]
    ) -> Any:
        cached = self._cached_subscribe("auth_on_subscribe", mountpoint, client_id, topics)
        if cached is not None:
            return cached
        return self._chain("auth_on_subscribe", (username, mountpoint, client_id, topics))

    @hookimpl
    def auth_on_subscribe_m5(
        self,
        username: str | None,
        mountpoint: str,
        client_id: str,
        topics: list[Any],
        properties: dict[str, Any],
    ) -> Any:
        cached = self._cached_subscribe("auth_on_subscribe_m5", mountpoint, client_id, topics)
        if cached is not None:
            return cached
        return self._chain(
            "auth_on_subscribe_m5", (username, mountpoint, client_id, topics, properties)
        )

    @hookimpl
    def on_subscribe(
        self, username: str | None, mountpoint: str, client_id: str, topics: list[Any]
    ) -> Any:
        return self._notify("on_subscribe", (username, mountpoint, client_id, topics))

    @hookimpl
    def on_subscribe_m5(
        self,
        username: str | None,
        mountpoint: str,
        client_id: str,
        topics: list[Any],
        properties: dict[str, Any],
    ) -> Any:
        return self._notify(
            "on_subscribe_m5", (username, mountpoint, client_id, topics, properties)
        )

    @hookimpl
    def on_unsubscribe(
        self, username: str | None, mountpoint: str, client_id: str, topics: list[str]
    ) -> Any:
        cached = self._cached_unsubscribe("on_unsubscribe", mountpoint, client_id, topics)
        if cached is not None:
            return cached
        return self._chain("on_unsubscribe", (username, mountpoint, client_id, topics))

    @hookimpl
    def on_unsubscribe_m5(
        self,
        username: str | None,
        mountpoint: str,
        client_id: str,
        topics: list[str],
        properties: dict[str, Any],
    ) -> Any:
        cached = self._cached_unsubscribe("on_unsubscribe_m5", mountpoint, client_id, topics)
        if cached is not None:
            return cached
        return self._chain(
            "on_unsubscribe_m5", (username, mountpoint, client_id, topics, properties)
        )

    @hookimpl
    def on_deliver(
        self,
        username: str | None,
        mountpoint: str,
        client_id: str,
        qos: int,
        topic: str,
        payload: bytes,
        retain: bool,
    ) -> Any:
        direct = self._direct.get("on_deliver")  # per delivery (see auth_on_publish)
        if direct is not None:
            return direct(username, mountpoint, client_id, qos, topic, payload, retain)
        return self._chain(
            "on_deliver", (username, mountpoint, client_id, qos, topic, payload, retain)
        )

    @hookimpl
    def on_deliver_m5(
        self,
        username: str | None,
        mountpoint: str,
        client_id: str,
        qos: int,
        topic: str,
        payload: bytes,
        retain: bool,
        properties: dict[str, Any],
    ) -> Any:
        hook = "on_deliver_m5"
        outcome = self._chain(
            hook, (username, mountpoint, client_id, qos, topic, payload, retain, properties)
        )
        return _merged(hook, outcome, properties)

    @hookimpl
    def on_offline_message(
        self, mountpoint: str, client_id: str, qos: int, topic: str, payload: bytes, retain: bool
    ) -> Any:
        return self._notify(
            "on_offline_message", (mountpoint, client_id, qos, topic, payload, retain)
        )

    @hookimpl
    def on_client_wakeup(self, mountpoint: str, client_id: str) -> Any:
        return self._notify("on_client_wakeup", (mountpoint, client_id))

    @hookimpl
    def on_client_offline(self, mountpoint: str, client_id: str) -> Any:
        self._drop_cache(mountpoint, client_id)
        return self._notify("on_client_offline", (mountpoint, client_id))

    @hookimpl
    def on_client_gone(self, mountpoint: str, client_id: str) -> Any:
        self._drop_cache(mountpoint, client_id)
        return self._notify("on_client_gone", (mountpoint, client_id))

    @hookimpl
    def on_session_expired(self, mountpoint: str, client_id: str) -> Any:
        self._drop_cache(mountpoint, client_id)
        return self._notify("on_session_expired", (mountpoint, client_id))


#: The manager instantiates this for each broker (the entry point names this module).
plugin_host_plugin = DiversityPlugin
