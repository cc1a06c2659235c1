"""The plugin manager: discovery, configuration, registration, lifespans, the dispatcher.

Typical use (the broker / ``plugin-host serve``)::

    manager = PluginManager.discover(config)        # imports and registers enabled plugins
    async with manager.running(host) as dispatcher:  # enters lifespans, starts notifications
        ...                                          # serve; dispatcher is the HookDispatch

and ``manager.table()`` for ``plugin-host plugins``.

Rules (DESIGN section 4): installed plugins (entry-point group ``plugin_host``) and every
``*.py`` of the ``--plugins-dir`` directories are enabled unless ``plugins.<name> = off``, which
disables a plugin **without importing it**. A plugin that fails to import or register stops
start-up with a :class:`PluginLoadError` naming the plugin and its distribution. Config for a
plugin that is not installed is an error; config of a disabled plugin is ignored with a warning.
Chain order: ``plugins.<name>.priority`` (lower first), then the plugins without priority, by
name.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pluggy
import structlog
import trio

from plugin_host.hooks import specs
from plugin_host.hooks.api import Host
from plugin_host.hooks.markers import PROJECT
from plugin_host.hooks.runner import ChainMember, Dispatcher
from plugin_host.hooks.specs import ALL_HOOKS, META_HOOKS
from plugin_host.plugins.discovery import Candidate, PluginLoadError, find_candidates, load
from plugin_host.plugins.lifespans import PluginHost, enter_lifespan
from plugin_host.settings import Config, ConfigError, Key, PluginSection

__all__ = ["LoadedPlugin", "PluginLoadError", "PluginManager", "PluginRow"]

log = structlog.get_logger(__name__)

#: How long, at shutdown, queued notifications may still be delivered (seconds).
DRAIN_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class PluginRow:
    """One line of ``plugin-host plugins``."""

    name: str
    distribution: str
    version: str
    enabled: bool
    priority: int | None
    hooks: tuple[str, ...]  # MQTT hooks the plugin implements (empty when disabled)
    source: str  # "entry point", "plugins dir" or "in-process"


@dataclass(slots=True)
class LoadedPlugin:
    """An enabled, registered plugin."""

    candidate: Candidate
    obj: Any
    priority: int | None
    on_error: str
    section: PluginSection
    schema: list[Key] | None = None
    hooks: tuple[str, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        return self.candidate.name


def _sort_key(plugin: LoadedPlugin) -> tuple[int, int, str]:
    if plugin.priority is None:
        return (1, 0, plugin.name)
    return (0, plugin.priority, plugin.name)


_SOURCE_LABEL = {"entry_point": "entry point", "plugins_dir": "plugins dir", "object": "in-process"}


class PluginManager:
    """Enabled plugins in chain order, their pluggy registration, and their :class:`Dispatcher`.

    Build it with :meth:`discover`. ``pm`` is the underlying :class:`pluggy.PluginManager`.
    """

    def __init__(
        self,
        config: Config,
        pm: pluggy.PluginManager,
        plugins: list[LoadedPlugin],
        disabled: list[Candidate],
        *,
        notify_queue_size: int = 10_000,
        notify_workers: int = 4,
        trace: bool | None = None,
    ) -> None:
        self.config = config
        self.pm = pm
        self.plugins = sorted(plugins, key=_sort_key)
        self.disabled = disabled
        self._by_name = {plugin.name: plugin for plugin in self.plugins}
        self.dispatcher = Dispatcher(
            pm,
            [ChainMember(p.name, "next" if p.on_error == "next" else "deny") for p in self.plugins],
            hook_timeout=config.broker.hook_timeout,
            notify_queue_size=notify_queue_size,
            notify_workers=notify_workers,
            trace=trace,
        )
        self._started = False

    # ----------------------------------------------------------------------------------------
    # Discovery
    # ----------------------------------------------------------------------------------------

    @classmethod
    def discover(
        cls,
        config: Config,
        *,
        entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
        extra_plugins: Mapping[str, Any] | None = None,
        notify_queue_size: int = 10_000,
        notify_workers: int = 4,
        trace: bool | None = None,
    ) -> PluginManager:
        """Find, import, register and configure every enabled plugin.

        ``entry_points`` defaults to the installed ones (group ``plugin_host``); pass ``()`` to
        use none (tests). ``extra_plugins`` are in-process plugin objects (name -> module,
        class or instance) treated like discovered ones (``plugin_host.testing``, tests).
        Raises :class:`~plugin_host.settings.ConfigError` (of which :class:`PluginLoadError`
        is a kind) for any problem.
        """
        candidates = find_candidates(
            entry_points=entry_points,
            plugins_dirs=config.plugins_dirs,
            objects=dict(extra_plugins or {}),
        )
        names = {c.name for c in candidates}
        _check_plugin_settings(config, names)
        _check_sections(config, names)

        pm = pluggy.PluginManager(PROJECT)
        pm.add_hookspecs(specs)
        loaded: list[LoadedPlugin] = []
        disabled: list[Candidate] = []
        for candidate in candidates:
            settings = config.plugin(candidate.name)
            if not settings.enabled:
                disabled.append(candidate)
                if candidate.name in config.sections:
                    log.warning(
                        "plugin_config_ignored", plugin=candidate.name, reason="plugin is disabled"
                    )
                continue
            obj = load(candidate)
            hooks = _register(pm, candidate, obj)
            schema = _schema(pm, candidate)
            section = config.section(candidate.name)
            if schema is not None:
                from plugin_host.config import apply_schema

                section = apply_schema(section, schema)
            loaded.append(
                LoadedPlugin(
                    candidate=candidate,
                    obj=obj,
                    priority=settings.priority,
                    on_error=settings.on_error,
                    section=section,
                    schema=schema,
                    hooks=hooks,
                )
            )
            log.debug("plugin_loaded", plugin=candidate.name, source=candidate.source)
        return cls(
            config,
            pm,
            loaded,
            disabled,
            notify_queue_size=notify_queue_size,
            notify_workers=notify_workers,
            trace=trace,
        )

    # ----------------------------------------------------------------------------------------
    # Introspection
    # ----------------------------------------------------------------------------------------

    @property
    def names(self) -> tuple[str, ...]:
        """Enabled plugins, in chain order."""
        return tuple(p.name for p in self.plugins)

    def plugin(self, name: str) -> Any:
        """The registered object of an enabled plugin (module or instance)."""
        return self._by_name[name].obj

    def section(self, name: str) -> PluginSection:
        """The (schema-typed) config section of an enabled plugin."""
        return self._by_name[name].section

    def schemas(self) -> dict[str, list[Key]]:
        """Declared config schemas by plugin name (for ``check-config`` rendering)."""
        return {p.name: p.schema for p in self.plugins if p.schema is not None}

    def table(self) -> list[PluginRow]:
        """Every discovered plugin: the enabled ones in chain order, then the disabled ones."""
        rows = [
            PluginRow(
                name=p.name,
                distribution=p.candidate.distribution,
                version=p.candidate.version,
                enabled=True,
                priority=p.priority,
                hooks=p.hooks,
                source=_SOURCE_LABEL[p.candidate.kind],
            )
            for p in self.plugins
        ]
        rows.extend(
            PluginRow(
                name=c.name,
                distribution=c.distribution,
                version=c.version,
                enabled=False,
                priority=self.config.plugin(c.name).priority,
                hooks=(),
                source=_SOURCE_LABEL[c.kind],
            )
            for c in self.disabled
        )
        return rows

    # ----------------------------------------------------------------------------------------
    # Running
    # ----------------------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self, host: Host) -> AsyncIterator[Dispatcher]:
        """Enter every lifespan (chain order), start the notification workers, yield the
        :class:`Dispatcher`; on exit deliver what is still queued (at most
        :data:`DRAIN_TIMEOUT` seconds, also when cancelled), then exit the lifespans in
        reverse order. A lifespan that fails to start raises :class:`PluginLoadError` after
        the ones already entered were exited.
        """
        if self._started:
            raise RuntimeError("PluginManager.running() can be entered only once")
        self._started = True
        dispatcher = self.dispatcher
        body_error: BaseException | None = None
        async with AsyncExitStack() as stack:
            caller = self.pm.hook.plugin_host_lifespan
            impls = {impl.plugin_name: impl for impl in caller.get_hookimpls()}
            for plugin in self.plugins:
                impl = impls.get(plugin.name)
                if impl is None:
                    continue
                view = PluginHost(host, plugin.name, dispatcher.recompile)
                await enter_lifespan(
                    stack,
                    plugin.name,
                    plugin.candidate.source,
                    impl.function,
                    impl.argnames,
                    view,
                    plugin.section,
                )
            dispatcher.recompile()
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(dispatcher.serve_notifications)
                    try:
                        yield dispatcher
                    except BaseException as exc:
                        body_error = exc
                        raise
                    finally:
                        dispatcher.close_notifications()
                        # The workers finish the queue and return; bound that, and keep it
                        # going through a cancellation of the caller (graceful drain).
                        nursery.cancel_scope.shield = True
                        nursery.cancel_scope.deadline = trio.current_time() + DRAIN_TIMEOUT
            except BaseExceptionGroup as group:
                # The nursery wraps the body's exception; give the caller its own exception.
                if body_error is not None and list(group.exceptions) == [body_error]:
                    raise body_error from None
                raise
            if dispatcher.queued():
                log.warning("hook_notifications_undelivered", count=dispatcher.queued())


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _installed(names: set[str]) -> str:
    return ", ".join(sorted(names)) or "none"


def _check_plugin_settings(config: Config, names: set[str]) -> None:
    for name, settings in config.plugins.items():
        if name in names:
            continue
        if not settings.enabled:
            log.warning("plugin_not_installed", plugin=name, reason="plugins.<name> = off ignored")
            continue
        close = difflib.get_close_matches(name, sorted(names), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"plugin {name!r} is not installed{hint}; installed: {_installed(names)}",
            key=f"plugins.{name}",
            file=settings.origin.file,
            line=settings.origin.line,
        )


def _check_sections(config: Config, names: set[str]) -> None:
    for name, section in config.sections.items():
        if name in names:
            continue
        first = next(iter(section.values), "")
        close = difflib.get_close_matches(name, sorted(names), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise section.error(
            first,
            f"no installed plugin is named {name!r}{hint}; installed: {_installed(names)}",
        )


def _register(pm: pluggy.PluginManager, candidate: Candidate, obj: Any) -> tuple[str, ...]:
    """Register ``obj`` under the candidate's name; return the MQTT hooks it implements."""
    where = f"plugin {candidate.name!r} ({candidate.source})"
    problem = _argument_problem(pm, obj)
    if problem:
        raise PluginLoadError(
            f"{where} cannot be registered: {problem}",
            plugin=candidate.name,
            source=candidate.source,
        )
    try:
        pm.register(obj, name=candidate.name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        reason = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise PluginLoadError(
            f"{where} cannot be registered: {reason}",
            plugin=candidate.name,
            source=candidate.source,
        ) from exc
    hooks = []
    for caller in pm.get_hookcallers(obj) or ():
        impl = next(i for i in caller.get_hookimpls() if i.plugin_name == candidate.name)
        problem = None
        if caller.spec is None:
            close = difflib.get_close_matches(caller.name, [*ALL_HOOKS, *META_HOOKS], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problem = f"implements unknown hook {caller.name!r}{hint}"
        elif impl.hookwrapper or impl.wrapper:
            problem = f"hook wrappers are not supported ({caller.name})"
        elif caller.name in META_HOOKS and (
            inspect.iscoroutinefunction(impl.function) or inspect.isasyncgenfunction(impl.function)
        ):
            problem = f"{caller.name} must be a plain function" + (
                " returning an async context manager (use contextlib.asynccontextmanager)"
                if caller.name == "plugin_host_lifespan"
                else ""
            )
        if problem:
            pm.unregister(obj)
            raise PluginLoadError(
                f"{where} cannot be registered: {problem}",
                plugin=candidate.name,
                source=candidate.source,
            )
        if caller.name not in META_HOOKS:
            hooks.append(caller.name)
    order = {name: index for index, name in enumerate(ALL_HOOKS)}
    return tuple(sorted(hooks, key=order.__getitem__))


def _argument_problem(pm: pluggy.PluginManager, obj: Any) -> str | None:
    """Say which hookimpl declares an argument its hook does not have (pluggy's rule, in
    words an operator understands)."""
    for attribute in dir(obj):
        opts = pm.parse_hookimpl_opts(obj, attribute)
        if opts is None:
            continue
        hook = opts.get("specname") or attribute
        caller = getattr(pm.hook, hook, None)
        if caller is None or caller.spec is None:
            continue  # unknown hooks are reported after registration, with a suggestion
        try:
            signature = inspect.signature(getattr(obj, attribute))
        except (TypeError, ValueError):
            continue
        declared = [
            p.name
            for p in signature.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
        unknown = [name for name in declared if name not in caller.spec.argnames]
        if unknown:
            return (
                f"{hook}({', '.join(declared)}): {', '.join(map(repr, unknown))} "
                f"{'is not an argument' if len(unknown) == 1 else 'are not arguments'} of "
                f"{hook} (it has: {', '.join(caller.spec.argnames)})"
            )
    return None


def _schema(pm: pluggy.PluginManager, candidate: Candidate) -> list[Key] | None:
    caller = pm.hook.plugin_host_config_schema
    impl = next((i for i in caller.get_hookimpls() if i.plugin_name == candidate.name), None)
    if impl is None:
        return None
    where = f"plugin {candidate.name!r} ({candidate.source})"
    try:
        keys: Any = impl.function()
    except Exception as exc:
        raise PluginLoadError(
            f"{where}: plugin_host_config_schema failed: {type(exc).__name__}: {exc}",
            plugin=candidate.name,
            source=candidate.source,
        ) from exc
    if keys is None:
        return None
    try:
        declared: list[Any] = list(keys)
    except TypeError:
        declared = [keys]
    bad = [k for k in declared if not isinstance(k, Key)]
    if bad:
        raise PluginLoadError(
            f"{where}: plugin_host_config_schema must return plugin_host.settings.Key "
            f"objects, got {type(bad[0]).__name__}",
            plugin=candidate.name,
            source=candidate.source,
        )
    return [k for k in declared if isinstance(k, Key)]
