"""Malformed-input corpus: every bad packet raises MQTTError with the right reason code.

Rows: (id, parser state, bytes, expected reason code). Parser states: "pre" = fresh server-side
parser (expects CONNECT), "s3"/"s4"/"s5" = server side after CONNECT at that level, "c3"/"c4"/
"c5" = client side at that level. Bytes are hand-written hex ('quoted' runs are ASCII).
"""

from __future__ import annotations

import pytest

from plugin_host.mqtt import MQTTError, Parser, Publish, encode_publish

MALFORMED = 0x81
PROTOCOL_ERROR = 0x82
UNSUPPORTED_VERSION = 0x84
TOPIC_NAME_INVALID = 0x90
TOPIC_ALIAS_INVALID = 0x94
PACKET_TOO_LARGE = 0x95
PAYLOAD_FORMAT_INVALID = 0x99


def h(text: str) -> bytes:
    out = bytearray()
    for token in text.split():
        out += token.strip("'").encode() if token.startswith("'") else bytes.fromhex(token)
    return bytes(out)


def make_parser(state: str, max_packet_size: int | None = None) -> Parser:
    if state == "pre":
        return Parser(max_packet_size=max_packet_size)
    level = int(state[1])
    return Parser(
        server_side=state[0] == "s", protocol_level=level, max_packet_size=max_packet_size
    )


CONNECT5 = "00 04 'MQTT' 05"  # protocol name + level, for v5 CONNECT bodies
CONNECT4 = "00 04 'MQTT' 04"

