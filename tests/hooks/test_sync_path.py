"""``Dispatcher.auth_now``: the synchronous fast path of a chain, and what stays asynchronous.

Plain hookimpls are answered without a coroutine; at the first ``async def`` hookimpl (or a
plain one handing back an awaitable) the rest of the chain is an awaitable with exactly the
semantics of ``Dispatcher.auth``: timeouts, ``on_error``, cancellation, counters.
"""

from __future__ import annotations

import inspect
import time

import pytest
import trio
from structlog.testing import capture_logs

from plugin_host import Deny, hookimpl
from plugin_host.hooks.results import ALLOW, EXHAUSTED, UNCHANGED, Outcome
from plugin_host.hooks.runner import SAMPLE_EVERY

PUBLISH = {
    "username": "u",
    "mountpoint": "",
    "client_id": "c1",
    "qos": 1,
    "topic": "a/b",
    "payload": b"hello",
    "retain": False,
}


class Answer:
    """A plain auth_on_publish hookimpl with a fixed answer; records the topics it saw."""

    def __init__(self, answer):
        self.answer = answer
        self.seen: list[str] = []

    @hookimpl
    def auth_on_publish(self, topic):
        self.seen.append(topic)
        return self.answer


class AsyncAnswer:
    def __init__(self, answer):
        self.answer = answer
        self.calls = 0

    @hookimpl
    async def auth_on_publish(self):
        self.calls += 1
        await trio.lowlevel.checkpoint()
        return self.answer


class Later:
    """A plain hookimpl that answers later: it hands back a coroutine (like diversity's
    ``Later`` for a Lua script waiting for I/O)."""

    def __init__(self, answer, delay=0.0):
        self.answer = answer
        self.delay = delay
        self.cancelled = False

    async def _wait(self):
        try:
            await trio.sleep(self.delay)
        except trio.Cancelled:
            self.cancelled = True
            raise
        return self.answer

    @hookimpl
    def auth_on_publish(self):
        return self._wait()


async def test_plain_chain_answers_without_a_coroutine(make_manager, host):
    nexter, yes = Answer(None), Answer(True)
    async with make_manager({"a": nexter, "b": yes}).running(host) as dispatcher:
        result = dispatcher.auth_now("auth_on_publish", dict(PUBLISH))
        assert result is ALLOW
        assert (nexter.seen, yes.seen) == (["a/b"], ["a/b"])
        deny = Answer(Deny("nope", 0x87))
        async with make_manager({"d": deny}).running(host) as other:
            outcome = other.auth_now("auth_on_publish", dict(PUBLISH))
            assert isinstance(outcome, Outcome)
            assert (outcome.allowed, outcome.reason, outcome.plugin) == (False, "nope", "d")
        assert dispatcher.auth_now("on_deliver", dict(PUBLISH)) is UNCHANGED  # nobody answers
        assert dispatcher.auth_now("auth_on_subscribe", {"topics": []}) is EXHAUSTED


async def test_async_impl_turns_the_rest_of_the_chain_into_an_awaitable(make_manager, host):
    first, second, third = Answer(None), AsyncAnswer(None), Answer({"qos": 0})
    manager = make_manager(
        {"a": first, "b": second, "c": third}, priorities={"a": 1, "b": 2, "c": 3}
    )
    async with manager.running(host) as dispatcher:
        result = dispatcher.auth_now("auth_on_publish", dict(PUBLISH))
        # the plain first impl already ran; the async one has not started yet
        assert inspect.isawaitable(result) and not isinstance(result, Outcome)
        assert (len(first.seen), second.calls, len(third.seen)) == (1, 0, 0)
        outcome = await result
    assert (outcome.allowed, outcome.modifiers, outcome.plugin) == (True, {"qos": 0}, "c")
    assert (second.calls, len(third.seen)) == (1, 1)


