"""Topic name and topic filter rules (MQTT 5 section 4.7, 4.8.2; 3.1.1 section 4.7)."""

from __future__ import annotations

from plugin_host.mqtt.errors import MQTTError
from plugin_host.mqtt.primitives import MAX_STRING_BYTES

TOPIC_FILTER_INVALID = 0x8F
TOPIC_NAME_INVALID = 0x90

SHARE_PREFIX = "$share/"


def _check_common(topic: str, code: int, what: str) -> None:
    if not topic:
        raise MQTTError(code, f"{what} is empty")
    if "\x00" in topic:
        raise MQTTError(code, f"{what} contains U+0000")
    # Cheap pre-check: a str of at most 21845 chars always fits in 65535 UTF-8 bytes.
    if len(topic) > MAX_STRING_BYTES // 3 and len(topic.encode("utf-8")) > MAX_STRING_BYTES:
        raise MQTTError(code, f"{what} longer than 65535 bytes")


def validate_topic_name(topic: str) -> None:
    """Check a topic name (PUBLISH, will): non-empty, no ``+``/``#``, no U+0000, <= 65535 bytes.

    Raises :class:`MQTTError` 0x90 (topic name invalid).
    """
    _check_common(topic, TOPIC_NAME_INVALID, "topic name")
    if "+" in topic or "#" in topic:
        raise MQTTError(TOPIC_NAME_INVALID, f"wildcard in topic name {topic!r}")


def _check_wildcards(topic_filter: str) -> None:
    # '#' must be the whole last level.
    if "#" in topic_filter and (
        topic_filter.index("#") != len(topic_filter) - 1
        or (len(topic_filter) > 1 and topic_filter[-2] != "/")
    ):
        raise MQTTError(TOPIC_FILTER_INVALID, f"misplaced '#' in {topic_filter!r}")
    if "+" in topic_filter:
        for level in topic_filter.split("/"):
            if "+" in level and level != "+":
                raise MQTTError(TOPIC_FILTER_INVALID, f"misplaced '+' in {topic_filter!r}")


def validate_topic_filter(topic_filter: str) -> None:
    """Check a topic filter, including ``$share/<group>/<filter>`` forms.

    Rules: non-empty, no U+0000, <= 65535 bytes, ``#`` only as the entire last level, ``+`` only
    as an entire level; shared: non-empty group without wildcards and a valid filter after it.
    Raises :class:`MQTTError` 0x8F (topic filter invalid).
    """
    _check_common(topic_filter, TOPIC_FILTER_INVALID, "topic filter")
    if topic_filter.startswith(SHARE_PREFIX):
        split_shared(topic_filter)
        return
    _check_wildcards(topic_filter)


def split_shared(topic_filter: str) -> tuple[str, str] | None:
    """Split ``$share/<group>/<filter>`` into ``(group, filter)``; ``None`` if not shared.

    Raises :class:`MQTTError` 0x8F when the filter starts with ``$share/`` but the group is
    empty or contains a wildcard, or the filter after it is missing or invalid.
    """
    if not topic_filter.startswith(SHARE_PREFIX):
        return None
    rest = topic_filter[len(SHARE_PREFIX) :]
    group, sep, inner = rest.partition("/")
    if not group:
        raise MQTTError(TOPIC_FILTER_INVALID, f"empty share group in {topic_filter!r}")
    if "+" in group or "#" in group:
        raise MQTTError(TOPIC_FILTER_INVALID, f"wildcard in share group of {topic_filter!r}")
    if not sep or not inner:
        raise MQTTError(TOPIC_FILTER_INVALID, f"no topic filter after share group {topic_filter!r}")
    _check_common(inner, TOPIC_FILTER_INVALID, "topic filter")
    _check_wildcards(inner)
    return group, inner


def is_shared(topic_filter: str) -> bool:
    """True if the filter has the ``$share/`` prefix (validity is not checked)."""
    return topic_filter.startswith(SHARE_PREFIX)


def is_dollar_topic(topic: str) -> bool:
    """True for topics starting with ``$``: wildcards at the first level never match them."""
    return topic.startswith("$")


def is_sys_topic(topic: str) -> bool:
    """True for ``$SYS`` and ``$SYS/...`` topics (broker status; clients must not publish)."""
    return topic == "$SYS" or topic.startswith("$SYS/")


def has_wildcards(topic_filter: str) -> bool:
    """True if the filter contains ``+`` or ``#`` (a filter without them matches one topic)."""
    return "+" in topic_filter or "#" in topic_filter
