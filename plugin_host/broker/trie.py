"""The subscription trie: which sessions want a message published on a topic.

One :class:`SubscriptionTrie` per mountpoint. Filters are split on ``/``; ``+`` and ``#`` are
ordinary child keys, so matching a topic walks at most three children per level. Topics that
start with ``$`` are not matched by a wildcard in the first level (MQTT 4.7.2).

Matching is cached per topic: fan-in traffic publishes the same topics again and again, so the
trie walk and the per-session aggregation of overlapping subscriptions are done once per topic
until the subscription set changes. Any (un)subscribe bumps ``generation`` and clears the cache.

Overlapping subscriptions of one session are merged into one delivery (MQTT 3.1.1 3.3.5: the
maximum QoS; MQTT 5 3.3.4: the maximum QoS and every subscription identifier). A ``no_local``
subscription is left out only when the publisher is the subscriber itself, so each
:class:`Target` carries the merged options computed without its ``no_local`` subscriptions.

Shared subscriptions (``$share/<group>/<filter>``) live in :class:`SharedGroup` objects on the
node of ``<filter>``; one member is picked per message (round robin or random) among the online
members, or, when none is online, among the offline members whose session persists.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

#: Largest number of topics remembered by the match cache before it is cleared.
MATCH_CACHE_SIZE = 65_536


class SubOptions:
    """One subscription of one session (the SUBSCRIBE entry after authorisation)."""

    __slots__ = ("group", "no_local", "qos", "rap", "retain_handling", "sub_id", "topic_filter")

    def __init__(
        self,
        topic_filter: str,
        qos: int,
        *,
        no_local: bool = False,
        rap: bool = False,
        retain_handling: int = 0,
        sub_id: int | None = None,
        group: str | None = None,
    ) -> None:
        self.topic_filter = topic_filter  # the filter without ``$share/<group>/``
        self.qos = qos
        self.no_local = no_local
        self.rap = rap  # retain as published
        self.retain_handling = retain_handling
        self.sub_id = sub_id
        self.group = group

    @property
    def full_filter(self) -> str:
        """The filter as the client wrote it (``$share/<group>/...`` for shared ones)."""
        if self.group is None:
            return self.topic_filter
        return f"$share/{self.group}/{self.topic_filter}"

    def __repr__(self) -> str:
        return f"SubOptions({self.full_filter!r}, qos={self.qos})"


class Target:
    """One session's merged delivery options for one topic.

    ``qos``/``sub_ids``/``rap`` merge all of the session's matching subscriptions. ``local``
    is the same merge without ``no_local`` subscriptions (used when the session published the
    message itself): ``None`` when it has none (same as the full merge), ``False`` when every
    matching subscription is ``no_local`` (nothing is delivered back).
    """

    __slots__ = ("local", "qos", "rap", "session", "sub_ids")

    def __init__(
        self,
        session: Any,
        qos: int,
        sub_ids: tuple[int, ...],
        rap: bool,
        local: Target | bool | None,
    ) -> None:
        self.session = session
        self.qos = qos
        self.sub_ids = sub_ids
        self.rap = rap
        self.local = local


class SharedGroup:
    """Members of ``$share/<name>/<filter>``; one gets each message."""

    __slots__ = ("filter", "members", "name", "next_index", "order")

    def __init__(self, name: str, topic_filter: str) -> None:
        self.name = name
        self.filter = topic_filter
        self.members: dict[Any, SubOptions] = {}
        self.order: list[Any] = []  # members in join order (round robin walks it)
        self.next_index = 0

    def add(self, session: Any, opts: SubOptions) -> bool:
        new = session not in self.members
        self.members[session] = opts
        if new:
            self.order.append(session)
        return new

    def remove(self, session: Any) -> bool:
        if self.members.pop(session, None) is None:
            return False
        self.order.remove(session)
        return True

    def pick(self, policy: str, publisher: Any = None) -> tuple[Any, SubOptions] | None:
        """Choose the member that gets the next message, or None when there is none.

        Online members first (round robin or random); when none is online, an offline member
        with a persistent session (its queue keeps the message).
        """
        order = self.order
        n = len(order)
        if n == 0:
            return None
        if policy == "random":
            online = [s for s in order if s.online]
            if online:
                chosen = random.choice(online)
                return chosen, self.members[chosen]
        else:
            start = self.next_index % n
            for i in range(n):
                session = order[(start + i) % n]
                if session.online:
                    self.next_index = start + i + 1
                    return session, self.members[session]
        start = self.next_index % n
        for i in range(n):
            session = order[(start + i) % n]
            if session.persistent:
                self.next_index = start + i + 1
                return session, self.members[session]
        return None


class Match:
    """What a topic matches: merged per-session targets and the shared groups."""

    __slots__ = ("groups", "targets")

    def __init__(self, targets: tuple[Target, ...], groups: tuple[SharedGroup, ...]) -> None:
        self.targets = targets
        self.groups = groups


EMPTY_MATCH = Match((), ())


class _Node:
    __slots__ = ("children", "groups", "subs")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.subs: dict[Any, SubOptions] | None = None
        self.groups: dict[str, SharedGroup] | None = None

    def empty(self) -> bool:
        return not self.children and not self.subs and not self.groups


class SubscriptionTrie:
    """Subscriptions of one mountpoint, with a per-topic match cache."""

    __slots__ = ("_cache", "generation", "root", "size")

    def __init__(self) -> None:
        self.root = _Node()
        self._cache: dict[str, Match] = {}
        self.generation = 0
        self.size = 0  # number of (session, filter) subscriptions, shared ones included

    # -- changes -------------------------------------------------------------------------------

    def _changed(self) -> None:
        self.generation += 1
        if self._cache:
            self._cache.clear()

    def add(self, session: Any, opts: SubOptions) -> bool:
        """Add or replace ``session``'s subscription; True if it did not exist before."""
        node = self.root
        for word in opts.topic_filter.split("/"):
            child = node.children.get(word)
            if child is None:
                child = node.children[word] = _Node()
            node = child
        if opts.group is None:
            if node.subs is None:
                node.subs = {}
            new = session not in node.subs
            node.subs[session] = opts
        else:
            if node.groups is None:
                node.groups = {}
            group = node.groups.get(opts.group)
            if group is None:
                group = node.groups[opts.group] = SharedGroup(opts.group, opts.topic_filter)
            new = group.add(session, opts)
        if new:
            self.size += 1
        self._changed()
        return new

    def remove(self, session: Any, topic_filter: str, group: str | None = None) -> bool:
        """Remove one subscription; True if it existed. Empty nodes are pruned."""
        path: list[tuple[_Node, str]] = []
        node = self.root
        for word in topic_filter.split("/"):
            child = node.children.get(word)
            if child is None:
                return False
            path.append((node, word))
            node = child
        removed = False
        if group is None:
            if node.subs and node.subs.pop(session, None) is not None:
                removed = True
                if not node.subs:
                    node.subs = None
        elif node.groups and (g := node.groups.get(group)) is not None and g.remove(session):
            removed = True
            if not g.members:
                del node.groups[group]
                if not node.groups:
                    node.groups = None
        if not removed:
            return False
        self.size -= 1
        for parent, word in reversed(path):
            if not node.empty():
                break
            del parent.children[word]
            node = parent
        self._changed()
        return True

    # -- matching ------------------------------------------------------------------------------

    def match(self, topic: str) -> Match:
        """Everything ``topic`` matches (cached until the subscriptions change)."""
        found = self._cache.get(topic)
        if found is not None:
            return found
        found = self._match(topic)
        if len(self._cache) >= MATCH_CACHE_SIZE:
            self._cache.clear()
        self._cache[topic] = found
        return found

    def _match(self, topic: str) -> Match:
        words = topic.split("/")
        subs: list[dict[Any, SubOptions]] = []
        groups: list[SharedGroup] = []
        _collect(self.root, words, 0, len(words), topic.startswith("$"), subs, groups)
        if not subs and not groups:
            return EMPTY_MATCH
        return Match(_merge(subs), tuple(groups))

    def iter_subscriptions(self) -> Iterator[tuple[Any, SubOptions]]:
        """Every (session, options) pair (shared ones included), for inspection."""
        stack = [self.root]
        while stack:
            node = stack.pop()
            if node.subs:
                yield from node.subs.items()
            if node.groups:
                for g in node.groups.values():
                    yield from g.members.items()
            stack.extend(node.children.values())


