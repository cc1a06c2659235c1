"""A real HTTP/1.1 and HTTPS server for tests (trio + h11), public for plugin authors.

Handlers are async callables ``(Request) -> Response``; the server records every request,
counts TCP connections, can close idle keep-alive connections on demand or after an idle
timeout, can delay responses, and can drop a request that arrives on a reused connection
(the race a client sees when a server closes an idle connection as the request goes out)::

    from plugin_host.testing.http_server import Response, open_http_server

    async def handler(request):
        return Response.json({"result": "ok"}, headers=[("cache-control", "max-age=10")])

    async with open_http_server(handler) as server:
        url = server.url("/auth")             # http://127.0.0.1:<ephemeral port>/auth
        ...
        await server.wait_until(lambda: len(server.requests) >= 1)  # under trio.fail_after

HTTPS: pass ``tls=server_tls_context(ca)`` (``ca`` a ``trustme.CA``), optionally with
``require_client_cert=True`` for mutual TLS. :func:`encrypted_key_pem` produces a
password-protected copy of a trustme key, :func:`write_tls_files` writes a CA file and a
client certificate/key (plain and encrypted) for client-side tests.

The server lives in its own nursery inside ``open_http_server``; leaving the block closes it.
"""

from __future__ import annotations

import json as jsonlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import h11
import trio

__all__ = [
    "HTTPTestServer",
    "Handler",
    "Request",
    "Response",
    "TLSFiles",
    "encrypted_key_pem",
    "open_http_server",
    "self_signed_tls_context",
    "server_tls_context",
    "write_tls_files",
]