CORPUS: list[tuple[str, str, str, int]] = [
    # --- remaining length / truncation inside the packet
    ("remaining-length-5-bytes", "s4", "30 FF FF FF FF", MALFORMED),
    ("remaining-length-5-bytes-pre", "pre", "10 80 80 80 80", MALFORMED),
    ("publish-topic-longer-than-packet", "s4", "30 02 00 05", MALFORMED),
    ("publish-rl-1", "s4", "30 01 00", MALFORMED),
    ("publish-qos1-missing-packet-id", "s4", "32 03 00 01 'a'", MALFORMED),
    ("publish-v5-missing-property-length", "s5", "30 03 00 01 'a'", MALFORMED),
    ("puback-truncated", "s4", "40 01 00", MALFORMED),
    ("puback-v311-trailing-byte", "s4", "40 03 00 01 00", MALFORMED),
    ("pingreq-with-body", "s4", "C0 01 00", MALFORMED),
    ("pingresp-with-body", "c5", "D0 01 00", MALFORMED),
    ("disconnect-v311-with-body", "s4", "E0 01 00", MALFORMED),
    ("unsuback-v311-with-codes", "c4", "B0 03 00 01 00", MALFORMED),
    ("connack-v311-length-3", "c4", "20 03 00 00 00", MALFORMED),
    ("connack-v5-no-property-length", "c5", "20 02 00 00", MALFORMED),
    ("connect-truncated-client-id", "pre", f"10 0E {CONNECT4} 02 00 3C 00 05 'ab'", MALFORMED),
    ("connect-trailing-bytes", "pre", f"10 0E {CONNECT4} 02 00 3C 00 01 'a' 00", MALFORMED),
    ("property-length-beyond-packet", "s5", "30 06 00 01 'a' 09 01 01", MALFORMED),
    ("property-value-truncated", "s5", "30 06 00 01 'a' 02 02 00", MALFORMED),
    ("subscribe-missing-options", "s4", "82 06 00 01 00 02 'a/'", MALFORMED),
    # --- fixed header flags and reserved packet types
    ("publish-qos3", "s4", "36 03 00 01 'a'", MALFORMED),
    ("publish-qos3-v5", "c5", "37 04 00 01 'a' 00", MALFORMED),
    ("publish-dup-at-qos0", "s4", "38 03 00 01 'a'", MALFORMED),
    ("pubrel-flags-0", "s4", "60 02 00 01", MALFORMED),
    ("subscribe-flags-0", "s4", "80 06 00 01 00 01 'a' 00", MALFORMED),
    ("unsubscribe-flags-0", "s4", "A0 05 00 01 00 01 'a'", MALFORMED),
    ("puback-flags-set", "s4", "42 02 00 01", MALFORMED),
    ("pingreq-flags-set", "s5", "C1 00", MALFORMED),
    ("connect-flags-set", "pre", f"11 0D {CONNECT4} 02 00 3C 00 01 'a'", MALFORMED),
    ("disconnect-flags-set", "s5", "E8 00", MALFORMED),
    ("reserved-type-0", "s4", "00 00", MALFORMED),
    ("auth-in-v311", "s4", "F0 00", MALFORMED),
    # --- reserved bits in the variable header / payload
    ("connect-reserved-flag", "pre", f"10 0D {CONNECT4} 03 00 3C 00 01 'a'", MALFORMED),
    ("connack-reserved-flags", "c4", "20 02 02 00", MALFORMED),
    ("subscribe-v311-reserved-qos-bits", "s4", "82 06 00 01 00 01 'a' 04", MALFORMED),
    ("subscribe-v311-qos3", "s4", "82 06 00 01 00 01 'a' 03", MALFORMED),
    ("subscribe-v5-reserved-option-bits", "s5", "82 07 00 01 00 00 01 'a' 40", MALFORMED),
    ("subscribe-v5-qos3", "s5", "82 07 00 01 00 00 01 'a' 03", MALFORMED),
    ("subscribe-v5-retain-handling-3", "s5", "82 07 00 01 00 00 01 'a' 30", PROTOCOL_ERROR),
    ("subscribe-v5-no-local-shared", "s5", "82 10 00 01 00 00 0A '$share/g/a' 04", PROTOCOL_ERROR),
    # --- will flags
    ("will-qos-without-will-flag", "pre", f"10 0D {CONNECT4} 0A 00 3C 00 01 'a'", MALFORMED),
    ("will-retain-without-will-flag", "pre", f"10 0D {CONNECT4} 22 00 3C 00 01 'a'", MALFORMED),
    (
        "will-qos3",
        "pre",
        f"10 12 {CONNECT4} 1E 00 3C 00 01 'a' 00 01 't' 00 00",
        MALFORMED,
    ),
    (
        "will-topic-wildcard-v5",
        "pre",
        f"10 14 {CONNECT5} 06 00 3C 00 00 01 'a' 00 00 01 '#' 00 00",
        TOPIC_NAME_INVALID,
    ),
    (
        "password-without-username-v311",
        "pre",
        f"10 11 {CONNECT4} 42 00 3C 00 01 'a' 00 02 'pw'",
        PROTOCOL_ERROR,
    ),
    # --- protocol name / level
    ("unsupported-level-6", "pre", "10 0D 00 04 'MQTT' 06 02 00 3C 00 01 'a'", UNSUPPORTED_VERSION),
    (
        "unsupported-bridge-level-133",
        "pre",
        "10 0D 00 04 'MQTT' 85 02 00 3C 00 01 'a'",
        UNSUPPORTED_VERSION,
    ),
    ("unknown-protocol-name", "pre", "10 0D 00 04 'MQTX' 04 02 00 3C 00 01 'a'", PROTOCOL_ERROR),
    ("name-level-mismatch", "pre", "10 0D 00 04 'MQTT' 03 02 00 3C 00 01 'a'", UNSUPPORTED_VERSION),
    # --- UTF-8 rules
    ("topic-invalid-utf8", "s4", "30 04 00 02 C3 28", MALFORMED),
    ("topic-surrogate", "s4", "30 05 00 03 ED A0 80", MALFORMED),
    ("topic-nul", "s4", "30 05 00 03 'a' 00 'b'", MALFORMED),
    ("topic-nul-v5", "s5", "30 06 00 03 'a' 00 'b' 00", MALFORMED),
    ("topic-overlong-utf8", "s5", "30 05 00 02 C0 AF 00", MALFORMED),
    ("client-id-invalid-utf8", "pre", f"10 0E {CONNECT4} 02 00 3C 00 02 C3 28", MALFORMED),
    ("client-id-nul", "pre", f"10 0D {CONNECT4} 02 00 3C 00 01 00", MALFORMED),
    ("username-invalid-utf8", "pre", f"10 10 {CONNECT4} 82 00 3C 00 01 'a' 00 01 FF", MALFORMED),
    ("subscribe-filter-invalid-utf8", "s4", "82 06 00 01 00 01 FF 00", MALFORMED),
    ("unsubscribe-filter-nul", "s5", "A2 06 00 01 00 00 01 00", MALFORMED),
    (
        "user-property-nul",
        "s5",
        "30 0B 00 01 'a' 07 26 00 01 'k' 00 01 00",
        MALFORMED,
    ),
    ("reason-string-invalid-utf8", "c5", "40 08 00 01 80 04 1F 00 01 FE", MALFORMED),
    # --- properties not allowed, unknown, duplicated, out of range
    ("session-expiry-in-publish", "s5", "30 09 00 01 'a' 05 11 00 00 00 01", MALFORMED),
    ("topic-alias-in-connect", "pre", f"10 10 {CONNECT5} 02 00 3C 03 23 00 01 00 00", MALFORMED),
    (
        "will-delay-in-connect-props",
        "pre",
        f"10 12 {CONNECT5} 02 00 3C 05 18 00 00 00 01 00 00",
        MALFORMED,
    ),
    ("reason-string-in-publish", "s5", "30 08 00 01 'a' 04 1F 00 01 'x'", MALFORMED),
    ("unknown-property-id", "s5", "30 06 00 01 'a' 02 7F 00", MALFORMED),
    ("property-id-multibyte", "s5", "30 07 00 01 'a' 03 80 01 00", MALFORMED),
    ("maximum-qos-in-connect", "pre", f"10 0F {CONNECT5} 02 00 3C 02 24 00 00 00", MALFORMED),
    (
        "duplicate-message-expiry",
        "s5",
        "30 0E 00 01 'a' 0A 02 00 00 00 01 02 00 00 00 02",
        PROTOCOL_ERROR,
    ),
    (
        "duplicate-receive-maximum",
        "pre",
        f"10 13 {CONNECT5} 02 00 3C 06 21 00 01 21 00 02 00 00",
        PROTOCOL_ERROR,
    ),
    ("duplicate-topic-alias", "s5", "30 0A 00 01 'a' 06 23 00 01 23 00 01", PROTOCOL_ERROR),
    (
        "duplicate-subscription-identifier-in-subscribe",
        "s5",
        "82 0B 00 01 04 0B 01 0B 02 00 01 'a' 00",
        PROTOCOL_ERROR,
    ),
    (
        "duplicate-reason-string",
        "c5",
        "40 0C 00 01 80 08 1F 00 01 'x' 1F 00 01 'y'",
        PROTOCOL_ERROR,
    ),
    ("receive-maximum-0", "pre", f"10 10 {CONNECT5} 02 00 3C 03 21 00 00 00 00", PROTOCOL_ERROR),
    (
        "maximum-packet-size-0",
        "pre",
        f"10 12 {CONNECT5} 02 00 3C 05 27 00 00 00 00 00 00",
        PROTOCOL_ERROR,
    ),
    ("subscription-identifier-0", "s5", "82 09 00 01 02 0B 00 00 01 'a' 00", PROTOCOL_ERROR),
    ("topic-alias-0", "s5", "30 07 00 01 'a' 03 23 00 00", TOPIC_ALIAS_INVALID),
    (
        "request-problem-information-2",
        "pre",
        f"10 0F {CONNECT5} 02 00 3C 02 17 02 00 00",
        PROTOCOL_ERROR,
    ),
    ("payload-format-indicator-2", "s5", "30 06 00 01 'a' 02 01 02", PROTOCOL_ERROR),
    ("maximum-qos-2", "c5", "20 05 00 00 02 24 02", PROTOCOL_ERROR),
    (
        "authentication-data-without-method",
        "pre",
        f"10 11 {CONNECT5} 02 00 3C 04 16 00 01 'x' 00 00",
        PROTOCOL_ERROR,
    ),
    ("subscription-identifier-from-client", "s5", "30 06 00 01 'a' 02 0B 01", PROTOCOL_ERROR),
    ("server-reference-from-client", "s5", "E0 07 9C 05 1C 00 02 'h1'", PROTOCOL_ERROR),
    ("session-expiry-from-server", "c5", "E0 07 00 05 11 00 00 00 01", PROTOCOL_ERROR),
    ("response-topic-wildcard", "s5", "30 09 00 01 'a' 05 08 00 02 'a#'", PROTOCOL_ERROR),
    # --- reason codes not allowed on the packet
    ("puback-reason-0x92", "c5", "40 03 00 01 92", MALFORMED),
    ("pubrel-reason-0x10", "s5", "62 03 00 01 10", MALFORMED),
    ("connack-v5-reason-0x01", "c5", "20 03 00 01 00", MALFORMED),
    ("connack-v311-return-code-6", "c4", "20 02 00 06", MALFORMED),
    ("suback-v311-code-3", "c4", "90 03 00 01 03", MALFORMED),
    ("suback-v5-code-0x11", "c5", "90 04 00 01 00 11", MALFORMED),
    ("unsuback-v5-code-0x01", "c5", "B0 04 00 01 00 01", MALFORMED),
    ("disconnect-v5-code-0x01", "s5", "E0 01 01", MALFORMED),
    ("auth-code-0x87", "s5", "F0 01 87", MALFORMED),
    ("connack-session-present-with-failure", "c4", "20 02 01 05", PROTOCOL_ERROR),
    # --- packet identifiers, empty payloads, topics
    ("publish-qos1-packet-id-0", "s4", "32 05 00 01 'a' 00 00", PROTOCOL_ERROR),
    ("publish-v5-qos2-packet-id-0", "s5", "34 06 00 01 'a' 00 00 00", PROTOCOL_ERROR),
    ("puback-packet-id-0", "s4", "40 02 00 00", PROTOCOL_ERROR),
    ("pubrel-v5-packet-id-0", "s5", "62 02 00 00", PROTOCOL_ERROR),
    ("subscribe-packet-id-0", "s4", "82 06 00 00 00 01 'a' 00", PROTOCOL_ERROR),
    ("unsubscribe-packet-id-0", "s4", "A2 05 00 00 00 01 'a'", PROTOCOL_ERROR),
    ("suback-packet-id-0", "c4", "90 03 00 00 00", PROTOCOL_ERROR),
    ("subscribe-empty-payload", "s4", "82 02 00 01", PROTOCOL_ERROR),
    ("subscribe-v5-empty-payload", "s5", "82 03 00 01 00", PROTOCOL_ERROR),
    ("unsubscribe-empty-payload", "s4", "A2 02 00 01", PROTOCOL_ERROR),
    ("unsubscribe-v5-empty-payload", "s5", "A2 03 00 01 00", PROTOCOL_ERROR),
    ("suback-empty-payload", "c4", "90 02 00 01", PROTOCOL_ERROR),
    ("publish-topic-plus-v311", "s4", "30 05 00 03 'a/+'", MALFORMED),
    ("publish-topic-hash-v31", "s3", "30 03 00 01 '#'", MALFORMED),
    ("publish-topic-hash-v5", "s5", "30 06 00 03 'a/#' 00", TOPIC_NAME_INVALID),
    ("publish-topic-plus-v5-client-side", "c5", "30 04 00 01 '+' 00", TOPIC_NAME_INVALID),
    ("publish-empty-topic-v311", "s4", "30 02 00 00", MALFORMED),
    ("publish-empty-topic-no-alias-v5", "s5", "30 03 00 00 00", PROTOCOL_ERROR),
    (
        "publish-empty-topic-props-but-no-alias-v5",
        "s5",
        "30 08 00 00 05 02 00 00 00 01",
        PROTOCOL_ERROR,
    ),
    ("payload-format-invalid", "s5", "30 07 00 01 'a' 02 01 01 FF", PAYLOAD_FORMAT_INVALID),
    (
        "will-payload-format-invalid",
        "pre",
        f"10 17 {CONNECT5} 06 00 3C 00 00 01 'a' 02 01 01 00 01 't' 00 01 FF",
        PAYLOAD_FORMAT_INVALID,
    ),
    # --- packets from the wrong side / in the wrong state
    ("first-packet-not-connect", "pre", "30 03 00 01 'a'", PROTOCOL_ERROR),
    ("pingreq-before-connect", "pre", "C0 00", PROTOCOL_ERROR),
    ("second-connect", "s4", f"10 0D {CONNECT4} 02 00 3C 00 01 'a'", PROTOCOL_ERROR),
    ("connack-from-client", "s4", "20 02 00 00", PROTOCOL_ERROR),
    ("suback-from-client", "s5", "90 03 00 01 00", PROTOCOL_ERROR),
    ("unsuback-from-client", "s4", "B0 02 00 01", PROTOCOL_ERROR),
    ("pingresp-from-client", "s3", "D0 00", PROTOCOL_ERROR),
    ("connect-from-server", "c4", f"10 0D {CONNECT4} 02 00 3C 00 01 'a'", PROTOCOL_ERROR),
    ("subscribe-from-server", "c5", "82 07 00 01 00 00 01 'a' 00", PROTOCOL_ERROR),
    ("unsubscribe-from-server", "c4", "A2 05 00 01 00 01 'a'", PROTOCOL_ERROR),
    ("pingreq-from-server", "c4", "C0 00", PROTOCOL_ERROR),
    ("disconnect-from-server-v311", "c4", "E0 00", PROTOCOL_ERROR),
]


