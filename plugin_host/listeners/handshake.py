"""From an accepted socket to an MQTT byte stream: PROXY header, TLS, WebSocket upgrade.

:func:`connection_handler` wraps the broker's connection callback for one listener kind. It
runs in the connection's own task (started by the accept loop) and, in this order:

1. ``proxy_protocol = on``: reads the PROXY v1/v2 header (:mod:`~plugin_host.listeners.proxy`);
   its source address becomes the connection's ``peer_addr``/``peer_port``. On ``ssl``/``wss``
   the header comes before the TLS handshake, as load balancers send it.
2. ``ssl``/``wss``: the TLS handshake (:mod:`~plugin_host.listeners.tls`); the client
   certificate is kept for ``client_cert`` and, with ``use_identity_as_username``, its CN
   becomes the username.
3. ``ws``/``wss``: the WebSocket upgrade (:mod:`~plugin_host.listeners.websocket`).

All of it is bounded by one deadline (``mqtt_connect_timeout``; CONNECT then gets its own).
A failure (malformed PROXY header, TLS error, refused upgrade, timeout) is logged once with the
listener, the peer and the reason, counted in ``BoundListener.handshake_failures``, and closes
that socket: nothing else happens, no exception escapes. A plain TCP listener without
``proxy_protocol`` skips all of this (the common case pays nothing).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
import trio

from plugin_host.listeners.proxy import ProxyHeaderParser, ProxyProtocolError
from plugin_host.listeners.tcp import BoundListener, ConnectionHandler, ConnectionInfo, socket_peer
from plugin_host.listeners.tls import TLSHandshakeError, peer_certificate
from plugin_host.listeners.websocket import WebSocketHandshakeError, accept_websocket

log = structlog.get_logger(__name__)

__all__ = ["PrefixedStream", "connection_handler"]

#: What the broker runs for a ready connection (``Broker.handle_connection``).
ServeConnection = Callable[[trio.abc.Stream, BoundListener, ConnectionInfo | None], Awaitable[None]]

_TLS_KINDS = frozenset({"ssl", "wss"})
_WS_KINDS = frozenset({"ws", "wss"})
# Per stage: the log event of a failure.
_EVENTS = {
    "proxy": "proxy_header_invalid",
    "tls": "tls_handshake_failed",
    "websocket": "websocket_handshake_failed",
}


class PrefixedStream(trio.abc.Stream):
    """A stream that first returns ``prefix`` (bytes read past a PROXY v1 header)."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self.transport_stream = stream
        self._prefix = prefix

    @property
    def socket(self) -> Any:
        return getattr(self.transport_stream, "socket", None)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        prefix = self._prefix
        if prefix:
            if max_bytes is None or len(prefix) <= max_bytes:
                self._prefix = b""
                await trio.lowlevel.checkpoint()
                return prefix
            self._prefix = prefix[max_bytes:]
            await trio.lowlevel.checkpoint()
            return prefix[:max_bytes]
        return await self.transport_stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.transport_stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.transport_stream.aclose()


def connection_handler(serve: ServeConnection, *, timeout: float) -> ConnectionHandler:
    """The accept loop's handler for a listener: prepare the stream, then ``serve`` it."""

    async def handle(stream: trio.abc.Stream, bound: BoundListener) -> None:
        lc = bound.config
        if lc.kind == "tcp" and not lc.proxy_protocol:
            await serve(stream, bound, None)  # nothing to prepare: the fast path
            return
        info = ConnectionInfo(peer=socket_peer(stream))
        prepared = await _prepare(stream, bound, info, timeout)
        if prepared is not None:
            await serve(prepared, bound, info)

    return handle


async def _prepare(
    stream: trio.abc.Stream, bound: BoundListener, info: ConnectionInfo, seconds: float
) -> trio.abc.Stream | None:
    """Run the steps of the module docstring; None (socket closed, logged) on failure."""
    lc = bound.config
    stage = "proxy"
    try:
        with trio.fail_after(seconds):
            if lc.proxy_protocol:
                stream = await _read_proxy_header(stream, bound, info)
            if lc.kind in _TLS_KINDS:
                stage = "tls"
                tls = bound.tls
                assert tls is not None, "TLS listener without a context"
                ssl_stream = await tls.handshake(stream)
                stream = ssl_stream
                cert = peer_certificate(ssl_stream)
                if cert is not None:
                    info.client_cert = cert.der
                    if lc.use_identity_as_username and cert.common_name is not None:
                        info.username = cert.common_name
            if lc.kind in _WS_KINDS:
                stage = "websocket"
                stream = await accept_websocket(
                    stream,
                    path=lc.ws_path,
                    max_frame_size=lc.max_ws_frame_size,
                    listener=bound.name,
                )
        return stream
    except trio.TooSlowError:
        reason, peer_closed = f"timeout after {seconds:g} s", False
    except (ProxyProtocolError, TLSHandshakeError, WebSocketHandshakeError) as exc:
        reason, peer_closed = str(exc), exc.peer_closed
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        reason = f"connection lost: {exc.__cause__ or exc or type(exc).__name__}"
        peer_closed = True
    bound.handshake_failures += 1
    # A client that just went away (port probes, balancers' TCP health checks) is routine:
    # info, not warning.
    emit = log.info if peer_closed else log.warning
    emit(
        _EVENTS[stage],
        listener=bound.name,
        kind=lc.kind,
        peer=f"{info.peer[0]}:{info.peer[1]}",
        reason=reason,
    )
    await trio.aclose_forcefully(stream)
    return None


async def _read_proxy_header(
    stream: trio.abc.Stream, bound: BoundListener, info: ConnectionInfo
) -> trio.abc.Stream:
    parser = ProxyHeaderParser()
    header = None
    while header is None:
        header = parser.feed(await stream.receive_some(parser.wanted))
    if header.source is not None:
        info.peer = header.source
    lc = bound.config
    if lc.proxy_protocol_use_cn_as_username and header.ssl is not None:
        cn = header.ssl.verified_cn
        if cn:
            info.username = cn
    log.debug(
        "proxy_header",
        listener=bound.name,
        version=header.version,
        source=header.source,
        local=header.local,
    )
    if parser.leftover:
        return PrefixedStream(stream, parser.leftover)
    return stream
