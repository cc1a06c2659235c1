"""The webhook response cache (spec 3.6), with VerneMQ's flaws fixed (spec section 6).

* Only ``ok`` results of auth_on_register / auth_on_publish / auth_on_subscribe (and ``_m5``)
  are cached, and only when the response says ``Cache-Control: max-age=N`` with N > 0 and
  neither ``no-store`` nor ``no-cache`` (VerneMQ cached ``no-store`` and ``max-age=0``, #2545,
  #1782).
* An entry is valid for exactly N seconds from the response (VerneMQ rounded to whole seconds
  and kept it until the end of the last second).
* The key is (endpoint, hook, request fields except ``payload`` and ``peer_port``); a cached
  ``payload`` modifier is never replayed (it was computed for another message).
* A size bound with least-recently-used eviction, plus :meth:`ResponseCache.sweep` (run by a
  background task of the plugin's lifespan) drops expired entries, so memory stays bounded
  (VerneMQ only deleted an expired entry when it was looked up again).
* Hits and misses are counted per (endpoint, hook), like ``vmq-admin webhooks cache show``.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

#: Hooks whose ``ok`` results may be cached.
CACHEABLE_HOOKS = frozenset(
    {
        "auth_on_register",
        "auth_on_register_m5",
        "auth_on_publish",
        "auth_on_publish_m5",
        "auth_on_subscribe",
        "auth_on_subscribe_m5",
    }
)

#: Returned by :meth:`ResponseCache.get` when there is no valid entry (``None`` is a value).
MISS: Any = object()

CacheKey = tuple[str, str, str]  # endpoint, hook, request fields as canonical JSON


def max_age(cache_control: str | None) -> int | None:
    """Seconds a response may be cached for, from its ``Cache-Control`` header, or None.

    ``no-store`` / ``no-cache`` (anywhere in the header) forbid caching; ``max-age=0``, a
    missing or malformed ``max-age`` mean no caching either.
    """
    if not cache_control:
        return None
    seconds: int | None = None
    for directive in cache_control.split(","):
        name, _, value = directive.strip().partition("=")
        name = name.strip().lower()
        if name in ("no-store", "no-cache"):
            return None
        if name == "max-age" and seconds is None:
            value = value.strip().strip('"')
            if not value.isdigit():
                return None
            seconds = int(value)
    return seconds if seconds else None


@dataclass(slots=True)
class _Entry:
    value: Any
    expires: float


@dataclass(slots=True)
class CacheStats:
    """Counters of one (endpoint, hook) pair."""

    hits: int = 0
    misses: int = 0


class ResponseCache:
    """A bounded LRU map of cached results with per-entry expiry.

    ``clock`` returns seconds (trio's clock by default, so tests can drive it).
    """

    def __init__(
        self, max_entries: int = 100_000, clock: Callable[[], float] | None = None
    ) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self.max_entries = max_entries
        self._clock = clock or trio.current_time
        self._entries: OrderedDict[CacheKey, _Entry] = OrderedDict()
        # (expires, sequence, key): lets sweep() find expired entries without a full scan.
        self._expiries: list[tuple[float, int, CacheKey]] = []
        self._sequence = 0
        self.stats: dict[tuple[str, str], CacheStats] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey) -> Any:
        """The cached value, or :data:`MISS`; counts a hit or a miss for (endpoint, hook)."""
        stats = self.stats.get(key[:2])
        if stats is None:
            stats = self.stats[key[:2]] = CacheStats()
        entry = self._entries.get(key)
        if entry is not None:
            if self._clock() < entry.expires:
                self._entries.move_to_end(key)
                stats.hits += 1
                return entry.value
            del self._entries[key]
        stats.misses += 1
        return MISS

    def put(self, key: CacheKey, value: Any, seconds: float) -> None:
        """Cache ``value`` for ``seconds``, evicting the least recently used entry if full."""
        if self.max_entries == 0 or seconds <= 0:
            return
        expires = self._clock() + seconds
        self._entries[key] = _Entry(value, expires)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        self._sequence += 1
        heapq.heappush(self._expiries, (expires, self._sequence, key))
        # Replaced and evicted entries leave stale heap items; rebuild before they pile up.
        if len(self._expiries) > 2 * len(self._entries) + 1024:
            self._expiries = [(e.expires, 0, k) for k, e in self._entries.items()]
            heapq.heapify(self._expiries)

    def sweep(self) -> int:
        """Delete every expired entry; returns how many were deleted."""
        now = self._clock()
        removed = 0
        heap = self._expiries
        while heap and heap[0][0] <= now:
            key = heapq.heappop(heap)[2]
            entry = self._entries.get(key)
            if entry is not None and entry.expires <= now:
                del self._entries[key]
                removed += 1
        return removed

    async def sweep_forever(self, interval: float) -> None:
        """Run :meth:`sweep` every ``interval`` seconds (a task of the plugin's lifespan)."""
        while True:
            await trio.sleep(interval)
            self.sweep()

    def clear(self) -> None:
        """Drop every entry (counters are kept)."""
        self._entries.clear()
        self._expiries.clear()

    def drop(self, endpoint: str, hook: str) -> None:
        """Forget the entries and counters of one (endpoint, hook) (it was deregistered)."""
        for key in [k for k in self._entries if k[0] == endpoint and k[1] == hook]:
            del self._entries[key]
        self.stats.pop((endpoint, hook), None)

    def entries_by(self) -> dict[tuple[str, str], int]:
        """Number of entries per (endpoint, hook)."""
        counts: dict[tuple[str, str], int] = {}
        for key in self._entries:
            counts[key[:2]] = counts.get(key[:2], 0) + 1
        return counts

    def show(self, *, reset: bool = False) -> list[dict[str, Any]]:
        """Rows ``{endpoint, hook, hits, misses, entries}``; ``reset`` zeroes hits and misses."""
        entries = self.entries_by()
        pairs = sorted(set(self.stats) | set(entries))
        rows = []
        for endpoint, hook in pairs:
            stats = self.stats.get((endpoint, hook), CacheStats())
            rows.append(
                {
                    "endpoint": endpoint,
                    "hook": hook,
                    "hits": stats.hits,
                    "misses": stats.misses,
                    "entries": entries.get((endpoint, hook), 0),
                }
            )
        if reset:
            self.stats.clear()
        return rows
