"""The application message as the broker routes and queues it."""

from __future__ import annotations

import math
from typing import Any


class Message:
    """One published message (immutable by convention once routed).

    ``topic`` excludes the mountpoint (``mountpoint`` says where it was published).
    ``properties`` holds the MQTT 5 properties to forward (``None`` when there are none);
    ``topic_alias`` and ``subscription_identifier`` are never stored here (they are per
    connection / per delivery), and ``message_expiry_interval`` is replaced by ``expires_at``
    (a ``time.monotonic()`` deadline) so the remaining interval can be forwarded.
    ``publisher`` is the publishing session (for ``no_local``) or ``None``.
    ``encoded`` caches encoded PUBLISH bytes during one routing pass only (see the router).
    """

    __slots__ = (
        "encoded",
        "expires_at",
        "mountpoint",
        "payload",
        "properties",
        "publisher",
        "qos",
        "retain",
        "topic",
    )

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: dict[str, Any] | None = None,
        expires_at: float | None = None,
        mountpoint: str = "",
        publisher: Any = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties or None
        self.expires_at = expires_at
        self.mountpoint = mountpoint
        self.publisher = publisher
        self.encoded: dict[Any, Any] | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def remaining_expiry(self, now: float) -> int | None:
        """Seconds left, rounded up (what is forwarded as message expiry interval)."""
        if self.expires_at is None:
            return None
        return max(0, math.ceil(self.expires_at - now))

    def out_properties(self, now: float) -> dict[str, Any] | None:
        """Properties to send (message expiry replaced by the remaining interval)."""
        props = self.properties
        if self.expires_at is None:
            return props
        out = dict(props) if props else {}
        out["message_expiry_interval"] = self.remaining_expiry(now)
        return out

    def copy(self, **changes: Any) -> Message:
        new = Message(
            self.topic,
            self.payload,
            self.qos,
            self.retain,
            self.properties,
            self.expires_at,
            self.mountpoint,
            self.publisher,
        )
        for key, value in changes.items():
            setattr(new, key, value)
        return new

    def __repr__(self) -> str:
        return (
            f"Message({self.topic!r}, qos={self.qos}, retain={self.retain}, {len(self.payload)}B)"
        )
