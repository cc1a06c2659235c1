"""A recording plugin for tests: every notification hook call, in order."""

# wait_for takes a timeout on purpose: a test helper must fail loudly, never hang.
# ruff: noqa: ASYNC109

from __future__ import annotations

from typing import Any

import trio

from plugin_host.hooks.markers import hookimpl

WAIT = 10.0

__all__ = ["HookRecorder"]


class HookRecorder:
    """A plugin object recording every notification hook call, for tests.

    Register it like any plugin (``run_broker(plugins={"rec": recorder})``). Notification
    hooks run off the client's path, so wait for them: ``await recorder.wait_for(
    "on_session_expired", client_id="x")`` returns the arguments of the first matching call
    (raises ``trio.TooSlowError`` after ``timeout``). ``recorder.calls`` is the list of
    ``(hook, args)`` in call order; ``recorder.of(hook)`` the arguments of one hook's calls.
    Subclass it to record chain hooks too (call :meth:`record` and return a result).
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._changed = trio.Event()

    def record(self, hook: str, **args: Any) -> None:
        self.calls.append((hook, args))
        self._changed.set()
        self._changed = trio.Event()

    def of(self, hook: str) -> list[dict[str, Any]]:
        return [args for name, args in self.calls if name == hook]

    async def wait_for(self, hook: str, timeout: float = WAIT, **match: Any) -> dict[str, Any]:
        with trio.fail_after(timeout):
            while True:
                for name, args in self.calls:
                    if name == hook and all(args.get(k) == v for k, v in match.items()):
                        return args
                await self._changed.wait()

    @hookimpl
    def on_register(
        self,
        peer_addr: str,
        peer_port: int,
        mountpoint: str,
        client_id: str,
        username: str | None,
    ) -> None:
        self.record(
            "on_register",
            peer_addr=peer_addr,
            peer_port=peer_port,
            mountpoint=mountpoint,
            client_id=client_id,
            username=username,
        )

    @hookimpl
    def on_register_m5(
        self,
        peer_addr: str,
        peer_port: int,
        mountpoint: str,
        client_id: str,
        username: str | None,
        properties: dict[str, Any],
    ) -> None:
        self.record(
            "on_register_m5",
            peer_addr=peer_addr,
            peer_port=peer_port,
            mountpoint=mountpoint,
            client_id=client_id,
            username=username,
            properties=properties,
        )

    @hookimpl
    def on_publish(
        self,
        username: str | None,
        mountpoint: str,
        client_id: str,
        qos: int,
        topic: str,
        payload: bytes,
        retain: bool,
    ) -> None:
        self.record(
            "on_publish",
            username=username,
            mountpoint=mountpoint,
            client_id=client_id,
            qos=qos,
            topic=topic,
            payload=payload,
            retain=retain,
        )

    @hookimpl
    def on_publish_m5(
        self,
        username: str | None,
        mountpoint: str,
        client_id: str,
        qos: int,
        topic: str,
        payload: bytes,
        retain: bool,
        properties: dict[str, Any],
    ) -> None:
        self.record(
            "on_publish_m5",
            username=username,
            mountpoint=mountpoint,
            client_id=client_id,
            qos=qos,
            topic=topic,
            payload=payload,
            retain=retain,
            properties=properties,
        )

    @hookimpl
    def on_subscribe(
        self,
        username: str | None,
        mountpoint: str,
        client_id: str,
        topics: Any,
    ) -> None:
        self.record(
            "on_subscribe",
            username=username,
            mountpoint=mountpoint,
            client_id=client_id,
            topics=topics,
        )

    @hookimpl
    def on_subscribe_m5(
        self,
        username: str | None,
        mountpoint: str,
        client_id: str,
        topics: Any,
        properties: dict[str, Any],
    ) -> None:
        self.record(
            "on_subscribe_m5",
            username=username,
            mountpoint=mountpoint,
            client_id=client_id,
            topics=topics,
            properties=properties,
        )

    @hookimpl
    def on_topic_unsubscribed(
        self,
        mountpoint: str,
        client_id: str,
        topics: Any,
    ) -> None:
        self.record(
            "on_topic_unsubscribed", mountpoint=mountpoint, client_id=client_id, topics=topics
        )

    @hookimpl
    def on_offline_message(
        self,
        mountpoint: str,
        client_id: str,
        qos: int,
        topic: str,
        payload: bytes,
        retain: bool,
    ) -> None:
        self.record(
            "on_offline_message",
            mountpoint=mountpoint,
            client_id=client_id,
            qos=qos,
            topic=topic,
            payload=payload,
            retain=retain,
        )

    @hookimpl
    def on_message_drop(
        self,
        mountpoint: str,
        client_id: str,
        topic: str,
        qos: int,
        payload: bytes,
        properties: dict[str, Any],
        reason: str,
    ) -> None:
        self.record(
            "on_message_drop",
            mountpoint=mountpoint,
            client_id=client_id,
            topic=topic,
            qos=qos,
            payload=payload,
            properties=properties,
            reason=reason,
        )

    @hookimpl
    def on_client_wakeup(
        self,
        mountpoint: str,
        client_id: str,
    ) -> None:
        self.record("on_client_wakeup", mountpoint=mountpoint, client_id=client_id)

    @hookimpl
    def on_client_offline(
        self,
        mountpoint: str,
        client_id: str,
    ) -> None:
        self.record("on_client_offline", mountpoint=mountpoint, client_id=client_id)

    @hookimpl
    def on_client_gone(
        self,
        mountpoint: str,
        client_id: str,
    ) -> None:
        self.record("on_client_gone", mountpoint=mountpoint, client_id=client_id)

    @hookimpl
    def on_session_expired(
        self,
        mountpoint: str,
        client_id: str,
    ) -> None:
        self.record("on_session_expired", mountpoint=mountpoint, client_id=client_id)
