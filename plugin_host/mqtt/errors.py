"""The single exception type of the protocol package."""

from __future__ import annotations

from typing import Any


class MQTTError(Exception):
    """Bad MQTT input (or a protocol rule broken), carrying the MQTT 5 reason code to report.

    ``reason_code`` is what a v5 peer should receive (in CONNACK or DISCONNECT): 0x81 malformed
    packet, 0x82 protocol error, 0x84 unsupported protocol version, 0x8F topic filter invalid,
    0x90 topic name invalid, 0x94 topic alias invalid, 0x95 packet too large, 0x99 payload
    format invalid. For v3.1/v3.1.1 peers the connection is simply closed (CONNECT errors may be
    mapped with :func:`plugin_host.mqtt.v3_connack_return_code`).

    ``packet_type`` is the type of the offending packet when it is known (for logging).
    ``parsed`` holds the packets :meth:`Parser.feed` completed, in the same call, before the
    bad one (a broker may process them before closing the connection).
    """

    __slots__ = ("message", "packet_type", "parsed", "reason_code")

    def __init__(self, reason_code: int, message: str, *, packet_type: int | None = None) -> None:
        super().__init__(reason_code, message)
        self.reason_code = int(reason_code)
        self.message = message
        self.packet_type = packet_type
        self.parsed: list[Any] = []

    def __str__(self) -> str:
        return f"{self.message} (reason code 0x{self.reason_code:02X})"

    def __repr__(self) -> str:
        return f"MQTTError(0x{self.reason_code:02X}, {self.message!r})"
