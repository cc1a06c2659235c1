"""Byte-exact encodings, written by hand from the MQTT 3.1, 3.1.1 and 5.0 specifications.

Each row: the packet, the protocol level, who sends it, and the expected bytes as hex. The test
checks both directions: ``encode(packet) == bytes`` and ``Parser.feed(bytes) == [packet]``.
The expected bytes were composed field by field from the spec (comments show the breakdown),
never produced by the encoder under test.
"""

from __future__ import annotations

import pytest

from plugin_host.mqtt import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
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
    encode_connack,
    encode_disconnect,
    encode_puback,
    encode_pubcomp,
    encode_publish,
    encode_pubrec,
    encode_pubrel,
    encode_suback,
    encode_unsuback,
)

CLIENT = "client"  # sent by a client, parsed by a server-side parser
SERVER = "server"  # sent by a server, parsed by a client-side parser


def h(text: str) -> bytes:
    """Hex with spaces; 'quoted' runs are ASCII."""
    out = bytearray()
    for token in text.split():
        if token.startswith("'"):
            out += token.strip("'").encode()
        else:
            out += bytes.fromhex(token)
    return bytes(out)


TABLE: list[tuple[str, Packet, int, str, str]] = [
    # ------------------------------------------------------------------ CONNECT
    (
        "connect-v311-minimal",
        Connect("MQTT", 4, "abc", True, 60),
        4,
        CLIENT,
        # rl 15 | name "MQTT" | level 4 | flags clean | keepalive 60 | client id "abc"
        "10 0F  00 04 'MQTT'  04  02  00 3C  00 03 'abc'",
    ),
    (
        "connect-v31-minimal",
        Connect("MQIsdp", 3, "abc", True, 60),
        3,
        CLIENT,
        "10 11  00 06 'MQIsdp'  03  02  00 3C  00 03 'abc'",
    ),
    (
        "connect-v31-bridge",
        Connect("MQIsdp", 131, "br", False, 5),
        3,
        CLIENT,
        "10 10  00 06 'MQIsdp'  83  00  00 05  00 02 'br'",
    ),
    (
        "connect-v311-will-user-pass",
        Connect("MQTT", 4, "c", True, 10, "u", b"pw", Will("w", b"bye", 1, True)),
        4,
        CLIENT,
        # flags: user 80 | pass 40 | will retain 20 | will qos1 08 | will 04 | clean 02 = EE
        "10 1C  00 04 'MQTT'  04  EE  00 0A  00 01 'c'  00 01 'w'  00 03 'bye'  00 01 'u'"
        "  00 02 'pw'",
    ),
    (
        "connect-v5-properties",
        Connect(
            "MQTT",
            5,
            "abc",
            True,
            60,
            properties={"session_expiry_interval": 3600, "receive_maximum": 20},
        ),
        5,
        CLIENT,
        # props (8): 11 00000E10 (session expiry 3600) | 21 0014 (receive maximum 20)
        "10 18  00 04 'MQTT'  05  02  00 3C  08 11 00 00 0E 10 21 00 14  00 03 'abc'",
    ),
    (
        "connect-v5-will-properties",
        Connect("MQTT", 5, "", True, 0, will=Will("t", b"", 0, False, {"will_delay_interval": 5})),
        5,
        CLIENT,
        # flags will 04 | clean 02 | no connect props | client id "" | will props 18 00000005
        "10 18  00 04 'MQTT'  05  06  00 00  00  00 00  05 18 00 00 00 05  00 01 't'  00 00",
    ),
    (
        "connect-v5-password-without-username",
        Connect("MQTT", 5, "x", False, 30, None, b"\x00\x01"),
        5,
        CLIENT,
        "10 12  00 04 'MQTT'  05  40  00 1E  00  00 01 'x'  00 02 00 01",
    ),
    # ------------------------------------------------------------------ CONNACK
    ("connack-v311-accepted", Connack(False, 0), 4, SERVER, "20 02 00 00"),
    ("connack-v311-session-present", Connack(True, 0), 4, SERVER, "20 02 01 00"),
    ("connack-v311-not-authorized", Connack(False, 5), 4, SERVER, "20 02 00 05"),
    ("connack-v31-refused-id", Connack(False, 2), 3, SERVER, "20 02 00 02"),
    (
        "connack-v5-properties",
        Connack(True, 0, {"topic_alias_maximum": 10, "assigned_client_identifier": "x"}),
        5,
        SERVER,
        # props (7): 22 000A | 12 0001 'x'
        "20 0A  01 00  07 22 00 0A 12 00 01 'x'",
    ),
    ("connack-v5-not-authorized", Connack(False, 0x87), 5, SERVER, "20 03 00 87 00"),
    # ------------------------------------------------------------------ PUBLISH
    ("publish-v311-qos0", Publish("a/b", b"hi"), 4, CLIENT, "30 07  00 03 'a/b'  'hi'"),
    ("publish-v31-qos0", Publish("a/b", b"hi"), 3, CLIENT, "30 07  00 03 'a/b'  'hi'"),
    (
        "publish-v311-qos1-retain-dup-empty-payload",
        Publish("a", b"", 1, True, True, 10),
        4,
        SERVER,
        # 30 | dup 08 | qos1 02 | retain 01 = 3B
        "3B 05  00 01 'a'  00 0A",
    ),
    (
        "publish-v311-qos2",
        Publish("t", b"x", 2, False, False, 0x1234),
        4,
        CLIENT,
        "34 06  00 01 't'  12 34  'x'",
    ),
    (
        "publish-v311-two-byte-remaining-length",
        Publish("t", b"A" * 200),
        4,
        CLIENT,
        # rl 203 = 0xCB -> CB 01
        "30 CB 01  00 01 't'  " + "41 " * 200,
    ),
    ("publish-v5-qos0-no-props", Publish("a", b"x"), 5, CLIENT, "30 05  00 01 'a'  00  'x'"),
    (
        "publish-v5-qos1-properties",
        Publish(
            "a",
            b"ok",
            1,
            False,
            False,
            1,
            {
                "payload_format_indicator": 1,
                "topic_alias": 3,
                "subscription_identifier": [5],
                "user_property": [("k", "v")],
            },
        ),
        5,
        SERVER,
        # props (14): 01 01 | 23 0003 | 0B 05 | 26 0001 'k' 0001 'v'
        "32 16  00 01 'a'  00 01  0E 01 01 23 00 03 0B 05 26 00 01 'k' 00 01 'v'  'ok'",
    ),
    (
        "publish-v5-topic-alias-empty-topic",
        Publish("", b"z", 0, False, False, None, {"topic_alias": 1}),
        5,
        CLIENT,
        "30 07  00 00  03 23 00 01  'z'",
    ),
    (
        "publish-v5-repeated-subscription-identifiers",
        Publish("a", b"", 0, False, False, None, {"subscription_identifier": [200, 1]}),
        5,
        SERVER,
        # 200 as a variable byte integer: C8 01
        "30 09  00 01 'a'  05 0B C8 01 0B 01",
    ),
    (
        "publish-v5-user-properties-ordered-duplicates",
        Publish("a", b"", 0, False, False, None, {"user_property": [("k", "2"), ("k", "1")]}),
        5,
        CLIENT,
        "30 12  00 01 'a'  0E 26 00 01 'k' 00 01 '2' 26 00 01 'k' 00 01 '1'",
    ),
    # ------------------------------------------------------------------ acks
    ("puback-v311", Puback(7), 4, CLIENT, "40 02 00 07"),
    ("pubrec-v311", Pubrec(8), 4, SERVER, "50 02 00 08"),
    ("pubrel-v311", Pubrel(8), 4, CLIENT, "62 02 00 08"),
    ("pubcomp-v311", Pubcomp(8), 4, SERVER, "70 02 00 08"),
    ("puback-v31", Puback(0xFFFF), 3, CLIENT, "40 02 FF FF"),
    ("puback-v5-success-short", Puback(7), 5, CLIENT, "40 02 00 07"),
    ("puback-v5-no-subscribers", Puback(7, 0x10), 5, SERVER, "40 03 00 07 10"),
    (
        "puback-v5-reason-string",
        Puback(7, 0x87, {"reason_string": "no"}),
        5,
        SERVER,
        "40 09  00 07  87  05 1F 00 02 'no'",
    ),
    ("pubrec-v5-quota", Pubrec(9, 0x97), 5, CLIENT, "50 03 00 09 97"),
    ("pubrel-v5-not-found", Pubrel(8, 0x92), 5, SERVER, "62 03 00 08 92"),
    ("pubcomp-v5", Pubcomp(8), 5, CLIENT, "70 02 00 08"),
    # ------------------------------------------------------------------ SUBSCRIBE / SUBACK
    (
        "subscribe-v311",
        Subscribe(1, [Subscription("a/b", 1), Subscription("c/#", 2)]),
        4,
        CLIENT,
        "82 0E  00 01  00 03 'a/b' 01  00 03 'c/#' 02",
    ),
    (
        "subscribe-v31",
        Subscribe(9, [Subscription("x", 0)]),
        3,
        CLIENT,
        "82 06  00 09  00 01 'x' 00",
    ),
    (
        "subscribe-v5-options-and-identifier",
        Subscribe(2, [Subscription("a", 1, True, True, 2)], {"subscription_identifier": 7}),
        5,
        CLIENT,
        # options: qos1 01 | no local 04 | retain as published 08 | retain handling 2 -> 20
        "82 09  00 02  02 0B 07  00 01 'a' 2D",
    ),
    ("suback-v311", Suback(1, [1, 2, 0x80]), 4, SERVER, "90 05  00 01  01 02 80"),
    ("suback-v5", Suback(2, [0, 0x87]), 5, SERVER, "90 05  00 02  00  00 87"),
    # ------------------------------------------------------------------ UNSUBSCRIBE / UNSUBACK
    ("unsubscribe-v311", Unsubscribe(3, ["a/b"]), 4, CLIENT, "A2 07  00 03  00 03 'a/b'"),
    (
        "unsubscribe-v5-user-property",
        Unsubscribe(3, ["a"], {"user_property": [("x", "y")]}),
        5,
        CLIENT,
        "A2 0D  00 03  07 26 00 01 'x' 00 01 'y'  00 01 'a'",
    ),
    ("unsuback-v311", Unsuback(3), 4, SERVER, "B0 02 00 03"),
    ("unsuback-v5", Unsuback(3, [0, 0x11]), 5, SERVER, "B0 05  00 03  00  00 11"),
    # ------------------------------------------------------------------ PING, DISCONNECT, AUTH
    ("pingreq-v311", Pingreq(), 4, CLIENT, "C0 00"),
    ("pingresp-v311", Pingresp(), 4, SERVER, "D0 00"),
    ("pingreq-v5", Pingreq(), 5, CLIENT, "C0 00"),
    ("disconnect-v311", Disconnect(), 4, CLIENT, "E0 00"),
    ("disconnect-v31", Disconnect(), 3, CLIENT, "E0 00"),
    ("disconnect-v5-normal", Disconnect(), 5, CLIENT, "E0 00"),
    ("disconnect-v5-with-will", Disconnect(0x04), 5, CLIENT, "E0 01 04"),
    (
        "disconnect-v5-session-expiry",
        Disconnect(0, {"session_expiry_interval": 0}),
        5,
        CLIENT,
        "E0 07  00  05 11 00 00 00 00",
    ),
    ("disconnect-v5-server-shutting-down", Disconnect(0x8B), 5, SERVER, "E0 01 8B"),
    ("auth-v5-success", Auth(), 5, CLIENT, "F0 00"),
    (
        "auth-v5-continue",
        Auth(0x18, {"authentication_method": "SCRAM", "authentication_data": b"\x01"}),
        5,
        SERVER,
        "F0 0E  18  0C 15 00 05 'SCRAM' 16 00 01 01",
    ),
]


