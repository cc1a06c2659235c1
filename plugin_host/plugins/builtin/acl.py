"""Built-in ``acl`` plugin: topic access from an ACL file (VerneMQ vmq_acl / mosquitto syntax).

Configuration (``vmq_acl.*`` is an alias)::

    acl.acl_file = /etc/plugin-host/acl
    acl.acl_reload_interval = 10     # seconds; 0 = never reload

File syntax (one rule per line, ``#`` comments, blank lines ignored)::

    topic [read|write] <filter>     # no keyword = read and write
    user <name>                     # following topic lines are for this user
    pattern [read|write] <filter>   # for every client; %u %c %m = user, client id, mountpoint

``topic`` lines before the first ``user`` line form the general section: as in VerneMQ they
apply to **every** client (anonymous ones included). ``pattern`` lines apply to every client
wherever they appear; ``%u``, ``%c`` and ``%m`` must be whole topic levels
(``devices/%c/#``) and are replaced by the client's values as literals (a client id ``#``
never becomes a wildcard); patterns with ``%u`` never match clients without a user name.

Decisions (``auth_on_publish(_m5)`` needs *write*, ``auth_on_subscribe(_m5)`` *read* on every
requested filter): a matching rule gives ok; otherwise **next** (this plugin never denies:
another plugin may know better, and an exhausted chain denies anyway). A subscription filter
is allowed when a rule covers every topic it can match (rule ``a/#`` covers ``a/+/c``; rule
``a/+`` does not cover ``a/#``); shared subscriptions are checked on the filter after
``$share/<group>/``. Following MQTT, a rule starting with a wildcard does not cover topics
starting with ``$`` (write ``$SYS/#`` explicitly).

Without ``acl_file`` the plugin answers no hook. The file is re-read when it changes; a file
that fails to load on reload is logged and the previous rules stay in force. Invalid filters
are skipped with a warning (VerneMQ does the same); an unknown line is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from plugin_host.hooks.markers import hookimpl
from plugin_host.mqtt.errors import MQTTError
from plugin_host.mqtt.topics import split_shared, validate_topic_filter
from plugin_host.plugins.builtin.watch import FileFormatError, FilePlugin

__all__ = ["AclPlugin", "AclRules", "parse_acl"]

log = structlog.get_logger(__name__)

HOOKS = frozenset(
    {"auth_on_publish", "auth_on_publish_m5", "auth_on_subscribe", "auth_on_subscribe_m5"}
)


class _Wildcard:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


PLUS = _Wildcard("+")
HASH = _Wildcard("#")
#: Placeholders of ``pattern`` lines, replaced per client.
SUBSTITUTIONS = {"%u": "username", "%c": "client_id", "%m": "mountpoint"}

Level = str | _Wildcard
Rule = tuple[Level, ...]


def compile_filter(text: str) -> Rule:
    """A filter as levels; ``+`` and ``#`` levels become wildcard tokens."""
    return tuple(PLUS if lv == "+" else HASH if lv == "#" else lv for lv in text.split("/"))


def covers(rule: Sequence[Level], wanted: Sequence[str]) -> bool:
    """True when every topic matched by ``wanted`` (a topic or a client's filter, as levels,
    where ``"+"``/``"#"`` are the client's wildcards) is matched by ``rule``."""
    for index, level in enumerate(rule):
        if level is HASH:
            # '#' also matches the parent level ("a/#" matches "a"); never '$' topics at root.
            return not (index == 0 and wanted and wanted[0].startswith("$"))
        if index >= len(wanted):
            return False
        asked = wanted[index]
        if asked == "#":
            return False  # only '#' covers '#'
        if level is PLUS:
            if index == 0 and asked.startswith("$"):
                return False
            continue
        if asked == "+" or asked != level:
            return False
    return len(wanted) == len(rule)


@dataclass(slots=True)
class _Pattern:
    levels: tuple[Level, ...]  # "%u"/"%c"/"%m" stay as str markers, substituted per call
    needs_user: bool

    def substitute(self, username: str | None, client_id: str, mountpoint: str) -> Rule | None:
        if self.needs_user and username is None:
            return None
        values = {"%u": username or "", "%c": client_id, "%m": mountpoint}
        return tuple(
            values[lv] if isinstance(lv, str) and lv in SUBSTITUTIONS else lv for lv in self.levels
        )