@dataclass(slots=True)
class Request:
    """One request as received: header names lower-cased, body complete."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    connection: int  # 1-based number of the TCP connection it arrived on
    client_cert: dict[str, Any] | None = None  # the verified client certificate (mTLS)

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def json(self) -> Any:
        return jsonlib.loads(self.body)


@dataclass(slots=True)
class Response:
    """What a handler returns; ``content-length`` is added by the server."""

    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(
        cls, value: Any, status: int = 200, headers: Iterable[tuple[str, str]] = ()
    ) -> Response:
        return cls(
            status=status,
            body=jsonlib.dumps(value).encode(),
            headers=[("content-type", "application/json"), *headers],
        )


Handler = Callable[[Request], Awaitable[Response]]


async def _default_handler(request: Request) -> Response:
    return Response.json({"result": "ok"})


class _Closed(Exception):
    """The peer went away, or we closed an idle connection."""


class HTTPTestServer:
    """State and controls of a running test server (see :func:`open_http_server`).

    Attributes tests read: ``requests`` (answered requests, in order), ``dropped`` (requests
    closed without an answer by ``drop_reused`` / ``drop_next``), ``abandoned`` (requests whose
    client closed the connection before the handler answered; the handler is then
    cancelled), ``connections_opened``, ``connections_open``, ``connections_closed``,
    ``tls_errors`` (handshake failures, as text), ``handler_errors`` (exceptions of
    handlers, answered with 500), ``sni_names`` (SNI names clients sent, in handshake order).

    Attributes tests may set at any time: ``handler``, ``routes`` (path -> handler, checked
    before ``handler``), ``delay`` (seconds to wait before every response), ``idle_timeout``
    (close a keep-alive connection idle that long; ``None`` = never), ``drop_reused`` (the
    next N requests that arrive on an already used connection are read, then the connection
    is closed with no response), ``drop_next`` (the same for the next N requests on any
    connection).
    """

    def __init__(
        self,
        handler: Handler | None,
        *,
        tls: ssl.SSLContext | None,
        idle_timeout: float | None,
    ) -> None:
        self.handler: Handler = handler or _default_handler
        self.routes: dict[str, Handler] = {}
        self.tls = tls
        self.delay = 0.0
        self.idle_timeout = idle_timeout
        self.drop_reused = 0
        self.drop_next = 0
        self.requests: list[Request] = []
        self.dropped: list[Request] = []
        self.abandoned: list[Request] = []
        self.tls_errors: list[str] = []
        self.handler_errors: list[Exception] = []
        self.sni_names: list[str | None] = []
        self.connections_opened = 0
        self.connections_open = 0
        self.connections_closed = 0
        self.host = "127.0.0.1"
        self.port = 0
        self._idle_scopes: set[trio.CancelScope] = set()
        self._changed = trio.Event()
        if tls is not None and tls.sni_callback is None:
            tls.sni_callback = self._record_sni

    # ---- what tests use

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def url(self, path: str = "/", host: str | None = None) -> str:
        """The URL of ``path`` on this server (``host`` replaces the IP, e.g. ``localhost``)."""
        return f"{self.scheme}://{host or self.host}:{self.port}{path}"

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds; re-checked after every server event.

        Wrap it in ``trio.fail_after`` in tests.
        """
        while not predicate():
            await self._changed.wait()

    async def close_idle_connections(self) -> int:
        """Close every keep-alive connection that is waiting for a request; returns how many."""
        scopes = list(self._idle_scopes)
        for scope in scopes:
            scope.cancel()
        target = self.connections_closed + len(scopes)
        await self.wait_until(lambda: self.connections_closed >= target)
        return len(scopes)

    # ---- internals

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _record_sni(self, ssl_object: Any, server_name: str | None, ctx: ssl.SSLContext) -> None:
        self.sni_names.append(server_name)

    async def _serve_connection(self, stream: trio.abc.Stream) -> None:
        self.connections_opened += 1
        self.connections_open += 1
        number = self.connections_opened
        self._notify()
        try:
            client_cert = None
            if self.tls is not None:
                ssl_stream = trio.SSLStream(
                    stream, self.tls, server_side=True, https_compatible=True
                )
                try:
                    await ssl_stream.do_handshake()
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    cause = exc.__cause__
                    self.tls_errors.append(str(cause) if cause else repr(exc))
                    await self._send_pending_alert(ssl_stream, stream)
                    return
                client_cert = ssl_stream.getpeercert() or None
                stream = ssl_stream
            await self._serve_requests(stream, number, client_cert)
        except (_Closed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            with (
                trio.CancelScope(shield=True),
                suppress(trio.BrokenResourceError, trio.ClosedResourceError),
            ):
                await stream.aclose()
            self.connections_open -= 1
            self.connections_closed += 1
            self._notify()

    async def _respond(
        self, stream: trio.abc.Stream, conn: h11.Connection, request: Request
    ) -> Response | None:
        """Run the handler while watching the connection; None if the client left first."""
        route = self.routes.get(request.path, self.handler)
        response: list[Response] = []

        async def handle(cancel_scope: trio.CancelScope) -> None:
            if self.delay:
                await trio.sleep(self.delay)
            try:
                response.append(await route(request))
            except Exception as exc:  # a broken handler answers 500, like a real server
                self.handler_errors.append(exc)
                response.append(Response(status=500, body=repr(exc).encode()))
            cancel_scope.cancel()

        async def watch(cancel_scope: trio.CancelScope) -> None:
            # Like an ASGI server's http.disconnect: a client that closes the connection
            # before the answer cancels the handler.
            try:
                while data := await stream.receive_some(65536):
                    conn.receive_data(bytes(data))  # a pipelined request: keep it for later
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(handle, nursery.cancel_scope)
            nursery.start_soon(watch, nursery.cancel_scope)
        return response[0] if response else None

    @staticmethod
    async def _send_pending_alert(ssl_stream: trio.SSLStream[Any], raw: trio.abc.Stream) -> None:
        # trio drops the TLS alert OpenSSL queued for a failed handshake; real servers send
        # it, and clients report its text (e.g. "certificate required"), so flush it here.
        outgoing = getattr(ssl_stream, "_outgoing", None)
        data = outgoing.read() if outgoing is not None else b""
        if data:
            with trio.move_on_after(1):
                with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await raw.send_all(data)
                    # Read what the client sent meanwhile (its request): closing a socket with
                    # unread data sends a reset, which can destroy the alert before it is read.
                    with trio.move_on_after(0.2):
                        while await raw.receive_some(65536):
                            pass

    async def _receive(self, stream: trio.abc.Stream, conn: h11.Connection, idle: bool) -> Any:
        """The next h11 event; while ``idle`` the wait can be ended by the idle controls."""
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                raise _Closed from None
            if event is not h11.NEED_DATA:
                return event
            if idle:
                deadline = (
                    trio.current_time() + self.idle_timeout
                    if self.idle_timeout is not None
                    else float("inf")
                )
                with trio.CancelScope(deadline=deadline) as scope:
                    self._idle_scopes.add(scope)
                    try:
                        data = await stream.receive_some(65536)
                    finally:
                        self._idle_scopes.discard(scope)
                if scope.cancelled_caught:
                    raise _Closed
                idle = False
            else:
                data = await stream.receive_some(65536)
            conn.receive_data(bytes(data))

    async def _serve_requests(
        self, stream: trio.abc.Stream, number: int, client_cert: dict[str, Any] | None
    ) -> None:
        conn = h11.Connection(h11.SERVER)
        served = 0
        while True:
            event = await self._receive(stream, conn, idle=True)
            if isinstance(event, h11.ConnectionClosed):
                return
            if not isinstance(event, h11.Request):
                raise _Closed
            body = bytearray()
            while True:
                part = await self._receive(stream, conn, idle=False)
                if isinstance(part, h11.Data):
                    body += part.data
                elif isinstance(part, h11.EndOfMessage):
                    break
                else:
                    raise _Closed
            request = Request(
                method=event.method.decode(),
                target=event.target.decode(),
                headers=[(k.decode().lower(), v.decode("latin-1")) for k, v in event.headers],
                body=bytes(body),
                connection=number,
                client_cert=client_cert,
            )
            if self.drop_next > 0 or (served and self.drop_reused > 0):
                if self.drop_next > 0:
                    self.drop_next -= 1
                else:
                    self.drop_reused -= 1
                self.dropped.append(request)
                self._notify()
                return
            served += 1
            response = await self._respond(stream, conn, request)
            if response is None:
                self.abandoned.append(request)
                self._notify()
                return
            self.requests.append(request)
            self._notify()
            headers = [(k, v) for k, v in response.headers if k.lower() != "content-length"]
            headers.append(("content-length", str(len(response.body))))
            out = conn.send(h11.Response(status_code=response.status, headers=headers))
            out = (out or b"") + (conn.send(h11.Data(data=response.body)) or b"")
            out += conn.send(h11.EndOfMessage()) or b""
            await stream.send_all(out)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()


@asynccontextmanager
async def open_http_server(
    handler: Handler | None = None,
    *,
    tls: ssl.SSLContext | None = None,
    host: str = "127.0.0.1",
    idle_timeout: float | None = None,
) -> AsyncIterator[HTTPTestServer]:
    """Run a test server on an ephemeral port of ``host`` for the duration of the block.

    ``tls`` makes it HTTPS (see :func:`server_tls_context`); its ``sni_callback`` is set to
    record SNI names unless one is already set.
    """
    server = HTTPTestServer(handler, tls=tls, idle_timeout=idle_timeout)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, server._serve_connection, 0, host=host)
        )
        server.host, server.port = listeners[0].socket.getsockname()[:2]
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()