# Rows whose fixed header is deliberately not a 1-byte remaining length matching the data.
NOT_FRAMED = {"remaining-length-5-bytes", "remaining-length-5-bytes-pre"}


@pytest.mark.parametrize(
    ("hexbytes", "name"),
    [(r[2], r[0]) for r in CORPUS if r[0] not in NOT_FRAMED],
    ids=[r[0] for r in CORPUS if r[0] not in NOT_FRAMED],
)
def test_corpus_rows_are_framed(hexbytes: str, name: str) -> None:
    """Each row's remaining length matches its bytes, so the row tests the defect it names
    rather than a framing slip (a too-long length would just wait for more data)."""
    data = h(hexbytes)
    if len(data) > 129:
        return
    assert data[1] == len(data) - 2, name


@pytest.mark.parametrize(
    ("state", "hexbytes", "code"), [r[1:] for r in CORPUS], ids=[r[0] for r in CORPUS]
)
def test_malformed_whole(state: str, hexbytes: str, code: int) -> None:
    with pytest.raises(MQTTError) as info:
        make_parser(state).feed(h(hexbytes))
    assert info.value.reason_code == code, info.value


@pytest.mark.parametrize(
    ("state", "hexbytes", "code"), [r[1:] for r in CORPUS], ids=[r[0] for r in CORPUS]
)
def test_malformed_byte_by_byte(state: str, hexbytes: str, code: int) -> None:
    parser = make_parser(state)
    data = h(hexbytes)
    with pytest.raises(MQTTError) as info:
        for i in range(len(data)):
            assert parser.feed(data[i : i + 1]) == []
    assert info.value.reason_code == code


