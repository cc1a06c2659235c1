"""Micro-benchmark: the CPU cost of one ``auth_on_publish`` call through the dispatcher.

Runs in-process, without sockets: the real plugin manager and :class:`Dispatcher`, the real
diversity plugin with a trivial Lua hook (``return true``), called the way the broker's
per-message path calls it (``dispatcher.auth_now(hook, args)`` with the args dict the broker
builds), and the way the broker calls it now: ``dispatcher.auth_caller(hook)`` with the
arguments passed positionally (compiled for a one-hookimpl chain: no args dict). For reference
the same loops run with the trivial Python hook of the benchmark's ``plugin-host+pyhook``
variant.

    .venv/bin/python contrib_plugins/diversity/bench/call_bench.py [--calls N] [--profile]

``--profile`` prints a cProfile of the Lua loop (per-function time; tottime shows where).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from plugin_host import hookimpl
from plugin_host.config import load_config
from plugin_host.plugins.manager import PluginManager
from plugin_host_diversity.plugin import DiversityPlugin

TRIVIAL = """\
hooks = {
    auth_on_publish = function(pub) return true end,
    auth_on_publish_m5 = function(pub) return true end,
}
"""


class PyHook:
    @hookimpl
    def auth_on_publish(self) -> bool:
        return True


class _Host:
    log = None
    config = None


def _args() -> dict[str, Any]:
    return {
        "username": None,
        "mountpoint": "",
        "client_id": "bench-pub-3",
        "qos": 0,
        "topic": "bench/fanin/3",
        "payload": b"x" * 64,
        "retain": False,
    }


def _loop(auth_now: Any, hook: str, calls: int) -> float:
    args = _args()
    began = time.perf_counter()
    for _ in range(calls):
        result = auth_now(hook, args)
    elapsed = time.perf_counter() - began
    assert result.allowed, result
    return elapsed / calls * 1e6


def _positional_loop(caller: Any, calls: int) -> float:
    values = tuple(_args().values())
    began = time.perf_counter()
    for _ in range(calls):
        result = caller(*values)
    elapsed = time.perf_counter() - began
    assert result.allowed, result
    return elapsed / calls * 1e6


async def _measure(
    conf_text: str, plugins: dict[str, Any], calls: int, profile: bool
) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        lua_dir = Path(tmp) / "lua"
        lua_dir.mkdir()
        (lua_dir / "bench.lua").write_text(TRIVIAL)
        conf = Path(tmp) / "bench.conf"
        conf.write_text(conf_text.replace("${lua}", str(lua_dir)))
        config = load_config(conf)
        manager = PluginManager.discover(config, entry_points=[], extra_plugins=plugins)
        async with manager.running(_Host()) as dispatcher:
            _loop(dispatcher.auth_now, "auth_on_publish", 20_000)  # warm up
            best = min(_loop(dispatcher.auth_now, "auth_on_publish", calls) for _ in range(5))
            caller = dispatcher.auth_caller("auth_on_publish")
            _positional_loop(caller, 20_000)
            best_positional = min(_positional_loop(caller, calls) for _ in range(5))
            if profile:
                profiler = cProfile.Profile()
                profiler.runcall(_positional_loop, caller, calls)
                pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
            return best, best_positional


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--profile", action="store_true")
    options = parser.parse_args()
    base = "allow_anonymous = on\n"
    lua = trio.run(
        _measure,
        base + "diversity.script_dir = ${lua}\n",
        {"diversity": DiversityPlugin()},
        options.calls,
        options.profile,
    )
    py = trio.run(_measure, base, {"pyhook": PyHook()}, options.calls, False)
    print(
        "auth_on_publish, us/call: "
        f"auth_now(hook, args) Lua {lua[0]:.2f}, Python {py[0]:.2f}; "
        f"auth_caller(hook)(*values) Lua {lua[1]:.2f}, Python {py[1]:.2f}"
    )


if __name__ == "__main__":
    main()
