"""The chain runner with real plugin objects registered through the real manager."""

from __future__ import annotations

import math

import pytest
import trio
from structlog.testing import capture_logs

from plugin_host import Deny, hookimpl
from plugin_host.hooks.results import ALLOW, EXHAUSTED, UNCHANGED

PUBLISH = {
    "username": "u",
    "mountpoint": "",
    "client_id": "c1",
    "qos": 1,
    "topic": "a/b",
    "payload": b"hello",
    "retain": False,
}


class Recorder:
    """A plugin answering auth_on_publish with a fixed value and recording calls."""

    def __init__(self, answer, calls: list[str], name: str) -> None:
        self.answer = answer
        self.calls = calls
        self.name = name

    @hookimpl
    def auth_on_publish(self, topic):
        self.calls.append(self.name)
        return self.answer


def three(calls, a=None, b=None, c=None):
    return {
        "alpha": Recorder(a, calls, "alpha"),
        "bravo": Recorder(b, calls, "bravo"),
        "charlie": Recorder(c, calls, "charlie"),
    }


async def test_priority_order_then_name(make_manager, host):
    calls: list[str] = []
    # charlie has the lowest priority value, alpha none: charlie, bravo, then alpha (by name).
    manager = make_manager(three(calls), priorities={"charlie": 1, "bravo": 5})
    assert manager.names == ("charlie", "bravo", "alpha")
    async with manager.running(host) as dispatcher:
        assert dispatcher.chain("auth_on_publish") == ("charlie", "bravo", "alpha")
        outcome = await dispatcher.auth("auth_on_publish", dict(PUBLISH))
    assert calls == ["charlie", "bravo", "alpha"]
    assert outcome is EXHAUSTED and not outcome.allowed and outcome.exhausted


async def test_unprioritised_plugins_follow_by_name_not_registration_order(make_manager, host):
    calls: list[str] = []
    plugins = three(calls)
    # Registration order zulu..alpha (pluggy would call the last registered first).
    reversed_plugins = dict(reversed(list(plugins.items())))
    manager = make_manager(reversed_plugins)
    async with manager.running(host) as dispatcher:
        await dispatcher.auth("auth_on_publish", dict(PUBLISH))
    assert calls == ["alpha", "bravo", "charlie"]


@pytest.mark.parametrize(
    ("answers", "expected_calls", "allowed"),
    [
        ((None, True, False), ["alpha", "bravo"], True),
        ((None, None, True), ["alpha", "bravo", "charlie"], True),
        ((False, True, True), ["alpha"], False),
        ((None, Deny("nope"), True), ["alpha", "bravo"], False),
        (({}, False, False), ["alpha"], True),  # an empty dict is a plain ok
    ],
)
async def test_first_answer_other_than_next_wins(
    make_manager, host, answers, expected_calls, allowed
):
    calls: list[str] = []
    manager = make_manager(three(calls, *answers))
    async with manager.running(host) as dispatcher:
        outcome = await dispatcher.auth("auth_on_publish", dict(PUBLISH))
    assert calls == expected_calls
    assert outcome.allowed is allowed


async def test_ok_is_the_shared_allow_and_deny_names_the_plugin(make_manager, host):
    calls: list[str] = []
    async with make_manager(three(calls, None, True)).running(host) as dispatcher:
        assert await dispatcher.auth("auth_on_publish", dict(PUBLISH)) is ALLOW
    calls.clear()
    async with make_manager(three(calls, None, False)).running(host) as dispatcher:
        outcome = await dispatcher.auth("auth_on_publish", dict(PUBLISH))
    assert (outcome.allowed, outcome.plugin, outcome.reason) == (False, "bravo", "not_authorized")


async def test_deny_with_reason_code_and_properties(make_manager, host):
    deny = Deny("quota", 0x97, properties={"p_reason_string": "too much"})
    async with make_manager(three([], deny)).running(host) as dispatcher:
        outcome = await dispatcher.auth("auth_on_publish", dict(PUBLISH))
    assert not outcome.allowed
    assert (outcome.reason, outcome.reason_code, outcome.plugin) == ("quota", 0x97, "alpha")
    assert outcome.properties == {"p_reason_string": "too much"}


async def test_deny_invalid_credentials_flag(make_manager, host):
    class Auth:
        @hookimpl
        def auth_on_register(self, username):
            return Deny("bad password", invalid_credentials=True)

    async with make_manager({"auth": Auth()}).running(host) as dispatcher:
        outcome = await dispatcher.auth("auth_on_register", {"username": "x"})
    assert not outcome.allowed and outcome.invalid_credentials