def test_remaining_length_detected_at_fifth_byte() -> None:
    parser = Parser(protocol_level=4)
    assert parser.feed(h("30 FF FF FF")) == []  # still a valid prefix (4-byte maximum)
    with pytest.raises(MQTTError) as info:
        parser.feed(h("FF"))  # the 4th length byte continues: no 5th byte is ever allowed
    assert info.value.reason_code == MALFORMED


def test_max_remaining_length_is_not_an_error() -> None:
    parser = Parser(protocol_level=4)
    assert parser.feed(h("30 FF FF FF 7F")) == []  # 268,435,455: waits for the body


def test_bad_first_byte_detected_immediately() -> None:
    with pytest.raises(MQTTError) as info:
        Parser().feed(h("20"))  # one byte is enough to see it is not a CONNECT
    assert info.value.reason_code == PROTOCOL_ERROR
    with pytest.raises(MQTTError) as info:
        Parser(protocol_level=4).feed(h("36"))
    assert info.value.reason_code == MALFORMED


@pytest.mark.parametrize("chunk", ["30 FF 01", "30 FF", "30 81 01"])
def test_packet_too_large_before_body(chunk: str) -> None:
    parser = Parser(protocol_level=4, max_packet_size=100)
    data = h(chunk)
    if data[1] == 0xFF and len(data) == 2:
        # the remaining length is incomplete: nothing to judge yet
        assert parser.feed(data) == []
        data = h("01")
    with pytest.raises(MQTTError) as info:
        parser.feed(data)  # only the fixed header: the body never arrives
    assert info.value.reason_code == PACKET_TOO_LARGE


