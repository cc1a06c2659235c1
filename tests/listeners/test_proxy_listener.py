"""``proxy_protocol = on``: the address in a PROXY v1/v2 header becomes the client's peer.

A raw socket plays the load balancer: it writes the header, then the client's bytes (MQTT,
or a TLS handshake on an ``ssl`` listener, or a WebSocket upgrade on ``ws``). Hooks see the
real client as ``peer_addr``/``peer_port``; a malformed or missing header closes that socket
(logged once) and nothing else.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest
import trio

from plugin_host.listeners.proxy import (
    PP2_CLIENT_CERT_CONN,
    PP2_CLIENT_SSL,
    PP2_SUBTYPE_SSL_CN,
    PP2_TYPE_SSL,
    V2_SIGNATURE,
)
from plugin_host.mqtt import Connack, Connect, encode
from plugin_host.settings import ListenerConfig
from plugin_host.testing import open_client, run_broker

FAILED = "proxy_header_invalid"


def proxied(name: str = "lb", kind: str = "tcp", **options) -> ListenerConfig:
    return ListenerConfig(
        kind=kind, name=name, host="127.0.0.1", port=0, proxy_protocol=True, **options
    )


def v1(src: str, sport: int, dport: int = 1883) -> bytes:
    family, dst = ("TCP6", "::1") if ":" in src else ("TCP4", "10.0.0.1")
    return f"PROXY {family} {src} {dst} {sport} {dport}\r\n".encode()


def v2(src: str | None, sport: int = 0, *, cn: str | None = None, local: bool = False) -> bytes:
    tlvs = b""
    if cn is not None:
        sub = bytes([PP2_SUBTYPE_SSL_CN]) + struct.pack("!H", len(cn)) + cn.encode()
        value = bytes([PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN]) + struct.pack("!I", 0) + sub
        tlvs = bytes([PP2_TYPE_SSL]) + struct.pack("!H", len(value)) + value
    if src is None:
        body, family = b"", 0x00
    elif ":" in src:
        ip = ipaddress.IPv6Address(src).packed
        body, family = (
            ip + ipaddress.IPv6Address("::1").packed + struct.pack("!HH", sport, 1883),
            0x21,
        )
    else:
        ip = ipaddress.IPv4Address(src).packed
        body, family = ip + bytes([10, 0, 0, 1]) + struct.pack("!HH", sport, 1883), 0x11
    body += tlvs
    command = 0x20 if local else 0x21
    return V2_SIGNATURE + bytes([command, family]) + struct.pack("!H", len(body)) + body


async def closed_by_server(stream: trio.SocketStream) -> None:
    """Wait until the server closes ``stream`` (EOF, or a reset when bytes were left unread)."""
    with trio.fail_after(10):
        try:
            while await stream.receive_some(100):
                pass
        except trio.BrokenResourceError:
            pass
    await stream.aclose()


async def connect_through(address, header: bytes, **client_options):
    """A socket that sent ``header``; the caller speaks MQTT over it with open_client."""
    stream = await trio.open_tcp_stream(*address)
    await stream.send_all(header)
    return open_client(address, stream=stream, **client_options)


@pytest.mark.parametrize(
    "header, peer",
    [
        (v1("203.0.113.7", 51234), ("203.0.113.7", 51234)),
        (v1("2001:db8::7", 4242), ("2001:db8::7", 4242)),
        (v2("198.51.100.9", 60000), ("198.51.100.9", 60000)),
        (v2("2001:db8::9", 1), ("2001:db8::9", 1)),
    ],
    ids=["v1-ipv4", "v1-ipv6", "v2-ipv4", "v2-ipv6"],
)
async def test_header_address_reaches_hooks_as_peer(recorder, header, peer) -> None:
    async with run_broker(listeners=[proxied()], plugins={"rec": recorder}) as broker:
        client_cm = await connect_through(broker.address, header, client_id="real")
        async with client_cm as client:
            await client.sync()
            info = broker.host.session("real")
            assert info is not None and (info.peer_addr, info.peer_port) == peer
    args = recorder.last("real")
    assert (args["peer_addr"], args["peer_port"]) == peer


async def test_header_and_connect_in_one_segment() -> None:
    """Bytes read past a v1 header are the client's: nothing is lost."""
    async with run_broker(listeners=[proxied()]) as broker:
        stream = await trio.open_tcp_stream(*broker.address)
        connect = encode(Connect(client_id="together"), 4)
        await stream.send_all(v1("203.0.113.1", 1000) + connect)
        data = b""
        with trio.fail_after(10):
            while len(data) < 4:
                data += await stream.receive_some(100)
        assert data == b"\x20\x02\x00\x00"  # CONNACK accepted
        await stream.aclose()
        assert broker.host.session("together").peer_addr == "203.0.113.1"


