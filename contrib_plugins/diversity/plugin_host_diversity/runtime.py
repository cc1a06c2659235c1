"""One sandboxed Lua 5.4 state and the trio driver of the calls running in it.

Every call (a hook call, or a script's main chunk at load) runs in its own Lua coroutine.
When script code calls a module function that does I/O (``http.*``, ``bcrypt.hashpw``,
``require`` ...) the coroutine yields a request; :meth:`LuaState._drive` awaits the real
operation in the calling trio task and resumes the coroutine with the answer. Meanwhile other
calls run on the same state (with ``keep_state`` off) or on the script's other states, so a slow
HTTP call never blocks other clients. Cancelling the calling task abandons the coroutine (it
is garbage collected) and leaves the state usable.

The Lua side (the sandbox, the budget hook, the module wrappers) is ``lua/prelude.lua``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from lupa.lua54 import LuaError, LuaMemoryError, LuaRuntime

__all__ = [
    "Deferred",
    "Later",
    "Limits",
    "LuaState",
    "OpError",
    "Pending",
    "ScriptError",
    "Services",
    "Then",
]

_PRELUDE = resources.files(__package__).joinpath("lua/prelude.lua").read_bytes()

#: Lua's message when an allocation fails (the state's ``max_memory`` was reached).
_NO_MEMORY = b"not enough memory"
_NO_MEMORY_TEXT = "not enough memory (the state's max_memory was reached)"
_POSITION = re.compile(rb"^(?:\.\.\.)?([^\n:]*):(\d+): ")


class ScriptError(Exception):
    """A Lua call failed.

    ``kind``: ``"error"`` (a runtime error raised by the script), ``"budget"`` (the call used
    more instructions or Lua time than allowed), ``"memory"`` (the state's ``max_memory`` was
    reached) or ``"syntax"`` (the script does not compile). ``file`` / ``line`` locate the
    error when Lua said where it happened; ``traceback`` is Lua's stack trace (for logs).
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str = "error",
        file: str | None = None,
        line: int | None = None,
        traceback: str = "",
    ) -> None:
        self.message = message
        self.kind = kind
        self.file = file
        self.line = line
        self.traceback = traceback
        super().__init__(message)


class OpError(Exception):
    """An operation requested by a script is refused: raised as a Lua error in the script."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-state and per-call limits.

    ``max_memory``: bytes one Lua state may allocate (``None`` = unlimited).
    ``max_instructions``: Lua VM instructions one call may execute (0 = unlimited).
    ``max_time``: seconds of Lua execution one call may use, I/O waits excluded (0 = off).
    ``hook_count``: instructions between two budget checks (granularity of both limits).
    """

    max_memory: int | None = 64 * 1024 * 1024
    max_instructions: int = 10_000_000
    max_time: float = 1.0
    hook_count: int = 1000


class Services(Protocol):
    """What a state needs from the plugin: module implementations and I/O operations."""

    def functions(self, state: LuaState) -> dict[bytes, Callable[..., Any]]:
        """The synchronous module functions handed to the prelude (``H``), bound to ``state``."""
        ...

    def operation(self, op: bytes) -> Callable[[LuaState, tuple[Any, ...]], Awaitable[Any]]:
        """The async implementation of an I/O request a coroutine yielded."""
        ...


def _deny_attributes(obj: Any, name: Any, is_setting: bool) -> Any:
    # Script code never holds Python objects, but if one leaked it must not open Python up.
    raise AttributeError("access to Python attributes is not allowed")


def _position(message: bytes) -> tuple[str | None, int | None]:
    match = _POSITION.match(message)
    if not match:
        return None, None
    return match.group(1).decode("utf-8", "replace"), int(match.group(2))


