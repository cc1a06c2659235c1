"""The chain runner: :class:`Dispatcher`, the plugin system's :class:`HookDispatch`.

Per hook, the dispatcher keeps a precompiled tuple of :class:`HookCall` (plugin name, callable,
argument names, sync/async) in chain order: ``plugins.<name>.priority`` lower first, then the
plugins without priority by name. pluggy's own call order (LIFO registration, tryfirst/trylast)
is ignored on purpose: the order is the configuration's. The tables are rebuilt by
:meth:`Dispatcher.recompile`, at start-up and whenever a plugin calls ``host.hooks_changed()``.

Hot-path rules:

* :meth:`Dispatcher.implemented` is one frozenset lookup; :meth:`Dispatcher.notify` for a hook
  nobody answers is the same lookup and nothing else.
* :meth:`Dispatcher.auth_now` runs a chain synchronously as long as its hookimpls are plain
  functions that answer at once: no coroutine, no cancel scope, arguments picked by a
  precompiled getter, the shared :data:`~plugin_host.hooks.results.ALLOW` for ``True``. At the
  first ``async def`` hookimpl (or a plain one that hands back an awaitable) it returns an
  awaitable that runs the rest of the chain exactly like :meth:`Dispatcher.auth` does.
  :meth:`Dispatcher.auth` is ``auth_now`` plus the await.
* :meth:`Dispatcher.auth_caller` is ``auth_now`` for one hook with the arguments passed
  positionally: for a chain of one plain hookimpl (the usual per-message set-up) it is one
  compiled function that calls the hookimpl with its arguments straight from the caller's, so
  no args dict is built unless the answer is something other than ``True``.
* A plain (sync) hookimpl is called directly on the event loop: it must be quick. An
  ``async def`` one is awaited under ``hook_timeout``.
* A plugin may hand the dispatcher a specialised callable to call instead of one of its
  hookimpls (a per-message hook, minus the hookimpl's own frame): the optional, plain method
  ``plugin_host_fast_hook(hook: str) -> Callable | None`` (not a hook; no ``@hookimpl``) is
  asked for every hookimpl at every rebuild of the tables. The callable takes the same
  arguments as the hookimpl and answers like it; ``None`` keeps the hookimpl. A plugin whose
  answer changes calls ``host.hooks_changed()``.
* One step further, for :meth:`Dispatcher.auth_caller`: when a chain is one plain hookimpl
  of a plugin with the optional method ``plugin_host_auth_caller(hook, link)``, the dispatcher
  asks it for the whole positional caller (the hook's arguments in hookspec order, answering
  like ``auth_caller`` does), handing it a :class:`ChainLink`: its statistics, ``ALLOW``, and
  ``answered`` for every answer other than ``True``. That saves the dispatcher's own frame
  per call. ``None`` keeps the dispatcher's caller; the same ``host.hooks_changed()`` rule.
* :meth:`Dispatcher.arguments` says which arguments the current chain of a hook takes (the
  union of its hookimpls' argument names), so the broker can skip building what nobody reads;
  :attr:`Dispatcher.generation` changes whenever the tables are rebuilt, so callers can cache
  what they derived from them.
* Notifications never block the caller: they are put on a bounded memory channel (one per
  worker; a client's notifications always go to the same worker, so they stay in order) and
  served by worker tasks owned by :meth:`Dispatcher.serve_notifications`. When a channel is
  full the notification is dropped, counted and logged (rate-limited).

``PLUGIN_HOST_TRACE_HOOKS=1`` logs every call with its arguments (password and
authentication data redacted, payloads shortened), each plugin's result and the time taken.
"""

from __future__ import annotations

import inspect
import operator
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pluggy
import structlog
import trio

from plugin_host.hooks.api import HookDispatch, positional_caller
from plugin_host.hooks.modifiers import LIST_RESULT_HOOKS, InvalidResult
from plugin_host.hooks.normalise import deny_outcome, normalise_result
from plugin_host.hooks.results import ALLOW, EXHAUSTED, UNCHANGED, Deny, Outcome
from plugin_host.hooks.specs import ALL_HOOKS, CHAIN_HOOKS, HOOK_ARGS, RESULT_OPTIONAL_HOOKS

__all__ = [
    "AuthResult",
    "ChainLink",
    "ChainMember",
    "Dispatcher",
    "HookCall",
    "HookStats",
    "trace_enabled",
]

