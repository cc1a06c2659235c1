"""MQTT 3.1.1 wire helpers for the load generator: precomputed packets and cheap counters.

Only the handful of packets a load generator sends are built here, as plain ``bytes`` computed
once per client (the hot loops then only call ``send_all``). Everything every broker under
test understands is MQTT 3.1.1 (amqtt speaks nothing newer), so that is what we speak.

Receiving is deliberately lazy: when every packet a socket can receive has the same known size
(fixed topic length, fixed payload), counting bytes is exact and costs nothing per message;
``FixedRecords`` checks the packet type at record boundaries so a desynchronised stream is an
error, never a silently wrong figure. ``FrameReader`` is the proper incremental parser for
streams whose packet sizes are not known in advance (handshakes, latency samples).
"""

from __future__ import annotations

import struct

CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBSCRIBE = 0x82  # type 8 with the mandatory flags 0b0010
SUBACK = 0x90
DISCONNECT_PACKET = b"\xe0\x00"

_PROTOCOL_311 = b"\x00\x04MQTT\x04"


def varint(n: int) -> bytes:
    """The MQTT "remaining length" encoding of ``n``."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + varint(len(body)) + body


def connect(
    client_id: str,
    *,
    clean_session: bool = True,
    keepalive: int = 600,
    username: str | None = None,
    password: str | None = None,
) -> bytes:
    """A CONNECT packet (MQTT 3.1.1)."""
    flags = 0x02 if clean_session else 0x00
    payload = _str(client_id)
    if username is not None:
        flags |= 0x80
        payload += _str(username)
        if password is not None:
            flags |= 0x40
            payload += _str(password)
    return _packet(CONNECT, _PROTOCOL_311 + bytes([flags]) + struct.pack("!H", keepalive) + payload)


def subscribe(packet_id: int, topic_filter: str, qos: int) -> bytes:
    """A SUBSCRIBE packet for one filter."""
    return _packet(SUBSCRIBE, struct.pack("!H", packet_id) + _str(topic_filter) + bytes([qos]))


def publish(topic: str, payload: bytes, *, qos: int = 0, packet_id: int = 0) -> bytes:
    """A PUBLISH packet (never retained, never DUP)."""
    body = _str(topic)
    if qos:
        body += struct.pack("!H", packet_id)
    return _packet(PUBLISH | (qos << 1), body + payload)


def publish_size(topic: str, payload_len: int, qos: int) -> int:
    """Size on the wire of a PUBLISH with this topic and payload length (what a subscriber gets)."""
    body = 2 + len(topic.encode()) + (2 if qos else 0) + payload_len
    return 1 + len(varint(body)) + body


def publish_packet_id_offset(topic: str, payload_len: int) -> int:
    """Offset of the packet id inside a QoS 1/2 PUBLISH with this topic and payload length."""
    body = 2 + len(topic.encode()) + 2 + payload_len
    return 1 + len(varint(body)) + 2 + len(topic.encode())


def qos1_batches(topic: str, payload: bytes, *, batch: int, ids: int) -> tuple[list[bytes], int]:
    """Pre-encoded QoS 1 PUBLISH batches cycling through packet ids ``1..ids``.

    ``ids`` is rounded up to a multiple of ``batch``; returns ``(batches, ids)``. A publisher
    whose window of outstanding PUBACKs is well below ``ids`` never reuses an id in flight
    (brokers acknowledge a connection's publishes in order).
    """
    n_batches = -(-ids // batch)
    out = []
    pid = 1
    for _ in range(n_batches):
        parts = []
        for _ in range(batch):
            parts.append(publish(topic, payload, qos=1, packet_id=pid))
            pid += 1
        out.append(b"".join(parts))
    return out, n_batches * batch


class FrameReader:
    """Incremental MQTT frame splitter: ``feed(data)`` returns ``[(first_byte, body), ...]``."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        frames = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            length = 0
            shift = 0
            i = pos + 1
            complete = False
            while i < end:
                byte = buf[i]
                i += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    complete = True
                    break
                shift += 7
                if shift > 21:
                    raise ProtocolMismatch("malformed remaining length from broker")
            if not complete or i + length > end:
                break
            frames.append((buf[pos], bytes(buf[i : i + length])))
            pos = i + length
        if pos:
            del buf[:pos]
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame still buffered."""
        return len(self._buf)


class ProtocolMismatch(Exception):
    """The broker sent something the benchmark did not expect (the figure would be wrong)."""


class FixedRecords:
    """Counts fixed-size packets in a byte stream, checking the type byte at every boundary.

    ``allowed_first`` is the set of acceptable first bytes (e.g. PUBLISH QoS 0 ``{0x30}``).
    ``feed(data)`` returns the number of records completed by ``data``; ``feed_acks(data)``
    (with ``packet_id_at``) returns the PUBACKs to send for them instead (QoS 1 subscribers),
    built with C-level slicing so the per-message cost stays far below the broker's.
    """

    __slots__ = ("_allowed_delete", "_allowed_first", "_buf", "count", "pid_offset", "size")

    def __init__(self, size: int, allowed_first: bytes, packet_id_at: int | None = None) -> None:
        self.size = size
        self._allowed_first = allowed_first
        self._buf = b""
        self.count = 0
        self.pid_offset = packet_id_at

    def _check(self, firsts: bytes) -> None:
        if firsts.translate(None, self._allowed_first):
            bad = next(b for b in firsts if b not in self._allowed_first)
            raise ProtocolMismatch(
                f"unexpected packet type byte 0x{bad:02x} where a {self.size}-byte packet "
                f"starting with {self._allowed_first.hex()} was expected"
            )

    def _records(self, data: bytes) -> tuple[bytes, int, int]:
        """Join ``data`` to the buffered bytes, check and count the records completed, keep
        the rest: (the joined bytes, how many records, where they end)."""
        if self._buf:
            data = self._buf + data
        size = self.size
        n, rest = divmod(len(data), size)
        end = n * size
        self._check(data[0:end:size])
        self._buf = data[end:] if rest else b""
        self.count += n
        return data, n, end

    def feed(self, data: bytes) -> int:
        """Count records completed by ``data`` (no acks)."""
        return self._records(data)[1]

    def feed_acks(self, data: bytes) -> bytes:
        """Count records completed by ``data`` and return one PUBACK per record."""
        data, n, end = self._records(data)
        if not n:
            return b""
        size = self.size
        off = self.pid_offset
        assert off is not None
        acks = bytearray(4 * n)
        acks[0::4] = b"\x40" * n
        acks[1::4] = b"\x02" * n
        acks[2::4] = data[off:end:size]
        acks[3::4] = data[off + 1 : end : size]
        return bytes(acks)

    @property
    def partial(self) -> int:
        """Bytes of an incomplete record still buffered."""
        return len(self._buf)
