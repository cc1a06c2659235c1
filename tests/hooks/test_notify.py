"""Notification hooks: off the caller's path, bounded, ordered per client, drained at exit."""

from __future__ import annotations

import trio
from structlog.testing import capture_logs

from plugin_host import hookimpl


class Collector:
    def __init__(self, name: str, seen: list) -> None:
        self.name = name
        self.seen = seen
        self.arrived = trio.Event()

    @hookimpl
    def on_client_gone(self, client_id):
        self.seen.append((self.name, client_id))
        self.arrived.set()


class Gate:
    """A notification plugin that blocks until the test opens the gate."""

    def __init__(self) -> None:
        self.gate = trio.Event()
        self.entered = trio.Event()
        self.seen: list[str] = []

    @hookimpl
    async def on_publish(self, topic):
        self.entered.set()
        await self.gate.wait()
        self.seen.append(topic)


class Auth:
    @hookimpl
    def auth_on_publish(self):
        return True


async def test_every_plugin_is_called_in_chain_order(make_manager, host):
    seen: list = []
    manager = make_manager(
        {"a": Collector("a", seen), "b": Collector("b", seen)}, priorities={"b": 1}
    )
    async with manager.running(host) as dispatcher:
        dispatcher.notify("on_client_gone", {"mountpoint": "", "client_id": "c1"})
    # Leaving running() delivers what was queued.
    assert seen == [("b", "c1"), ("a", "c1")]


async def test_errors_are_contained_and_later_plugins_still_run(make_manager, host):
    seen: list = []

    class Broken:
        @hookimpl
        def on_client_gone(self):
            raise ValueError("oops")

    manager = make_manager({"a": Broken(), "b": Collector("b", seen)})
    with capture_logs() as logs:
        async with manager.running(host) as dispatcher:
            dispatcher.notify("on_client_gone", {"client_id": "x"})
    assert seen == [("b", "x")]
    failed = [e for e in logs if e["event"] == "hook_failed"]
    assert failed[0]["plugin"] == "a" and failed[0]["hook"] == "on_client_gone"


async def test_slow_notification_plugin_never_delays_auth(make_manager, host):
    gate = Gate()
    manager = make_manager({"gate": gate, "auth": Auth()}, notify_workers=2)
    async with manager.running(host) as dispatcher:
        with trio.fail_after(5):
            for i in range(50):
                dispatcher.notify("on_publish", {"topic": f"t/{i}", "client_id": f"c{i}"})
            await gate.entered.wait()  # a worker is stuck inside the slow plugin
            for _ in range(100):
                outcome = await dispatcher.auth("auth_on_publish", {"topic": "x"})
                assert outcome.allowed
        assert gate.seen == []  # nothing got through the gate yet
        gate.gate.set()
    assert sorted(gate.seen) == sorted(f"t/{i}" for i in range(50))


async def test_full_queue_drops_counts_and_warns_once(make_manager, host):
    gate = Gate()
    manager = make_manager({"gate": gate}, notify_queue_size=3, notify_workers=1)
    with capture_logs() as logs:
        async with manager.running(host) as dispatcher:
            dispatcher.notify("on_publish", {"topic": "first"})
            with trio.fail_after(5):
                await gate.entered.wait()  # "first" is being handled, the queue is empty
            for i in range(10):
                dispatcher.notify("on_publish", {"topic": f"t{i}"})
            assert dispatcher.queued() == 3
            assert dispatcher.dropped == 7
            assert dispatcher.dropped_by_hook == {"on_publish": 7}
            gate.gate.set()
    assert gate.seen == ["first", "t0", "t1", "t2"]
    warnings = [e for e in logs if e["event"] == "hook_notifications_dropped"]
    assert len(warnings) == 1  # rate-limited
    assert warnings[0]["hook"] == "on_publish" and warnings[0]["reason"] == "queue_full"


async def test_one_client_keeps_its_order_across_workers(make_manager, host):
    order: list[tuple[str, int]] = []

    class Ordered:
        @hookimpl
        async def on_publish(self, client_id, qos):
            # Yield so that workers interleave; per-client order must survive that.
            await trio.lowlevel.checkpoint()
            order.append((client_id, qos))

    async with make_manager({"o": Ordered()}, notify_workers=4).running(host) as dispatcher:
        for i in range(200):
            dispatcher.notify("on_publish", {"client_id": f"c{i % 7}", "qos": i})
    for client in {c for c, _ in order}:
        sequence = [n for c, n in order if c == client]
        assert sequence == sorted(sequence)
    assert len(order) == 200


async def test_not_implemented_costs_a_lookup_and_nothing_is_queued(make_manager, host):
    async with make_manager({"auth": Auth()}).running(host) as dispatcher:
        for _ in range(1000):
            dispatcher.notify("on_publish", {"topic": "t"})
        assert dispatcher.queued() == 0 and dispatcher.dropped == 0


async def test_notify_after_shutdown_is_silent(make_manager, host):
    seen: list = []
    manager = make_manager({"a": Collector("a", seen)})
    async with manager.running(host) as dispatcher:
        pass
    dispatcher.notify("on_client_gone", {"client_id": "late"})  # no exception
    assert seen == [] and dispatcher.dropped == 1


async def test_slow_notification_is_bounded_by_hook_timeout(make_manager, host, autojump_clock):
    class Stuck:
        @hookimpl
        async def on_client_gone(self):
            await trio.sleep_forever()

    seen: list = []
    collector = Collector("b", seen)
    manager = make_manager({"a": Stuck(), "b": collector}, hook_timeout=3.0)
    with capture_logs() as logs:
        async with manager.running(host) as dispatcher:
            dispatcher.notify("on_client_gone", {"client_id": "c"})
            with trio.fail_after(10):
                await collector.arrived.wait()
    assert seen == [("b", "c")]
    assert [e["plugin"] for e in logs if e["event"] == "hook_timeout"] == ["a"]


async def test_shutdown_drain_is_bounded(make_manager, host, autojump_clock):
    gate = Gate()
    manager = make_manager({"gate": gate}, hook_timeout=1000.0)
    with capture_logs() as logs:
        async with manager.running(host) as dispatcher:
            dispatcher.notify("on_publish", {"topic": "a"})
            dispatcher.notify("on_publish", {"topic": "a"})
            started = trio.current_time()
    # The drain deadline (5 s) ended the stuck worker; the second one was never delivered.
    assert trio.current_time() - started <= 6
    assert any(e["event"] == "hook_notifications_undelivered" for e in logs)
