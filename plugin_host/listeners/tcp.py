"""Listening sockets and the accept loop every MQTT listener kind shares.

A listener binds its sockets up front (so the real addresses are known before anything is
served, port 0 included), then runs an accept loop that hands every accepted
:class:`trio.abc.Stream` to a connection handler. The handler runs in its own task in the
listener's nursery: the PROXY header, the TLS handshake and the WebSocket upgrade
(:mod:`plugin_host.listeners.handshake`) happen there, never in the accept loop, so one slow
client delays nobody else.

A listener can stop accepting and start again while the server runs
(:mod:`plugin_host.listeners.manager`): stopping closes the listening sockets (new clients are
refused by the OS) and leaves the connections running in the listener's nursery; starting binds
the same addresses again.
"""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
import trio

from plugin_host.settings import ListenerConfig

if TYPE_CHECKING:
    from plugin_host.listeners.tls import ServerTLS

log = structlog.get_logger(__name__)

#: What a listener calls for every accepted connection. It owns the stream from then on.
ConnectionHandler = Callable[[trio.abc.Stream, "BoundListener"], Awaitable[None]]

# Errors from accept() that mean "this one connection failed", not "the listener is broken"
# (the same list trio.serve_listeners uses).
_ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}

RUNNING = "running"
STOPPED = "stopped"


@dataclass(slots=True, eq=False)
class ConnectionInfo:
    """What the listener learnt about a connection before MQTT started.

    ``peer`` is the client's address: the socket's, or the one a PROXY header gave.
    ``client_cert`` is the TLS client certificate (DER) for the hooks' ``client_cert``
    argument (``forward_connection_opts``). ``username`` replaces the username of CONNECT
    before authentication: the certificate's CN (``use_identity_as_username``) or the CN a
    PROXY v2 header reported (``proxy_protocol_use_cn_as_username``).
    """

    peer: tuple[str, int]
    client_cert: bytes | None = None
    username: str | None = None


@dataclass(slots=True, eq=False)
class BoundListener:
    """A configured listener with its sockets bound.

    ``addresses`` are the real bound ``(host, port)`` pairs (one per socket; a host name may
    bind several); they stay the same across stop/start. ``active`` counts open connections
    (handshakes included) for ``max_connections``; ``accepted``, ``rejected`` (over
    ``max_connections``) and ``handshake_failures`` (PROXY header, TLS, WebSocket upgrade)
    count since start-up.
    """

    config: ListenerConfig
    sockets: list[trio.SocketListener]
    addresses: list[tuple[str, int]]
    active: int = 0
    accepted: int = 0
    rejected: int = 0
    handshake_failures: int = 0
    #: TLS (ssl, wss): the current server context, swapped by a reload.
    tls: ServerTLS | None = None
    state: str = STOPPED
    extra: dict[str, Any] = field(default_factory=dict)
    #: Cancelled to stop accepting (stop, graceful shutdown) while connections keep running.
    accept_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    #: Set while no connection is open (stop --kill-sessions waits for it).
    idle: trio.Event = field(default_factory=trio.Event)
    _handler: ConnectionHandler | None = None
    _nursery: trio.Nursery | None = None

    def __post_init__(self) -> None:
        self.idle.set()

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def address(self) -> tuple[str, int]:
        """The first bound address (the only one for an IP-literal host)."""
        return self.addresses[0]

    async def aclose(self) -> None:
        """Close the listening sockets (connections are not touched)."""
        sockets, self.sockets = self.sockets, []
        for sock in sockets:
            await sock.aclose()


async def bind_tcp(config: ListenerConfig) -> BoundListener:
    """Bind ``config.host:config.port`` (IPv4 or IPv6; port 0 picks a free port)."""
    host: str | None = config.host or None
    if host in ("*", "0.0.0.0"):
        host = "0.0.0.0"
    sockets = await trio.open_tcp_listeners(config.port, host=host, backlog=1024)
    addresses: list[tuple[str, int]] = []
    for listener in sockets:
        sockname = listener.socket.getsockname()
        addresses.append((sockname[0], sockname[1]))
    return BoundListener(config=config, sockets=sockets, addresses=addresses)


