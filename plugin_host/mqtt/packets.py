"""Typed MQTT control packets (one dataclass per packet type) shared by all protocol levels.

Fields that do not exist in a protocol level keep their defaults (e.g. ``properties`` is
empty for MQTT 3.1/3.1.1, ``reason_code`` of acks is 0). Properties are plain dicts keyed by
the snake_case MQTT 5 property names (see :mod:`plugin_host.mqtt.properties`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, ClassVar, TypeAlias

Properties: TypeAlias = dict[str, Any]


class PacketType(IntEnum):
    """MQTT control packet types (the high nibble of the first byte)."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


#: Protocol levels (the CONNECT "protocol level" byte).
MQTT_3_1 = 3
MQTT_3_1_1 = 4
MQTT_5 = 5
#: Bit set in the protocol level byte by bridges (mosquitto/VerneMQ convention): 131, 132.
BRIDGE_FLAG = 0x80


@dataclass(slots=True)
class Will:
    """The will message carried in CONNECT."""

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Subscription:
    """One entry of a SUBSCRIBE payload (the v5 subscription options; v3 uses only qos)."""

    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass(slots=True)
class Connect:
    """CONNECT. ``protocol_level`` is the raw byte (3, 4, 5, or 131/132 for bridges)."""

    packet_type: ClassVar[PacketType] = PacketType.CONNECT
    protocol_name: str = "MQTT"
    protocol_level: int = MQTT_3_1_1
    client_id: str = ""
    clean_start: bool = True
    keepalive: int = 60
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Connack:
    """CONNACK. ``reason_code`` is the v3 return code (0-5) for MQTT 3.x."""

    packet_type: ClassVar[PacketType] = PacketType.CONNACK
    session_present: bool = False
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Publish:
    """PUBLISH. ``packet_id`` is None exactly when qos is 0.

    In MQTT 5 ``topic`` may be ``""`` when a ``topic_alias`` property is present: the broker
    resolves aliases (it owns the per-connection alias table).
    """

    packet_type: ClassVar[PacketType] = PacketType.PUBLISH
    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int | None = None
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Puback:
    """PUBACK (QoS 1 acknowledgement)."""

    packet_type: ClassVar[PacketType] = PacketType.PUBACK
    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Pubrec:
    """PUBREC (QoS 2, step 1)."""

    packet_type: ClassVar[PacketType] = PacketType.PUBREC
    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Pubrel:
    """PUBREL (QoS 2, step 2)."""

    packet_type: ClassVar[PacketType] = PacketType.PUBREL
    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Pubcomp:
    """PUBCOMP (QoS 2, step 3)."""

    packet_type: ClassVar[PacketType] = PacketType.PUBCOMP
    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Subscribe:
    """SUBSCRIBE. Topic filters are checked for UTF-8 only by the parser: validate each with
    :func:`plugin_host.mqtt.validate_topic_filter` so one bad filter gets its own SUBACK code."""

    packet_type: ClassVar[PacketType] = PacketType.SUBSCRIBE
    packet_id: int
    subscriptions: list[Subscription] = field(default_factory=list)
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Suback:
    """SUBACK: one reason code (v3: return code) per subscription, in order."""

    packet_type: ClassVar[PacketType] = PacketType.SUBACK
    packet_id: int
    reason_codes: list[int] = field(default_factory=list)
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Unsubscribe:
    """UNSUBSCRIBE. Filters are checked for UTF-8 only (see :class:`Subscribe`)."""

    packet_type: ClassVar[PacketType] = PacketType.UNSUBSCRIBE
    packet_id: int
    topic_filters: list[str] = field(default_factory=list)
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Unsuback:
    """UNSUBACK. MQTT 3.x carries no reason codes: they are not encoded and parse as ``[]``."""

    packet_type: ClassVar[PacketType] = PacketType.UNSUBACK
    packet_id: int
    reason_codes: list[int] = field(default_factory=list)
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Pingreq:
    """PINGREQ."""

    packet_type: ClassVar[PacketType] = PacketType.PINGREQ


@dataclass(slots=True)
class Pingresp:
    """PINGRESP."""

    packet_type: ClassVar[PacketType] = PacketType.PINGRESP


@dataclass(slots=True)
class Disconnect:
    """DISCONNECT (reason code and properties exist only in MQTT 5)."""

    packet_type: ClassVar[PacketType] = PacketType.DISCONNECT
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Auth:
    """AUTH (MQTT 5 only): extended authentication exchange."""

    packet_type: ClassVar[PacketType] = PacketType.AUTH
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)


Packet: TypeAlias = (
    Connect
    | Connack
    | Publish
    | Puback
    | Pubrec
    | Pubrel
    | Pubcomp
    | Subscribe
    | Suback
    | Unsubscribe
    | Unsuback
    | Pingreq
    | Pingresp
    | Disconnect
    | Auth
)
