"""MQTT 5 reason codes, the MQTT 3.x CONNACK return codes, and which codes each packet allows."""

from __future__ import annotations

from enum import IntEnum


class ReasonCode(IntEnum):
    """Every MQTT 5.0 reason code (spec section 2.4). Aliases share a value."""

    SUCCESS = 0x00
    NORMAL_DISCONNECTION = 0x00
    GRANTED_QOS_0 = 0x00
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    DISCONNECT_WITH_WILL_MESSAGE = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    CONTINUE_AUTHENTICATION = 0x18
    RE_AUTHENTICATE = 0x19
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    MESSAGE_RATE_TOO_HIGH = 0x96
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    CONNECTION_RATE_EXCEEDED = 0x9F
    MAXIMUM_CONNECT_TIME = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2


class ConnackReturnCode(IntEnum):
    """CONNACK return codes of MQTT 3.1 and 3.1.1."""

    ACCEPTED = 0
    UNACCEPTABLE_PROTOCOL_VERSION = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_USERNAME_OR_PASSWORD = 4
    NOT_AUTHORIZED = 5


#: SUBACK return code "failure" in MQTT 3.1.1 (same value as v5 UNSPECIFIED_ERROR).
SUBACK_FAILURE = 0x80

# Reason codes each packet may carry in MQTT 5 (spec sections 3.2.2.2, 3.4.2.1, ... 3.15.2.1).
CONNACK_REASON_CODES = frozenset(
    {0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90}
    | {0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F}
)
PUBACK_REASON_CODES = frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99})
PUBREC_REASON_CODES = PUBACK_REASON_CODES
PUBREL_REASON_CODES = frozenset({0x00, 0x92})
PUBCOMP_REASON_CODES = PUBREL_REASON_CODES
SUBACK_REASON_CODES = frozenset(
    {0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2}
)
UNSUBACK_REASON_CODES = frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91})
DISCONNECT_REASON_CODES = frozenset(
    {0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93}
    | {0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1}
    | {0xA2}
)
AUTH_REASON_CODES = frozenset({0x00, 0x18, 0x19})
#: CONNACK return codes valid in MQTT 3.1 / 3.1.1.
V3_CONNACK_RETURN_CODES = frozenset(range(6))
#: SUBACK return codes valid in MQTT 3.1 / 3.1.1.
V3_SUBACK_RETURN_CODES = frozenset({0x00, 0x01, 0x02, 0x80})

_V5_TO_V3_CONNACK = {
    0x00: ConnackReturnCode.ACCEPTED,
    0x84: ConnackReturnCode.UNACCEPTABLE_PROTOCOL_VERSION,
    0x85: ConnackReturnCode.IDENTIFIER_REJECTED,
    0x88: ConnackReturnCode.SERVER_UNAVAILABLE,
    0x89: ConnackReturnCode.SERVER_UNAVAILABLE,
    0x86: ConnackReturnCode.BAD_USERNAME_OR_PASSWORD,
    0x8C: ConnackReturnCode.BAD_USERNAME_OR_PASSWORD,
    0x87: ConnackReturnCode.NOT_AUTHORIZED,
    0x8A: ConnackReturnCode.NOT_AUTHORIZED,
    # No v3 equivalent, but the client should back off and may retry: "server unavailable".
    0x80: ConnackReturnCode.SERVER_UNAVAILABLE,
    0x83: ConnackReturnCode.SERVER_UNAVAILABLE,
    0x97: ConnackReturnCode.SERVER_UNAVAILABLE,
    0x9C: ConnackReturnCode.SERVER_UNAVAILABLE,
    0x9D: ConnackReturnCode.SERVER_UNAVAILABLE,
    0x9F: ConnackReturnCode.SERVER_UNAVAILABLE,
}


def v3_connack_return_code(reason_code: int) -> ConnackReturnCode | None:
    """Map an MQTT 5 CONNACK reason code to the closest MQTT 3.x return code.

    Returns ``None`` when v3 has no equivalent (malformed packet, protocol error, ...): the v3.1.1
    spec then says to close the network connection without a CONNACK.
    """
    return _V5_TO_V3_CONNACK.get(reason_code)
