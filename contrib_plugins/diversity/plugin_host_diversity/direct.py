"""Direct callers: the per-message path of a hook that one script answers from one state.

The general path of a hook call (:meth:`DiversityPlugin._chain` -> :meth:`Script.start` ->
:meth:`LuaState.start`) converts the arguments into a list, chooses a state, and goes through
three Python frames before it reaches Lua. For the usual set-up (one script defines the hook,
it has one Lua state and ``keep_state`` is off) none of that choosing is needed, and on a
per-message hook (``auth_on_publish``, ``on_deliver``, ``on_publish``) those frames are most
of the cost of a trivial Lua hook. :func:`direct_caller` compiles, per hook, one function
with the hookimpl's signature that:

* converts the arguments inline (``str`` to UTF-8, password obfuscated, see
  :func:`~plugin_host_diversity.translate.argument_expressions`) and calls the hook's Lua
  entry function (:meth:`LuaState.define`): one crossing into Lua, one value back when the
  call finished;
* counts the call in the script's statistics (and its time: every call's, or for a plain
  script, whose calls never wait for I/O, one call's in :data:`SAMPLE` counted
  :data:`SAMPLE` times, which spares the other calls two clock readings);
* answers ``True`` as it is, translates any other result, and hands anything unusual to
  the plugin: a failure (then ``on_error`` applies, as on the general path) or a call that
  waits for I/O (a :class:`~plugin_host_diversity.runtime.Later` the host awaits, with the
  same timing, cancellation and budget as on the general path).

Nothing here changes what a call does in Lua: the same entry function (coroutine or plain),
budget and sandbox serve both paths.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from lupa.lua54 import LuaError

from plugin_host_diversity import translate
from plugin_host_diversity.convert import ConversionError
from plugin_host_diversity.runtime import Later, LuaState, ScriptError
from plugin_host_diversity.scripts import CallStats, Script, Timed

__all__ = ["SAMPLE", "direct_caller", "direct_state"]

#: A plain script's direct caller times one call in SAMPLE (see :func:`direct_caller`).
SAMPLE = 16


def direct_state(script: Script, hook: str) -> LuaState | None:
    """The state a direct caller of ``hook`` would call, or ``None`` when ``script`` needs the
    general path for it (several states to choose from, ``keep_state``, table arguments)."""
    if translate.TABLE_ARGS[hook] or script.keep_state or len(script.states) != 1:
        return None
    return script.states[0]


def direct_caller(
    hook: str,
    script: Script,
    *,
    chain: bool,
    obfuscate: Callable[[bytes], bytes],
    on_failure: Callable[[Exception], Any],
    on_pending: Callable[[Later], Any],
    link: Any = None,
) -> Callable[..., Any]:
    """A function with the hookimpl arguments of ``hook`` that calls ``script``'s hook.

    ``chain``: the result is translated (:func:`translate.result`) and returned; otherwise
    (notification hooks) the answer is ``None``. ``on_failure(exc)`` is called with the
    :class:`ScriptError` or :class:`ConversionError` of a failed call (already counted) and
    its return value is the answer. ``on_pending(later)`` gets the call that waits for I/O
    (timed into the statistics when it ends) and returns the answer. Requires
    :func:`direct_state` to be a state.

    ``link``: the dispatcher's :class:`~plugin_host.hooks.runner.ChainLink` (chain hooks of a
    plain script only): the function is then the dispatcher's whole positional caller of a
    chain of this plugin alone: ``True`` counts in ``link.stats`` (timed on the same sampled
    calls as the script's statistics) and answers ``link.allow``; every other answer goes
    through ``link.answered``. See :meth:`DiversityPlugin.plugin_host_auth_caller`.
    """
    state = direct_state(script, hook)
    if state is None:
        raise ValueError(f"{script.name}: {hook} needs the general path")
    stats = script.stats.get(hook)
    if stats is None:
        stats = script.stats[hook] = CallStats()
    perf = time.perf_counter
    # Calls of a plain script (no coroutine, never waits for I/O) are short and many: reading
    # the clock twice would be a good part of their cost. One in SAMPLE is timed and counts
    # SAMPLE times in ``seconds`` (an unbiased estimate; failures are sampled like the rest).
    # Other scripts' calls are all timed: their time decides the budget left after I/O.
    sample = SAMPLE if script.plain else 1
    if link is not None and (not chain or sample != link.sample_every):
        raise ValueError(f"{script.name}: {hook} cannot answer for the dispatcher")

    def failed(exc: Exception, began: float | None) -> Any:
        stats.calls += 1
        if began is not None:
            stats.seconds += (perf() - began) * sample
        return on_failure(exc)

    def unfinished(raw: tuple[Any, ...], began: float | None) -> Any:
        # Several values back: the call failed in Lua, or it waits for I/O (never for a
        # plain script, whose calls are the only untimed ones).
        if began is None:
            began = perf()
        try:
            pending = state.settle(raw, perf() - began)
        except ScriptError as exc:
            return failed(exc, began)
        return on_pending(Timed(pending, stats, began))

    def answer(raw: Any) -> Any:
        try:
            return translate.result(hook, raw)
        except ConversionError as exc:
            return on_failure(exc)

    names = translate.HOOK_ARGS[hook]
    values, namespace = translate.argument_expressions(hook, names, "_obfuscate")
    namespace.update(
        _entry=state.entries[hook],
        _perf=perf,
        _stats=stats,
        _failed=failed,
        _unfinished=unfinished,
        _answer=answer,
        _entry_error=state.entry_error,
        _LuaError=LuaError,
        _obfuscate=obfuscate,
    )
    if chain:
        # The common answer of a chain hook, True, needs no translation.
        tail = "if raw is True:\n        return True\n    return _answer(raw)"
    else:
        tail = "return None"
    call = f"_entry({', '.join(values)})"
    if link is not None:
        source = _linked_source(hook, names, call, sample)
        namespace.update(_link_stats=link.stats, _ALLOW=link.allow, _answered=link.answered)
        exec(compile(source, f"<diversity auth caller of {hook}>", "exec"), namespace)
        linked: Callable[..., Any] = namespace[hook]
        return linked
    if sample == 1:
        source = f"""
def {hook}({", ".join(names)}):
    began = _perf()
    try:
        raw = {call}
    except _LuaError as exc:
        return _failed(_entry_error(exc), began)
    if raw.__class__ is tuple:
        return _unfinished(raw, began)
    _stats.calls += 1
    _stats.seconds += _perf() - began
    {tail}
"""
    else:
        # The untimed calls (all but one in SAMPLE) take a path of their own, with the common
        # answer first.
        source = f"""
def {hook}({", ".join(names)}):
    if _stats.calls % {sample}:
        try:
            raw = {call}
        except _LuaError as exc:
            return _failed(_entry_error(exc), None)
        if raw.__class__ is tuple:
            return _unfinished(raw, None)
        _stats.calls += 1
        {tail.replace(chr(10), chr(10) + "    ")}
    began = _perf()
    try:
        raw = {call}
    except _LuaError as exc:
        return _failed(_entry_error(exc), began)
    if raw.__class__ is tuple:
        return _unfinished(raw, began)
    _stats.calls += 1
    _stats.seconds += (_perf() - began) * {sample}
    {tail}
"""
    exec(compile(source, f"<diversity direct caller of {hook}>", "exec"), namespace)
    caller: Callable[..., Any] = namespace[hook]
    return caller


def _linked_source(hook: str, names: tuple[str, ...], call: str, sample: int) -> str:
    """The direct caller of a plain script as the dispatcher's positional caller (``link``):
    the same calls and statistics; ``True`` is also counted in the dispatcher's statistics and
    answers ``ALLOW``; any other answer (a failure's, a translated result) goes to
    ``_answered`` with the arguments, which counts it and settles it as the dispatcher would.
    """
    values = f"({', '.join(names)},)"
    return f"""
def {hook}({", ".join(names)}):
    if _stats.calls % {sample}:
        try:
            raw = {call}
        except _LuaError as exc:
            return _answered(_failed(_entry_error(exc), None), {values}, None)
        if raw.__class__ is tuple:
            return _answered(_unfinished(raw, None), {values}, None)
        _stats.calls += 1
        if raw is True:
            _link_stats.calls += 1
            return _ALLOW
        return _answered(_answer(raw), {values}, None)
    began = _perf()
    try:
        raw = {call}
    except _LuaError as exc:
        return _answered(_failed(_entry_error(exc), began), {values}, began)
    if raw.__class__ is tuple:
        return _answered(_unfinished(raw, began), {values}, began)
    spent = (_perf() - began) * {sample}
    _stats.calls += 1
    _stats.seconds += spent
    if raw is True:
        _link_stats.calls += 1
        _link_stats.seconds += spent
        return _ALLOW
    return _answered(_answer(raw), {values}, began)
"""