def server_tls_context(
    ca: Any,
    *identities: str,
    require_client_cert: bool = False,
    client_ca: Any = None,
) -> ssl.SSLContext:
    """A server context with a certificate from ``ca`` (a ``trustme.CA``).

    ``identities`` default to ``localhost`` and ``127.0.0.1``. With ``require_client_cert``
    clients must present a certificate issued by ``client_ca`` (default ``ca``).
    """
    cert = ca.issue_cert(*(identities or ("localhost", "127.0.0.1")))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        (client_ca or ca).configure_trust(ctx)
    return ctx


def self_signed_tls_context() -> ssl.SSLContext:
    """A server context whose certificate is self-signed (a fresh trustme root CA's own)."""
    import trustme

    root = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with root.cert_pem.tempfile() as cert, root.private_key_pem.tempfile() as key:
        ctx.load_cert_chain(cert, key)
    return ctx


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """PEM files for a client: the CA that signs the test servers, and a client certificate."""

    ca: Any  # the trustme.CA
    cafile: Path
    certfile: Path
    keyfile: Path
    encrypted_keyfile: Path
    key_password: str


def write_tls_files(
    ca: Any, directory: Path, *, common_name: str = "test-client", password: str = "s3cret"
) -> TLSFiles:
    """Write ``ca``'s certificate, a client certificate issued by it and its key (plain and
    encrypted with ``password``) into ``directory``, as a deployment would have them."""
    client = ca.issue_cert(f"{common_name}@example.test", common_name=common_name)
    files = TLSFiles(
        ca=ca,
        cafile=directory / "ca.pem",
        certfile=directory / "client.pem",
        keyfile=directory / "client.key",
        encrypted_keyfile=directory / "client-encrypted.key",
        key_password=password,
    )
    ca.cert_pem.write_to_path(str(files.cafile))
    client.cert_chain_pems[0].write_to_path(str(files.certfile))
    client.private_key_pem.write_to_path(str(files.keyfile))
    files.encrypted_keyfile.write_bytes(encrypted_key_pem(client, password))
    return files


def encrypted_key_pem(leaf: Any, password: str) -> bytes:
    """The private key of a ``trustme.LeafCert`` as PKCS#8 PEM encrypted with ``password``."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password.encode()),
    )
