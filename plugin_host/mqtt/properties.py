"""MQTT 5 properties: the 27 identifiers, their types, where each is allowed, and codecs.

Properties are exposed as ``dict[str, Any]`` keyed by the snake_case property name. Values are
``int`` for the integer types, ``str`` for UTF-8 strings, ``bytes`` for binary data, and:

* ``user_property``: ``list[tuple[str, str]]`` (ordered, duplicates kept);
* ``subscription_identifier``: ``list[int]`` in PUBLISH (it may repeat), ``int`` in SUBSCRIBE.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from struct import Struct
from typing import Any

from plugin_host.mqtt.errors import MQTTError
from plugin_host.mqtt.packets import PacketType, Properties
from plugin_host.mqtt.primitives import (
    MAX_VARINT,
    decode_varint,
    encode_binary,
    encode_utf8,
    encode_varint,
)

MALFORMED = 0x81
PROTOCOL_ERROR = 0x82

#: Property context for the will properties of CONNECT (packet types are 1..15).
WILL = 0


class PropertyType(IntEnum):
    """Data type of a property value on the wire."""

    BYTE = 1
    TWO_BYTE_INT = 2
    FOUR_BYTE_INT = 3
    VARINT = 4
    UTF8 = 5
    BINARY = 6
    UTF8_PAIR = 7


@dataclass(frozen=True, slots=True)
class PropertySpec:
    """Description of one MQTT 5 property."""

    identifier: int
    name: str
    type: PropertyType
    #: Packet types (and :data:`WILL`) the property may appear in.
    allowed_in: frozenset[int]
    #: Lowest allowed value for integers (values below are a protocol error).
    minimum: int = 0
    #: Highest allowed value for byte-sized flags (0/1 properties).
    maximum: int | None = None


_P = PacketType
_ACKS = (_P.PUBACK, _P.PUBREC, _P.PUBREL, _P.PUBCOMP)
_T = PropertyType


def _spec(
    ident: int,
    name: str,
    ptype: PropertyType,
    allowed: Iterable[int],
    minimum: int = 0,
    maximum: int | None = None,
) -> PropertySpec:
    return PropertySpec(ident, name, ptype, frozenset(int(a) for a in allowed), minimum, maximum)


PROPERTIES: tuple[PropertySpec, ...] = (
    _spec(1, "payload_format_indicator", _T.BYTE, (_P.PUBLISH, WILL), maximum=1),
    _spec(2, "message_expiry_interval", _T.FOUR_BYTE_INT, (_P.PUBLISH, WILL)),
    _spec(3, "content_type", _T.UTF8, (_P.PUBLISH, WILL)),
    _spec(8, "response_topic", _T.UTF8, (_P.PUBLISH, WILL)),
    _spec(9, "correlation_data", _T.BINARY, (_P.PUBLISH, WILL)),
    _spec(11, "subscription_identifier", _T.VARINT, (_P.PUBLISH, _P.SUBSCRIBE), minimum=1),
    _spec(17, "session_expiry_interval", _T.FOUR_BYTE_INT, (_P.CONNECT, _P.CONNACK, _P.DISCONNECT)),
    _spec(18, "assigned_client_identifier", _T.UTF8, (_P.CONNACK,)),
    _spec(19, "server_keep_alive", _T.TWO_BYTE_INT, (_P.CONNACK,)),
    _spec(21, "authentication_method", _T.UTF8, (_P.CONNECT, _P.CONNACK, _P.AUTH)),
    _spec(22, "authentication_data", _T.BINARY, (_P.CONNECT, _P.CONNACK, _P.AUTH)),
    _spec(23, "request_problem_information", _T.BYTE, (_P.CONNECT,), maximum=1),
    _spec(24, "will_delay_interval", _T.FOUR_BYTE_INT, (WILL,)),
    _spec(25, "request_response_information", _T.BYTE, (_P.CONNECT,), maximum=1),
    _spec(26, "response_information", _T.UTF8, (_P.CONNACK,)),
    _spec(28, "server_reference", _T.UTF8, (_P.CONNACK, _P.DISCONNECT)),
    _spec(
        31,
        "reason_string",
        _T.UTF8,
        (_P.CONNACK, *_ACKS, _P.SUBACK, _P.UNSUBACK, _P.DISCONNECT, _P.AUTH),
    ),
    _spec(33, "receive_maximum", _T.TWO_BYTE_INT, (_P.CONNECT, _P.CONNACK), minimum=1),
    _spec(34, "topic_alias_maximum", _T.TWO_BYTE_INT, (_P.CONNECT, _P.CONNACK)),
    _spec(35, "topic_alias", _T.TWO_BYTE_INT, (_P.PUBLISH,), minimum=1),
    _spec(36, "maximum_qos", _T.BYTE, (_P.CONNACK,), maximum=1),
    _spec(37, "retain_available", _T.BYTE, (_P.CONNACK,), maximum=1),
    _spec(
        38,
        "user_property",
        _T.UTF8_PAIR,
        (
            _P.CONNECT,
            _P.CONNACK,
            _P.PUBLISH,
            WILL,
            *_ACKS,
            _P.SUBSCRIBE,
            _P.SUBACK,
            _P.UNSUBSCRIBE,
            _P.UNSUBACK,
            _P.DISCONNECT,
            _P.AUTH,
        ),
    ),
    _spec(39, "maximum_packet_size", _T.FOUR_BYTE_INT, (_P.CONNECT, _P.CONNACK), minimum=1),
    _spec(40, "wildcard_subscription_available", _T.BYTE, (_P.CONNACK,), maximum=1),
    _spec(41, "subscription_identifier_available", _T.BYTE, (_P.CONNACK,), maximum=1),
    _spec(42, "shared_subscription_available", _T.BYTE, (_P.CONNACK,), maximum=1),
)

PROPERTIES_BY_ID: dict[int, PropertySpec] = {p.identifier: p for p in PROPERTIES}
PROPERTIES_BY_NAME: dict[str, PropertySpec] = {p.name: p for p in PROPERTIES}

#: Property names allowed in each context (packet type value, or :data:`WILL`).
ALLOWED_PROPERTIES: dict[int, frozenset[str]] = {
    ctx: frozenset(p.name for p in PROPERTIES if ctx in p.allowed_in)
    for ctx in (WILL, *(int(t) for t in PacketType))
}

# Integer ranges by wire type (for encoding checks).
_INT_MAX = {
    _T.BYTE: 0xFF,
    _T.TWO_BYTE_INT: 0xFFFF,
    _T.FOUR_BYTE_INT: 0xFFFF_FFFF,
    _T.VARINT: MAX_VARINT,
}

_CONTEXT_NAMES = {WILL: "will properties", **{int(t): t.name for t in PacketType}}


def context_name(context: int) -> str:
    """Human name of a property context, for error messages."""
    return _CONTEXT_NAMES.get(context, str(context))


# Compact lookup tables for the codecs (tuples/ints are faster than dataclass + enum lookups).
_K_BYTE, _K_U16, _K_U32, _K_VARINT, _K_STR, _K_BIN, _K_PAIR = range(7)
_KIND = {
    _T.BYTE: _K_BYTE,
    _T.TWO_BYTE_INT: _K_U16,
    _T.FOUR_BYTE_INT: _K_U32,
    _T.VARINT: _K_VARINT,
    _T.UTF8: _K_STR,
    _T.BINARY: _K_BIN,
    _T.UTF8_PAIR: _K_PAIR,
}
_Entry = tuple[str, int, frozenset[int], int, int]
# identifier -> (name, kind, allowed contexts, minimum, maximum)
_DECODE: tuple[_Entry | None, ...] = tuple(
    (
        (
            p.name,
            _KIND[p.type],
            p.allowed_in,
            p.minimum,
            p.maximum if p.maximum is not None else _INT_MAX.get(p.type, 0),
        )
        if p is not None
        else None
    )
    for p in (PROPERTIES_BY_ID.get(i) for i in range(256))
)
# name -> (identifier byte, kind, allowed contexts, minimum, maximum)
_ENCODE: dict[str, tuple[bytes, int, frozenset[int], int, int]] = {
    name: (bytes((p.identifier,)), *entry[1:])
    for name, p in PROPERTIES_BY_NAME.items()
    if (entry := _DECODE[p.identifier]) is not None
}
_PACK_BYTE = Struct("!BB").pack
_PACK_U16 = Struct("!BH").pack
_PACK_U32 = Struct("!BI").pack


# --------------------------------------------------------------------------------------- decode


def _truncated(name: str) -> MQTTError:
    return MQTTError(MALFORMED, f"truncated property {name}")


def decode_properties(data: bytes, pos: int, end: int, context: int) -> tuple[Properties, int]:
    """Decode a property block (length prefix included) starting at ``data[pos]``.

    Returns ``(properties, position after the block)``. Enforces: known identifier allowed in
    ``context`` (else 0x81 malformed), value types and lengths (0x81), strict UTF-8 without
    U+0000 (0x81), single-use properties at most once (0x82 protocol error), value ranges (0x82;
    topic alias 0 is 0x94).
    """
    try:
        return _decode_properties(data, pos, end, context)
    except UnicodeDecodeError:
        raise MQTTError(MALFORMED, "property string is not valid UTF-8") from None
    except IndexError:
        raise MQTTError(MALFORMED, "truncated property block") from None


def _decode_properties(data: bytes, pos: int, end: int, context: int) -> tuple[Properties, int]:
    length = data[pos]
    if length < 0x80:
        pos += 1
    else:
        length, pos = decode_varint(data, pos)
    stop = pos + length
    if stop > end:
        raise MQTTError(MALFORMED, "property length exceeds packet")
    props: Properties = {}
    table = _DECODE
    while pos < stop:
        ident = data[pos]
        entry = table[ident]
        if entry is None:
            raise MQTTError(MALFORMED, f"unknown property identifier {ident}")
        name, kind, allowed, lo, hi = entry
        if context not in allowed:
            raise MQTTError(MALFORMED, f"property {name} not allowed in {context_name(context)}")
        pos += 1
        value: Any
        if kind >= _K_STR:
            if pos + 2 > stop:
                raise _truncated(name)
            n = (data[pos] << 8) | data[pos + 1]
            pos += 2 + n
            if pos > stop:
                raise _truncated(name)
            if kind == _K_BIN:
                value = data[pos - n : pos]
            else:
                value = str(data[pos - n : pos], "utf-8")
                if "\x00" in value:
                    raise MQTTError(MALFORMED, f"property {name} contains U+0000")
                if kind == _K_PAIR:
                    if pos + 2 > stop:
                        raise _truncated(name)
                    n = (data[pos] << 8) | data[pos + 1]
                    pos += 2 + n
                    if pos > stop:
                        raise _truncated(name)
                    second = str(data[pos - n : pos], "utf-8")
                    if "\x00" in second:
                        raise MQTTError(MALFORMED, f"property {name} contains U+0000")
                    pairs = props.get(name)
                    if pairs is None:
                        props[name] = [(value, second)]
                    else:
                        pairs.append((value, second))
                    continue
        else:
            if kind == _K_U32:
                value = int.from_bytes(data[pos : pos + 4], "big")
                pos += 4
            elif kind == _K_BYTE:
                value = data[pos] if pos < stop else 0
                pos += 1
            elif kind == _K_U16:
                value = int.from_bytes(data[pos : pos + 2], "big")
                pos += 2
            else:
                value, pos = decode_varint(data, pos)
            if pos > stop:
                raise _truncated(name)
            # Range rules (spec 3.x): 0 for receive_maximum, maximum_packet_size,
            # subscription_identifier and topic_alias, or a flag other than 0/1, is an error.
            if not lo <= value <= hi:
                code = 0x94 if ident == 35 else PROTOCOL_ERROR
                raise MQTTError(code, f"property {name} must not be {value}")
            if ident == 11 and context == PacketType.PUBLISH:
                ids = props.get(name)
                if ids is None:
                    props[name] = [value]
                else:
                    ids.append(value)
                continue
        if name in props:
            raise MQTTError(PROTOCOL_ERROR, f"property {name} included more than once")
        props[name] = value
    return props, stop


# --------------------------------------------------------------------------------------- encode


def encode_property_block(props: Mapping[str, Any] | None, context: int) -> bytes:
    """Encode properties for ``context`` with the property length prefix (``b"\\x00"`` if none).

    Raises ``ValueError`` for an unknown property, one not allowed in ``context``, or a value of
    the wrong type or range (these are programming errors on the sending side).
    """
    if not props:
        return b"\x00"
    out = bytearray()
    for name, value in props.items():
        entry = _ENCODE.get(name)
        if entry is None:
            raise ValueError(f"unknown MQTT 5 property {name!r}")
        ident, kind, allowed, lo, hi = entry
        if context not in allowed:
            raise ValueError(f"property {name} not allowed in {context_name(context)}")
        if kind == _K_PAIR:
            for key, val in value:
                if type(key) is not str or type(val) is not str:
                    raise ValueError(f"property {name} needs (str, str) pairs, got {value!r}")
                out += ident
                out += encode_utf8(key)
                out += encode_utf8(val)
        elif kind == _K_STR:
            if not isinstance(value, str):
                raise ValueError(f"property {name} must be a str, got {value!r}")
            out += ident
            out += encode_utf8(value)
        elif kind == _K_BIN:
            if not isinstance(value, bytes | bytearray | memoryview):
                raise ValueError(f"property {name} must be bytes, got {value!r}")
            out += ident
            out += encode_binary(bytes(value))
        else:
            # PUBLISH carries a list of subscription identifiers (one per matching subscription).
            values = value if kind == _K_VARINT and not isinstance(value, int) else (value,)
            for v in values:
                if type(v) is not int or not lo <= v <= hi:
                    raise ValueError(f"property {name}: bad value {v!r}")
                if kind == _K_U32:
                    out += _PACK_U32(ident[0], v)
                elif kind == _K_BYTE:
                    out += _PACK_BYTE(ident[0], v)
                elif kind == _K_U16:
                    out += _PACK_U16(ident[0], v)
                else:
                    out += ident
                    out += encode_varint(v)
    n = len(out)
    return (bytes((n,)) if n < 128 else encode_varint(n)) + out
