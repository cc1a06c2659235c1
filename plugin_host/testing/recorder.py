"""A recording plugin for tests: every notification hook call, in order."""

# wait_for takes a timeout on purpose: a test helper must fail loudly, never hang.
# ruff: noqa: ASYNC109

from __future__ import annotations

from typing import Any

import trio

from plugin_host.hooks.forward import forward_hooks
from plugin_host.hooks.specs import NOTIFY_HOOKS

WAIT = 10.0

__all__ = ["HookRecorder"]


@forward_hooks(NOTIFY_HOOKS, to="_notified", awaits=False)
class HookRecorder:
    """A plugin object recording every notification hook call, for tests.

    Register it like any plugin (``run_broker(plugins={"rec": recorder})``). Notification
    hooks run off the client's path, so wait for them: ``await recorder.wait_for(
    "on_session_expired", client_id="x")`` returns the arguments of the first matching call
    (raises ``trio.TooSlowError`` after ``timeout``). ``recorder.calls`` is the list of
    ``(hook, args)`` in call order; ``recorder.of(hook)`` the arguments of one hook's calls.
    Subclass it to record chain hooks too (call :meth:`record` and return a result). Its
    hookimpls (plain functions, every argument) are made by
    :func:`plugin_host.hooks.forward.forward_hooks`.
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._changed = trio.Event()

    def record(self, hook: str, **args: Any) -> None:
        self.calls.append((hook, args))
        self._changed.set()
        self._changed = trio.Event()

    def of(self, hook: str) -> list[dict[str, Any]]:
        return [args for name, args in self.calls if name == hook]

    async def wait_for(self, hook: str, timeout: float = WAIT, **match: Any) -> dict[str, Any]:
        with trio.fail_after(timeout):
            while True:
                for name, args in self.calls:
                    if name == hook and all(args.get(k) == v for k, v in match.items()):
                        return args
                await self._changed.wait()

    def _notified(self, hook: str, args: dict[str, Any]) -> None:
        self.record(hook, **args)
