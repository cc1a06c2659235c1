"""Basic end-to-end checks of the protocol package: encode a session's packets, parse them back."""

from __future__ import annotations

import pytest

from plugin_host.mqtt import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Parser,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
    encode,
)


def client_packets(level: int) -> list[object]:
    return [
        Connect(
            protocol_name="MQIsdp" if level == 3 else "MQTT",
            protocol_level=level,
            client_id="c1",
            keepalive=30,
            username="u",
            password=b"p",
            will=Will("a/b", b"x", 1, True),
        ),
        Publish("a/b", b"hello", 1, False, False, 7),
        Publish("a/b", b"hello"),
        Puback(7),
        Pubrec(8),
        Pubrel(8),
        Pubcomp(8),
        Subscribe(3, [Subscription("a/#", 1), Subscription("b/+", 2)]),
        Unsubscribe(4, ["a/#"]),
        Pingreq(),
        Disconnect(),
    ]


@pytest.mark.parametrize("level", [3, 4, 5])
def test_client_session_round_trip(level: int) -> None:
    packets = client_packets(level)
    data = b"".join(encode(p, level) for p in packets)  # type: ignore[arg-type]
    parser = Parser()
    assert parser.feed(data) == packets
    assert parser.protocol_level == level


def test_server_packets_v5_round_trip() -> None:
    packets = [
        Connack(True, 0, {"receive_maximum": 10, "user_property": [("a", "b"), ("a", "c")]}),
        Suback(3, [0, 1, 0x80]),
        Unsuback(4, [0]),
        Pingresp(),
        Disconnect(0x8B, {"reason_string": "bye"}),
        Auth(0x18, {"authentication_method": "x"}),
        Publish("t", b"p", 2, True, True, 9, {"subscription_identifier": [1, 2]}),
    ]
    parser = Parser(server_side=False, protocol_level=5)
    assert parser.feed(b"".join(encode(p, 5) for p in packets)) == packets