async def rebind(bound: BoundListener) -> None:
    """Bind ``bound.addresses`` again (after a stop); OSError if one is taken meanwhile."""
    sockets: list[trio.SocketListener] = []
    try:
        for host, port in bound.addresses:
            sockets.extend(await trio.open_tcp_listeners(port, host=host, backlog=1024))
    except BaseException:
        for sock in sockets:
            await sock.aclose()
        raise
    bound.sockets = sockets


def socket_peer(stream: trio.abc.Stream) -> tuple[str, int]:
    """``(ip, port)`` of the remote end of a socket stream (``("local", 0)`` if unknown)."""
    sock = getattr(stream, "socket", None)
    try:
        name = sock.getpeername() if sock is not None else None
    except OSError:
        name = None
    if isinstance(name, tuple) and len(name) >= 2:
        return str(name[0]), int(name[1])
    return "local", 0


async def serve_listener(
    bound: BoundListener,
    handler: ConnectionHandler,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``bound``: accept connections; each runs ``handler`` in this listener's nursery.

    Runs until cancelled (the server's shutdown); :func:`stop_accepting` and
    :func:`start_accepting` pause and resume the accept loops meanwhile. ``max_connections``
    is enforced in the accept loop: a connection beyond it is closed at once (counted in
    ``bound.rejected``), the way VerneMQ refuses it before any MQTT is spoken.
    """
    async with trio.open_nursery() as nursery:
        bound._nursery = nursery
        bound._handler = handler
        try:
            start_accepting(bound)
            task_status.started()
            await trio.sleep_forever()
        finally:
            bound._nursery = None
            bound.state = STOPPED


def start_accepting(bound: BoundListener) -> None:
    """Start the accept loops of ``bound`` on its (bound) sockets."""
    nursery, handler = bound._nursery, bound._handler
    if nursery is None or handler is None:
        raise RuntimeError(f"listener {bound.name} is not served")
    bound.accept_scope = scope = trio.CancelScope()
    for sock in bound.sockets:
        nursery.start_soon(_accept_loop, bound, sock, handler, nursery, scope)
    bound.state = RUNNING


def stop_accepting(bound: BoundListener) -> None:
    """Stop the accept loops of ``bound``; its running connections are not touched."""
    bound.accept_scope.cancel()
    bound.state = STOPPED


async def _accept_loop(
    bound: BoundListener,
    sock: trio.SocketListener,
    handler: ConnectionHandler,
    nursery: trio.Nursery,
    scope: trio.CancelScope,
) -> None:
    with scope:
        try:
            await _accept_forever(bound, sock, handler, nursery)
        except trio.ClosedResourceError:
            if not scope.cancel_called:  # closed under us without a stop: say so
                log.warning("listener_socket_closed", listener=bound.name)


async def _accept_forever(
    bound: BoundListener,
    sock: trio.SocketListener,
    handler: ConnectionHandler,
    nursery: trio.Nursery,
) -> None:
    limit = bound.config.max_connections
    while True:
        try:
            stream = await sock.accept()
        except OSError as exc:
            if exc.errno in _ACCEPT_CAPACITY_ERRNOS:
                log.error("accept_failed", listener=bound.name, error=str(exc))
                await trio.sleep(0.1)  # back off: the process is out of descriptors/memory
                continue
            raise
        if limit is not None and bound.active >= limit:
            bound.rejected += 1
            log.warning("connection_rejected", listener=bound.name, reason="max_connections")
            await trio.aclose_forcefully(stream)
            continue
        bound.active += 1
        bound.accepted += 1
        bound.idle = trio.Event() if bound.idle.is_set() else bound.idle
        nursery.start_soon(_run_handler, bound, stream, handler)


async def _run_handler(
    bound: BoundListener, stream: trio.abc.Stream, handler: ConnectionHandler
) -> None:
    try:
        await handler(stream, bound)
    finally:
        bound.active -= 1
        if not bound.active:
            bound.idle.set()
