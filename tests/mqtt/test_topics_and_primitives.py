"""Topic name/filter rules, shared subscriptions, variable byte integers, property tables."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin_host.mqtt import (
    ALLOWED_PROPERTIES,
    PROPERTIES,
    WILL,
    ConnackReturnCode,
    MQTTError,
    PacketType,
    ReasonCode,
    decode_varint,
    encode_property_block,
    encode_varint,
    has_wildcards,
    is_dollar_topic,
    is_shared,
    is_sys_topic,
    split_shared,
    v3_connack_return_code,
    validate_topic_filter,
    validate_topic_name,
    varint_size,
)

# ------------------------------------------------------------------------------ topics


@pytest.mark.parametrize(
    "topic", ["a", "a/b", "/", "//", "/a/", "$SYS/x", "a b", "ü/€/😀", "a" * 65535]
)
def test_valid_topic_names(topic: str) -> None:
    validate_topic_name(topic)


@pytest.mark.parametrize("topic", ["", "a/+", "+", "#", "a/#", "a+b", "a#", "a\x00b", "€" * 21846])
def test_invalid_topic_names(topic: str) -> None:
    with pytest.raises(MQTTError) as info:
        validate_topic_name(topic)
    assert info.value.reason_code == 0x90


@pytest.mark.parametrize(
    "topic_filter",
    [
        "#",
        "+",
        "a/#",
        "a/+",
        "+/+",
        "+/#",
        "/#",
        "a//+/",
        "$SYS/#",
        "sport/tennis/+/stats",
        "$share/g/a/b",
        "$share/g/#",
        "$share/g/+",
        "$share/g//",
        "$share",
        "$sharex/+",
    ],
)
def test_valid_topic_filters(topic_filter: str) -> None:
    validate_topic_filter(topic_filter)


@pytest.mark.parametrize(
    "topic_filter",
    [
        "",
        "a#",
        "#/a",
        "a/#/b",
        "a/b#",
        "a+",
        "+a/b",
        "a/b+/c",
        "##",
        "a\x00",
        "$share/",
        "$share//a",
        "$share/g",
        "$share/g/",
        "$share/g+/a",
        "$share/#/a",
        "$share/g/a#",
        "$share/g/a+",
    ],
)
def test_invalid_topic_filters(topic_filter: str) -> None:
    with pytest.raises(MQTTError) as info:
        validate_topic_filter(topic_filter)
    assert info.value.reason_code == 0x8F


def test_split_shared() -> None:
    assert split_shared("a/b") is None
    assert split_shared("$share/grp/a/+/c") == ("grp", "a/+/c")
    assert split_shared("$share/g/#") == ("g", "#")
    assert split_shared("$share/g//") == ("g", "/")
    for bad in ("$share/", "$share//x", "$share/g", "$share/g/", "$share/g#/x", "$share/g/a/#/b"):
        with pytest.raises(MQTTError) as info:
            split_shared(bad)
        assert info.value.reason_code == 0x8F


def test_topic_predicates() -> None:
    assert is_sys_topic("$SYS") and is_sys_topic("$SYS/broker/uptime")
    assert not is_sys_topic("$SYSX/a") and not is_sys_topic("a/$SYS")
    assert is_dollar_topic("$foo") and not is_dollar_topic("foo")
    assert is_shared("$share/g/a") and not is_shared("$shared/a")
    assert has_wildcards("a/+") and has_wildcards("#") and not has_wildcards("a/b")


# ------------------------------------------------------------------------------ varints

VARINT_TABLE = [  # spec section 1.5.5, table 1-1 boundaries
    (0, "00"),
    (127, "7F"),
    (128, "80 01"),
    (16_383, "FF 7F"),
    (16_384, "80 80 01"),
    (2_097_151, "FF FF 7F"),
    (2_097_152, "80 80 80 01"),
    (268_435_455, "FF FF FF 7F"),
]


@pytest.mark.parametrize(("value", "hexbytes"), VARINT_TABLE)
def test_varint_spec_table(value: int, hexbytes: str) -> None:
    raw = bytes.fromhex(hexbytes)
    assert encode_varint(value) == raw
    assert varint_size(value) == len(raw)
    assert decode_varint(b"\xaa" + raw + b"\xbb", 1) == (value, 1 + len(raw))


@given(st.integers(0, 268_435_455))
def test_varint_roundtrip(value: int) -> None:
    raw = encode_varint(value)
    assert decode_varint(raw) == (value, len(raw))


@pytest.mark.parametrize("value", [-1, 268_435_456])
def test_varint_out_of_range(value: int) -> None:
    with pytest.raises(ValueError):
        encode_varint(value)


@pytest.mark.parametrize("hexbytes", ["", "80", "FF FF FF", "FF FF FF FF", "80 80 80 80 01"])
def test_varint_bad(hexbytes: str) -> None:
    with pytest.raises(MQTTError) as info:
        decode_varint(bytes.fromhex(hexbytes))
    assert info.value.reason_code == 0x81


# ------------------------------------------------------------------------------ tables


def test_property_table_is_complete() -> None:
    assert len(PROPERTIES) == 27
    ids = [p.identifier for p in PROPERTIES]
    assert ids == [1, 2, 3, 8, 9, 11, 17, 18, 19, 21, 22, 23, 24, 25, 26, 28, 31, *range(33, 43)]
    assert "user_property" in ALLOWED_PROPERTIES[PacketType.AUTH]
    assert "user_property" in ALLOWED_PROPERTIES[WILL]
    assert ALLOWED_PROPERTIES[PacketType.PINGREQ] == frozenset()
    assert "will_delay_interval" in ALLOWED_PROPERTIES[WILL]
    assert "will_delay_interval" not in ALLOWED_PROPERTIES[PacketType.CONNECT]


def test_encode_property_block_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        encode_property_block({"nope": 1}, PacketType.PUBLISH)
    with pytest.raises(ValueError):
        encode_property_block({"session_expiry_interval": 1}, PacketType.PUBLISH)
    with pytest.raises(ValueError):
        encode_property_block({"receive_maximum": 0}, PacketType.CONNECT)
    with pytest.raises(ValueError):
        encode_property_block({"content_type": b"x"}, PacketType.PUBLISH)
    assert encode_property_block({}, PacketType.PUBLISH) == b"\x00"


def test_reason_codes() -> None:
    assert ReasonCode.PACKET_TOO_LARGE == 0x95
    assert ReasonCode.NORMAL_DISCONNECTION == ReasonCode.SUCCESS == 0
    assert ReasonCode.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED == 0xA2
    assert len({int(c) for c in ReasonCode}) == 43
    assert v3_connack_return_code(0x86) is ConnackReturnCode.BAD_USERNAME_OR_PASSWORD
    assert v3_connack_return_code(0x84) is ConnackReturnCode.UNACCEPTABLE_PROTOCOL_VERSION
    assert v3_connack_return_code(0x81) is None


def test_error_str() -> None:
    err = MQTTError(0x95, "too big")
    assert str(err) == "too big (reason code 0x95)"
    assert err.reason_code == 0x95 and err.parsed == []