@dataclass(slots=True)
class AclRules:
    """The parsed file: general (all clients), per-user and pattern rules, per access type."""

    general: dict[str, list[Rule]] = field(default_factory=lambda: {"read": [], "write": []})
    users: dict[str, dict[str, list[Rule]]] = field(default_factory=dict)
    patterns: dict[str, list[_Pattern]] = field(default_factory=lambda: {"read": [], "write": []})

    def allows(
        self, access: str, wanted: Sequence[str], username: str | None, client_id: str, mp: str
    ) -> bool:
        if any(covers(rule, wanted) for rule in self.general[access]):
            return True
        if username is not None:
            own = self.users.get(username)
            if own is not None and any(covers(rule, wanted) for rule in own[access]):
                return True
        for pattern in self.patterns[access]:
            rule = pattern.substitute(username, client_id, mp)
            if rule is not None and covers(rule, wanted):
                return True
        return False


_ACCESS = {"read": ("read",), "write": ("write",)}


def parse_acl(text: str, path: Path) -> AclRules:
    """Parse an ACL file; raises :class:`FileFormatError` for an unknown line."""
    rules = AclRules()
    user: str | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        rest = rest.strip()
        if keyword == "user":
            if not rest:
                raise FileFormatError(path, lineno, "user without a name")
            user = rest
            rules.users.setdefault(user, {"read": [], "write": []})
            continue
        if keyword not in ("topic", "pattern"):
            raise FileFormatError(
                path, lineno, f"unknown rule {keyword!r} (expected topic, user or pattern)"
            )
        first, _, after = rest.partition(" ")
        accesses: tuple[str, ...] = ("read", "write")
        if first in _ACCESS and after.strip():
            accesses = _ACCESS[first]
            rest = after.strip()
        if not rest:
            raise FileFormatError(path, lineno, f"{keyword} without a topic filter")
        try:
            validate_topic_filter(rest)
        except MQTTError as exc:
            log.warning("acl_rule_skipped", file=str(path), line=lineno, reason=exc.message)
            continue
        if keyword == "pattern":
            levels = tuple(
                lv if lv in SUBSTITUTIONS else PLUS if lv == "+" else HASH if lv == "#" else lv
                for lv in rest.split("/")
            )
            pattern = _Pattern(levels, needs_user="%u" in levels)
            for access in accesses:
                rules.patterns[access].append(pattern)
            continue
        target = rules.general if user is None else rules.users[user]
        for access in accesses:
            target[access].append(compile_filter(rest))
    return rules


def _levels_of_filter(topic_filter: str) -> list[str] | None:
    try:
        shared = split_shared(topic_filter)
    except MQTTError:
        return None
    return (shared[1] if shared else topic_filter).split("/")


class AclPlugin(FilePlugin[AclRules]):
    """One instance per broker (the module's ``plugin_host_plugin``)."""

    name = "acl"
    file_key = "acl_file"
    file_doc = "topic/user/pattern rules; unset = plugin inactive"
    interval_key = "acl_reload_interval"
    hooks = HOOKS

    def __init__(self) -> None:
        super().__init__()
        self.rules = AclRules()

    def parse(self, text: str, path: Path) -> AclRules:
        return parse_acl(text, path)

    def loaded(self, value: AclRules) -> dict[str, Any]:
        self.rules = value
        return {"users": len(value.users)}

    # -- hooks: plain functions, in-memory and quick -------------------------------------------

    def _publish(
        self, username: str | None, mountpoint: str, client_id: str, topic: str
    ) -> bool | None:
        allowed = self.rules.allows("write", topic.split("/"), username, client_id, mountpoint)
        return True if allowed else None

    def _subscribe(
        self, username: str | None, mountpoint: str, client_id: str, topics: Sequence[Any]
    ) -> bool | None:
        for entry in topics:
            levels = _levels_of_filter(entry[0])
            if levels is None or not self.rules.allows(
                "read", levels, username, client_id, mountpoint
            ):
                return None
        return True

    @hookimpl
    def auth_on_publish(
        self, username: str | None, mountpoint: str, client_id: str, topic: str
    ) -> bool | None:
        return self._publish(username, mountpoint, client_id, topic)

    @hookimpl
    def auth_on_publish_m5(
        self, username: str | None, mountpoint: str, client_id: str, topic: str
    ) -> bool | None:
        return self._publish(username, mountpoint, client_id, topic)

    @hookimpl
    def auth_on_subscribe(
        self, username: str | None, mountpoint: str, client_id: str, topics: Sequence[Any]
    ) -> bool | None:
        return self._subscribe(username, mountpoint, client_id, topics)

    @hookimpl
    def auth_on_subscribe_m5(
        self, username: str | None, mountpoint: str, client_id: str, topics: Sequence[Any]
    ) -> bool | None:
        return self._subscribe(username, mountpoint, client_id, topics)


#: The manager registers ``plugin_host_plugin()`` (a fresh instance) instead of this module.
plugin_host_plugin = AclPlugin
