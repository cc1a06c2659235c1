"""Run the admin side of a server: the ``http``/``https`` listeners and the ``$SYS`` publisher.

The server (:mod:`plugin_host.server`) starts it in its own nursery, before the MQTT listeners
accept clients, and stops it after the broker has shut down::

    admin = await nursery.start(serve_admin, info)   # binds, serves, publishes $SYS
    ...
    await admin.aclose()                             # graceful: in-flight requests finish

HTTP is served by hypercorn's trio worker (HTTP/1.1, keep-alive, TLS for ``https``) running
:class:`~plugin_host.admin.app.AdminApp` on sockets bound here, so a port in use is a clear
``ConfigError`` naming the listener and the real port is known with ``port = 0``. Each broker
gets its own Prometheus registry (:func:`plugin_host.admin.metrics.build_registry`).
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
import trio

from plugin_host.admin.app import AdminApp
from plugin_host.admin.metrics import build_registry
from plugin_host.admin.systree import SysTree
from plugin_host.settings import ConfigError, ListenerConfig

if TYPE_CHECKING:
    from plugin_host.server import ServerInfo

__all__ = ["HTTP_KINDS", "AdminServer", "HTTPListener", "bind_http", "serve_admin"]

log = structlog.get_logger(__name__)

#: Listener kinds served by the admin module.
HTTP_KINDS = frozenset({"http", "https"})
#: Seconds in-flight HTTP requests get to finish at shutdown.
GRACEFUL_TIMEOUT = 2.0
BACKLOG = 128


@dataclass(slots=True, eq=False)
class HTTPListener:
    """One bound ``http``/``https`` listener: its sockets (owned here) and addresses."""

    config: ListenerConfig
    sockets: list[socket.socket]
    addresses: list[tuple[str, int]]
    ssl_context: ssl.SSLContext | None = None
    state: str = "running"
    #: The context new handshakes use (see :meth:`reload_tls`); ``ssl_context`` is the one
    #: the HTTP server was given, which hands each handshake over to this one.
    current_context: ssl.SSLContext | None = None
    tls_reloads: int = 0

    def __post_init__(self) -> None:
        front = self.ssl_context
        if front is not None:
            self.current_context = front
            # The HTTP server keeps the context it got at start; the SNI callback (called for
            # every handshake, with or without a server name) switches the connection to the
            # current one, so reloaded certificates apply to new connections only.
            front.sni_callback = self._use_current

    def _use_current(self, connection: Any, server_name: str | None, _: Any) -> None:
        current = self.current_context
        if current is not None and connection.context is not current:
            connection.context = current

    async def reload_tls(self) -> None:
        """Re-read this https listener's certificate, key, CA and CRL files (a worker thread);
        ConfigError keeps the previous ones. Connected clients are not touched."""
        self.current_context = await trio.to_thread.run_sync(_server_context, self.config)
        self.tls_reloads += 1

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def url(self) -> str:
        host, port = self.addresses[0]
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"{self.kind}://{host}:{port}"

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


async def bind_http(lc: ListenerConfig) -> HTTPListener:
    """Bind ``lc`` (and load its TLS files for ``https``); ConfigError names what is wrong."""
    context = _server_context(lc) if lc.kind == "https" else None
    host: str | None = lc.host or None
    if host == "*":
        host = "0.0.0.0"
    try:
        listeners = await trio.open_tcp_listeners(lc.port, host=host, backlog=BACKLOG)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {lc.address}: {exc.strerror or exc}",
            key=f"listener.{lc.kind}.{lc.name}",
            file=lc.origin.file,
            line=lc.origin.line,
        ) from exc
    # hypercorn wants standard sockets; trio's are detached into ones we own and close.
    sockets = [socket.socket(fileno=listener.socket.detach()) for listener in listeners]
    addresses = [(str(s.getsockname()[0]), int(s.getsockname()[1])) for s in sockets]
    return HTTPListener(config=lc, sockets=sockets, addresses=addresses, ssl_context=context)


def _server_context(lc: ListenerConfig) -> ssl.SSLContext:
    # The same certificate/key/CA handling (and error messages) as the MQTT TLS listeners.
    from plugin_host.listeners.tls import build_server_context

    context: ssl.SSLContext = build_server_context(lc)
    context.set_alpn_protocols(["http/1.1"])
    return context


def _hypercorn_config(listener: HTTPListener) -> Any:
    from hypercorn.config import Config as HypercornConfig
    from hypercorn.logging import Logger as HypercornLogger

    class _Log(HypercornLogger):
        """hypercorn's messages through structlog (its access log is off)."""

        def __init__(self, config: Any) -> None:
            self.access_logger = None
            self.error_logger = None
            self.access_log_format = config.access_log_format

        async def critical(self, message: str, *args: Any, **kwargs: Any) -> None:
            log.critical("http_server", message=message % args if args else message)

        async def error(self, message: str, *args: Any, **kwargs: Any) -> None:
            log.error("http_server", message=message % args if args else message)

        async def warning(self, message: str, *args: Any, **kwargs: Any) -> None:
            log.warning("http_server", message=message % args if args else message)

        async def info(self, message: str, *args: Any, **kwargs: Any) -> None:
            log.debug("http_server", message=message % args if args else message)

        async def debug(self, message: str, *args: Any, **kwargs: Any) -> None:
            log.debug("http_server", message=message % args if args else message)

        async def exception(self, message: str, *args: Any, **kwargs: Any) -> None:
            log.error("http_server", message=message % args if args else message, exc_info=True)

        async def log(self, level: int, message: str, *args: Any, **kwargs: Any) -> None:
            log.debug("http_server", message=message % args if args else message)

    context = listener.ssl_context

    class _Config(HypercornConfig):
        # Our own context (the MQTT listeners' TLS options), not hypercorn's file options.
        def create_ssl_context(self) -> ssl.SSLContext | None:
            return context

        @property
        def ssl_enabled(self) -> bool:
            return context is not None

    config = _Config()
    config.logger_class = _Log
    config.accesslog = None
    config.graceful_timeout = GRACEFUL_TIMEOUT
    config.include_server_header = False
    config.keep_alive_timeout = 30
    return config


