"""What a hook chain decided, in one small value the broker can act on.

Plugins return loose values (``None``, ``True``, ``False``, a ``dict``, a ``list`` or
:class:`Deny`); the chain runner normalises them into an :class:`Outcome`. The broker only
ever looks at an ``Outcome``, so the loose forms stay a plugin-author convenience.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class Deny:
    """Return this from an auth hook to refuse with a reason.

    ``reason`` is logged and, for MQTT 5 clients that asked for problem information, sent as
    the reason string. ``reason_code`` overrides the MQTT 5 reason code the client sees (for
    example ``0x8C`` bad authentication method); MQTT 3 clients get the fixed code of the hook.
    ``invalid_credentials=True`` makes an MQTT 3 CONNACK say 4 (bad user name or password)
    instead of 5 (not authorised).
    """

    __slots__ = ("invalid_credentials", "properties", "reason", "reason_code")

    def __init__(
        self,
        reason: str = "not_authorized",
        reason_code: int | None = None,
        *,
        invalid_credentials: bool = False,
        properties: dict[str, Any] | None = None,
    ) -> None:
        self.reason = reason
        self.reason_code = reason_code
        self.invalid_credentials = invalid_credentials
        self.properties = properties

    def __repr__(self) -> str:
        return f"Deny({self.reason!r}, reason_code={self.reason_code!r})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Deny)
            and other.reason == self.reason
            and other.reason_code == self.reason_code
            and other.invalid_credentials == self.invalid_credentials
        )

    def __hash__(self) -> int:
        return hash((self.reason, self.reason_code))


@dataclass(slots=True)
class Outcome:
    """The result of one auth/modifier chain.

    ``allowed``: the request may proceed. ``modifiers``: validated changes (already in the
    Python forms of the modifier reference); ``None`` means "no change". ``topics``: a rewritten
    topic list for ``auth_on_subscribe`` / ``on_unsubscribe``. On a deny, ``reason``,
    ``reason_code`` (MQTT 5, may be ``None`` to use the hook's default) and ``plugin`` (who
    decided; ``None`` when the chain was exhausted) say why.

    On an allow, ``properties`` carries MQTT 5 properties for the acknowledgement of a
    subscribe/unsubscribe chain (``p_reason_string``, ``p_user_property`` for SUBACK /
    UNSUBACK); on a deny, the ``Deny``'s properties (``p_reason_string``, ``p_server_ref``,
    ``p_user_property``). Modifier dicts carry their own ``properties`` key.

    ``unchanged``: only for the result-optional chains ``on_deliver(_m5)`` and
    ``on_unsubscribe(_m5)``. Those chains never refuse: when a plugin denied, failed, timed out
    or returned something invalid, or every plugin said next, the outcome is
    ``allowed=True, unchanged=True`` (``modifiers`` and ``topics`` are ``None``) and the broker
    delivers the message / unsubscribes the requested topics as they were. ``reason`` and
    ``plugin`` still say what happened, for logs.
    """

    allowed: bool
    modifiers: dict[str, Any] | None = None
    topics: list[Any] | None = None
    reason: str | None = None
    reason_code: int | None = None
    invalid_credentials: bool = False
    properties: dict[str, Any] | None = None
    plugin: str | None = None
    exhausted: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    unchanged: bool = False


#: Shared immutable-by-convention outcomes for the common cases (no allocation per call).
ALLOW = Outcome(allowed=True)
EXHAUSTED = Outcome(allowed=False, reason="plugin_chain_exhausted", exhausted=True)
#: The exhausted outcome of a result-optional chain (on_deliver, on_unsubscribe): proceed as is.
UNCHANGED = Outcome(allowed=True, reason="plugin_chain_exhausted", exhausted=True, unchanged=True)
