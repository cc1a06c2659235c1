"""``Dispatcher.auth_caller``: ``auth_now`` with positional arguments, compiled for the
common chain of one plain hookimpl (the broker's per-message entry point).

Whatever the chain answers, the positional caller must decide exactly what ``auth_now`` with
the args dict decides: same outcome, same ``on_error``, same logs and counters.
"""

from __future__ import annotations

import pytest
import trio
from structlog.testing import capture_logs

from plugin_host import Deny, hookimpl
from plugin_host.hooks.results import ALLOW, EXHAUSTED, UNCHANGED, Outcome
from plugin_host.hooks.specs import HOOK_ARGS

from .test_sync_path import PUBLISH, Answer, AsyncAnswer, Later, Raises

VALUES = tuple(PUBLISH[name] for name in HOOK_ARGS["auth_on_publish"])


def _compiled(caller) -> bool:
    return caller.__code__.co_filename.startswith("<auth caller of ")


def _summary(outcome: Outcome) -> tuple:
    return (
        outcome.allowed,
        outcome.plugin,
        outcome.reason,
        outcome.reason_code,
        dict(outcome.modifiers or {}),
        outcome.exhausted,
        outcome.unchanged,
    )


async def _answer(result):
    return result if isinstance(result, Outcome) else await result


ANSWERS = {
    "true": lambda: Answer(True),
    "false": lambda: Answer(False),
    "next": lambda: Answer(None),
    "deny": lambda: Answer(Deny("nope", 0x87)),
    "modifiers": lambda: Answer({"qos": 0, "topic": "x/y"}),
    "invalid": lambda: Answer(42),
    "raises": Raises,
    "later-true": lambda: Later(True),
    "later-next": lambda: Later(None),
    "later-modifiers": lambda: Later({"retain": True}),
    "async": lambda: AsyncAnswer({"qos": 0}),
}


@pytest.mark.parametrize("on_error", ["deny", "next"])
@pytest.mark.parametrize("kind", sorted(ANSWERS))
async def test_one_member_chain_decides_like_auth_now(make_manager, host, kind, on_error):
    with capture_logs() as logs:
        async with make_manager({"p": ANSWERS[kind]()}, on_error={"p": on_error}).running(
            host
        ) as dispatcher:
            caller = dispatcher.auth_caller("auth_on_publish")
            assert _compiled(caller) is (kind != "async")
            positional = await _answer(caller(*VALUES))
            by_dict = await _answer(dispatcher.auth_now("auth_on_publish", dict(PUBLISH)))
            stats = dispatcher.stats[("p", "auth_on_publish")]
    assert _summary(positional) == _summary(by_dict)
    assert stats.calls == 2
    assert stats.errors in (0, 2)  # both calls failed, or neither
    failures = [e["event"] for e in logs if e["event"].startswith("hook_")]
    assert len(failures) % 2 == 0  # one line per failed call, from either entry point


async def test_true_is_the_shared_allow(make_manager, host):
    yes = Answer(True)
    async with make_manager({"yes": yes}).running(host) as dispatcher:
        caller = dispatcher.auth_caller("auth_on_publish")
        assert caller(*VALUES) is ALLOW
        assert caller is dispatcher.auth_caller("auth_on_publish")  # compiled once
    assert yes.seen == ["a/b"]  # the hookimpl got its own argument, by name


async def test_nobody_or_next_is_exhausted_or_unchanged(make_manager, host):
    async with make_manager({"n": Answer(None)}).running(host) as dispatcher:
        assert dispatcher.auth_caller("auth_on_publish")(*VALUES) is EXHAUSTED
        assert dispatcher.auth_caller("auth_on_subscribe")("u", "", "c", []) is EXHAUSTED
        deliver = dispatcher.auth_caller("on_deliver")
        assert deliver(*VALUES) is UNCHANGED  # nobody answers on_deliver: unchanged

    class Pass:
        @hookimpl
        def on_deliver(self, topic):
            return None

    async with make_manager({"pass": Pass()}).running(host) as dispatcher:
        deliver = dispatcher.auth_caller("on_deliver")
        assert _compiled(deliver)
        assert deliver(*VALUES) is UNCHANGED


async def test_other_chains_take_the_general_path(make_manager, host):
    manager = make_manager({"a": Answer(None), "b": Answer(True)}, priorities={"a": 1, "b": 2})
    async with manager.running(host) as dispatcher:
        caller = dispatcher.auth_caller("auth_on_publish")
        assert not _compiled(caller)
        assert caller(*VALUES) is ALLOW
    with capture_logs() as logs:
        async with make_manager({"yes": Answer(True)}, trace=True).running(host) as dispatcher:
            caller = dispatcher.auth_caller("auth_on_publish")
            assert not _compiled(caller)
            assert await caller(*VALUES) is ALLOW
    assert [e["event"] for e in logs].count("hook_outcome") == 1


async def test_subscribe_topics_are_validated_against_the_request(make_manager, host):
    class Rewrite:
        @hookimpl
        def auth_on_subscribe(self):
            return [("a/#", 0), ("b", 1)]

    async with make_manager({"r": Rewrite()}, on_error={"r": "next"}).running(host) as dispatcher:
        caller = dispatcher.auth_caller("auth_on_subscribe")
        assert _compiled(caller)
        ok = caller("u", "", "c", [("a/#", 1), ("b", 1)])
        assert ok.allowed and ok.topics == [("a/#", 0), ("b", 1)]
        # one topic more than requested: invalid, and on_error = next exhausts the chain
        assert caller("u", "", "c", [("a/#", 1)]) is EXHAUSTED