class LuaState:
    """One ``lupa.lua54.LuaRuntime`` prepared by the prelude, running one script.

    ``inflight`` counts the calls currently suspended or running in it (the script spreads
    calls over its states by this number).
    """

    def __init__(
        self,
        *,
        script: str,
        instance_id: int,
        services: Services,
        limits: Limits,
        package_path: str,
        log: Any,
        base_dir: Path | None = None,
    ) -> None:
        self.script = script
        #: The script's directory: relative file names (require, dofile, CA files) start here.
        self.base_dir = base_dir
        self.instance_id = instance_id
        self.limits = limits
        self.log = log
        self.inflight = 0
        self._services = services
        self.lua = LuaRuntime(
            encoding=None,
            register_eval=False,
            register_builtins=False,
            attribute_filter=_deny_attributes,
            unpack_returned_tuples=True,
            max_memory=limits.max_memory,
        )
        functions = dict(services.functions(self))
        functions[b"clock"] = time.perf_counter
        settings = {
            b"instance_id": instance_id,
            b"hook_count": max(1, limits.hook_count),
            b"max_instructions": max(0, limits.max_instructions),
            b"time_limited": limits.max_time > 0,
            b"max_time_ms": limits.max_time * 1000.0,
            b"package_path": package_path.encode("utf-8"),
        }
        driver = self.lua.execute(
            _PRELUDE,
            self.lua.table_from(functions),
            self.lua.table_from(settings),
            name="=diversity/prelude.lua",
        )
        self._entry = driver[b"entry"]
        self._step = driver[b"step"]
        self._compile = driver[b"compile"]
        self._loaded = driver[b"loaded"]
        self._isolate = driver[b"isolate"]
        self._call_function = driver[b"call_function"]
        self._keyset = driver[b"keyset"]
        self._abandon = driver[b"abandon"]
        self._global = driver[b"global"]
        #: hook name -> its entry function (see :meth:`define`).
        self.entries: dict[str, Any] = {}

    # -- setup --------------------------------------------------------------------------

    def define(self, hook: str, names: Sequence[bytes], *, plain: bool = False) -> Any:
        """Make the entry function of ``hook``, whose argument table has the keys ``names``.

        The entry (a Lua function) takes the argument values in the order of ``names`` and
        returns what :meth:`start` describes; :meth:`start` and the plugin's per-hook fast
        callers call it. Returns it (and keeps it in :attr:`entries`).

        ``plain``: the script can never yield (:func:`~plugin_host_diversity.yields.may_yield`
        is false for its source), so its calls run on the state's main thread under
        ``xpcall`` instead of in a pooled coroutine: same budget, globals isolation and errors,
        less work per call. A call of a plain entry always finishes at once.
        """
        entry = self._entry(self.lua.table_from(list(names)), hook.encode(), plain)
        self.entries[hook] = entry
        return entry

    async def load(self, source: bytes, chunkname: str) -> tuple[list[str], Any, Any, str]:
        """Run a script's main chunk in this state.

        Returns the hook names of its ``hooks`` table, its ``num_states`` and ``keep_state``
        globals (raw Lua values) and the Lua type of ``hooks``. Raises :class:`ScriptError`.
        """
        try:
            co, err = self._compile(source, b"@" + chunkname.encode("utf-8"))
        except LuaMemoryError:
            raise ScriptError("not enough memory to compile the script", kind="memory") from None
        if co is None:
            message = err or b"syntax error"
            file, line = _position(message)
            raise ScriptError(
                message.decode("utf-8", "replace"), kind="syntax", file=file, line=line
            )
        began = time.perf_counter()
        max_time = self.limits.max_time
        try:
            result = self._step(co, began + max_time if max_time > 0 else None)
        except LuaMemoryError:
            raise ScriptError(_NO_MEMORY_TEXT, kind="memory") from None
        self.inflight += 1
        await Pending(self, co, result, time.perf_counter() - began).finish()
        names, num_states, keep_state, hooks_type = self._loaded()
        hook_names = sorted(n.decode("utf-8", "replace") for n in names.values())
        return hook_names, num_states, keep_state, hooks_type.decode()

    def isolate(self, on: bool) -> None:
        """``True`` (keep_state off): every call starts from the post-load globals."""
        self._isolate(on)

    def global_value(self, name: str) -> Any:
        """A global of the script (raw Lua value; for tests and diagnostics)."""
        return self._global(name.encode())

    # -- calls --------------------------------------------------------------------------
    #
    # A call runs synchronously until it ends or its coroutine asks for an operation (I/O).
    # Most hook calls never do I/O: they finish inside start() without any await, coroutine
    # object or cancel scope on the Python side. A call that waits for I/O comes back as a
    # Pending, which finish() drives to the end in the awaiting task.

    def start(self, hook: str, values: Sequence[Any]) -> Any:
        """Start a call of the script's ``hook`` (made with :meth:`define`) with the argument
        table of ``values``.

        Returns the hook's first return value (a raw Lua value: ``None``, ``bool``, number,
        ``bytes`` or a Lua table), or a :class:`Pending` when the call waits for an operation
        (``await pending.finish()``). Raises :class:`ScriptError` when the call fails.
        """
        began = time.perf_counter()
        try:
            # One value back: the call is done and that is its result. Several (a tuple):
            # it is not, see settle().
            result = self.entries[hook](*values)
        except LuaError as exc:
            raise self.entry_error(exc) from None
        if result.__class__ is tuple:
            return self.settle(result, time.perf_counter() - began)
        return result

    def settle(self, result: tuple[Any, ...], spent: float) -> Pending:
        """What an entry call that did not finish returned: the call id, then ``"error"``,
        message, budget tripped, traceback (raises :class:`ScriptError`) or ``"io"`` and the
        request (returns the :class:`Pending` that drives the call on). ``spent``: the Lua
        time the call used so far.
        """
        call_id = result[0]
        result = result[1:]
        if result[0] == b"error":
            raise self._error(result)
        self.inflight += 1
        return Pending(self, call_id, result, spent)

    @staticmethod
    def entry_error(exc: LuaError) -> ScriptError:
        """The error of an entry call that failed before its coroutine ran (out of memory
        building the argument table, or a fault of the driver itself)."""
        if isinstance(exc, LuaMemoryError):
            return ScriptError(_NO_MEMORY_TEXT, kind="memory")
        return ScriptError(f"Lua driver error: {exc}")

    async def call(self, hook: str, values: Sequence[Any]) -> Any:
        """:meth:`start` and, if the call waits for I/O, :meth:`Pending.finish`."""
        result = self.start(hook, values)
        if result.__class__ is Pending:
            return await result.finish()
        return result

    async def call_function(self, fn: Any, *args: Any) -> Any:
        """Call a Lua function of this state inside a budgeted coroutine (tests, callbacks)."""
        began = time.perf_counter()
        max_time = self.limits.max_time
        try:
            call_id, *result = self._call_function(
                fn, began + max_time if max_time > 0 else None, *args
            )
        except LuaMemoryError:
            raise ScriptError(_NO_MEMORY_TEXT, kind="memory") from None
        self.inflight += 1
        return await Pending(self, call_id, result, time.perf_counter() - began).finish()

    async def _drive(self, call_id: int, result: Sequence[Any], spent: float) -> Any:
        """Drive a started call to its end: perform what it asks for, resume it, repeat."""
        max_time = self.limits.max_time
        waiting: int | None = None  # the call id while its coroutine waits for an operation
        try:
            while True:
                status = result[0]
                if status == b"done":
                    return result[1]
                if status == b"error":
                    raise self._error(result)
                # b"io": a module function asked for an operation; do it here, in this task.
                waiting = call_id
                operation = self._services.operation(result[1])
                try:
                    answer = (True, *await operation(self, tuple(result[2:])))
                except OpError as exc:
                    answer = (False, str(exc).encode("utf-8", "replace"))
                waiting = None
                began = time.perf_counter()
                deadline = began + (max_time - spent) if max_time > 0 else None
                try:
                    result = self._step(call_id, deadline, *answer)
                except LuaMemoryError:
                    raise ScriptError(_NO_MEMORY_TEXT, kind="memory") from None
                except LuaError as exc:  # an error in the driver itself (should not happen)
                    raise ScriptError(f"Lua driver error: {exc}") from None
                finally:
                    spent += time.perf_counter() - began
        finally:
            self.inflight -= 1
            if waiting is not None:
                # Cancelled (or failed) while the coroutine waited for an operation: forget
                # it. The state stays usable; the coroutine is garbage collected.
                self._abandon(waiting)

    def _error(self, result: Sequence[Any]) -> ScriptError:
        message: bytes = result[1]
        tripped = result[2] if len(result) > 2 else False
        trace = result[3] if len(result) > 3 else b""
        file, line = _position(message)
        if tripped:
            kind = "budget"
        elif message == _NO_MEMORY:
            kind = "memory"
            message = _NO_MEMORY_TEXT.encode()
        else:
            kind = "error"
        return ScriptError(
            message.decode("utf-8", "replace"),
            kind=kind,
            file=file,
            line=line,
            traceback=trace.decode("utf-8", "replace") if isinstance(trace, bytes) else "",
        )