async def test_v2_local_and_unknown_keep_the_socket_address(recorder) -> None:
    async with run_broker(listeners=[proxied()], plugins={"rec": recorder}) as broker:
        for client_id, header in (
            ("health", v2("192.0.2.1", 5, local=True)),
            ("unspec", v2(None)),
            ("unknown", b"PROXY UNKNOWN\r\n"),
        ):
            async with await connect_through(broker.address, header, client_id=client_id):
                pass
            assert recorder.last(client_id)["peer_addr"] == "127.0.0.1"


@pytest.mark.parametrize("use_cn", [True, False])
async def test_v2_ssl_cn_as_username(recorder, use_cn) -> None:
    listener = proxied(proxy_protocol_use_cn_as_username=use_cn)
    async with run_broker(listeners=[listener], plugins={"rec": recorder}) as broker:
        header = v2("203.0.113.5", 7, cn="device-9")
        async with await connect_through(
            broker.address, header, client_id="cn", username="from-connect"
        ):
            pass
    assert recorder.last("cn")["username"] == ("device-9" if use_cn else "from-connect")


@pytest.mark.parametrize(
    "header, reason",
    [
        (b"GET / HTTP/1.1\r\n\r\n", "not a PROXY header"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n", "out of range"),
        (encode(Connect(client_id="no-header"), 4), "not a PROXY header"),
        (V2_SIGNATURE + b"\x31\x11\x00\x00", "v2 version 3"),
    ],
)
async def test_malformed_header_closes_that_socket_only(logs, header, reason) -> None:
    async with (
        run_broker(listeners=[proxied()]) as broker,
        await connect_through(broker.address, v1("203.0.113.2", 2), client_id="fine") as fine,
    ):
        bad = await trio.open_tcp_stream(*broker.address)
        await bad.send_all(header)
        await closed_by_server(bad)
        (line,) = await logs.wait_for(FAILED)
        assert reason in line["reason"]
        assert line["peer"].startswith("127.0.0.1:") and line["listener"] == "lb"
        await fine.sync()
        assert broker.broker.listeners.show()[0].handshake_failures == 1


async def test_header_read_is_time_limited(logs) -> None:
    async with run_broker(listeners=[proxied()], mqtt_connect_timeout=0.5) as broker:
        silent = await trio.open_tcp_stream(*broker.address)
        await silent.send_all(b"PROXY TCP4 1.2.3.4")  # ... and nothing more
        await closed_by_server(silent)
        (line,) = await logs.wait_for(FAILED)
        assert line["reason"] == "timeout after 0.5 s"


async def test_proxy_header_before_tls(pki, recorder) -> None:
    listener = pki.listener(proxy_protocol=True)
    async with run_broker(listeners=[listener], plugins={"rec": recorder}) as broker:
        stream = await trio.open_tcp_stream(*broker.address)
        await stream.send_all(v2("198.51.100.77", 4433))
        tls = trio.SSLStream(stream, pki.client_context(), server_hostname="127.0.0.1")
        async with open_client(broker.address, stream=tls, client_id="tls-lb") as client:
            await client.sync()
    args = recorder.last("tls-lb")
    assert (args["peer_addr"], args["peer_port"]) == ("198.51.100.77", 4433)


async def test_proxy_header_before_websocket_upgrade(raw_ws, recorder) -> None:
    listener = proxied(name="web", kind="ws")
    async with run_broker(listeners=[listener], plugins={"rec": recorder}) as broker:
        ws = await raw_ws.open(broker.address, prefix=v1("203.0.113.80", 8080))
        await ws.send_frame(encode(Connect(client_id="ws-lb"), 4))
        (connack,) = await ws.packets(1)
        assert isinstance(connack, Connack) and connack.reason_code == 0
        await ws.aclose()
    assert recorder.last("ws-lb")["peer_addr"] == "203.0.113.80"