async def test_a_rebuilt_table_compiles_a_new_caller(make_manager, host):
    class Toggle:
        answer = True

        @hookimpl
        def plugin_host_active_hooks(self):
            return {"auth_on_publish"} if self.answer is not None else set()

        @hookimpl
        def auth_on_publish(self):
            return self.answer

    toggle = Toggle()
    async with make_manager({"t": toggle}).running(host) as dispatcher:
        first = dispatcher.auth_caller("auth_on_publish")
        assert first(*VALUES) is ALLOW
        toggle.answer = None
        dispatcher.hooks_changed()
        second = dispatcher.auth_caller("auth_on_publish")
        assert second is not first
        assert second(*VALUES) is EXHAUSTED  # nobody answers any more


async def test_cancelling_an_answer_later_propagates(make_manager, host, autojump_clock):
    later = Later(True, delay=100.0)
    async with make_manager({"later": later}, hook_timeout=60.0).running(host) as dispatcher:
        with trio.move_on_after(1.0) as scope:
            await dispatcher.auth_caller("auth_on_publish")(*VALUES)
        assert scope.cancelled_caught
        assert later.cancelled


async def test_a_listener_chain_has_its_own_caller(make_manager, host):
    no, yes, other = Answer(False), Answer(True), Answer(None)
    async with make_manager({"a": no, "b": yes, "c": other}).running(host) as dispatcher:
        assert not dispatcher.auth_caller("auth_on_publish")(*VALUES).allowed  # a first
        only_b = dispatcher.auth_caller("auth_on_publish", ("b",))
        assert _compiled(only_b)  # one plain hookimpl: compiled
        assert only_b(*VALUES) is ALLOW
        c_then_b = dispatcher.auth_caller("auth_on_publish", ("c", "b"))
        assert not _compiled(c_then_b)
        assert c_then_b(*VALUES) is ALLOW
        assert (no.seen, yes.seen, other.seen) == (["a/b"], ["a/b", "a/b"], ["a/b"])
        # a chain naming nobody who answers the hook is exhausted
        assert dispatcher.auth_caller("auth_on_publish", ("nobody",))(*VALUES) is EXHAUSTED


class OwnCaller:
    """A plugin that compiles its own positional caller (``plugin_host_auth_caller``)."""

    def __init__(self, answer, *, make=None):
        self.answer = answer
        self.make = make
        self.links = []

    @hookimpl
    def auth_on_publish(self, topic):
        return self.answer

    def plugin_host_auth_caller(self, hook, link):
        if self.make is not None:
            return self.make()
        self.links.append((hook, link))
        answer = self.answer

        def caller(*values):
            if answer is True:
                link.stats.calls += 1
                return link.allow
            value = answer() if callable(answer) else answer
            return link.answered(value, values, None)

        return caller


OWN_ANSWERS = {
    "true": True,
    "deny": Deny("nope", 0x87),
    "modifiers": {"qos": 0},
    "invalid": 42,
    "next": None,
    "later": lambda: Later({"retain": True})._wait(),
}


@pytest.mark.parametrize("kind", sorted(OWN_ANSWERS))
async def test_a_plugins_own_caller_is_used_and_settled_by_the_link(make_manager, host, kind):
    own = OwnCaller(OWN_ANSWERS[kind])
    with capture_logs():
        async with make_manager({"own": own}, on_error={"own": "next"}).running(host) as dispatcher:
            caller = dispatcher.auth_caller("auth_on_publish")
            [(hook, link)] = own.links
            assert hook == "auth_on_publish" and link.allow is ALLOW
            assert link.stats is dispatcher.stats[("own", "auth_on_publish")]
            outcome = await _answer(caller(*VALUES))
            calls = dispatcher.stats[("own", "auth_on_publish")].calls
    expected = {
        "true": (True, None, None, {}),
        "deny": (False, "own", "nope", {}),
        "modifiers": (True, "own", None, {"qos": 0}),
        "invalid": (False, None, "plugin_chain_exhausted", {}),  # invalid; on_error next
        "next": (False, None, "plugin_chain_exhausted", {}),
        "later": (True, "own", None, {"retain": True}),
    }[kind]
    assert (outcome.allowed, outcome.plugin, outcome.reason, dict(outcome.modifiers or {})) == (
        expected
    )
    assert calls == 1


async def test_a_failing_or_invalid_own_caller_falls_back(make_manager, host):
    def boom():
        raise RuntimeError("cannot")

    for make, event in (
        (boom, "plugin_auth_caller_failed"),
        (lambda: 42, "plugin_auth_caller_invalid"),
    ):
        with capture_logs() as logs:
            async with make_manager({"own": OwnCaller(True, make=make)}).running(
                host
            ) as dispatcher:
                caller = dispatcher.auth_caller("auth_on_publish")
                assert _compiled(caller)  # the dispatcher's own
                assert caller(*VALUES) is ALLOW
        assert [e["plugin"] for e in logs if e["event"] == event] == ["own"]


async def test_the_own_caller_serves_a_one_plugin_listener_chain_only(make_manager, host):
    own = OwnCaller(True)
    manager = make_manager({"own": own, "z": Answer(True)}, priorities={"own": 1, "z": 2})
    async with manager.running(host) as dispatcher:
        assert not _compiled(dispatcher.auth_caller("auth_on_publish"))  # two plugins
        assert own.links == []
        assert dispatcher.auth_caller("auth_on_publish", ("own",))(*VALUES) is ALLOW
        assert len(own.links) == 1