@dataclass(slots=True, eq=False)
class AdminServer:
    """The running admin side of one server (see the module docstring)."""

    info: ServerInfo
    listeners: list[HTTPListener] = field(default_factory=list)
    app: AdminApp | None = None
    systree: SysTree | None = None
    _stop: trio.Event = field(default_factory=trio.Event)
    _done: trio.Event = field(default_factory=trio.Event)

    async def reload_tls(self) -> dict[str, str]:
        """Reload the certificates of every ``https`` listener (the SIGHUP reload, like the
        MQTT TLS listeners'): ``{listener id: "reloaded" | "kept previous certificates: ..."}``.
        """
        from plugin_host.listeners.tls import reload_certificates

        return await reload_certificates(
            (f"{lst.kind}.{lst.name}", lst.name, lst.reload_tls)
            for lst in self.listeners
            if lst.ssl_context is not None
        )

    def address(self, name: str | None = None) -> tuple[str, int]:
        """The first bound ``(host, port)`` of HTTP listener ``name`` (default: the first)."""
        for listener in self.listeners:
            if name is None or listener.name == name:
                return listener.addresses[0]
        raise KeyError(name)

    def url(self, name: str | None = None) -> str:
        """``http://host:port`` (or https) of HTTP listener ``name`` (default: the first)."""
        for listener in self.listeners:
            if name is None or listener.name == name:
                return listener.url
        raise KeyError(name)

    def http_status(self) -> list[dict[str, Any]]:
        """Rows for the listener table of the admin API."""
        return [
            {
                "id": f"{lst.kind}.{lst.name}",
                "kind": lst.kind,
                "name": lst.name,
                "type": lst.kind,
                "state": lst.state,
                "addresses": [
                    f"{h}:{p}" if ":" not in h else f"[{h}]:{p}" for h, p in lst.addresses
                ],
                "connections": None,
                "tls_reloads": lst.tls_reloads if lst.ssl_context is not None else None,
            }
            for lst in self.listeners
        ]

    async def aclose(self) -> None:
        """Stop serving HTTP (in-flight requests get ``GRACEFUL_TIMEOUT``) and ``$SYS``."""
        self._stop.set()
        with trio.move_on_after(GRACEFUL_TIMEOUT + 1):
            await self._done.wait()


async def serve_admin(
    info: ServerInfo, *, task_status: trio.TaskStatus[AdminServer] = trio.TASK_STATUS_IGNORED
) -> None:
    """Bind and serve the configured ``http``/``https`` listeners and publish ``$SYS`` until
    :meth:`AdminServer.aclose`. Reports the :class:`AdminServer` once everything listens
    (it is also ``info.admin``)."""
    broker = info.broker
    assert broker is not None
    config = broker.config
    admin = AdminServer(info)
    info.admin = admin
    unregister = None
    try:
        for lc in config.listeners:
            if lc.kind in HTTP_KINDS:
                admin.listeners.append(await bind_http(lc))
        if admin.listeners:
            if config.admin_api_key is None:
                log.warning(
                    "admin_api_disabled",
                    reason="admin.api_key is not set: only /health and /metrics are served",
                )
            admin.app = AdminApp(info, build_registry(info), config.admin_api_key)
        if any(listener.ssl_context is not None for listener in admin.listeners):
            unregister = broker.reloads.register("http_listeners", admin.reload_tls)
        async with trio.open_nursery() as nursery:
            for listener in admin.listeners:
                await nursery.start(_serve_http, admin, listener)
                for host, port in listener.addresses:
                    log.info(
                        "listening",
                        listener=listener.name,
                        kind=listener.kind,
                        host=host,
                        port=port,
                    )
            cfg = broker.cfg
            if cfg.systree_enabled and cfg.systree_interval > 0:
                admin.systree = SysTree(broker, cfg.systree_interval)
                nursery.start_soon(admin.systree.run, admin._stop)
            task_status.started(admin)
            await admin._stop.wait()
    finally:
        if unregister is not None:
            unregister()
        for listener in admin.listeners:
            listener.state = "stopped"
            listener.close()
        admin._done.set()


async def _serve_http(
    admin: AdminServer,
    listener: HTTPListener,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    from hypercorn.config import Sockets
    from hypercorn.trio.run import worker_serve
    from hypercorn.utils import wrap_app

    assert admin.app is not None
    config = _hypercorn_config(listener)
    secure = listener.sockets if listener.ssl_context is not None else []
    insecure = [] if listener.ssl_context is not None else listener.sockets
    started = False

    class _Started:
        def started(self, value: list[str]) -> None:
            nonlocal started
            started = True
            task_status.started(value)

    try:
        await worker_serve(
            wrap_app(admin.app, config.wsgi_max_body_size, "asgi"),  # type: ignore[arg-type]
            config,
            sockets=Sockets(secure, insecure, []),
            shutdown_trigger=admin._stop.wait,
            task_status=_Started(),  # type: ignore[arg-type]
        )
    except Exception:
        if not started:
            raise
        # The admin side failing must not take the MQTT broker down with it.
        listener.state = "failed"
        log.exception("http_listener_failed", listener=listener.name)
        return
    for host, port in listener.addresses:
        log.debug("http_listener_stopped", listener=listener.name, host=host, port=port)