class Later:
    """An answer that is not there yet: ``await`` it (or its ``finish()``).

    Hook calls answer at once when no script waits for I/O; otherwise they hand back a
    ``Later``. Test for it with ``isinstance`` (never ``hasattr`` on a Lua result: attribute
    access on a Lua table reads the table).
    """

    __slots__ = ()

    def __await__(self) -> Any:
        return self.finish().__await__()

    async def finish(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class Deferred(Later):
    """A :class:`Later` for a coroutine (started when awaited)."""

    __slots__ = ("_coroutine",)

    def __init__(self, coroutine: Awaitable[Any]) -> None:
        self._coroutine = coroutine

    async def finish(self) -> Any:
        return await self._coroutine


class Then(Later):
    """``await later`` then ``fn(result)``."""

    __slots__ = ("_fn", "_later")

    def __init__(self, later: Later, fn: Callable[[Any], Any]) -> None:
        self._later = later
        self._fn = fn

    async def finish(self) -> Any:
        return self._fn(await self._later.finish())


class Pending(Later):
    """A call that waits for an operation: ``await`` it to drive it to its end.

    Created by :meth:`LuaState.start`; ``release`` (if set) runs when the call is over, however
    it ends (the script uses it to give a ``keep_state`` state back).
    """

    __slots__ = ("_call_id", "_result", "_spent", "release", "state")

    def __init__(self, state: LuaState, call_id: int, result: Sequence[Any], spent: float) -> None:
        self.state = state
        self._call_id = call_id
        self._result = result
        self._spent = spent
        self.release: Callable[[], None] | None = None

    async def finish(self) -> Any:
        try:
            return await self.state._drive(self._call_id, self._result, self._spent)
        finally:
            if self.release is not None:
                self.release()
