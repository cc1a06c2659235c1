"""The encoder refuses values it cannot put on the wire (ValueError: a programming error)."""

from __future__ import annotations

import pytest

from plugin_host.mqtt import (
    Auth,
    Connack,
    Connect,
    Packet,
    Puback,
    Publish,
    Subscribe,
    Subscription,
    Unsubscribe,
    Will,
    encode,
    encode_connack,
    encode_publish,
)


@pytest.mark.parametrize(
    ("packet", "level"),
    [
        (Auth(), 4),
        (Publish("t", b"", 1, packet_id=None), 4),
        (Publish("t", b"", 1, packet_id=0), 4),
        (Publish("t", b"", 1, packet_id=65536), 5),
        (Publish("t", b"", 3, packet_id=1), 4),
        (Publish("t", b"", 0, dup=True), 4),
        (Publish("t", b"", 0, properties={"session_expiry_interval": 1}), 5),
        (Publish("t", b"", 0, properties={"bogus": 1}), 5),
        (Publish("t", b"", 0, properties={"topic_alias": 0}), 5),
        (Publish("t", b"", 0, properties={"message_expiry_interval": 2**32}), 5),
        (Publish("x" * 65536, b""), 4),
        (Puback(0), 4),
        (Subscribe(1, []), 4),
        (Subscribe(1, [Subscription("a", 3)]), 4),
        (Subscribe(1, [Subscription("a", 0, retain_handling=3)]), 5),
        (Unsubscribe(1, []), 4),
        (Connect(password=b"p"), 4),
        (Connect(keepalive=70000), 4),
        (Connect(will=Will("t", b"", 3)), 4),
        (Connect(properties={"maximum_packet_size": 0}), 5),
        (Connack(False, 0x81), 4),
    ],
)
def test_encode_rejects(packet: Packet, level: int) -> None:
    with pytest.raises(ValueError):
        encode(packet, level)


def test_encode_rejects_unknown_level_and_type() -> None:
    with pytest.raises(ValueError):
        encode(Publish("t", b""), 6)
    with pytest.raises(TypeError):
        encode("not a packet", 4)  # type: ignore[arg-type]


def test_encode_publish_rejects() -> None:
    with pytest.raises(ValueError):
        encode_publish("t", b"", 2, packet_id=None)
    with pytest.raises(ValueError):
        encode_publish("t", b"", -1)
    with pytest.raises(ValueError):
        encode_publish("t", b"\0" * 268_435_455)
    with pytest.raises(ValueError):
        encode_connack(False, 0x82, 3)


def test_encode_accepts_buffers() -> None:
    assert encode_publish(b"t", memoryview(b"ab")) == b"\x30\x05\x00\x01tab"
    assert encode_publish(bytearray(b"t"), bytearray(b"ab")) == b"\x30\x05\x00\x01tab"
