"""MQTT data representations: variable byte integers, UTF-8 strings, binary data."""

from __future__ import annotations

from plugin_host.mqtt.errors import MQTTError

MALFORMED = 0x81

#: Largest value a variable byte integer can hold (4 bytes), also the largest remaining length.
MAX_VARINT = 268_435_455
#: Largest UTF-8 string / binary data length (2-byte length prefix).
MAX_STRING_BYTES = 65_535


def encode_varint(value: int) -> bytes:
    """Encode ``value`` (0..268435455) as an MQTT variable byte integer."""
    if value < 128:
        if value < 0:
            raise ValueError(f"variable byte integer out of range: {value}")
        return bytes((value,))
    if value < 16_384:
        return bytes((value & 0x7F | 0x80, value >> 7))
    if value < 2_097_152:
        return bytes((value & 0x7F | 0x80, (value >> 7) & 0x7F | 0x80, value >> 14))
    if value <= MAX_VARINT:
        return bytes(
            (
                value & 0x7F | 0x80,
                (value >> 7) & 0x7F | 0x80,
                (value >> 14) & 0x7F | 0x80,
                value >> 21,
            )
        )
    raise ValueError(f"variable byte integer out of range: {value}")


def varint_size(value: int) -> int:
    """Number of bytes :func:`encode_varint` produces for ``value``."""
    if value < 128:
        return 1
    if value < 16_384:
        return 2
    if value < 2_097_152:
        return 3
    return 4


def decode_varint(data: bytes | bytearray | memoryview, pos: int = 0) -> tuple[int, int]:
    """Decode a variable byte integer at ``data[pos]``; return ``(value, position after it)``.

    Raises :class:`MQTTError` 0x81 when the data ends inside the integer or when it is longer
    than 4 bytes (detected at the 4th byte, without reading a 5th).
    """
    value = 0
    shift = 0
    n = len(data)
    for i in range(4):
        if pos + i >= n:
            raise MQTTError(MALFORMED, "truncated variable byte integer")
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos + i + 1
        shift += 7
    raise MQTTError(MALFORMED, "variable byte integer longer than 4 bytes")


def decode_utf8(raw: bytes | memoryview, what: str = "string") -> str:
    """Decode an MQTT UTF-8 string: strict UTF-8 (so no surrogates) and no U+0000."""
    try:
        text = str(raw, "utf-8")
    except UnicodeDecodeError:
        raise MQTTError(MALFORMED, f"{what} is not valid UTF-8") from None
    if "\x00" in text:
        raise MQTTError(MALFORMED, f"{what} contains U+0000")
    return text


def encode_utf8(text: str) -> bytes:
    """Encode an MQTT UTF-8 string with its 2-byte length prefix."""
    raw = text.encode("utf-8")
    n = len(raw)
    if n > MAX_STRING_BYTES:
        raise ValueError(f"string too long for MQTT ({n} bytes)")
    return n.to_bytes(2, "big") + raw


def encode_binary(data: bytes) -> bytes:
    """Encode MQTT binary data with its 2-byte length prefix."""
    n = len(data)
    if n > MAX_STRING_BYTES:
        raise ValueError(f"binary data too long for MQTT ({n} bytes)")
    return n.to_bytes(2, "big") + bytes(data)


class Reader:
    """Bounds-checked cursor over one packet body (used for the less frequent packet types).

    Every read past the end raises :class:`MQTTError` 0x81 (truncated packet).
    """

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self.data = data
        self.pos = pos
        self.end = end

    def remaining(self) -> int:
        return self.end - self.pos

    def _need(self, n: int) -> int:
        p = self.pos
        if p + n > self.end:
            raise MQTTError(MALFORMED, "packet shorter than its contents")
        self.pos = p + n
        return p

    def u8(self) -> int:
        p = self._need(1)
        return self.data[p]

    def u16(self) -> int:
        p = self._need(2)
        d = self.data
        return (d[p] << 8) | d[p + 1]

    def u32(self) -> int:
        p = self._need(4)
        return int.from_bytes(self.data[p : p + 4], "big")

    def varint(self) -> int:
        value, pos = decode_varint(self.data, self.pos)
        if pos > self.end:
            raise MQTTError(MALFORMED, "packet shorter than its contents")
        self.pos = pos
        return value

    def binary(self) -> bytes:
        n = self.u16()
        p = self._need(n)
        return self.data[p : p + n]

    def utf8(self, what: str = "string") -> str:
        n = self.u16()
        p = self._need(n)
        return decode_utf8(self.data[p : p + n], what)

    def rest(self) -> bytes:
        p = self.pos
        self.pos = self.end
        return self.data[p : self.end]
