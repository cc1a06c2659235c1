"""The MQTT listeners of a running server, controllable at runtime.

The server binds every configured MQTT listener (``tcp``, ``ssl``, ``ws``, ``wss``) with
:func:`bind_listener` and runs them through a :class:`ListenerManager`, reachable as
``broker.listeners`` (so from the admin API and from plugins through ``host.broker``)::

    broker.listeners.show()                              # -> [ListenerStatus, ...]
    await broker.listeners.stop("tcp.default")           # stop accepting; clients stay
    await broker.listeners.stop("ssl.secure", kill_sessions=True)  # ... and disconnect them
    await broker.listeners.start("tcp.default")          # bind the same address again
    await broker.listeners.reload_tls()                  # what SIGHUP does for listeners

A listener is named ``<kind>.<name>`` (``tcp.default``, as in the config key
``listener.tcp.default``); the bare ``<name>`` works when no other kind uses it, and so does
``host:port``. Stopping closes the listening sockets: new clients are refused by the operating
system, and with ``kill_sessions`` the listener's connected clients are disconnected (MQTT 5
clients get DISCONNECT 0x98 "administrative action"; sessions follow their normal expiry).
Other listeners and their clients are never touched. ``start`` binds the addresses the listener
had (its port too when it was configured with port 0).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import structlog
import trio

from plugin_host.broker.hookargs import LISTENER_TYPES
from plugin_host.listeners.handshake import connection_handler
from plugin_host.listeners.tcp import (
    RUNNING,
    STOPPED,
    BoundListener,
    bind_tcp,
    rebind,
    serve_listener,
    start_accepting,
    stop_accepting,
)
from plugin_host.listeners.tls import ServerTLS, reload_certificates
from plugin_host.settings import ConfigError, ListenerConfig

if TYPE_CHECKING:
    from plugin_host.broker.broker import Broker

log = structlog.get_logger(__name__)

__all__ = [
    "MQTT_KINDS",
    "ListenerError",
    "ListenerManager",
    "ListenerStatus",
    "bind_listener",
]

#: Listener kinds served by this package (``http``/``https`` are the admin API's).
MQTT_KINDS = frozenset({"tcp", "ssl", "ws", "wss"})
#: v5 reason code for clients of a listener stopped with ``kill_sessions``.
RC_ADMINISTRATIVE_ACTION = 0x98
#: How long ``stop(kill_sessions=True)`` waits for the listener's clients to be gone.
KILL_TIMEOUT = 10.0


class ListenerError(Exception):
    """A listener command failed: unknown or ambiguous listener, address taken on start."""


@dataclass(frozen=True, slots=True)
class ListenerStatus:
    """One row of :meth:`ListenerManager.show` (``as_dict()`` gives JSON-ready values)."""

    id: str  # "<kind>.<name>"
    kind: str
    name: str
    type: str  # mqtt, mqtts, mqttws, mqttwss (VerneMQ's listener type names)
    state: str  # "running" | "stopped"
    addresses: tuple[tuple[str, int], ...]
    connections: int  # open now (TLS/WebSocket handshakes included)
    max_connections: int | None  # None = unlimited
    accepted: int  # since start-up
    rejected: int  # refused over max_connections
    handshake_failures: int  # PROXY header, TLS or WebSocket upgrade failures
    mountpoint: str
    allowed_protocol_versions: tuple[int, ...]
    proxy_protocol: bool
    tls_reloads: int | None  # certificate reloads (None: not a TLS listener)
    ws_path: str | None  # None: not a WebSocket listener

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["addresses"] = [f"{_host(h)}:{p}" for h, p in self.addresses]
        out["allowed_protocol_versions"] = list(self.allowed_protocol_versions)
        return out


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def listener_id(bound: BoundListener) -> str:
    return f"{bound.kind}.{bound.name}"


async def bind_listener(lc: ListenerConfig) -> BoundListener:
    """Bind one MQTT listener (and load its TLS files); ConfigError names what is wrong."""
    if lc.kind not in MQTT_KINDS:
        raise ValueError(f"not an MQTT listener kind: {lc.kind}")
    tls = ServerTLS(lc) if lc.kind in ("ssl", "wss") else None  # ConfigError on bad files
    try:
        bound = await bind_tcp(lc)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {lc.address}: {exc.strerror or exc}",
            key=f"listener.{lc.kind}.{lc.name}",
            file=lc.origin.file,
            line=lc.origin.line,
        ) from exc
    bound.tls = tls
    return bound


class ListenerManager:
    """Runs the bound MQTT listeners and starts/stops them on request (module docstring)."""

    def __init__(self, broker: Broker, listeners: list[BoundListener]) -> None:
        self._broker = broker
        self._listeners = list(listeners)
        self._lock = trio.Lock()  # one start/stop at a time
        self._handler = connection_handler(
            broker.handle_connection, timeout=broker.cfg.mqtt_connect_timeout
        )

    @property
    def listeners(self) -> list[BoundListener]:
        return list(self._listeners)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve every listener until cancelled (the server's shutdown)."""
        async with trio.open_nursery() as nursery:
            for bound in self._listeners:
                await nursery.start(serve_listener, bound, self._handler)
                for host, port in bound.addresses:
                    log.info(
                        "listening",
                        listener=bound.name,
                        kind=bound.kind,
                        host=host,
                        port=port,
                        **_options(bound.config),
                    )
            task_status.started()

    def stop_accepting_all(self) -> None:
        """Graceful shutdown: no new connections on any listener."""
        for bound in self._listeners:
            stop_accepting(bound)

    # ------------------------------------------------------------------------------ admin API

    def find(self, ref: str) -> BoundListener:
        """The listener ``ref`` names: ``kind.name``, a unique ``name``, or ``host:port``."""
        matches = [b for b in self._listeners if listener_id(b) == ref]
        if not matches:
            matches = [b for b in self._listeners if b.name == ref]
        if not matches:
            matches = [
                b for b in self._listeners if any(f"{_host(h)}:{p}" == ref for h, p in b.addresses)
            ]
        if not matches:
            known = ", ".join(listener_id(b) for b in self._listeners) or "none"
            raise ListenerError(f"no listener {ref!r} (listeners: {known})")
        if len(matches) > 1:
            ids = ", ".join(listener_id(b) for b in matches)
            raise ListenerError(f"{ref!r} is ambiguous ({ids}): use <kind>.<name>")
        return matches[0]

    def show(self) -> list[ListenerStatus]:
        """The status of every MQTT listener, in configuration order."""
        return [self.status(b) for b in self._listeners]

    def status(self, bound: BoundListener) -> ListenerStatus:
        lc = bound.config
        return ListenerStatus(
            id=listener_id(bound),
            kind=bound.kind,
            name=bound.name,
            type=LISTENER_TYPES[bound.kind],
            state=bound.state,
            addresses=tuple(bound.addresses),
            connections=bound.active,
            max_connections=lc.max_connections,
            accepted=bound.accepted,
            rejected=bound.rejected,
            handshake_failures=bound.handshake_failures,
            mountpoint=lc.mountpoint,
            allowed_protocol_versions=tuple(sorted(lc.allowed_protocol_versions)),
            proxy_protocol=lc.proxy_protocol,
            tls_reloads=bound.tls.reloads if bound.tls is not None else None,
            ws_path=lc.ws_path if bound.kind in ("ws", "wss") else None,
        )

    async def stop(self, ref: str, *, kill_sessions: bool = False) -> ListenerStatus:
        """Stop accepting on listener ``ref`` (idempotent); ``kill_sessions`` disconnects its
        clients too and waits (up to 10 s) until they are gone. ListenerError if unknown."""
        async with self._lock:
            bound = self.find(ref)
            if bound.state == RUNNING:
                stop_accepting(bound)
                await bound.aclose()
                log.info("listener_stopped", listener=bound.name, kind=bound.kind)
            if kill_sessions:
                killed = 0
                for conn in list(self._broker.connections):
                    if conn.listener is bound:
                        conn.close(RC_ADMINISTRATIVE_ACTION, "listener stopped")
                        killed += 1
                log.info("listener_sessions_killed", listener=bound.name, clients=killed)
                with trio.move_on_after(KILL_TIMEOUT):
                    await bound.idle.wait()
            return self.status(bound)

    async def start(self, ref: str) -> ListenerStatus:
        """Start accepting again on listener ``ref`` (idempotent); ListenerError if unknown
        or if its address is taken meanwhile."""
        async with self._lock:
            bound = self.find(ref)
            if bound.state == STOPPED:
                try:
                    await rebind(bound)
                except OSError as exc:
                    raise ListenerError(
                        f"cannot listen on {bound.config.address}: {exc.strerror or exc}"
                    ) from None
                start_accepting(bound)
                log.info("listener_started", listener=bound.name, kind=bound.kind)
            return self.status(bound)

    async def reload_tls(self) -> dict[str, str]:
        """Reload the certificates (and CRLs) of every TLS listener.

        New handshakes use the new files; connected clients are not touched. A listener whose
        files fail to load keeps its previous certificates. Returns ``{listener id: outcome}``
        (``"reloaded"`` or ``"kept previous certificates: <reason>"``).
        """
        return await reload_certificates(
            (listener_id(bound), bound.name, bound.tls.reload)
            for bound in self._listeners
            if bound.tls is not None
        )


def _options(lc: ListenerConfig) -> dict[str, Any]:
    """The listener options worth a word in the ``listening`` log line."""
    out: dict[str, Any] = {}
    if lc.proxy_protocol:
        out["proxy_protocol"] = True
    if lc.kind in ("ws", "wss"):
        out["path"] = lc.ws_path
    if lc.kind in ("ssl", "wss") and lc.require_certificate:
        out["require_certificate"] = True
    return out
