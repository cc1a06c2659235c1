"""The sans-IO PROXY protocol parser: v1 text and v2 binary headers, fed in any pieces."""

from __future__ import annotations

import contextlib
import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugin_host.listeners.proxy import (
    PP2_CLIENT_CERT_CONN,
    PP2_CLIENT_SSL,
    PP2_SUBTYPE_SSL_CN,
    PP2_SUBTYPE_SSL_VERSION,
    PP2_TYPE_ALPN,
    PP2_TYPE_NOOP,
    PP2_TYPE_SSL,
    V2_SIGNATURE,
    ProxyHeaderParser,
    ProxyProtocolError,
)


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + struct.pack("!H", len(value)) + value


def v2(
    *,
    command: int = 1,
    family: int = 1,
    transport: int = 1,
    src: str = "203.0.113.7",
    dst: str = "10.0.0.1",
    sport: int = 51234,
    dport: int = 1883,
    tlvs: bytes = b"",
    version: int = 2,
) -> bytes:
    if family == 1:
        addresses = (
            ipaddress.IPv4Address(src).packed
            + ipaddress.IPv4Address(dst).packed
            + struct.pack("!HH", sport, dport)
        )
    elif family == 2:
        addresses = (
            ipaddress.IPv6Address(src).packed
            + ipaddress.IPv6Address(dst).packed
            + struct.pack("!HH", sport, dport)
        )
    elif family == 3:
        addresses = b"/tmp/a".ljust(108, b"\0") + b"/tmp/b".ljust(108, b"\0")
    else:
        addresses = b""
    body = addresses + tlvs
    return (
        V2_SIGNATURE
        + bytes([(version << 4) | command, (family << 4) | transport])
        + struct.pack("!H", len(body))
        + body
    )


def ssl_tlv(
    cn: str | bytes | None, *, client: int = PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN, verify=0
) -> bytes:
    sub = tlv(PP2_SUBTYPE_SSL_VERSION, b"TLSv1.3")
    if cn is not None:
        sub += tlv(PP2_SUBTYPE_SSL_CN, cn.encode() if isinstance(cn, str) else cn)
    return tlv(PP2_TYPE_SSL, bytes([client]) + struct.pack("!I", verify) + sub)


def parse_all(data: bytes):
    parser = ProxyHeaderParser()
    header = parser.feed(data)
    assert header is not None
    return header, parser.leftover


# ------------------------------------------------------------------------------------ v1


@pytest.mark.parametrize(
    "line, source, destination",
    [
        (
            b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 1883\r\n",
            ("203.0.113.7", 51234),
            ("10.0.0.1", 1883),
        ),
        (b"PROXY TCP6 2001:db8::7 ::1 0 65535\r\n", ("2001:db8::7", 0), ("::1", 65535)),
        (b"PROXY UNKNOWN\r\n", None, None),
        (b"PROXY UNKNOWN anything goes here\r\n", None, None),
    ],
)
def test_v1_headers(line, source, destination) -> None:
    header, leftover = parse_all(line + b"\x10\x0cMQTT")
    assert (header.version, header.source, header.destination) == (1, source, destination)
    assert header.length == len(line)
    assert leftover == b"\x10\x0cMQTT"  # the client's data after the header is kept


def test_v1_worst_case_length_is_accepted() -> None:
    ip = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    line = f"PROXY TCP6 {ip} {ip} 65535 65535\r\n".encode()
    assert len(line) == 104
    header, _ = parse_all(line)
    assert header.source == (ip, 65535)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "stray CR or LF"),
        (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "protocol 'TCP5'"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "needs 5 fields"),
        (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "needs 5 fields"),
        (b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n", "not an IP address"),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "is not IPv4"),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "is not IPv6"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "not a decimal port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "not a decimal port"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "out of range"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 \xd9\xa1 2\r\n", "not ASCII"),
        (b"PROXY UNKNOWN " + b"x" * 100 + b"\r\n", "107 bytes"),
        (b"GET / HTTP/1.1\r\n", "not a PROXY header"),
        (b"\x10\x0c\x00\x04MQTT", "not a PROXY header"),
    ],
)
def test_v1_malformed(data, message) -> None:
    with pytest.raises(ProxyProtocolError) as info:
        ProxyHeaderParser().feed(data)
    assert message in str(info.value)


def test_v1_without_crlf_within_107_bytes() -> None:
    parser = ProxyHeaderParser()
    assert parser.feed(b"PROXY UNKNOWN ") is None
    with pytest.raises(ProxyProtocolError, match="without CRLF within 107 bytes"):
        parser.feed(b"x" * 100)


def test_eof_before_the_header_is_complete() -> None:
    parser = ProxyHeaderParser()
    parser.feed(b"PROXY TCP4 1.2")
    with pytest.raises(ProxyProtocolError, match="closed after 14 bytes"):
        parser.feed(b"")


# ------------------------------------------------------------------------------------ v2


def test_v2_ipv4_with_tlvs() -> None:
    data = v2(tlvs=tlv(PP2_TYPE_ALPN, b"mqtt") + tlv(PP2_TYPE_NOOP, b"\0" * 3))
    header, leftover = parse_all(data + b"rest")
    assert header.version == 2 and not header.local
    assert header.source == ("203.0.113.7", 51234)
    assert header.destination == ("10.0.0.1", 1883)
    assert header.tlvs == {PP2_TYPE_ALPN: b"mqtt"}  # NOOP padding is skipped
    assert header.ssl is None and header.length == len(data)
    assert leftover == b"rest"


