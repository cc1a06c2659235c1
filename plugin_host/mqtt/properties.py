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
from typing import Any

from plugin_host.mqtt.errors import MQTTError
from plugin_host.mqtt.packets import PacketType, Properties
from plugin_host.mqtt.primitives import (
    MAX_VARINT,
    decode_utf8,
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


# --------------------------------------------------------------------------------------- decode


def decode_properties(data: bytes, pos: int, end: int, context: int) -> tuple[Properties, int]:
    """Decode a property block (length prefix included) starting at ``data[pos]``.

    Returns ``(properties, position after the block)``. Enforces: known identifier allowed in
    ``context`` (else 0x81 malformed), value types and lengths (0x81), single-use properties at
    most once (0x82 protocol error), value ranges (0x82; topic alias 0 is 0x94).
    """
    length, pos = decode_varint(data, pos)
    stop = pos + length
    if stop > end:
        raise MQTTError(MALFORMED, "property length exceeds packet")
    props: Properties = {}
    if not length:
        return props, stop
    get = PROPERTIES_BY_ID.get
    while pos < stop:
        ident = data[pos]
        pos += 1
        spec = get(ident)
        if spec is None:
            raise MQTTError(MALFORMED, f"unknown property identifier {ident}")
        name = spec.name
        if context not in spec.allowed_in:
            raise MQTTError(MALFORMED, f"property {name} not allowed in {context_name(context)}")
        ptype = spec.type
        value: Any
        if ptype is _T.BYTE:
            if pos >= stop:
                raise MQTTError(MALFORMED, f"truncated property {name}")
            value = data[pos]
            pos += 1
        elif ptype is _T.TWO_BYTE_INT:
            if pos + 2 > stop:
                raise MQTTError(MALFORMED, f"truncated property {name}")
            value = (data[pos] << 8) | data[pos + 1]
            pos += 2
        elif ptype is _T.FOUR_BYTE_INT:
            if pos + 4 > stop:
                raise MQTTError(MALFORMED, f"truncated property {name}")
            value = int.from_bytes(data[pos : pos + 4], "big")
            pos += 4
        elif ptype is _T.VARINT:
            value, pos = decode_varint(data, pos)
            if pos > stop:
                raise MQTTError(MALFORMED, f"truncated property {name}")
        elif ptype is _T.UTF8_PAIR:
            key, pos = _read_string(data, pos, stop, name)
            val, pos = _read_string(data, pos, stop, name)
            pairs = props.get(name)
            if pairs is None:
                props[name] = [(key, val)]
            else:
                pairs.append((key, val))
            continue
        else:
            if pos + 2 > stop:
                raise MQTTError(MALFORMED, f"truncated property {name}")
            n = (data[pos] << 8) | data[pos + 1]
            pos += 2
            if pos + n > stop:
                raise MQTTError(MALFORMED, f"truncated property {name}")
            raw = data[pos : pos + n]
            pos += n
            value = decode_utf8(raw, f"property {name}") if ptype is _T.UTF8 else raw
        # Range rules (spec 3.x): value 0 for receive_maximum, maximum_packet_size,
        # subscription_identifier and topic_alias, or a flag other than 0/1, is a protocol error.
        if ptype <= _T.VARINT and value < spec.minimum:
            code = 0x94 if ident == 35 else PROTOCOL_ERROR
            raise MQTTError(code, f"property {name} must not be {value}")
        if spec.maximum is not None and value > spec.maximum:
            raise MQTTError(PROTOCOL_ERROR, f"property {name} must be 0 or 1, got {value}")
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
    if pos != stop:
        raise MQTTError(MALFORMED, "property block overruns its length")
    return props, stop


def _read_string(data: bytes, pos: int, stop: int, name: str) -> tuple[str, int]:
    if pos + 2 > stop:
        raise MQTTError(MALFORMED, f"truncated property {name}")
    n = (data[pos] << 8) | data[pos + 1]
    pos += 2
    if pos + n > stop:
        raise MQTTError(MALFORMED, f"truncated property {name}")
    return decode_utf8(data[pos : pos + n], f"property {name}"), pos + n


# --------------------------------------------------------------------------------------- encode


def _encode_int(spec: PropertySpec, value: Any) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"property {spec.name} must be an int, got {value!r}")
    ptype = spec.type
    if not spec.minimum <= value <= (spec.maximum if spec.maximum is not None else _INT_MAX[ptype]):
        raise ValueError(f"property {spec.name} out of range: {value}")
    if ptype is _T.BYTE:
        return bytes((spec.identifier, value))
    if ptype is _T.TWO_BYTE_INT:
        return bytes((spec.identifier, value >> 8, value & 0xFF))
    if ptype is _T.FOUR_BYTE_INT:
        return bytes((spec.identifier,)) + value.to_bytes(4, "big")
    return bytes((spec.identifier,)) + encode_varint(value)


def encode_property_block(props: Mapping[str, Any] | None, context: int) -> bytes:
    """Encode properties for ``context`` with the property length prefix (``b"\\x00"`` if none).

    Raises ``ValueError`` for an unknown property, one not allowed in ``context``, or a value of
    the wrong type or range (these are programming errors on the sending side).
    """
    if not props:
        return b"\x00"
    parts: list[bytes] = []
    for name, value in props.items():
        spec = PROPERTIES_BY_NAME.get(name)
        if spec is None:
            raise ValueError(f"unknown MQTT 5 property {name!r}")
        if context not in spec.allowed_in:
            raise ValueError(f"property {name} not allowed in {context_name(context)}")
        ptype = spec.type
        ident = bytes((spec.identifier,))
        if ptype is _T.UTF8_PAIR:
            for key, val in value:
                parts.append(ident + encode_utf8(key) + encode_utf8(val))
        elif ptype is _T.UTF8:
            if not isinstance(value, str):
                raise ValueError(f"property {name} must be a str, got {value!r}")
            parts.append(ident + encode_utf8(value))
        elif ptype is _T.BINARY:
            if not isinstance(value, bytes | bytearray | memoryview):
                raise ValueError(f"property {name} must be bytes, got {value!r}")
            parts.append(ident + encode_binary(bytes(value)))
        elif spec.identifier == 11 and not isinstance(value, int):
            # PUBLISH carries a list of subscription identifiers (one per matching subscription).
            parts.extend(_encode_int(spec, v) for v in value)
        else:
            parts.append(_encode_int(spec, value))
    body = b"".join(parts)
    return encode_varint(len(body)) + body
