"""``auth_cache``: ACLs a script stores at registration, consulted before any Lua hook.

Semantics of VerneMQ's ``vmq_diversity_cache`` (spec 4.4):

* ``insert(mountpoint, client_id, username, publish_acl, subscribe_acl)`` stores, for that
  subscriber id, two ordered ACL lists. An ACL has a ``pattern`` (a topic filter; whole
  ``%u`` / ``%c`` / ``%m`` levels are replaced by the username, client id and mountpoint),
  ``max_qos`` (default 2), for publish ``max_payload_size`` (default 256 MiB) and
  ``allowed_retain`` (default true), and optional ``modifiers`` (publish: a modifier table;
  subscribe: a topic list ``{{"topic", qos}}``).
* A request matches an ACL when its QoS, payload size and retain flag are within the ACL's
  limits and its topic matches the pattern (``+``/``#`` in the pattern match any level(s);
  a subscription filter's own wildcards only match the same wildcard in the pattern). The
  first matching ACL decides: allow, or allow with its modifiers.
* No entry for the subscriber id: the cache says nothing and the Lua hooks are called.
  An entry but no matching ACL: **deny**, without calling Lua or later plugins.
* The entry is dropped when the client goes offline/away or its session expires.

Values are plain Python data (strings as ``bytes`` where they came from Lua); the plugin
turns modifiers into the hook's Python forms when it uses them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from plugin_host.mqtt.errors import MQTTError
from plugin_host.mqtt.topics import validate_topic_filter

__all__ = [
    "MAX_PAYLOAD_SIZE",
    "ACLError",
    "AuthCache",
    "PublishACL",
    "SubscribeACL",
    "topic_matches",
]

MAX_PAYLOAD_SIZE = 268_435_456  # VerneMQ's default and upper bound (256 MiB)


class ACLError(ValueError):
    """An ACL list is not usable (raised as a Lua error by ``auth_cache.insert``)."""


@dataclass(frozen=True, slots=True)
class PublishACL:
    pattern: tuple[str, ...]
    max_qos: int = 2
    max_payload_size: int = MAX_PAYLOAD_SIZE
    allowed_retain: bool = True
    modifiers: Any = None


@dataclass(frozen=True, slots=True)
class SubscribeACL:
    pattern: tuple[str, ...]
    max_qos: int = 2
    modifiers: Any = None


def topic_matches(words: tuple[str, ...] | list[str], pattern: tuple[str, ...]) -> bool:
    """Does a topic (or subscription filter) match an ACL pattern?

    Pattern ``+`` matches one level and ``#`` the rest (also the parent level itself). The
    wildcards of a *filter* being checked are levels like any other, except that a filter's
    ``#`` (many levels) is only covered by a pattern ``#``: ``a/+`` does not allow
    subscribing to ``a/#`` (VerneMQ allowed it).
    """
    n = len(words)
    for i, level in enumerate(pattern):
        if level == "#":
            return True
        if i >= n:
            return False
        word = words[i]
        if level == "+":
            if word == "#":
                return False
        elif level != word:
            return False
    return n == len(pattern)


def _substitute(level: str, subst: Mapping[str, str | None]) -> str:
    value = subst.get(level)
    return level if value is None else value


def _number(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ACLError(f"{what} must be a number")
    if not low <= value <= high:
        raise ACLError(f"{what} must be between {low} and {high}, got {value}")
    return int(value)


def _text(value: Any, what: str) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise ACLError(f"{what} is not valid UTF-8") from None
    if isinstance(value, str):
        return value
    raise ACLError(f"{what} must be a string")


class AuthCache:
    """Per plugin instance: subscriber id -> (publish ACLs, subscribe ACLs)."""

    def __init__(self, log: Any) -> None:
        self._log = log
        self._entries: dict[tuple[str, str], tuple[list[PublishACL], list[SubscribeACL]]] = {}
        #: Set once anything was inserted: the plugin then answers the ACL-checked hooks.
        self.used = False

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, sid: object) -> bool:
        return sid in self._entries

    # -- insert -------------------------------------------------------------------------

    def insert(
        self,
        mountpoint: str,
        client_id: str,
        username: str | None,
        publish_acl: Iterable[Mapping[str, Any]] | None,
        subscribe_acl: Iterable[Mapping[str, Any]] | None,
    ) -> None:
        subst = {"%u": username, "%c": client_id, "%m": mountpoint}
        publish = self._acls(publish_acl, subst, client_id, publish=True)
        subscribe = self._acls(subscribe_acl, subst, client_id, publish=False)
        self._entries[(mountpoint, client_id)] = (publish, subscribe)  # type: ignore[assignment]
        self.used = True

    def _acls(
        self,
        raws: Iterable[Mapping[str, Any]] | None,
        subst: Mapping[str, str | None],
        client_id: str,
        *,
        publish: bool,
    ) -> list[PublishACL | SubscribeACL]:
        name = "publish_acl" if publish else "subscribe_acl"
        out: list[PublishACL | SubscribeACL] = []
        for index, raw in enumerate(raws or (), start=1):
            acl = self._acl(raw, subst, client_id, publish=publish, where=f"{name}[{index}]")
            if acl is not None:
                out.append(acl)
        return out

    def _acl(
        self,
        raw: Any,
        subst: Mapping[str, str | None],
        client_id: str,
        *,
        publish: bool,
        where: str,
    ) -> PublishACL | SubscribeACL | None:
        if not isinstance(raw, Mapping):
            raise ACLError(f"{where} must be a table with a pattern")
        pattern: tuple[str, ...] | None = None
        fields: dict[str, Any] = {}
        for key, value in raw.items():
            name = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
            here = f"{where}.{name}"
            if name == "pattern":
                text = _text(value, here)
                try:
                    validate_topic_filter(text)
                except MQTTError as exc:
                    # VerneMQ logs and keeps the ACL without a pattern (it never matches).
                    self._log.error(
                        "auth_cache_bad_pattern",
                        client_id=client_id,
                        pattern=text,
                        reason=exc.message,
                    )
                    return None
                # A %u of a client without user name stays as it is (it then never matches).
                pattern = tuple(_substitute(level, subst) for level in text.split("/"))
            elif name == "max_qos":
                fields["max_qos"] = _number(value, here, 0, 2)
            elif name == "modifiers":
                if not isinstance(value, Mapping | list):
                    raise ACLError(f"{here} must be a table")
                fields["modifiers"] = value
            elif publish and name == "max_payload_size":
                fields["max_payload_size"] = _number(value, here, 0, MAX_PAYLOAD_SIZE)
            elif publish and name == "allowed_retain":
                if not isinstance(value, bool):
                    raise ACLError(f"{here} must be a boolean")
                fields["allowed_retain"] = value
            else:
                self._log.warning("auth_cache_unknown_acl_key", client_id=client_id, key=here)
        if pattern is None:
            self._log.error("auth_cache_acl_without_pattern", client_id=client_id, acl=where)
            return None
        if publish:
            return PublishACL(pattern=pattern, **fields)
        return SubscribeACL(pattern=pattern, **fields)

    # -- lookups ------------------------------------------------------------------------

    def drop(self, mountpoint: str, client_id: str) -> bool:
        return self._entries.pop((mountpoint, client_id), None) is not None

    def clear(self) -> None:
        self._entries.clear()

    def match_publish(
        self,
        mountpoint: str,
        client_id: str,
        topic: str,
        qos: int,
        payload_size: int,
        retain: bool,
    ) -> Any:
        """``None`` (no entry), ``True`` (allowed), the ACL's modifiers, or ``False``."""
        entry = self._entries.get((mountpoint, client_id))
        if entry is None:
            return None
        words = topic.split("/")
        for acl in entry[0]:
            if (
                qos <= acl.max_qos
                and payload_size <= acl.max_payload_size
                and (acl.allowed_retain or not retain)
                and topic_matches(words, acl.pattern)
            ):
                return True if acl.modifiers is None else acl.modifiers
        return False

    def match_subscribe(self, mountpoint: str, client_id: str, topic: str, qos: int) -> Any:
        """``None`` (no entry), ``True`` (allowed), the ACL's modifiers, or ``False``."""
        entry = self._entries.get((mountpoint, client_id))
        if entry is None:
            return None
        words = topic.split("/")
        for acl in entry[1]:
            if qos <= acl.max_qos and topic_matches(words, acl.pattern):
                return True if acl.modifiers is None else acl.modifiers
        return False