async def test_plain_impl_handing_back_an_awaitable_is_awaited_under_the_timeout(
    make_manager, host, autojump_clock
):
    later = Later(True, delay=10.0)
    manager = make_manager({"later": later, "yes": Answer(True)}, hook_timeout=2.0)
    with capture_logs() as logs:
        async with manager.running(host) as dispatcher:
            result = dispatcher.auth_now("auth_on_publish", dict(PUBLISH))
            assert not isinstance(result, Outcome)
            started = trio.current_time()
            outcome = await result
            assert trio.current_time() - started == pytest.approx(2.0)
    assert (outcome.allowed, outcome.plugin, outcome.reason) == (False, "later", "plugin_timeout")
    assert later.cancelled
    assert [e["plugin"] for e in logs if e["event"] == "hook_timeout"] == ["later"]
    stats = dispatcher.stats[("later", "auth_on_publish")]
    assert (stats.calls, stats.errors) == (1, 1)


async def test_answer_later_then_next_moves_on(make_manager, host):
    later, yes = Later(None), Answer(True)
    manager = make_manager({"later": later, "yes": yes}, priorities={"later": 1, "yes": 2})
    async with manager.running(host) as dispatcher:
        assert await dispatcher.auth_now("auth_on_publish", dict(PUBLISH)) is ALLOW
        assert await dispatcher.auth("auth_on_publish", dict(PUBLISH)) is ALLOW
    assert yes.seen == ["a/b", "a/b"]


class Raises:
    @hookimpl
    def auth_on_publish(self, payload):
        raise KeyError("inside the plugin")  # not taken for a missing argument


async def test_plain_impl_raising_is_contained_per_on_error(make_manager, host):
    with capture_logs() as logs:
        async with make_manager({"boom": Raises(), "yes": Answer(True)}).running(
            host
        ) as dispatcher:
            outcome = dispatcher.auth_now("auth_on_publish", dict(PUBLISH))
    assert isinstance(outcome, Outcome)
    assert (outcome.allowed, outcome.plugin, outcome.reason) == (False, "boom", "plugin_error")
    [line] = [e for e in logs if e["event"] == "hook_failed"]
    assert line["plugin"] == "boom" and "inside the plugin" in line["error"]
    assert dispatcher.stats[("boom", "auth_on_publish")].errors == 1
    manager = make_manager({"boom": Raises(), "yes": Answer(True)}, on_error={"boom": "next"})
    async with manager.running(host) as dispatcher:
        assert dispatcher.auth_now("auth_on_publish", dict(PUBLISH)) is ALLOW


async def test_invalid_result_on_the_sync_path(make_manager, host):
    manager = make_manager({"bad": Answer(42), "yes": Answer(True)}, on_error={"bad": "next"})
    with capture_logs() as logs:
        async with manager.running(host) as dispatcher:
            assert dispatcher.auth_now("auth_on_publish", dict(PUBLISH)) is ALLOW
    assert [e["plugin"] for e in logs if e["event"] == "hook_invalid_result"] == ["bad"]


async def test_missing_arguments_are_none_on_the_sync_path(make_manager, host):
    seen = {}

    class Reg:
        @hookimpl
        def auth_on_register(self, username, client_cert):
            seen.update(username=username, cert=client_cert)
            return True

    async with make_manager({"reg": Reg()}).running(host) as dispatcher:
        assert dispatcher.auth_now("auth_on_register", {"username": "bob"}) is ALLOW
    assert seen == {"username": "bob", "cert": None}


async def test_counters_of_sync_calls(make_manager, host):
    yes = Answer(True)
    async with make_manager({"yes": yes}).running(host) as dispatcher:
        for _ in range(5):
            dispatcher.auth_now("auth_on_publish", dict(PUBLISH))
        await dispatcher.auth("auth_on_publish", dict(PUBLISH))
    stats = dispatcher.stats[("yes", "auth_on_publish")]
    assert (stats.calls, stats.errors) == (6, 0)
    assert stats.seconds >= 0