async def test_modifiers_are_validated_and_normalised(make_manager, host):
    answer = {"topic": "x/y", "qos": 2.0, "payload": bytearray(b"new"), "retain": True}
    async with make_manager(three([], answer)).running(host) as dispatcher:
        outcome = await dispatcher.auth("auth_on_publish", dict(PUBLISH))
    assert outcome.allowed and outcome.plugin == "alpha"
    assert outcome.modifiers == {"topic": "x/y", "qos": 2, "payload": b"new", "retain": True}
    assert type(outcome.modifiers["payload"]) is bytes


@pytest.mark.parametrize(
    "answer",
    [
        {"topic": "a/+"},  # wildcard in a topic name
        {"qos": 3},
        {"retain": "yes"},
        {"colour": "blue"},  # unknown key
        {"payload": "text"},  # str, not bytes
    ],
)
async def test_invalid_modifiers_deny_and_log_the_plugin(make_manager, host, answer):
    calls: list[str] = []
    with capture_logs() as logs:
        async with make_manager(three(calls, None, answer, True)).running(host) as dispatcher:
            outcome = await dispatcher.auth("auth_on_publish", dict(PUBLISH))
    assert calls == ["alpha", "bravo"]  # the chain stops at the faulty answer
    assert (outcome.allowed, outcome.plugin, outcome.reason) == (False, "bravo", "invalid_result")
    errors = [e for e in logs if e["event"] == "hook_invalid_result"]
    assert errors and errors[0]["plugin"] == "bravo" and errors[0]["hook"] == "auth_on_publish"


@pytest.mark.parametrize("answer", ["ok", 1, 0, math.pi, object(), {"a", "b"}])
async def test_unknown_results_deny(make_manager, host, answer):
    with capture_logs() as logs:
        async with make_manager(three([], answer)).running(host) as dispatcher:
            outcome = await dispatcher.auth("auth_on_publish", dict(PUBLISH))
    assert not outcome.allowed and outcome.plugin == "alpha"
    assert any(e["event"] == "hook_invalid_result" for e in logs)


async def test_list_result_rewrites_subscriptions(make_manager, host):
    class Sub:
        @hookimpl
        def auth_on_subscribe(self, topics):
            return [(topics[0][0], 1), ("other/#", 128)]

    args = {"username": None, "mountpoint": "", "client_id": "c", "topics": [("a", 2), ("b", 0)]}
    async with make_manager({"sub": Sub()}).running(host) as dispatcher:
        outcome = await dispatcher.auth("auth_on_subscribe", args)
    assert outcome.allowed and outcome.topics == [("a", 1), ("other/#", 128)]
    assert outcome.modifiers is None


async def test_list_result_for_a_non_list_hook_denies(make_manager, host):
    async with make_manager(three([], ["a/b"])).running(host) as dispatcher:
        outcome = await dispatcher.auth("auth_on_publish", dict(PUBLISH))
    assert not outcome.allowed and outcome.reason == "invalid_result"


async def test_bytes_is_a_new_payload_for_v3_only(make_manager, host):
    class Payload:
        @hookimpl
        def auth_on_publish(self):
            return b"replaced"

        @hookimpl
        def auth_on_publish_m5(self):
            return b"replaced"

    async with make_manager({"p": Payload()}).running(host) as dispatcher:
        v3 = await dispatcher.auth("auth_on_publish", dict(PUBLISH))
        v5 = await dispatcher.auth("auth_on_publish_m5", {**PUBLISH, "properties": {}})
    assert v3.allowed and v3.modifiers == {"payload": b"replaced"}
    assert not v5.allowed and v5.reason == "invalid_result"


async def test_sync_and_async_impls_with_any_subset_and_order_of_arguments(make_manager, host):
    seen: dict[str, tuple] = {}

    class Sync:
        @hookimpl
        def auth_on_publish(self, retain, topic):  # order differs from the spec
            seen["sync"] = (retain, topic)

    class Async:
        @hookimpl
        async def auth_on_publish(self, payload, client_id, qos):
            await trio.lowlevel.checkpoint()
            seen["async"] = (payload, client_id, qos)

    class Nothing:
        @hookimpl
        def auth_on_publish(self):
            seen["nothing"] = ()
            return True

    manager = make_manager({"a_sync": Sync(), "b_async": Async(), "c_nothing": Nothing()})
    async with manager.running(host) as dispatcher:
        outcome = await dispatcher.auth("auth_on_publish", dict(PUBLISH))
    assert outcome is ALLOW
    assert seen == {"sync": (False, "a/b"), "async": (b"hello", "c1", 1), "nothing": ()}