def test_packet_size_limit_counts_whole_packet() -> None:
    packet = encode_publish("t", b"x" * 10)  # 2 + 3 + 10 = 15 bytes
    assert Parser(protocol_level=4, max_packet_size=15).feed(packet) == [Publish("t", b"x" * 10)]
    with pytest.raises(MQTTError) as info:
        Parser(protocol_level=4, max_packet_size=14).feed(packet)
    assert info.value.reason_code == PACKET_TOO_LARGE


def test_max_packet_size_is_mutable() -> None:
    parser = Parser(protocol_level=4)
    packet = encode_publish("t", b"x" * 10)
    assert len(parser.feed(packet)) == 1
    parser.max_packet_size = 10
    with pytest.raises(MQTTError) as info:
        parser.feed(packet)
    assert info.value.reason_code == PACKET_TOO_LARGE


def test_parser_stays_failed_and_keeps_earlier_packets() -> None:
    parser = Parser(protocol_level=4)
    good = encode_publish("a", b"1")
    with pytest.raises(MQTTError) as info:
        parser.feed(good + good + h("36 00"))
    assert info.value.parsed == [Publish("a", b"1"), Publish("a", b"1")]
    with pytest.raises(MQTTError) as again:
        parser.feed(good)
    assert again.value is info.value


def test_level_known_even_when_connect_is_bad() -> None:
    parser = Parser()
    with pytest.raises(MQTTError):
        parser.feed(h(f"10 0D {CONNECT5} 03 00 3C 00 01 'a'"))  # reserved flag set
    assert parser.protocol_level == 5  # the broker can answer with a v5 CONNACK


def test_password_without_username_allowed_in_v5() -> None:
    packets = Parser().feed(h(f"10 12 {CONNECT5} 42 00 3C 00 00 01 'a' 00 02 'pw'"))
    assert packets[0].password == b"pw"  # type: ignore[union-attr]
    assert packets[0].username is None  # type: ignore[union-attr]


def test_truncated_stream_is_not_an_error() -> None:
    parser = Parser(protocol_level=4)
    data = encode_publish("a/b", b"payload")
    assert parser.feed(data[:-1]) == []
    assert parser.buffered == len(data) - 1
    assert parser.feed(data[-1:]) == [Publish("a/b", b"payload")]
    assert parser.buffered == 0


def test_client_parser_needs_a_level() -> None:
    with pytest.raises(RuntimeError):
        Parser(server_side=False).feed(b"\x20\x02\x00\x00")