@pytest.mark.parametrize("entry", ["auth_now", "auth_caller"])
async def test_sync_call_time_is_estimated_from_a_sample(make_manager, host, entry):
    # One plain call in SAMPLE_EVERY is timed and counts SAMPLE_EVERY times: over whole
    # multiples of it the estimate of a hook that always takes ~2 ms is close to the truth.
    class Busy:
        @hookimpl
        def auth_on_publish(self, topic):
            until = time.perf_counter() + 0.002
            while time.perf_counter() < until:
                pass
            return True

    n = 4 * SAMPLE_EVERY
    async with make_manager({"busy": Busy()}).running(host) as dispatcher:
        if entry == "auth_now":

            def call():
                return dispatcher.auth_now("auth_on_publish", dict(PUBLISH))
        else:
            positional = dispatcher.auth_caller("auth_on_publish")

            def call():
                return positional(*PUBLISH.values())  # PUBLISH is in hookspec order

        began = time.perf_counter()
        for _ in range(n):
            assert call() is ALLOW
        wall = time.perf_counter() - began
    stats = dispatcher.stats[("busy", "auth_on_publish")]
    assert stats.calls == n
    assert 0.5 * wall < stats.seconds < 2 * wall


async def test_trace_keeps_the_traced_runner(make_manager, host):
    with capture_logs() as logs:
        async with make_manager({"yes": Answer(True)}, trace=True).running(host) as dispatcher:
            result = dispatcher.auth_now("auth_on_publish", dict(PUBLISH))
            assert not isinstance(result, Outcome)
            assert await result is ALLOW
    events = [e["event"] for e in logs]
    assert events.count("hook_call") == 1 and events.count("hook_outcome") == 1


async def test_arguments_is_the_union_the_chain_reads(make_manager, host):
    class Two:
        @hookimpl
        def auth_on_publish(self, qos, client_id):
            return None

    class NoArgs:
        @hookimpl
        def auth_on_publish(self):
            return True

        @hookimpl
        def auth_on_subscribe(self):
            return True

    async with make_manager({"a": Answer(None), "b": Two()}).running(host) as dispatcher:
        assert dispatcher.arguments("auth_on_publish") == {"topic", "qos", "client_id"}
        assert dispatcher.arguments("on_deliver") == frozenset()
    async with make_manager({"n": NoArgs()}).running(host) as dispatcher:
        assert dispatcher.arguments("auth_on_publish") == frozenset()
        # the runner compares a rewritten topic list with the requested one
        assert dispatcher.arguments("auth_on_subscribe") == {"topics"}
    async with make_manager({"n": NoArgs()}, trace=True).running(host) as dispatcher:
        assert dispatcher.arguments("auth_on_publish") >= set(PUBLISH)  # all are logged


async def test_generation_changes_when_the_tables_are_rebuilt(make_manager, host):
    class Toggle:
        active = True

        @hookimpl
        def plugin_host_active_hooks(self):
            return {"auth_on_publish"} if self.active else set()

        @hookimpl
        def auth_on_publish(self):
            return True

    toggle = Toggle()
    async with make_manager({"t": toggle}).running(host) as dispatcher:
        before = dispatcher.generation
        assert dispatcher.implemented("auth_on_publish")
        toggle.active = False
        dispatcher.hooks_changed()
        assert dispatcher.generation != before
        assert not dispatcher.implemented("auth_on_publish")
        assert dispatcher.arguments("auth_on_publish") == frozenset()


async def test_cancelling_during_the_awaitable_part_propagates(make_manager, host, autojump_clock):
    later = Later(True, delay=100.0)
    async with make_manager({"later": later}, hook_timeout=60.0).running(host) as dispatcher:
        with trio.move_on_after(1.0) as scope:
            await dispatcher.auth_now("auth_on_publish", dict(PUBLISH))
        assert scope.cancelled_caught
        assert later.cancelled
        assert dispatcher.errors == 0