async def test_arguments_the_broker_did_not_pass_are_none(make_manager, host):
    seen = {}

    class Reg:
        @hookimpl
        def auth_on_register(self, username, listener_type, client_cert):
            seen.update(username=username, listener_type=listener_type, cert=client_cert)
            return True

    async with make_manager({"reg": Reg()}).running(host) as dispatcher:
        await dispatcher.auth("auth_on_register", {"username": "bob", "password": b"x"})
    assert seen == {"username": "bob", "listener_type": None, "cert": None}


class Boom:
    @hookimpl
    async def auth_on_publish(self):
        raise RuntimeError("database down")


class Sleepy:
    def __init__(self) -> None:
        self.cancelled = False

    @hookimpl
    async def auth_on_publish(self):
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            self.cancelled = True
            raise


class Yes:
    @hookimpl
    def auth_on_publish(self):
        return True


async def test_exception_denies_and_is_logged_with_plugin_name(make_manager, host):
    with capture_logs() as logs:
        async with make_manager({"boom": Boom(), "yes": Yes()}).running(host) as dispatcher:
            outcome = await dispatcher.auth("auth_on_publish", dict(PUBLISH))
    assert (outcome.allowed, outcome.plugin, outcome.reason) == (False, "boom", "plugin_error")
    failed = [e for e in logs if e["event"] == "hook_failed"]
    assert failed[0]["plugin"] == "boom" and "database down" in failed[0]["error"]
    assert dispatcher.errors == 1


async def test_exception_with_on_error_next_asks_the_next_plugin(make_manager, host):
    manager = make_manager({"boom": Boom(), "yes": Yes()}, on_error={"boom": "next"})
    async with manager.running(host) as dispatcher:
        outcome = await dispatcher.auth("auth_on_publish", dict(PUBLISH))
    assert outcome is ALLOW


async def test_timeout_denies(make_manager, host, autojump_clock):
    sleepy = Sleepy()
    manager = make_manager({"sleepy": sleepy, "yes": Yes()}, hook_timeout=2.0)
    with capture_logs() as logs:
        async with manager.running(host) as dispatcher:
            started = trio.current_time()
            outcome = await dispatcher.auth("auth_on_publish", dict(PUBLISH))
            elapsed = trio.current_time() - started
    assert (outcome.allowed, outcome.plugin, outcome.reason) == (False, "sleepy", "plugin_timeout")
    assert elapsed == pytest.approx(2.0)
    assert sleepy.cancelled
    timeouts = [e for e in logs if e["event"] == "hook_timeout"]
    assert timeouts[0]["plugin"] == "sleepy" and timeouts[0]["timeout"] == 2.0


async def test_timeout_with_on_error_next(make_manager, host, autojump_clock):
    manager = make_manager(
        {"sleepy": Sleepy(), "yes": Yes()}, hook_timeout=1.0, on_error={"sleepy": "next"}
    )
    async with manager.running(host) as dispatcher:
        assert await dispatcher.auth("auth_on_publish", dict(PUBLISH)) is ALLOW


async def test_cancelling_the_caller_cancels_the_plugin_call(make_manager, host, autojump_clock):
    sleepy = Sleepy()
    manager = make_manager({"sleepy": sleepy}, hook_timeout=60.0)
    async with manager.running(host) as dispatcher:
        with trio.move_on_after(1.0) as scope:
            await dispatcher.auth("auth_on_publish", dict(PUBLISH))
        assert scope.cancelled_caught  # Cancelled propagated, not turned into a deny
        assert sleepy.cancelled
        assert dispatcher.errors == 0


async def test_result_optional_hooks_never_refuse(make_manager, host):
    class Deliver:
        def __init__(self, answer) -> None:
            self.answer = answer

        @hookimpl
        def on_deliver(self):
            if isinstance(self.answer, Exception):
                raise self.answer
            return self.answer

        @hookimpl
        def on_unsubscribe(self):
            return self.answer

    args = {**PUBLISH, "topics": ["a/b"]}
    for answer in (False, Deny("no"), RuntimeError("x"), {"qos": 1}, "junk"):
        async with make_manager({"d": Deliver(answer)}).running(host) as dispatcher:
            for hook in ("on_deliver", "on_unsubscribe"):
                outcome = await dispatcher.auth(hook, args)
                assert outcome.allowed and outcome.unchanged, (hook, answer)
                assert outcome.modifiers is None and outcome.topics is None
                assert outcome.plugin == "d"
    async with make_manager({"d": Deliver(None)}).running(host) as dispatcher:
        assert await dispatcher.auth("on_deliver", args) is UNCHANGED
        changed = Deliver({"payload": b"x"})
    async with make_manager({"d": changed}).running(host) as dispatcher:
        outcome = await dispatcher.auth("on_deliver", args)
    assert outcome.allowed and not outcome.unchanged and outcome.modifiers == {"payload": b"x"}


