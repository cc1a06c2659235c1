"""Incremental sans-IO MQTT parser: feed bytes in any chunking, get complete packets back.

The hot path (many PUBLISH packets per ``feed`` call, as one socket read delivers them) works
directly on one ``bytes`` object with integer offsets: one slice per topic and per payload, no
per-byte Python loops, no copies of the input unless a packet straddles two reads.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from plugin_host.mqtt.errors import MQTTError
from plugin_host.mqtt.packets import (
    BRIDGE_FLAG,
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
    Properties,
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
)
from plugin_host.mqtt.primitives import Reader
from plugin_host.mqtt.properties import WILL, decode_properties
from plugin_host.mqtt.reason_codes import (
    AUTH_REASON_CODES,
    CONNACK_REASON_CODES,
    DISCONNECT_REASON_CODES,
    PUBACK_REASON_CODES,
    PUBREL_REASON_CODES,
    SUBACK_REASON_CODES,
    UNSUBACK_REASON_CODES,
    V3_CONNACK_RETURN_CODES,
    V3_SUBACK_RETURN_CODES,
)
from plugin_host.mqtt.topics import validate_topic_name

MALFORMED = 0x81
PROTOCOL_ERROR = 0x82
UNSUPPORTED_PROTOCOL_VERSION = 0x84
TOPIC_NAME_INVALID = 0x90
PACKET_TOO_LARGE = 0x95
PAYLOAD_FORMAT_INVALID = 0x99

#: A body decoder: (data, body start, body end, first byte, server_side) -> packet.
Decoder = Callable[[bytes, int, int, int, bool], Packet]
#: A decoder for both protocol families: its last argument says MQTT 5.
_VersionedDecoder = Callable[[bytes, int, int, int, bool, bool], Packet]

_P = PacketType
_PUBLISH = int(PacketType.PUBLISH)  # plain int: cheaper than an enum attribute on the hot path


def _err(code: int, message: str, ptype: PacketType) -> MQTTError:
    return MQTTError(code, message, packet_type=ptype)


# ------------------------------------------------------------------------------------ helpers


def _check_props_common(props: Properties, ptype: PacketType) -> None:
    """Rules shared by PUBLISH and will properties (response topic, payload format)."""
    rt = props.get("response_topic")
    if rt is not None:
        try:
            validate_topic_name(rt)
        except MQTTError:
            raise _err(PROTOCOL_ERROR, f"invalid response topic {rt!r}", ptype) from None


def _check_payload_utf8(payload: bytes, ptype: PacketType) -> None:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        raise _err(
            PAYLOAD_FORMAT_INVALID, "payload_format_indicator is 1 but payload is not UTF-8", ptype
        ) from None


def _per_version(decode: _VersionedDecoder) -> tuple[Decoder, Decoder]:
    """The MQTT 3.x and the MQTT 5 decoder of a packet that one function parses for both."""

    def v3(data: bytes, pos: int, end: int, b1: int, server: bool) -> Packet:
        return decode(data, pos, end, b1, server, False)

    def v5(data: bytes, pos: int, end: int, b1: int, server: bool) -> Packet:
        return decode(data, pos, end, b1, server, True)

    return v3, v5


def _packet_id(data: bytes, pos: int, ptype: PacketType) -> int:
    pid = (data[pos] << 8) | data[pos + 1]
    if not pid:
        raise _err(PROTOCOL_ERROR, "packet identifier 0", ptype)
    return pid


# ------------------------------------------------------------------------------------ PUBLISH


def _publish_v3(data: bytes, pos: int, end: int, b1: int, server: bool) -> Packet:
    """PUBLISH for MQTT 3.1 / 3.1.1 (the hot path: keep it lean)."""
    if end - pos < 2:
        raise _err(MALFORMED, "PUBLISH too short", _P.PUBLISH)
    p = pos + 2 + ((data[pos] << 8) | data[pos + 1])
    qos = (b1 >> 1) & 3
    if qos:
        if p + 2 > end:
            raise _err(
                MALFORMED, "PUBLISH shorter than its topic and packet identifier", _P.PUBLISH
            )
        pid: int | None = (data[p] << 8) | data[p + 1]
        if not pid:
            raise _err(PROTOCOL_ERROR, "packet identifier 0", _P.PUBLISH)
        start = p + 2
    else:
        if p > end:
            raise _err(MALFORMED, "PUBLISH shorter than its topic", _P.PUBLISH)
        pid = None
        start = p
    topic = data[pos + 2 : p].decode("utf-8")  # UnicodeDecodeError -> 0x81 in Parser.feed
    if not topic or "+" in topic or "#" in topic or "\x00" in topic:
        raise _err(MALFORMED, f"invalid topic name {topic!r}", _P.PUBLISH)
    return Publish(topic, data[start:end], qos, (b1 & 1) != 0, (b1 & 8) != 0, pid, {})


def _publish_v5(data: bytes, pos: int, end: int, b1: int, server: bool) -> Packet:
    """PUBLISH for MQTT 5."""
    if end - pos < 3:
        raise _err(MALFORMED, "PUBLISH too short", _P.PUBLISH)
    tend = pos + 2 + ((data[pos] << 8) | data[pos + 1])
    qos = (b1 >> 1) & 3
    if qos:
        if tend + 3 > end:
            raise _err(MALFORMED, "PUBLISH shorter than its header", _P.PUBLISH)
        pid: int | None = (data[tend] << 8) | data[tend + 1]
        if not pid:
            raise _err(PROTOCOL_ERROR, "packet identifier 0", _P.PUBLISH)
        p = tend + 2
    else:
        if tend + 1 > end:
            raise _err(MALFORMED, "PUBLISH shorter than its header", _P.PUBLISH)
        pid = None
        p = tend
    props: Properties
    if data[p] == 0:
        props = {}
        p += 1
    else:
        props, p = decode_properties(data, p, end, _PUBLISH)
    topic = data[pos + 2 : tend].decode("utf-8")
    if "\x00" in topic:
        raise _err(MALFORMED, "topic name contains U+0000", _P.PUBLISH)
    if "+" in topic or "#" in topic:
        raise _err(TOPIC_NAME_INVALID, f"wildcard in topic name {topic!r}", _P.PUBLISH)
    payload = data[p:end]
    if props:
        if not topic and "topic_alias" not in props:
            raise _err(PROTOCOL_ERROR, "empty topic name without topic alias", _P.PUBLISH)
        if server and "subscription_identifier" in props:
            raise _err(PROTOCOL_ERROR, "subscription identifier sent by a client", _P.PUBLISH)
        _check_props_common(props, _P.PUBLISH)
        if props.get("payload_format_indicator") == 1:
            _check_payload_utf8(payload, _P.PUBLISH)
    elif not topic:
        raise _err(PROTOCOL_ERROR, "empty topic name without topic alias", _P.PUBLISH)
    return Publish(topic, payload, qos, (b1 & 1) != 0, (b1 & 8) != 0, pid, props)


# ------------------------------------------------------------------------------------ acks

_AckClass = type[Puback] | type[Pubrec] | type[Pubrel] | type[Pubcomp]


def _ack_v3(cls: _AckClass) -> Decoder:
    ptype = cls.packet_type

    def decode(data: bytes, pos: int, end: int, b1: int, server: bool) -> Packet:
        if end - pos != 2:
            raise _err(MALFORMED, f"{ptype.name} remaining length must be 2", ptype)
        return cls(_packet_id(data, pos, ptype))

    return decode


def _ack_v5(cls: _AckClass, codes: frozenset[int]) -> Decoder:
    ptype = cls.packet_type

    def decode(data: bytes, pos: int, end: int, b1: int, server: bool) -> Packet:
        n = end - pos
        if n < 2:
            raise _err(MALFORMED, f"{ptype.name} too short", ptype)
        pid = _packet_id(data, pos, ptype)
        if n == 2:
            return cls(pid)
        rc = data[pos + 2]
        if rc not in codes:
            raise _err(MALFORMED, f"reason code 0x{rc:02X} not allowed in {ptype.name}", ptype)
        if n == 3:
            return cls(pid, rc)
        props, p = decode_properties(data, pos + 3, end, ptype)
        if p != end:
            raise _err(MALFORMED, f"trailing bytes in {ptype.name}", ptype)
        return cls(pid, rc, props)

    return decode


# ------------------------------------------------------------------------------------ CONNECT


def _connect_level(data: bytes, pos: int, end: int) -> int | None:
    """The protocol level byte of a (possibly invalid) CONNECT body, if it can be read."""
    if end - pos < 2:
        return None
    p = pos + 2 + ((data[pos] << 8) | data[pos + 1])
    return data[p] if p < end else None


def _connect(data: bytes, pos: int, end: int, b1: int, server: bool) -> Packet:
    ptype = _P.CONNECT
    r = Reader(data, pos, end)
    name = r.utf8("protocol name")
    raw_level = r.u8()
    level = raw_level & ~BRIDGE_FLAG
    if raw_level not in (3, 4, 5, 3 | BRIDGE_FLAG, 4 | BRIDGE_FLAG):
        raise _err(UNSUPPORTED_PROTOCOL_VERSION, f"unsupported protocol level {raw_level}", ptype)
    if name not in ("MQTT", "MQIsdp"):
        raise _err(PROTOCOL_ERROR, f"unknown protocol name {name!r}", ptype)
    if (name == "MQIsdp") != (level == MQTT_3_1):
        raise _err(
            UNSUPPORTED_PROTOCOL_VERSION,
            f"protocol name {name!r} does not match level {raw_level}",
            ptype,
        )
    v5 = level == MQTT_5
    flags = r.u8()
    if flags & 0x01:
        raise _err(MALFORMED, "CONNECT reserved flag set", ptype)
    will_flag = flags & 0x04
    will_qos = (flags >> 3) & 3
    will_retain = (flags & 0x20) != 0
    if will_qos == 3:
        raise _err(MALFORMED, "will QoS 3", ptype)
    if not will_flag and (will_qos or will_retain):
        raise _err(MALFORMED, "will QoS/retain set without will flag", ptype)
    if flags & 0x40 and not flags & 0x80 and not v5:
        raise _err(PROTOCOL_ERROR, "password without username", ptype)
    keepalive = r.u16()
    props: Properties = {}
    if v5:
        props, r.pos = decode_properties(data, r.pos, end, ptype)
        if "authentication_data" in props and "authentication_method" not in props:
            raise _err(PROTOCOL_ERROR, "authentication data without method", ptype)
    client_id = r.utf8("client identifier")
    will = None
    if will_flag:
        will_props: Properties = {}
        if v5:
            will_props, r.pos = decode_properties(data, r.pos, end, WILL)
        will_topic = r.utf8("will topic")
        try:
            validate_topic_name(will_topic)
        except MQTTError as exc:
            raise _err(TOPIC_NAME_INVALID if v5 else MALFORMED, exc.message, ptype) from None
        will_payload = r.binary()
        if will_props:
            _check_props_common(will_props, ptype)
            if will_props.get("payload_format_indicator") == 1:
                _check_payload_utf8(will_payload, ptype)
        will = Will(will_topic, will_payload, will_qos, will_retain, will_props)
    username = r.utf8("user name") if flags & 0x80 else None
    password = r.binary() if flags & 0x40 else None
    if r.pos != end:
        raise _err(MALFORMED, "trailing bytes in CONNECT", ptype)
    return Connect(
        name, raw_level, client_id, (flags & 0x02) != 0, keepalive, username, password, will, props
    )


# ------------------------------------------------------------------------------------ CONNACK


def _connack(data: bytes, pos: int, end: int, b1: int, server: bool, v5: bool) -> Packet:
    ptype = _P.CONNACK
    if end - pos < 2 or (not v5 and end - pos != 2):
        raise _err(MALFORMED, "bad CONNACK length", ptype)
    flags = data[pos]
    rc = data[pos + 1]
    if flags & 0xFE:
        raise _err(MALFORMED, "CONNACK reserved flags set", ptype)
    if rc not in (CONNACK_REASON_CODES if v5 else V3_CONNACK_RETURN_CODES):
        raise _err(MALFORMED, f"invalid CONNACK code 0x{rc:02X}", ptype)
    if flags and rc:
        raise _err(PROTOCOL_ERROR, "session present with a failure code", ptype)
    props: Properties = {}
    if v5:
        props, p = decode_properties(data, pos + 2, end, ptype)
        if p != end:
            raise _err(MALFORMED, "trailing bytes in CONNACK", ptype)
    return Connack(flags == 1, rc, props)


_connack_v3, _connack_v5 = _per_version(_connack)


# ---------------------------------------------------------------------- SUBSCRIBE / UNSUBSCRIBE


def _subscribe(data: bytes, pos: int, end: int, b1: int, server: bool, v5: bool) -> Packet:
    ptype = _P.SUBSCRIBE
    r = Reader(data, pos, end)
    pid = r.u16()
    if not pid:
        raise _err(PROTOCOL_ERROR, "packet identifier 0", ptype)
    props: Properties = {}
    if v5:
        props, r.pos = decode_properties(data, r.pos, end, ptype)
    subs: list[Subscription] = []
    while r.pos < end:
        topic_filter = r.utf8("topic filter")
        opts = r.u8()
        qos = opts & 0x03
        if qos == 3:
            raise _err(MALFORMED, "subscription QoS 3", ptype)
        if not v5:
            if opts & 0xFC:
                raise _err(MALFORMED, "reserved bits set in requested QoS", ptype)
            subs.append(Subscription(topic_filter, qos))
            continue
        if opts & 0xC0:
            raise _err(MALFORMED, "reserved subscription option bits set", ptype)
        retain_handling = (opts >> 4) & 0x03
        if retain_handling == 3:
            raise _err(PROTOCOL_ERROR, "retain handling 3", ptype)
        no_local = (opts & 0x04) != 0
        if no_local and topic_filter.startswith("$share/"):
            raise _err(PROTOCOL_ERROR, "no local on a shared subscription", ptype)
        subs.append(Subscription(topic_filter, qos, no_local, (opts & 0x08) != 0, retain_handling))
    if not subs:
        raise _err(PROTOCOL_ERROR, "SUBSCRIBE without subscriptions", ptype)
    return Subscribe(pid, subs, props)


_subscribe_v3, _subscribe_v5 = _per_version(_subscribe)


def _unsubscribe(data: bytes, pos: int, end: int, b1: int, server: bool, v5: bool) -> Packet:
    ptype = _P.UNSUBSCRIBE
    r = Reader(data, pos, end)
    pid = r.u16()
    if not pid:
        raise _err(PROTOCOL_ERROR, "packet identifier 0", ptype)
    props: Properties = {}
    if v5:
        props, r.pos = decode_properties(data, r.pos, end, ptype)
    filters: list[str] = []
    while r.pos < end:
        filters.append(r.utf8("topic filter"))
    if not filters:
        raise _err(PROTOCOL_ERROR, "UNSUBSCRIBE without topic filters", ptype)
    return Unsubscribe(pid, filters, props)


_unsubscribe_v3, _unsubscribe_v5 = _per_version(_unsubscribe)


def _suback(data: bytes, pos: int, end: int, b1: int, server: bool, v5: bool) -> Packet:
    ptype = _P.SUBACK
    if end - pos < 2:
        raise _err(MALFORMED, "SUBACK too short", ptype)
    pid = _packet_id(data, pos, ptype)
    props: Properties = {}
    p = pos + 2
    if v5:
        props, p = decode_properties(data, p, end, ptype)
    codes = list(data[p:end])
    if not codes:
        raise _err(PROTOCOL_ERROR, "SUBACK without reason codes", ptype)
    allowed = SUBACK_REASON_CODES if v5 else V3_SUBACK_RETURN_CODES
    for c in codes:
        if c not in allowed:
            raise _err(MALFORMED, f"invalid SUBACK code 0x{c:02X}", ptype)
    return Suback(pid, codes, props)


_suback_v3, _suback_v5 = _per_version(_suback)


def _unsuback_v3(data: bytes, pos: int, end: int, b1: int, server: bool) -> Packet:
    if end - pos != 2:
        raise _err(MALFORMED, "UNSUBACK remaining length must be 2", _P.UNSUBACK)
    return Unsuback(_packet_id(data, pos, _P.UNSUBACK))


def _unsuback_v5(data: bytes, pos: int, end: int, b1: int, server: bool) -> Packet:
    ptype = _P.UNSUBACK
    if end - pos < 2:
        raise _err(MALFORMED, "UNSUBACK too short", ptype)
    pid = _packet_id(data, pos, ptype)
    props, p = decode_properties(data, pos + 2, end, ptype)
    codes = list(data[p:end])
    if not codes:
        raise _err(PROTOCOL_ERROR, "UNSUBACK without reason codes", ptype)
    for c in codes:
        if c not in UNSUBACK_REASON_CODES:
            raise _err(MALFORMED, f"invalid UNSUBACK code 0x{c:02X}", ptype)
    return Unsuback(pid, codes, props)


# ---------------------------------------------------------------- PING, DISCONNECT, AUTH


def _pingreq(data: bytes, pos: int, end: int, b1: int, server: bool) -> Packet:
    if end != pos:
        raise _err(MALFORMED, "PINGREQ with a body", _P.PINGREQ)
    return Pingreq()


def _pingresp(data: bytes, pos: int, end: int, b1: int, server: bool) -> Packet:
    if end != pos:
        raise _err(MALFORMED, "PINGRESP with a body", _P.PINGRESP)
    return Pingresp()


def _disconnect_v3(data: bytes, pos: int, end: int, b1: int, server: bool) -> Packet:
    if end != pos:
        raise _err(MALFORMED, "DISCONNECT with a body", _P.DISCONNECT)
    return Disconnect()


def _reason_and_props(
    data: bytes, pos: int, end: int, ptype: PacketType, codes: frozenset[int]
) -> tuple[int, Properties]:
    if end == pos:
        return 0, {}
    rc = data[pos]
    if rc not in codes:
        raise _err(MALFORMED, f"reason code 0x{rc:02X} not allowed in {ptype.name}", ptype)
    if end == pos + 1:
        return rc, {}
    props, p = decode_properties(data, pos + 1, end, ptype)
    if p != end:
        raise _err(MALFORMED, f"trailing bytes in {ptype.name}", ptype)
    return rc, props


def _disconnect_v5(data: bytes, pos: int, end: int, b1: int, server: bool) -> Packet:
    ptype = _P.DISCONNECT
    rc, props = _reason_and_props(data, pos, end, ptype, DISCONNECT_REASON_CODES)
    if props:
        if server and "server_reference" in props:
            raise _err(PROTOCOL_ERROR, "server reference sent by a client", ptype)
        if not server and "session_expiry_interval" in props:
            raise _err(PROTOCOL_ERROR, "session expiry interval sent by the server", ptype)
    return Disconnect(rc, props)


def _auth(data: bytes, pos: int, end: int, b1: int, server: bool) -> Packet:
    ptype = _P.AUTH
    rc, props = _reason_and_props(data, pos, end, ptype, AUTH_REASON_CODES)
    if "authentication_data" in props and "authentication_method" not in props:
        raise _err(PROTOCOL_ERROR, "authentication data without method", ptype)
    return Auth(rc, props)


# ------------------------------------------------------------------------ dispatch tables

_CLIENT_SENDS = frozenset(
    {_P.CONNECT, _P.PUBLISH, _P.PUBACK, _P.PUBREC, _P.PUBREL, _P.PUBCOMP}
    | {_P.SUBSCRIBE, _P.UNSUBSCRIBE, _P.PINGREQ, _P.DISCONNECT, _P.AUTH}
)
_SERVER_SENDS = frozenset(
    {_P.CONNACK, _P.PUBLISH, _P.PUBACK, _P.PUBREC, _P.PUBREL, _P.PUBCOMP}
    | {_P.SUBACK, _P.UNSUBACK, _P.PINGRESP, _P.DISCONNECT, _P.AUTH}
)


def _decoders(level: int) -> dict[PacketType, Decoder]:
    if level == MQTT_5:
        return {
            _P.CONNECT: _connect,
            _P.CONNACK: _connack_v5,
            _P.PUBLISH: _publish_v5,
            _P.PUBACK: _ack_v5(Puback, PUBACK_REASON_CODES),
            _P.PUBREC: _ack_v5(Pubrec, PUBACK_REASON_CODES),
            _P.PUBREL: _ack_v5(Pubrel, PUBREL_REASON_CODES),
            _P.PUBCOMP: _ack_v5(Pubcomp, PUBREL_REASON_CODES),
            _P.SUBSCRIBE: _subscribe_v5,
            _P.SUBACK: _suback_v5,
            _P.UNSUBSCRIBE: _unsubscribe_v5,
            _P.UNSUBACK: _unsuback_v5,
            _P.PINGREQ: _pingreq,
            _P.PINGRESP: _pingresp,
            _P.DISCONNECT: _disconnect_v5,
            _P.AUTH: _auth,
        }
    return {
        _P.CONNECT: _connect,
        _P.CONNACK: _connack_v3,
        _P.PUBLISH: _publish_v3,
        _P.PUBACK: _ack_v3(Puback),
        _P.PUBREC: _ack_v3(Pubrec),
        _P.PUBREL: _ack_v3(Pubrel),
        _P.PUBCOMP: _ack_v3(Pubcomp),
        _P.SUBSCRIBE: _subscribe_v3,
        _P.SUBACK: _suback_v3,
        _P.UNSUBSCRIBE: _unsubscribe_v3,
        _P.UNSUBACK: _unsuback_v3,
        _P.PINGREQ: _pingreq,
        _P.PINGRESP: _pingresp,
        _P.DISCONNECT: _disconnect_v3,
    }


def _first_byte_problem(b1: int, server: bool, level: int | None) -> tuple[int, str] | None:
    """Why a first byte is not acceptable in this state (``None`` if it is)."""
    ptype = b1 >> 4
    flags = b1 & 0x0F
    if ptype == 0 or (ptype == _P.AUTH and level is not None and level != MQTT_5):
        return MALFORMED, f"reserved packet type {ptype}"
    pt = PacketType(ptype)
    if pt is _P.PUBLISH:
        if flags & 0x06 == 0x06:
            return MALFORMED, "PUBLISH with QoS 3"
        if flags & 0x08 and not flags & 0x06 and level != MQTT_3_1:
            return MALFORMED, "PUBLISH with DUP set at QoS 0"
    elif pt in (_P.PUBREL, _P.SUBSCRIBE, _P.UNSUBSCRIBE):
        # MQTT 3.1 clients may set DUP on retransmitted PUBREL/SUBSCRIBE/UNSUBSCRIBE.
        if flags != 0x02 and not (level == MQTT_3_1 and flags == 0x0A):
            return MALFORMED, f"{pt.name} fixed header flags must be 0b0010"
    elif flags:
        return MALFORMED, f"{pt.name} fixed header flags must be 0"
    if server:
        if level is None:
            if pt is not _P.CONNECT:
                return PROTOCOL_ERROR, f"first packet must be CONNECT, got {pt.name}"
        elif pt is _P.CONNECT:
            return PROTOCOL_ERROR, "second CONNECT"
        elif pt not in _CLIENT_SENDS:
            return PROTOCOL_ERROR, f"{pt.name} must not be sent by a client"
    elif pt not in _SERVER_SENDS or (pt is _P.DISCONNECT and level != MQTT_5):
        return PROTOCOL_ERROR, f"{pt.name} must not be sent by a server"
    return None


def _table(server: bool, level: int | None) -> tuple[Decoder | None, ...]:
    decoders = _decoders(level if level is not None else 4)
    return tuple(
        None if _first_byte_problem(b1, server, level) else decoders[PacketType(b1 >> 4)]
        for b1 in range(256)
    )


# Immutable per-state lookup tables: first byte -> decoder (None = rejected).
_PRE_CONNECT = _table(True, None)
_SERVER_TABLES = {lvl: _table(True, lvl) for lvl in (3, 4, 5)}
_CLIENT_TABLES = {lvl: _table(False, lvl) for lvl in (3, 4, 5)}


# ------------------------------------------------------------------------------------ Parser


class Parser:
    """Incremental MQTT parser for one connection (sans-IO: you feed it bytes).

    ``server_side=True`` parses what a client sends: the first packet must be CONNECT and the
    parser learns the protocol level from it (``protocol_level`` becomes 3, 4 or 5; a bridge's
    131/132 count as 3/4). If ``protocol_level`` is given to a server-side parser, CONNECT is
    taken as already handled. ``server_side=False`` parses what a server sends: set
    ``protocol_level`` (attribute or argument) before feeding.

    ``max_packet_size`` (mutable) is checked against the fixed header, before the body is
    buffered. After an :class:`MQTTError` the parser stays failed: every later ``feed`` raises
    the same error. The connection must be closed.

    ``bytes_by_type[n]`` counts the wire bytes (fixed header included) of the complete
    packets of type number ``n`` parsed so far (for traffic statistics).
    """

    __slots__ = (
        "_buf",
        "_error",
        "_need",
        "bytes_by_type",
        "max_packet_size",
        "protocol_level",
        "server_side",
    )

    def __init__(
        self,
        *,
        server_side: bool = True,
        protocol_level: int | None = None,
        max_packet_size: int | None = None,
    ) -> None:
        self.server_side = server_side
        self.protocol_level = protocol_level
        self.max_packet_size = max_packet_size
        self._buf = bytearray()
        self._need = 0
        self._error: MQTTError | None = None
        self.bytes_by_type = [0] * 16

    @property
    def buffered(self) -> int:
        """Number of bytes held for an incomplete packet."""
        return len(self._buf)

    def _current_table(self) -> tuple[Decoder | None, ...]:
        level = self.protocol_level
        if level is None:
            if self.server_side:
                return _PRE_CONNECT
            raise RuntimeError("client-side Parser needs protocol_level before feed()")
        table = (_SERVER_TABLES if self.server_side else _CLIENT_TABLES).get(level & 0x7F)
        if table is None:
            raise ValueError(f"unsupported protocol level {level}")
        return table

    def feed(self, data: bytes | bytearray | memoryview) -> list[Packet]:
        """Consume ``data`` and return every packet it completes (possibly none).

        Raises :class:`MQTTError` for bad input; its ``parsed`` attribute holds the packets
        completed by this call before the bad one.
        """
        if self._error is not None:
            raise self._error
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._need:
                return []
            raw = bytes(buf)
            buf.clear()
        else:
            raw = data if type(data) is bytes else bytes(data)
        out: list[Packet] = []
        try:
            self._parse(raw, out)
        except MQTTError as exc:
            exc.parsed = out
            self._error = exc
            raise
        except (IndexError, ValueError, struct.error, OverflowError) as exc:
            # Truncated fields, invalid UTF-8 (UnicodeDecodeError is a ValueError), ...
            err = MQTTError(MALFORMED, f"malformed packet: {exc}")
            err.parsed = out
            self._error = err
            raise err from None
        return out

    def _parse(self, data: bytes, out: list[Packet]) -> None:
        n = len(data)
        pos = 0
        server = self.server_side
        table = self._current_table()
        max_size = self.max_packet_size
        append = out.append
        sizes = self.bytes_by_type
        while pos < n:
            b1 = data[pos]
            decoder = table[b1]
            if decoder is None:
                problem = _first_byte_problem(
                    b1, server, None if self.protocol_level is None else self.protocol_level & 0x7F
                )
                assert problem is not None
                raise MQTTError(problem[0], problem[1], packet_type=b1 >> 4)
            if pos + 1 >= n:
                self._need = 0
                break
            rl = data[pos + 1]
            if rl < 0x80:
                body = pos + 2
            else:
                rl, body = _remaining_length(data, pos + 1, n, b1)
                if rl < 0:
                    self._need = 0
                    break
            end = body + rl
            if max_size is not None and end - pos > max_size:
                raise MQTTError(
                    PACKET_TOO_LARGE,
                    f"packet of {end - pos} bytes exceeds maximum packet size {max_size}",
                    packet_type=b1 >> 4,
                )
            if end > n:
                self._need = end - pos
                break
            if b1 == 0x10:
                # CONNECT: learn the protocol level (also when the rest of CONNECT is bad, so
                # the caller can answer with a CONNACK of the right version).
                level = _connect_level(data, body, end)
                if level is not None and level & 0x7F in (3, 4, 5):
                    self.protocol_level = level & 0x7F
                append(decoder(data, body, end, b1, server))
                table = self._current_table()
            else:
                append(decoder(data, body, end, b1, server))
            sizes[b1 >> 4] += end - pos
            pos = end
        if pos < n:
            self._buf += memoryview(data)[pos:]


def _remaining_length(data: bytes, pos: int, n: int, b1: int) -> tuple[int, int]:
    """Multi-byte remaining length at ``data[pos]``: ``(value, body start)``, or ``(-1, 0)``
    when more bytes are needed. Raises 0x81 at the 4th length byte if it has a continuation bit.
    """
    value = 0
    shift = 0
    for i in range(4):
        if pos + i >= n:
            return -1, 0
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos + i + 1
        shift += 7
    raise MQTTError(MALFORMED, "remaining length longer than 4 bytes", packet_type=b1 >> 4)
