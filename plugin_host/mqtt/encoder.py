"""Serialise packets to bytes: :func:`encode` for every packet, fast paths for the hot ones.

Encoding errors (a value out of range, a property not allowed on the packet, a packet that does
not exist in the protocol level) are programming errors and raise ``ValueError``. Fields that do
not exist in the target protocol level are not encoded (e.g. v5 reason codes and properties
of acks for a v3.1.1 peer); SUBACK failure codes become 0x80 for MQTT 3.x.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from struct import Struct
from typing import Any

from plugin_host.mqtt.packets import (
    MQTT_3_1,
    MQTT_5,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
)
from plugin_host.mqtt.primitives import (
    MAX_VARINT,
    encode_binary,
    encode_utf8,
    encode_varint,
    varint_size,
)
from plugin_host.mqtt.properties import WILL, encode_property_block
from plugin_host.mqtt.reason_codes import v3_connack_return_code

_HDR_SHORT = Struct("!BBH").pack  # first byte, 1-byte remaining length, topic length
_U16 = Struct("!H").pack
_PUBLISH = int(PacketType.PUBLISH)  # plain int: cheaper than an enum attribute on the hot path

PINGREQ_BYTES = b"\xc0\x00"
PINGRESP_BYTES = b"\xd0\x00"
#: DISCONNECT for MQTT 3.x, and the normal-disconnection short form for MQTT 5.
DISCONNECT_BYTES = b"\xe0\x00"


def _packet(first: int, body: bytes) -> bytes:
    n = len(body)
    if n < 128:
        return bytes((first, n)) + body
    if n > MAX_VARINT:
        raise ValueError(f"packet too large to encode ({n} bytes)")
    return bytes((first,)) + encode_varint(n) + body


def _pid(packet_id: int | None) -> bytes:
    if packet_id is None or not 0 < packet_id <= 0xFFFF:
        raise ValueError(f"packet identifier must be 1..65535, got {packet_id!r}")
    return _U16(packet_id)


def packet_size(remaining_length: int) -> int:
    """Total size of a packet whose remaining length is ``remaining_length``."""
    return 1 + varint_size(remaining_length) + remaining_length


# -------------------------------------------------------------------------------- PUBLISH


def encode_publish(
    topic: str | bytes,
    payload: bytes,
    qos: int = 0,
    retain: bool = False,
    dup: bool = False,
    packet_id: int | None = None,
    properties: Mapping[str, Any] | None = None,
    protocol_level: int = 4,
) -> bytes:
    """Encode a PUBLISH. ``topic`` may be pre-encoded UTF-8 bytes (saves one encode per copy).

    ``packet_id`` is required for qos 1/2 and ignored for qos 0; ``properties`` only for v5.
    """
    tb = topic.encode("utf-8") if isinstance(topic, str) else topic
    tl = len(tb)
    first = 0x30 | (qos << 1) | (1 if retain else 0) | (8 if dup else 0)
    if qos:
        if qos not in (1, 2) or packet_id is None or not 0 < packet_id <= 0xFFFF:
            raise ValueError(f"bad qos/packet identifier: qos={qos} packet_id={packet_id!r}")
        tail = _U16(packet_id)
        if protocol_level == MQTT_5:
            tail += encode_property_block(properties, _PUBLISH) if properties else b"\0"
    elif protocol_level == MQTT_5:
        tail = encode_property_block(properties, _PUBLISH) if properties else b"\0"
    else:
        # The hottest case: v3.1.1 QoS 0, short packet.
        rl = 2 + tl + len(payload)
        if rl < 128:
            return b"".join((_HDR_SHORT(first, rl, tl), tb, payload))
        tail = b""
    rl = 2 + tl + len(tail) + len(payload)
    if rl < 128:
        return b"".join((_HDR_SHORT(first, rl, tl), tb, tail, payload))
    if tl > 0xFFFF:
        raise ValueError(f"topic too long ({tl} bytes)")
    if rl > MAX_VARINT:
        raise ValueError(f"packet too large to encode ({rl} bytes)")
    return b"".join((bytes((first,)), encode_varint(rl), _U16(tl), tb, tail, payload))


def _encode_publish(p: Publish, level: int) -> bytes:
    if p.qos not in (0, 1, 2):
        raise ValueError(f"bad qos {p.qos}")
    if p.qos == 0 and p.dup:
        raise ValueError("dup must be False for qos 0")
    return encode_publish(
        p.topic,
        p.payload,
        p.qos,
        p.retain,
        p.dup,
        p.packet_id,
        p.properties if level == MQTT_5 else None,
        level,
    )


# ---------------------------------------------------------------------------- acknowledgements


def _encode_ack(
    first: int,
    packet_id: int,
    level: int,
    reason_code: int,
    properties: Mapping[str, Any] | None,
    context: int,
) -> bytes:
    if not 0 < packet_id <= 0xFFFF:
        raise ValueError(f"packet identifier must be 1..65535, got {packet_id!r}")
    if level != MQTT_5 or (not reason_code and not properties):
        return bytes((first, 2, packet_id >> 8, packet_id & 0xFF))
    if not properties:
        return bytes((first, 3, packet_id >> 8, packet_id & 0xFF, reason_code))
    return _packet(
        first, _U16(packet_id) + bytes((reason_code,)) + encode_property_block(properties, context)
    )


def encode_puback(
    packet_id: int,
    protocol_level: int = 4,
    reason_code: int = 0,
    properties: Mapping[str, Any] | None = None,
) -> bytes:
    """PUBACK. Reason code and properties are only sent to v5 peers."""
    return _encode_ack(0x40, packet_id, protocol_level, reason_code, properties, PacketType.PUBACK)


def encode_pubrec(
    packet_id: int,
    protocol_level: int = 4,
    reason_code: int = 0,
    properties: Mapping[str, Any] | None = None,
) -> bytes:
    """PUBREC. Reason code and properties are only sent to v5 peers."""
    return _encode_ack(0x50, packet_id, protocol_level, reason_code, properties, PacketType.PUBREC)


def encode_pubrel(
    packet_id: int,
    protocol_level: int = 4,
    reason_code: int = 0,
    properties: Mapping[str, Any] | None = None,
) -> bytes:
    """PUBREL (fixed-header flags 0b0010). Reason code and properties only for v5 peers."""
    return _encode_ack(0x62, packet_id, protocol_level, reason_code, properties, PacketType.PUBREL)


def encode_pubcomp(
    packet_id: int,
    protocol_level: int = 4,
    reason_code: int = 0,
    properties: Mapping[str, Any] | None = None,
) -> bytes:
    """PUBCOMP. Reason code and properties are only sent to v5 peers."""
    return _encode_ack(0x70, packet_id, protocol_level, reason_code, properties, PacketType.PUBCOMP)


def encode_connack(
    session_present: bool,
    reason_code: int,
    protocol_level: int = 4,
    properties: Mapping[str, Any] | None = None,
) -> bytes:
    """CONNACK. For MQTT 3.x a v5 reason code (>= 0x80) is mapped to the v3 return code.

    Raises ``ValueError`` when v3 has no equivalent (the v3 rule is then: close without CONNACK).
    """
    if protocol_level == MQTT_5:
        # Session present must be 0 with a failure code (MQTT-3.2.2-6).
        flags = 1 if session_present and not reason_code else 0
        body = bytes((flags, reason_code)) + encode_property_block(properties, PacketType.CONNACK)
        return _packet(0x20, body)
    code = reason_code
    if code > 5:
        mapped = v3_connack_return_code(code)
        if mapped is None:
            raise ValueError(f"reason code 0x{code:02X} has no MQTT 3 CONNACK equivalent")
        code = int(mapped)
    # MQTT 3.1 has no session-present flag (the byte is reserved): always send 0.
    flags = 1 if session_present and protocol_level != MQTT_3_1 and not code else 0
    return bytes((0x20, 2, flags, code))


def encode_suback(
    packet_id: int,
    reason_codes: Iterable[int],
    protocol_level: int = 4,
    properties: Mapping[str, Any] | None = None,
) -> bytes:
    """SUBACK. For MQTT 3.x every failure code (>= 0x80) is sent as 0x80."""
    codes = bytes(reason_codes)
    if protocol_level == MQTT_5:
        return _packet(
            0x90, _pid(packet_id) + encode_property_block(properties, PacketType.SUBACK) + codes
        )
    if any(c >= 0x80 for c in codes):
        codes = bytes(0x80 if c >= 0x80 else c for c in codes)
    return _packet(0x90, _pid(packet_id) + codes)


def encode_unsuback(
    packet_id: int,
    reason_codes: Iterable[int] = (),
    protocol_level: int = 4,
    properties: Mapping[str, Any] | None = None,
) -> bytes:
    """UNSUBACK. MQTT 3.x has no reason codes: only the packet identifier is sent."""
    if protocol_level == MQTT_5:
        return _packet(
            0xB0,
            _pid(packet_id)
            + encode_property_block(properties, PacketType.UNSUBACK)
            + bytes(reason_codes),
        )
    return bytes((0xB0, 2)) + _pid(packet_id)


def encode_disconnect(
    reason_code: int = 0,
    protocol_level: int = 4,
    properties: Mapping[str, Any] | None = None,
) -> bytes:
    """DISCONNECT. Reason code and properties are only sent to v5 peers."""
    if protocol_level != MQTT_5 or (not reason_code and not properties):
        return DISCONNECT_BYTES
    if not properties:
        return bytes((0xE0, 1, reason_code))
    return _packet(
        0xE0, bytes((reason_code,)) + encode_property_block(properties, PacketType.DISCONNECT)
    )


def encode_auth(reason_code: int = 0, properties: Mapping[str, Any] | None = None) -> bytes:
    """AUTH (MQTT 5 only)."""
    if not reason_code and not properties:
        return b"\xf0\x00"
    return _packet(0xF0, bytes((reason_code,)) + encode_property_block(properties, PacketType.AUTH))


# ----------------------------------------------------------------------- the other packet types


def _encode_connect(p: Connect, level: int) -> bytes:
    v5 = level == MQTT_5
    will = p.will
    flags = 0x02 if p.clean_start else 0
    if will is not None:
        if will.qos not in (0, 1, 2):
            raise ValueError(f"bad will qos {will.qos}")
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if p.username is not None:
        flags |= 0x80
    if p.password is not None:
        if p.username is None and not v5:
            raise ValueError("MQTT 3.x does not allow a password without a username")
        flags |= 0x40
    if not 0 <= p.keepalive <= 0xFFFF:
        raise ValueError(f"keepalive out of range: {p.keepalive}")
    parts = [
        encode_utf8(p.protocol_name),
        bytes((p.protocol_level, flags)),
        _U16(p.keepalive),
    ]
    if v5:
        parts.append(encode_property_block(p.properties, PacketType.CONNECT))
    parts.append(encode_utf8(p.client_id))
    if will is not None:
        if v5:
            parts.append(encode_property_block(will.properties, WILL))
        parts.append(encode_utf8(will.topic))
        parts.append(encode_binary(will.payload))
    if p.username is not None:
        parts.append(encode_utf8(p.username))
    if p.password is not None:
        parts.append(encode_binary(p.password))
    return _packet(0x10, b"".join(parts))


def _encode_subscribe(p: Subscribe, level: int) -> bytes:
    parts = [_pid(p.packet_id)]
    v5 = level == MQTT_5
    if v5:
        parts.append(encode_property_block(p.properties, PacketType.SUBSCRIBE))
    if not p.subscriptions:
        raise ValueError("SUBSCRIBE needs at least one subscription")
    for s in p.subscriptions:
        if s.qos not in (0, 1, 2) or s.retain_handling not in (0, 1, 2):
            raise ValueError(f"bad subscription options {s!r}")
        opts = s.qos
        if v5:
            opts |= (
                (4 if s.no_local else 0)
                | (8 if s.retain_as_published else 0)
                | (s.retain_handling << 4)
            )
        parts.append(encode_utf8(s.topic_filter))
        parts.append(bytes((opts,)))
    return _packet(0x82, b"".join(parts))


def _encode_unsubscribe(p: Unsubscribe, level: int) -> bytes:
    parts = [_pid(p.packet_id)]
    if level == MQTT_5:
        parts.append(encode_property_block(p.properties, PacketType.UNSUBSCRIBE))
    if not p.topic_filters:
        raise ValueError("UNSUBSCRIBE needs at least one topic filter")
    parts.extend(encode_utf8(f) for f in p.topic_filters)
    return _packet(0xA2, b"".join(parts))


def _encode_auth(p: Auth, level: int) -> bytes:
    if level != MQTT_5:
        raise ValueError("AUTH exists only in MQTT 5")
    return encode_auth(p.reason_code, p.properties)


_ENCODERS: dict[type[Any], Callable[[Any, int], bytes]] = {
    Connect: _encode_connect,
    Connack: lambda p, lvl: encode_connack(p.session_present, p.reason_code, lvl, p.properties),
    Publish: _encode_publish,
    Puback: lambda p, lvl: encode_puback(p.packet_id, lvl, p.reason_code, p.properties),
    Pubrec: lambda p, lvl: encode_pubrec(p.packet_id, lvl, p.reason_code, p.properties),
    Pubrel: lambda p, lvl: encode_pubrel(p.packet_id, lvl, p.reason_code, p.properties),
    Pubcomp: lambda p, lvl: encode_pubcomp(p.packet_id, lvl, p.reason_code, p.properties),
    Subscribe: _encode_subscribe,
    Suback: lambda p, lvl: encode_suback(p.packet_id, p.reason_codes, lvl, p.properties),
    Unsubscribe: _encode_unsubscribe,
    Unsuback: lambda p, lvl: encode_unsuback(p.packet_id, p.reason_codes, lvl, p.properties),
    Pingreq: lambda p, lvl: PINGREQ_BYTES,
    Pingresp: lambda p, lvl: PINGRESP_BYTES,
    Disconnect: lambda p, lvl: encode_disconnect(p.reason_code, lvl, p.properties),
    Auth: _encode_auth,
}


def encode(packet: Packet, protocol_level: int) -> bytes:
    """Encode any packet for a peer speaking ``protocol_level`` (3, 4 or 5; 131/132 = 3/4).

    For CONNECT the protocol name and level byte written are the packet's own fields;
    ``protocol_level`` selects the wire format.
    """
    level = protocol_level & 0x7F
    if level not in (3, 4, 5):
        raise ValueError(f"unsupported protocol level {protocol_level}")
    try:
        encoder = _ENCODERS[type(packet)]
    except KeyError:
        raise TypeError(f"not an MQTT packet: {packet!r}") from None
    return encoder(packet, level)