async def test_nothing_implemented(make_manager, host):
    async with make_manager({"yes": Yes()}).running(host) as dispatcher:
        assert dispatcher.implemented("auth_on_publish")
        assert not dispatcher.implemented("auth_on_register")
        assert not dispatcher.implemented("on_publish")
        assert await dispatcher.auth("auth_on_register", {}) is EXHAUSTED
        assert await dispatcher.auth("on_deliver", {}) is UNCHANGED


async def test_active_hooks_and_hooks_changed(make_manager, host):
    class Toggle:
        def __init__(self) -> None:
            self.active: set[str] | None = set()
            self.host = None

        @hookimpl
        def plugin_host_active_hooks(self):
            return self.active

        @hookimpl
        def plugin_host_lifespan(self, host):
            self.host = host

        @hookimpl
        def auth_on_publish(self):
            return True

        @hookimpl
        def on_publish(self):
            pass

    toggle = Toggle()
    async with make_manager({"toggle": toggle}).running(host) as dispatcher:
        assert not dispatcher.implemented("auth_on_publish")
        assert await dispatcher.auth("auth_on_publish", dict(PUBLISH)) is EXHAUSTED
        toggle.active = {"auth_on_publish"}
        assert not dispatcher.implemented("auth_on_publish")  # not until told
        toggle.host.hooks_changed()
        assert dispatcher.implemented("auth_on_publish")
        assert not dispatcher.implemented("on_publish")
        toggle.active = None  # None = everything it implements
        toggle.host.hooks_changed()
        assert dispatcher.implemented("on_publish")


async def test_trace_logs_calls_with_password_redacted(make_manager, host):
    class Reg:
        @hookimpl
        def auth_on_register(self, username):
            return None

    class Reg2:
        @hookimpl
        async def auth_on_register(self):
            return True

    args = {
        "username": "bob",
        "password": b"s3cret",
        "properties": {"p_authentication_data": b"token", "p_user_property": [("a", "b")]},
        "client_id": "c",
    }
    manager = make_manager({"a": Reg(), "b": Reg2()}, trace=True)
    with capture_logs() as logs:
        async with manager.running(host) as dispatcher:
            await dispatcher.auth("auth_on_register", args)
    text = repr(logs)
    assert "s3cret" not in text and "token" not in text
    call = next(e for e in logs if e["event"] == "hook_call")
    assert call["args"]["password"] == "<redacted>" and call["args"]["username"] == "bob"
    assert call["args"]["properties"]["p_authentication_data"] == "<redacted>"
    results = [(e["plugin"], e["result"]) for e in logs if e["event"] == "hook_result"]
    assert results == [("a", "next"), ("b", "ok")]
    assert all("elapsed_ms" in e for e in logs if e["event"] == "hook_result")
    outcome = next(e for e in logs if e["event"] == "hook_outcome")
    assert outcome["result"] == "ok"


def test_trace_env_switch():
    from plugin_host.hooks.runner import trace_enabled

    assert trace_enabled({"PLUGIN_HOST_TRACE_HOOKS": "1"})
    assert not trace_enabled({"PLUGIN_HOST_TRACE_HOOKS": "0"})
    assert not trace_enabled({})


async def test_listener_chain_restricts_and_orders(make_manager, host):
    calls: list[str] = []
    async with make_manager(three(calls)).running(host) as dispatcher:
        outcome = await dispatcher.auth(
            "auth_on_publish", dict(PUBLISH), plugins=("charlie", "nosuch", "alpha")
        )
        assert outcome is EXHAUSTED
        assert calls == ["charlie", "alpha"]
        calls.clear()
        assert await dispatcher.auth("auth_on_publish", dict(PUBLISH), plugins=()) is EXHAUSTED
        assert calls == []


async def test_invalid_result_with_on_error_next_asks_the_next_plugin(make_manager, host):
    calls: list[str] = []
    manager = make_manager(three(calls, {"qos": 9}, True), on_error={"alpha": "next"})
    with capture_logs() as logs:
        async with manager.running(host) as dispatcher:
            assert await dispatcher.auth("auth_on_publish", dict(PUBLISH)) is ALLOW
    assert calls == ["alpha", "bravo"]
    invalid = next(e for e in logs if e["event"] == "hook_invalid_result")
    assert (invalid["plugin"], invalid["on_error"]) == ("alpha", "next")