def _parser(direction: str, level: int, packet: Packet) -> Parser:
    if direction == SERVER:
        return Parser(server_side=False, protocol_level=level)
    if isinstance(packet, Connect):
        return Parser()  # must learn the level from CONNECT
    return Parser(protocol_level=level)


@pytest.mark.parametrize(
    ("packet", "level", "direction", "hexbytes"), [r[1:] for r in TABLE], ids=[r[0] for r in TABLE]
)
def test_encode_matches_spec_bytes(
    packet: Packet, level: int, direction: str, hexbytes: str
) -> None:
    assert encode(packet, level).hex(" ") == h(hexbytes).hex(" ")


@pytest.mark.parametrize(
    ("packet", "level", "direction", "hexbytes"), [r[1:] for r in TABLE], ids=[r[0] for r in TABLE]
)
def test_parse_spec_bytes(packet: Packet, level: int, direction: str, hexbytes: str) -> None:
    parser = _parser(direction, level, packet)
    assert parser.feed(h(hexbytes)) == [packet]
    assert parser.buffered == 0
    if isinstance(packet, Connect):
        assert parser.protocol_level == level


def test_fast_helpers_match_spec_bytes() -> None:
    assert encode_publish("a/b", b"hi", 0, False, False, None, None, 4) == h(
        "30 07 00 03 'a/b' 'hi'"
    )
    assert encode_publish(b"a/b", b"hi") == h("30 07 00 03 'a/b' 'hi'")
    assert encode_publish("t", b"x", 2, False, False, 0x1234, None, 4) == h(
        "34 06 00 01 't' 12 34 'x'"
    )
    assert encode_publish("a", b"x", protocol_level=5) == h("30 05 00 01 'a' 00 'x'")
    assert encode_publish("a", b"x", 1, True, False, 2, {"topic_alias": 3}, 5) == h(
        "33 0A 00 01 'a' 00 02 03 23 00 03 'x'"
    )
    assert encode_puback(7, 4) == h("40 02 00 07")
    assert encode_puback(7, 4, 0x87) == h("40 02 00 07")  # v3 has no reason code
    assert encode_puback(7, 5, 0x10) == h("40 03 00 07 10")
    assert encode_pubrec(0x0102, 5) == h("50 02 01 02")
    assert encode_pubrel(0x0102, 4) == h("62 02 01 02")
    assert encode_pubcomp(0x0102, 5, 0x92) == h("70 03 01 02 92")
    assert encode_connack(True, 0, 4) == h("20 02 01 00")
    assert encode_connack(True, 0, 3) == h("20 02 00 00")  # 3.1 has no session-present flag
    assert encode_connack(False, 0x86, 4) == h("20 02 00 04")  # mapped to the v3 return code
    assert encode_connack(False, 0x85, 3) == h("20 02 00 02")
    assert encode_connack(False, 0x87, 5) == h("20 03 00 87 00")
    assert encode_suback(1, [0, 0x87, 0xA2], 4) == h("90 05 00 01 00 80 80")  # v3 failure = 0x80
    assert encode_suback(1, [0, 0x87, 0xA2], 5) == h("90 06 00 01 00 00 87 A2")
    assert encode_unsuback(3, [0x11], 4) == h("B0 02 00 03")
    assert encode_unsuback(3, [0x11], 5) == h("B0 04 00 03 00 11")
    assert encode_disconnect(0x8E, 4) == h("E0 00")
    assert encode_disconnect(0x8E, 5) == h("E0 01 8E")
    assert encode_disconnect(0x8E, 5, {"reason_string": "x"}) == h("E0 06 8E 04 1F 00 01 'x'")


def test_four_byte_remaining_length() -> None:
    # 2,097,152 = 0x200000 -> 80 80 80 01 (the first 4-byte value, spec table 1.5.5)
    payload = b"\0" * (2_097_152 - 3)
    data = encode_publish("t", payload)
    assert data[:7] == h("30 80 80 80 01 00 01")
    parser = Parser(protocol_level=4)
    assert parser.feed(data) == [Publish("t", payload)]
