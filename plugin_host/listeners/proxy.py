"""PROXY protocol v1 (text) and v2 (binary) header parser, sans-IO.

A load balancer (HAProxy, AWS NLB, nginx ``proxy_protocol``...) in front of the broker writes one
PROXY header at the start of every TCP connection, before anything else (before the TLS
ClientHello on an ``ssl`` listener). It carries the address of the real client, and with v2
optional TLVs, among them what the balancer learnt when it terminated TLS itself (the client
certificate's common name). Specification: haproxy's ``doc/proxy-protocol.txt``.

Usage (the IO side lives in :mod:`plugin_host.listeners.handshake`)::

    parser = ProxyHeaderParser()
    while (header := parser.feed(await stream.receive_some(parser.wanted))) is None:
        pass
    header.source          # ("203.0.113.7", 51234), or None (LOCAL / UNKNOWN)
    parser.leftover        # bytes read past the header: the start of the client's data

``feed`` raises :class:`ProxyProtocolError` on anything malformed; the connection must then be
closed. ``wanted`` never asks for bytes past a v2 header (its length is known after 16
bytes); a v1 header ends at CRLF somewhere within 107 bytes, so a read may go past it and the
surplus is handed back as ``leftover``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

__all__ = [
    "V1_MAX_LENGTH",
    "V2_SIGNATURE",
    "ProxyHeader",
    "ProxyHeaderParser",
    "ProxyProtocolError",
    "ProxySSL",
]

#: The 12 bytes every v2 header starts with.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: A v1 header is at most 107 bytes, CRLF included (the spec's worst case, TCP6).
V1_MAX_LENGTH = 107
#: v2 length field limit we accept: addresses (216 bytes for AF_UNIX) plus TLVs. The field
#: allows 65535; real balancers send a few hundred bytes at most.
V2_MAX_PAYLOAD = 4096

_V1_PREFIX = b"PROXY "
_V2_FIXED = 16  # signature, version/command, family/protocol, length

# v2 TLV types (haproxy doc section 2.2).
PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CN = 0x22
PP2_SUBTYPE_SSL_CIPHER = 0x23
PP2_SUBTYPE_SSL_SIG_ALG = 0x24
PP2_SUBTYPE_SSL_KEY_ALG = 0x25
PP2_TYPE_NETNS = 0x30
# PP2_TYPE_SSL client flags.
PP2_CLIENT_SSL = 0x01
PP2_CLIENT_CERT_CONN = 0x02
PP2_CLIENT_CERT_SESS = 0x04


class ProxyProtocolError(ValueError):
    """A malformed or unsupported PROXY header (the connection is closed).

    ``peer_closed``: the peer closed the connection before the header was complete.
    """

    def __init__(self, message: str, *, peer_closed: bool = False) -> None:
        super().__init__(message)
        self.peer_closed = peer_closed


@dataclass(frozen=True, slots=True)
class ProxySSL:
    """What a v2 ``PP2_TYPE_SSL`` TLV says about the client's TLS connection to the balancer."""

    client: int  # PP2_CLIENT_* bits
    verify: int  # 0 = the client certificate was verified
    version: str | None = None
    cn: str | None = None
    cipher: str | None = None

    @property
    def verified_cn(self) -> str | None:
        """The CN, only when the client used TLS, presented a certificate and it verified."""
        has_cert = self.client & (PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS)
        if self.client & PP2_CLIENT_SSL and has_cert and self.verify == 0:
            return self.cn
        return None


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed PROXY header.

    ``source``/``destination`` are ``(ip, port)`` of the real client and of the address it
    connected to, or None when the header does not carry them (v2 LOCAL, family UNSPEC or
    AF_UNIX, v1 UNKNOWN): the receiver then uses the real socket's addresses.
    """

    version: int
    local: bool = False  # v2 LOCAL command (the balancer's own health check)
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None
    tlvs: dict[int, bytes] = field(default_factory=dict)
    ssl: ProxySSL | None = None
    length: int = 0  # bytes of the header on the wire


class ProxyHeaderParser:
    """Incremental parser for one PROXY header (v1 or v2); see the module docstring."""

    __slots__ = ("_buf", "_need", "header", "leftover")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need = _V2_FIXED  # v2: the whole header once its length is known
        self.header: ProxyHeader | None = None
        self.leftover = b""

    @property
    def wanted(self) -> int:
        """How many bytes to ask the stream for next (never past a v2 header)."""
        buf = self._buf
        if buf[:1] == b"P":  # v1 (or garbage, refused by feed)
            return max(1, V1_MAX_LENGTH - len(buf))
        return max(1, self._need - len(buf))

    def feed(self, data: bytes | bytearray) -> ProxyHeader | None:
        """Add received bytes; the header once complete, else None (feed more).

        An empty ``data`` (the peer closed) before the header is complete is an error.
        """
        if self.header is not None:
            raise ProxyProtocolError("header already parsed")
        if not data:
            raise ProxyProtocolError(
                f"connection closed after {len(self._buf)} bytes of the PROXY header",
                peer_closed=True,
            )
        buf = self._buf
        buf += data
        n = min(len(buf), len(V2_SIGNATURE))
        if buf[:n] == V2_SIGNATURE[:n]:
            return self._feed_v2()
        n = min(len(buf), len(_V1_PREFIX))
        if buf[:n] == _V1_PREFIX[:n]:
            return self._feed_v1()
        raise ProxyProtocolError(f"not a PROXY header (starts with {bytes(buf[:16])!r})")

    # ------------------------------------------------------------------------------ v1

    def _feed_v1(self) -> ProxyHeader | None:
        buf = self._buf
        end = buf.find(b"\r\n")
        if end < 0:
            if len(buf) >= V1_MAX_LENGTH:
                raise ProxyProtocolError("v1 header without CRLF within 107 bytes")
            if b"\n" in buf or b"\r" in buf[:-1]:
                raise ProxyProtocolError("v1 header with a stray CR or LF")
            return None
        if end + 2 > V1_MAX_LENGTH:
            raise ProxyProtocolError("v1 header longer than 107 bytes")
        line = bytes(buf[len(_V1_PREFIX) : end])
        self.leftover = bytes(buf[end + 2 :])
        self.header = _parse_v1(line, end + 2)
        return self.header

    # ------------------------------------------------------------------------------ v2

    def _feed_v2(self) -> ProxyHeader | None:
        buf = self._buf
        if len(buf) < _V2_FIXED:
            return None
        length = (buf[14] << 8) | buf[15]
        if length > V2_MAX_PAYLOAD:
            raise ProxyProtocolError(f"v2 header length {length} exceeds {V2_MAX_PAYLOAD}")
        self._need = _V2_FIXED + length
        if len(buf) < self._need:
            return None
        self.leftover = bytes(buf[self._need :])
        self.header = _parse_v2(bytes(buf[: self._need]))
        return self.header


def _parse_v1(line: bytes, length: int) -> ProxyHeader:
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise ProxyProtocolError("v1 header is not ASCII") from None
    if text.startswith("UNKNOWN"):
        return ProxyHeader(version=1, length=length)  # the rest of the line is ignored
    parts = text.split(" ")
    if len(parts) != 5:
        raise ProxyProtocolError(f"v1 header needs 5 fields after PROXY, got {text!r}")
    proto, src, dst, sport, dport = parts
    if proto not in ("TCP4", "TCP6"):
        raise ProxyProtocolError(f"v1 protocol {proto!r} (TCP4, TCP6 or UNKNOWN)")
    version = 4 if proto == "TCP4" else 6
    return ProxyHeader(
        version=1,
        source=(_v1_ip(src, version), _v1_port(sport)),
        destination=(_v1_ip(dst, version), _v1_port(dport)),
        length=length,
    )


def _v1_ip(text: str, version: int) -> str:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyProtocolError(f"v1 address {text!r} is not an IP address") from None
    if ip.version != version:
        raise ProxyProtocolError(f"v1 address {text!r} is not IPv{version}")
    return str(ip)


def _v1_port(text: str) -> int:
    # Decimal, no sign, no leading zero (the spec's rule), 0..65535.
    if not text.isdigit() or not text.isascii() or (len(text) > 1 and text[0] == "0"):
        raise ProxyProtocolError(f"v1 port {text!r} is not a decimal port")
    port = int(text)
    if port > 65535:
        raise ProxyProtocolError(f"v1 port {port} out of range")
    return port


_ADDRESS_LENGTHS = {1: 12, 2: 36, 3: 216}  # INET, INET6, UNIX


def _parse_v2(data: bytes) -> ProxyHeader:
    ver_cmd, fam = data[12], data[13]
    if ver_cmd >> 4 != 2:
        raise ProxyProtocolError(f"v2 version {ver_cmd >> 4} (only 2 exists)")
    command = ver_cmd & 0x0F
    if command not in (0, 1):
        raise ProxyProtocolError(f"v2 command {command} (LOCAL=0 or PROXY=1)")
    family, transport = fam >> 4, fam & 0x0F
    if family > 3 or transport > 2:
        raise ProxyProtocolError(f"v2 address family/protocol byte 0x{fam:02x} is unknown")
    body = data[_V2_FIXED:]
    addr_len = _ADDRESS_LENGTHS.get(family, 0)
    if len(body) < addr_len:
        raise ProxyProtocolError(
            f"v2 header of {len(body)} bytes is too short for its addresses ({addr_len})"
        )
    source = destination = None
    if command == 1 and transport == 1:  # PROXY over STREAM: the addresses count
        if family == 1:
            source = (str(ipaddress.IPv4Address(body[0:4])), int.from_bytes(body[8:10], "big"))
            destination = (
                str(ipaddress.IPv4Address(body[4:8])),
                int.from_bytes(body[10:12], "big"),
            )
        elif family == 2:
            source = (
                str(ipaddress.IPv6Address(body[0:16])),
                int.from_bytes(body[32:34], "big"),
            )
            destination = (
                str(ipaddress.IPv6Address(body[16:32])),
                int.from_bytes(body[34:36], "big"),
            )
        # AF_UNIX / UNSPEC: no IP address to report; the socket's own peer is used.
    tlvs = _parse_tlvs(body[addr_len:])
    ssl = _parse_ssl(tlvs[PP2_TYPE_SSL]) if PP2_TYPE_SSL in tlvs else None
    return ProxyHeader(
        version=2,
        local=command == 0,
        source=source,
        destination=destination,
        tlvs=tlvs,
        ssl=ssl,
        length=len(data),
    )


def _parse_tlvs(data: bytes) -> dict[int, bytes]:
    """Type-length-value records; a record running past the header is malformed."""
    tlvs: dict[int, bytes] = {}
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 3:
            raise ProxyProtocolError("v2 TLV truncated (needs type and length)")
        kind = data[pos]
        length = (data[pos + 1] << 8) | data[pos + 2]
        start = pos + 3
        if start + length > end:
            raise ProxyProtocolError(f"v2 TLV 0x{kind:02x} of length {length} runs past the header")
        if kind != PP2_TYPE_NOOP:
            tlvs[kind] = data[start : start + length]
        pos = start + length
    return tlvs


def _parse_ssl(value: bytes) -> ProxySSL:
    if len(value) < 5:
        raise ProxyProtocolError("v2 SSL TLV shorter than 5 bytes")
    client = value[0]
    verify = int.from_bytes(value[1:5], "big")
    sub = _parse_tlvs(value[5:])
    return ProxySSL(
        client=client,
        verify=verify,
        version=_text(sub.get(PP2_SUBTYPE_SSL_VERSION)),
        cn=_text(sub.get(PP2_SUBTYPE_SSL_CN)),
        cipher=_text(sub.get(PP2_SUBTYPE_SSL_CIPHER)),
    )


def _text(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ProxyProtocolError("v2 SSL sub-TLV is not UTF-8") from None
