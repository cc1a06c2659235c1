"""plugin-host-example: an installable plugin (`example = plugin_host_example:ExamplePlugin`).

Each hook is active only when its config key is set:

* ``example.username`` / ``example.password``: ``auth_on_register(_m5)`` accepts that user with
  that password, refuses it with a wrong password, and says next for everybody else;
* ``example.topic_prefix``: ``auth_on_publish`` publishes every message under that prefix;
* ``example.audit = on``: ``on_publish`` records ``(client_id, topic)`` in ``self.published``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from plugin_host import Deny, hookimpl
from plugin_host.settings import Key

__version__ = "1.2.3"


class ExamplePlugin:
    """State lives on the instance: the host creates one per broker."""

    def __init__(self) -> None:
        self.config: Any = None
        self.published: list[tuple[str, str]] = []
        self.events: list[str] = []

    @hookimpl
    def plugin_host_config_schema(self) -> list[Key]:
        return [
            Key("username", "str"),
            Key("password", "str", secret=True),
            Key("topic_prefix", "str"),
            Key("audit", "bool", default=False),
        ]

    @hookimpl
    def plugin_host_lifespan(self, config: Any) -> Any:
        @asynccontextmanager
        async def lifespan() -> AsyncIterator[None]:
            self.config = config
            self.events.append("start")
            try:
                yield
            finally:
                self.events.append("stop")
                self.config = None

        return lifespan()

    @hookimpl
    def plugin_host_active_hooks(self) -> set[str]:
        config = self.config
        if config is None:
            return set()
        active = set()
        if config.get("username") is not None:
            active |= {"auth_on_register", "auth_on_register_m5"}
        if config.get("topic_prefix"):
            active.add("auth_on_publish")
        if config.get("audit"):
            active.add("on_publish")
        return active

    def _check(self, username: str | None, password: bytes | None) -> bool | Deny | None:
        if username != self.config.get("username"):
            return None
        if password is not None and password.decode() == self.config.get("password"):
            return True
        return Deny("wrong password", invalid_credentials=True)

    @hookimpl
    def auth_on_register(self, username: str | None, password: bytes | None) -> Any:
        return self._check(username, password)

    @hookimpl
    def auth_on_register_m5(self, password: bytes | None, username: str | None) -> Any:
        return self._check(username, password)

    @hookimpl
    async def auth_on_publish(self, topic: str) -> dict[str, Any]:
        return {"topic": f"{self.config.get('topic_prefix')}{topic}"}

    @hookimpl
    async def on_publish(self, client_id: str, topic: str) -> None:
        self.published.append((client_id, topic))
