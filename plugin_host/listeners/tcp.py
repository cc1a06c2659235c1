"""Plain TCP listeners.

A listener binds its sockets up front (so the real addresses are known before anything is
served, port 0 included), then runs an accept loop that hands every accepted
:class:`trio.abc.Stream` to a connection handler in the listener's own nursery. The handler only
needs a Stream, so TLS/WebSocket/PROXY listeners can wrap the stream and reuse the same
handler.
"""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio

from plugin_host.settings import ListenerConfig

log = structlog.get_logger(__name__)

#: What a listener calls for every accepted connection. It owns the stream from then on.
ConnectionHandler = Callable[[trio.abc.Stream, "BoundListener"], Awaitable[None]]

# Errors from accept() that mean "this one connection failed", not "the listener is broken"
# (the same list trio.serve_listeners uses).
_ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


@dataclass(slots=True, eq=False)
class BoundListener:
    """A configured listener with its sockets bound.

    ``addresses`` are the real bound ``(host, port)`` pairs (one per socket; a host name may
    bind several). ``active`` counts open connections for ``max_connections``.
    """

    config: ListenerConfig
    sockets: list[trio.SocketListener]
    addresses: list[tuple[str, int]]
    active: int = 0
    rejected: int = 0
    #: For TLS listeners: the peer certificate (DER) of an accepted stream, for the hooks'
    #: ``client_cert`` argument (``forward_connection_opts``); None on plain TCP.
    client_cert: Callable[[trio.abc.Stream], bytes | None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: Cancelled to stop accepting (graceful shutdown) while connections keep running.
    accept_scope: trio.CancelScope = field(default_factory=trio.CancelScope)

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
        for sock in self.sockets:
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


async def serve_listener(bound: BoundListener, handler: ConnectionHandler) -> None:
    """Accept connections forever; each runs ``handler`` in this listener's nursery.

    ``max_connections`` is enforced here: a connection beyond it is closed at once (counted in
    ``bound.rejected``), the way VerneMQ refuses it before any MQTT is spoken.
    """
    async with trio.open_nursery() as nursery:
        for sock in bound.sockets:
            nursery.start_soon(_accept_loop, bound, sock, handler, nursery)


def stop_accepting(bound: BoundListener) -> None:
    """Stop the accept loops of ``bound``; its running connections are not touched."""
    bound.accept_scope.cancel()


async def _accept_loop(
    bound: BoundListener,
    sock: trio.SocketListener,
    handler: ConnectionHandler,
    nursery: trio.Nursery,
) -> None:
    with bound.accept_scope:
        await _accept_forever(bound, sock, handler, nursery)


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
        nursery.start_soon(_run_handler, bound, stream, handler)


async def _run_handler(
    bound: BoundListener, stream: trio.abc.Stream, handler: ConnectionHandler
) -> None:
    try:
        await handler(stream, bound)
    finally:
        bound.active -= 1
