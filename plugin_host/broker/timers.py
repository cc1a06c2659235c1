"""One task that runs every broker timer (will delay, session expiry, v3 retries, sweeps).

A heap of deadlines instead of one sleeping task per timer: a broker with 100k offline
sessions then holds 100k small :class:`Timer` objects, not 100k tasks. Callbacks are plain
synchronous functions; they run in the timer task and must not block.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

import structlog
import trio

log = structlog.get_logger(__name__)


class Timer:
    """A scheduled call; :meth:`cancel` makes it a no-op."""

    __slots__ = ("args", "callback", "cancelled", "deadline")

    def __init__(self, deadline: float, callback: Callable[..., None], args: tuple[Any, ...]):
        self.deadline = deadline
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class TimerWheel:
    """Run callbacks at ``trio.current_time()`` deadlines from a single task."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._lot = trio.lowlevel.ParkingLot()

    def __len__(self) -> int:
        return len(self._heap)

    def call_at(self, deadline: float, callback: Callable[..., None], *args: Any) -> Timer:
        timer = Timer(deadline, callback, args)
        first = not self._heap or deadline < self._heap[0][0]
        heapq.heappush(self._heap, (deadline, next(self._seq), timer))
        if first:
            self._lot.unpark_all()
        return timer

    def call_later(self, delay: float, callback: Callable[..., None], *args: Any) -> Timer:
        return self.call_at(trio.current_time() + delay, callback, *args)

    async def run(self) -> None:
        """Run forever (until cancelled)."""
        heap = self._heap
        while True:
            if not heap:
                await self._lot.park()
                continue
            deadline = heap[0][0]
            now = trio.current_time()
            if deadline > now:
                with trio.move_on_at(deadline):
                    await self._lot.park()
                continue
            _, _, timer = heapq.heappop(heap)
            if timer.cancelled:
                continue
            try:
                timer.callback(*timer.args)
            except Exception:
                log.exception("timer_callback_failed", callback=repr(timer.callback))
            await trio.lowlevel.checkpoint()