def _collect(
    node: _Node,
    words: list[str],
    i: int,
    n: int,
    dollar: bool,
    subs: list[dict[Any, SubOptions]],
    groups: list[SharedGroup],
) -> None:
    children = node.children
    if i == n:
        if node.subs:
            subs.append(node.subs)
        if node.groups:
            groups.extend(node.groups.values())
        # "a/#" also matches "a" (the parent level).
        hash_node = children.get("#")
        if hash_node is not None:
            if hash_node.subs:
                subs.append(hash_node.subs)
            if hash_node.groups:
                groups.extend(hash_node.groups.values())
        return
    if not children:
        return
    if not (dollar and i == 0):
        hash_node = children.get("#")
        if hash_node is not None:
            if hash_node.subs:
                subs.append(hash_node.subs)
            if hash_node.groups:
                groups.extend(hash_node.groups.values())
        plus = children.get("+")
        if plus is not None:
            _collect(plus, words, i + 1, n, dollar, subs, groups)
    child = children.get(words[i])
    if child is not None:
        _collect(child, words, i + 1, n, dollar, subs, groups)


def _merge(subs: list[dict[Any, SubOptions]]) -> tuple[Target, ...]:
    """One Target per session, merging overlapping subscriptions."""
    if len(subs) == 1:
        # The common case: one matching filter, no overlap possible.
        return tuple(_single(session, opts) for session, opts in subs[0].items())
    per_session: dict[Any, list[SubOptions]] = {}
    for node_subs in subs:
        for session, opts in node_subs.items():
            entry = per_session.get(session)
            if entry is None:
                per_session[session] = [opts]
            else:
                entry.append(opts)
    targets = []
    for session, all_opts in per_session.items():
        if len(all_opts) == 1:
            targets.append(_single(session, all_opts[0]))
            continue
        full = _combine(session, all_opts)
        if any(o.no_local for o in all_opts):
            remote = [o for o in all_opts if not o.no_local]
            full.local = _combine(session, remote) if remote else False
        targets.append(full)
    return tuple(targets)


def _single(session: Any, opts: SubOptions) -> Target:
    sub_ids = (opts.sub_id,) if opts.sub_id is not None else ()
    return Target(session, opts.qos, sub_ids, opts.rap, False if opts.no_local else None)


def _combine(session: Any, all_opts: list[SubOptions]) -> Target:
    qos = max(o.qos for o in all_opts)
    sub_ids = tuple(sorted({o.sub_id for o in all_opts if o.sub_id is not None}))
    rap = any(o.rap for o in all_opts)
    return Target(session, qos, sub_ids, rap, None)