def test_v2_ipv6() -> None:
    header, _ = parse_all(v2(family=2, src="2001:db8::1", dst="2001:db8::2", sport=1, dport=2))
    assert header.source == ("2001:db8::1", 1)
    assert header.destination == ("2001:db8::2", 2)


@pytest.mark.parametrize(
    "kwargs",
    [{"command": 0}, {"family": 0}, {"family": 3}, {"transport": 2}],
    ids=["local", "unspec", "unix", "dgram"],
)
def test_v2_without_a_usable_address(kwargs) -> None:
    header, _ = parse_all(v2(**kwargs))
    assert header.source is None and header.destination is None
    assert header.local is (kwargs.get("command") == 0)


def test_v2_ssl_cn() -> None:
    header, _ = parse_all(v2(tlvs=ssl_tlv("device-7")))
    assert header.ssl is not None
    assert header.ssl.cn == "device-7" and header.ssl.version == "TLSv1.3"
    assert header.ssl.verified_cn == "device-7"


@pytest.mark.parametrize(
    "client, verify",
    [(PP2_CLIENT_SSL, 0), (PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN, 1), (PP2_CLIENT_CERT_CONN, 0)],
    ids=["no-certificate", "not-verified", "not-tls"],
)
def test_v2_ssl_cn_is_only_trusted_when_verified(client, verify) -> None:
    header, _ = parse_all(v2(tlvs=ssl_tlv("mallory", client=client, verify=verify)))
    assert header.ssl is not None and header.ssl.cn == "mallory"
    assert header.ssl.verified_cn is None


@pytest.mark.parametrize(
    "data, message",
    [
        (v2(version=1), "v2 version 1"),
        (v2(command=2), "v2 command 2"),
        (v2(family=4), "family/protocol byte 0x41"),
        (v2(transport=3), "family/protocol byte 0x13"),
        (v2(tlvs=b"\x01\x00"), "TLV truncated"),
        (v2(tlvs=b"\x01\x00\x09abc"), "runs past the header"),
        (v2(tlvs=tlv(PP2_TYPE_SSL, b"\x01\x00")), "SSL TLV shorter than 5 bytes"),
        (v2(tlvs=ssl_tlv(b"\xff\xfe")), "not UTF-8"),
        (V2_SIGNATURE + b"\x21\x11\x00\x04" + b"\0" * 4, "too short for its addresses"),
        (V2_SIGNATURE + b"\x21\x11\xff\xff", "exceeds 4096"),
    ],
)
def test_v2_malformed(data, message) -> None:
    with pytest.raises(ProxyProtocolError) as info:
        ProxyHeaderParser().feed(data)
    assert message in str(info.value)


def test_v2_wanted_never_reads_past_the_header() -> None:
    data = v2(tlvs=tlv(PP2_TYPE_ALPN, b"mqtt"))
    parser = ProxyHeaderParser()
    assert parser.wanted == 16
    assert parser.feed(data[:16]) is None
    assert parser.wanted == len(data) - 16
    assert parser.feed(data[16:]) is not None
    assert parser.leftover == b""


def test_feed_after_the_header_is_an_error() -> None:
    parser = ProxyHeaderParser()
    parser.feed(b"PROXY UNKNOWN\r\n")
    with pytest.raises(ProxyProtocolError, match="already parsed"):
        parser.feed(b"x")


# ------------------------------------------------------------------------------ properties

HEADERS = [
    b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 1883\r\n",
    b"PROXY TCP6 2001:db8::7 ::1 0 65535\r\n",
    b"PROXY UNKNOWN\r\n",
    v2(),
    v2(family=2, src="::1", dst="::2"),
    v2(tlvs=ssl_tlv("cn")),
    v2(command=0),
]


@given(
    index=st.integers(0, len(HEADERS) - 1),
    cuts=st.lists(st.integers(1, 200), max_size=8),
    trailer=st.binary(max_size=20),
)
def test_any_split_gives_the_same_header(index, cuts, trailer) -> None:
    data = HEADERS[index] + trailer
    expected, expected_leftover = parse_all(data)
    parser = ProxyHeaderParser()
    pos, header = 0, None
    cuts = iter(cuts)
    while header is None:
        size = min(next(cuts, 1000), parser.wanted)  # a reader never asks for more
        header = parser.feed(data[pos : pos + size])
        pos += size
    assert header == expected
    assert parser.leftover + data[pos:] == expected_leftover
    if HEADERS[index].startswith(V2_SIGNATURE):
        assert parser.leftover == b""  # v2: exact reads


@given(st.binary(min_size=1, max_size=300))
def test_garbage_only_ever_raises_proxy_protocol_error(data) -> None:
    with contextlib.suppress(ProxyProtocolError):
        ProxyHeaderParser().feed(data)


@given(st.binary(max_size=250))
def test_v2_garbage_after_the_signature(body) -> None:
    with contextlib.suppress(ProxyProtocolError):
        ProxyHeaderParser().feed(V2_SIGNATURE + body)
