"""MQTT over WebSocket (``ws`` and ``wss`` listeners): the upgrade and a byte-stream adapter.

:func:`accept_websocket` reads the HTTP upgrade request from a (plain or TLS) stream, checks the
path (``ws_path``, ``/mqtt`` by default) and the subprotocol (``mqtt``, or ``mqttv3.1`` for old
clients), answers ``101 Switching Protocols`` and returns a :class:`WebSocketStream`. A wrong
path gets ``404``, a request without an MQTT subprotocol ``400``, anything that is not a
WebSocket upgrade ``400``: each a proper HTTP response, then the connection is closed.

:class:`WebSocketStream` is a :class:`trio.abc.Stream`, so the broker's
:class:`~plugin_host.broker.connection.Connection` reads and writes it like TCP:

* reading returns the payload bytes of binary frames as they arrive. MQTT does not align packets
  with frames (MQTT 5 section 6): a packet split over several frames, or several packets in one
  frame, are both just bytes for the MQTT parser. A text frame is a protocol error (MQTT 5
  6.0.0-1): the WebSocket is closed with 1003. A frame larger than ``max_ws_frame_size`` closes
  it with 1009. Pings are answered, a close frame is answered and reads then return EOF.
* writing sends each ``send_all`` as one binary frame (the connection's writer coalesces
  everything pending into one ``send_all``), split into several frames only beyond
  ``max_ws_frame_size``.

Why wsproto directly and not trio-websocket's server wrapper: the wrapper assembles whole
messages and runs a reader task and a message channel per connection; an MQTT byte stream needs
none of that. wsproto (the sans-IO engine under trio-websocket) is driven here by the
connection's own reader, with per-frame control over text frames and frame sizes. Outgoing data
frames are framed here (a server frame is a 2-10 byte header and the unmasked payload) to skip
wsproto's two copies of every payload.
"""

from __future__ import annotations

import struct
from typing import Any

import h11
import structlog
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

log = structlog.get_logger(__name__)

__all__ = ["SUBPROTOCOLS", "WebSocketHandshakeError", "WebSocketStream", "accept_websocket"]

#: MQTT's WebSocket subprotocols, in order of preference (``mqttv3.1``: MQTT 3.1 clients).
SUBPROTOCOLS = ("mqtt", "mqttv3.1")
#: Bytes asked from the transport per read.
READ_SIZE = 65536
#: How long closing may take to send the close frame before the transport is cut.
CLOSE_TIMEOUT = 1.0

CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_TOO_BIG = 1009

_BINARY_FIN = 0x82


