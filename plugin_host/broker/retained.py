"""Retained messages of one mountpoint.

Stored in a topic tree (one node per topic level) so that a wildcard filter visits only the
branches it can match instead of testing every stored topic; a filter without wildcards is a
dict lookup. Expired messages (MQTT 5 message expiry) are never returned and are removed when
met, plus by :meth:`RetainedStore.sweep`.

All changes go through :meth:`RetainedStore.set` (a store layer can observe them there).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from plugin_host.broker.message import Message


class _Node:
    __slots__ = ("children", "message")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.message: Message | None = None


class RetainedStore:
    """Retained messages keyed by topic."""

    __slots__ = ("_by_topic", "_root", "on_change")

    def __init__(self) -> None:
        self._root = _Node()
        self._by_topic: dict[str, Message] = {}
        #: Called as ``on_change(topic, message_or_None)`` after every change (persistence).
        self.on_change: Callable[[str, Message | None], None] | None = None

    def __len__(self) -> int:
        return len(self._by_topic)

    def set(self, topic: str, message: Message | None) -> None:
        """Store ``message`` as the retained message of ``topic``; ``None`` clears it."""
        if message is None:
            if self._by_topic.pop(topic, None) is None:
                return
            self._remove_node(topic)
        else:
            node = self._root
            for word in topic.split("/"):
                child = node.children.get(word)
                if child is None:
                    child = node.children[word] = _Node()
                node = child
            node.message = message
            self._by_topic[topic] = message
        if self.on_change is not None:
            self.on_change(topic, message)

    def get(self, topic: str, now: float) -> Message | None:
        message = self._by_topic.get(topic)
        if message is not None and message.expired(now):
            self.set(topic, None)
            return None
        return message

    def _remove_node(self, topic: str) -> None:
        path: list[tuple[_Node, str]] = []
        node = self._root
        for word in topic.split("/"):
            child = node.children.get(word)
            if child is None:
                return
            path.append((node, word))
            node = child
        node.message = None
        for parent, word in reversed(path):
            if node.children or node.message is not None:
                break
            del parent.children[word]
            node = parent

    def match(self, topic_filter: str, now: float) -> list[Message]:
        """Every live retained message whose topic matches ``topic_filter``."""
        if "+" not in topic_filter and "#" not in topic_filter:
            message = self.get(topic_filter, now)
            return [] if message is None else [message]
        found: list[Message] = []
        _walk(self._root, topic_filter.split("/"), 0, found)
        live = [m for m in found if not m.expired(now)]
        if len(live) != len(found):
            for m in found:
                if m.expired(now):
                    self.set(m.topic, None)
        return live

    def sweep(self, now: float) -> int:
        """Drop every expired message; returns how many."""
        expired = [t for t, m in self._by_topic.items() if m.expired(now)]
        for topic in expired:
            self.set(topic, None)
        return len(expired)

    def __iter__(self) -> Iterator[Message]:
        return iter(list(self._by_topic.values()))


def _walk(node: _Node, words: list[str], i: int, found: list[Message]) -> None:
    if i == len(words):
        if node.message is not None:
            found.append(node.message)
        return
    word = words[i]
    if word == "#":
        # '#' matches the parent level too, and everything below; not '$' topics at the root.
        if node.message is not None and i > 0:
            found.append(node.message)
        for key, child in node.children.items():
            if i == 0 and key.startswith("$"):
                continue
            _collect_all(child, found)
        return
    if word == "+":
        for key, child in node.children.items():
            if i == 0 and key.startswith("$"):
                continue
            _walk(child, words, i + 1, found)
        return
    exact = node.children.get(word)
    if exact is not None:
        _walk(exact, words, i + 1, found)


def _collect_all(node: _Node, found: list[Message]) -> None:
    stack = [node]
    while stack:
        n = stack.pop()
        if n.message is not None:
            found.append(n.message)
        stack.extend(n.children.values())
