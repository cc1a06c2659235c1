"""Lifespans: chain order in, reverse order out, failures contained and named."""

from __future__ import annotations

from contextlib import asynccontextmanager

import pytest
import trio
from structlog.testing import capture_logs

from plugin_host import hookimpl
from plugin_host.plugins.discovery import PluginLoadError
from plugin_host.settings import ConfigError


class Life:
    def __init__(self, name: str, events: list[str], *, fail_enter=False, fail_exit=False):
        self.name = name
        self.events = events
        self.fail_enter = fail_enter
        self.fail_exit = fail_exit
        self.host = None
        self.config = None

    @hookimpl
    def plugin_host_lifespan(self, host, config):
        self.host = host
        self.config = config

        @asynccontextmanager
        async def lifespan():
            await trio.lowlevel.checkpoint()
            if self.fail_enter:
                raise OSError("port in use")
            self.events.append(f"enter {self.name}")
            try:
                yield
            finally:
                self.events.append(f"exit {self.name}")
                if self.fail_exit:
                    raise RuntimeError("close failed")

        return lifespan()


async def test_entered_in_chain_order_exited_in_reverse(make_manager, host):
    events: list[str] = []
    plugins = {n: Life(n, events) for n in ("a", "b", "c")}
    manager = make_manager(plugins, priorities={"c": 1}, sections={"b": {"key": "value"}})
    async with manager.running(host):
        events.append("serving")
    assert events == ["enter c", "enter a", "enter b", "serving", "exit b", "exit a", "exit c"]
    assert plugins["b"].config.plugin == "b" and plugins["b"].config["key"] == "value"
    assert plugins["a"].config.values == {}


async def test_host_view_per_plugin(make_manager, host):
    life = Life("a", [])
    with capture_logs() as logs:
        async with make_manager({"a": life}).running(host):
            life.host.log.info("hello")
            await life.host.publish("t", b"p", 1, True)
            assert life.host.config is host.config
            assert life.host.sessions() == [] and life.host.session("x") is None
            assert await life.host.disconnect("x") is False
    hello = next(e for e in logs if e["event"] == "hello")
    assert hello["plugin"] == "a"
    assert host.published == [("t", b"p", 1, True)]


async def test_failing_lifespan_stops_start_up_and_unwinds(make_manager, host):
    events: list[str] = []
    plugins = {
        "a": Life("a", events),
        "b": Life("b", events, fail_enter=True),
        "c": Life("c", events),
    }
    with pytest.raises(
        PluginLoadError,
        match=r"plugin 'b' \(in-process plugin\) failed to start: OSError: port in use",
    ):
        async with make_manager(plugins).running(host):
            events.append("serving")  # never reached
    assert events == ["enter a", "exit a"]


async def test_exit_errors_are_logged_and_do_not_stop_other_exits(make_manager, host):
    events: list[str] = []
    plugins = {"a": Life("a", events), "b": Life("b", events, fail_exit=True)}
    with capture_logs() as logs:
        async with make_manager(plugins).running(host):
            pass
    assert events == ["enter a", "enter b", "exit b", "exit a"]
    failed = next(e for e in logs if e["event"] == "plugin_stop_failed")
    assert failed["plugin"] == "b" and "close failed" in failed["error"]


async def test_the_body_exception_reaches_the_caller_as_is(make_manager, host):
    events: list[str] = []
    with pytest.raises(KeyError, match="boom"):
        async with make_manager({"a": Life("a", events)}).running(host):
            raise KeyError("boom")
    assert events == ["enter a", "exit a"]


async def test_lifespan_may_return_none_and_bad_values_are_errors(make_manager, host):
    class Nothing:
        @hookimpl
        def plugin_host_lifespan(self):
            return None

    class Wrong:
        @hookimpl
        def plugin_host_lifespan(self):
            return 42

    async with make_manager({"n": Nothing()}).running(host) as dispatcher:
        assert dispatcher.chain("auth_on_publish") == ()
    with pytest.raises(PluginLoadError, match="must return an async context manager or None"):
        async with make_manager({"w": Wrong()}).running(host):
            pass


async def test_cancellation_of_the_caller_still_exits_lifespans(make_manager, host):
    events: list[str] = []
    with trio.move_on_after(0.01):
        async with make_manager({"a": Life("a", events)}).running(host):
            await trio.sleep_forever()
    assert events == ["enter a", "exit a"]


async def test_running_only_once(make_manager, host):
    manager = make_manager({})
    async with manager.running(host):
        pass
    with pytest.raises(RuntimeError):
        async with manager.running(host):
            pass


async def test_config_errors_of_a_lifespan_pass_unchanged(make_manager, host):
    class Strict:
        @hookimpl
        def plugin_host_lifespan(self, config):
            @asynccontextmanager
            async def lifespan():
                raise config.error("endpoint", "bad URL")
                yield

            return lifespan()

    manager = make_manager({"strict": Strict()}, sections={"strict": {"endpoint": "x"}})
    with pytest.raises(ConfigError) as info:
        async with manager.running(host):
            pass
    assert type(info.value) is ConfigError
    assert str(info.value) == "strict.endpoint: bad URL"
