"""The diversity plugin's ``/metrics`` families (its ``plugin_host_metrics`` hook).

Read at scrape time from each loaded script's plain per-hook counters
(:class:`~plugin_host_diversity.scripts.CallStats`)::

    diversity_scripts                                   loaded scripts
    diversity_hook_calls_total{script,hook}             calls
    diversity_hook_errors_total{script,hook}            Lua errors and invalid results
    diversity_hook_duration_seconds{script,hook}        summary: _count calls, _sum seconds
    diversity_auth_cache_clients                        clients in the auth cache
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

if TYPE_CHECKING:
    from plugin_host_diversity.plugin import DiversityPlugin

__all__ = ["families"]


def families(plugin: DiversityPlugin) -> list[Any]:
    """The families of one running plugin (empty while it is not running)."""
    scripts = plugin.scripts
    labels = ["script", "hook"]
    calls = CounterMetricFamily("diversity_hook_calls", "Lua hook calls.", labels=labels)
    errors = CounterMetricFamily(
        "diversity_hook_errors",
        "Lua hook calls that failed (Lua error, call budget, memory, invalid result).",
        labels=labels,
    )
    duration = SummaryMetricFamily(
        "diversity_hook_duration_seconds",
        "Time of Lua hook calls, I/O waits included (sum / count = average).",
        labels=labels,
    )
    for script in scripts:
        for hook, stats in sorted(script.stats.items()):
            calls.add_metric([script.name, hook], stats.calls)
            errors.add_metric([script.name, hook], stats.errors)
            duration.add_metric([script.name, hook], stats.calls, stats.seconds)
    out: list[Any] = [
        GaugeMetricFamily("diversity_scripts", "Loaded Lua scripts.", value=len(scripts)),
        calls,
        errors,
        duration,
    ]
    cache = plugin.auth_cache
    if cache is not None:
        out.append(
            GaugeMetricFamily(
                "diversity_auth_cache_clients",
                "Clients with an entry in the auth cache.",
                value=len(cache),
            )
        )
    return out