log = structlog.get_logger(__name__)

TRACE_ENV = "PLUGIN_HOST_TRACE_HOOKS"
#: Seconds between two "notifications dropped" warnings.
DROP_WARNING_INTERVAL = 10.0
_REDACTED = "<redacted>"
_TRACE_BYTES = 64
#: Notifications a worker handles between two scheduling points (when they do not yield).
NOTIFY_BATCH = 64


def trace_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``PLUGIN_HOST_TRACE_HOOKS`` is set to something other than ``""``/``0``."""
    value = (os.environ if environ is None else environ).get(TRACE_ENV, "")
    return value.strip().lower() not in ("", "0", "false", "no", "off")


@dataclass(frozen=True, slots=True)
class ChainMember:
    """One enabled plugin as the dispatcher sees it, in chain order."""

    name: str
    on_error: Literal["deny", "next"] = "deny"


#: Plain hookimpl calls answered at once are timed one in SAMPLE_EVERY (see
#: :meth:`Dispatcher.auth_now`); :attr:`HookStats.seconds` is then an unbiased estimate.
SAMPLE_EVERY = 16


class HookStats:
    """Calls, failures and time spent in one plugin's implementation of one hook.

    Plain numbers bumped on every call (read by ``/metrics`` at scrape time): ``calls``
    finished calls, ``errors`` calls that raised, timed out or returned an invalid result,
    ``seconds`` total wall time of the calls (awaiting included; for plain hookimpls that
    answer at once on the auth path, estimated from one call in :data:`SAMPLE_EVERY`).
    """

    __slots__ = ("calls", "errors", "seconds")

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.seconds = 0.0


@dataclass(frozen=True, slots=True)
class HookCall:
    """One precompiled hookimpl of one hook."""

    plugin: str
    function: Callable[..., Any]
    argnames: tuple[str, ...]
    is_async: bool
    on_error_next: bool
    stats: HookStats = field(default_factory=HookStats)
    #: Picks this hookimpl's arguments out of the args dict (a tuple; KeyError when one is
    #: missing). ``None``: the hookimpl takes no argument.
    extract: Callable[[Mapping[str, Any]], Sequence[Any]] | None = None
    #: The plugin object the hookimpl belongs to (asked for ``plugin_host_auth_caller``).
    owner: object = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ChainLink:
    """What a plugin's own compiled caller of a one-plugin chain gets from the dispatcher
    (the optional ``plugin_host_auth_caller(hook, link)``, see the module text).

    ``stats``: the dispatcher's statistics of the plugin's hook. The caller counts its
    ``True`` answers in ``stats.calls`` and, timing one call in ``sample_every``, adds that
    call's seconds times ``sample_every`` to ``stats.seconds``. ``allow`` is what it returns
    for them. Any other answer goes to ``answered(value, values, started)`` and the caller
    returns what that returns: ``values`` are the call's arguments in hookspec order,
    ``started`` the call's start (``time.perf_counter()``) when it was timed, else ``None``;
    ``answered`` counts the call and does what :meth:`Dispatcher.auth_now` does with the
    answer (validation, ``on_error``, awaiting).
    """

    stats: HookStats
    allow: Outcome
    sample_every: int
    answered: Callable[[Any, tuple[Any, ...], float | None], AuthResult]


def _fast_hook(plugin: object, plugin_name: str, hook: str) -> Callable[..., Any] | None:
    """What the plugin's optional ``plugin_host_fast_hook(hook)`` hands over (see the module
    text); ``None`` when it has none, or it failed (logged)."""
    ask = getattr(plugin, "plugin_host_fast_hook", None)
    if ask is None:
        return None
    try:
        function = ask(hook)
    except Exception:
        log.exception("plugin_fast_hook_failed", plugin=plugin_name, hook=hook)
        return None
    if function is not None and not callable(function):
        log.error("plugin_fast_hook_invalid", plugin=plugin_name, hook=hook)
        return None
    return function  # type: ignore[no-any-return]


def _extractor(argnames: tuple[str, ...]) -> Callable[[Mapping[str, Any]], Sequence[Any]] | None:
    """A C-level getter of ``argnames`` (``operator.itemgetter``), always giving a sequence."""
    if not argnames:
        return None
    if len(argnames) == 1:
        getter = operator.itemgetter(argnames[0])
        return lambda args: (getter(args),)
    return operator.itemgetter(*argnames)


#: Results that are certainly not awaitable (checked by type before ``inspect.isawaitable``).
_PLAIN_RESULTS = frozenset({bool, dict, list, tuple, bytes, bytearray, Deny, type(None)})


_Notification = tuple[str, Mapping[str, Any]]

#: What :meth:`Dispatcher.auth_now` returns: the outcome, or an awaitable of it.
AuthResult = Outcome | Awaitable[Outcome]


class _Timeout(Exception):
    """Internal: an async hookimpl did not answer within ``hook_timeout``."""


def _shorten(value: Any) -> Any:
    if isinstance(value, bytes | bytearray) and len(value) > _TRACE_BYTES:
        return f"{bytes(value[:_TRACE_BYTES])!r}... ({len(value)} bytes)"
    return value


def redact(args: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of hook arguments that is safe to log (no password, no authentication data)."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        if key == "password" and value is not None:
            out[key] = _REDACTED
        elif key == "properties" and isinstance(value, Mapping):
            out[key] = {
                k: (_REDACTED if k == "p_authentication_data" else _shorten(v))
                for k, v in value.items()
            }
        else:
            out[key] = _shorten(value)
    return out


def _describe(outcome: Outcome | None) -> str:
    if outcome is None:
        return "next"
    if outcome.unchanged:
        return f"unchanged ({outcome.reason})"
    if not outcome.allowed:
        return f"deny ({outcome.reason})"
    if outcome.modifiers or outcome.topics is not None:
        return "ok with changes"
    return "ok"


class Dispatcher(HookDispatch):
    """Runs hook chains and notifications for the plugins registered in ``pm``.

    ``members`` are the enabled plugins in chain order (their pluggy registration names).
    ``hook_timeout`` bounds every ``async def`` hookimpl call (seconds). ``notify_queue_size``
    is the total number of queued notifications (split evenly across ``notify_workers``)
    before new ones are dropped. ``trace`` defaults to :func:`trace_enabled`.
    """

    def __init__(
        self,
        pm: pluggy.PluginManager,
        members: Sequence[ChainMember],
        *,
        hook_timeout: float = 5.0,
        notify_queue_size: int = 10_000,
        notify_workers: int = 4,
        trace: bool | None = None,
    ) -> None:
        if notify_workers < 1:
            raise ValueError("notify_workers must be >= 1")
        self._pm = pm
        self._members = tuple(members)
        self.hook_timeout = hook_timeout
        self.trace = trace_enabled() if trace is None else trace
        self._chains: dict[str, tuple[HookCall, ...]] = {}
        self._implemented: frozenset[str] = frozenset()
        self._arguments: dict[str, frozenset[str]] = {}
        #: Bumped by every :meth:`recompile`: what a caller derived from :meth:`implemented`
        #: or :meth:`arguments` stays valid while this number is the same.
        self.generation = 0
        per_worker = max(1, notify_queue_size // notify_workers)
        channels = [
            trio.open_memory_channel[_Notification](per_worker) for _ in range(notify_workers)
        ]
        self._senders = [send for send, _ in channels]
        self._receivers = [receive for _, receive in channels]
        self._workers = notify_workers
        #: Notifications dropped because their queue was full (total / per hook).
        self.dropped = 0
        self.dropped_by_hook: dict[str, int] = {}
        #: Hookimpl calls that raised, timed out or returned an invalid result.
        self.errors = 0
        #: Per (plugin, hook) call statistics; kept across recompiles.
        self.stats: dict[tuple[str, str], HookStats] = {}
        self._enqueued = 0
        self._taken = 0
        self._dropped_since_warning = 0
        self._last_drop_warning = -DROP_WARNING_INTERVAL
        self.recompile()

    # ----------------------------------------------------------------------------------------
    # Chain tables
    # ----------------------------------------------------------------------------------------

    def _active_hooks(self) -> dict[str, frozenset[str] | None]:
        active: dict[str, frozenset[str] | None] = {}
        caller = getattr(self._pm.hook, "plugin_host_active_hooks", None)
        if caller is None:
            return active
        for impl in caller.get_hookimpls():
            try:
                value = impl.function()
            except Exception:
                log.exception("plugin_active_hooks_failed", plugin=impl.plugin_name)
                continue
            if value is None:
                continue
            if isinstance(value, str) or not isinstance(value, Iterable):
                log.error(
                    "plugin_active_hooks_invalid",
                    plugin=impl.plugin_name,
                    result=repr(value)[:80],
                )
                continue
            names = frozenset(value)
            unknown = sorted(str(n) for n in names if n not in CHAIN_HOOKS and n not in ALL_HOOKS)
            if unknown:
                log.warning("plugin_active_hooks_unknown", plugin=impl.plugin_name, hooks=unknown)
            active[impl.plugin_name] = names
        return active

    def recompile(self) -> None:
        """Rebuild the per-hook call tables (at start-up and on ``host.hooks_changed()``)."""
        active = self._active_hooks()
        order = {member.name: index for index, member in enumerate(self._members)}
        on_error = {member.name: member.on_error == "next" for member in self._members}
        chains: dict[str, tuple[HookCall, ...]] = {}
        for hook in ALL_HOOKS:
            caller = getattr(self._pm.hook, hook, None)
            if caller is None:
                continue
            calls = []
            for impl in caller.get_hookimpls():
                name = impl.plugin_name
                if name not in order:
                    continue
                names = active.get(name)
                if names is not None and hook not in names:
                    continue
                function = _fast_hook(impl.plugin, name, hook) or impl.function
                calls.append(
                    HookCall(
                        plugin=name,
                        function=function,
                        argnames=tuple(impl.argnames),
                        is_async=inspect.iscoroutinefunction(function),
                        on_error_next=on_error[name],
                        stats=self.stats.setdefault((name, hook), HookStats()),
                        extract=_extractor(tuple(impl.argnames)),
                        owner=impl.plugin,
                    )
                )
            if calls:
                calls.sort(key=lambda call: order[call.plugin])
                chains[hook] = tuple(calls)
        arguments: dict[str, frozenset[str]] = {}
        for hook, compiled in chains.items():
            if self.trace:
                # Traced calls log every argument of the hook, not only those impls take.
                caller = getattr(self._pm.hook, hook)
                spec = caller.spec.argnames if caller.spec is not None else ()
                arguments[hook] = frozenset(spec).union(*(c.argnames for c in compiled))
            else:
                arguments[hook] = frozenset().union(*(c.argnames for c in compiled))
            if hook in LIST_RESULT_HOOKS:
                # Validating a rewritten topic list compares it with the requested one.
                arguments[hook] = arguments[hook] | {"topics"}
        self._chains = chains
        self._implemented = frozenset(chains)
        self._arguments = arguments
        self._restricted_chains: dict[tuple[str, tuple[str, ...]], tuple[HookCall, ...]] = {}
        self._callers: dict[tuple[str, tuple[str, ...] | None], Callable[..., AuthResult]] = {}
        self.generation += 1

    def _restricted(self, hook: str, plugins: tuple[str, ...]) -> tuple[HookCall, ...] | None:
        key = (hook, plugins)
        chain = self._restricted_chains.get(key)
        if chain is None:
            by_plugin = {call.plugin: call for call in self._chains.get(hook, ())}
            chain = tuple(by_plugin[name] for name in plugins if name in by_plugin)
            self._restricted_chains[key] = chain
        return chain or None

    #: ``host.hooks_changed()`` of a plugin ends up here.
    hooks_changed = recompile

    def chain(self, hook: str) -> tuple[str, ...]:
        """The plugin names that currently answer ``hook``, in call order."""
        return tuple(call.plugin for call in self._chains.get(hook, ()))

    def implemented(self, hook: str) -> bool:
        """True when at least one enabled plugin currently answers ``hook``."""
        return hook in self._implemented

    def arguments(self, hook: str) -> frozenset[str]:
        """The argument names the current chain of ``hook`` reads (empty: none, or nobody
        answers the hook). A caller may leave the other arguments out of the args dict.
        With tracing on, every argument of the hook (they are all logged)."""
        return self._arguments.get(hook, frozenset())

    # ----------------------------------------------------------------------------------------
    # Calling one hookimpl
    # ----------------------------------------------------------------------------------------

    @staticmethod
    def _arguments_of(call: HookCall, args: Mapping[str, Any]) -> Sequence[Any]:
        extract = call.extract
        if extract is None:
            return ()
        try:
            return extract(args)
        except KeyError:
            # The caller left an argument out (a test, a custom caller): it is None.
            get = args.get
            return [get(name) for name in call.argnames]

    async def _await_value(self, value: Awaitable[Any]) -> Any:
        """Await what a hookimpl handed back, under ``hook_timeout``; raises :class:`_Timeout`."""
        with trio.move_on_after(self.hook_timeout) as scope:
            return await value
        if scope.cancelled_caught:
            raise _Timeout
        return None  # pragma: no cover - the body returned or raised

    async def _invoke(self, call: HookCall, args: Mapping[str, Any]) -> Any:
        """Call one hookimpl; raises what it raises, or :class:`_Timeout`."""
        value = call.function(*self._arguments_of(call, args))
        if call.is_async or (value.__class__ not in _PLAIN_RESULTS and inspect.isawaitable(value)):
            # An async hookimpl, or a plain function that hands back an awaitable
            # (functools.partial of a coroutine function, a decorator, a plugin's
            # "answer later" object): awaited like an async hookimpl.
            return await self._await_value(value)
        return value

    def _failed(self, call: HookCall, hook: str, reason: str) -> Outcome | None:
        self.errors += 1
        call.stats.errors += 1
        if call.on_error_next:
            return None
        return deny_outcome(hook, call.plugin, reason)

    def _raised(self, call: HookCall, hook: str, exc: Exception) -> Outcome | None:
        """A hookimpl raised (or timed out): log it with the plugin's name, apply on_error."""
        if isinstance(exc, _Timeout):
            log.error(
                "hook_timeout",
                plugin=call.plugin,
                hook=hook,
                timeout=self.hook_timeout,
                on_error="next" if call.on_error_next else "deny",
            )
            return self._failed(call, hook, "plugin_timeout")
        log.error(
            "hook_failed",
            plugin=call.plugin,
            hook=hook,
            error=f"{type(exc).__name__}: {exc}",
            on_error="next" if call.on_error_next else "deny",
            exc_info=exc,
        )
        return self._failed(call, hook, "plugin_error")

    def _normalised(
        self, call: HookCall, hook: str, value: Any, args: Mapping[str, Any]
    ) -> Outcome | None:
        try:
            return normalise_result(hook, value, args, call.plugin)
        except InvalidResult as exc:
            log.error(
                "hook_invalid_result",
                plugin=call.plugin,
                hook=hook,
                error=str(exc),
                on_error="next" if call.on_error_next else "deny",
            )
            return self._failed(call, hook, "invalid_result")

    async def _chain_step(
        self, call: HookCall, hook: str, args: Mapping[str, Any]
    ) -> Outcome | None:
        stats = call.stats
        started = time.perf_counter()
        try:
            value = await self._invoke(call, args)
        except Exception as exc:
            # Cancellation (trio.Cancelled, a BaseException) is not caught: it propagates.
            return self._raised(call, hook, exc)
        finally:
            stats.calls += 1
            stats.seconds += time.perf_counter() - started
        return self._normalised(call, hook, value, args)

    # ----------------------------------------------------------------------------------------
    # HookDispatch
    # ----------------------------------------------------------------------------------------

    async def auth(
        self, hook: str, args: dict[str, Any], plugins: tuple[str, ...] | None = None
    ) -> Outcome:
        """Run the conditional chain of ``hook`` until the first answer other than next.

        Returns the validated :class:`Outcome`. An exhausted chain (every plugin said next,
        or nobody answers the hook) is :data:`EXHAUSTED` (deny, ``exhausted=True``), or
        :data:`UNCHANGED` for on_deliver/on_unsubscribe. Never raises for plugin faults;
        cancellation of the caller propagates into the plugin call.

        ``plugins`` restricts and orders the chain to those plugin names (a listener's
        ``auth_plugins`` / ``authz_plugins``, spec 1.3); names that do not answer the hook
        are skipped. ``None`` = every plugin, in chain order.
        """
        result = self.auth_now(hook, args, plugins)
        if isinstance(result, Outcome):
            return result
        return await result

    def auth_now(
        self, hook: str, args: Mapping[str, Any], plugins: tuple[str, ...] | None = None
    ) -> AuthResult:
        """:meth:`auth` without the coroutine when the chain can answer at once.

        Plain hookimpls are called right here, in order. When the chain is decided by them
        (or exhausted), the :class:`Outcome` is returned. At the first ``async def``
        hookimpl, or a plain one that returned an awaitable, the rest of the chain is
        returned as an awaitable of the outcome: await it (at once) for exactly what
        :meth:`auth` would have done, timeouts and ``on_error`` included. With tracing on
        the whole chain is an awaitable (the traced runner logs every step).
        """
        chain = self._chains.get(hook) if plugins is None else self._restricted(hook, plugins)
        if chain is None:
            return UNCHANGED if hook in RESULT_OPTIONAL_HOOKS else EXHAUSTED
        if self.trace:
            return self._auth_traced(hook, args, chain)
        perf = time.perf_counter
        for index, call in enumerate(chain):
            if call.is_async:
                return self._auth_rest(hook, args, chain, index, None, 0.0)
            stats = call.stats
            # A plain call on the per-message path takes about a microsecond, and reading
            # the clock twice would add a tenth of that: one call in SAMPLE_EVERY is timed
            # and counts SAMPLE_EVERY times in ``seconds`` (an unbiased estimate of the
            # total). Calls that hand back an awaitable are always timed (see _auth_rest).
            timed = not stats.calls % SAMPLE_EVERY
            started = perf() if timed else 0.0
            result: AuthResult | None
            try:
                extract = call.extract
                if extract is None:
                    value = call.function()
                else:
                    try:
                        values = extract(args)
                    except KeyError:
                        values = self._arguments_of(call, args)
                    value = call.function(*values)
            except Exception as exc:
                result = self._call_raised(call, hook, exc, started, timed)
            else:
                if value is True:  # the common answer: the shared ALLOW, nothing to check
                    stats.calls += 1
                    if timed:
                        stats.seconds += (perf() - started) * SAMPLE_EVERY
                    return ALLOW
                result = self._call_answered(call, hook, args, chain, index, value, started, timed)
            if result is not None:
                return result
        return UNCHANGED if hook in RESULT_OPTIONAL_HOOKS else EXHAUSTED

    def _call_raised(
        self, call: HookCall, hook: str, exc: Exception, started: float, timed: bool
    ) -> Outcome | None:
        """A plain hookimpl of a chain (called at ``started``, timed or not) raised."""
        stats = call.stats
        stats.calls += 1
        if timed:
            stats.seconds += (time.perf_counter() - started) * SAMPLE_EVERY
        return self._raised(call, hook, exc)

    def _call_answered(
        self,
        call: HookCall,
        hook: str,
        args: Mapping[str, Any],
        chain: tuple[HookCall, ...],
        index: int,
        value: Any,
        started: float,
        timed: bool,
    ) -> AuthResult | None:
        """What the plain hookimpl ``chain[index]`` answered (anything but ``True``): its
        outcome, ``None`` for next, or an awaitable of the chain's outcome when it handed
        back something to await."""
        if value.__class__ not in _PLAIN_RESULTS and inspect.isawaitable(value):
            return self._auth_rest(
                hook, args, chain, index, value, started if timed else time.perf_counter()
            )
        stats = call.stats
        stats.calls += 1
        if timed:
            stats.seconds += (time.perf_counter() - started) * SAMPLE_EVERY
        return None if value is None else self._normalised(call, hook, value, args)

    def auth_caller(
        self, hook: str, plugins: tuple[str, ...] | None = None
    ) -> Callable[..., AuthResult]:
        """:meth:`auth_now` for ``hook`` (and ``plugins``, as there), taking the hook's
        arguments positionally in hookspec order (:data:`~plugin_host.hooks.specs.HOOK_ARGS`).

        The per-message path's entry point. For a chain of one plain hookimpl (no tracing)
        the function is compiled for it: the hookimpl gets its arguments straight from the
        caller's, ``True`` is the shared ``ALLOW``, and the args dict is built only for
        other answers (validation needs it). Anything else is ``auth_now`` with the dict.
        Valid until the tables are rebuilt (:attr:`generation` changes); then ask again.
        """
        key = (hook, plugins)
        caller = self._callers.get(key)
        if caller is None:
            caller = self._callers[key] = self._compile_caller(hook, plugins)
        return caller

    def _compile_caller(
        self, hook: str, plugins: tuple[str, ...] | None
    ) -> Callable[..., AuthResult]:
        names = HOOK_ARGS[hook]
        chain = self._chains.get(hook) if plugins is None else self._restricted(hook, plugins)
        if (
            chain is None
            or len(chain) != 1
            or chain[0].is_async
            or self.trace
            or not set(chain[0].argnames) <= set(names)
        ):
            if plugins is None:
                return positional_caller(self.auth_now, hook)
            auth_now = self.auth_now
            return positional_caller(lambda h, args: auth_now(h, args, plugins), hook)
        call = chain[0]
        exhausted = UNCHANGED if hook in RESULT_OPTIONAL_HOOKS else EXHAUSTED
        own = self._plugin_caller(call, hook, chain, exhausted)
        if own is not None:
            return own

        def raised(exc: Exception, started: float, timed: bool) -> AuthResult:
            return self._call_raised(call, hook, exc, started, timed) or exhausted

        def answered(value: Any, args: dict[str, Any], started: float, timed: bool) -> AuthResult:
            result = self._call_answered(call, hook, args, chain, 0, value, started, timed)
            return exhausted if result is None else result

        # Spec argument names are plain identifiers (no leading underscore): the locals and
        # globals of the compiled function below start with one, so they never clash.
        args_dict = "{" + ", ".join(f"{name!r}: {name}" for name in names) + "}"
        source = f"""
def {hook}({", ".join(names)}):
    _timed = not _stats.calls % {SAMPLE_EVERY}
    _started = _perf() if _timed else 0.0
    try:
        _value = _function({", ".join(call.argnames)})
    except Exception as _exc:
        return _raised(_exc, _started, _timed)
    if _value is True:
        _stats.calls += 1
        if _timed:
            _stats.seconds += (_perf() - _started) * {SAMPLE_EVERY}
        return _ALLOW
    return _answered(_value, {args_dict}, _started, _timed)
"""
        namespace: dict[str, Any] = {
            "_stats": call.stats,
            "_perf": time.perf_counter,
            "_function": call.function,
            "_raised": raised,
            "_answered": answered,
            "_ALLOW": ALLOW,
        }
        exec(compile(source, f"<auth caller of {hook}>", "exec"), namespace)  # our own text
        compiled: Callable[..., AuthResult] = namespace[hook]
        return compiled

    def _plugin_caller(
        self, call: HookCall, hook: str, chain: tuple[HookCall, ...], exhausted: Outcome
    ) -> Callable[..., AuthResult] | None:
        """The plugin's own compiled caller of a chain of it alone (its optional
        ``plugin_host_auth_caller(hook, link)``), or ``None``."""
        make = getattr(call.owner, "plugin_host_auth_caller", None)
        if make is None:
            return None
        names = HOOK_ARGS[hook]

        def answered(value: Any, values: tuple[Any, ...], started: float | None) -> AuthResult:
            args = dict(zip(names, values, strict=True))
            if started is None:  # not timed (an awaitable's wait is timed from now)
                result = self._call_answered(call, hook, args, chain, 0, value, 0.0, False)
            else:
                result = self._call_answered(call, hook, args, chain, 0, value, started, True)
            return exhausted if result is None else result

        link = ChainLink(
            stats=call.stats, allow=ALLOW, sample_every=SAMPLE_EVERY, answered=answered
        )
        try:
            function = make(hook, link)
        except Exception:
            log.exception("plugin_auth_caller_failed", plugin=call.plugin, hook=hook)
            return None
        if function is not None and not callable(function):
            log.error("plugin_auth_caller_invalid", plugin=call.plugin, hook=hook)
            return None
        return function  # type: ignore[no-any-return]

    async def _auth_rest(
        self,
        hook: str,
        args: Mapping[str, Any],
        chain: tuple[HookCall, ...],
        index: int,
        pending: Awaitable[Any] | None,
        started: float,
    ) -> Outcome:
        """The chain from ``chain[index]`` on; ``pending`` is what that (plain) hookimpl
        handed back to await, called at ``started``, or ``None`` to call it here."""
        if pending is not None:
            call = chain[index]
            stats = call.stats
            try:
                value = await self._await_value(pending)
            except Exception as exc:
                outcome = self._raised(call, hook, exc)
            else:
                outcome = self._normalised(call, hook, value, args)
            finally:
                stats.calls += 1
                stats.seconds += time.perf_counter() - started
            if outcome is not None:
                return outcome
            index += 1
        for call in chain[index:]:
            outcome = await self._chain_step(call, hook, args)
            if outcome is not None:
                return outcome
        return UNCHANGED if hook in RESULT_OPTIONAL_HOOKS else EXHAUSTED

    async def _auth_traced(
        self, hook: str, args: Mapping[str, Any], chain: tuple[HookCall, ...]
    ) -> Outcome:
        log.info("hook_call", hook=hook, args=redact(args), chain=[c.plugin for c in chain])
        started = time.perf_counter()
        outcome: Outcome | None = None
        for call in chain:
            t0 = time.perf_counter()
            outcome = await self._chain_step(call, hook, args)
            log.info(
                "hook_result",
                hook=hook,
                plugin=call.plugin,
                result=_describe(outcome),
                elapsed_ms=round((time.perf_counter() - t0) * 1000, 3),
            )
            if outcome is not None:
                break
        if outcome is None:
            outcome = UNCHANGED if hook in RESULT_OPTIONAL_HOOKS else EXHAUSTED
        log.info(
            "hook_outcome",
            hook=hook,
            result=_describe(outcome),
            plugin=outcome.plugin,
            elapsed_ms=round((time.perf_counter() - started) * 1000, 3),
        )
        return outcome

    def notify(self, hook: str, args: dict[str, Any]) -> None:
        """Queue a notification; returns at once, never raises, drops when the queue is full."""
        if hook not in self._implemented:
            return
        if self._workers == 1:
            sender = self._senders[0]
        else:
            # Same client -> same worker: a client's notifications keep their order.
            sender = self._senders[hash(args.get("client_id")) % self._workers]
        try:
            sender.send_nowait((hook, args))
            self._enqueued += 1
        except trio.WouldBlock:
            self._drop(hook)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            # Shutting down: nobody will serve it any more.
            self._drop(hook, warn=False)

    def _drop(self, hook: str, *, warn: bool = True) -> None:
        self.dropped += 1
        self.dropped_by_hook[hook] = self.dropped_by_hook.get(hook, 0) + 1
        self._dropped_since_warning += 1
        now = time.monotonic()
        if warn and now - self._last_drop_warning >= DROP_WARNING_INTERVAL:
            log.warning(
                "hook_notifications_dropped",
                hook=hook,
                dropped=self._dropped_since_warning,
                dropped_total=self.dropped,
                reason="queue_full",
            )
            self._last_drop_warning = now
            self._dropped_since_warning = 0

    # ----------------------------------------------------------------------------------------
    # Notification workers
    # ----------------------------------------------------------------------------------------

    async def _notify_one(self, call: HookCall, hook: str, args: Mapping[str, Any]) -> None:
        stats = call.stats
        started = time.perf_counter()
        try:
            await self._invoke(call, args)
        except _Timeout:
            self.errors += 1
            stats.errors += 1
            log.error("hook_timeout", plugin=call.plugin, hook=hook, timeout=self.hook_timeout)
        except Exception as exc:
            self.errors += 1
            stats.errors += 1
            log.error(
                "hook_failed",
                plugin=call.plugin,
                hook=hook,
                error=f"{type(exc).__name__}: {exc}",
                exc_info=exc,
            )
        finally:
            stats.calls += 1
            stats.seconds += time.perf_counter() - started
        if self.trace:
            log.info(
                "hook_result",
                hook=hook,
                plugin=call.plugin,
                result="done",
                elapsed_ms=round((time.perf_counter() - started) * 1000, 3),
            )

    async def _deliver(self, hook: str, args: Mapping[str, Any]) -> None:
        self._taken += 1
        # Looked up now, not at notify(): a plugin may have gone inactive meanwhile.
        chain = self._chains.get(hook, ())
        if self.trace:
            log.info("hook_call", hook=hook, args=redact(args), chain=self.chain(hook))
        for call in chain:
            await self._notify_one(call, hook, args)

    async def _worker(self, receive: trio.MemoryReceiveChannel[_Notification]) -> None:
        async with receive:
            async for first in receive:
                await self._deliver(*first)
                # Take what is already queued without a scheduler round-trip per item; the
                # batch bound keeps a flood of quick sync notifications from hogging the loop.
                for _ in range(NOTIFY_BATCH - 1):
                    try:
                        item = receive.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    await self._deliver(*item)

    async def serve_notifications(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the notification workers until :meth:`close_notifications` and the queues
        are drained (or until cancelled). Start it with ``await nursery.start(...)``."""
        async with trio.open_nursery() as nursery:
            for receive in self._receivers:
                nursery.start_soon(self._worker, receive)
            task_status.started()

    def close_notifications(self) -> None:
        """Stop accepting notifications; the workers finish what is queued, then return."""
        for send in self._senders:
            send.close()

    def queued(self) -> int:
        """Notifications accepted by :meth:`notify` that no worker has taken yet."""
        return self._enqueued - self._taken
