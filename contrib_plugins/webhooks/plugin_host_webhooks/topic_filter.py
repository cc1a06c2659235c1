"""Per-webhook topic filters (``webhooks.<name>.topic_filter = a/+/c``, VerneMQ issue #1791).

A webhook with a filter is only called for messages whose topic matches it, with the MQTT
matching rules: ``+`` one level, ``#`` the rest (including the parent level), and wildcards at
the first level never match topics starting with ``$``.
"""

from __future__ import annotations

from plugin_host.mqtt.errors import MQTTError
from plugin_host.mqtt.topics import is_shared, validate_topic_filter


class TopicFilter:
    """One compiled filter; :meth:`matches` is a per-message call, so it stays small."""

    __slots__ = ("_exact", "_levels", "_tail", "text")

    def __init__(self, text: str) -> None:
        """Compile ``text``; raises ValueError with the reason when it is not a valid filter."""
        try:
            validate_topic_filter(text)
        except MQTTError as exc:
            raise ValueError(str(exc)) from None
        if is_shared(text):
            raise ValueError(f"a topic filter cannot be a shared subscription: {text!r}")
        self.text = text
        levels = text.split("/")
        self._tail = levels[-1] == "#"
        if self._tail:
            levels.pop()
        self._levels = tuple(levels)
        # Without wildcards the filter matches exactly one topic: a string comparison.
        self._exact = text if "+" not in text and "#" not in text else None

    def matches(self, topic: str) -> bool:
        if self._exact is not None:
            return topic == self._exact
        if topic.startswith("$") and (not self._levels or self._levels[0] == "+"):
            return False
        parts = topic.split("/")
        count = len(self._levels)
        if len(parts) < count or (len(parts) > count and not self._tail):
            return False
        return all(level in ("+", part) for level, part in zip(self._levels, parts, strict=False))

    def __repr__(self) -> str:
        return f"TopicFilter({self.text!r})"
