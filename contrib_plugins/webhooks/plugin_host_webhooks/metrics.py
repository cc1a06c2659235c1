"""The webhooks plugin's ``/metrics`` families (its ``plugin_host_metrics`` hook).

VerneMQ's names (spec 3.5), one counter family per hook and counter, for every hook that has
an endpoint or was called::

    webhooks_<hook>_requests_total          HTTP requests sent
    webhooks_<hook>_errors_total            failed calls (transport, bad answers, denials)
    webhooks_<hook>_bytes_sent_total        request body bytes
    webhooks_<hook>_cancelled_total         requests abandoned (the client went away)
    webhooks_<hook>_timeouts_total          requests that ran out of time
    webhooks_<hook>_elapsed_seconds_total   time spent in requests

plus the response cache per endpoint and hook: ``webhooks_cache_hits_total``,
``webhooks_cache_misses_total``, ``webhooks_cache_entries``.
"""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from plugin_host_webhooks.runtime import HookCounters

if TYPE_CHECKING:
    from plugin_host_webhooks.runtime import Webhooks

__all__ = ["families"]

_DOCS = {
    "requests": "HTTP requests sent",
    "errors": "failed calls (transport errors, bad answers, webhook denials)",
    "bytes_sent": "request body bytes sent",
    "cancelled": "requests abandoned because the caller went away",
    "timeouts": "requests that ran out of time",
    "elapsed": "seconds spent in requests",
}
_COUNTERS = [f.name for f in fields(HookCounters)]


def families(webhooks: Webhooks) -> list[Any]:
    """The families of one running :class:`~plugin_host_webhooks.runtime.Webhooks`."""
    out: list[Any] = []
    active = webhooks.active_hooks()
    for hook, counters in sorted(webhooks.counters.items()):
        if hook not in active and not (counters.requests or counters.errors):
            continue
        for name in _COUNTERS:
            metric = "elapsed_seconds" if name == "elapsed" else name
            out.append(
                CounterMetricFamily(
                    f"webhooks_{hook}_{metric}",
                    f"{hook} webhooks: {_DOCS.get(name, name)}.",
                    value=getattr(counters, name),
                )
            )
    labels = ["endpoint", "hook"]
    hits = CounterMetricFamily("webhooks_cache_hits", "Response cache hits.", labels=labels)
    misses = CounterMetricFamily("webhooks_cache_misses", "Response cache misses.", labels=labels)
    entries = GaugeMetricFamily("webhooks_cache_entries", "Cached responses.", labels=labels)
    for row in webhooks.cache_show():
        key = [row["endpoint"], row["hook"]]
        hits.add_metric(key, row["hits"])
        misses.add_metric(key, row["misses"])
        entries.add_metric(key, row["entries"])
    out.extend((hits, misses, entries))
    return out