class WebSocketHandshakeError(Exception):
    """The upgrade failed (the client got an HTTP error, or went away); ``reason`` says why."""

    def __init__(self, reason: str, status: int | None = None, *, peer_closed: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.peer_closed = peer_closed  # the client went away without a request


def encode_binary_frames(data: bytes | bytearray, max_frame: int | None) -> bytearray:
    """``data`` as unmasked binary frames (server to client), each at most ``max_frame`` bytes."""
    if max_frame is None or len(data) <= max_frame:
        out = _frame_header(len(data))
        out += data
        return out
    out = bytearray()
    view = memoryview(data)
    for start in range(0, len(data), max_frame):
        chunk = view[start : start + max_frame]
        out += _frame_header(len(chunk))
        out += chunk
    return out


def _frame_header(length: int) -> bytearray:
    # RFC 6455 5.2: FIN + opcode 2 (binary), then the length in 7, 7+16 or 7+64 bits.
    if length < 126:
        return bytearray((_BINARY_FIN, length))
    if length < 65536:
        return bytearray(struct.pack("!BBH", _BINARY_FIN, 126, length))
    return bytearray(struct.pack("!BBQ", _BINARY_FIN, 127, length))


class WebSocketStream(trio.abc.Stream):
    """A WebSocket carrying MQTT, seen as a byte stream (see the module docstring)."""

    def __init__(
        self,
        transport: trio.abc.Stream,
        ws: WSConnection,
        *,
        subprotocol: str,
        max_frame_size: int | None = None,
        listener: str = "",
    ) -> None:
        self.transport_stream = transport
        self.subprotocol = subprotocol
        self._ws = ws
        self._max_frame = max_frame_size
        self._listener = listener
        self._frame_bytes = 0  # payload bytes of the binary frame being received
        self._eof = False
        self._pending: list[bytes | bytearray] = []  # payload beyond a max_bytes read
        # Control frames (pong, close) produced while reading. The reader sends them itself
        # when nobody is sending; otherwise the writer sends them right after its data, still
        # holding the lock. The reader never waits behind a blocked writer (that could
        # deadlock with a client that only reads once its own send went through).
        self._control: list[bytes] = []
        self._send_lock = trio.StrictFIFOLock()  # one send_all at a time on the transport

    # ------------------------------------------------------------------------------ reading

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._pending:
            return self._take_pending(max_bytes)
        ws = self._ws
        while True:
            chunks = self._events()
            if self._control and not self._send_lock.locked():
                await self._flush_control()
            if chunks:
                self._pending = chunks
                return self._take_pending(max_bytes)
            if self._eof:
                return b""
            data = await self.transport_stream.receive_some(READ_SIZE)
            if not data:
                self._eof = True
                return b""
            if ws.state is ConnectionState.CLOSED:
                continue  # close handshake done: whatever follows is ignored
            ws.receive_data(data if type(data) is bytes else bytes(data))

    def _take_pending(self, max_bytes: int | None) -> bytes | bytearray:
        pending = self._pending
        if len(pending) == 1 and (max_bytes is None or len(pending[0]) <= max_bytes):
            self._pending = []
            return pending[0]
        data = b"".join(pending)
        if max_bytes is not None and len(data) > max_bytes:
            self._pending = [data[max_bytes:]]
            return data[:max_bytes]
        self._pending = []
        return data

    def _events(self) -> list[bytes | bytearray]:
        """Handle what wsproto parsed; the binary payload in order (may be empty)."""
        chunks: list[bytes | bytearray] = []
        ws = self._ws
        for event in ws.events():
            if isinstance(event, BytesMessage):
                data = event.data
                if self._max_frame is not None:
                    self._frame_bytes += len(data)
                    if self._frame_bytes > self._max_frame:
                        self._fail(CLOSE_TOO_BIG, f"frame larger than {self._max_frame} bytes")
                        break
                    if event.frame_finished:
                        self._frame_bytes = 0
                if data:
                    chunks.append(data)
            elif isinstance(event, TextMessage):
                self._fail(CLOSE_UNSUPPORTED_DATA, "text frame (MQTT needs binary frames)")
                break
            elif isinstance(event, Ping):
                self._control.append(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if ws.state is ConnectionState.REMOTE_CLOSING:  # the client closes: answer
                    self._control.append(ws.send(event.response()))
                    self._eof = True
                else:  # wsproto could not parse a frame (the event carries its reason)
                    self._fail(event.code, f"bad WebSocket frame: {event.reason}")
                break
            # Pong: nothing to do (we never ping).
        return chunks

    def _fail(self, code: int, reason: str) -> None:
        """A WebSocket-level protocol error: log once, send close ``code``, EOF from now on."""
        log.warning("websocket_protocol_error", listener=self._listener, code=code, error=reason)
        if self._ws.state is ConnectionState.OPEN:
            self._control.append(self._ws.send(CloseConnection(code=code, reason=reason)))
        self._eof = True

    async def _flush_control(self) -> None:
        async with self._send_lock:
            await self._send_control()

    async def _send_control(self) -> None:
        control = self._control
        while control:
            await self.transport_stream.send_all(control.pop(0))

    # ------------------------------------------------------------------------------ writing

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._ws.state is not ConnectionState.OPEN:
            raise trio.ClosedResourceError("the WebSocket is closed")
        if type(data) is memoryview:
            data = data.tobytes()
        frames = encode_binary_frames(data, self._max_frame)
        async with self._send_lock:
            await self.transport_stream.send_all(frames)
            if self._control:
                await self._send_control()

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport_stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        """Send a close frame (best effort, bounded), then close the transport."""
        try:
            if self._ws.state is ConnectionState.OPEN:
                self._control.append(self._ws.send(CloseConnection(code=CLOSE_NORMAL)))
            if self._control:
                # Shielded: the connection closes us with aclose_forcefully (already
                # cancelled), and a client deserves to learn why it is disconnected.
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + CLOSE_TIMEOUT
                    await self._flush_control()
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
            pass
        except LocalProtocolError:
            pass
        finally:
            await trio.aclose_forcefully(self.transport_stream)

    def getpeercert(self, binary_form: bool = False) -> Any:
        """The TLS client certificate, on ``wss`` (None on ``ws``)."""
        get = getattr(self.transport_stream, "getpeercert", None)
        return get(binary_form) if get is not None else None


# --------------------------------------------------------------------------------------------
# The upgrade


async def accept_websocket(
    transport: trio.abc.Stream,
    *,
    path: str = "/mqtt",
    max_frame_size: int | None = None,
    listener: str = "",
) -> WebSocketStream:
    """Answer the HTTP upgrade on ``transport``; WebSocketHandshakeError if refused.

    The caller bounds the time this may take. On refusal the client got an HTTP error response
    (404 wrong path, 400 no MQTT subprotocol or not an upgrade) and ``transport`` should be
    closed.
    """
    ws = WSConnection(ConnectionType.SERVER)
    request: Request | None = None
    while request is None:
        data = await transport.receive_some(READ_SIZE)
        if not data:
            raise WebSocketHandshakeError(
                "the client closed the connection before the upgrade", peer_closed=True
            )
        try:
            ws.receive_data(data if type(data) is bytes else bytes(data))
            for event in ws.events():
                if isinstance(event, Request):
                    request = event
                    break
        except RemoteProtocolError as exc:
            hint = exc.event_hint
            if isinstance(hint, RejectConnection):
                await _reject(transport, ws, hint.status_code or 400, f"{exc}")
            raise WebSocketHandshakeError(f"not a WebSocket upgrade: {exc}", 400) from None
    target = request.target.split("?", 1)[0]
    if target != path:
        reason = f"no MQTT WebSocket endpoint at {target} (use {path})"
        await _reject(transport, ws, 404, reason)
        raise WebSocketHandshakeError(reason, 404)
    offered = [p.strip() for p in request.subprotocols]
    chosen = next(
        (p for want in SUBPROTOCOLS for p in offered if p.lower() == want),
        None,
    )
    if chosen is None:
        reason = (
            "no MQTT subprotocol offered (Sec-WebSocket-Protocol: mqtt)"
            if not offered
            else f"unsupported subprotocol(s) {', '.join(offered)} (use mqtt or mqttv3.1)"
        )
        await _reject(transport, ws, 400, reason)
        raise WebSocketHandshakeError(reason, 400)
    await transport.send_all(ws.send(AcceptConnection(subprotocol=chosen)))
    stream = WebSocketStream(
        transport, ws, subprotocol=chosen, max_frame_size=max_frame_size, listener=listener
    )
    return stream


async def _reject(transport: trio.abc.Stream, ws: WSConnection, status: int, reason: str) -> None:
    body = (reason + "\n").encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    try:
        data = ws.send(RejectConnection(status_code=status, headers=headers, has_body=True))
        data += ws.send(RejectData(data=body, body_finished=True))
        await transport.send_all(data)
    except (
        LocalProtocolError,
        h11.LocalProtocolError,
        trio.BrokenResourceError,
        trio.ClosedResourceError,
    ):
        pass  # the client went away, or the request was too broken to answer
