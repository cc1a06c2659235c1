"""Scripts: each loaded into N Lua states, with calls spread over the states.

* ``keep_state`` off (the default): each call runs in its own coroutine on the post-load
  globals, so a state may run several calls at once; a call goes to the state with the fewest
  calls in progress. One slow HTTP call never holds up the next caller (VerneMQ #589/#807).
* ``keep_state`` on: globals persist between calls, so a state runs one call at a time; calls
  wait (FIFO) for a free state.

A :class:`ScriptSet` is the immutable, ordered list of loaded scripts with a per-hook index; the
plugin swaps in a new one on reload, while calls already running finish on the old states.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import trio

from plugin_host_diversity.config import DiversityConfig, ScriptSource
from plugin_host_diversity.convert import to_lua
from plugin_host_diversity.runtime import (
    Deferred,
    Later,
    LuaState,
    Pending,
    ScriptError,
    Services,
)
from plugin_host_diversity.translate import LUA_HOOKS, TABLE_ARGS, lua_key_names
from plugin_host_diversity.yields import may_yield

__all__ = ["CallStats", "Script", "ScriptLoadError", "ScriptSet", "Timed", "load_script"]


class ScriptLoadError(Exception):
    """A script could not be loaded: ``file`` and ``line`` say where (when known)."""

    def __init__(self, message: str, *, file: str, line: int | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        super().__init__(f"{file}:{line}: {message}" if line else f"{file}: {message}")


class CallStats:
    """Calls, failures and time of one script's hook (``script show``, ``/metrics``).

    ``seconds`` is wall time from the call to its answer (I/O waits included); for the calls
    of a plain script through a direct caller it is an estimate (one call in
    :data:`~plugin_host_diversity.direct.SAMPLE` is timed and counts that many times). Plain
    numbers, bumped per call; kept across reloads of the script.
    """

    __slots__ = ("calls", "errors", "seconds")

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.seconds = 0.0


class Timed(Later):
    """A call that waits for I/O: its time is counted when it ends."""

    __slots__ = ("_began", "_later", "_stats")

    def __init__(self, later: Later, stats: CallStats, began: float) -> None:
        self._later = later
        self._stats = stats
        self._began = began

    async def finish(self) -> Any:
        try:
            return await self._later.finish()
        finally:
            self._stats.calls += 1
            self._stats.seconds += time.perf_counter() - self._began


class Script:
    """One loaded script: its states, its hooks, and the dispatch of calls over the states."""

    def __init__(
        self,
        source: ScriptSource,
        states: Sequence[LuaState],
        hooks: frozenset[str],
        keep_state: bool,
        *,
        plain: bool = False,
    ) -> None:
        self.source = source
        self.name = source.name
        self.states = list(states)
        self.hooks = hooks
        self.keep_state = keep_state
        #: The script cannot yield: its calls run without a coroutine (see yields.py).
        self.plain = plain
        #: Per hook call statistics (see :class:`CallStats`).
        self.stats: dict[str, CallStats] = {hook: CallStats() for hook in hooks}
        self._send: trio.MemorySendChannel[LuaState] | None = None
        self._receive: trio.MemoryReceiveChannel[LuaState] | None = None
        #: The one state calls go to without choosing (one state, keep_state off).
        self._single = self.states[0] if len(self.states) == 1 and not keep_state else None
        if keep_state:
            self._send, self._receive = trio.open_memory_channel[LuaState](len(self.states))
            for state in self.states:
                self._send.send_nowait(state)

    def __repr__(self) -> str:
        return f"<Script {self.name} {self.source.path} states={len(self.states)}>"

    def keep_stats(self, previous: Script) -> None:
        """Continue the statistics of ``previous`` (the version this one replaces)."""
        for hook, stats in previous.stats.items():
            if hook in self.stats:
                self.stats[hook] = stats

    def count_error(self, hook: str) -> None:
        """Count a failed call of ``hook`` (a Lua error or an invalid result)."""
        stats = self.stats.get(hook)
        if stats is not None:
            stats.errors += 1

    def start(self, hook: str, values: Sequence[Any]) -> Any:
        """Call ``hook`` with the argument values (see :func:`translate.lua_arguments`).

        As :meth:`_begin`, counting the call and its time in :attr:`stats`.
        """
        stats = self.stats.get(hook)
        if stats is None:
            stats = self.stats[hook] = CallStats()
        began = time.perf_counter()
        try:
            if self._single is not None and not TABLE_ARGS[hook]:
                result = self._single.start(hook, values)  # _begin's common case
            else:
                result = self._begin(hook, values)
        except BaseException:
            stats.calls += 1
            stats.seconds += time.perf_counter() - began
            raise
        if isinstance(result, Later):
            return Timed(result, stats, began)
        stats.calls += 1
        stats.seconds += time.perf_counter() - began
        return result

    def _begin(self, hook: str, values: Sequence[Any]) -> Any:
        """Call ``hook`` with the argument values (see :func:`translate.lua_arguments`).

        Returns the raw Lua result at once when the call did no I/O, else a
        :class:`~plugin_host_diversity.runtime.Later` to await. Raises :class:`ScriptError`.
        """
        if self._receive is None:
            state = self.states[0]
            if len(self.states) > 1:
                for candidate in self.states:
                    if candidate.inflight < state.inflight:
                        state = candidate
            if not TABLE_ARGS[hook]:  # (the per-message hooks: no table to build per state)
                return state.start(hook, values)
            return self._start(state, hook, values)
        assert self._send is not None
        try:
            state = self._receive.receive_nowait()
        except trio.WouldBlock:
            return Deferred(self._call_when_free(hook, values))
        try:
            result = self._start(state, hook, values)
        except BaseException:
            self._send.send_nowait(state)
            raise
        if result.__class__ is Pending:
            result.release = partial(self._send.send_nowait, state)
        else:
            self._send.send_nowait(state)
        return result

    async def call(self, hook: str, values: Sequence[Any]) -> Any:
        """:meth:`start`, awaiting the result if it is not there at once."""
        result = self.start(hook, values)
        if isinstance(result, Later):
            return await result
        return result

    async def _call_when_free(self, hook: str, values: Sequence[Any]) -> Any:
        # keep_state: every state is busy; wait (FIFO) for one.
        assert self._send is not None and self._receive is not None
        state = await self._receive.receive()
        try:
            result = self._start(state, hook, values)
            if result.__class__ is Pending:
                return await result
            return result
        finally:
            self._send.send_nowait(state)

    @staticmethod
    def _start(state: LuaState, hook: str, values: Sequence[Any]) -> Any:
        positions = TABLE_ARGS[hook]
        if positions:
            values = list(values)
            for i in positions:
                if values[i] is not None:
                    values[i] = to_lua(state.lua, values[i])
        return state.start(hook, values)


class ScriptSet:
    """The loaded scripts in load order, and for each hook the scripts defining it.

    Immutable once built: the plugin swaps in a new set on reload.
    """

    __slots__ = ("by_hook", "hooks", "scripts")

    def __init__(self, scripts: Sequence[Script] = ()) -> None:
        self.scripts: tuple[Script, ...] = tuple(scripts)
        index: dict[str, tuple[Script, ...]] = {}
        for script in self.scripts:
            for hook in script.hooks:
                index[hook] = (*index.get(hook, ()), script)
        self.by_hook: dict[str, tuple[Script, ...]] = index
        self.hooks: frozenset[str] = frozenset(index)


def _package_path(config: DiversityConfig, source: ScriptSource) -> str:
    dirs: list[Path] = []
    if config.script_dir is not None:
        dirs.append(config.script_dir)
    if source.path.parent not in dirs:
        dirs.append(source.path.parent)
    return ";".join(f"{d}/?.lua;{d}/?/init.lua" for d in dirs)


def _where(
    exc: ScriptError, source: ScriptSource, config: DiversityConfig
) -> tuple[str, int | None]:
    """The file an error position refers to: the script itself or a module it required."""
    if exc.file is None or exc.file == source.path.name:
        return str(source.path), exc.line
    for base in (source.path.parent, config.script_dir):
        if base is not None and (base / exc.file).is_file():
            return str(base / exc.file), exc.line
    return exc.file, exc.line


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value < 1 or value != int(value):
        return None
    return min(int(value), 1000)


async def load_script(
    source: ScriptSource,
    *,
    config: DiversityConfig,
    services: Services,
    log: Any,
) -> Script:
    """Read and load a script into its states; raises :class:`ScriptLoadError`."""
    try:
        code = await trio.to_thread.run_sync(source.path.read_bytes)
    except OSError as exc:
        raise ScriptLoadError(
            f"cannot read the script: {exc.strerror or exc}", file=str(source.path)
        ) from None
    script_log = log.bind(script=source.name)
    package_path = _package_path(config, source)

    async def new_state(instance_id: int) -> tuple[LuaState, tuple[list[str], Any, Any, str]]:
        state = LuaState(
            script=source.name,
            instance_id=instance_id,
            services=services,
            limits=config.limits,
            package_path=package_path,
            log=script_log,
            base_dir=source.path.parent,
        )
        try:
            loaded = await state.load(code, source.path.name)
        except ScriptError as exc:
            file, line = _where(exc, source, config)
            message = exc.message
            if exc.file is not None and message.startswith(f"{exc.file}:{exc.line}: "):
                message = message[len(f"{exc.file}:{exc.line}: ") :]  # file:line is reported
            raise ScriptLoadError(message, file=file, line=line) from None
        return state, loaded

    first, (hook_names, num_states, keep_state, hooks_type) = await new_state(1)
    if hooks_type not in ("table", "nil"):
        raise ScriptLoadError(f"'hooks' must be a table, not a {hooks_type}", file=str(source.path))
    unknown = sorted(set(hook_names) - LUA_HOOKS)
    if unknown:
        script_log.warning("lua_unknown_hooks_ignored", hooks=unknown)
    hooks = frozenset(hook_names) & LUA_HOOKS
    if not hooks:
        script_log.warning("lua_script_defines_no_hooks", file=str(source.path))
    count = _count(num_states) or config.nr_lua_states
    keep = keep_state if isinstance(keep_state, bool) else config.keep_state
    # Decided from the text, not from what loading did: a hook may reach code the main chunk
    # never ran.
    plain = not may_yield(code)
    states = [first]
    for instance_id in range(2, count + 1):
        state, _ = await new_state(instance_id)
        states.append(state)
    for state in states:
        state.isolate(not keep)
        for hook in hooks:
            state.define(hook, lua_key_names(hook), plain=plain)
    script_log.info(
        "lua_script_loaded",
        file=str(source.path),
        hooks=sorted(hooks),
        states=count,
        keep_state=keep,
        coroutines=not plain,
    )
    return Script(source, states, hooks, keep, plain=plain)
